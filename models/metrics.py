"""Discrimination metrics credit risk teams report: ROC AUC and the Kolmogorov–Smirnov statistic.

Small numpy implementations so every party (and the experiment scripts) computes them the same
way without pulling a model library in; both handle tied scores exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


__all__ = ["MetricError", "ks_statistic", "roc_auc"]
