"""The bank's orchestration of a federated scorecard: WOE/IV → vertical LR on WOE → points.

Runs at the bank (as ``parties/bank/federation.py`` does for SecureBoost); every call to a holder
goes through a ``PeerBase`` (gRPC over mutual TLS, or the in-process twin in unit tests).

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

``centralised_scorecard`` is the same recipe on every party's features in one place (the test
oracle and the benchmarks' comparison); with only the bank's features it is the bank-only card.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from federation.audit import AuditLog
from federation.errors import ConfigError, XinyidaiError
from federation.files import write_atomic
from federation.transport.base import PeerBase
from models.linear import LinearParams, PlaintextLogisticRegression, VerticalLogisticRegression
from models.linear.points import build_points, holder_category_points, holder_points
from models.linear.reference import sigmoid
from models.metrics import gini, ks_statistic, lift_table, roc_auc
from models.scorecard import (
    PdoScaling,
    PointsTable,
    ReasonCode,
    Scorecard,
    build_scorecard,
    combine_categories,
    points_table,
    reason_codes,
)
from models.woe import BANK, FeatureWoe, FederatedWoe, WoeEncoder
from parties.holder.views import woe_view

Progress = Callable[[str], None]
MODEL_FORMAT = "xinyidai.scorecard.federated/1"


def _quiet(_: str) -> None:
    pass


class ScorecardTrainingError(XinyidaiError):
    """The scorecard cannot be trained as asked (no informative feature, bad parameters)."""


# ---------------------------------------------------------------------------------------------
# parameters


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


def _frame(values: Any, names: Sequence[str]) -> pd.DataFrame:
    return pd.DataFrame(np.asarray(values, dtype=np.float64), columns=list(names))


# ---------------------------------------------------------------------------------------------
# the federated scorecard (the bank's part)


class FederatedScorecard:
    """The bank's part of a federated scorecard; holders keep theirs (WOE, weights, points).

    ``fit(X_bank, y, woe_holders=..., linear_holders=..., points_holders=...)`` (peers of the
    ``WoeHolder``, ``LinearHolder`` and ``ScorecardHolder`` services) runs steps 1-3 of the
    module docstring on the training rows (``alignment_rows``: their mask over the alignment; holders
    take the same rows). Fitted: ``woe_`` (``FederatedWoe``), ``selected_`` (party → kept
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
        p = self.params
        job = self.job_id or f"sc-{uuid.uuid4().hex[:12]}"
        self.job_id_ = job
        if not isinstance(X_bank, pd.DataFrame):
            raise ScorecardTrainingError("X_bank must be a DataFrame with the bank's columns")
        labels = np.asarray(y, dtype=np.float64)
        timings: dict[str, float] = {}

        t0 = time.perf_counter()
        woe = FederatedWoe(
            key_bits=p.key_bits,
            max_bin=p.max_bin,
            min_bin_samples=p.min_bin_samples,
            monotonic=p.monotonic,
            purpose=p.purpose,
            job_id=f"{job}-woe",
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
        timings["woe_seconds"] = time.perf_counter() - t0
        self.woe_ = woe
        self.iv_ = woe.iv_report()
        self.selected_ = {
            party: select_features(tables, p.min_iv) for party, tables in woe.tables_.items()
        }
        kept = {party: len(sel) for party, sel in self.selected_.items()}
        progress(f"WOE/IV in {timings['woe_seconds']:.1f} s; features kept per party: {kept}")
        if not any(kept.values()):
            raise ScorecardTrainingError(
                f"no feature has IV >= {p.min_iv} with two or more bins: nothing to score with"
            )
        self.holders_ = [h for h in woe_holders if self.selected_.get(h)]
        views = {h: woe_view(woe.job_id_, self.selected_[h]) for h in self.holders_}
        bank_sel = self.selected_.get(BANK, [])
        self.bank_features_ = [str(X_bank.columns[j]) for j in bank_sel]

        t1 = time.perf_counter()
        lr = VerticalLogisticRegression(**p.lr_kwargs(), job_id=f"{job}-lr")
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
        progress(f"LR ({p.backend}) {lr.n_iter_} epochs in {timings['lr_seconds']:.1f} s")

        t2 = time.perf_counter()
        bank_table: PointsTable | None = None
        if bank_sel:
            tables = [woe.tables_[BANK][j] for j in bank_sel]
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
        timings["points_seconds"] = time.perf_counter() - t2
        self.timings_ = timings
        return self

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
                "linear": json.loads(self.lr_.to_json()),
            },
            indent=1,
        )


# ---------------------------------------------------------------------------------------------
# the same recipe in one place (the test oracle, the centralised and bank-only comparisons)


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


# ---------------------------------------------------------------------------------------------
# cross-process: the bank's node configuration and a stored alignment


@dataclass
class ScorecardReport:
    """What a scorecard (or logistic) job produced, for the operator, the runner and tests."""

    job_id: str
    alignment_id: str
    model: str
    backend: str
    n_aligned: int
    n_labelled: int
    n_train: int
    n_test: int
    auc: float
    ks: float
    gini: float
    points_auc: float = float("nan")
    points_ks: float = float("nan")
    baseline_auc: float = float("nan")
    baseline_ks: float = float("nan")
    baseline_gini: float = float("nan")
    n_iter: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    features_kept: dict[str, int] = field(default_factory=dict)
    top_decile_lift: float = float("nan")
    base_points: float = float("nan")
    train_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    test_points: np.ndarray = field(default_factory=lambda: np.empty(0))

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("train_positions", "test_positions", "test_scores", "test_points"):
            out.pop(key)
        return out


def _split(
    config: Any,
    alignment: Any,
    *,
    is_test: Callable[[list[str]], np.ndarray] | None,
    test_fraction: float,
    split_seed: int,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(bank table, aligned labels, labelled, train and test positions) as SecureBoost splits."""
    from parties.bank.federation import BankTable, stratified_split
    from parties.holder.alignment import AlignmentError, codes_digest

    table = BankTable.load(config)
    if alignment.table_digest != codes_digest(table.codes):
        raise AlignmentError(f"alignment '{alignment.job_id}' was made on a different bank table")
    labels = table.labels[alignment.bank_rows]
    labelled = np.flatnonzero(~np.isnan(labels))
    if is_test is not None:
        codes = [table.codes[i] for i in alignment.bank_rows[labelled]]
        test_mask = np.asarray(is_test(codes), dtype=bool)
        train_pos, test_pos = labelled[~test_mask], labelled[test_mask]
    else:
        train_l, test_l = stratified_split(
            labels[labelled], test_fraction=test_fraction, seed=split_seed
        )
        train_pos, test_pos = labelled[train_l], labelled[test_l]
    if not (train_pos.size and test_pos.size):
        raise ConfigError(
            f"the split leaves {train_pos.size} training and {test_pos.size} test rows"
        )
    return table, labels, labelled, train_pos, test_pos


def _epoch_timer(
    progress: Progress, on_epoch: Callable[[int, float], None] | None
) -> tuple[list[float], Callable[[int, float], None]]:
    """Marks at the end of every epoch (and one at the start): between two consecutive
    epoch-ends lies exactly one epoch (the report keeps epochs 2..n: epoch 1 includes setup)."""
    marks: list[float] = [time.perf_counter()]

    def done(epoch: int, loss: float) -> None:
        marks.append(time.perf_counter())
        progress(f"epoch {epoch} done (loss {loss:.5f})")
        if on_epoch is not None:
            on_epoch(epoch, loss)

    return marks, done


def _save(config: Any, job_id: str, model_json: str, report: ScorecardReport) -> None:
    models = config.node_dir / "models"
    write_atomic(models / f"{job_id}.json", model_json.encode())
    write_atomic(models / f"{job_id}.report.json", json.dumps(report.summary(), indent=1).encode())


def train_scorecard(
    config: Any,
    alignment: Any,
    *,
    woe_holders: Mapping[str, PeerBase],
    linear_holders: Mapping[str, PeerBase],
    points_holders: Mapping[str, PeerBase],
    params: ScorecardParams | Mapping[str, Any] | None = None,
    job_id: str | None = None,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    is_test: Callable[[list[str]], np.ndarray] | None = None,
    audit: AuditLog | None = None,
    progress: Progress = _quiet,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[FederatedScorecard, ScorecardReport]:
    """Train a federated scorecard on the aligned, labelled rows' training split; evaluate it
    on the test split (probability and points in one round each) next to a bank-only scorecard
    fitted the same way. ``woe_holders``/``linear_holders``/``points_holders``: ``WoeHolder``,
    ``LinearHolder`` and ``ScorecardHolder`` peers of every holder of the alignment; the split as in ``train_secureboost``. The bank's
    part goes to ``NODE_DIR/models/<job>.json``, each holder keeps its WOE tables, weights and
    points table."""
    from parties.holder.alignment import check_name

    for what, peers in (
        ("WoeHolder", woe_holders),
        ("LinearHolder", linear_holders),
        ("ScorecardHolder", points_holders),
    ):
        missing = [h for h in alignment.holders if h not in peers]
        if missing:
            raise ConfigError(f"alignment '{alignment.job_id}' needs {what} peer(s) {missing}")
    p = params if isinstance(params, ScorecardParams) else ScorecardParams.from_mapping(params)
    started = time.perf_counter()
    job_id = check_name(job_id or f"{alignment.job_id}-sc", "job id")
    table, labels, labelled, train_pos, test_pos = _split(
        config, alignment, is_test=is_test, test_fraction=test_fraction, split_seed=split_seed
    )
    X = table.features.iloc[alignment.bank_rows].reset_index(drop=True)
    train_mask = np.zeros(alignment.size, dtype=bool)
    train_mask[train_pos] = True
    marks, done = _epoch_timer(progress, on_epoch)
    card = FederatedScorecard(p, job_id=job_id)
    t_fit = time.perf_counter()
    card.fit(
        X.iloc[train_pos].reset_index(drop=True),
        labels[train_pos],
        woe_holders={h: woe_holders[h] for h in alignment.holders},
        linear_holders={h: linear_holders[h] for h in alignment.holders},
        points_holders={h: points_holders[h] for h in alignment.holders},
        alignment_id=alignment.job_id,
        alignment_rows=train_mask,
        on_epoch=done,
        progress=progress,
    )
    train_seconds = time.perf_counter() - t_fit
    X_test = X.iloc[test_pos].reset_index(drop=True)
    y_test = labels[test_pos]
    proba = card.predict_proba(X_test, holders=linear_holders, rows=test_pos)[:, 1]
    points = card.score(X_test, holders=points_holders, rows=test_pos)
    names = [str(c) for c in X.columns]
    bank_only = centralised_scorecard(
        {BANK: (X.iloc[train_pos].to_numpy(dtype=np.float64), names)}, labels[train_pos], p
    )
    base = bank_only.predict_proba({BANK: X_test.to_numpy(dtype=np.float64)})[:, 1]
    lift = lift_table(y_test, proba)
    report = ScorecardReport(
        job_id=job_id,
        alignment_id=alignment.job_id,
        model="scorecard",
        backend=p.backend,
        n_aligned=alignment.size,
        n_labelled=int(labelled.size),
        n_train=int(train_pos.size),
        n_test=int(test_pos.size),
        auc=roc_auc(y_test, proba),
        ks=ks_statistic(y_test, proba),
        gini=gini(y_test, proba),
        points_auc=roc_auc(y_test, -points),
        points_ks=ks_statistic(y_test, -points),
        baseline_auc=roc_auc(y_test, base),
        baseline_ks=ks_statistic(y_test, base),
        baseline_gini=gini(y_test, base),
        n_iter=int(card.lr_.n_iter_),
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        epoch_seconds=[b - a for a, b in itertools.pairwise(marks[1:])],
        timings={k: round(v, 3) for k, v in card.timings_.items()},
        features_kept={k: len(v) for k, v in card.selected_.items()},
        top_decile_lift=float(lift["lift"].iloc[0]),
        base_points=card.scorecard_.base_points,
        train_positions=train_pos,
        test_positions=test_pos,
        test_scores=proba,
        test_points=points,
    )
    _save(config, job_id, card.to_json(), report)
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="scorecard.train",
            purpose=p.purpose,
            job_id=job_id,
            model_id=job_id,
            counts={"train_rows": report.n_train, "test_rows": report.n_test},
        )
    return card, report


def scorecard_over_nodes(
    config: Any,
    alignment: Any,
    *,
    params: ScorecardParams | Mapping[str, Any] | None = None,
    audit: AuditLog | None = None,
    progress: Progress = _quiet,
    **kwargs: Any,
) -> tuple[FederatedScorecard, ScorecardReport]:
    """``train_scorecard`` with the bank's own gRPC peers of every configured holder (the
    ``WoeHolder``, ``LinearHolder`` and ``ScorecardHolder`` services): what the demo calls after
    ``align``. ``kwargs``: ``job_id``, ``is_test``, ``test_fraction``, ``split_seed``,
    ``on_epoch``."""
    from parties.bank.federation import holder_peers

    with (
        holder_peers(config, audit=audit, service="WoeHolder") as woe,
        holder_peers(config, audit=audit, service="LinearHolder") as linear,
        holder_peers(config, audit=audit, service="ScorecardHolder") as points,
    ):
        return train_scorecard(
            config,
            alignment,
            woe_holders=woe,
            linear_holders=linear,
            points_holders=points,
            params=params,
            audit=audit,
            progress=progress,
            **kwargs,
        )


def comparison_lines(report: ScorecardReport) -> list[str]:
    """The KS/AUC comparison a person reads (the demo prints these)."""
    return [
        f"federated scorecard: KS {report.ks:.4f}  AUC {report.auc:.4f}  Gini {report.gini:.4f} "
        f"({report.n_train} train / {report.n_test} test rows, {report.backend} LR)",
        f"bank-only scorecard: KS {report.baseline_ks:.4f}  AUC {report.baseline_auc:.4f}  "
        f"Gini {report.baseline_gini:.4f}",
        f"points: base {report.base_points:g}; features kept {report.features_kept}; "
        f"trained in {report.train_seconds:.1f} s",
    ]


def train_logistic(
    config: Any,
    alignment: Any,
    *,
    holders: Mapping[str, PeerBase],
    params: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    is_test: Callable[[list[str]], np.ndarray] | None = None,
    audit: AuditLog | None = None,
    progress: Progress = _quiet,
    on_epoch: Callable[[int, float], None] | None = None,
) -> tuple[VerticalLogisticRegression, ScorecardReport]:
    """Vertical LR on every party's raw (encoded) features: ``holders`` are ``LinearHolder``
    peers; ``params`` ``VerticalLogisticRegression`` keyword arguments; the bank-only baseline
    is the plaintext twin on the bank's columns with the same optimiser."""
    from parties.holder.alignment import check_name

    missing = [h for h in alignment.holders if h not in holders]
    if missing:
        raise ConfigError(f"alignment '{alignment.job_id}' needs LinearHolder peer(s) {missing}")
    started = time.perf_counter()
    job_id = check_name(job_id or f"{alignment.job_id}-lr", "job id")
    table, labels, labelled, train_pos, test_pos = _split(
        config, alignment, is_test=is_test, test_fraction=test_fraction, split_seed=split_seed
    )
    X = table.features.iloc[alignment.bank_rows].reset_index(drop=True)
    train_mask = np.zeros(alignment.size, dtype=bool)
    train_mask[train_pos] = True
    marks, done = _epoch_timer(progress, on_epoch)
    clf = VerticalLogisticRegression(**dict(params or {}), job_id=job_id)
    t_fit = time.perf_counter()
    clf.fit(
        X.iloc[train_pos].reset_index(drop=True),
        labels[train_pos],
        holders={h: holders[h] for h in alignment.holders},
        alignment_id=alignment.job_id,
        alignment_rows=train_mask,
        on_epoch=done,
    )
    train_seconds = time.perf_counter() - t_fit
    X_test = X.iloc[test_pos].reset_index(drop=True)
    y_test = labels[test_pos]
    proba = clf.predict_proba(X_test, holders=holders, rows=test_pos)[:, 1]
    ref = PlaintextLogisticRegression(clf.params_).fit(
        X.iloc[train_pos].to_numpy(dtype=np.float64), labels[train_pos]
    )
    base = ref.predict_proba(X_test.to_numpy(dtype=np.float64))[:, 1]
    report = ScorecardReport(
        job_id=job_id,
        alignment_id=alignment.job_id,
        model="logistic",
        backend=clf.backend,
        n_aligned=alignment.size,
        n_labelled=int(labelled.size),
        n_train=int(train_pos.size),
        n_test=int(test_pos.size),
        auc=roc_auc(y_test, proba),
        ks=ks_statistic(y_test, proba),
        gini=gini(y_test, proba),
        baseline_auc=roc_auc(y_test, base),
        baseline_ks=ks_statistic(y_test, base),
        baseline_gini=gini(y_test, base),
        n_iter=int(clf.n_iter_),
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        epoch_seconds=[b - a for a, b in itertools.pairwise(marks[1:])],
        top_decile_lift=float(lift_table(y_test, proba)["lift"].iloc[0]),
        train_positions=train_pos,
        test_positions=test_pos,
        test_scores=proba,
    )
    _save(config, job_id, clf.to_json(), report)
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="linear.train",
            purpose=clf.purpose,
            job_id=job_id,
            model_id=job_id,
            counts={"train_rows": report.n_train, "test_rows": report.n_test},
        )
    return clf, report


__all__ = [
    "CentralisedScorecard",
    "FederatedScorecard",
    "ScorecardParams",
    "ScorecardReport",
    "ScorecardTrainingError",
    "centralised_scorecard",
    "comparison_lines",
    "scorecard_over_nodes",
    "select_features",
    "train_logistic",
    "train_scorecard",
]
