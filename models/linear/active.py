"""The bank's half of vertical logistic regression (active party: labels and the HE secret key).

Reads top to bottom as the bank runs a job: ``LinearBank.train`` (keys, ``Start``, ``Peers``,
then the shared optimiser of ``reference.py`` with this module's federated linear predictor
and gradient step, then ``Finish``), then one-round scoring (``predict_linear``). The holders'
half is ``passive.py``; the crypto is ``backends.py``; protocol and who learns what:
docs/linear.md.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from federation.crypto import CryptoError
from federation.errors import PeerError, XinyidaiError
from federation.transport.base import PeerBase, new_meta
from models.linear.backends import (
    CONTRIBUTION_SCALE_BITS,
    BackendError,
    BankCrypto,
    CryptoOptions,
    get_backend,
    sum_contributions,
)
from models.linear.passive import OUT_OF_RANGE
from models.linear.reference import (
    DivergenceError,
    LinearError,
    LinearParamError,
    LinearParams,
    OutOfRange,
    TrainingPlan,
    TrainResult,
    check_labels,
    optimise,
    rows_to_bytes,
)
from protos import linear_pb2 as pb

log = logging.getLogger(__name__)

T = TypeVar("T")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
PUBLIC_KEY_BLOB = "public-key"
MIN_BATCH_ROWS = 32
"""Smallest batch the bank allows, and at least 4 rows per feature of the widest holder: a
holder learns its gradient X_kᵀ r (d_k numbers) per batch, and with d_k ≥ m it could solve for
the batch's residuals (labels)."""


class ProtocolError(LinearError):
    """A holder answered something inconsistent with the protocol (sizes, counts, flags)."""


class FederatedTrainingError(LinearError):
    """Training stopped; every holder was asked to drop the job. Names the holder and stage."""

    def __init__(self, message: str, *, holder: str | None, stage: str):
        self.holder = holder
        self.stage = stage
        super().__init__(message)


class ScoringError(LinearError):
    """Scoring failed at a holder (it is down, refuses, or its columns changed: ``holder``)."""

    def __init__(self, message: str, *, holder: str | None, schema_drift: bool = False):
        self.holder = holder
        self.schema_drift = schema_drift
        super().__init__(message)


@dataclass
class LinearBankModel:
    """The bank's part of a fitted model: its own coefficients and the intercept.

    Holders keep their weights; ``holders`` and ``holder_features`` (counts only) say who must
    answer ``Predict`` for model ``job_id``.
    """

    job_id: str
    backend: str
    coef: np.ndarray
    intercept: float
    holders: list[str]
    holder_features: dict[str, int]
    result: TrainResult
    stats: dict[str, Any] = field(default_factory=dict)


class _BankParts:
    """The optimiser's view of the federation: u = X_b w_b + b + Σ_k u_k, and one step."""

    def __init__(self, bank: LinearBank, X: np.ndarray, crypto: BankCrypto | None):
        self.bank = bank
        self.X = X
        self.crypto = crypto
        self.w = np.zeros(X.shape[1])
        self.b = 0.0
        self.snapshots: dict[int, tuple[np.ndarray, float]] = {}

    def init(self, intercept: float) -> None:
        self.w = np.zeros(self.X.shape[1])
        self.b = intercept

    def predict(self, tag: str, rows: np.ndarray) -> np.ndarray:
        u = self.X[rows] @ self.w + self.b
        if self.bank.holders:
            u = u + self.bank._forward(tag, rows)
        return np.asarray(u, dtype=np.float64)

    def step(self, epoch: int, batch: int, rows: np.ndarray, r: np.ndarray, lr: float) -> None:
        if self.bank.holders:
            assert self.crypto is not None
            self.bank._gradient_round(self.crypto, epoch, batch, rows, r, lr)
        p = self.bank.params
        grad = self.X[rows].T @ r / rows.size + p.alpha * self.w
        self.w = self.w - lr * grad
        if p.fit_intercept:
            self.b -= lr * float(np.mean(r))

    def snapshot(self, epoch: int) -> None:
        self.snapshots[epoch] = (self.w.copy(), self.b)


class LinearBank:
    """Drives one training job against ``holders`` (any ``PeerBase``: in-process or gRPC).

    Protocol, from the bank's side:

    1. **Keys and start.** The backend makes the key pair (Paillier ≥ 2048 bits outside tests,
       or a CKKS context); the secret key never leaves this object. The public material goes
       to every holder as a blob, then ``Start`` with the hyperparameters a holder needs; each
       answers its feature count and a fresh X25519 public key.
    ``feature_views``: per holder, the features it trains on (``LinearStart.feature_view``,
    e.g. "woe:<woe job>:0,2" for its own WOE values of a scorecard); resolved at the holder.

    2. **Peers.** Every holder gets all holders' public keys (the bank relays, it cannot derive
       the pair keys).
    3. **The optimiser** (``reference.optimise``, identical to the centralised twin). Linear
       predictor of a row set: the bank's own u_b plus the sum of the holders' ``Forward``
       answers (masked fixed point mod 2^64: only the sum is readable). One step on a batch:
       r = σ(u) − y; [[r]] streamed as a blob to every holder (encrypting while sending);
       ``Gradient`` returns each holder's masked encrypted X_kᵀ r; the bank decrypts the
       masked values and sends them back in ``Update`` with the step size; its own weights and
       the intercept are updated in the clear.
    4. **Finish** names the epoch whose weights every party keeps (the last good one after
       divergence, the best validation epoch with early stopping); on any failure every started
       holder gets ``Finish(abort)`` and ``FederatedTrainingError`` names holder and stage.

    Sees: its own data and labels; per row the SUM of the holders' linear predictors (one
    holder's own u_k when there is only one holder); masked decryptions of the holders'
    gradients. Never sees: a holder's features, weights, gradient or column names.
    """

    def __init__(
        self,
        *,
        params: LinearParams,
        holders: Mapping[str, PeerBase],
        backend: str = "paillier",
        options: CryptoOptions | None = None,
        purpose: str = "financing",
        job_id: str | None = None,
        alignment_id: str = "",
        alignment_rows: np.ndarray | None = None,
        min_batch_rows: int = MIN_BATCH_ROWS,
        on_epoch: Callable[[int, float], None] | None = None,
        feature_views: Mapping[str, str] | None = None,
    ):
        self.params = params
        self.holders = dict(holders)
        self.backend = get_backend(backend).name
        self.options = options or CryptoOptions()
        self.purpose = purpose
        self.job_id = job_id or f"lr-{uuid.uuid4().hex[:16]}"
        if not _JOB_ID.match(self.job_id):
            raise LinearParamError(f"job_id {self.job_id!r} must match {_JOB_ID.pattern}")
        self.alignment_id = alignment_id
        self.alignment_rows = alignment_rows
        self.min_batch_rows = int(min_batch_rows)
        self.on_epoch = on_epoch
        self.feature_views = dict(feature_views or {})
        unknown = sorted(set(self.feature_views) - set(self.holders))
        if unknown:
            raise LinearParamError(f"feature_views name holder(s) {unknown} not in the job")
        self.n_features: dict[str, int] = {}
        self._n_rows = 0
        self._stage = "start"
        self._holder: str | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._decrypt_lock = threading.Lock()
        self.stats: dict[str, Any] = {
            "forward_calls": 0,
            "gradient_rounds": 0,
            "decryptions": 0,
            "encrypt_s": 0.0,
            "decrypt_s": 0.0,
        }

    def _meta(self) -> Any:
        return new_meta(self.purpose, job_id=self.job_id)

    def _call(self, holder: str, method: str, request: Any) -> Any:
        self._holder = holder
        reply = self.holders[holder].call(method, request)
        self._holder = None
        return reply

    def _each(self, fn: Callable[[str], T]) -> dict[str, T]:
        """``fn(holder)`` for every holder at once (one thread each: holders compute in
        parallel on their own machines); the first failure in holder order names its holder
        and is raised after every call has returned."""
        names = list(self.holders)
        futures = (
            None
            if self._pool is None or len(names) == 1
            else {name: self._pool.submit(fn, name) for name in names}
        )
        results: dict[str, T] = {}
        failure: tuple[str, BaseException] | None = None
        for name in names:
            try:
                results[name] = fn(name) if futures is None else futures[name].result()
            except Exception as exc:
                if failure is None:
                    failure = (name, exc)
                if futures is None:
                    break
        if failure is not None:
            self._holder = failure[0]
            raise failure[1]
        self._holder = None
        return results

    # -- the job ---------------------------------------------------------------------------
    def train(
        self, X: np.ndarray, y: Any, *, validation_rows: np.ndarray | None = None
    ) -> LinearBankModel:
        """Run the whole job on the bank's prepared features ``X`` (rows aligned with the
        holders'); returns the bank's model part, raises ``DivergenceError`` (with the kept
        model attached) or ``FederatedTrainingError`` with every holder reset."""
        X = np.asarray(X, dtype=np.float64)
        n = X.shape[0]
        labels = check_labels(y, n)
        plan = TrainingPlan(self.params, n, validation_rows)
        self._n_rows = n
        crypto = get_backend(self.backend).bank(self.options) if self.holders else None
        started: list[str] = []
        parts = _BankParts(self, X, crypto)
        if len(self.holders) > 1:
            self._pool = ThreadPoolExecutor(len(self.holders), thread_name_prefix="lr-holder")
        try:
            if self.holders:
                assert crypto is not None
                self._start(crypto, n, started)
                self._check_batches(plan)
                self._stage = "peers"
                peers = pb.LinearPeers(meta=self._meta())
                for name in self.holders:
                    peers.holders.add(holder=name, x25519_public_key=self._public_keys[name])
                self._each(lambda name: self.holders[name].call("Peers", peers))
            self._stage = "training"
            result = optimise(self.params, labels, plan, parts, on_epoch=self._progress)
            self._stage = "finish"
            for name in list(started):
                self._call(
                    name,
                    "Finish",
                    pb.LinearFinish(meta=self._meta(), keep_epoch=result.keep_epoch),
                )
                started.remove(name)
        except Exception as exc:
            self._abort(started)
            if isinstance(exc, PeerError | BackendError | ProtocolError | CryptoError):
                who = f"holder '{self._holder}'" if self._holder else "a holder"
                raise FederatedTrainingError(
                    f"linear job {self.job_id} failed at {self._stage} ({who}): {exc}. "
                    "Every holder was asked to drop the job; no model was produced.",
                    holder=self._holder,
                    stage=self._stage,
                ) from exc
            raise
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            if crypto is not None:
                crypto.close()
        w, b = parts.snapshots[result.keep_epoch]
        model = LinearBankModel(
            job_id=self.job_id,
            backend=self.backend,
            coef=w,
            intercept=b,
            holders=list(self.holders),
            holder_features=dict(self.n_features),
            result=result,
            stats=dict(self.stats),
        )
        if result.outcome == "diverged":
            err = DivergenceError(
                f"linear job {self.job_id} diverged ({result.message}); every party kept the "
                f"weights after epoch {result.keep_epoch}",
                epoch=result.diverged_at,
                keep_epoch=result.keep_epoch,
            )
            err.model = model
            raise err
        return model

    def _progress(self, epoch: int, loss: float) -> None:
        self._stage = f"epoch {epoch}"
        if self.on_epoch is not None:
            self.on_epoch(epoch, loss)

    def _start(self, crypto: BankCrypto, n: int, started: list[str]) -> None:
        self._stage = "start"
        public = crypto.public_bytes()
        p = self.params
        start = pb.LinearStart(
            meta=self._meta(),
            backend=self.backend,
            public_key_blob=PUBLIC_KEY_BLOB,
            n_rows=n,
            alignment_id=self.alignment_id,
            alpha=p.alpha,
            standardize=p.standardize,
            residual_scale_bits=crypto.residual_scale_bits,
            max_iter=p.max_iter,
            n_holders=len(self.holders),
            batch_size=p.batch_size or 0,
        )
        if self.alignment_rows is not None:
            start.rows = rows_to_bytes(np.asarray(self.alignment_rows, dtype=bool))
        self._public_keys: dict[str, bytes] = {}
        for name, peer in self.holders.items():
            self._holder = name
            peer.put_blob(PUBLIC_KEY_BLOB, public, meta=self._meta())
            request = start
            if self.feature_views.get(name):
                request = pb.LinearStart()
                request.CopyFrom(start)
                request.feature_view = self.feature_views[name]
            reply = self._call(name, "Start", request)
            started.append(name)
            if len(reply.x25519_public_key) != 32 or reply.n_features < 1:
                raise ProtocolError(f"holder '{name}' started with a malformed answer")
            self.n_features[name] = int(reply.n_features)
            self._public_keys[name] = bytes(reply.x25519_public_key)
        if len(set(self._public_keys.values())) != len(self._public_keys):
            raise ProtocolError("two holders sent the same X25519 public key")

    def _check_batches(self, plan: TrainingPlan) -> None:
        smallest = plan.train_rows.size if plan.full_batch else int(self.params.batch_size or 0)
        widest = max(self.n_features.values(), default=0)
        need = max(self.min_batch_rows, 4 * widest)
        if smallest < need:
            raise LinearParamError(
                f"batches of {smallest} rows are too small: at least {need} (and 4 per feature "
                f"of the widest holder, {widest} features) keep a holder's gradient from "
                "revealing the batch's residuals"
            )

    def _abort(self, started: list[str]) -> None:
        for name in started:
            try:
                self.holders[name].call("Finish", pb.LinearFinish(meta=self._meta(), abort=True))
            except XinyidaiError as exc:  # best effort: the holder may be the one that is down
                log.warning("could not abort job %s at %s: %s", self.job_id, name, exc)

    # -- the federated linear predictor ----------------------------------------------------
    def _forward(self, tag: str, rows: np.ndarray) -> np.ndarray:
        mask = np.zeros(self._n_rows, dtype=bool)
        mask[rows] = True
        request = pb.LinearForward(
            meta=self._meta(), tag=tag, rows=rows_to_bytes(mask), n_rows=int(rows.size)
        )

        def ask(name: str) -> bytes:
            try:
                reply = self.holders[name].call("Forward", request)
            except PeerError as exc:
                if exc.code == OUT_OF_RANGE:
                    raise OutOfRange(f"holder '{name}': {exc.detail}") from None
                raise
            self._check_contribution(name, reply, rows.size)
            return bytes(reply.values)

        try:
            parts = list(self._each(ask).values())
        except OutOfRange:
            self._holder = None
            raise
        self.stats["forward_calls"] += 1
        return sum_contributions(parts, rows.size, f"Forward {tag}")

    def _check_contribution(self, name: str, reply: Any, n: int) -> None:
        if reply.scale_bits != CONTRIBUTION_SCALE_BITS or len(reply.values) != 8 * n:
            raise ProtocolError(f"holder '{name}' sent a contribution of the wrong shape")
        if reply.masked != (len(self.holders) > 1):
            raise ProtocolError(
                f"holder '{name}' sent {'masked' if reply.masked else 'unmasked'} values in a "
                f"job with {len(self.holders)} holder(s)"
            )

    # -- one gradient step at the holders -------------------------------------------------
    def _gradient_round(
        self,
        crypto: BankCrypto,
        epoch: int,
        batch: int,
        rows: np.ndarray,
        r: np.ndarray,
        lr: float,
    ) -> None:
        self._stage = f"epoch {epoch} batch {batch}"
        mask = np.zeros(self._n_rows, dtype=bool)
        mask[rows] = True
        blob_id = f"resid-{epoch}-{batch}"
        began = time.perf_counter()
        pieces, total = crypto.encrypt_residuals(r)

        def stream() -> Iterator[bytes]:  # one holder: it receives while the bank encrypts
            yield from pieces

        request = pb.LinearGradient(
            meta=self._meta(),
            epoch=epoch,
            batch=batch,
            rows=rows_to_bytes(mask),
            n_rows=int(rows.size),
            blob_id=blob_id,
        )
        if len(self.holders) > 1:  # encrypt once, then every holder at once
            payload: Any = b"".join(pieces)
            self.stats["encrypt_s"] += time.perf_counter() - began
        else:
            payload = stream()

        def masked_gradient(name: str) -> bytes:
            peer = self.holders[name]
            peer.put_blob(blob_id, payload, meta=self._meta(), total_size=total)
            if len(self.holders) == 1:  # streamed: encryption and sending overlap
                self.stats["encrypt_s"] += time.perf_counter() - began
            reply = peer.call("Gradient", request)
            if reply.n_values != self.n_features[name]:
                raise ProtocolError(
                    f"holder '{name}' returned {reply.n_values} values for "
                    f"{self.n_features[name]} features"
                )
            if reply.blob_id:
                masked = b"".join(peer.get_blob(reply.blob_id, meta=self._meta()))
            else:
                masked = bytes(reply.masked)
            with self._decrypt_lock:
                t0 = time.perf_counter()
                out = crypto.decrypt_masked(masked, reply.n_values)
                self.stats["decrypt_s"] += time.perf_counter() - t0
                self.stats["decryptions"] += int(reply.n_values)
            return out

        decrypted = self._each(masked_gradient)

        def update(name: str) -> Any:
            return self.holders[name].call(
                "Update",
                pb.LinearUpdate(
                    meta=self._meta(),
                    epoch=epoch,
                    batch=batch,
                    decrypted=decrypted[name],
                    learning_rate=lr,
                ),
            )

        self._each(update)
        self.stats["gradient_rounds"] += 1


# --------------------------------------------------------------------------------------------
# one-round scoring


def predict_linear(
    model: LinearBankModel,
    X: np.ndarray,
    holders: Mapping[str, PeerBase],
    rows: Any,
    *,
    purpose: str = "financing",
    alignment_id: str = "",
) -> np.ndarray:
    """Linear predictors for the bank's prepared rows ``X`` and the holders' ``rows``.

    ``rows`` are each bank row's positions in the alignment ``alignment_id`` (empty: the
    holders' own rows). Every holder of the model answers once; with two or more holders their
    answers are masked and only the sum is readable.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    row_ids = np.asarray(rows, dtype=np.int64)
    if row_ids.shape != (n,):
        raise LinearError(f"rows must give one holder row per bank row ({n}), got {row_ids.shape}")
    if n and row_ids.min() < 0:
        raise LinearError("rows must be non-negative holder row indices")
    u = X @ model.coef + model.intercept
    if not model.holders:
        return np.asarray(u, dtype=np.float64)
    missing = [h for h in model.holders if h not in holders]
    if missing:
        raise ScoringError(
            f"the model needs holder(s) {missing} to score, they were not given", holder=None
        )
    request = pb.LinearPredictRequest(
        meta=new_meta(purpose, job_id=model.job_id),
        rows=row_ids.tolist(),
        alignment_id=alignment_id,
        nonce=secrets.token_bytes(16),
    )
    parts = []
    for name in model.holders:
        try:
            reply = holders[name].call("Predict", request)
        except PeerError as exc:
            drift = "schema drift" in exc.detail
            raise ScoringError(
                f"holder '{name}' could not score: {exc}", holder=name, schema_drift=drift
            ) from exc
        if reply.scale_bits != CONTRIBUTION_SCALE_BITS or len(reply.values) != 8 * n:
            raise ScoringError(f"holder '{name}' answered the wrong number of rows", holder=name)
        if reply.masked != (len(model.holders) > 1):
            raise ScoringError(f"holder '{name}' answered with the wrong masking", holder=name)
        parts.append(reply.values)
    return np.asarray(u + sum_contributions(parts, n, "Predict"), dtype=np.float64)


__all__ = [
    "MIN_BATCH_ROWS",
    "FederatedTrainingError",
    "LinearBank",
    "LinearBankModel",
    "ProtocolError",
    "ScoringError",
    "predict_linear",
]
