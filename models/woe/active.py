"""The bank's half of federated WOE/IV (active party: labels and the Paillier private key).

Reads top to bottom as the bank runs a job: :class:`FederatedWoe.fit` — keys and ``Start``, the
encrypted labels and ``BinSums``, decryption and the WOE/IV and merge maps per holder feature,
``Finish``. The holders' half is ``passive.py``; the definitions are ``reference.py``; the
protocol and who learns what are in docs/scorecard.md.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from federation.crypto import (
    CiphertextPacker,
    CryptoError,
    PaillierEngine,
    ciphertexts_from_bytes,
    generate_keypair,
    make_public_params,
    public_params_to_bytes,
)
from federation.errors import PeerError, XinyidaiError
from federation.transport.base import PeerBase, new_meta
from models.secureboost.reference import mask_to_bytes
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

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
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
       bins' row counts — and stream the ciphertexts to every holder (``put_blob`` fed by
       ``encrypt_stream``), then ``BinSums``: per (feature, bin) the row count and the packed,
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
        if job_id is not None and not _JOB_ID.match(job_id):
            raise WoeError(f"job_id {job_id!r} must match {_JOB_ID.pattern}")
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
        self._holder: str | None = None
        self._stage = "start"

    # -- helpers ---------------------------------------------------------------------------
    def _meta(self) -> Any:
        return new_meta(self.purpose, job_id=self.job_id_)

    def _call(self, holders: Mapping[str, PeerBase], name: str, method: str, request: Any) -> Any:
        self._holder = name
        reply = holders[name].call(method, request)
        self._holder = None
        return reply

    def _abort(self, holders: Mapping[str, PeerBase], started: Sequence[str]) -> None:
        for name in started:
            try:
                holders[name].call("Finish", pb.WoeFinish(meta=self._meta(), abort=True))
            except XinyidaiError as exc:  # best effort: the holder may be the one that is down
                log.warning("could not abort WOE job %s at %s: %s", self.job_id_, name, exc)

    # -- the job ---------------------------------------------------------------------------
    def fit(
        self,
        y: Any,
        *,
        holders: Mapping[str, PeerBase],
        X_bank: Any = None,
        bank_feature_names: Sequence[str] | None = None,
    ) -> FederatedWoe:
        """Run the job; ``y`` holds the labels of the job's rows in the aligned order."""
        labels = check_labels(y)
        n = labels.size
        holders = dict(holders)
        if BANK in holders:
            raise WoeError(f"a holder may not be named '{BANK}': it names the bank's features")
        self.job_id_ = self.job_id or f"woe-{uuid.uuid4().hex[:16]}"
        self._holder = None
        self._stage = "start"
        tables: dict[str, list[FeatureWoe]] = {}
        if X_bank is not None:
            if len(X_bank) != n:
                raise WoeError(f"X_bank has {len(X_bank)} rows for {n} labels")
            self.bank_encoder_ = WoeEncoder(
                max_bin=self.max_bin,
                min_bin_samples=self.min_bin_samples,
                monotonic=self.monotonic,
                smoothing=self.smoothing,
            ).fit(X_bank, labels, feature_names=bank_feature_names, party=BANK)
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
        n = labels.size
        public, private = generate_keypair(self.key_bits)
        params = make_public_params(public)
        started: list[str] = []
        with PaillierEngine(params, private_key=private, workers=self.workers) as engine:
            try:
                start = pb.WoeStart(
                    meta=self._meta(),
                    paillier_params=public_params_to_bytes(params),
                    n_rows=n,
                    max_bin=self.max_bin,
                    min_bin_samples=self.min_bin_samples,
                    alignment_id=self.alignment_id,
                )
                if self.alignment_rows is not None:
                    start.rows = mask_to_bytes(np.asarray(self.alignment_rows, dtype=bool))
                infos: dict[str, list[tuple[int, str, int]]] = {}
                for name in holders:
                    reply = self._call(holders, name, "Start", start)
                    started.append(name)
                    infos[name] = self._features_of(name, reply)
                self._stage = "labels"
                replies = self._bin_sums(labels, holders, engine)
                self._stage = "decrypt"
                tables = self._tables(labels, infos, replies, engine)
                self._stage = "finish"
                for name in holders:
                    finish = pb.WoeFinish(meta=self._meta())
                    for t in tables[name]:
                        finish.features.add(
                            feature=t.feature, bin_map=t.bin_map.tolist(), woe=t.woe, iv=t.iv
                        )
                    self._call(holders, name, "Finish", finish)
                    started.remove(name)
            except Exception as exc:
                self._abort(holders, started)
                if isinstance(exc, PeerError | CryptoError | WoeError):
                    who = f"holder '{self._holder}'" if self._holder else "a holder"
                    raise FederatedWoeError(
                        f"WOE job {self.job_id_} failed at {self._stage} ({who}): {exc}. "
                        "Every started holder was asked to drop the job.",
                        holder=self._holder,
                        stage=self._stage,
                    ) from exc
                raise
        return tables

    def _features_of(self, name: str, reply: Any) -> list[tuple[int, str, int]]:
        out = [(int(f.feature), f.name_hash, int(f.n_bins)) for f in reply.features]
        if [f for f, _, _ in out] != list(range(len(out))) or any(k < 2 for _, _, k in out):
            raise ProtocolError(f"holder '{name}' listed features out of order or without bins")
        return out

    def _bin_sums(
        self, labels: np.ndarray, holders: Mapping[str, PeerBase], engine: PaillierEngine
    ) -> dict[str, Any]:
        """Encrypt y once, stream it to every holder (the first while encrypting), BinSums."""
        blob_id = "labels"
        n = labels.size
        total = n * engine.ciphertext_bytes
        sent: list[bytes] = []
        plaintexts = [int(v) for v in labels]

        def stream() -> Iterator[bytes]:
            for chunk in engine.encrypt_stream(plaintexts, chunk_size=self.chunk_size):
                sent.append(chunk)
                yield chunk

        request = pb.WoeBinSumsRequest(meta=self._meta(), blob_id=blob_id, n_ciphertexts=n)
        replies = {}
        for k, name in enumerate(holders):
            self._holder = name
            payload = stream() if k == 0 else sent
            holders[name].put_blob(blob_id, payload, meta=self._meta(), total_size=total)
            self.stats_["ciphertexts_sent"] += n
            replies[name] = self._call(holders, name, "BinSums", request)
        return replies

    def _tables(
        self,
        labels: np.ndarray,
        infos: Mapping[str, list[tuple[int, str, int]]],
        replies: Mapping[str, Any],
        engine: PaillierEngine,
    ) -> dict[str, list[FeatureWoe]]:
        n = labels.size
        n_bads = int(labels.sum())
        slot_bits = label_slot_bits(n)
        packer = CiphertextPacker(slot_bits=slot_bits, key_bits=engine.params.key_bits)
        layout: list[tuple[str, list[np.ndarray], int]] = []
        all_cts: list[Any] = []
        for name, reply in replies.items():
            self._holder = name
            info = infos[name]
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
            cts = ciphertexts_from_bytes(reply.ciphertexts, engine.params)
            n_values = sum(c.size for c in counts)
            if len(cts) != packer.n_packed(n_values):
                raise ProtocolError(
                    f"holder '{name}': {len(cts)} ciphertexts for {n_values} bin sums"
                )
            layout.append((name, counts, len(cts)))
            all_cts.extend(cts)
        self._holder = None
        plains = engine.decrypt(all_cts)
        self.stats_["decryptions"] += len(plains)
        out: dict[str, list[FeatureWoe]] = {}
        pos = 0
        for name, counts, n_cts in layout:
            self._holder = name
            n_values = sum(c.size for c in counts)
            sums = np.asarray(packer.unpack(plains[pos : pos + n_cts], n_values), dtype=np.int64)
            pos += n_cts
            tables = []
            offset = 0
            for (f, hashed, _), c in zip(infos[name], counts, strict=True):
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
                    )
                )
            out[name] = tables
        self._holder = None
        return out

    # -- results ---------------------------------------------------------------------------
    def iv_report(self) -> pd.DataFrame:
        """All parties' features, highest IV first, with strength labels (feature selection)."""
        if not hasattr(self, "tables_"):
            raise WoeError("FederatedWoe is not fitted: call fit first")
        return iv_report(self.tables_)


__all__ = ["BANK", "FederatedWoe", "FederatedWoeError", "ProtocolError"]
