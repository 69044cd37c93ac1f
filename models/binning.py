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

**Categorical features** (``fit(..., categorical=[j, ...])``: columns of category codes from
``parties.data.encoding``): bin 0 is missing; each category with at least
``min_category_count`` training rows is a bin of its own (bins 1..k, in code order, at most
``max_bin - 1`` of them, the most frequent kept); the last bin, k + 1, is **"other"**: rare
categories merged, and any category unseen in training (scoring a new file). The "other" bin
may be empty on the training data. Bin numbers carry no order: SecureBoost splits them as sets
(``docs/secureboost.md``), WOE treats each as a bin, LR one-hot encodes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from federation.errors import XinyidaiError

MISSING_BIN = 0
MAX_CATEGORIES = 61
"""Most categories one feature keeps as bins of their own (the most frequent); with missing
and "other" that is 63 bins, so a set of bins fits the 63-bit mask of a categorical split."""
MIN_CATEGORY_COUNT = 10
"""Categories with fewer training rows merge into the feature's "other" bin: a category seen a
handful of times gives a split too fine to generalise (and, at a holder, one that would isolate
those few rows)."""


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

    def __init__(self, *, max_bin: int = 32, min_category_count: int = MIN_CATEGORY_COUNT):
        if not isinstance(max_bin, int | np.integer) or not 2 <= max_bin <= 255:
            raise BinningError(f"max_bin must be an integer in [2, 255], got {max_bin!r}")
        if not isinstance(min_category_count, int | np.integer) or min_category_count < 1:
            raise BinningError(f"min_category_count must be >= 1, got {min_category_count!r}")
        self.max_bin = int(max_bin)
        self.min_category_count = int(min_category_count)
        self.categories_: list[np.ndarray | None] = []

    @property
    def categorical_(self) -> list[bool]:
        """Per feature: whether its bins are categories (no order) rather than quantiles."""
        return [c is not None for c in self.categories_]

    def other_bin(self, j: int) -> int:
        """The "other" bin of categorical feature ``j`` (rare and unseen categories)."""
        cats = self.categories_[j]
        if cats is None:
            raise BinningError(f"feature #{j} is not categorical")
        return int(cats.size) + 1

    def _fit_categories(self, col: np.ndarray, name: str, j: int) -> np.ndarray:
        present = col[~np.isnan(col)]
        if present.size == 0:
            raise ConstantFeatureError("is missing in every row", feature=name, index=j)
        if np.any(present < 0) or np.any(present != np.floor(present)):
            raise BinningError("is categorical but holds values that are not codes", feature=name)
        codes, counts = np.unique(present, return_counts=True)
        frequent = counts >= self.min_category_count
        limit = min(self.max_bin - 1, MAX_CATEGORIES)
        if frequent.sum() > limit:  # keep the most frequent (ties: smaller code)
            order = np.lexsort((codes, -counts))[:limit]
            frequent = np.zeros_like(frequent)
            frequent[order] = True
        kept = codes[frequent]
        groups = kept.size + int((~frequent).any()) + int(present.size < col.size)
        if groups < 2:
            raise ConstantFeatureError(
                "has one category group in every row (after merging rare ones): it cannot split",
                feature=name,
                index=j,
            )
        return kept

    def _names(self, n: int, feature_names: Sequence[str] | None) -> list[str]:
        if feature_names is None:
            return [f"x{j}" for j in range(n)]
        names = [str(c) for c in feature_names]
        if len(names) != n:
            raise BinningError(f"{len(names)} feature names for {n} columns")
        return names

    def fit(
        self,
        X: np.ndarray,
        *,
        feature_names: Sequence[str] | None = None,
        categorical: Sequence[int] = (),
    ) -> QuantileBinner:
        """Learn edges (categories for the ``categorical`` column indices) from the training
        values; raises naming the first bad feature."""
        arr = _as_matrix(X, "X")
        names = self._names(arr.shape[1], feature_names)
        if arr.shape[0] == 0:
            raise BinningError("X has no rows")
        nominal = {int(j) for j in categorical}
        if any(not 0 <= j < arr.shape[1] for j in nominal):
            raise BinningError(f"categorical indices must be in [0, {arr.shape[1]})")
        levels = np.arange(1, self.max_bin) / self.max_bin
        edges: list[np.ndarray] = []
        cats: list[np.ndarray | None] = []
        for j, name in enumerate(names):
            col = arr[:, j]
            if j in nominal:
                if np.isinf(col).any():
                    raise BinningError("has infinite values", feature=name, index=j)
                cats.append(self._fit_categories(col, name, j))
                edges.append(np.empty(0))
                continue
            cats.append(None)
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
        self.categories_ = cats
        self.n_bins_ = self._n_bins()
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
            kept = self.categories_[j] if j < len(self.categories_) else None
            if kept is not None:
                at = np.searchsorted(kept, col)
                known = (at < kept.size) & (kept[np.minimum(at, max(kept.size - 1, 0))] == col)
                if kept.size == 0:
                    known = np.zeros(col.shape, dtype=bool)
                binned = np.where(known, 1 + at, kept.size + 1)
                out[:, j] = np.where(missing, MISSING_BIN, binned)
                continue
            out[:, j] = np.where(missing, MISSING_BIN, 1 + np.searchsorted(cuts, col, "left"))
        return out

    def fit_transform(
        self,
        X: np.ndarray,
        *,
        feature_names: Sequence[str] | None = None,
        categorical: Sequence[int] = (),
    ) -> np.ndarray:
        return self.fit(X, feature_names=feature_names, categorical=categorical).transform(X)

    def _n_bins(self) -> np.ndarray:
        """Bins per feature including bin 0 (missing): edges + 2, or categories + 2 ("other")."""
        cats = self.categories_ or [None] * len(self.edges_)
        return np.array(
            [
                e.size + 2 if c is None else c.size + 2
                for e, c in zip(self.edges_, cats, strict=True)
            ],
            dtype=np.int64,
        )

    # -- persistence (JSON-safe, no pickle) --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The owner's own record of its bins (edges are data values: keep it at the owner)."""
        out: dict[str, Any] = {
            "max_bin": self.max_bin,
            "feature_names": list(self.feature_names_),
            "edges": [[float(v) for v in e] for e in self.edges_],
        }
        if any(self.categorical_):  # older files (numeric only) stay byte-identical
            out["min_category_count"] = self.min_category_count
            out["categories"] = [
                None if c is None else [int(v) for v in c] for c in self.categories_
            ]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileBinner:
        try:
            binner = cls(
                max_bin=int(data["max_bin"]),
                min_category_count=int(data.get("min_category_count", MIN_CATEGORY_COUNT)),
            )
            binner.feature_names_ = [str(n) for n in data["feature_names"]]
            binner.edges_ = [np.asarray(e, dtype=np.float64) for e in data["edges"]]
            saved = data.get("categories") or [None] * len(binner.edges_)
            binner.categories_ = [
                None if c is None else np.asarray(c, dtype=np.float64) for c in saved
            ]
        except (KeyError, TypeError, ValueError) as exc:
            raise BinningError(f"not a saved QuantileBinner: {exc}") from None
        if not len(binner.edges_) == len(binner.feature_names_) == len(binner.categories_):
            raise BinningError("saved QuantileBinner has edges and names of different lengths")
        binner.n_bins_ = binner._n_bins()
        binner.n_features_in_ = len(binner.feature_names_)
        return binner


__all__ = [
    "MIN_CATEGORY_COUNT",
    "MISSING_BIN",
    "BinningError",
    "ConstantFeatureError",
    "QuantileBinner",
]
