"""What a SecureBoost holder keeps: its finished model part, an open job, the job's checkpoint.

Why apart from the protocol (``passive.py``): these are the holder's secrets at rest and in
memory — bin edges, the meaning of its splits, the per-tree ciphertexts — and their file formats;
the servicer only moves them through the protocol's steps.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gmpy2 import mpz

from federation.crypto import GradHessPacker, PaillierEngine, PublicParams
from models.base import HolderJob
from models.binning import QuantileBinner
from protos import secureboost_pb2

__all__ = [
    "HolderModel",
    "Revealed",
    "SecureBoostJob",
    "Splits",
    "TreeState",
    "checkpoint_from_dict",
    "checkpoint_to_dict",
    "revealed_by",
    "start_terms",
]

Splits = dict[int, dict[int, tuple[int, int]]]
"""tree → node → (feature, threshold bin): the meaning of the holder's own splits (a negative
threshold: the bitmask of a categorical split's left bins, ``reference.goes_left``)."""

Revealed = dict[int, set[int]]
"""feature → threshold bins the bank holds partitions for (the probe-model bound)."""


def revealed_by(splits: Splits) -> Revealed:
    """The thresholds per feature that ``splits`` gave the bank partitions of."""
    out: Revealed = {}
    for tree in splits.values():
        for feature, threshold in tree.values():
            out.setdefault(feature, set()).add(threshold)
    return out


def _splits_to_dict(splits: Splits) -> dict[str, dict[str, list[int]]]:
    return {str(t): {str(n): list(ft) for n, ft in s.items()} for t, s in splits.items()}


def _splits_from_dict(data: dict[str, Any]) -> Splits:
    return {
        int(t): {int(n): (int(ft[0]), int(ft[1])) for n, ft in s.items()} for t, s in data.items()
    }


@dataclass
class HolderModel:
    """The holder's part of a trained model: its bins and the meaning of its own splits."""

    binner: QuantileBinner
    splits: Splits
    leaves: dict[int, list[int]]  # tree → leaf heap ids, ascending
    n_trees: int
    alignment_id: str = ""  # the alignment the job trained on (Predict's default)

    @property
    def n_splits(self) -> int:
        return sum(len(s) for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; contains bin edges (data values): store it at the holder only."""
        return {
            "format": "xinyidai.secureboost.holder/1",
            "binner": self.binner.to_dict(),
            "n_trees": self.n_trees,
            "splits": _splits_to_dict(self.splits),
            "leaves": {str(t): list(v) for t, v in self.leaves.items()},
            "alignment_id": self.alignment_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HolderModel:
        return cls(
            binner=QuantileBinner.from_dict(data["binner"]),
            splits=_splits_from_dict(data["splits"]),
            leaves={int(t): [int(x) for x in v] for t, v in data["leaves"].items()},
            n_trees=int(data["n_trees"]),
            alignment_id=str(data.get("alignment_id", "")),
        )


@dataclass
class TreeState:
    """One tree's working state: its ciphertexts, the nodes evaluated, open candidates."""

    tree: int
    rows: np.ndarray  # sorted rows of the subsample; ciphertext i belongs to rows[i]
    position: np.ndarray  # row → index into rows (−1: not in the subsample)
    ciphertexts: list[mpz]
    bins: np.ndarray  # the holder's bins of the subsample rows
    subsample: np.ndarray  # row mask of the subsample
    histograms: dict[int, list[list[mpz]]] = field(default_factory=dict)
    samples: dict[int, np.ndarray] = field(default_factory=dict)  # node → in-sample row mask
    candidates: dict[int, dict[int, tuple[int, int]]] = field(default_factory=dict)
    # node → category id → (feature, bin) of the categorical groups returned for the node
    categories: dict[int, dict[int, tuple[int, int]]] = field(default_factory=dict)
    # node → all its rows (subsample or not), where this holder knows them: the children of its
    # own splits and every node it was asked to split (ApplySplit rows are checked against it)
    known: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass(kw_only=True)
class SecureBoostJob(HolderJob):
    """An open job at the holder: the bank's public key, the holder's bins, splits so far."""

    alignment_id: str
    n_rows: int  # rows of the job (the selected rows of the alignment)
    params: PublicParams
    packer: GradHessPacker
    engine: PaillierEngine
    binner: QuantileBinner
    bins: np.ndarray  # (n_rows, n_features) int32
    n_bins: np.ndarray
    n_trees: int
    max_depth: int
    min_node_samples: int
    trees_seen: set[int] = field(default_factory=set)
    tree: TreeState | None = None
    splits: Splits = field(default_factory=dict)
    terms: dict[str, Any] = field(default_factory=dict)  # what a resumed Start must repeat
    # feature → thresholds whose partitions the bank received in this job, including trees a
    # resume dropped (what the bank learnt stays learnt): bounded by max_thresholds_per_feature
    revealed: Revealed = field(default_factory=dict)

    def close(self) -> None:
        self.tree = None
        self.engine.close()


def start_terms(
    request: secureboost_pb2.SecureBoostStart, binner: QuantileBinner
) -> dict[str, Any]:
    """A job's terms apart from its keys: equal on resume, or the data or the job changed."""
    return {
        "alignment_id": request.alignment_id,
        "rows_sha256": hashlib.sha256(request.rows).hexdigest(),
        "n_rows": int(request.n_rows),
        "max_bin": int(request.max_bin),
        "max_depth": int(request.max_depth),
        "n_trees": int(request.n_trees),
        "min_node_samples": int(request.min_node_samples),
        "bins_sha256": hashlib.sha256(
            json.dumps(binner.to_dict(), sort_keys=True).encode()
        ).hexdigest(),
    }


def checkpoint_to_dict(job: SecureBoostJob) -> dict[str, Any]:
    """The job's terms and splits so far (bin edges are data: the file is 0600)."""
    return {
        "format": "xinyidai.secureboost.holder-checkpoint/1",
        "terms": job.terms,
        "splits": _splits_to_dict(job.splits),
        "revealed": {str(f): sorted(t) for f, t in job.revealed.items()},
    }


def checkpoint_from_dict(data: dict[str, Any]) -> tuple[dict[str, Any], Splits, Revealed]:
    """(terms, splits, revealed thresholds) of a saved checkpoint; raises KeyError/TypeError/...
    when damaged. A checkpoint without ``revealed`` (written before it existed) counts the
    thresholds of its splits."""
    splits = _splits_from_dict(data["splits"])
    revealed = revealed_by(splits)
    for f, thresholds in dict(data.get("revealed", {})).items():
        revealed.setdefault(int(f), set()).update(int(t) for t in thresholds)
    return dict(data["terms"]), splits, revealed
