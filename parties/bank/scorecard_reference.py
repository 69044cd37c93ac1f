"""The scorecard recipe in one place: every party's features, the federation's steps in plaintext.

Why: it is the federated scorecard's test oracle (same bins, same selection, same optimiser, same
points, so the federation must reproduce it) and the experiments' comparisons — on every party's
features it is the centralised scorecard a data pool would give, on the bank's alone the
bank-only card the federation has to beat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.linear import PlaintextLogisticRegression
from models.scorecard import PointsTable, Scorecard, build_scorecard
from models.woe import BANK, WoeEncoder
from parties.bank.scorecard_model import ScorecardParams, ScorecardTrainingError, select_features

__all__ = ["CentralisedScorecard", "centralised_scorecard"]


@dataclass
class CentralisedScorecard:
    """WOE encoders, selection, LR and points fitted on all parties' features in one place."""

    encoders: dict[str, WoeEncoder]
    selected: dict[str, list[int]]
    lr: PlaintextLogisticRegression
    scorecard: Scorecard
    tables: dict[str, PointsTable]
    parties: list[str]

    def _bins(self, features: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        for party in self.parties:
            enc = self.encoders[party]
            out[party] = enc.binner_.transform(np.asarray(features[party], dtype=np.float64))[
                :, self.selected[party]
            ]
        return out

    def woe(self, features: Mapping[str, Any]) -> np.ndarray:
        cols = [
            self.encoders[p].transform(np.asarray(features[p], dtype=np.float64))[
                :, self.selected[p]
            ]
            for p in self.parties
        ]
        return np.column_stack(cols)

    def decision_function(self, features: Mapping[str, Any]) -> np.ndarray:
        return self.lr.decision_function(self.woe(features))

    def predict_proba(self, features: Mapping[str, Any]) -> np.ndarray:
        return self.lr.predict_proba(self.woe(features))

    def score(self, features: Mapping[str, Any]) -> np.ndarray:
        bins = self._bins(features)
        others = {p: t.score(bins[p]) for p, t in self.tables.items()}
        return self.scorecard.score(bins.get(BANK) if self.scorecard.bank else None, others)

    @property
    def coefficients(self) -> dict[str, np.ndarray]:
        out, pos = {}, 0
        for p in self.parties:
            k = len(self.selected[p])
            out[p] = self.lr.coef_[0][pos : pos + k]
            pos += k
        return out


def centralised_scorecard(
    features: Mapping[str, tuple[Any, Sequence[str]]],
    y: Any,
    params: ScorecardParams | None = None,
    *,
    categories: Mapping[str, str] | None = None,
) -> CentralisedScorecard:
    """The scorecard recipe on every party's training rows in one place: per party a
    ``WoeEncoder`` (the same bins as the federation's), the same selection, the federation's
    optimiser (``PlaintextLogisticRegression``) on the WOE columns (party order: as given, the
    bank first by convention) and the same points. ``categories``: party → data category
    (default the party's name). Only ``{"bank": ...}``: the bank-only scorecard."""
    p = params or ScorecardParams()
    labels = np.asarray(y, dtype=np.float64)
    encoders: dict[str, WoeEncoder] = {}
    selected: dict[str, list[int]] = {}
    for party, (values, names) in features.items():
        enc = WoeEncoder(
            max_bin=p.max_bin, min_bin_samples=p.min_bin_samples, monotonic=p.monotonic
        )
        enc.fit(np.asarray(values, dtype=np.float64), labels, feature_names=names, party=party)
        encoders[party] = enc
        selected[party] = select_features(enc.tables_, p.min_iv)
    parties = [party for party in features if selected[party]]
    if not parties:
        raise ScorecardTrainingError(f"no feature has IV >= {p.min_iv}: nothing to score with")
    X = np.column_stack(
        [
            encoders[q].transform(np.asarray(features[q][0], dtype=np.float64))[:, selected[q]]
            for q in parties
        ]
    )
    lr = PlaintextLogisticRegression(p.linear_params(X.shape[0])).fit(X, labels)
    coefs, pos = {}, 0
    for q in parties:
        coefs[q] = lr.coef_[0][pos : pos + len(selected[q])]
        pos += len(selected[q])
    woe_tables = {q: [encoders[q].tables_[j] for j in selected[q]] for q in parties}
    cats = {q: [(categories or {}).get(q, q)] * len(selected[q]) for q in parties}
    card, tables = build_scorecard(
        float(lr.intercept_[0]),
        coefs,
        woe_tables,
        p.scaling,
        categories=cats,
        decimals=p.decimals,
        bank=BANK,
    )
    return CentralisedScorecard(
        encoders=encoders,
        selected=selected,
        lr=lr,
        scorecard=card,
        tables=tables,
        parties=parties,
    )
