"""What the SecureBoost bank keeps: its model part, its errors, its checkpoint between trees.

Why apart from the protocol (``active.py``): the bank's model part and checkpoint are files
with formats of their own; the driver only grows trees and moves them through the protocol.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from federation.files import write_atomic
from models.secureboost.reference import BoostParams, SecureBoostError
from models.secureboost.tree import Tree

__all__ = [
    "BANK",
    "BankCheckpoint",
    "BankModel",
    "FederatedTrainingError",
    "ProtocolError",
    "Resumed",
]

log = logging.getLogger(__name__)

BANK = "bank"
"""The owner name of the bank's own splits (so no holder may be called that)."""


class ProtocolError(SecureBoostError):
    """A holder answered something inconsistent with the protocol (shape, counts, partition)."""


class FederatedTrainingError(SecureBoostError):
    """Training stopped; every holder was asked to drop the job. Names the holder and stage."""

    def __init__(self, message: str, *, holder: str | None, stage: str):
        self.holder = holder
        self.stage = stage
        super().__init__(message)


@dataclass
class BankModel:
    """The bank's part of a trained model: tree shapes, its own splits, all leaf weights.

    Holder splits appear with ``owner`` = the holder and ``feature`` = −1: their meaning stays
    at the holder. ``job_id`` names the model at the holders (``Predict``).
    """

    job_id: str
    base_score: float
    trees: list[Tree]
    holders: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    part_digests: dict[str, str] = field(default_factory=dict)  # holder → sha256 of its part

    def split_owners(self) -> set[str]:
        return {n.owner for t in self.trees for n in t.nodes.values() if not n.is_leaf}


@dataclass
class Resumed:
    """A job's state after its last complete tree, as a checkpoint holds it."""

    trees: list[Tree]
    margin: np.ndarray
    rng_state: dict[str, Any]
    base_score: float


class BankCheckpoint:
    """``<dir>/<job>.checkpoint.json``: trees, margins and random state after every tree.

    A later job with the same id, data and parameters (the ``terms``) continues from there;
    one with other terms is refused rather than silently mixed.
    """

    def __init__(self, directory: Path | None, job_id: str):
        self.job_id = job_id
        self.path = None if directory is None else Path(directory) / f"{job_id}.checkpoint.json"

    @staticmethod
    def terms(
        params: BoostParams,
        holders: list[str],
        alignment_id: str,
        alignment_rows: np.ndarray | None,
        bins: np.ndarray,
        n_bins: np.ndarray,
        labels: np.ndarray,
    ) -> dict[str, Any]:
        """What a resumed job must share with the original: data digests and parameters."""
        rows = b"" if alignment_rows is None else np.packbits(alignment_rows).tobytes()
        return {
            "params": asdict(params),
            "holders": holders,
            "alignment_id": alignment_id,
            "rows_sha256": hashlib.sha256(rows).hexdigest(),
            "bins_sha256": hashlib.sha256(
                np.ascontiguousarray(bins, dtype=np.int32).tobytes()
                + np.asarray(n_bins, dtype=np.int64).tobytes()
            ).hexdigest(),
            "labels_sha256": hashlib.sha256(labels.astype("<f8").tobytes()).hexdigest(),
        }

    def read(self, terms: dict[str, Any]) -> Resumed | None:
        """The saved state of this job (None: none saved); refuses one made with other terms."""
        path = self.path
        if path is None or not path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SecureBoostError(f"{path}: checkpoint cannot be read: {exc}") from None
        if data.get("terms") != json.loads(json.dumps(terms)):
            raise SecureBoostError(
                f"{path}: this checkpoint of job '{self.job_id}' was made with other data or "
                "parameters; remove it or train under a new job id"
            )
        log.info("job %s resumes after %d trees", self.job_id, len(data["trees"]))
        return Resumed(
            trees=[Tree.from_dict(t) for t in data["trees"]],
            margin=np.frombuffer(base64.b64decode(data["margin"]), dtype="<f8").copy(),
            rng_state=data["rng"],
            base_score=float(data["base_score"]),
        )

    def write(
        self,
        terms: dict[str, Any],
        trees: list[Tree],
        margin: np.ndarray,
        rng: np.random.Generator,
        base: float,
    ) -> None:
        if self.path is None:
            return
        data = {
            "format": "xinyidai.secureboost.bank-checkpoint/1",
            "job_id": self.job_id,
            "terms": terms,
            "base_score": base,
            "trees": [tree.to_dict() for tree in trees],
            "margin": base64.b64encode(margin.astype("<f8").tobytes()).decode("ascii"),
            "rng": rng.bit_generator.state,
        }
        write_atomic(self.path, json.dumps(data).encode("utf-8"))

    def drop(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
