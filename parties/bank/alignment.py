"""The bank's alignment job: its table's codes through PSI with every holder, stored and audited.

Runs at the bank, with the bank's configuration and audit log (the demo and the operator's tools
call it in-process on the bank's host). The protocol itself is ``models.psi.active.align_codes``;
this adds what belongs to the bank node: which table, where the result is kept
(``NODE_DIR/alignments/<job>.json|rows``) and the local audit record. Each holder keeps its side
under its own node directory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from federation.audit import AuditLog
from federation.transport.base import PeerBase
from models.psi.active import Alignment, align_codes
from parties.bank.table import BankTable
from parties.compute import use_compute
from parties.config import NodeConfig

__all__ = ["align"]


def _quiet(_: str) -> None:
    pass


def align(
    config: NodeConfig,
    holders: Mapping[str, PeerBase],
    *,
    job_id: str,
    salt: bytes,
    min_overlap: int | float = 1,
    audit: AuditLog | None = None,
    purpose: str = "financing",
    progress: Callable[[str], None] = _quiet,
) -> Alignment:
    """Align the bank's table with ``holders``; store the bank's side under the node dir."""
    use_compute(config)  # the bank's PSI blinding runs where its node.yaml says
    table = BankTable.load(config)
    alignment = align_codes(
        table.codes,
        holders,
        job_id=job_id,
        salt=salt,
        min_overlap=min_overlap,
        purpose=purpose,
        workers=config.limits.compute_workers,
        progress=progress,
    )
    alignment.save(config.node_dir / "alignments")
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="psi.align",
            purpose=purpose,
            job_id=job_id,
            counts={"bank_rows": alignment.bank_size, "aligned": alignment.size},
        )
    return alignment
