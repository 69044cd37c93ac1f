"""The data holder's half of federated WOE/IV (passive party: tax bureau, utility).

Reads top to bottom as the holder serves a job: ``Start`` → ``PutBlob`` + ``BinSums`` →
``Finish``; afterwards the holder transforms its own features to WOE values locally
(:meth:`WoeHolderServicer.transform`) for the logistic regression. The bank's half is
``active.py``; the definitions (smoothing, merging) are ``reference.py``; what the holder keeps
is ``holder_state.py``; the protocol and the who-learns-what table are in docs/scorecard.md.
Policy, rows, jobs and model files come from ``models.base.HolderModule``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from federation.blobs import BlobEndpoints, BlobStore
from federation.crypto import (
    CiphertextPacker,
    CryptoError,
    PaillierEngine,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    encrypted_bin_sums,
    public_params_from_bytes,
)
from federation.errors import Refused
from federation.transport.base import CallInfo, invalid
from federation.transport.inproc import InProcessPeer
from models.base import FeaturesFor, HolderModule, JobKey, Rows, failed
from models.binning import MISSING_BIN, QuantileBinner
from models.limits import HolderLimits
from models.local import HolderArgs, local_holders
from models.woe.holder_state import HolderFeatureWoe, HolderWoeModel, WoeJob
from models.woe.reference import MIN_BIN_SAMPLES, merge_small_bins, merge_small_categories
from protos import woe_pb2 as pb

__all__ = [
    "SERVICE_NAME",
    "WoeHolderServicer",
    "label_slot_bits",
    "local_woe_holders",
    "name_hash",
]

log = logging.getLogger(__name__)

SERVICE_NAME = "WoeHolder"


def label_slot_bits(n_rows: int) -> int:
    """Slot width for packed label sums: a bin's bad count is at most ``n_rows``."""
    return max(1, int(n_rows).bit_length())


def name_hash(key: bytes, name: str) -> str:
    """Keyed hash of a column name, as ``parties.summary`` reports columns (HMAC-SHA256, 16 hex)."""
    return hmac.new(key, name.encode(), hashlib.sha256).hexdigest()[:16]


class WoeHolderServicer(HolderModule[WoeJob, HolderWoeModel], BlobEndpoints):
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
    ``FeaturesFor``) as ``models.base.HolderModule``; column names stay here: the bank
    gets indices and, with ``column_key`` (the node's column-hashing secret), keyed hashes —
    or, for a column in ``aliases``, the alias the node publishes for it (stable across runs,
    e.g. ``tax:f03``; ``parties.summary.feature_aliases``).
    ``min_bin_samples`` is this holder's policy; ``workers`` the Paillier process count.
    """

    service = pb.DESCRIPTOR.services_by_name[SERVICE_NAME]
    protocol = "WOE"
    caller_role = "computes WOE for"
    model_file = "{job}.woe.json"

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
        limits: HolderLimits | None = None,
        aliases: Mapping[str, str] | None = None,
    ):
        if int(min_bin_samples) < 1:
            raise ValueError(f"min_bin_samples must be >= 1, got {min_bin_samples}")
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
        self.min_bin_samples = int(min_bin_samples)
        self.workers = workers
        self.column_key = column_key
        self.aliases = dict(aliases or {})
        self._row_sets: dict[JobKey, list[np.ndarray]] = {}

    # -- HolderModule hooks ----------------------------------------------------------------
    def _decode_model(self, data: dict[str, Any]) -> HolderWoeModel:
        return HolderWoeModel.from_dict(data)

    def _no_model(self, bank: str, job_id: str) -> str:
        return f"no finished WOE job '{job_id}' for {bank} at {self.node_id}"

    def _check_loaded(self, model: HolderWoeModel) -> None:
        self._check_width(model.binner.n_features_in_, "the WOE model")

    # -- the holder's own use of its tables ------------------------------------------------
    def woe_model(self, bank: str, job_id: str) -> HolderWoeModel:
        """This holder's WOE tables of a finished job (read back from ``models_dir`` if needed)."""
        return self.model(bank, job_id)

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
        model = self.model(bank, job_id)
        if values is None:
            values, _ = self.own_table(
                bank, model.alignment_id if alignment_id is None else alignment_id
            )
            if rows is not None:
                values = values[np.asarray(rows)]
        return model.transform(values)

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
    def Start(self, request: pb.WoeStart, call: CallInfo) -> pb.WoeStarted:
        key = self.check_job_id(call)
        if self.peek_job(call) is not None or self.has_model(key, stored=False):
            raise failed(f"job '{call.meta.job_id}' already exists at {self.node_id}")
        min_bin = int(request.min_bin_samples)
        if min_bin < self.min_bin_samples:
            raise Refused(
                "min_bin_samples",
                f"the job asks bins down to {min_bin} samples; this holder's policy is at "
                f"least {self.min_bin_samples}",
            )
        if not 2 <= request.max_bin <= 255:
            raise invalid(f"max_bin must be in [2, 255], got {request.max_bin}")
        # policy limits (models.limits) before a row is read or the key verified
        self.limits.check_bins(int(request.max_bin))
        self.limits.check_paillier(request.paillier_params)
        self.limits.admit_job(
            node=self.node_id,
            protocol=self.protocol,
            bank=call.caller,
            alignment_id=request.alignment_id,
        )
        rows = self.training_rows(call, alignment_id=request.alignment_id, rows=request.rows)
        n_rows = rows.values.shape[0]
        if request.n_rows != n_rows:
            raise invalid(f"the bank has {request.n_rows} rows, this holder has {n_rows}")
        try:
            params = public_params_from_bytes(request.paillier_params)
        except CryptoError as exc:
            raise invalid(f"Start: {exc}") from None
        row_key = (call.caller, request.alignment_id)
        selected = rows.mask
        self._check_row_set(row_key, selected, min_bin)
        binner, small_maps, sent, counts = self._bins(call, rows, int(request.max_bin), min_bin)
        job = WoeJob(
            alignment_id=request.alignment_id,
            n_rows=n_rows,
            params=params,
            engine=PaillierEngine(params, workers=self.workers),
            binner=binner,
            names=rows.names,
            small_maps=small_maps,
            sent_bins=sent,
            sent_n_bins=np.array([c.size for c in counts], dtype=np.int64),
            counts=counts,
            min_bin_samples=min_bin,
        )
        self.open_job(call, job)
        with self._lock:
            self._row_sets.setdefault(row_key, []).append(selected)
        reply = pb.WoeStarted()
        for j, name in enumerate(job.names):
            hashed = self.aliases.get(name) or (
                name_hash(self.column_key, name) if self.column_key else ""
            )
            reply.features.add(
                feature=j,
                name_hash=hashed,
                n_bins=int(job.sent_n_bins[j]),
                categorical=bool(job.binner.categorical_[j]),
            )
        call.counts["features"] = len(job.names)
        call.counts["rows"] = n_rows
        return reply

    def _bins(
        self, call: CallInfo, rows: Rows, max_bin: int, min_bin: int
    ) -> tuple[QuantileBinner, list[np.ndarray], np.ndarray, list[np.ndarray]]:
        """Bin locally, then merge every bin under ``min_bin`` rows into a neighbour (a bin of
        one row would hand that row's label to the bank). Returns the binner, per feature the
        map binner bin → sent bin, the sent bins of every row and the rows per sent bin."""
        binner, bins = self.bin_rows(call, rows, max_bin)
        small_maps, counts = [], []
        sent = np.empty(bins.shape, dtype=np.int64)
        for j in range(bins.shape[1]):
            raw = np.bincount(bins[:, j], minlength=int(binner.n_bins_[j]))
            merge = merge_small_categories if binner.categorical_[j] else merge_small_bins
            small = merge(raw, min_bin)
            small_maps.append(small)
            sent[:, j] = small[bins[:, j]]
            counts.append(np.bincount(sent[:, j], minlength=int(small.max()) + 1))
        return binner, small_maps, sent, counts

    # -- 2. BinSums ------------------------------------------------------------------------
    def BinSums(self, request: pb.WoeBinSumsRequest, call: CallInfo) -> pb.WoeBinSums:
        job = self.job(call)
        with job.lock:
            if job.sums_sent:
                raise failed("BinSums was already answered for this job (one label vector per job)")
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
            reply = pb.WoeBinSums(
                pack_slot_bits=slot_bits, ciphertexts=ciphertexts_to_bytes(fresh, job.params)
            )
            for f, counts in enumerate(job.counts):
                reply.features.add(feature=f, counts=counts.tolist())
            job.sums_sent = True
        call.counts["ciphertexts_in"] = len(cts)
        call.counts["ciphertexts_out"] = len(fresh)
        return reply

    # -- 3. Finish -------------------------------------------------------------------------
    def _result(self, job: WoeJob, item: pb.WoeFeatureResult) -> HolderFeatureWoe:
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

    def Finish(self, request: pb.WoeFinish, call: CallInfo) -> pb.WoeFinished:
        job = self.job(call)
        with job.lock:
            if request.abort:
                self.drop_job(call, job)
                return pb.WoeFinished(n_features=0)
            if not job.sums_sent:
                raise failed("Finish before BinSums: there is nothing to keep")
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
            self.keep_model(call, model)
            self.drop_job(call, job)
        call.counts["features"] = len(tables)
        return pb.WoeFinished(n_features=len(tables))


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
    limits: HolderLimits | None = None,
    categorical: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, InProcessPeer], dict[str, WoeHolderServicer]]:
    """WOE holders in this process (``models.local.local_holders``); model files go under
    ``models_dir/<holder>`` when given; ``categorical``: per holder, its category columns."""
    nominal = dict(categorical or {})

    def make(args: HolderArgs, _home: Path) -> WoeHolderServicer:
        return WoeHolderServicer(
            **args,
            min_bin_samples=min_bin_samples,
            workers=workers,
            column_key=column_key,
            models_dir=None if models_dir is None else Path(models_dir) / args["node_id"],
            limits=limits,
        ).use_categorical(nominal.get(args["node_id"], ()))

    return local_holders(
        make, tables, workdir, bank_id=bank_id, peer_class=peer_class, max_blob_bytes=max_blob_bytes
    )
