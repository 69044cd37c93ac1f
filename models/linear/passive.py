"""The data holder's half of vertical logistic regression (passive party: tax bureau, utility).

Reads top to bottom as the holder serves a job: ``Start`` → ``Peers`` → per batch
(``Forward``, ``PutBlob`` + ``Gradient``, ``Update``) and per epoch ``Forward`` on the
training (and validation) rows → ``Finish``; later ``Predict``. The bank's half is
``active.py``; the optimiser is ``reference.py``; the crypto is ``backends.py``; protocol and
who learns what: docs/linear.md.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from federation.blobs import BlobEndpoints, BlobStore
from federation.errors import Refused
from federation.files import write_atomic
from federation.transport.base import (
    FAILED_PRECONDITION,
    CallFailed,
    CallInfo,
    ServiceRuntime,
    invalid,
)
from federation.transport.inproc import InProcessPeer
from models.linear.backends import (
    BACKENDS,
    CONTRIBUTION_SCALE_BITS,
    BackendError,
    HolderCrypto,
    PairwiseMasks,
    encode_contribution,
    new_x25519,
    rows_digest,
)
from models.linear.reference import (
    ConstantFeatureError,
    LinearError,
    OutOfRange,
    Standardizer,
    rows_from_bytes,
)
from protos import common_pb2, linear_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = "LinearHolder"
OUT_OF_RANGE = "OUT_OF_RANGE"
"""Status of a Forward/Predict whose linear predictor left the fixed-point range: the bank
treats it as divergence of training."""

FeaturesFor = Callable[..., tuple[np.ndarray, Sequence[str]]]
"""``features_for(bank, alignment_id) -> (values, names)``: as for SecureBoost's holder. One
that also takes ``view`` (``features_for(bank, alignment_id, view="")``, e.g.
``parties.holder.views.FeatureViews``) serves the feature views a job names in
``LinearStart.feature_view`` ("woe:<job>[:i,j]": the holder's own WOE values)."""


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TAG = re.compile(r"^[bev][0-9]{1,6}(\.[0-9]{1,7})?$")
MODEL_FORMAT = "xinyidai.linear.holder/1"


def _failed(detail: str) -> CallFailed:
    return CallFailed(FAILED_PRECONDITION, detail)


@dataclass
class LinearHolderModel:
    """The holder's part of a fitted model: its weights, its preprocessing, its scoring masks.

    Secret to the holder: weights and preprocessing statistics describe its data, and the
    pairwise scoring keys are shared with the other holders only. Stored mode 0600.
    """

    weights: np.ndarray
    scaler: Standardizer
    masks: PairwiseMasks  # scoring keys (empty with one holder)
    n_holders: int
    epoch: int
    backend: str
    alignment_id: str = ""
    feature_view: str = ""

    @property
    def n_features(self) -> int:
        return int(self.weights.size)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MODEL_FORMAT,
            "weights": self.weights.tolist(),
            "scaler": self.scaler.to_dict(),
            "masks": self.masks.to_list(),
            "n_holders": self.n_holders,
            "epoch": self.epoch,
            "backend": self.backend,
            "alignment_id": self.alignment_id,
            "feature_view": self.feature_view,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearHolderModel:
        if data.get("format") != MODEL_FORMAT:
            raise LinearError(f"not a {MODEL_FORMAT} model part: {data.get('format')!r}")
        return cls(
            weights=np.asarray(data["weights"], dtype=np.float64),
            scaler=Standardizer.from_dict(data["scaler"]),
            masks=PairwiseMasks.from_list(data["masks"]),
            n_holders=int(data["n_holders"]),
            epoch=int(data["epoch"]),
            backend=str(data["backend"]),
            alignment_id=str(data.get("alignment_id", "")),
            feature_view=str(data.get("feature_view", "")),
        )


@dataclass
class _Pending:
    rows: np.ndarray
    masks: Any
    blob_id: str = ""  # the holder's own result blob (CKKS), removed on Update


@dataclass
class _Job:
    alignment_id: str
    n_rows: int
    backend: str
    crypto: HolderCrypto
    features: np.ndarray  # imputed and (optionally) standardised, (n_rows, n_features)
    scaler: Standardizer
    alpha: float
    max_iter: int
    n_holders: int
    private: X25519PrivateKey
    public: bytes
    feature_view: str = ""
    masks: PairwiseMasks | None = None  # training masks (after Peers)
    scoring: PairwiseMasks | None = None
    weights: np.ndarray = field(default_factory=lambda: np.zeros(0))
    snapshots: dict[int, np.ndarray] = field(default_factory=dict)
    tags: set[str] = field(default_factory=set)
    pending: dict[tuple[int, int], _Pending] = field(default_factory=dict)
    done: set[tuple[int, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


class LinearHolderServicer(BlobEndpoints):
    """``xinyidai.v1.LinearHolder`` for one data holder.

    The holder's weights never leave it; all state is scoped by (calling bank, job id).
    Protocol, from the holder's side:

    1. ``Start``: fetch the public key material (a blob: Paillier public parameters, verified,
       or a CKKS context without secret key), select the job's rows, impute missing values by
       the column mean and (``standardize``) z-score locally; refuse constant columns (by
       index: names stay here); weights start at 0; answer with the feature count and a fresh
       X25519 public key for this job.
    2. ``Peers``: every holder's public key, relayed by the bank. With two or more holders,
       derive one key per other holder (X25519 + HKDF bound to the job): masks of a pair
       cancel in the sum. The bank sees only public keys, so it cannot compute any mask.
    3. ``Forward`` (per tag, once): u_k = X_k w_k on the requested rows as round(u·2^32) mod
       2^64 plus this holder's pairwise masks for (tag, rows). The bank learns only the sum
       over holders; with one holder, u_k itself (what a one-holder job accepts).
    4. ``PutBlob`` + ``Gradient``: the bank's encrypted residuals [[r]] of a batch; compute
       [[X_kᵀ r]] homomorphically, add a fresh random mask (uniform mod n for Paillier, ±2^36
       real for CKKS), re-randomise, return (CKKS: as a blob the bank fetches).
    5. ``Update``: the bank's decryption of the masked values; remove the mask, add the L2
       term alpha·w_k, step w_k ← w_k − lr·(X_kᵀ r / m + alpha·w_k). Snapshot per epoch.
    6. ``Finish``: keep the snapshot of ``keep_epoch`` as the model part (written to
       ``models_dir``) or, with ``abort``, drop everything.
    7. ``Predict``: masked u_k for the requested alignment rows (masks from the scoring keys,
       the bank's nonce and the rows).

    A job may name a feature view (``LinearStart.feature_view``, e.g. "woe:<job>:0,2": the
    holder's own WOE values of a scorecard); ``features_for`` resolves it here, and the model
    part remembers it for ``Predict``. Scorecard points: ``models.linear.points``.

    Sees: the public key material and hyperparameters, which rows form each batch (and, by
    elimination, the validation rows), its own gradients X_kᵀ r / m (inherent to updating its
    own weights), the learning rate of each step. Never sees: labels, residuals or
    predictions (only ciphertexts), the bank's or another holder's features or weights.

    ``features``/``feature_names`` or ``features_for`` as for ``SecureBoostHolderServicer``
    (a job names its alignment and rows in ``Start``); ``models_dir``: where model parts are
    written (``<models_dir>/<bank>/<job>.json``, mode 0600) and read back after a restart;
    ``min_holders``: this holder's policy — it refuses jobs with fewer holders (2 keeps its
    linear predictor hidden from the bank); ``workers``: Paillier process count.
    """

    service = linear_pb2.DESCRIPTOR.services_by_name[SERVICE_NAME]

    def __init__(
        self,
        *,
        node_id: str,
        features: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
        features_for: FeaturesFor | None = None,
        banks: Iterable[str],
        blobs: BlobStore,
        workers: int | None = 1,
        chunk_bytes: int = 1 << 20,
        models_dir: Path | None = None,
        min_holders: int = 1,
    ):
        self.node_id = node_id
        self.features: np.ndarray | None = None
        self.feature_names: list[str] = []
        if (features is None) == (features_for is None):
            raise ValueError("give either features (with feature_names) or features_for")
        if features is not None:
            names = [str(n) for n in feature_names or []]
            arr = self._checked(features, names)
            self.features, self.feature_names = arr, names

            def fixed(bank: str, alignment_id: str) -> tuple[np.ndarray, Sequence[str]]:
                return arr, names

            features_for = fixed
        assert features_for is not None
        self.features_for: FeaturesFor = features_for
        try:
            self._serves_views = "view" in inspect.signature(features_for).parameters
        except (TypeError, ValueError):  # a builtin without a signature: no views
            self._serves_views = False
        self.banks = frozenset(banks)
        self.blobs = blobs
        self.workers = workers
        self.chunk_bytes = chunk_bytes
        self.models_dir = models_dir
        self.min_holders = int(min_holders)
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._models: dict[tuple[str, str], LinearHolderModel] = {}
        self._lock = threading.Lock()

    def _checked(self, features: Any, names: Sequence[str]) -> np.ndarray:
        arr = np.asarray(features, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise LinearError(
                f"holder '{self.node_id}': features must be (rows, {len(names)}) for the "
                f"given names, got shape {arr.shape}"
            )
        return arr

    def _features(
        self, bank: str, alignment_id: str, view: str = ""
    ) -> tuple[np.ndarray, list[str]]:
        if view:
            if not self._serves_views:
                raise invalid(f"{self.node_id} serves no feature views (asked for {view!r})")
            values, names = self.features_for(bank, alignment_id, view=view)
        else:
            values, names = self.features_for(bank, alignment_id)
        return self._checked(values, names), [str(n) for n in names]

    # -- policy and bookkeeping ------------------------------------------------------------
    def authorise_caller(self, caller: str, method: str) -> None:
        if caller not in self.banks:
            raise Refused(
                "caller",
                f"'{caller}' is not a bank this holder trains with "
                f"(policy lists: {', '.join(sorted(self.banks)) or 'none'})",
            )

    def _job(self, call: CallInfo) -> _Job:
        with self._lock:
            job = self._jobs.get((call.caller, call.meta.job_id))
        if job is None:
            raise _failed(f"no open linear job '{call.meta.job_id}' from {call.caller}")
        return job

    def open_jobs(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._jobs)

    def _rows(self, buf: bytes, n_rows: int, count: int, what: str) -> np.ndarray:
        try:
            mask = rows_from_bytes(buf, n_rows, what)
        except LinearError as exc:
            raise invalid(str(exc)) from None
        rows = np.flatnonzero(mask)
        if rows.size != count or rows.size == 0:
            raise invalid(f"{what}: {rows.size} rows set, the request says {count}")
        return rows

    def model(self, bank: str, job_id: str) -> LinearHolderModel:
        """The holder's part of a finished model (its own secret)."""
        with self._lock:
            found = self._models.get((bank, job_id))
        if found is None:
            found = self._read_model(bank, job_id)
        if found is None:
            raise _failed(f"no finished linear model '{job_id}' for {bank}")
        return found

    def _model_path(self, bank: str, job_id: str) -> Path | None:
        if self.models_dir is None or not _SAFE_NAME.match(bank) or not _SAFE_NAME.match(job_id):
            return None
        return self.models_dir / bank / f"linear-{job_id}.json"

    def _read_model(self, bank: str, job_id: str) -> LinearHolderModel | None:
        path = self._model_path(bank, job_id)
        if path is None or not path.exists():
            return None
        model = LinearHolderModel.from_dict(json.loads(path.read_text(encoding="utf-8")))
        with self._lock:
            self._models[(bank, job_id)] = model
        return model

    def load_model(self, bank: str, job_id: str, model: LinearHolderModel) -> None:
        """Serve a saved model part (``LinearHolderModel.from_dict``), e.g. on a scoring node."""
        with self._lock:
            self._models[(bank, job_id)] = model

    # -- 1. Start --------------------------------------------------------------------------
    def Start(self, request: Any, call: CallInfo) -> Any:
        key = (call.caller, call.meta.job_id)
        if not _SAFE_NAME.match(call.meta.job_id):
            raise invalid(f"Start: meta.job_id must match {_SAFE_NAME.pattern}")
        with self._lock:
            if key in self._jobs or key in self._models:
                raise _failed(f"job '{call.meta.job_id}' already exists at {self.node_id}")
        if request.backend not in BACKENDS:
            raise invalid(f"Start: unknown backend {request.backend!r} ({sorted(BACKENDS)})")
        if request.n_holders < 1:
            raise invalid("Start: n_holders must be >= 1")
        if request.n_holders < self.min_holders:
            raise Refused(
                "min_holders",
                f"the job has {request.n_holders} holder(s); {self.node_id} takes part only "
                f"with at least {self.min_holders} (so its linear predictor stays masked)",
            )
        if not (np.isfinite(request.alpha) and request.alpha >= 0) or request.max_iter < 1:
            raise invalid("Start: alpha must be finite and >= 0, max_iter >= 1")
        features, names = self._features(call.caller, request.alignment_id, request.feature_view)
        if request.rows:
            try:
                selected = rows_from_bytes(request.rows, features.shape[0], "Start.rows")
            except LinearError as exc:
                raise invalid(str(exc)) from None
            features = features[selected]
        n_rows = features.shape[0]
        if request.n_rows != n_rows:
            raise invalid(f"the bank has {request.n_rows} rows, this holder {n_rows}")
        try:
            scaler = Standardizer.fit(features, standardize=request.standardize)
        except ConstantFeatureError as exc:
            index = exc.index if exc.index is not None else -1
            # Column names stay at the holder: the bank hears the index, the log has the name.
            log.error(
                "%s: linear job %s: column '%s': %s",
                self.node_id,
                call.meta.job_id,
                names[index] if 0 <= index < len(names) else "?",
                exc,
            )
            raise _failed(
                f"{self.node_id}: feature #{index} of {len(names)} is constant or empty on the "
                f"job's rows (the column name is in {self.node_id}'s log)"
            ) from None
        prepared = scaler.transform(features)
        public_key = self.blobs.path(call.caller, call.meta.job_id, request.public_key_blob)
        material = public_key.read_bytes()
        self._drop_blob(call, request.public_key_blob)
        try:
            crypto = BACKENDS[request.backend].holder(
                material,
                residual_scale_bits=int(request.residual_scale_bits),
                workers=self.workers,
            )
            crypto.prepare(prepared, int(request.batch_size) or n_rows)
        except BackendError as exc:
            raise invalid(f"Start: {exc}") from None
        private, public = new_x25519()
        job = _Job(
            alignment_id=request.alignment_id,
            n_rows=n_rows,
            backend=request.backend,
            crypto=crypto,
            features=prepared,
            scaler=scaler,
            alpha=float(request.alpha),
            max_iter=int(request.max_iter),
            n_holders=int(request.n_holders),
            private=private,
            public=public,
            feature_view=request.feature_view,
            weights=np.zeros(prepared.shape[1]),
        )
        job.snapshots[0] = job.weights.copy()
        with self._lock:
            self._jobs[key] = job
        call.counts["features"] = prepared.shape[1]
        return linear_pb2.LinearStarted(n_features=prepared.shape[1], x25519_public_key=public)

    # -- 2. Peers --------------------------------------------------------------------------
    def Peers(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        with job.lock:
            if job.masks is not None:
                raise _failed("Peers: the holders of this job are already set")
            publics = [bytes(h.x25519_public_key) for h in request.holders]
            if len(publics) != job.n_holders:
                raise invalid(f"Peers: {len(publics)} holders, Start said {job.n_holders}")
            context = f"{call.caller}|{call.meta.job_id}".encode()
            try:
                masks = PairwiseMasks.agree(job.private, publics, context=context)
            except BackendError as exc:
                raise invalid(f"Peers: {exc}") from None
            job.masks = masks.derive(b"train")
            job.scoring = masks.derive(b"predict")
        call.counts["pairs"] = len(masks.pairs)
        return linear_pb2.LinearPeersAck(n_pairs=len(masks.pairs))

    # -- blobs -----------------------------------------------------------------------------
    def _put_own_blob(self, call: CallInfo, blob_id: str, data: bytes) -> None:
        """Store a result for the bank to GetBlob, through the verified blob store."""
        digest = hashlib.sha256(data).digest()
        step = max(1, self.chunk_bytes)
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]

        def chunks() -> Iterator[Any]:
            offset = 0
            for k, piece in enumerate(pieces):
                msg = common_pb2.BlobChunk(offset=offset, data=piece)
                if k == 0:
                    msg.blob_id, msg.total_size = blob_id, len(data)
                    msg.meta.CopyFrom(call.meta)
                if k == len(pieces) - 1:
                    msg.sha256 = digest
                offset += len(piece)
                yield msg

        self.blobs.receive(chunks(), owner=call.caller)

    def _drop_blob(self, call: CallInfo, blob_id: str) -> None:
        try:
            path = self.blobs.path(call.caller, call.meta.job_id, blob_id)
        except CallFailed:
            return
        path.unlink(missing_ok=True)
        path.with_name(f"{path.name}.sha256").unlink(missing_ok=True)

    # -- 3. Forward ------------------------------------------------------------------------
    def _encoded(
        self, u: np.ndarray, masks: PairwiseMasks | None, tag: bytes, what: str
    ) -> tuple[bytes, bool]:
        """Fixed point mod 2^64 plus this holder's pairwise masks for ``tag`` (if any)."""
        try:
            values = encode_contribution(u, f"{self.node_id} {what}")
        except OutOfRange as exc:
            raise CallFailed(OUT_OF_RANGE, str(exc)) from None
        masked = masks is not None and bool(masks.pairs)
        if masked:
            assert masks is not None
            values = values + masks.mask(tag, values.size)
        return values.astype("<u8").tobytes(), masked

    def _contribution(
        self, u: np.ndarray, masks: PairwiseMasks | None, tag: bytes, what: str
    ) -> Any:
        values, masked = self._encoded(u, masks, tag, what)
        return linear_pb2.LinearContribution(
            values=values, scale_bits=CONTRIBUTION_SCALE_BITS, masked=masked
        )

    def Forward(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        with job.lock:
            if job.masks is None:
                raise _failed("Forward before Peers: the holders' masks are not agreed yet")
            if not _TAG.match(request.tag):
                raise invalid(f"Forward: tag {request.tag!r} must look like b3.1, e3 or v3")
            if request.tag in job.tags:
                raise Refused("tag", f"Forward tag {request.tag} was already answered")
            rows = self._rows(request.rows, job.n_rows, request.n_rows, "Forward.rows")
            u = job.features[rows] @ job.weights
            tag = b"forward|" + request.tag.encode() + b"|" + rows_digest(request.rows)
            reply = self._contribution(u, job.masks, tag, f"Forward {request.tag}")
            job.tags.add(request.tag)
        call.counts["rows"] = int(rows.size)
        return reply

    # -- 4. Gradient -----------------------------------------------------------------------
    def Gradient(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        with job.lock:
            step = (int(request.epoch), int(request.batch))
            if not 1 <= step[0] <= job.max_iter:
                raise invalid(f"Gradient: epoch {step[0]} outside [1, {job.max_iter}]")
            if step in job.pending or step in job.done:
                raise Refused("step", f"Gradient for epoch {step[0]} batch {step[1]} was served")
            rows = self._rows(request.rows, job.n_rows, request.n_rows, "Gradient.rows")
            path = self.blobs.path(call.caller, call.meta.job_id, request.blob_id)
            payload = path.read_bytes()
            self._drop_blob(call, request.blob_id)
            try:
                masked, masks = job.crypto.masked_gradient(payload, rows)
            except BackendError as exc:
                raise invalid(f"Gradient: {exc}") from None
            pending = _Pending(rows=rows, masks=masks)
            reply = linear_pb2.LinearMaskedGradient(n_values=job.features.shape[1])
            if job.crypto.inline:
                reply.masked = masked
            else:
                pending.blob_id = f"hgrad-{step[0]}-{step[1]}"
                self._put_own_blob(call, pending.blob_id, masked)
                reply.blob_id = pending.blob_id
            job.pending[step] = pending
        call.counts["rows"] = int(rows.size)
        return reply

    # -- 5. Update -------------------------------------------------------------------------
    def Update(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        with job.lock:
            step = (int(request.epoch), int(request.batch))
            pending = job.pending.pop(step, None)
            if pending is None:
                raise _failed(f"Update: no gradient pending for epoch {step[0]} batch {step[1]}")
            if pending.blob_id:
                self._drop_blob(call, pending.blob_id)
            lr = float(request.learning_rate)
            if not (np.isfinite(lr) and lr > 0):
                raise invalid(f"Update: learning_rate must be finite and > 0, got {lr}")
            try:
                sums = job.crypto.unmask(pending.masks, request.decrypted)
            except BackendError as exc:
                raise invalid(f"Update: {exc}") from None
            grad = sums / pending.rows.size + job.alpha * job.weights
            job.weights = job.weights - lr * grad
            job.snapshots[step[0]] = job.weights.copy()
            job.done.add(step)
        return linear_pb2.LinearUpdated(n_features=job.weights.size)

    # -- 6. Finish -------------------------------------------------------------------------
    def Finish(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        key = (call.caller, call.meta.job_id)
        with job.lock:
            if request.abort:
                self._drop(key, job)
                return linear_pb2.LinearFinished(n_features=0, epoch=0)
            epoch = int(request.keep_epoch)
            if epoch not in job.snapshots:
                raise invalid(f"Finish: epoch {epoch} has no weights at {self.node_id}")
            if job.scoring is None:
                raise _failed("Finish before Peers")
            model = LinearHolderModel(
                weights=job.snapshots[epoch].copy(),
                scaler=job.scaler,
                masks=job.scoring,
                n_holders=job.n_holders,
                epoch=epoch,
                backend=job.backend,
                alignment_id=job.alignment_id,
                feature_view=job.feature_view,
            )
            path = self._model_path(call.caller, call.meta.job_id)
            if path is not None:
                write_atomic(path, json.dumps(model.to_dict()).encode("utf-8"))
            self._drop(key, job)
            with self._lock:
                self._models[key] = model
        call.counts["features"] = model.n_features
        return linear_pb2.LinearFinished(n_features=model.n_features, epoch=epoch)

    def _drop(self, key: tuple[str, str], job: _Job) -> None:
        job.crypto.close()
        job.pending.clear()
        with self._lock:
            self._jobs.pop(key, None)

    # -- 7. Predict ------------------------------------------------------------------------
    def Predict(self, request: Any, call: CallInfo) -> Any:
        model = self.model(call.caller, call.meta.job_id)
        if len(request.nonce) < 16:
            raise invalid("Predict: nonce must be at least 16 bytes")
        rows = np.asarray(request.rows, dtype=np.int64)
        features, _ = self._features(
            call.caller, request.alignment_id or model.alignment_id, model.feature_view
        )
        if features.shape[1] != model.n_features:
            raise _failed(
                f"{self.node_id}: the model was fitted on {model.n_features} features, this "
                f"alignment has {features.shape[1]} (schema drift)"
            )
        n_rows = features.shape[0]
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise invalid(f"Predict: rows must be in [0, {n_rows})")
        u = model.scaler.transform(features[rows]) @ model.weights
        raw_rows = np.asarray(request.rows, dtype="<u4").tobytes()
        tag = b"predict|" + bytes(request.nonce) + b"|" + rows_digest(raw_rows)
        call.counts["rows"] = int(rows.size)
        return self._contribution(u, model.masks, tag, "Predict")


def local_holders(
    tables: dict[str, tuple[np.ndarray, Sequence[str]]],
    workdir: Path,
    *,
    bank_id: str = "bank",
    peer_class: type[InProcessPeer] = InProcessPeer,
    workers: int | None = 1,
    min_holders: int = 1,
    max_blob_bytes: int = 1 << 31,
) -> tuple[dict[str, InProcessPeer], dict[str, LinearHolderServicer]]:
    """``{holder: (features, column names)}`` → (peers for the bank, the holders' servicers).

    Holders in this process behind the real runtime (caller and purpose checks, protobuf bytes
    on the "wire"), for tests, notebooks and benchmarks; ``peer_class`` lets a test wrap the
    carrier; model parts go to ``workdir/<holder>/models``.
    """
    from federation.transport.policy import PurposePolicy

    peers: dict[str, InProcessPeer] = {}
    servicers: dict[str, LinearHolderServicer] = {}
    for name, (features, names) in tables.items():
        servicer = LinearHolderServicer(
            node_id=name,
            features=features,
            feature_names=names,
            banks=[bank_id],
            blobs=BlobStore(Path(workdir) / name / "blobs", max_bytes=max_blob_bytes),
            workers=workers,
            models_dir=Path(workdir) / name / "models",
            min_holders=min_holders,
        )
        runtime = ServiceRuntime(servicer, node_id=name, audit=None, purposes=PurposePolicy())
        servicers[name] = servicer
        peers[name] = peer_class(runtime, self_id=bank_id, audit=None, deadline_s=3600)
    return peers, servicers


__all__ = [
    "OUT_OF_RANGE",
    "SERVICE_NAME",
    "LinearHolderModel",
    "LinearHolderServicer",
    "local_holders",
]
