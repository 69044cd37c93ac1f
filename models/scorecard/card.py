"""The bank's scorecard: the scaling, the intercept's base points and the bank's own table.

Why apart from the points tables (``points.py``): only the bank adds the parties' points up —
base points + its own points + every holder's reported points — and holds the intercept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.scorecard.points import (
    PdoScaling,
    PointsTable,
    ScorecardError,
    WoeTable,
    check_decimals,
    points_table,
    round_points,
)

__all__ = ["Scorecard", "build_scorecard"]


@dataclass
class Scorecard:
    """The bank's part: the scaling, the intercept's base points and the bank's own table.

    ``score(bank_bins, holder_points)`` adds every holder's reported points (per row, summed
    over its features or categories) to the bank's; a centralised scorecard is this with one
    table holding every feature (``bank`` = that table, no holders).
    """

    scaling: PdoScaling
    intercept: float
    decimals: int | None = 0
    bank: PointsTable | None = None
    base_points: float = field(init=False)

    def __post_init__(self) -> None:
        check_decimals(self.decimals)
        if not math.isfinite(float(self.intercept)):
            raise ScorecardError(f"intercept must be finite, got {self.intercept!r}")
        self.base_points = float(
            round_points(self.scaling.base_points(self.intercept), self.decimals)
        )

    def score(
        self,
        bank_bins: Any = None,
        holder_points: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """Base points + the bank's points (from its bins) + each holder's points per row.

        ``holder_points[holder]`` is the holder's per-row total, or its per-category dict
        (:meth:`PointsTable.category_points`), which is summed here.
        """
        parts: list[np.ndarray] = []
        if self.bank is not None:
            if bank_bins is None:
                raise ScorecardError("the scorecard has bank features: give bank_bins")
            parts.append(self.bank.score(bank_bins))
        for name, pts in (holder_points or {}).items():
            if isinstance(pts, Mapping):
                pts = np.sum([np.asarray(v, dtype=np.float64) for v in pts.values()], axis=0)
            arr = np.atleast_1d(np.asarray(pts, dtype=np.float64))
            if not np.isfinite(arr).all():
                raise ScorecardError(f"holder '{name}' reported non-finite points")
            parts.append(arr)
        if not parts:
            raise ScorecardError("no points to add: give bank_bins and/or holder_points")
        sizes = {p.size for p in parts}
        if len(sizes) != 1:
            raise ScorecardError(f"parties scored different numbers of rows: {sorted(sizes)}")
        return np.asarray(self.base_points + np.sum(parts, axis=0))

    def probability(self, score: Any) -> np.ndarray:
        return self.scaling.probability(score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "xinyidai.scorecard.bank/1",
            "scaling": self.scaling.to_dict(),
            "intercept": float(self.intercept),
            "decimals": self.decimals,
            "base_points": self.base_points,
            "bank": None if self.bank is None else self.bank.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Scorecard:
        try:
            return cls(
                scaling=PdoScaling.from_dict(data["scaling"]),
                intercept=float(data["intercept"]),
                decimals=None if data["decimals"] is None else int(data["decimals"]),
                bank=None if data.get("bank") is None else PointsTable.from_dict(data["bank"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScorecardError(f"not a saved scorecard: {exc}") from None


def build_scorecard(
    intercept: float,
    coefficients: Mapping[str, Sequence[float] | Mapping[str, float]],
    woe_tables: Mapping[str, Sequence[WoeTable]],
    scaling: PdoScaling | None = None,
    *,
    categories: Mapping[str, Sequence[str] | Mapping[str, str]] | None = None,
    decimals: int | None = 0,
    bank: str = "bank",
) -> tuple[Scorecard, dict[str, PointsTable]]:
    """All parties' tables in one place (simulation, or a centralised scorecard): the bank's
    :class:`Scorecard` (base points and the ``bank`` party's table, if any) and every other
    party's :class:`PointsTable`. In a federation each holder calls :func:`points_table` itself.
    """
    scaling = scaling or PdoScaling()
    if set(coefficients) != set(woe_tables):
        raise ScorecardError(
            f"coefficients for parties {sorted(coefficients)} but WOE tables for "
            f"{sorted(woe_tables)}"
        )
    tables = {
        party: points_table(
            party,
            woe_tables[party],
            coefficients[party],
            scaling,
            categories=None if categories is None else categories.get(party),
            decimals=decimals,
        )
        for party in woe_tables
    }
    card = Scorecard(
        scaling=scaling, intercept=float(intercept), decimals=decimals, bank=tables.pop(bank, None)
    )
    return card, tables
