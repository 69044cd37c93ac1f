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
from typing import TypeVar

import numpy as np

from federation.blobs import BlobStore
from federation.transport.base import Servicer, ServiceRuntime
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy

__all__ = ["MakeHolder", "local_holders"]

S = TypeVar("S", bound=Servicer)

MakeHolder = Callable[[str, np.ndarray, list[str], BlobStore], S]
"""``make(holder, features, column names, blobs)``: one holder's servicer."""


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
    ``peer_class`` lets a test wrap the carrier (for example to record every byte on the wire).
    """
    peers: dict[str, InProcessPeer] = {}
    servicers: dict[str, S] = {}
    for name, (features, names) in tables.items():
        blobs = BlobStore(Path(workdir) / name / "blobs", max_bytes=max_blob_bytes)
        servicer = make(name, features, [str(n) for n in names], blobs)
        runtime = ServiceRuntime(servicer, node_id=name, audit=None, purposes=PurposePolicy())
        servicers[name] = servicer
        peers[name] = peer_class(runtime, self_id=bank_id, audit=None, deadline_s=deadline_s)
    return peers, servicers
