"""Logistic regression's definition: the optimiser every party runs, and its plaintext twin.

The federation (``active.py`` at the bank, ``passive.py`` at each holder) and
``PlaintextLogisticRegression`` (everything in one place, on the concatenated features) run the
SAME driver, :func:`optimise`: one initialisation, one validation split, one batch order, one
learning-rate schedule, one stopping rule. Only how a linear predictor is computed and how a
gradient step is applied differ (in the clear here; with masks and homomorphic encryption in
the federation), so the centralised model is the test oracle and the benchmark's baseline.

Objective (per training row, ``m`` rows in a batch)::

    L(w, b) = mean_i [ log(1 + exp(u_i)) − y_i·u_i ] + (alpha / 2)·||w||²,   u_i = x_i·w + b

Gradient step on a batch B: ``w ← w − lr·(X_Bᵀ r / m + alpha·w)``, ``b ← b − lr·mean(r)`` with
``r = σ(u_B) − y_B``. The intercept is not penalised. ``C`` (scikit-learn's inverse strength)
maps to ``alpha = 1 / (C · n_train)``: the same minimiser as scikit-learn's
``C·Σ loss + ½||w||²``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.special import expit

from federation.errors import XinyidaiError

SCHEDULES = ("constant", "invscaling", "step")
"""``constant``: lr; ``invscaling``: lr / (t + 1)^power_t after t updates; ``step``:
lr · lr_decay^⌊(epoch − 1) / lr_step_epochs⌋."""

DIVERGENCE_FACTOR = 10.0
"""Training diverged when an epoch's log-loss is not finite or exceeds this many times the loss
of the starting model (the label prior): worse than doing nothing, by a wide margin."""

U_MAX = float(2**24)
"""Largest |linear predictor| of a row (any party's part, or the total) before training is
declared diverged. A useful model has |u| below ~50; this bound keeps the 2^32 fixed point of
the masked sums exact (|u|·2^32 < 2^56 leaves room for 2^7 holders below 2^63)."""


class LinearError(XinyidaiError):
    """Base of every logistic-regression error."""


class LinearParamError(LinearError):
    """A hyperparameter is out of range; the message names it."""


class LabelError(LinearError):
    """Labels are not 0/1, have the wrong length, or only one class is present."""


class ConstantFeatureError(LinearError):
    """A feature takes one value on the training rows (it cannot be learned; drop it).

    ``index`` is the feature's column position (what a holder may tell the bank).
    """

    def __init__(self, message: str, *, index: int | None = None):
        self.index = index
        super().__init__(message)


class DivergenceError(LinearError):
    """Training diverged. The model keeps the last good iterate (``keep_epoch``).

    ``epoch`` is the epoch in which divergence was seen; the fitted model (estimator) has the
    weights after ``keep_epoch`` (0 = the starting model).
    """

    def __init__(self, message: str, *, epoch: int, keep_epoch: int):
        self.epoch = epoch
        self.keep_epoch = keep_epoch
        self.model: Any = None  # the federation attaches the kept model part here
        super().__init__(message)


class OutOfRange(LinearError):
    """A linear predictor left [−U_MAX, U_MAX]: the optimiser treats it as divergence."""


# --------------------------------------------------------------------------------------------
# hyperparameters


@dataclass(frozen=True)
class LinearParams:
    """The optimiser's hyperparameters (validated; ``alpha`` already resolved from ``C``)."""

    alpha: float = 1e-4
    learning_rate: float = 0.1
    lr_schedule: str = "constant"
    power_t: float = 0.5
    lr_step_epochs: int = 10
    lr_decay: float = 0.5
    max_iter: int = 100
    batch_size: int | None = None
    tol: float | None = 1e-4
    n_iter_no_change: int = 5
    early_stopping: bool = False
    validation_fraction: float = 0.1
    fit_intercept: bool = True
    standardize: bool = False
    random_state: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> LinearParamError:
            return LinearParamError(f"{name}={getattr(self, name)!r}: {why}")

        if not (math.isfinite(self.alpha) and self.alpha >= 0):
            raise bad("alpha", "must be a finite number >= 0")
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise bad("learning_rate", "must be a finite number > 0")
        if self.lr_schedule not in SCHEDULES:
            raise bad("lr_schedule", f"must be one of {SCHEDULES}")
        if not (math.isfinite(self.power_t) and self.power_t >= 0):
            raise bad("power_t", "must be >= 0")
        if int(self.lr_step_epochs) != self.lr_step_epochs or self.lr_step_epochs < 1:
            raise bad("lr_step_epochs", "must be an integer >= 1")
        if not (math.isfinite(self.lr_decay) and self.lr_decay > 0):
            raise bad("lr_decay", "must be a finite number > 0")
        if int(self.max_iter) != self.max_iter or not 1 <= self.max_iter <= 100_000:
            raise bad("max_iter", "must be an integer in [1, 100000]")
        if self.batch_size is not None and (
            int(self.batch_size) != self.batch_size or self.batch_size < 1
        ):
            raise bad("batch_size", "must be None (full batch) or an integer >= 1")
        if self.tol is not None and not (math.isfinite(self.tol) and self.tol >= 0):
            raise bad("tol", "must be None or a finite number >= 0")
        if int(self.n_iter_no_change) != self.n_iter_no_change or self.n_iter_no_change < 1:
            raise bad("n_iter_no_change", "must be an integer >= 1")
        if not 0 < self.validation_fraction < 1:
            raise bad("validation_fraction", "must be in (0, 1)")


def resolve_alpha(alpha: float | None, C: float | None, n_train: int) -> float:
    """``alpha`` as given, or ``1 / (C · n_train)`` from scikit-learn's ``C``; not both."""
    if alpha is not None and C is not None:
        raise LinearParamError("give alpha or C, not both (alpha = 1 / (C * n_train))")
    if C is not None:
        if not (math.isfinite(C) and C > 0):
            raise LinearParamError(f"C={C!r}: must be a finite number > 0")
        return 1.0 / (C * n_train)
    return 1e-4 if alpha is None else float(alpha)


def learning_rate_at(params: LinearParams, epoch: int, step: int) -> float:
    """The step size of update ``step`` (0-based, counted over the whole job) in ``epoch``."""
    if params.lr_schedule == "invscaling":
        return float(params.learning_rate / (step + 1) ** params.power_t)
    if params.lr_schedule == "step":
        return params.learning_rate * params.lr_decay ** ((epoch - 1) // params.lr_step_epochs)
    return params.learning_rate


# --------------------------------------------------------------------------------------------
# small shared pieces


def sigmoid(u: Any) -> np.ndarray:
    return np.asarray(expit(np.asarray(u, dtype=np.float64)), dtype=np.float64)


def logloss(u: np.ndarray, y: np.ndarray) -> float:
    """Mean log-loss of linear predictors ``u`` (computed without overflow)."""
    if u.size == 0:
        return float("nan")
    return float(np.mean(np.logaddexp(0.0, u) - y * u))


def check_labels(y: Any, n: int) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise LabelError(f"y must be one label per row ({n}), got shape {arr.shape}")
    try:
        as_float = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise LabelError("labels must be 0/1 numbers") from None
    if not np.isin(as_float, (0.0, 1.0)).all():
        raise LabelError("labels must be 0/1 (1 = default)")
    labels = as_float.astype(np.int64)
    if labels.min() == labels.max():
        raise LabelError("labels have a single class: both defaults and non-defaults are needed")
    return labels


def initial_intercept(y_train: np.ndarray, fit_intercept: bool) -> float:
    """Log-odds of the training default rate (the best constant model), or 0."""
    if not fit_intercept:
        return 0.0
    p = float(np.clip(np.mean(y_train), 1e-12, 1 - 1e-12))
    return math.log(p / (1.0 - p))


def check_range(u: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(u)) or (u.size and float(np.max(np.abs(u))) > U_MAX):
        raise OutOfRange(f"{what}: a linear predictor is not finite or exceeds {U_MAX:.0f}")


@dataclass
class Standardizer:
    """Per-column mean imputation of missing values and (optionally) z-scoring.

    Each party fits it on its own features over the job's rows; the statistics stay with it.
    """

    fill: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(
        cls, X: np.ndarray, *, standardize: bool, names: Sequence[str] | None = None
    ) -> Standardizer:
        """Refuses a column with no value or a single value (``ConstantFeatureError``)."""
        d = X.shape[1]
        fill = np.zeros(d)
        for j in range(d):
            col = X[:, j]
            seen = col[np.isfinite(col)]
            label = f"'{names[j]}'" if names is not None else f"#{j}"
            if seen.size == 0:
                raise ConstantFeatureError(
                    f"feature {label} has no value on the job's rows", index=j
                )
            fill[j] = float(np.mean(seen))
        filled = np.where(np.isfinite(X), X, fill)
        for j in range(d):
            if np.all(filled[:, j] == filled[0, j]):
                label = f"'{names[j]}'" if names is not None else f"#{j}"
                raise ConstantFeatureError(
                    f"feature {label} is constant on the job's rows: drop it (the intercept "
                    "already carries a constant)",
                    index=j,
                )
        if standardize:
            mean = filled.mean(axis=0)
            scale = filled.std(axis=0)
        else:
            mean, scale = np.zeros(d), np.ones(d)
        return cls(fill=fill, mean=mean, scale=scale)

    def transform(self, X: np.ndarray) -> np.ndarray:
        filled = np.where(np.isfinite(X), X, self.fill)
        return np.asarray((filled - self.mean) / self.scale, dtype=np.float64)

    def to_dict(self) -> dict[str, list[float]]:
        return {
            "fill": self.fill.tolist(),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Standardizer:
        return cls(
            fill=np.asarray(data["fill"], dtype=np.float64),
            mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64),
        )


# --------------------------------------------------------------------------------------------
# the plan (validation split and batches) and the driver


class TrainingPlan:
    """Which rows validate and, per epoch, which rows form each batch.

    One ``numpy.random.default_rng(random_state)`` draws, in this order: the validation rows
    (only with ``early_stopping`` and no explicit ``validation_rows``), then one permutation of
    the training rows per epoch (mini-batch only). A batch is a contiguous slice of the
    permutation; the slices are ``n_train // batch_size`` near-equal parts (so no batch is
    smaller than ``batch_size``), each in ascending row order.
    """

    def __init__(
        self, params: LinearParams, n_rows: int, validation_rows: np.ndarray | None = None
    ):
        self.params = params
        self.rng = np.random.default_rng(params.random_state)
        if validation_rows is not None:
            val = np.asarray(validation_rows, dtype=bool)
            if val.shape != (n_rows,):
                raise LinearParamError(
                    f"validation_rows must be a boolean mask over the {n_rows} rows"
                )
        elif params.early_stopping:
            n_val = max(1, round(params.validation_fraction * n_rows))
            val = np.zeros(n_rows, dtype=bool)
            val[self.rng.permutation(n_rows)[:n_val]] = True
        else:
            val = np.zeros(n_rows, dtype=bool)
        if params.early_stopping and not val.any():
            raise LinearParamError("early_stopping needs validation rows")
        self.val_mask = val
        self.train_mask = ~val
        self.train_rows = np.flatnonzero(self.train_mask)
        self.val_rows = np.flatnonzero(val)
        if self.train_rows.size < 2:
            raise LinearParamError(f"{self.train_rows.size} training rows: at least 2 are needed")
        bs = params.batch_size
        self.full_batch = bs is None or bs >= self.train_rows.size

    def batches(self) -> list[np.ndarray]:
        """The next epoch's batches (call once per epoch, in order)."""
        rows = self.train_rows
        if self.full_batch:
            return [rows]
        assert self.params.batch_size is not None
        perm = self.rng.permutation(rows.size)
        parts = np.array_split(perm, rows.size // self.params.batch_size)
        return [np.sort(rows[p]) for p in parts]


class LinearModelParts(Protocol):
    """What :func:`optimise` drives: the plaintext model, or the bank's view of the federation."""

    def init(self, intercept: float) -> None:
        """Start: all coefficients 0, the intercept as given."""

    def predict(self, tag: str, rows: np.ndarray) -> np.ndarray:
        """u = x·w + b for ``rows`` (ascending) at the current weights; ``tag`` is unique."""
        ...

    def step(self, epoch: int, batch: int, rows: np.ndarray, r: np.ndarray, lr: float) -> None:
        """One gradient step on ``rows`` with residuals ``r`` and step size ``lr``."""

    def snapshot(self, epoch: int) -> None:
        """Remember the weights after ``epoch`` (0: the starting model)."""


@dataclass
class TrainResult:
    """What happened: epochs run, whose weights to keep, the curves, and why it stopped."""

    n_iter: int = 0
    keep_epoch: int = 0
    outcome: str = "max_iter"  # converged | early_stopped | max_iter | diverged
    initial_loss: float = float("nan")
    loss_curve: list[float] = field(default_factory=list)
    validation_curve: list[float] = field(default_factory=list)
    best_epoch: int = 0
    diverged_at: int = 0  # the epoch in which divergence was seen (0: it was not)
    message: str = ""


def _epoch(
    params: LinearParams,
    y: np.ndarray,
    plan: TrainingPlan,
    model: LinearModelParts,
    epoch: int,
    step: int,
    cached_u: np.ndarray,
) -> tuple[np.ndarray, int]:
    """One epoch: a step per batch, a snapshot, then the linear predictor of the training rows
    (returned, with the updated step count). Raises ``OutOfRange`` when a predictor leaves the
    range. Full batch: ``cached_u`` (the previous evaluation) is the batch's forward pass."""
    for k, rows in enumerate(plan.batches()):
        if plan.full_batch:
            u_b = cached_u
        else:
            u_b = model.predict(f"b{epoch}.{k}", rows)
            check_range(u_b, f"epoch {epoch} batch {k}")
        r = sigmoid(u_b) - y[rows]
        model.step(epoch, k, rows, r, learning_rate_at(params, epoch, step))
        step += 1
    model.snapshot(epoch)
    u = model.predict(f"e{epoch}", plan.train_rows)
    check_range(u, f"epoch {epoch}")
    return u, step


def _diverged(res: TrainResult, params: LinearParams, epoch: int, message: str) -> TrainResult:
    """Stop for divergence in ``epoch``: keep the last good iterate."""
    res.outcome, res.diverged_at, res.message = "diverged", epoch, message
    res.keep_epoch = res.best_epoch if params.early_stopping else epoch - 1
    return res


def optimise(
    params: LinearParams,
    y: np.ndarray,
    plan: TrainingPlan,
    model: LinearModelParts,
    *,
    on_epoch: Any = None,
) -> TrainResult:
    """Mini-batch gradient descent with the stopping rules; never raises for divergence.

    Stopping, checked after every epoch on the loss at the epoch's final weights:

    * **diverged**: the training log-loss is not finite or above ``DIVERGENCE_FACTOR`` × the
      starting loss, or a linear predictor left ±``U_MAX``; keep the last good iterate (the
      best validation epoch with ``early_stopping``, else the previous epoch);
    * **early_stopped** (``early_stopping``): the validation loss has not improved by ``tol``
      (0 if None) for ``n_iter_no_change`` epochs; keep the best validation epoch;
    * **converged** (no early stopping, ``tol`` not None): the training loss has not improved
      by ``tol`` for ``n_iter_no_change`` epochs; keep the last epoch;
    * **max_iter**: keep the last epoch (the best one with ``early_stopping``).
    """
    res = TrainResult()
    train, val = plan.train_rows, plan.val_rows
    model.init(initial_intercept(y[train], params.fit_intercept))
    model.snapshot(0)
    tol = params.tol
    try:
        u = model.predict("e0", train)
        check_range(u, "epoch 0")
        res.initial_loss = logloss(u, y[train])
        best_val = logloss(model.predict("v0", val), y[val]) if params.early_stopping else 0.0
    except OutOfRange as exc:  # pragma: no cover - zero weights cannot leave the range
        res.outcome, res.message = "diverged", str(exc)
        return res
    cached_u = u  # full batch: the evaluation after epoch e is epoch e+1's forward pass
    best_train = res.initial_loss
    stale = 0
    step = 0
    for epoch in range(1, params.max_iter + 1):
        try:
            u, step = _epoch(params, y, plan, model, epoch, step, cached_u)
        except OutOfRange as exc:
            return _diverged(res, params, epoch, f"epoch {epoch}: {exc}")
        cached_u = u
        loss = logloss(u, y[train])
        res.n_iter = epoch
        res.loss_curve.append(loss)
        if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * res.initial_loss:
            return _diverged(
                res,
                params,
                epoch,
                f"epoch {epoch}: training log-loss {loss:.6g} exceeds {DIVERGENCE_FACTOR:g} x "
                f"the starting loss {res.initial_loss:.6g}",
            )
        if params.early_stopping:
            val_loss = logloss(model.predict(f"v{epoch}", val), y[val])
            res.validation_curve.append(val_loss)
            if val_loss < best_val - (tol or 0.0):
                best_val, res.best_epoch, stale = val_loss, epoch, 0
            else:
                stale += 1
            if on_epoch is not None:
                on_epoch(epoch, loss)
            if stale >= params.n_iter_no_change:
                res.outcome, res.keep_epoch = "early_stopped", res.best_epoch
                return res
            continue
        res.best_epoch = epoch
        if tol is not None:
            stale = stale + 1 if loss > best_train - tol else 0
            best_train = min(best_train, loss)
        if on_epoch is not None:
            on_epoch(epoch, loss)
        if tol is not None and stale >= params.n_iter_no_change:
            res.outcome, res.keep_epoch = "converged", epoch
            return res
    res.outcome = "max_iter"
    res.keep_epoch = res.best_epoch if params.early_stopping else res.n_iter
    return res


# --------------------------------------------------------------------------------------------
# the plaintext twin


class _Plain:
    def __init__(self, X: np.ndarray, params: LinearParams):
        self.X = X
        self.params = params
        self.w = np.zeros(X.shape[1])
        self.b = 0.0
        self.snapshots: dict[int, tuple[np.ndarray, float]] = {}

    def init(self, intercept: float) -> None:
        self.w = np.zeros(self.X.shape[1])
        self.b = intercept

    def predict(self, tag: str, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.X[rows] @ self.w + self.b, dtype=np.float64)

    def step(self, epoch: int, batch: int, rows: np.ndarray, r: np.ndarray, lr: float) -> None:
        grad = self.X[rows].T @ r / rows.size + self.params.alpha * self.w
        self.w = self.w - lr * grad
        if self.params.fit_intercept:
            self.b -= lr * float(np.mean(r))

    def snapshot(self, epoch: int) -> None:
        self.snapshots[epoch] = (self.w.copy(), self.b)


class PlaintextLogisticRegression:
    """Centralised logistic regression with the federation's optimiser (the test oracle).

    ``fit(X, y)`` on the concatenated features of all parties (bank columns first, then each
    holder's in mapping order, to read the coefficients back per party). Each column is imputed
    (mean) and, with ``standardize``, z-scored over all the rows given (train and validation),
    exactly as each party does with its own columns.
    """

    def __init__(self, params: LinearParams | None = None, **kwargs: Any):
        self.params = params if params is not None else LinearParams(**kwargs)

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        validation_rows: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
    ) -> PlaintextLogisticRegression:
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2:
            raise LinearError(f"X must be 2-D, got shape {arr.shape}")
        labels = check_labels(y, arr.shape[0])
        self.scaler_ = Standardizer.fit(
            arr, standardize=self.params.standardize, names=feature_names
        )
        Xs = self.scaler_.transform(arr)
        plan = TrainingPlan(self.params, arr.shape[0], validation_rows)
        plain = _Plain(Xs, self.params)
        result = optimise(self.params, labels, plan, plain)
        w, b = plain.snapshots[result.keep_epoch]
        self.coef_ = w.reshape(1, -1)
        self.intercept_ = np.array([b])
        self.n_iter_ = result.n_iter
        self.keep_epoch_ = result.keep_epoch
        self.loss_curve_ = list(result.loss_curve)
        self.validation_scores_ = list(result.validation_curve)
        self.outcome_ = result.outcome
        self.result_ = result
        if result.outcome == "diverged":
            raise DivergenceError(
                f"training diverged ({result.message}); kept the weights after epoch "
                f"{result.keep_epoch}",
                epoch=result.diverged_at,
                keep_epoch=result.keep_epoch,
            )
        return self

    def decision_function(self, X: Any) -> np.ndarray:
        Xs = self.scaler_.transform(np.asarray(X, dtype=np.float64))
        return np.asarray(Xs @ self.coef_[0] + self.intercept_[0], dtype=np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])


__all__ = [
    "DIVERGENCE_FACTOR",
    "SCHEDULES",
    "U_MAX",
    "ConstantFeatureError",
    "DivergenceError",
    "LabelError",
    "LinearError",
    "LinearModelParts",
    "LinearParamError",
    "LinearParams",
    "OutOfRange",
    "PlaintextLogisticRegression",
    "Standardizer",
    "TrainResult",
    "TrainingPlan",
    "check_labels",
    "check_range",
    "initial_intercept",
    "learning_rate_at",
    "logloss",
    "optimise",
    "resolve_alpha",
    "sigmoid",
]
