"""Holders in this process: real servicers behind the real runtime, reached by ``InProcessPeer``.

For tests, notebooks and single-machine simulation. Every call still goes through protobuf bytes,
``ServiceRuntime``'s caller and purpose checks and ``PeerBase``'s error mapping — exactly what a
gRPC deployment runs — only without sockets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from federation.blobs import BlobStore
from federation.transport.base import ServiceRuntime
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from models.secureboost.passive import SecureBoostHolderServicer


def local_holders(
    tables: Mapping[str, tuple[np.ndarray, Sequence[str]]],
    workdir: Path,
    *,
    bank_id: str = "bank",
    min_node_samples: int = 20,
    peer_class: type[InProcessPeer] = InProcessPeer,
    max_blob_bytes: int = 1 << 30,
    workers: int | None = 1,
    keep_models: bool = False,
) -> tuple[dict[str, InProcessPeer], dict[str, SecureBoostHolderServicer]]:
    """``{holder: (features, column names)}`` → (peers for the bank, the holders' servicers).

    ``peer_class`` lets a test wrap the carrier (for example to record every byte on the wire);
    ``workers`` is each holder's Paillier process count (1: in-process, None: all cores);
    ``keep_models``: holders write model parts and checkpoints under ``workdir/<holder>/models``
    as a node does (needed to resume after a simulated restart).
    """
    peers: dict[str, InProcessPeer] = {}
    servicers: dict[str, SecureBoostHolderServicer] = {}
    for name, (features, names) in tables.items():
        servicer = SecureBoostHolderServicer(
            node_id=name,
            features=features,
            feature_names=names,
            banks=[bank_id],
            blobs=BlobStore(Path(workdir) / name / "blobs", max_bytes=max_blob_bytes),
            min_node_samples=min_node_samples,
            workers=workers,
            models_dir=Path(workdir) / name / "models" if keep_models else None,
        )
        runtime = ServiceRuntime(servicer, node_id=name, audit=None, purposes=PurposePolicy())
        servicers[name] = servicer
        peers[name] = peer_class(runtime, self_id=bank_id, audit=None, deadline_s=600)
    return peers, servicers


__all__ = ["local_holders"]
