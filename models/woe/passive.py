"""The data holder's half of federated WOE/IV (passive party: tax bureau, utility).

Reads top to bottom as the holder serves a job: ``Start`` → ``PutBlob`` + ``BinSums`` →
``Finish``; afterwards the holder transforms its own features to WOE values locally
(:meth:`WoeHolderServicer.transform`) for the logistic regression. The bank's half is
``active.py``; the definitions (smoothing, merging) are ``reference.py``; the protocol and the
who-learns-what table are in docs/scorecard.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from federation.blobs import BlobEndpoints, BlobStore
from federation.crypto import (
    CiphertextPacker,
    CryptoError,
    PaillierEngine,
    PublicParams,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    encrypted_bin_sums,
    public_params_from_bytes,
)
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
from models.binning import MISSING_BIN, BinningError, QuantileBinner
from models.secureboost.reference import MaskError, mask_from_bytes
from models.woe.reference import MIN_BIN_SAMPLES, WoeError, iv_strength, merge_small_bins
from protos import woe_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = "WoeHolder"

FeaturesFor = Callable[[str, str], tuple[np.ndarray, Sequence[str]]]
"""``features_for(bank, alignment_id) -> (values, names)``: the holder's features for the rows
of one alignment, in its common order (NaN = missing); as in SecureBoost's holder."""

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def label_slot_bits(n_rows: int) -> int:
    """Slot width for packed label sums: a bin's bad count is at most ``n_rows``."""
    return max(1, int(n_rows).bit_length())


def name_hash(key: bytes, name: str) -> str:
    """Keyed hash of a column name, as ``parties.summary`` reports columns (HMAC-SHA256, 16 hex)."""
    return hmac.new(key, name.encode(), hashlib.sha256).hexdigest()[:16]


def _failed(detail: str) -> CallFailed:
    return CallFailed(FAILED_PRECONDITION, detail)


@dataclass
class HolderFeatureWoe:
    """A holder's WOE table for one of its columns: ``bin_map`` maps its own ``QuantileBinner``
    bins to WOE bins; ``counts`` are rows per WOE bin (the holder never learns goods/bads as
    such, but can derive bin bad rates from ``woe`` and ``counts`` — see docs/scorecard.md)."""

    feature: int
    name: str
    bin_map: np.ndarray
    woe: np.ndarray
    iv: float
    counts: np.ndarray

    @property
    def strength(self) -> str:
        return iv_strength(self.iv)

    def transform(self, bins: Any) -> np.ndarray:
        return np.asarray(self.woe[self.bin_map[np.asarray(bins, dtype=np.int64)]])

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "name": self.name,
            "bin_map": self.bin_map.tolist(),
            "woe": [float(v) for v in self.woe],
            "iv": float(self.iv),
            "counts": self.counts.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HolderFeatureWoe:
        return cls(
            feature=int(data["feature"]),
            name=str(data["name"]),
            bin_map=np.asarray(data["bin_map"], dtype=np.int64),
            woe=np.asarray(data["woe"], dtype=np.float64),
            iv=float(data["iv"]),
            counts=np.asarray(data["counts"], dtype=np.int64),
        )


@dataclass
class HolderWoeModel:
    """The holder's own result of a WOE job: its bins (edges are data values: keep it here) and
    one WOE table per column, in its column order."""

    binner: QuantileBinner
    features: list[HolderFeatureWoe]
    alignment_id: str = ""
    min_bin_samples: int = MIN_BIN_SAMPLES

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def transform(self, values: Any) -> np.ndarray:
        """Raw feature values (rows, features; NaN = missing) → WOE values."""
        bins = self.binner.transform(np.asarray(values, dtype=np.float64))
        return np.column_stack([f.transform(bins[:, j]) for j, f in enumerate(self.features)])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "xinyidai.woe.holder/1",
            "binner": self.binner.to_dict(),
            "features": [f.to_dict() for f in self.features],
            "alignment_id": self.alignment_id,
            "min_bin_samples": self.min_bin_samples,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HolderWoeModel:
        try:
            if data.get("format") != "xinyidai.woe.holder/1":
                raise ValueError(f"format {data.get('format')!r}")
            model = cls(
                binner=QuantileBinner.from_dict(data["binner"]),
                features=[HolderFeatureWoe.from_dict(f) for f in data["features"]],
                alignment_id=str(data.get("alignment_id", "")),
                min_bin_samples=int(data.get("min_bin_samples", MIN_BIN_SAMPLES)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise WoeError(f"not a saved holder WOE model: {exc}") from None
        if len(model.features) != model.binner.n_features_in_:
            raise WoeError("saved holder WOE model: tables and binned features differ in number")
        return model


@dataclass
class _Job:
    alignment_id: str
    n_rows: int
    params: PublicParams
    engine: PaillierEngine
    binner: QuantileBinner
    names: list[str]
    small_maps: list[np.ndarray]  # per feature: binner bin → sent bin
    sent_bins: np.ndarray  # (n_rows, n_features) int64
    sent_n_bins: np.ndarray
    counts: list[np.ndarray]  # per feature: rows per sent bin
    min_bin_samples: int
    sums_sent: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class WoeHolderServicer(BlobEndpoints):
    """``xinyidai.v1.WoeHolder`` for one data holder.

    All state is scoped by (calling bank, job id). Protocol, from the holder's side:

    1. ``Start``: verify the public parameters (``hs`` recomputed from the seed), check the row
       count and that the job's ``min_bin_samples`` is at least this holder's policy, refuse a
       row set that differs from an earlier job's on the same alignment by fewer than
       ``min_bin_samples`` rows (two such jobs' counts would pin those rows' bins down); bin the
       features locally (``QuantileBinner``; edges stay here) and merge every bin with fewer
       than ``min_bin_samples`` rows into a neighbour (``merge_small_bins``) — a bin of one row
       would hand that row's label's bin to the bank. Reply per feature: index, keyed name hash,
       number of bins.
    2. ``PutBlob`` + ``BinSums`` (once per job): take one ciphertext of the label per row; per
       (feature, bin) multiply the ciphertexts of the bin's rows (``encrypted_bin_sums``: the
       encrypted bad count), pack several sums per ciphertext (``CiphertextPacker``),
       **re-randomise every returned ciphertext** (textbook: unlinkable even for the key
       holder), and return them with the plaintext row count of every bin.
    3. ``Finish``: take the bank's merge map (sent bin → WOE bin; only adjacent value bins
       merged, missing kept apart) and the WOE value of every WOE bin; keep them, composed with
       the local bins, as :class:`HolderWoeModel` (persisted under ``models_dir``, 0600) — or,
       with ``abort``, drop the job.

    Afterwards :meth:`transform` maps the holder's rows to WOE values locally for the LR.

    Sees: the public key, the job's rows and policy, the merge maps and WOE values of its own
    bins (hence each bin's bad rate and the overall bad rate of the rows). Never sees: any
    individual label (only ciphertexts), the bank's or another holder's features.

    ``features``/``feature_names`` (one fixed alignment) or ``features_for`` (per job, see
    ``FeaturesFor``) exactly as ``SecureBoostHolderServicer``; column names stay here: the bank
    gets indices and, with ``column_key`` (the node's column-hashing secret), keyed hashes.
    ``min_bin_samples`` is this holder's policy; ``workers`` the Paillier process count.
    """

    service = woe_pb2.DESCRIPTOR.services_by_name[SERVICE_NAME]

    def __init__(
        self,
        *,
        node_id: str,
        features: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
        features_for: FeaturesFor | None = None,
        banks: Iterable[str],
        blobs: BlobStore,
        min_bin_samples: int = MIN_BIN_SAMPLES,
        workers: int | None = 1,
        chunk_bytes: int = 1 << 20,
        models_dir: Path | None = None,
        column_key: bytes | None = None,
    ):
        self.node_id = node_id
        self.features: np.ndarray | None = None
        if (features is None) == (features_for is None):
            raise ValueError("give either features (with feature_names) or features_for")
        if int(min_bin_samples) < 1:
            raise ValueError(f"min_bin_samples must be >= 1, got {min_bin_samples}")
        if features is not None:
            names = [str(n) for n in feature_names or []]
            arr = self._checked(features, names)
            self.features = arr

            def fixed(bank: str, alignment_id: str) -> tuple[np.ndarray, Sequence[str]]:
                return arr, names

            features_for = fixed
        assert features_for is not None
        self.features_for: FeaturesFor = features_for
        self.banks = frozenset(banks)
        self.blobs = blobs
        self.min_bin_samples = int(min_bin_samples)
        self.workers = workers
        self.chunk_bytes = chunk_bytes
        self.models_dir = models_dir
        self.column_key = column_key
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._models: dict[tuple[str, str], HolderWoeModel] = {}
        self._row_sets: dict[tuple[str, str], list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def _checked(self, features: Any, names: Sequence[str]) -> np.ndarray:
        arr = np.asarray(features, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise BinningError(
                f"holder '{self.node_id}': features must be (rows, {len(names)}) for the "
                f"given names, got shape {arr.shape}"
            )
        return arr

    def _features(self, bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
        values, names = self.features_for(bank, alignment_id)
        return self._checked(values, names), [str(n) for n in names]

    # -- policy and bookkeeping ------------------------------------------------------------
    def authorise_caller(self, caller: str, method: str) -> None:
        if caller not in self.banks:
            raise Refused(
                "caller",
                f"'{caller}' is not a bank this holder computes WOE for "
                f"(policy lists: {', '.join(sorted(self.banks)) or 'none'})",
            )

    def _job(self, call: CallInfo) -> _Job:
        with self._lock:
            job = self._jobs.get((call.caller, call.meta.job_id))
        if job is None:
            raise _failed(f"no open WOE job '{call.meta.job_id}' from {call.caller}")
        return job

    def open_jobs(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._jobs)

    def _model_path(self, bank: str, job_id: str) -> Path | None:
        if self.models_dir is None or not _SAFE_NAME.match(bank) or not _SAFE_NAME.match(job_id):
            return None
        return self.models_dir / bank / f"{job_id}.woe.json"

    def woe_model(self, bank: str, job_id: str) -> HolderWoeModel:
        """This holder's WOE tables of a finished job (read back from ``models_dir`` if needed)."""
        with self._lock:
            found = self._models.get((bank, job_id))
        if found is None:
            path = self._model_path(bank, job_id)
            if path is not None and path.exists():
                found = HolderWoeModel.from_dict(json.loads(path.read_text(encoding="utf-8")))
                with self._lock:
                    self._models[(bank, job_id)] = found
        if found is None:
            raise _failed(f"no finished WOE job '{job_id}' for {bank} at {self.node_id}")
        return found

    def load_model(self, bank: str, job_id: str, model: HolderWoeModel) -> None:
        """Serve a saved WOE model (``HolderWoeModel.from_dict``), e.g. on a scoring node."""
        if self.features is not None and model.binner.n_features_in_ != self.features.shape[1]:
            raise BinningError(
                f"holder '{self.node_id}': the WOE model was binned on "
                f"{model.binner.n_features_in_} features, this node has {self.features.shape[1]}"
            )
        with self._lock:
            self._models[(bank, job_id)] = model

    def transform(
        self,
        bank: str,
        job_id: str,
        values: np.ndarray | None = None,
        *,
        alignment_id: str | None = None,
        rows: np.ndarray | None = None,
    ) -> np.ndarray:
        """WOE values of this holder's features, computed here (they never leave the holder).

        ``values`` (rows, features) if given; else the features of ``alignment_id`` (default:
        the job's) restricted to ``rows`` (a boolean mask or row indices; default all).
        """
        model = self.woe_model(bank, job_id)
        if values is None:
            values, _ = self._features(
                bank, model.alignment_id if alignment_id is None else alignment_id
            )
            if rows is not None:
                values = values[np.asarray(rows)]
        return model.transform(values)

    def _mask(self, buf: bytes, n_rows: int, what: str) -> np.ndarray:
        try:
            return mask_from_bytes(buf, n_rows, what)
        except MaskError as exc:
            raise invalid(str(exc)) from None

    def _check_row_set(self, key: tuple[str, str], mask: np.ndarray, min_rows: int) -> None:
        """Two jobs whose row sets differ in a few rows would reveal those rows' bins."""
        with self._lock:
            previous = list(self._row_sets.get(key, []))
        for prev in previous:
            if prev.size != mask.size:
                continue
            diff = int(np.count_nonzero(prev ^ mask))
            if 0 < diff < min_rows:
                raise Refused(
                    "row_set",
                    f"the job's rows differ from an earlier WOE job's on the same alignment in "
                    f"{diff} rows; {self.node_id} requires 0 or at least {min_rows} "
                    "(else the two jobs' bin counts would reveal those rows' bins)",
                )

    # -- 1. Start --------------------------------------------------------------------------
    def Start(self, request: Any, call: CallInfo) -> Any:
        key = (call.caller, call.meta.job_id)
        if not call.meta.job_id:
            raise invalid("Start: meta.job_id is required (it scopes all of the job's state)")
        with self._lock:
            if key in self._jobs or key in self._models:
                raise _failed(f"job '{call.meta.job_id}' already exists at {self.node_id}")
        features, names = self._features(call.caller, request.alignment_id)
        selected = np.ones(features.shape[0], dtype=bool)
        if request.rows:
            selected = self._mask(request.rows, features.shape[0], "Start.rows")
            features = features[selected]
        n_rows = features.shape[0]
        if request.n_rows != n_rows:
            raise invalid(f"the bank has {request.n_rows} rows, this holder has {n_rows}")
        min_bin = int(request.min_bin_samples)
        if min_bin < self.min_bin_samples:
            raise Refused(
                "min_bin_samples",
                f"the job asks bins down to {min_bin} samples; this holder's policy is at "
                f"least {self.min_bin_samples}",
            )
        if not 2 <= request.max_bin <= 255:
            raise invalid(f"max_bin must be in [2, 255], got {request.max_bin}")
        try:
            params = public_params_from_bytes(request.paillier_params)
        except CryptoError as exc:
            raise invalid(f"Start: {exc}") from None
        row_key = (call.caller, request.alignment_id)
        self._check_row_set(row_key, selected, min_bin)
        binner = QuantileBinner(max_bin=int(request.max_bin))
        try:
            bins = binner.fit_transform(features, feature_names=names)
        except BinningError as exc:
            log.error("%s: WOE job %s: %s", self.node_id, call.meta.job_id, exc)
            where = "a feature" if exc.index is None else f"feature #{exc.index}"
            raise _failed(
                f"{self.node_id} cannot bin {where} of {len(names)}: {exc.reason} "
                f"(the column name is in {self.node_id}'s log)"
            ) from None
        small_maps, counts = [], []
        sent = np.empty(bins.shape, dtype=np.int64)
        for j in range(bins.shape[1]):
            raw = np.bincount(bins[:, j], minlength=int(binner.n_bins_[j]))
            small = merge_small_bins(raw, min_bin)
            small_maps.append(small)
            sent[:, j] = small[bins[:, j]]
            counts.append(np.bincount(sent[:, j], minlength=int(small.max()) + 1))
        sent_n_bins = np.array([c.size for c in counts], dtype=np.int64)
        job = _Job(
            alignment_id=request.alignment_id,
            n_rows=n_rows,
            params=params,
            engine=PaillierEngine(params, workers=self.workers),
            binner=binner,
            names=names,
            small_maps=small_maps,
            sent_bins=sent,
            sent_n_bins=sent_n_bins,
            counts=counts,
            min_bin_samples=min_bin,
        )
        with self._lock:
            self._jobs[key] = job
            self._row_sets.setdefault(row_key, []).append(selected)
        reply = woe_pb2.WoeStarted()
        for j, name in enumerate(names):
            hashed = name_hash(self.column_key, name) if self.column_key else ""
            reply.features.add(feature=j, name_hash=hashed, n_bins=int(sent_n_bins[j]))
        call.counts["features"] = len(names)
        call.counts["rows"] = n_rows
        return reply

    # -- blobs -----------------------------------------------------------------------------
    # -- 2. BinSums ------------------------------------------------------------------------
    def BinSums(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        with job.lock:
            if job.sums_sent:
                raise _failed(
                    "BinSums was already answered for this job (one label vector per job)"
                )
            if request.n_ciphertexts != job.n_rows:
                raise invalid(
                    f"n_ciphertexts is {request.n_ciphertexts}, the job has {job.n_rows} rows"
                )
            path = self.blobs.path(call.caller, call.meta.job_id, request.blob_id)
            try:
                cts = ciphertexts_from_bytes(path.read_bytes(), job.params)
            except CryptoError as exc:
                raise invalid(f"blob {request.blob_id}: {exc}") from None
            if len(cts) != job.n_rows:
                raise invalid(
                    f"blob {request.blob_id} holds {len(cts)} ciphertexts for {job.n_rows} rows"
                )
            sums = encrypted_bin_sums(
                cts,
                job.sent_bins,
                np.arange(job.n_rows),
                int(job.sent_n_bins.max()),
                job.params,
                engine=job.engine,
            )
            flat = [c for f, row in enumerate(sums) for c in row[: int(job.sent_n_bins[f])]]
            slot_bits = label_slot_bits(job.n_rows)
            packer = CiphertextPacker(slot_bits=slot_bits, key_bits=job.params.key_bits)
            packed = packer.pack(flat, job.params, engine=job.engine)
            fresh = job.engine.rerandomise(packed, obfuscation="textbook")
            reply = woe_pb2.WoeBinSums(
                pack_slot_bits=slot_bits, ciphertexts=ciphertexts_to_bytes(fresh, job.params)
            )
            for f, counts in enumerate(job.counts):
                reply.features.add(feature=f, counts=counts.tolist())
            job.sums_sent = True
        call.counts["ciphertexts_in"] = len(cts)
        call.counts["ciphertexts_out"] = len(fresh)
        return reply

    # -- 3. Finish -------------------------------------------------------------------------
    def _result(self, job: _Job, item: Any) -> HolderFeatureWoe:
        f = int(item.feature)
        bin_map = np.asarray(item.bin_map, dtype=np.int64)
        woe = np.asarray(item.woe, dtype=np.float64)
        where = f"Finish: feature #{f}"
        if bin_map.size != int(job.sent_n_bins[f]):
            raise invalid(
                f"{where}: bin_map has {bin_map.size} entries for {job.sent_n_bins[f]} bins"
            )
        steps = np.diff(bin_map[1:])
        if (
            bin_map[MISSING_BIN] != 0
            or (bin_map.size > 1 and bin_map[1] != 1)
            or ((steps != 0) & (steps != 1)).any()
        ):
            raise invalid(
                f"{where}: bin_map must keep bin 0 and merge only adjacent value bins onto 1..k"
            )
        if woe.size != int(bin_map.max()) + 1 or not np.isfinite(woe).all():
            raise invalid(f"{where}: need one finite WOE per merged bin ({int(bin_map.max()) + 1})")
        counts = np.bincount(bin_map, weights=job.counts[f], minlength=woe.size).astype(np.int64)
        return HolderFeatureWoe(
            feature=f,
            name=job.names[f],
            bin_map=bin_map[job.small_maps[f]],
            woe=woe,
            iv=float(item.iv),
            counts=counts,
        )

    def Finish(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        key = (call.caller, call.meta.job_id)
        with job.lock:
            if request.abort:
                self._drop(key, job)
                return woe_pb2.WoeFinished(n_features=0)
            if not job.sums_sent:
                raise _failed("Finish before BinSums: there is nothing to keep")
            got = sorted(int(item.feature) for item in request.features)
            if got != list(range(len(job.names))):
                raise invalid(f"Finish: need one result per feature 0..{len(job.names) - 1}")
            tables = sorted(
                (self._result(job, item) for item in request.features), key=lambda t: t.feature
            )
            model = HolderWoeModel(
                binner=job.binner,
                features=tables,
                alignment_id=job.alignment_id,
                min_bin_samples=job.min_bin_samples,
            )
            path = self._model_path(*key)
            if path is not None:
                write_atomic(path, json.dumps(model.to_dict()).encode("utf-8"))
            self._drop(key, job)
            with self._lock:
                self._models[key] = model
        call.counts["features"] = len(tables)
        return woe_pb2.WoeFinished(n_features=len(tables))

    def _drop(self, key: tuple[str, str], job: _Job) -> None:
        job.engine.close()
        with self._lock:
            self._jobs.pop(key, None)


def local_woe_holders(
    tables: dict[str, tuple[np.ndarray, Sequence[str]]],
    workdir: Path,
    *,
    bank_id: str = "bank",
    min_bin_samples: int = MIN_BIN_SAMPLES,
    peer_class: type[InProcessPeer] = InProcessPeer,
    max_blob_bytes: int = 1 << 30,
    workers: int | None = 1,
    column_key: bytes | None = None,
    models_dir: Path | None = None,
) -> tuple[dict[str, InProcessPeer], dict[str, WoeHolderServicer]]:
    """``{holder: (features, column names)}`` → (peers for the bank, the holders' servicers),
    in this process behind the real runtime (tests, notebooks); as SecureBoost's ``local``."""
    from federation.transport.policy import PurposePolicy

    peers: dict[str, InProcessPeer] = {}
    servicers: dict[str, WoeHolderServicer] = {}
    for name, (features, names) in tables.items():
        servicer = WoeHolderServicer(
            node_id=name,
            features=features,
            feature_names=names,
            banks=[bank_id],
            blobs=BlobStore(Path(workdir) / name / "blobs", max_bytes=max_blob_bytes),
            min_bin_samples=min_bin_samples,
            workers=workers,
            column_key=column_key,
            models_dir=None if models_dir is None else Path(models_dir) / name,
        )
        runtime = ServiceRuntime(servicer, node_id=name, audit=None, purposes=PurposePolicy())
        servicers[name] = servicer
        peers[name] = peer_class(runtime, self_id=bank_id, audit=None, deadline_s=600)
    return peers, servicers


__all__ = [
    "SERVICE_NAME",
    "HolderFeatureWoe",
    "HolderWoeModel",
    "WoeHolderServicer",
    "label_slot_bits",
    "local_woe_holders",
    "name_hash",
]
