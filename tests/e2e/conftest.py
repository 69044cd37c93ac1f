"""Shared end-to-end fixtures: local federations of real node processes (mTLS on loopback).

Each test module that needs running nodes asks ``start_federation`` for them, with its own city
size, seed and deadlines; the nodes live as long as the module (module scope, as before) and are
stopped at its end, even when the module's own fixture fails halfway. Modules that score through
the bank node ask ``start_bank_world`` instead: the same nodes plus an alignment, the bank's
audit log and a temporary MLflow store, with ``BankWorld.train`` to log SecureBoost versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from federation.audit import AuditLog
    from models.psi.active import Alignment
    from parties.bank.registry import TrackingConfig
    from parties.config import NodeConfig
    from xinyidai.launcher import Federation

StartFederation = Callable[..., "tuple[Federation, dict[str, Any]]"]
HOLDERS = ("tax", "utility")


@pytest.fixture(scope="module")
def start_federation() -> Iterator[StartFederation]:
    """``start_federation(workdir, enterprises=, seed=, deadline_s=, workers=)``: build a
    federation exactly as ``xinyidai demo`` does (``build_federation``), start every node as its
    own OS process and wait until each serves; returns ``(fed, examples)``.

    Every federation started in the module is stopped when the module ends. Environment the
    nodes must inherit (``MLFLOW_TRACKING_URI``) is set by the caller before calling."""
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes

    started: list[Federation] = []

    def start(workdir: Path, **build: Any) -> tuple[Federation, dict[str, Any]]:
        fed, examples = build_federation(workdir, **build)
        started.append(fed)  # before start_nodes: a node that fails to come up is stopped too
        start_nodes(fed)
        return fed, examples

    try:
        yield start
    finally:
        for fed in reversed(started):
            stop_nodes(fed)


@pytest.fixture(scope="module")
def local_federation(
    start_federation: StartFederation, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Federation, dict[str, Any]]:
    """A running three-node federation built exactly as `xinyidai demo` builds it."""
    workdir = tmp_path_factory.mktemp("federation")
    return start_federation(workdir, enterprises=600, seed=11, deadline_s=10.0)


@dataclass
class BankWorld:
    """A running federation seen from the bank: its config, its audit log, one PSI alignment
    of bank ∩ tax ∩ utility, and the temporary MLflow store the bank node serves from."""

    fed: Federation
    examples: dict[str, Any]
    bank: NodeConfig
    audit: AuditLog
    alignment: Alignment
    tracking: TrackingConfig

    def train(
        self,
        model_name: str,
        *,
        params: Mapping[str, Any],
        job_id: str | None = None,
        scoring_endpoint: bool = False,
    ) -> SimpleNamespace:
        """Train SecureBoost on the alignment (2048-bit keys, one worker) and log it as the
        next version of ``model_name``, with the sha256 of each holder's model part; returns
        ``(clf, report, parts, version)`` as a namespace. Promoting is left to the test."""
        from parties.bank.secureboost import train_secureboost
        from parties.node import holder_peers
        from xinyidai.tracking import log_training, secureboost_record

        with holder_peers(self.bank, audit=self.audit, service="SecureBoostHolder") as peers:
            clf, report = train_secureboost(
                self.bank,
                self.alignment,
                holders=peers,
                params={**params, "key_bits": 2048, "workers": 1},
                job_id=job_id,
                audit=self.audit,
            )
        parts = {
            h: hashlib.sha256(
                (self.fed.node_dir(h) / "models" / "bank" / f"{report.job_id}.json").read_bytes()
            ).hexdigest()
            for h in HOLDERS
        }
        endpoint = {"node_config": str(self.fed.configs["bank"])} if scoring_endpoint else {}
        record = secureboost_record(
            clf,
            report,
            parties=["bank", *HOLDERS],
            model_name=model_name,
            holder_parts=parts,
            scoring_endpoint=endpoint,
        )
        tracked = log_training(record, tracking=self.tracking)
        return SimpleNamespace(clf=clf, report=report, parts=parts, version=tracked.version)


StartBankWorld = Callable[..., BankWorld]


@pytest.fixture(scope="module")
def start_bank_world(
    start_federation: StartFederation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[StartBankWorld]:
    """``start_bank_world(name, enterprises=, seed=, salt=, align_job=)``: a federation as
    ``start_federation`` builds it (60 s deadlines, one worker) whose bank node serves models
    from a temporary MLflow store, aligned once (PSI, ``min_overlap`` 0.2).

    The node processes inherit ``MLFLOW_TRACKING_URI`` (the bank resolves model versions
    there); it is set only while the module runs and restored at its end, as is everything
    else the fixture opened, so the next module starts from a clean environment."""
    from federation.audit import AuditLog
    from parties.bank.alignment import align
    from parties.config import load_node_config
    from parties.node import holder_peers
    from xinyidai.tracking import TrackingConfig

    opened: list[AuditLog] = []
    with pytest.MonkeyPatch.context() as mp:

        def start(
            name: str, *, enterprises: int, seed: int, salt: bytes, align_job: str
        ) -> BankWorld:
            workdir = tmp_path_factory.mktemp(name)
            tracking = TrackingConfig.resolve(directory=workdir / "mlflow")
            mp.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri)  # the bank node's registry
            fed, examples = start_federation(
                workdir, enterprises=enterprises, seed=seed, deadline_s=60.0, workers=1
            )
            bank = load_node_config(fed.configs["bank"])
            audit = AuditLog(bank.resolved_audit_url, "bank")
            opened.append(audit)
            with holder_peers(bank, audit=audit) as peers:
                alignment = align(
                    bank, peers, job_id=align_job, salt=salt, min_overlap=0.2, audit=audit
                )
            return BankWorld(fed, examples, bank, audit, alignment, tracking)

        try:
            yield start
        finally:
            for audit in opened:
                audit.close()
