"""The data holder's half of vertical logistic regression (passive party: tax bureau, utility).

Reads top to bottom as the holder serves a job: ``Start`` → ``Peers`` → per batch
(``Forward``, ``PutBlob`` + ``Gradient``, ``Update``) and per epoch ``Forward`` on the
training (and validation) rows → ``Finish``; later ``Predict``. The bank's half is
``active.py``; the optimiser is ``reference.py``; the crypto is ``backends.py``; what the holder
keeps is ``holder_state.py``; protocol and who learns what: docs/linear.md. Policy, rows, jobs
and model files come from ``models.base.HolderModule``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from federation.blobs import BlobEndpoints, BlobStore
from federation.errors import Refused
from federation.transport.base import CallFailed, CallInfo, invalid
from federation.transport.inproc import InProcessPeer
from models.base import FeaturesFor, HolderModule, Rows, failed
from models.limits import HolderLimits
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
from models.linear.holder_state import LinearHolderModel, LinearJob, Pending
from models.linear.reference import (
    ConstantFeatureError,
    LinearError,
    OutOfRange,
    Standardizer,
)
from models.local import HolderArgs
from models.local import local_holders as _local_holders
from protos import common_pb2
from protos import linear_pb2 as pb

__all__ = ["OUT_OF_RANGE", "SERVICE_NAME", "LinearHolderServicer", "local_holders"]

log = logging.getLogger(__name__)

TABLE_CACHE = 4
"""(bank, alignment, view) tables a holder keeps for scoring."""
SERVICE_NAME = "LinearHolder"
OUT_OF_RANGE = "OUT_OF_RANGE"
"""Status of a Forward/Predict whose linear predictor left the fixed-point range: the bank
treats it as divergence of training."""

_TAG = re.compile(r"^[bev][0-9]{1,6}(\.[0-9]{1,7})?$")


class LinearHolderServicer(HolderModule[LinearJob, LinearHolderModel], BlobEndpoints):
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
       the bank's nonce and the rows), behind the holder gate (``HolderModule.gate``).

    A job may name a feature view (``LinearStart.feature_view``, e.g. "woe:<job>:0,2": the
    holder's own WOE values of a scorecard); ``features_for`` resolves it here, and the model
    part remembers it for ``Predict``. Scorecard points: ``models.scorecard.passive``.

    Sees: the public key material and hyperparameters, which rows form each batch (and, by
    elimination, the validation rows), its own gradients X_kᵀ r / m (inherent to updating its
    own weights), the learning rate of each step. Never sees: labels, residuals or
    predictions (only ciphertexts), the bank's or another holder's features or weights.

    ``features``/``feature_names`` or ``features_for`` as for ``models.base.HolderModule``
    (a job names its alignment and rows in ``Start``); ``models_dir``: where model parts are
    written (``<models_dir>/<bank>/<job>.json``, mode 0600) and read back after a restart;
    ``min_holders``: this holder's policy — it refuses jobs with fewer holders (2 keeps its
    linear predictor hidden from the bank); ``workers``: Paillier process count.
    """

    service = pb.DESCRIPTOR.services_by_name[SERVICE_NAME]
    protocol = "linear"
    model_file = "linear-{job}.json"
    feature_error = LinearError

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
        min_holders: int | None = None,
        limits: HolderLimits | None = None,
    ):
        super().__init__(
            node_id=node_id,
            banks=banks,
            models_dir=models_dir,
            features=features,
            feature_names=feature_names,
            features_for=features_for,
            limits=limits,
        )
        self.blobs = blobs
        self.chunk_bytes = chunk_bytes
        self.workers = workers
        # None: the policy's (node.yaml ``policy.min_holders``)
        self.min_holders = self.limits.min_holders if min_holders is None else int(min_holders)

    # -- HolderModule hooks ----------------------------------------------------------------
    def _decode_model(self, data: dict[str, Any]) -> LinearHolderModel:
        return LinearHolderModel.from_dict(data)

    def _read_table(self, bank: str, alignment_id: str, view: str) -> tuple[np.ndarray, list[str]]:
        """The alignment's rows of ``view``, kept for the last few (``HolderModule._cached_table``)."""
        return self._cached_table(
            (bank, alignment_id, view),
            lambda: super(LinearHolderServicer, self)._read_table(bank, alignment_id, view),
            keep=TABLE_CACHE,
        )

    def _rows(self, buf: bytes, n_rows: int, count: int, what: str) -> np.ndarray:
        """Row positions of a batch mask, which must name exactly ``count`` rows."""
        rows = np.flatnonzero(self.row_mask(buf, n_rows, what))
        if rows.size != count or rows.size == 0:
            raise invalid(f"{what}: {rows.size} rows set, the request says {count}")
        return rows

    # -- 1. Start --------------------------------------------------------------------------
    def Start(self, request: pb.LinearStart, call: CallInfo) -> pb.LinearStarted:
        key = self.check_job_id(call)
        if self.peek_job(call) is not None or self.has_model(key, stored=False):
            raise failed(f"job '{call.meta.job_id}' already exists at {self.node_id}")
        self._check_start(request)
        self._check_limits(request, call)  # before a row is read or the key parsed
        rows = self.training_rows(
            call, alignment_id=request.alignment_id, rows=request.rows, view=request.feature_view
        )
        n_rows = rows.values.shape[0]
        if request.n_rows != n_rows:
            raise invalid(f"the bank has {request.n_rows} rows, this holder {n_rows}")
        scaler = self._scaler(call, rows, request.standardize)
        prepared = scaler.transform(rows.values)
        crypto = self._holder_crypto(call, request, prepared, n_rows)
        private, public = new_x25519()
        job = LinearJob(
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
        self.open_job(call, job)
        call.counts["features"] = prepared.shape[1]
        return pb.LinearStarted(n_features=prepared.shape[1], x25519_public_key=public)

    def _check_start(self, request: pb.LinearStart) -> None:
        """The job's terms and this holder's policy, before any row is read."""
        if request.backend not in BACKENDS:
            raise invalid(f"Start: unknown backend {request.backend!r} ({sorted(BACKENDS)})")
        if request.n_holders < 1:
            raise invalid("Start: n_holders must be >= 1")
        if request.n_holders < self.min_holders:
            raise Refused(
                "min_holders",
                f"holder policy min_holders = {self.min_holders}: the job has "
                f"{request.n_holders} holder(s); {self.node_id} takes part only with at least "
                f"{self.min_holders} (so its linear predictor stays masked)",
            )
        if not (np.isfinite(request.alpha) and request.alpha >= 0) or request.max_iter < 1:
            raise invalid("Start: alpha must be finite and >= 0, max_iter >= 1")

    def _check_limits(self, request: pb.LinearStart, call: CallInfo) -> None:
        """The policy limits (``models.limits``): the bank's Paillier modulus, read from the
        header of its key blob before the key is parsed or verified, then the daily job count."""
        if request.backend == "paillier":
            path = self.blobs.path(call.caller, call.meta.job_id, request.public_key_blob)
            with path.open("rb") as blob:
                header = blob.read(64)  # the header names the modulus size
            try:
                self.limits.check_paillier(header)
            except Refused:
                self._drop_blob(call, request.public_key_blob)  # a refused key is not kept
                raise
        self.limits.admit_job(
            node=self.node_id,
            protocol=self.protocol,
            bank=call.caller,
            alignment_id=request.alignment_id,
        )

    def _scaler(self, call: CallInfo, rows: Rows, standardize: bool) -> Standardizer:
        try:
            return Standardizer.fit(rows.values, standardize=standardize)
        except ConstantFeatureError as exc:
            names = rows.names
            index = exc.index if exc.index is not None else -1
            # Column names stay at the holder: the bank hears the index, the log has the name.
            log.error(
                "%s: linear job %s: column '%s': %s",
                self.node_id,
                call.meta.job_id,
                names[index] if 0 <= index < len(names) else "?",
                exc,
            )
            raise failed(
                f"{self.node_id}: feature #{index} of {len(names)} is constant or empty on the "
                f"job's rows (the column name is in {self.node_id}'s log)"
            ) from None

    def _holder_crypto(
        self, call: CallInfo, request: pb.LinearStart, prepared: np.ndarray, n_rows: int
    ) -> HolderCrypto:
        """The job's public key material (a blob the bank sent), ready for its batches."""
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
        return crypto

    # -- 2. Peers --------------------------------------------------------------------------
    def Peers(self, request: pb.LinearPeers, call: CallInfo) -> pb.LinearPeersAck:
        job = self.job(call)
        with job.lock:
            if job.masks is not None:
                raise failed("Peers: the holders of this job are already set")
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
        return pb.LinearPeersAck(n_pairs=len(masks.pairs))

    # -- blobs -----------------------------------------------------------------------------
    def _put_own_blob(self, call: CallInfo, blob_id: str, data: bytes) -> None:
        """Store a result for the bank to GetBlob, through the verified blob store."""
        digest = hashlib.sha256(data).digest()
        step = max(1, self.chunk_bytes)
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]

        def chunks() -> Iterator[common_pb2.BlobChunk]:
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
        if masks is not None and masked:
            values = values + masks.mask(tag, values.size)
        return values.astype("<u8").tobytes(), masked

    def _contribution(
        self, u: np.ndarray, masks: PairwiseMasks | None, tag: bytes, what: str
    ) -> pb.LinearContribution:
        values, masked = self._encoded(u, masks, tag, what)
        return pb.LinearContribution(
            values=values, scale_bits=CONTRIBUTION_SCALE_BITS, masked=masked
        )

    def Forward(self, request: pb.LinearForward, call: CallInfo) -> pb.LinearContribution:
        job = self.job(call)
        with job.lock:
            if job.masks is None:
                raise failed("Forward before Peers: the holders' masks are not agreed yet")
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
    def Gradient(self, request: pb.LinearGradient, call: CallInfo) -> pb.LinearMaskedGradient:
        job = self.job(call)
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
            pending = Pending(rows=rows, masks=masks)
            reply = pb.LinearMaskedGradient(n_values=job.features.shape[1])
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
    def Update(self, request: pb.LinearUpdate, call: CallInfo) -> pb.LinearUpdated:
        job = self.job(call)
        with job.lock:
            step = (int(request.epoch), int(request.batch))
            pending = job.pending.pop(step, None)
            if pending is None:
                raise failed(f"Update: no gradient pending for epoch {step[0]} batch {step[1]}")
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
        return pb.LinearUpdated(n_features=job.weights.size)

    # -- 6. Finish -------------------------------------------------------------------------
    def Finish(self, request: pb.LinearFinish, call: CallInfo) -> pb.LinearFinished:
        job = self.job(call)
        with job.lock:
            if request.abort:
                self.drop_job(call, job)
                return pb.LinearFinished(n_features=0, epoch=0)
            epoch = int(request.keep_epoch)
            if epoch not in job.snapshots:
                raise invalid(f"Finish: epoch {epoch} has no weights at {self.node_id}")
            if job.scoring is None:
                raise failed("Finish before Peers")
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
            self.keep_model(call, model)
            self.drop_job(call, job)
        call.counts["features"] = model.n_features
        return pb.LinearFinished(n_features=model.n_features, epoch=epoch)

    # -- 7. Predict ------------------------------------------------------------------------
    def _view_categories(self, bank: str, view: str) -> list[str]:
        """The data categories a ``woe:`` view reads, when the feature source can say
        (``parties.holder.views.FeatureViews``); else none — the gate then takes every
        category this holder holds (an LR on the plain table reads all its columns)."""
        categories = getattr(self.features_for, "categories", None)
        if not view or categories is None:
            return []
        return [str(c) for c in categories(bank, view)]

    def Predict(self, request: pb.LinearPredictRequest, call: CallInfo) -> pb.LinearContribution:
        model = self.model(call.caller, call.meta.job_id)
        if len(request.nonce) < 16:
            raise invalid("Predict: nonce must be at least 16 bytes")
        rows = self.rows_for(
            call,
            alignment_id=request.alignment_id or model.alignment_id,
            rows=request.rows,
            view=model.feature_view,
            what="Predict",
            categories=self._view_categories(call.caller, model.feature_view),
        )
        call.counts["rows"] = int(rows.positions.size)
        values, masked = self._masked_predictor(model, rows.values, request.nonce, request.rows)
        return pb.LinearContribution(
            values=values, scale_bits=CONTRIBUTION_SCALE_BITS, masked=masked
        )

    def _masked_predictor(
        self, model: LinearHolderModel, values: np.ndarray, nonce: bytes, rows: Sequence[int]
    ) -> tuple[bytes, bool]:
        """``Predict``'s answer for feature rows ``values`` (the request's ``rows``, ``nonce``)."""
        if values.shape[1] != model.n_features:
            raise failed(
                f"{self.node_id}: the model was fitted on {model.n_features} features, this "
                f"alignment has {values.shape[1]} (schema drift)"
            )
        u = model.scaler.transform(values) @ model.weights
        raw_rows = np.asarray(rows, dtype="<u4").tobytes()
        tag = b"predict|" + bytes(nonce) + b"|" + rows_digest(raw_rows)
        return self._encoded(u, model.masks, tag, "Predict")

    def gated_predictor(
        self,
        bank: str,
        model: LinearHolderModel,
        *,
        alignment_id: str,
        positions: np.ndarray,
        nonce: bytes,
        rows: Sequence[int],
    ) -> tuple[bytes, bool]:
        """``Predict``'s answer for rows that already passed the holder gate in the same request
        (``ScorecardHolder.ScorePoints`` with ``with_predictor``: same rows, same categories),
        so a served scorecard asks each holder once; the caller records the enterprises."""
        table, _ = self._read_table(bank, alignment_id, model.feature_view)
        return self._masked_predictor(model, table[positions], nonce, rows)


def local_holders(
    tables: dict[str, tuple[np.ndarray, Sequence[str]]],
    workdir: Path,
    *,
    bank_id: str = "bank",
    peer_class: type[InProcessPeer] = InProcessPeer,
    workers: int | None = 1,
    min_holders: int | None = None,
    max_blob_bytes: int = 1 << 31,
    limits: HolderLimits | None = None,
) -> tuple[dict[str, InProcessPeer], dict[str, LinearHolderServicer]]:
    """LR holders in this process (``models.local.local_holders``); model parts go to
    ``workdir/<holder>/models``."""

    def make(args: HolderArgs, home: Path) -> LinearHolderServicer:
        return LinearHolderServicer(
            **args,
            workers=workers,
            models_dir=home / "models",
            min_holders=min_holders,
            limits=limits,
        )

    return _local_holders(
        make,
        tables,
        workdir,
        bank_id=bank_id,
        peer_class=peer_class,
        max_blob_bytes=max_blob_bytes,
        deadline_s=3600,
    )
