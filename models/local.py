"""Holders in this process: real servicers behind the real runtime, reached by ``InProcessPeer``.

For tests, notebooks and single-machine simulation. Every call still goes through protobuf bytes,
``ServiceRuntime``'s caller and purpose checks and ``PeerBase``'s error mapping — exactly what a
gRPC deployment runs — only without sockets. Each protocol binds its servicer and defaults
(``models.secureboost.passive.local_holders``, ``models.woe.passive.local_woe_holders``,
``models.linear.passive.local_holders``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict, TypeVar

import numpy as np

from federation.blobs import BlobStore
from federation.transport.base import Servicer, ServiceRuntime
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from models.base import UNGATED

__all__ = ["HolderArgs", "MakeHolder", "local_holders"]

S = TypeVar("S", bound=Servicer)


class HolderArgs(TypedDict):
    """The keyword arguments every holder servicer takes, filled in by ``local_holders``: a
    protocol's ``make`` passes them on (``Servicer(**args, ...)``) and adds only its own."""

    node_id: str
    features: np.ndarray
    feature_names: list[str]
    banks: list[str]
    blobs: BlobStore


MakeHolder = Callable[[HolderArgs, Path], S]
"""``make(args, home)``: one holder's servicer; ``home`` is the holder's folder,
``workdir/<holder>``."""


def local_holders(
    make: MakeHolder[S],
    tables: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    workdir: Path,
    *,
    bank_id: str = "bank",
    peer_class: type[InProcessPeer] = InProcessPeer,
    max_blob_bytes: int = 1 << 30,
    deadline_s: float = 600,
) -> tuple[dict[str, InProcessPeer], dict[str, S]]:
    """``{holder: (features, column names)}`` → (peers for the bank, the holders' servicers).

    ``make`` builds a holder's servicer; its blobs live under ``workdir/<holder>/blobs``.
    Every servicer answers through the open gate ``models.base.UNGATED`` (in-process library
    use on one's own data); a node injects its consent gate instead (``parties.node``).
    ``peer_class`` lets a test wrap the carrier (for example to record every byte on the wire).
    """
    peers: dict[str, InProcessPeer] = {}
    servicers: dict[str, S] = {}
    for name, (features, names) in tables.items():
        home = Path(workdir) / name
        args = HolderArgs(
            node_id=name,
            features=features,
            feature_names=[str(n) for n in names],
            banks=[bank_id],
            blobs=BlobStore(home / "blobs", max_bytes=max_blob_bytes),
        )
        servicer = make(args, home)
        use_gate = getattr(servicer, "use_gate", None)
        if use_gate is not None:  # the caller's own data, in its own process: no consent to ask
            use_gate(UNGATED)
        runtime = ServiceRuntime(servicer, node_id=name, audit=None, purposes=PurposePolicy())
        servicers[name] = servicer
        peers[name] = peer_class(runtime, self_id=bank_id, audit=None, deadline_s=deadline_s)
    return peers, servicers
