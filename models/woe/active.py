"""The bank's half of federated WOE/IV (active party: labels and the Paillier private key).

Reads top to bottom as the bank runs a job: :class:`FederatedWoe.fit` — keys and ``Start``, the
encrypted labels and ``BinSums``, decryption and the WOE/IV and merge maps per holder feature,
``Finish``. The holders' half is ``passive.py``; the definitions are ``reference.py``; the
protocol and who learns what are in docs/scorecard.md. Talking to the holders (fan-out, abort,
blame) is ``models.driver.HolderDriver``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from federation.crypto import (
    CiphertextPacker,
    CryptoError,
    PaillierEngine,
    PublicParams,
    ciphertexts_from_bytes,
    generate_keypair,
    make_public_params,
    public_params_to_bytes,
)
from federation.errors import PeerError
from federation.ids import name_problem
from federation.transport.base import PeerBase
from models.driver import HolderDriver
from models.rows import mask_to_bytes
from models.woe.passive import label_slot_bits
from models.woe.reference import (
    MIN_BIN_SAMPLES,
    SMOOTHING,
    FeatureWoe,
    WoeEncoder,
    WoeError,
    check_labels,
    iv_report,
    woe_from_counts,
)
from protos import woe_pb2 as pb

log = logging.getLogger(__name__)

BANK = "bank"
"""The party name of the bank's own features in ``tables_`` (so no holder may be called that)."""


class ProtocolError(WoeError):
    """A holder answered something inconsistent with the protocol (shapes, counts, sums)."""


class FederatedWoeError(WoeError):
    """The job stopped; every started holder was asked to drop it. Names the holder and stage."""

    def __init__(self, message: str, *, holder: str | None, stage: str):
        self.holder = holder
        self.stage = stage
        super().__init__(message)


class FederatedWoe:
    """WOE/IV of every holder's features (and, optionally, the bank's own) for one label vector.

    Protocol, from the bank's side:

    1. **Keys and start.** Generate a Paillier key pair (the private key never leaves this
       object); send every holder the public parameters, the rows and the binning policy
       (``max_bin``, ``min_bin_samples``). Each holder answers with its features' indices,
       keyed name hashes and number of (already small-merged) bins.
    2. **Labels.** DJN-encrypt y (0/1) per row — y alone suffices, the holder knows its own
       bins' row counts — and stream the ciphertexts to every holder at once as they are
       encrypted (``HolderDriver.broadcast_blob``), then ``BinSums``: per (feature, bin) the row count and the packed,
       re-randomised encrypted bad count.
    3. **WOE.** CRT-decrypt and unpack; check every bin's bads against its count and that each
       feature's bins add up to all rows and all bads; then exactly ``reference.woe_from_counts``
       (small-bin merging is a no-op on the holder's bins, monotonic merging, smoothing, IV).
    4. **Finish** sends each holder its merge maps and WOE values (it transforms its features
       with them for the LR); on any failure every started holder gets ``Finish(abort)`` and
       :class:`FederatedWoeError` names the holder and the stage.

    Sees: per holder feature the row and bad counts of each (≥ ``min_bin_samples``) bin, under
    an index and keyed hash. Never sees: a holder's values, column names, bin edges, or which
    rows are in which bin.

    ``fit(y, holders=..., X_bank=...)`` sets ``tables_`` (``{party: [FeatureWoe]}``, the bank's
    own features under ``"bank"`` when ``X_bank`` is given, via :class:`WoeEncoder`),
    ``bank_encoder_``, ``job_id_`` and ``stats_``. ``key_bits`` below 2048 only inside
    ``federation.crypto.testing.allow_insecure_key_sizes``.
    """

    def __init__(
        self,
        *,
        key_bits: int = 2048,
        max_bin: int = 32,
        min_bin_samples: int = MIN_BIN_SAMPLES,
        monotonic: bool = True,
        smoothing: float = SMOOTHING,
        purpose: str = "financing",
        job_id: str | None = None,
        workers: int | None = None,
        chunk_size: int = 4096,
        alignment_id: str = "",
        alignment_rows: np.ndarray | None = None,
    ):
        if not isinstance(max_bin, int) or not 2 <= max_bin <= 255:
            raise WoeError(f"max_bin must be an integer in [2, 255], got {max_bin!r}")
        if not isinstance(min_bin_samples, int) or min_bin_samples < 1:
            raise WoeError(f"min_bin_samples must be a positive integer, got {min_bin_samples!r}")
        problem = None if job_id is None else name_problem(job_id, "job_id")
        if problem is not None:
            raise WoeError(problem)
        self.key_bits = key_bits
        self.max_bin = max_bin
        self.min_bin_samples = min_bin_samples
        self.monotonic = monotonic
        self.smoothing = smoothing
        self.purpose = purpose
        self.job_id = job_id
        self.workers = workers
        self.chunk_size = chunk_size
        self.alignment_id = alignment_id
        self.alignment_rows = alignment_rows
        self._categorical: dict[str, set[int]] = {}  # holder → its categorical features

    # -- the job ---------------------------------------------------------------------------
    def fit(
        self,
        y: Any,
        *,
        holders: Mapping[str, PeerBase],
        X_bank: Any = None,
        bank_feature_names: Sequence[str] | None = None,
        bank_categorical: Sequence[int] | None = None,
    ) -> FederatedWoe:
        """Run the job; ``y`` holds the labels of the job's rows in the aligned order;
        ``bank_categorical``: indices of ``X_bank``'s columns holding category codes (default:
        those a DataFrame names in ``attrs["categorical"]``)."""
        if bank_categorical is None:
            named = set(getattr(X_bank, "attrs", {}).get("categorical") or [])
            columns = [str(c) for c in getattr(X_bank, "columns", [])]
            bank_categorical = [j for j, c in enumerate(columns) if c in named]
        labels = check_labels(y)
        n = labels.size
        holders = dict(holders)
        if BANK in holders:
            raise WoeError(f"a holder may not be named '{BANK}': it names the bank's features")
        self.job_id_ = self.job_id or f"woe-{uuid.uuid4().hex[:16]}"
        tables: dict[str, list[FeatureWoe]] = {}
        if X_bank is not None:
            if len(X_bank) != n:
                raise WoeError(f"X_bank has {len(X_bank)} rows for {n} labels")
            self.bank_encoder_ = WoeEncoder(
                max_bin=self.max_bin,
                min_bin_samples=self.min_bin_samples,
                monotonic=self.monotonic,
                smoothing=self.smoothing,
            ).fit(
                X_bank,
                labels,
                feature_names=bank_feature_names,
                party=BANK,
                categorical=bank_categorical,
            )
            tables[BANK] = self.bank_encoder_.tables_
        self.stats_: dict[str, int] = {"ciphertexts_sent": 0, "decryptions": 0}
        if holders:
            tables.update(self._federated(labels, holders))
        self.tables_ = tables
        self.n_rows_ = n
        return self

    def _federated(
        self, labels: np.ndarray, holders: Mapping[str, PeerBase]
    ) -> dict[str, list[FeatureWoe]]:
        public, private = generate_keypair(self.key_bits)
        params = make_public_params(public)
        d = HolderDriver(holders, purpose=self.purpose, job_id=self.job_id_, thread_name="woe")
        with (
            PaillierEngine(params, private_key=private, workers=self.workers) as engine,
            d.running(
                abort=lambda: pb.WoeFinish(meta=d.meta(), abort=True),
                error=FederatedWoeError,
                attributable=(PeerError, CryptoError, WoeError),
                what=f"WOE job {self.job_id_}",
                dropped="Every started holder was asked to drop the job.",
            ),
        ):
            infos = self._start(d, labels.size, params)
            d.stage = "labels"
            replies = self._bin_sums(d, labels, engine)
            d.stage = "decrypt"
            tables = self._tables(d, labels, infos, replies, engine)
            d.stage = "finish"
            d.finish(lambda name: self._finish_request(d, tables[name]))
        return tables

    def _start(
        self, d: HolderDriver, n: int, params: PublicParams
    ) -> dict[str, list[tuple[int, str, int]]]:
        """``Start`` at every holder; each lists its features (index, keyed name hash, bins)."""
        start = pb.WoeStart(
            meta=d.meta(),
            paillier_params=public_params_to_bytes(params),
            n_rows=n,
            max_bin=self.max_bin,
            min_bin_samples=self.min_bin_samples,
            alignment_id=self.alignment_id,
        )
        if self.alignment_rows is not None:
            start.rows = mask_to_bytes(np.asarray(self.alignment_rows, dtype=bool))
        d.started = list(d.holders)  # abort is best effort: some may not have it
        replies: dict[str, pb.WoeStarted] = d.each_call("Start", start)
        infos = {}
        for name, reply in replies.items():
            with d.blame(name):
                infos[name] = self._features_of(name, reply)
        return infos

    @staticmethod
    def _finish_request(d: HolderDriver, tables: list[FeatureWoe]) -> pb.WoeFinish:
        """A holder's merge maps and WOE values (it transforms its own features with them)."""
        finish = pb.WoeFinish(meta=d.meta())
        for t in tables:
            finish.features.add(feature=t.feature, bin_map=t.bin_map.tolist(), woe=t.woe, iv=t.iv)
        return finish

    def _features_of(self, name: str, reply: Any) -> list[tuple[int, str, int]]:
        # categorical features: no monotonic merge (their bins have no order)
        self._categorical[name] = {int(f.feature) for f in reply.features if f.categorical}
        out = [(int(f.feature), f.name_hash, int(f.n_bins)) for f in reply.features]
        if [f for f, _, _ in out] != list(range(len(out))) or any(k < 2 for _, _, k in out):
            raise ProtocolError(f"holder '{name}' listed features out of order or without bins")
        return out

    def _bin_sums(
        self, d: HolderDriver, labels: np.ndarray, engine: PaillierEngine
    ) -> dict[str, pb.WoeBinSums]:
        """Encrypt y once, stream it to every holder at once as it is encrypted, BinSums."""
        n = labels.size
        request = pb.WoeBinSumsRequest(meta=d.meta(), blob_id="labels", n_ciphertexts=n)
        replies: dict[str, pb.WoeBinSums] = d.broadcast_blob(
            "labels",
            engine.encrypt_stream([int(v) for v in labels], chunk_size=self.chunk_size),
            total=n * engine.ciphertext_bytes,
            then=lambda name: d.holders[name].call("BinSums", request),
        )
        self.stats_["ciphertexts_sent"] += n * len(d.holders)
        return replies

    def _tables(
        self,
        d: HolderDriver,
        labels: np.ndarray,
        infos: Mapping[str, list[tuple[int, str, int]]],
        replies: Mapping[str, pb.WoeBinSums],
        engine: PaillierEngine,
    ) -> dict[str, list[FeatureWoe]]:
        """Check every holder's counts, decrypt all bad counts at once, WOE per feature."""
        n = labels.size
        packer = CiphertextPacker(slot_bits=label_slot_bits(n), key_bits=engine.params.key_bits)
        layout: list[tuple[str, list[np.ndarray], int]] = []
        all_cts: list[Any] = []
        for name, reply in replies.items():
            with d.blame(name):
                counts = self._counts(name, infos[name], reply, n)
                cts = ciphertexts_from_bytes(reply.ciphertexts, engine.params)
                n_values = sum(c.size for c in counts)
                if len(cts) != packer.n_packed(n_values):
                    raise ProtocolError(
                        f"holder '{name}': {len(cts)} ciphertexts for {n_values} bin sums"
                    )
            layout.append((name, counts, len(cts)))
            all_cts.extend(cts)
        plains = engine.decrypt(all_cts)
        self.stats_["decryptions"] += len(plains)
        out: dict[str, list[FeatureWoe]] = {}
        pos = 0
        for name, counts, n_cts in layout:
            n_values = sum(c.size for c in counts)
            sums = np.asarray(packer.unpack(plains[pos : pos + n_cts], n_values), dtype=np.int64)
            pos += n_cts
            with d.blame(name):
                out[name] = self._holder_tables(name, infos[name], counts, sums, int(labels.sum()))
        return out

    @staticmethod
    def _counts(
        name: str, info: list[tuple[int, str, int]], reply: pb.WoeBinSums, n: int
    ) -> list[np.ndarray]:
        """A holder's rows per bin, checked against what it listed at Start."""
        slot_bits = label_slot_bits(n)
        if reply.pack_slot_bits != slot_bits:
            raise ProtocolError(
                f"holder '{name}' packed {reply.pack_slot_bits}-bit slots, expected {slot_bits}"
            )
        if [int(f.feature) for f in reply.features] != [f for f, _, _ in info]:
            raise ProtocolError(f"holder '{name}' answered other features than it listed")
        counts = [np.asarray(f.counts, dtype=np.int64) for f in reply.features]
        for (f, _, k), c in zip(info, counts, strict=True):
            if c.size != k or int(c.sum()) != n:
                raise ProtocolError(
                    f"holder '{name}' feature #{f}: {c.size} bins with {int(c.sum())} rows, "
                    f"expected {k} bins with {n} rows"
                )
        return counts

    def _holder_tables(
        self,
        name: str,
        info: list[tuple[int, str, int]],
        counts: list[np.ndarray],
        sums: np.ndarray,
        n_bads: int,
    ) -> list[FeatureWoe]:
        """WOE tables of one holder's features from its counts and decrypted bad counts."""
        tables = []
        offset = 0
        for (f, hashed, _), c in zip(info, counts, strict=True):
            bads = sums[offset : offset + c.size]
            offset += c.size
            if (bads > c).any() or int(bads.sum()) != n_bads:
                raise ProtocolError(
                    f"holder '{name}' feature #{f}: decrypted bad counts are inconsistent "
                    "(more bads than rows in a bin, or not all bads): wrong key or tampering"
                )
            tables.append(
                woe_from_counts(
                    c - bads,
                    bads,
                    feature=f,
                    name=hashed or f"#{f}",
                    party=name,
                    min_bin_samples=self.min_bin_samples,
                    monotonic=self.monotonic,
                    smoothing=self.smoothing,
                    categorical=f in self._categorical.get(name, ()),
                )
            )
        return tables

    # -- results ---------------------------------------------------------------------------
    def iv_report(self) -> pd.DataFrame:
        """All parties' features, highest IV first, with strength labels (feature selection)."""
        if not hasattr(self, "tables_"):
            raise WoeError("FederatedWoe is not fitted: call fit first")
        return iv_report(self.tables_)


__all__ = ["BANK", "FederatedWoe", "FederatedWoeError", "ProtocolError"]
