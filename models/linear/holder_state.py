"""What an LR holder keeps: its finished model part and an open job's weights and masks.

Why apart from the protocol (``passive.py``): weights, preprocessing statistics and the pairwise
scoring keys are the holder's secrets at rest (its model file, 0600) and in memory; the servicer
only moves them through the protocol's steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from models.base import HolderJob
from models.linear.backends import HolderCrypto, PairwiseMasks
from models.linear.reference import LinearError, Standardizer

__all__ = ["MODEL_FORMAT", "LinearHolderModel", "LinearJob", "Pending"]

MODEL_FORMAT = "xinyidai.linear.holder/1"


@dataclass
class LinearHolderModel:
    """The holder's part of a fitted model: its weights, its preprocessing, its scoring masks.

    Secret to the holder: weights and preprocessing statistics describe its data, and the
    pairwise scoring keys are shared with the other holders only. Stored mode 0600.
    """

    weights: np.ndarray
    scaler: Standardizer
    masks: PairwiseMasks  # scoring keys (empty with one holder)
    n_holders: int
    epoch: int
    backend: str
    alignment_id: str = ""
    feature_view: str = ""

    @property
    def n_features(self) -> int:
        return int(self.weights.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "weights": self.weights.tolist(),
            "scaler": self.scaler.to_dict(),
            "masks": self.masks.to_list(),
            "n_holders": self.n_holders,
            "epoch": self.epoch,
            "backend": self.backend,
            "alignment_id": self.alignment_id,
            "feature_view": self.feature_view,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearHolderModel:
        if data.get("format") != MODEL_FORMAT:
            raise LinearError(f"not a {MODEL_FORMAT} model part: {data.get('format')!r}")
        return cls(
            weights=np.asarray(data["weights"], dtype=np.float64),
            scaler=Standardizer.from_dict(data["scaler"]),
            masks=PairwiseMasks.from_list(data["masks"]),
            n_holders=int(data["n_holders"]),
            epoch=int(data["epoch"]),
            backend=str(data["backend"]),
            alignment_id=str(data.get("alignment_id", "")),
            feature_view=str(data.get("feature_view", "")),
        )


@dataclass
class Pending:
    """A gradient the bank has not answered yet: its rows and the holder's masks."""

    rows: np.ndarray
    masks: Any
    blob_id: str = ""  # the holder's own result blob (CKKS), removed on Update


@dataclass(kw_only=True)
class LinearJob(HolderJob):
    """An open job at the holder: its prepared features, weights, masks and open steps."""

    alignment_id: str
    n_rows: int
    backend: str
    crypto: HolderCrypto
    features: np.ndarray  # imputed and (optionally) standardised, (n_rows, n_features)
    scaler: Standardizer
    alpha: float
    max_iter: int
    n_holders: int
    private: X25519PrivateKey
    public: bytes
    feature_view: str = ""
    masks: PairwiseMasks | None = None  # training masks (after Peers)
    scoring: PairwiseMasks | None = None
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    pending: dict[tuple[int, int], Pending] = field(default_factory=dict)
    done: set[tuple[int, int]] = field(default_factory=set)

    def close(self) -> None:
        self.crypto.close()
        self.pending.clear()
