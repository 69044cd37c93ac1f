"""``VerticalLogisticRegression``: the bank's scikit-learn-style face of vertical LR.

The bank calls ``fit(X_bank, y, holders=...)`` with its own features (a DataFrame) and labels;
the holders' features never come here — they are reached through ``PeerBase`` peers speaking
``xinyidai.v1.LinearHolder`` (in-process twin or gRPC). Rows must already be aligned: row i of
``X_bank`` is row i of the job at every holder.

Fitting is all-or-nothing, with one exception: when training diverges, every party keeps the
last good iterate, the fitted attributes describe it (``n_iter_`` and ``keep_epoch_`` say
which) and ``fit`` then raises ``DivergenceError``. Any other failure leaves an earlier fit
untouched. ``coef_`` holds the bank's coefficients only; each holder keeps its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import pandas as pd

from federation.transport.base import PeerBase
from models.estimator import BankFrameMixin
from models.estimator import SchemaDriftError as BaseSchemaDriftError
from models.linear.active import LinearBank
from models.linear.backends import BACKENDS, CryptoOptions, crypto_parameters
from models.linear.bank_state import LinearBankModel, ScoringError
from models.linear.predict import predict_linear
from models.linear.reference import (
    DivergenceError,
    LinearError,
    LinearParamError,
    LinearParams,
    Standardizer,
    TrainResult,
    check_labels,
    resolve_alpha,
    sigmoid,
)

MODEL_FORMAT = "xinyidai.linear.bank/1"


class SchemaDriftError(LinearError, BaseSchemaDriftError):
    """The columns given to predict differ from the ones the model was fitted on."""


class NotFittedError(LinearError):
    """The estimator has not been fitted (or loaded) yet."""


class VerticalLogisticRegression(BankFrameMixin):
    """Vertical federated logistic regression for binary credit default (bank side).

    Hyperparameters (keyword-only):

    * ``backend``: ``"paillier"`` (exact integer arithmetic; cheapest on binned/WOE features)
      or ``"ckks"`` (TenSEAL, approximate, fast on continuous features).
    * ``alpha`` / ``C``: L2 penalty. The objective is mean log-loss + (alpha/2)·||w||² (the
      intercept is not penalised); ``C`` (scikit-learn's) sets alpha = 1/(C·n_train). Give
      one; default alpha = 1e-4. ``penalty="none"`` sets alpha = 0.
    * ``learning_rate`` (initial step size) and ``lr_schedule``: ``"constant"``,
      ``"invscaling"`` (lr/(t+1)^power_t after t updates) or ``"step"`` (× ``lr_decay`` every
      ``lr_step_epochs`` epochs).
    * ``max_iter`` (epochs), ``batch_size`` (None: full batch; otherwise shuffled batches of at
      least this size), ``tol`` and ``n_iter_no_change`` (stop when the loss has not improved by
      tol for that many epochs; None disables), ``early_stopping`` (on validation rows the bank
      chooses: ``validation_fraction`` at random, or ``fit(validation_rows=...)``; the best
      validation epoch is kept), ``fit_intercept`` (at the bank), ``standardize`` (each party
      z-scores its own columns), ``random_state``.
    * ``key_bits`` (Paillier modulus, ≥ 2048 outside the test switch), ``workers`` (the bank's
      Paillier processes, None: all cores), ``ckks_poly_modulus_degree``,
      ``ckks_coeff_mod_bit_sizes``, ``ckks_scale_bits`` (SEAL refuses parameters below
      128-bit security), ``purpose``, ``job_id``.
    """

    frame_error = LinearError
    drift_error = SchemaDriftError

    def __init__(
        self,
        *,
        backend: str = "paillier",
        penalty: str = "l2",
        alpha: float | None = None,
        C: float | None = None,
        learning_rate: float = 0.1,
        lr_schedule: str = "constant",
        power_t: float = 0.5,
        lr_step_epochs: int = 10,
        lr_decay: float = 0.5,
        max_iter: int = 100,
        batch_size: int | None = None,
        tol: float | None = 1e-4,
        n_iter_no_change: int = 5,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        fit_intercept: bool = True,
        standardize: bool = False,
        random_state: int | None = None,
        key_bits: int = 2048,
        workers: int | None = None,
        ckks_poly_modulus_degree: int = 8192,
        ckks_coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60),
        ckks_scale_bits: int = 40,
        purpose: str = "financing",
        job_id: str | None = None,
    ):
        self.backend = backend
        self.penalty = penalty
        self.alpha = alpha
        self.C = C
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.power_t = power_t
        self.lr_step_epochs = lr_step_epochs
        self.lr_decay = lr_decay
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.random_state = random_state
        self.key_bits = key_bits
        self.workers = workers
        self.ckks_poly_modulus_degree = ckks_poly_modulus_degree
        self.ckks_coeff_mod_bit_sizes = ckks_coeff_mod_bit_sizes
        self.ckks_scale_bits = ckks_scale_bits
        self.purpose = purpose
        self.job_id = job_id

    def linear_params(self, n_train: int) -> LinearParams:
        """The optimiser's hyperparameters for ``n_train`` training rows (validated)."""
        if self.backend not in BACKENDS:
            raise LinearParamError(f"backend={self.backend!r}: choose one of {sorted(BACKENDS)}")
        if self.penalty not in ("l2", "none"):
            raise LinearParamError(f"penalty={self.penalty!r}: 'l2' or 'none'")
        alpha = 0.0 if self.penalty == "none" else resolve_alpha(self.alpha, self.C, n_train)
        return LinearParams(
            alpha=alpha,
            learning_rate=self.learning_rate,
            lr_schedule=self.lr_schedule,
            power_t=self.power_t,
            lr_step_epochs=self.lr_step_epochs,
            lr_decay=self.lr_decay,
            max_iter=self.max_iter,
            batch_size=self.batch_size,
            tol=self.tol,
            n_iter_no_change=self.n_iter_no_change,
            early_stopping=self.early_stopping,
            validation_fraction=self.validation_fraction,
            fit_intercept=self.fit_intercept,
            standardize=self.standardize,
            random_state=self.random_state,
        )

    def crypto_options(self) -> CryptoOptions:
        return CryptoOptions(
            key_bits=int(self.key_bits),
            workers=self.workers,
            ckks_poly_modulus_degree=int(self.ckks_poly_modulus_degree),
            ckks_coeff_mod_bit_sizes=tuple(int(b) for b in self.ckks_coeff_mod_bit_sizes),
            ckks_scale_bits=int(self.ckks_scale_bits),
        )

    def crypto_params(self) -> dict[str, Any]:
        """What the job's keys are, as results, tracking and lineage should state them:
        Paillier's modulus size, or CKKS's ring dimension, modulus chain, scale and security
        estimate (``federation.crypto.ckks.describe_parameters``): a CKKS key has no
        "key_bits"."""
        return crypto_parameters(self.backend, self.crypto_options())

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        X_bank: pd.DataFrame,
        y: Any,
        *,
        holders: Mapping[str, PeerBase],
        alignment_id: str = "",
        alignment_rows: np.ndarray | None = None,
        validation_rows: np.ndarray | None = None,
        on_epoch: Callable[[int, float], None] | None = None,
        feature_views: Mapping[str, str] | None = None,
    ) -> VerticalLogisticRegression:
        """Train with the holders; the bank's data never leaves this process in the clear.

        ``alignment_id``/``alignment_rows``: the PSI job whose common order the rows follow and
        the mask of its rows that ``X_bank`` holds. ``validation_rows``: a boolean mask over
        ``X_bank``'s rows for early stopping (default: ``validation_fraction`` at random).
        ``on_epoch(epoch, training_loss)`` reports progress. ``feature_views``: per holder,
        the features it trains on ("woe:<job>[:i,j]": its own WOE values; default its table).
        """
        X = self._numeric_frame(X_bank, "X_bank")
        n = len(X)
        labels = check_labels(np.asarray(y), n)
        n_val = 0
        if validation_rows is not None:
            n_val = int(np.asarray(validation_rows, dtype=bool).sum())
        elif self.early_stopping:
            n_val = max(1, round(self.validation_fraction * n))
        params = self.linear_params(n - n_val)
        values = X.to_numpy()
        scaler = Standardizer.fit(values, standardize=params.standardize, names=list(X.columns))
        bank = LinearBank(
            params=params,
            holders=holders,
            backend=self.backend,
            options=self.crypto_options(),
            purpose=self.purpose,
            job_id=self.job_id,
            alignment_id=alignment_id,
            alignment_rows=alignment_rows,
            on_epoch=on_epoch,
            feature_views=feature_views,
        )
        try:
            model = bank.train(scaler.transform(values), labels, validation_rows=validation_rows)
        except DivergenceError as exc:
            # Every party kept the last good iterate: the estimator describes it, then says so.
            if exc.model is not None:
                self._set_fitted(exc.model, scaler, list(X.columns), params, alignment_id)
            raise
        self._set_fitted(model, scaler, list(X.columns), params, alignment_id)
        return self

    def _set_fitted(
        self,
        model: LinearBankModel,
        scaler: Standardizer,
        names: list[str],
        params: LinearParams,
        alignment_id: str,
    ) -> None:
        result: TrainResult = model.result
        self.model_ = model
        self.scaler_ = scaler
        self.params_ = params
        self.coef_ = np.asarray(model.coef, dtype=np.float64).reshape(1, -1)
        self.intercept_ = np.array([model.intercept])
        self.n_iter_ = int(result.n_iter)
        self.keep_epoch_ = int(result.keep_epoch)
        self.loss_curve_ = list(result.loss_curve)
        self.validation_scores_ = list(result.validation_curve)
        self.outcome_ = result.outcome
        self.converged_ = result.outcome in ("converged", "early_stopped")
        self.job_id_ = model.job_id
        self.holders_ = list(model.holders)
        self.holder_n_features_ = dict(model.holder_features)
        self.feature_names_in_ = np.array(names, dtype=object)
        self.n_features_in_ = len(names)
        self.alignment_id_ = alignment_id
        self.stats_ = dict(model.stats)
        # one entry per epoch (n_iter_), setup (keys, public material, Start) apart
        self.epoch_seconds_ = [float(x) for x in model.stats.get("epoch_s", [])]
        self.setup_seconds_ = float(model.stats.get("setup_s", 0.0))
        self.crypto_ = dict(model.crypto) if model.crypto else self.crypto_params()

    # -- scoring ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("VerticalLogisticRegression is not fitted: call fit or from_json")

    def _bank_values(self, X_bank: pd.DataFrame) -> np.ndarray:
        X = self._fitted_frame(X_bank, list(self.feature_names_in_))
        return self.scaler_.transform(X.to_numpy())

    def decision_function(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any = None
    ) -> np.ndarray:
        """Log-odds of default in one round with the holders. ``rows``: each bank row's row
        at the holders (positions in the fitted alignment); None: 0..len(X_bank)-1."""
        self._check_fitted()
        values = self._bank_values(X_bank)
        row_ids = np.arange(len(values)) if rows is None else rows
        try:
            return predict_linear(
                self.model_,
                values,
                holders,
                row_ids,
                purpose=self.purpose,
                alignment_id=self.alignment_id_,
            )
        except ScoringError as exc:
            if exc.schema_drift:
                raise SchemaDriftError(str(exc)) from exc
            raise

    def predict_proba(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any = None
    ) -> np.ndarray:
        """``[[P(no default), P(default)], ...]``."""
        p = sigmoid(self.decision_function(X_bank, holders=holders, rows=rows))
        return np.column_stack([1.0 - p, p])

    def predict(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any = None
    ) -> np.ndarray:
        """1 where P(default) ≥ 0.5."""
        return (self.decision_function(X_bank, holders=holders, rows=rows) >= 0).astype(np.int64)

    # -- the bank's model part as JSON -----------------------------------------------------
    def to_json(self) -> str:
        """The bank's part: its coefficients and preprocessing, the holders' names and feature
        counts (no holder secret is in it)."""
        self._check_fitted()
        r = self.model_.result
        return json.dumps(
            {
                "format": MODEL_FORMAT,
                "backend": self.model_.backend,
                "params": asdict(self.params_),
                "purpose": self.purpose,
                "job_id": self.job_id_,
                "holders": self.holders_,
                "holder_features": self.holder_n_features_,
                "alignment_id": self.alignment_id_,
                "feature_names": list(self.feature_names_in_),
                "coef": self.coef_[0].tolist(),
                "intercept": float(self.intercept_[0]),
                "scaler": self.scaler_.to_dict(),
                "crypto": self.crypto_,
                "result": {
                    "n_iter": r.n_iter,
                    "keep_epoch": r.keep_epoch,
                    "outcome": r.outcome,
                    "loss_curve": r.loss_curve,
                    "validation_curve": r.validation_curve,
                },
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> VerticalLogisticRegression:
        try:
            data = json.loads(text)
            if data.get("format") != MODEL_FORMAT:
                raise LinearError(f"not a {MODEL_FORMAT} model: {data.get('format')!r}")
            params = LinearParams(**data["params"])
            est = cls(backend=data["backend"], purpose=data["purpose"], job_id=data["job_id"])
            res = data["result"]
            model = LinearBankModel(
                job_id=data["job_id"],
                backend=data["backend"],
                coef=np.asarray(data["coef"], dtype=np.float64),
                intercept=float(data["intercept"]),
                holders=[str(h) for h in data["holders"]],
                holder_features={str(k): int(v) for k, v in data["holder_features"].items()},
                crypto=dict(data.get("crypto") or {}),
                result=TrainResult(
                    n_iter=int(res["n_iter"]),
                    keep_epoch=int(res["keep_epoch"]),
                    outcome=str(res["outcome"]),
                    loss_curve=[float(x) for x in res["loss_curve"]],
                    validation_curve=[float(x) for x in res["validation_curve"]],
                ),
            )
            scaler = Standardizer.from_dict(data["scaler"])
            names = [str(n) for n in data["feature_names"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise LinearError(f"not a saved VerticalLogisticRegression: {exc}") from None
        est._set_fitted(model, scaler, names, params, str(data.get("alignment_id", "")))
        return est


__all__ = ["NotFittedError", "SchemaDriftError", "VerticalLogisticRegression"]
