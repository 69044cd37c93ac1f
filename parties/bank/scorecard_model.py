"""The federated scorecard at the bank: WOE/IV → vertical LR on WOE → points.

Why a model of its own: a scorecard is three protocols in a row (``models.woe``, ``models.linear``,
``models.scorecard.active``) glued by decisions only the bank takes — which features stay, how the
holders' WOE values become LR features without leaving them, how points are scaled. This module
is that glue; the training job around it (split, evaluation, report) is ``parties.bank.scorecard``
and the same recipe in one place is ``parties.bank.scorecard_reference``.

1. **WOE/IV** (``models.woe.FederatedWoe``): the bank's own features with the plaintext
   ``WoeEncoder``, each holder's through its ``WoeHolder`` service (encrypted labels in, per-bin
   counts out), small-bin and monotonic merging. **Selection**: a feature stays when it has
   more than one non-empty bin and IV ≥ ``min_iv`` (0.02); a holder learns which of its
   features stay by index, inside the LR's feature view. A holder left with none sits out.
2. **Vertical LR** (``models.linear``, Paillier or CKKS, never standardised) where each holder's
   features are its OWN WOE values: the bank names the view ``woe:<woe job>:<indices>`` and
   the holder transforms its rows locally; the bank never sees them.
3. **Points** (``models.scorecard``): the bank builds its own table and the base points from
   the intercept; each holder builds its table from its own coefficients and WOE tables
   (``LinearHolder.Points``: public scaling in, an ack out) and keeps it.
4. **Scoring** in one round: probability from the LR (``Predict``), points = base + the bank's
   points + the holders' points (``ScorePoints``: masked pairwise with two or more holders, so
   the bank reads only their sum); reason codes per data category (``by_category``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from federation.errors import ConfigError, XinyidaiError
from federation.transport.base import PeerBase
from models.binning import QuantileBinner
from models.linear import LinearParams, VerticalLogisticRegression
from models.linear.reference import sigmoid
from models.scorecard import (
    PdoScaling,
    PointsTable,
    ReasonCode,
    Scorecard,
    combine_categories,
    points_table,
    reason_codes,
)
from models.scorecard.active import build_points, holder_category_points, holder_points
from models.woe import BANK, FeatureWoe, FederatedWoe
from parties.holder.views import woe_view

__all__ = [
    "MODEL_FORMAT",
    "FederatedScorecard",
    "ScorecardParams",
    "ScorecardTrainingError",
    "binner_from_dict",
    "binner_to_dict",
    "select_features",
]

Progress = Callable[[str], None]
MODEL_FORMAT = "xinyidai.scorecard.federated/1"


def _quiet(_: str) -> None:
    pass


class ScorecardTrainingError(XinyidaiError):
    """The scorecard cannot be trained as asked (no informative feature, bad parameters)."""


@dataclass
class ScorecardParams:
    """Everything a scorecard job needs: WOE binning, selection, the LR, the points scaling.

    ``alpha``: L2 strength of the LR (mean log-loss + alpha/2·||w||²); the LR is never
    standardised (the points need coefficients on raw WOE values). ``decimals``: rounding of
    each bin's points (0: whole points; None: exact).
    """

    backend: str = "paillier"
    key_bits: int = 2048
    workers: int | None = None
    max_bin: int = 32
    min_bin_samples: int = 20
    monotonic: bool = True
    min_iv: float = 0.02
    learning_rate: float = 1.0
    max_iter: int = 8
    alpha: float = 1e-4
    tol: float | None = 1e-4
    n_iter_no_change: int = 3
    batch_size: int | None = None
    random_state: int = 0
    points0: float = 600.0
    odds0: float = 1 / 19
    pdo: float = 50.0
    decimals: int | None = 0
    purpose: str = "financing"

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> ScorecardParams:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(values or {}) - known)
        if extra:
            raise ConfigError(f"unknown scorecard parameter(s): {', '.join(extra)}")
        return cls(**dict(values or {}))

    @property
    def scaling(self) -> PdoScaling:
        return PdoScaling(points0=self.points0, odds0=self.odds0, pdo=self.pdo)

    def lr_kwargs(self) -> dict[str, Any]:
        """``VerticalLogisticRegression`` keyword arguments (also the plaintext twin's)."""
        return {
            "backend": self.backend,
            "alpha": self.alpha,
            "learning_rate": self.learning_rate,
            "max_iter": self.max_iter,
            "tol": self.tol,
            "n_iter_no_change": self.n_iter_no_change,
            "batch_size": self.batch_size,
            "standardize": False,
            "random_state": self.random_state,
            "key_bits": self.key_bits,
            "workers": self.workers,
            "purpose": self.purpose,
        }

    def linear_params(self, n_train: int) -> LinearParams:
        return VerticalLogisticRegression(**self.lr_kwargs()).linear_params(n_train)


def select_features(tables: Sequence[FeatureWoe], min_iv: float) -> list[int]:
    """Positions of the features that stay: informative (two or more non-empty bins) and
    IV ≥ ``min_iv``. An uninformative feature would be a constant column in the LR."""
    return [j for j, t in enumerate(tables) if t.informative and t.iv >= min_iv]


def binner_to_dict(binner: QuantileBinner) -> dict[str, Any]:
    """The bank's fitted ``QuantileBinner`` as JSON (edges, kept categories, names), so a
    served scorecard bins the bank's rows exactly as training did."""
    return {
        "max_bin": int(binner.max_bin),
        "min_category_count": int(binner.min_category_count),
        "edges": [[float(v) for v in e] for e in binner.edges_],
        "categories": [None if c is None else [float(v) for v in c] for c in binner.categories_],
        "feature_names": list(binner.feature_names_),
    }


def binner_from_dict(data: Mapping[str, Any]) -> QuantileBinner:
    """``binner_to_dict``'s inverse."""
    binner = QuantileBinner(
        max_bin=int(data["max_bin"]), min_category_count=int(data["min_category_count"])
    )
    binner.edges_ = [np.asarray(e, dtype=np.float64) for e in data["edges"]]
    binner.categories_ = [
        None if c is None else np.asarray(c, dtype=np.float64) for c in data["categories"]
    ]
    binner.feature_names_ = [str(n) for n in data["feature_names"]]
    binner.n_features_in_ = len(binner.feature_names_)
    binner.n_bins_ = binner._n_bins()
    return binner


def _frame(values: Any, names: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(values, dtype=np.float64), columns=list(names))


# ---------------------------------------------------------------------------------------------
# the federated scorecard (the bank's part)


class FederatedScorecard:
    """The bank's part of a federated scorecard; holders keep theirs (WOE, weights, points).

    ``fit(X_bank, y, woe_holders=..., linear_holders=..., points_holders=...)`` (peers of the
    ``WoeHolder``, ``LinearHolder`` and ``ScorecardHolder`` services) runs steps 1-3 of the
    module docstring on the training rows (``alignment_rows``: their mask over the alignment;
    holders take the same rows). Fitted: ``woe_`` (``FederatedWoe``), ``selected_`` (party → kept
    feature positions), ``lr_`` (``VerticalLogisticRegression``), ``scorecard_`` (base points
    and the bank's table), ``holders_`` (holders in the LR), ``iv_`` (the IV report).
    """

    def __init__(self, params: ScorecardParams | None = None, *, job_id: str | None = None):
        self.params = params or ScorecardParams()
        self.job_id = job_id

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        X_bank: pd.DataFrame,
        y: Any,
        *,
        woe_holders: Mapping[str, PeerBase],
        linear_holders: Mapping[str, PeerBase],
        points_holders: Mapping[str, PeerBase],
        alignment_id: str = "",
        alignment_rows: np.ndarray | None = None,
        on_epoch: Callable[[int, float], None] | None = None,
        progress: Progress = _quiet,
        bank_category: str = "bank",
    ) -> FederatedScorecard:
        job = self.job_id or f"sc-{uuid.uuid4().hex[:12]}"
        self.job_id_ = job
        if not isinstance(X_bank, pd.DataFrame):
            raise ScorecardTrainingError("X_bank must be a DataFrame with the bank's columns")
        labels = np.asarray(y, dtype=np.float64)
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        woe = self._fit_woe(X_bank, labels, woe_holders, alignment_id, alignment_rows)
        timings["woe_seconds"] = time.perf_counter() - t0
        views = self._select(woe, X_bank, woe_holders, progress, timings["woe_seconds"])

        t1 = time.perf_counter()
        lr = VerticalLogisticRegression(**self.params.lr_kwargs(), job_id=f"{job}-lr")
        lr.fit(
            _frame(self.bank_woe(X_bank), self.bank_features_),
            labels,
            holders={h: linear_holders[h] for h in self.holders_},
            alignment_id=alignment_id,
            alignment_rows=alignment_rows,
            on_epoch=on_epoch,
            feature_views=views,
        )
        timings["lr_seconds"] = time.perf_counter() - t1
        self.lr_ = lr
        progress(f"LR ({self.params.backend}) {lr.n_iter_} epochs in {timings['lr_seconds']:.1f} s")

        t2 = time.perf_counter()
        self._fit_points(lr, points_holders, bank_category)
        timings["points_seconds"] = time.perf_counter() - t2
        self.timings_ = timings
        return self

    def _fit_woe(
        self,
        X_bank: pd.DataFrame,
        labels: np.ndarray,
        woe_holders: Mapping[str, PeerBase],
        alignment_id: str,
        alignment_rows: np.ndarray | None,
    ) -> FederatedWoe:
        """Step 1: every party's WOE tables and IVs (the holders' through ``WoeHolder``)."""
        p = self.params
        woe = FederatedWoe(
            key_bits=p.key_bits,
            max_bin=p.max_bin,
            min_bin_samples=p.min_bin_samples,
            monotonic=p.monotonic,
            purpose=p.purpose,
            job_id=f"{self.job_id_}-woe",
            workers=p.workers,
            alignment_id=alignment_id,
            alignment_rows=alignment_rows,
        )
        woe.fit(
            labels,
            holders=woe_holders,
            X_bank=X_bank if len(X_bank.columns) else None,
            bank_feature_names=[str(c) for c in X_bank.columns],
        )
        return woe

    def _select(
        self,
        woe: FederatedWoe,
        X_bank: pd.DataFrame,
        woe_holders: Mapping[str, PeerBase],
        progress: Progress,
        seconds: float,
    ) -> dict[str, str]:
        """The features that stay, per party; returns each holder's LR feature view."""
        min_iv = self.params.min_iv
        self.woe_ = woe
        self.iv_ = woe.iv_report()
        self.selected_ = {
            party: select_features(tables, min_iv) for party, tables in woe.tables_.items()
        }
        kept = {party: len(sel) for party, sel in self.selected_.items()}
        progress(f"WOE/IV in {seconds:.1f} s; features kept per party: {kept}")
        if not any(kept.values()):
            raise ScorecardTrainingError(
                f"no feature has IV >= {min_iv} with two or more bins: nothing to score with"
            )
        self.holders_ = [h for h in woe_holders if self.selected_.get(h)]
        self.bank_features_ = [str(X_bank.columns[j]) for j in self.selected_.get(BANK, [])]
        return {h: woe_view(woe.job_id_, self.selected_[h]) for h in self.holders_}

    def _fit_points(
        self,
        lr: VerticalLogisticRegression,
        points_holders: Mapping[str, PeerBase],
        bank_category: str,
    ) -> None:
        """Step 3: the bank's points table and base points; each holder builds and keeps its own."""
        p = self.params
        bank_sel = self.selected_.get(BANK, [])
        bank_table: PointsTable | None = None
        if bank_sel:
            tables = [self.woe_.tables_[BANK][j] for j in bank_sel]
            bank_table = points_table(
                BANK,
                tables,
                lr.coef_[0],
                p.scaling,
                categories=[bank_category] * len(tables),
                decimals=p.decimals,
            )
        self.scorecard_ = Scorecard(
            scaling=p.scaling,
            intercept=float(lr.intercept_[0]),
            decimals=p.decimals,
            bank=bank_table,
        )
        self.holder_points_ = build_points(
            lr.model_,
            {h: points_holders[h] for h in self.holders_},
            p.scaling,
            decimals=p.decimals,
            purpose=p.purpose,
        )

    # -- the bank's own features -----------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "scorecard_"):
            raise ScorecardTrainingError("the scorecard is not fitted: call fit first")

    def _bank_values(self, X_bank: pd.DataFrame) -> np.ndarray:
        names = [str(c) for c in X_bank.columns]
        fitted = self.woe_.bank_encoder_.feature_names_ if BANK in self.woe_.tables_ else []
        if names != list(fitted):
            raise ScorecardTrainingError(
                f"X_bank has columns {names}, the scorecard was fitted on {list(fitted)}"
            )
        return X_bank.to_numpy(dtype=np.float64)

    def bank_woe(self, X_bank: pd.DataFrame) -> np.ndarray:
        """The bank's selected WOE features (rows, kept features)."""
        sel = self.selected_.get(BANK, [])
        if not sel:
            return np.empty((len(X_bank), 0))
        return self.woe_.bank_encoder_.transform(self._bank_values(X_bank))[:, sel]

    def bank_bins(self, X_bank: pd.DataFrame) -> np.ndarray | None:
        sel = self.selected_.get(BANK, [])
        if not sel:
            return None
        return self.woe_.bank_encoder_.binner_.transform(self._bank_values(X_bank))[:, sel]

    # -- scoring ---------------------------------------------------------------------------
    def decision_function(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any
    ) -> np.ndarray:
        """Log-odds of default, one round (``LinearHolder`` peers; ``rows``: alignment rows)."""
        self._check_fitted()
        frame = _frame(self.bank_woe(X_bank), self.bank_features_)
        return self.lr_.decision_function(frame, holders=holders, rows=np.asarray(rows))

    def predict_proba(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any
    ) -> np.ndarray:
        p = sigmoid(self.decision_function(X_bank, holders=holders, rows=rows))
        return np.column_stack([1.0 - p, p])

    def score(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any
    ) -> np.ndarray:
        """Points per enterprise: base + the bank's points + the holders' (masked) sum
        (``holders``: ``ScorecardHolder`` peers; ``rows``: alignment rows)."""
        self._check_fitted()
        row_ids = np.asarray(rows, dtype=np.int64)
        theirs = holder_points(
            self.lr_.model_,
            holders,
            row_ids,
            purpose=self.params.purpose,
            alignment_id=self.lr_.alignment_id_,
        )
        return self.scorecard_.score(self.bank_bins(X_bank), {"holders": theirs})

    def reasons(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any, k: int = 3
    ) -> list[list[ReasonCode]]:
        """Per enterprise, the ``k`` data categories that lost the most points
        (``holders``: ``ScorecardHolder`` peers)."""
        self._check_fitted()
        row_ids = np.asarray(rows, dtype=np.int64)
        points, maxima = holder_category_points(
            self.lr_.model_,
            holders,
            row_ids,
            purpose=self.params.purpose,
            alignment_id=self.lr_.alignment_id_,
        )
        bins = self.bank_bins(X_bank)
        if self.scorecard_.bank is not None and bins is not None:
            table = self.scorecard_.bank
            points = combine_categories(points, table.category_points(bins))
            maxima = {
                c: float(v[0]) for c, v in combine_categories(maxima, table.category_max()).items()
            }
        return reason_codes(points, maxima, k=k)

    def to_json(self) -> str:
        """The bank's part: scaling, base points, its table, its WOE tables, the LR job."""
        self._check_fitted()
        bank_tables = self.woe_.tables_.get(BANK, [])
        return json.dumps(
            {
                "format": MODEL_FORMAT,
                "job_id": self.job_id_,
                "woe_job_id": self.woe_.job_id_,
                "params": asdict(self.params),
                "selected": self.selected_,
                "holders": self.holders_,
                "scorecard": self.scorecard_.to_dict(),
                "bank_woe": [t.to_dict() for t in bank_tables],
                # the bank's own bin edges (its secret, in its own part): serving bins its rows
                "bank_binner": binner_to_dict(self.woe_.bank_encoder_.binner_)
                if bank_tables
                else None,
                "linear": json.loads(self.lr_.to_json()),
            },
            indent=1,
        )
