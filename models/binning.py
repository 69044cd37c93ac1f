"""Quantile binning: each party turns its own feature values into small integer bins, locally.

Why: tree learners only ever ask "is x ≤ threshold?", so a few dozen quantile bins per feature
lose almost nothing, and in vertical SecureBoost the bins are what makes federation possible —
a data holder sums encrypted gradients per bin and never has to reveal a value or a bin edge.
Bin edges are fitted and kept by the party that owns the feature; they never leave it.

Conventions (shared by the plaintext reference and the federated protocol):

* **bin 0 is missing** (NaN / None). Non-missing values get bins 1..k with k ≤ ``max_bin``.
  Because a split sends bins ``≤ t`` left, missing values always go left.
* **Edges are data values**: the lower quantiles (``method="inverted_cdf"``) of the
  non-missing training values at levels 1/max_bin, 2/max_bin, …, deduplicated, keeping only
  edges below the maximum. Value v goes to bin ``1 + #{edges < v}``, i.e. bin j covers
  ``(edge[j-2], edge[j-1]]``. Every edge is itself a training value, so **no bin is empty on
  the training data**.
* Values outside the training range fall into the first or last non-missing bin.
* A feature that cannot split anything — all missing, or one distinct value and no missing
  value — is refused with :class:`ConstantFeatureError` naming it (rather than silently
  dropped: a useless column usually means a join or export went wrong). A feature with one
  value plus some missing values is kept: "missing or not" is a split.
* Infinite values are refused (:class:`BinningError`): they are almost always a bug upstream.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from federation.errors import XinyidaiError

MISSING_BIN = 0


class BinningError(XinyidaiError):
    """Feature values cannot be binned (wrong shape, infinite values, unknown schema).

    ``feature`` / ``index`` name the column when one is to blame; ``reason`` is the message
    without the name (a data holder reports that part to a peer, keeping its column names).
    """

    def __init__(self, reason: str, *, feature: str | None = None, index: int | None = None):
        self.reason = reason
        self.feature = feature
        self.index = index
        super().__init__(reason if feature is None else f"feature '{feature}' {reason}")


class ConstantFeatureError(BinningError):
    """A feature has no split at all on the training data (constant or all missing)."""


def _as_matrix(X: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BinningError(f"{what} must be numeric: {exc}") from None
    if arr.ndim != 2:
        raise BinningError(f"{what} must be 2-D (rows, features), got shape {arr.shape}")
    return arr


class QuantileBinner:
    """Per-feature quantile bins; missing → bin 0 (see the module docstring for the rules).

    ``fit`` learns ``edges_`` (a list with one sorted float array per feature) and ``n_bins_``
    (bins per feature *including* the missing bin 0, so bins of feature f are in
    ``[0, n_bins_[f])``). The edges are the owner's secret: they are data values.
    """

    def __init__(self, *, max_bin: int = 32):
        if not isinstance(max_bin, int | np.integer) or not 2 <= max_bin <= 255:
            raise BinningError(f"max_bin must be an integer in [2, 255], got {max_bin!r}")
        self.max_bin = int(max_bin)

    def _names(self, n: int, feature_names: Sequence[str] | None) -> list[str]:
        if feature_names is None:
            return [f"x{j}" for j in range(n)]
        names = [str(c) for c in feature_names]
        if len(names) != n:
            raise BinningError(f"{len(names)} feature names for {n} columns")
        return names

    def fit(self, X: np.ndarray, *, feature_names: Sequence[str] | None = None) -> QuantileBinner:
        """Learn edges from the training values; raises naming the first bad feature."""
        arr = _as_matrix(X, "X")
        names = self._names(arr.shape[1], feature_names)
        if arr.shape[0] == 0:
            raise BinningError("X has no rows")
        levels = np.arange(1, self.max_bin) / self.max_bin
        edges: list[np.ndarray] = []
        for j, name in enumerate(names):
            col = arr[:, j]
            present = col[~np.isnan(col)]
            if np.isinf(present).any():
                raise BinningError("has infinite values", feature=name, index=j)
            if present.size == 0:
                raise ConstantFeatureError("is missing in every row", feature=name, index=j)
            lo, hi = present.min(), present.max()
            if lo == hi and present.size == col.size:
                raise ConstantFeatureError(
                    "is constant (one value in every row): it cannot split", feature=name, index=j
                )
            cuts = np.unique(np.quantile(present, levels, method="inverted_cdf"))
            edges.append(cuts[cuts < hi])
        self.edges_ = edges
        self.n_bins_ = np.array([e.size + 2 for e in edges], dtype=np.int64)
        self.feature_names_ = names
        self.n_features_in_ = len(names)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bins as an int32 array of the same shape; NaN → 0, others → 1..len(edges)+1."""
        if not hasattr(self, "edges_"):
            raise BinningError("QuantileBinner is not fitted: call fit first")
        arr = _as_matrix(X, "X")
        if arr.shape[1] != self.n_features_in_:
            raise BinningError(
                f"X has {arr.shape[1]} features, the binner was fitted on {self.n_features_in_}"
            )
        out = np.empty(arr.shape, dtype=np.int32)
        for j, cuts in enumerate(self.edges_):
            col = arr[:, j]
            missing = np.isnan(col)
            if np.isinf(col).any():
                raise BinningError("has infinite values", feature=self.feature_names_[j], index=j)
            out[:, j] = np.where(missing, MISSING_BIN, 1 + np.searchsorted(cuts, col, "left"))
        return out

    def fit_transform(
        self, X: np.ndarray, *, feature_names: Sequence[str] | None = None
    ) -> np.ndarray:
        return self.fit(X, feature_names=feature_names).transform(X)

    # -- persistence (JSON-safe, no pickle) --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The owner's own record of its bins (edges are data values: keep it at the owner)."""
        return {
            "max_bin": self.max_bin,
            "feature_names": list(self.feature_names_),
            "edges": [[float(v) for v in e] for e in self.edges_],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileBinner:
        try:
            binner = cls(max_bin=int(data["max_bin"]))
            binner.feature_names_ = [str(n) for n in data["feature_names"]]
            binner.edges_ = [np.asarray(e, dtype=np.float64) for e in data["edges"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise BinningError(f"not a saved QuantileBinner: {exc}") from None
        if len(binner.edges_) != len(binner.feature_names_):
            raise BinningError("saved QuantileBinner has edges and names of different lengths")
        binner.n_bins_ = np.array([e.size + 2 for e in binner.edges_], dtype=np.int64)
        binner.n_features_in_ = len(binner.feature_names_)
        return binner


__all__ = ["MISSING_BIN", "BinningError", "ConstantFeatureError", "QuantileBinner"]
