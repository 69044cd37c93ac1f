"""The bank's half of PSI alignment: one job with every holder, one common order.

Why the bank drives: it is the party that needs the intersection (its labels meet the holders'
features), so it sends the queries, matches, and tells each holder its rows of the common set.
Every call goes through a ``PeerBase`` (gRPC over mutual TLS, or the in-process twin in unit
tests), so nothing crosses but protobuf and blobs, and every call is audited at both ends. The
holder's half is ``models.psi.passive``; the maths is ``federation.psi``; docs/psi.md has the
protocol and what each side learns.

``align_codes``: ``PsiStart`` and ``PsiBlind`` with every holder at once (messages as blobs),
one common order for bank ∩ every holder (``PsiBank.align``), then ``PsiAccept`` with each
holder's positions. An intersection below ``min_overlap`` (at any holder, or of the common set)
stops the job with an ``AlignmentError`` naming the holder, and every holder contacted is told
to drop it (``PsiAbort``). ``Alignment``: the bank's side of the result, stored under
``NODE_DIR/alignments/<job>.json|rows`` and checked against the bank's table when read back.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from federation.errors import ConfigError, PeerError, XinyidaiError
from federation.files import write_atomic
from federation.psi import PsiAlignment, PsiBank, PsiOverlapError, PsiProtocolError, PsiResult
from federation.transport.base import PeerBase, new_meta
from models.psi.store import AlignmentError, check_name, codes_digest
from protos import common_pb2, holder_pb2

__all__ = ["PSI_POSITIONS_BLOB", "PSI_QUERIES_BLOB", "Alignment", "align_codes"]

PSI_QUERIES_BLOB = "psi-queries"
PSI_POSITIONS_BLOB = "psi-positions"

Progress = Callable[[str], None]
HolderMessages = tuple[bytes, bytes, int]
"""One holder's blinded set (message 1), its answers to the bank's queries (3), its set size."""


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, eq=False)
class Alignment:
    """The bank's view of one alignment: its rows of the common set, in the common order."""

    job_id: str
    holders: tuple[str, ...]
    bank_rows: np.ndarray
    bank_size: int
    holder_sizes: dict[str, int]
    pairwise: dict[str, int]  # bank ∩ holder, per holder (the bank computes these)
    table_digest: str
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return int(self.bank_rows.size)

    def save(self, directory: Path) -> None:
        base = directory / check_name(self.job_id, "alignment id")
        data = self.bank_rows.astype("<u4").tobytes()
        write_atomic(base.with_suffix(".rows"), data)
        meta = {
            "format": "xinyidai.alignment.bank/1",
            "job_id": self.job_id,
            "holders": list(self.holders),
            "size": self.size,
            "bank_size": self.bank_size,
            "holder_sizes": self.holder_sizes,
            "pairwise": self.pairwise,
            "table_digest": self.table_digest,
            "rows_sha256": hashlib.sha256(data).hexdigest(),
            "seconds": self.seconds,
        }
        write_atomic(base.with_suffix(".json"), json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, directory: Path, job_id: str, *, table_codes: list[str]) -> Alignment:
        base = directory / check_name(job_id, "alignment id")
        try:
            meta = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
            data = base.with_suffix(".rows").read_bytes()
        except FileNotFoundError:
            raise AlignmentError(f"the bank has no alignment '{job_id}' (run align)") from None
        if meta["table_digest"] != codes_digest(table_codes):
            raise AlignmentError(f"alignment '{job_id}' was made on a different bank table")
        if hashlib.sha256(data).hexdigest() != meta["rows_sha256"]:
            raise AlignmentError(f"alignment '{job_id}' is damaged")
        return cls(
            job_id=job_id,
            holders=tuple(meta["holders"]),
            bank_rows=np.frombuffer(data, dtype="<u4").astype(np.int64),
            bank_size=int(meta["bank_size"]),
            holder_sizes={k: int(v) for k, v in meta["holder_sizes"].items()},
            pairwise={k: int(v) for k, v in meta["pairwise"].items()},
            table_digest=meta["table_digest"],
            seconds=float(meta.get("seconds", 0.0)),
        )


def _join(pieces: Iterator[bytes]) -> bytes:
    return b"".join(pieces)


class _HolderCalls:
    """The bank's calls to every holder of one PSI job, and telling them to drop it on failure."""

    def __init__(self, holders: Mapping[str, PeerBase], *, job_id: str, purpose: str):
        self.holders = holders
        self.job_id = job_id
        self.purpose = purpose
        self.contacted: list[str] = []

    def meta(self) -> common_pb2.RequestMeta:
        return new_meta(self.purpose, job_id=self.job_id)

    def exchange(self, name: str, salt: bytes, required: int, queries: bytes) -> HolderMessages:
        """Messages 1 and 3 of one holder (its set; its answer to the bank's queries)."""
        peer = self.holders[name]
        self.contacted.append(name)
        started = peer.call(
            "PsiStart",
            holder_pb2.PsiStartRequest(meta=self.meta(), salt=salt, min_overlap=required),
        )
        holder_set = _join(peer.get_blob(started.set_blob_id, meta=self.meta()))
        peer.put_blob(PSI_QUERIES_BLOB, queries, meta=self.meta())
        blinded = peer.call(
            "PsiBlind",
            holder_pb2.PsiBlindRequest(meta=self.meta(), queries_blob_id=PSI_QUERIES_BLOB),
        )
        answer = _join(peer.get_blob(blinded.answer_blob_id, meta=self.meta()))
        return holder_set, answer, int(started.set_size)

    def exchange_all(self, salt: bytes, required: int, queries: bytes) -> dict[str, HolderMessages]:
        """Every holder's messages, concurrently; a holder that fails aborts the whole job."""
        try:
            with ThreadPoolExecutor(max_workers=len(self.holders)) as pool:
                futures = {
                    name: pool.submit(self.exchange, name, salt, required, queries)
                    for name in self.holders
                }
                return {name: f.result() for name, f in futures.items()}
        except PeerError as exc:
            self.abort(f"holder '{exc.peer}' failed: {exc}")
            raise

    def abort(self, reason: str) -> None:
        for name in self.contacted:
            try:
                self.holders[name].call(
                    "PsiAbort", holder_pb2.PsiAbortRequest(meta=self.meta(), reason=reason[:500])
                )
            except XinyidaiError:
                pass  # best effort: the holder may be the one that failed

    def deliver(self, aligned: PsiAlignment) -> None:
        """Message 4: each holder's positions of the common set; it stores its rows."""
        for i, (name, peer) in enumerate(self.holders.items()):
            try:
                peer.put_blob(PSI_POSITIONS_BLOB, aligned.positions_bytes(i), meta=self.meta())
                accepted = peer.call(
                    "PsiAccept",
                    holder_pb2.PsiAcceptRequest(
                        meta=self.meta(), positions_blob_id=PSI_POSITIONS_BLOB
                    ),
                )
            except PeerError as exc:
                self.abort(f"holder '{name}' failed to accept: {exc}")
                raise
            if accepted.size != aligned.size:
                raise AlignmentError(
                    f"alignment '{self.job_id}': holder '{name}' stored {accepted.size} rows, "
                    f"the common set has {aligned.size}"
                )


def _pairwise(
    bank: PsiBank, calls: _HolderCalls, messages: dict[str, HolderMessages], progress: Progress
) -> list[PsiResult]:
    """Bank ∩ each holder; every holder short of ``min_overlap`` is named in one error."""
    results: list[PsiResult] = []
    short: list[str] = []
    for name, (holder_set, answer, set_size) in messages.items():
        try:
            results.append(bank.finish(answer, holder_set))
        except PsiOverlapError as exc:
            short.append(f"holder '{name}' shares {exc.size}")
            continue
        except PsiProtocolError as exc:
            calls.abort(f"malformed message from holder '{name}'")
            raise AlignmentError(f"alignment '{calls.job_id}': holder '{name}': {exc}") from None
        progress(f"{name}: {set_size} enterprises, {results[-1].size} shared with the bank")
    if short:
        detail = (
            f"alignment '{calls.job_id}': {', '.join(short)} of the bank's {bank.size} "
            f"enterprises; {bank.required_overlap} required (min_overlap)"
        )
        calls.abort(detail)
        raise AlignmentError(detail)
    return results


def _common(bank: PsiBank, calls: _HolderCalls, results: list[PsiResult]) -> PsiAlignment:
    """Bank ∩ every holder, in one order; too small a common set aborts the job."""
    try:
        return bank.align(results)
    except PsiOverlapError as exc:
        detail = (
            f"alignment '{calls.job_id}': {exc.size} enterprises are held by the bank and every "
            f"holder ({', '.join(calls.holders)}), {bank.required_overlap} required (min_overlap)"
        )
        calls.abort(detail)
        raise AlignmentError(detail) from None


def align_codes(
    codes: list[str],
    holders: Mapping[str, PeerBase],
    *,
    job_id: str,
    salt: bytes,
    min_overlap: int | float = 1,
    purpose: str = "financing",
    workers: int = 1,
    progress: Progress = _quiet,
) -> Alignment:
    """PSI of the bank's ``codes`` with every holder (``DataHolder`` peers), one common order.

    Raises ``AlignmentError`` naming the holder (overlap too small, a malformed message) or
    ``PeerError`` (a holder refused or is down); every holder is then told to drop the job.
    """
    check_name(job_id, "alignment id")
    if not holders:
        raise ConfigError("align needs at least one holder")
    started = time.perf_counter()
    bank = PsiBank(codes, salt=salt, min_overlap=min_overlap, workers=workers)
    calls = _HolderCalls(holders, job_id=job_id, purpose=purpose)
    messages = calls.exchange_all(salt, bank.required_overlap, bank.queries())
    results = _pairwise(bank, calls, messages, progress)
    aligned = _common(bank, calls, results)
    calls.deliver(aligned)
    return Alignment(
        job_id=job_id,
        holders=tuple(holders),
        bank_rows=aligned.bank_rows,
        bank_size=bank.size,
        holder_sizes={name: m[2] for name, m in messages.items()},
        pairwise={name: r.size for name, r in zip(holders, results, strict=True)},
        table_digest=codes_digest(codes),
        seconds=time.perf_counter() - started,
    )
