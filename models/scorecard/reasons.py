"""Reason codes: the data categories that cost an enterprise the most points.

Why per category: a category (tax, electricity, ...) is the unit an enterprise's authorisation
covers; a holder reports its points summed per category with the category's maximum and never
reveals which of its bins an enterprise fell into.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.scorecard.points import ScorecardError, category_order

__all__ = ["ReasonCode", "combine_categories", "reason_codes"]


@dataclass(frozen=True)
class ReasonCode:
    """A data category and the points it lost against its maximum."""

    category: str
    points_lost: float


def combine_categories(*parts: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Sum per-category points (or maxima) reported by several parties."""
    out: dict[str, np.ndarray] = {}
    for part in parts:
        for cat, value in part.items():
            arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
            out[cat] = arr if cat not in out else out[cat] + arr
    return out


def reason_codes(
    category_points: Mapping[str, Any],
    category_max: Mapping[str, Any],
    *,
    k: int = 3,
    tolerance: float = 1e-9,
) -> list[list[ReasonCode]]:
    """Per row, the (at most) ``k`` categories that lost the most points, largest loss first.

    ``category_points[c]`` is a row vector (or a scalar for one enterprise) of the points
    category ``c`` gave; ``category_max[c]`` the most it can give. Categories that lost nothing
    are not reasons; ties go in ``CATEGORIES`` order. Input is category-level by design: a
    holder never reveals which of its bins an enterprise fell into.
    """
    if not isinstance(k, int) or k < 1:
        raise ScorecardError(f"k must be a positive integer, got {k!r}")
    if not category_points:
        raise ScorecardError("no category points given")
    missing = sorted(set(category_points) - set(category_max))
    if missing:
        raise ScorecardError(
            f"no maximum points for categor{'ies' if len(missing) > 1 else 'y'} {missing}"
        )
    cats = sorted(category_points, key=category_order)
    got = np.column_stack([np.atleast_1d(np.asarray(category_points[c], float)) for c in cats])
    best = np.array([float(np.asarray(category_max[c], float).sum()) for c in cats])
    lost = best[None, :] - got
    over = np.argwhere(lost < -tolerance)
    if over.size:
        row, col = over[0]
        raise ScorecardError(
            f"category '{cats[col]}' scored {got[row, col]} in row {row}, above its maximum "
            f"{best[col]}: points and maxima do not come from the same table"
        )
    out = []
    for row in lost:
        order = sorted(range(len(cats)), key=lambda j: (-row[j], j))
        out.append([ReasonCode(cats[j], float(row[j])) for j in order if row[j] > tolerance][:k])
    return out
