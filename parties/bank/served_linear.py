"""Scorecard and logistic-regression versions the bank serves (``credit-scorecard``, ``credit-lr``).

Why a module of its own: a linear version is served from different pieces than a SecureBoost
one — the bank's coefficients (LR) or its points table and bin edges (scorecard), the LR job
whose holder parts answer ``LinearHolder.Predict`` / ``ScorecardHolder.ScorePoints``, and the
alignment those answers are addressed by (holders key a linear model's rows by the positions of
the model's PSI alignment). ``FamilyModelCache`` is ``parties.bank.served.ModelCache`` (same
registry resolution, same check of the bank part against the sha256 the version recorded) that
compiles these formats into a ``ServedLinear``; anything else is compiled as SecureBoost.

Everything the bank computes from its own table is precomputed once per version, per aligned
row: its linear predictor (with the intercept) and, for a scorecard, its points and per-category
points. Scoring with it is ``parties.bank.scoring_linear``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from models.linear import VerticalLogisticRegression
from models.linear.estimator import MODEL_FORMAT as LINEAR_FORMAT
from models.linear.reference import LinearError
from models.psi.active import Alignment
from models.psi.store import AlignmentError
from models.scorecard import PointsTable, Scorecard
from models.scorecard.points import ScorecardError
from models.secureboost.estimator import SecureBoostClassifier
from models.woe import BANK
from models.woe.reference import FeatureWoe, WoeError
from parties.bank.scorecard_model import MODEL_FORMAT as SCORECARD_FORMAT
from parties.bank.scorecard_model import binner_from_dict
from parties.bank.served import ModelCache, ScoringError, ServedModel
from parties.data.encoding import one_hot

if TYPE_CHECKING:
    from parties.bank.registry import TrackingConfig

__all__ = ["BANK_CATEGORY", "FamilyModelCache", "ServedLinear", "family_of"]

BANK_CATEGORY = "bank"
"""The bank's own data category in reason codes (as ``FederatedScorecard.fit`` names it)."""

FAMILIES = {SCORECARD_FORMAT: "scorecard", LINEAR_FORMAT: "logistic"}


def family_of(text: str) -> str:
    """``scorecard``, ``logistic`` or ``secureboost`` (anything else) from a bank part's JSON."""
    try:
        data = json.loads(text)
    except ValueError:
        return "secureboost"
    return FAMILIES.get(
        str(data.get("format", "")) if isinstance(data, dict) else "", "secureboost"
    )


@dataclass(kw_only=True)
class ServedLinear(ServedModel):
    """A scorecard or LR version ready to score. A ``ServedModel`` (so the servicer's cache
    and audit fields stay one type) whose SecureBoost fields are empty; ``family`` says which.

    Per aligned row (``positions``: USCC → position in the model's alignment): ``bank_u``,
    the bank's linear predictor including the intercept; ``bank_points`` and
    ``bank_category_points`` (scorecard only), the bank's points from its own bins.
    """

    family: str
    lr_job_id: str  # the LR job whose holder parts answer (a scorecard's LR: "<job>-lr")
    alignment_id: str
    holders: tuple[str, ...]
    positions: dict[str, int]
    bank_u: np.ndarray
    intercept: float
    scorecard: Scorecard | None = None
    bank_points: np.ndarray | None = None
    bank_category_points: dict[str, np.ndarray] = field(default_factory=dict)
    bank_category_max: dict[str, float] = field(default_factory=dict)


_SERVED_FIELDS = {f.name for f in fields(ServedModel)}


def _placeholders() -> dict[str, Any]:
    """The SecureBoost fields of ``ServedModel``, empty (never read for a linear version)."""
    return {
        "clf": SecureBoostClassifier(),
        "bank_reach": np.zeros((0, 0), dtype=bool),
        "weights": np.zeros(0),
        "samples": np.zeros(0),
        "tree_starts": np.zeros(0, dtype=np.int64),
        "base_score": 0.0,
        # only masked totals reach the bank: named on replies and audit records as private
        **({"serving_mode": "private"} if "serving_mode" in _SERVED_FIELDS else {}),
    }


class FamilyModelCache(ModelCache):
    """``ModelCache`` serving every family: scorecard and LR bank parts become
    ``ServedLinear``; SecureBoost parts compile as before.

    ``codes``: the bank's table codes in row order (the alignment is checked against them).
    """

    def __init__(
        self,
        *,
        features: pd.DataFrame,
        codes: Sequence[str],
        models_dir: Path,
        tracking: TrackingConfig | None = None,
        alias_ttl_s: float = 10.0,
    ):
        super().__init__(
            features=features, models_dir=models_dir, tracking=tracking, alias_ttl_s=alias_ttl_s
        )
        self.codes = [str(c) for c in codes]

    def _compile(
        self,
        name: str,
        version: str,
        model_id: str,
        job_id: str,
        text: str,
        digests: dict[str, str],
    ) -> ServedModel:
        family = family_of(text)
        if family == "secureboost":
            return super()._compile(name, version, model_id, job_id, text, digests)
        try:
            return self._compile_linear(family, name, version, model_id, job_id, text, digests)
        except (LinearError, ScorecardError, WoeError, AlignmentError, KeyError, TypeError) as exc:
            raise ScoringError(f"model {name}/{version} ({family}): {exc}") from None

    # -- the bank's part -------------------------------------------------------------------
    def _alignment(self, alignment_id: str) -> Alignment:
        if not alignment_id:
            raise ScoringError("the model names no alignment: its holders cannot be asked")
        return Alignment.load(
            self.models_dir.parent / "alignments", alignment_id, table_codes=self.codes
        )

    def _lr_values(self, lr: VerticalLogisticRegression, frame: pd.DataFrame) -> np.ndarray:
        """The bank's LR inputs for ``frame`` (its aligned rows), prepared exactly as training
        did: categorical columns one-hot over the aligned rows (``parties.bank.linear``), the
        fitted columns in order, the bank's scaler."""
        fitted = [str(n) for n in lr.feature_names_in_]
        columns = [str(c) for c in frame.columns]
        categorical = sorted({n.split("=", 1)[0] for n in fitted if "=" in n} & set(columns))
        values, names = one_hot(frame.to_numpy(dtype=np.float64), columns, categorical)
        at = {n: j for j, n in enumerate(names)}
        missing = [n for n in fitted if n not in at]
        if missing:
            raise ScoringError(
                f"the bank's table no longer has the model's column(s) {missing[:3]} (schema drift)"
            )
        X = values[:, [at[n] for n in fitted]] if fitted else np.zeros((len(frame), 0))
        return np.asarray(lr.scaler_.transform(X), dtype=np.float64)

    def _compile_linear(
        self,
        family: str,
        name: str,
        version: str,
        model_id: str,
        job_id: str,
        text: str,
        digests: dict[str, str],
    ) -> ServedLinear:
        data = json.loads(text)
        card: Scorecard | None = None
        bank_points: np.ndarray | None = None
        cat_points: dict[str, np.ndarray] = {}
        cat_max: dict[str, float] = {}
        if family == "scorecard":
            lr = VerticalLogisticRegression.from_json(json.dumps(data["linear"]))
        else:
            lr = VerticalLogisticRegression.from_json(text)
        alignment = self._alignment(str(lr.alignment_id_))
        frame = self.features.iloc[alignment.bank_rows].reset_index(drop=True)
        if family == "scorecard":
            card = Scorecard.from_dict(data["scorecard"])
            selected = [int(j) for j in (data.get("selected") or {}).get(BANK, [])]
            if selected:
                binner_data = data.get("bank_binner")
                if not binner_data:
                    raise ScoringError(
                        f"model {name}/{version}: its bank part keeps no bin edges (registered "
                        "before scorecards could be served); train and register it again"
                    )
                binner = binner_from_dict(binner_data)
                if list(binner.feature_names_) != [str(c) for c in frame.columns]:
                    raise ScoringError(
                        f"model {name}/{version}: the bank's columns changed since training "
                        "(schema drift)"
                    )
                bins = binner.transform(frame.to_numpy(dtype=np.float64))[:, selected]
                tables = [FeatureWoe.from_dict(t) for t in data["bank_woe"]]
                woe = np.column_stack(
                    [tables[j].transform(bins[:, k]) for k, j in enumerate(selected)]
                )
                bank_frame = pd.DataFrame(woe, columns=[str(n) for n in lr.feature_names_in_])
                values = np.asarray(lr.scaler_.transform(bank_frame.to_numpy()), dtype=np.float64)
                if card.bank is None:
                    raise ScoringError(f"model {name}/{version}: bank features but no bank table")
                table: PointsTable = card.bank
                bank_points = np.asarray(table.score(bins), dtype=np.float64)
                cat_points = {c: np.asarray(v) for c, v in table.category_points(bins).items()}
                cat_max = {c: float(np.sum(v)) for c, v in table.category_max().items()}
            else:
                values = np.zeros((len(frame), 0))
        else:
            values = self._lr_values(lr, frame)
        coef = np.asarray(lr.coef_[0], dtype=np.float64)
        intercept = float(lr.intercept_[0])
        bank_u = values @ coef + intercept if coef.size else np.full(len(frame), intercept)
        codes = [self.codes[int(i)] for i in alignment.bank_rows]
        holders = tuple(str(h) for h in lr.holders_)
        missing = [h for h in holders if h not in alignment.holders]
        if missing:
            raise ScoringError(f"model {name}/{version}: holder(s) {missing} not in its alignment")
        return ServedLinear(
            name=name,
            version=version,
            model_id=model_id,
            job_id=job_id,
            owners=holders,
            digests=digests,
            family=family,
            lr_job_id=str(lr.job_id_),
            alignment_id=alignment.job_id,
            holders=holders,
            positions={c: k for k, c in enumerate(codes)},
            bank_u=np.asarray(bank_u, dtype=np.float64),
            intercept=intercept,
            scorecard=card,
            bank_points=bank_points,
            bank_category_points=cat_points,
            bank_category_max=cat_max,
            **_placeholders(),
        )
