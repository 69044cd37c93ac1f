"""The bank's half of vertical logistic regression (active party: labels and the HE secret key).

Reads top to bottom as the bank runs a job: ``LinearBank.train`` (keys, ``Start``, ``Peers``,
then the shared optimiser of ``reference.py`` with this module's federated linear predictor
and gradient step, then ``Finish``). Scoring is ``predict.py``; the bank's model part and
errors are ``bank_state.py``; the holders' half is ``passive.py``; the crypto is
``backends.py``; protocol and who learns what: docs/linear.md.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from federation.crypto import CryptoError
from federation.errors import PeerError
from federation.ids import name_problem
from federation.transport.base import PeerBase
from models.driver import HolderDriver
from models.linear.backends import (
    CONTRIBUTION_SCALE_BITS,
    BackendError,
    BankCrypto,
    CryptoOptions,
    crypto_parameters,
    get_backend,
    sum_contributions,
)
from models.linear.bank_state import FederatedTrainingError, LinearBankModel, ProtocolError
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
)
from models.rows import mask_to_bytes
from protos import linear_pb2 as pb

__all__ = ["MIN_BATCH_ROWS", "PUBLIC_KEY_BLOB", "LinearBank"]

log = logging.getLogger(__name__)

PUBLIC_KEY_BLOB = "public-key"
MIN_BATCH_ROWS = 32
"""Smallest batch the bank allows, and at least 4 rows per feature of the widest holder: a
holder learns its gradient X_kᵀ r (d_k numbers) per batch, and with d_k ≥ m it could solve for
the batch's residuals (labels)."""


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
            if self.crypto is None:
                raise LinearError(
                    "holders need the job's crypto backend (a bank-only job has none)"
                )
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

    Talking to the holders (fan-out, abort, blame) is ``models.driver.HolderDriver``.

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
        problem = name_problem(self.job_id, "job_id")
        if problem is not None:
            raise LinearParamError(problem)
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
        self._public_keys: dict[str, bytes] = {}
        self._decrypt_lock = threading.Lock()
        self.driver = HolderDriver(
            self.holders, purpose=purpose, job_id=self.job_id, thread_name="lr-holder"
        )
        self.stats: dict[str, Any] = {
            "forward_calls": 0,
            "gradient_rounds": 0,
            "decryptions": 0,
            "encrypt_s": 0.0,
            "decrypt_s": 0.0,
            "setup_s": 0.0,
            "epoch_s": [],
        }
        self._mark = 0.0

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
        began = time.perf_counter()
        crypto = get_backend(self.backend).bank(self.options) if self.holders else None
        parts = _BankParts(self, X, crypto)
        d = self.driver
        try:
            with d.running(
                abort=lambda: pb.LinearFinish(meta=d.meta(), abort=True),
                error=FederatedTrainingError,
                attributable=(PeerError, BackendError, ProtocolError, CryptoError),
                what=f"linear job {self.job_id}",
                dropped="Every holder was asked to drop the job; no model was produced.",
            ):
                if crypto is not None:
                    self._start(crypto, n)
                    self._check_batches(plan)
                    self._peers()
                # keys, public material and Start are setup: every epoch is timed on its own
                self._mark = time.perf_counter()
                self.stats["setup_s"] = self._mark - began
                self.stats["epoch_s"] = []
                d.stage = "training"
                result = optimise(self.params, labels, plan, parts, on_epoch=self._progress)
                d.stage = "finish"
                d.finish(pb.LinearFinish(meta=d.meta(), keep_epoch=result.keep_epoch))
        finally:
            if crypto is not None:
                crypto.close()
        return self._model(parts, result)

    def _model(self, parts: _BankParts, result: TrainResult) -> LinearBankModel:
        """The bank's part at the kept epoch; after divergence, raised with the model attached."""
        w, b = parts.snapshots[result.keep_epoch]
        times = self.stats["epoch_s"]
        if len(times) < result.n_iter:  # a diverged last epoch reports no progress
            times.append(time.perf_counter() - self._mark)
        model = LinearBankModel(
            job_id=self.job_id,
            backend=self.backend,
            coef=w,
            intercept=b,
            holders=list(self.holders),
            holder_features=dict(self.n_features),
            result=result,
            stats=dict(self.stats),
            crypto=crypto_parameters(self.backend, self.options),
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
        now = time.perf_counter()
        self.stats["epoch_s"].append(now - self._mark)
        self._mark = now
        self.driver.stage = f"epoch {epoch}"
        if self.on_epoch is not None:
            self.on_epoch(epoch, loss)

    def _start(self, crypto: BankCrypto, n: int) -> None:
        """The public key material to every holder (a blob), then ``Start``; each answers its
        feature count and a fresh X25519 public key."""
        d = self.driver
        d.stage = "start"
        public = crypto.public_bytes()
        p = self.params
        start = pb.LinearStart(
            meta=d.meta(),
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
            start.rows = mask_to_bytes(np.asarray(self.alignment_rows, dtype=bool))

        def start_one(name: str) -> pb.LinearStarted:
            peer = self.holders[name]
            peer.put_blob(PUBLIC_KEY_BLOB, public, meta=d.meta())
            request = start
            if self.feature_views.get(name):
                request = pb.LinearStart()
                request.CopyFrom(start)
                request.feature_view = self.feature_views[name]
            reply: pb.LinearStarted = peer.call("Start", request)
            if len(reply.x25519_public_key) != 32 or reply.n_features < 1:
                raise ProtocolError(f"holder '{name}' started with a malformed answer")
            return reply

        d.started = list(self.holders)  # abort is best effort: some may not have it
        for name, reply in d.each(start_one).items():
            self.n_features[name] = int(reply.n_features)
            self._public_keys[name] = bytes(reply.x25519_public_key)
        if len(set(self._public_keys.values())) != len(self._public_keys):
            raise ProtocolError("two holders sent the same X25519 public key")

    def _peers(self) -> None:
        """Every holder gets all holders' public keys (the bank relays; it cannot derive the
        pair keys)."""
        d = self.driver
        d.stage = "peers"
        peers = pb.LinearPeers(meta=d.meta())
        for name in self.holders:
            peers.holders.add(holder=name, x25519_public_key=self._public_keys[name])
        d.each_call("Peers", peers)

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

    # -- the federated linear predictor ----------------------------------------------------
    def _forward(self, tag: str, rows: np.ndarray) -> np.ndarray:
        mask = np.zeros(self._n_rows, dtype=bool)
        mask[rows] = True
        request = pb.LinearForward(
            meta=self.driver.meta(), tag=tag, rows=mask_to_bytes(mask), n_rows=int(rows.size)
        )

        def ask(name: str) -> bytes:
            try:
                reply: pb.LinearContribution = self.holders[name].call("Forward", request)
            except PeerError as exc:
                if exc.code == OUT_OF_RANGE:
                    raise OutOfRange(f"holder '{name}': {exc.detail}") from None
                raise
            self._check_contribution(name, reply, rows.size)
            return bytes(reply.values)

        try:
            parts = list(self.driver.each(ask).values())
        except OutOfRange:
            self.driver.holder = None
            raise
        self.stats["forward_calls"] += 1
        return sum_contributions(parts, rows.size, f"Forward {tag}")

    def _check_contribution(self, name: str, reply: pb.LinearContribution, n: int) -> None:
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
        """[[r]] to every holder, each one's masked [[X_kᵀ r]] back and decrypted, Update."""
        d = self.driver
        d.stage = f"epoch {epoch} batch {batch}"
        mask = np.zeros(self._n_rows, dtype=bool)
        mask[rows] = True
        request = pb.LinearGradient(
            meta=d.meta(),
            epoch=epoch,
            batch=batch,
            rows=mask_to_bytes(mask),
            n_rows=int(rows.size),
            blob_id=f"resid-{epoch}-{batch}",
        )
        began = time.perf_counter()
        pieces, total = crypto.encrypt_residuals(r)
        payload: bytes | Iterator[bytes]
        if len(self.holders) > 1:  # encrypt once, then every holder at once
            payload = b"".join(pieces)
            self.stats["encrypt_s"] += time.perf_counter() - began
        else:  # one holder: it receives while the bank encrypts
            payload = iter(pieces)
        decrypted = d.each(
            lambda name: self._masked_gradient(crypto, name, request, payload, total, began)
        )
        d.each_call(
            "Update",
            lambda name: pb.LinearUpdate(
                meta=d.meta(),
                epoch=epoch,
                batch=batch,
                decrypted=decrypted[name],
                learning_rate=lr,
            ),
        )
        self.stats["gradient_rounds"] += 1

    def _masked_gradient(
        self,
        crypto: BankCrypto,
        name: str,
        request: pb.LinearGradient,
        payload: bytes | Iterator[bytes],
        total: int | None,
        began: float,
    ) -> bytes:
        """One holder's round: residuals in, its masked gradient out and decrypted (masked)."""
        d = self.driver
        peer = self.holders[name]
        peer.put_blob(request.blob_id, payload, meta=d.meta(), total_size=total)
        if len(self.holders) == 1:  # streamed: encryption and sending overlap
            self.stats["encrypt_s"] += time.perf_counter() - began
        reply: pb.LinearMaskedGradient = peer.call("Gradient", request)
        if reply.n_values != self.n_features[name]:
            raise ProtocolError(
                f"holder '{name}' returned {reply.n_values} values for "
                f"{self.n_features[name]} features"
            )
        if reply.blob_id:
            masked = b"".join(peer.get_blob(reply.blob_id, meta=d.meta()))
        else:
            masked = bytes(reply.masked)
        with self._decrypt_lock:
            t0 = time.perf_counter()
            out = crypto.decrypt_masked(masked, reply.n_values)
            self.stats["decrypt_s"] += time.perf_counter() - t0
            self.stats["decryptions"] += int(reply.n_values)
        return out
