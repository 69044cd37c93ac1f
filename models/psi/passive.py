"""The data holder's half of PSI alignment: ``PsiStart`` → ``PsiBlind`` → ``PsiAccept``
(or ``PsiAbort``), served as part of the holder's ``DataHolder`` service.

Why a mixin and not a service of its own: alignment is the first thing a bank asks of a holder
and shares the ``DataHolder`` port, caller policy and blob store with its other questions, so the
holder's servicer inherits these four handlers. They need only the runtime: the PSI maths
(``federation.psi.PsiHolder``), the blob store the large messages travel through, and the store
the result is written to (``models.psi.store``). The bank's half is ``models.psi.active``; the
protocol and what each side learns are in docs/psi.md.

Large messages travel as blobs of the calling bank's job: the holder publishes its blinded set
(``psi-set``) and its answers (``psi-answers``) for the bank to ``GetBlob``; the bank uploads its
queries and the matched positions with ``PutBlob``. Once the job ends (accepted or aborted) the
session and the PSI blobs are dropped; the alignment itself stays under
``NODE_DIR/alignments/<bank>/<job>`` and is what training jobs naming it read.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from federation.blobs import BlobStore
from federation.errors import ConfigError
from federation.psi import POINT_BYTES, PsiHolder, PsiOverlapError, PsiProtocolError
from federation.transport.base import CallFailed, CallInfo, check_blob_id, invalid
from models.psi.store import AlignmentStore, PsiSessions
from protos import common_pb2, holder_pb2

__all__ = ["PSI_ANSWER_BLOB", "PSI_SET_BLOB", "PsiHolderHandlers"]

log = logging.getLogger(__name__)

PSI_SET_BLOB = "psi-set"
PSI_ANSWER_BLOB = "psi-answers"


class PsiHolderHandlers:
    """``PsiStart``/``PsiBlind``/``PsiAccept``/``PsiAbort`` for a holder's servicer.

    The servicer calls ``init_psi`` from its ``__init__``; every handler is scoped by the
    calling bank and ``meta.job_id`` (the alignment's id), so one bank never touches another's
    job. The caller has already been admitted by the servicer's ``authorise_caller``.
    """

    node_id: str
    blobs: BlobStore
    alignments: AlignmentStore
    psi: PsiSessions
    psi_cache: Path
    workers: int
    _psi_codes: Sequence[str]

    def init_psi(
        self,
        *,
        node_id: str,
        codes: Sequence[str],
        blobs: BlobStore,
        alignments: AlignmentStore,
        psi_cache: Path,
        workers: int = 1,
    ) -> None:
        """``codes``: this holder's enterprise codes in table row order (what stored rows index)."""
        self.node_id = node_id
        self._psi_codes = codes
        self.blobs = blobs
        self.alignments = alignments
        self.psi_cache = psi_cache
        self.workers = workers
        self.psi = PsiSessions()

    # -- helpers -----------------------------------------------------------------------------
    def _psi_job(self, call: CallInfo) -> str:
        job_id = call.meta.job_id
        if not job_id:
            raise invalid(f"{call.method}: meta.job_id is required (it names the alignment)")
        return check_blob_id(job_id)

    def _read_blob(self, call: CallInfo, job_id: str, blob_id: str) -> bytes:
        return self.blobs.path(call.caller, job_id, check_blob_id(blob_id)).read_bytes()

    def _publish(self, call: CallInfo, job_id: str, blob_id: str, data: bytes) -> None:
        """Store a message for the bank to fetch with GetBlob (same verified path as PutBlob)."""
        meta = common_pb2.RequestMeta(job_id=job_id)
        chunk = common_pb2.BlobChunk(
            blob_id=blob_id,
            meta=meta,
            total_size=len(data),
            data=data,
            sha256=hashlib.sha256(data).digest(),
        )
        self.blobs.receive(iter([chunk]), owner=call.caller)

    def _forget_blobs(self, call: CallInfo, job_id: str) -> None:
        """PSI messages are not needed once the job ends (best effort)."""
        for blob_id in (PSI_SET_BLOB, PSI_ANSWER_BLOB):
            try:
                path = self.blobs.path(call.caller, job_id, blob_id)
            except CallFailed:
                continue
            path.unlink(missing_ok=True)
            path.with_name(f"{blob_id}.sha256").unlink(missing_ok=True)

    def _end_job(self, call: CallInfo, job_id: str) -> bool:
        dropped = self.psi.drop(call.caller, job_id)
        self._forget_blobs(call, job_id)
        return dropped

    # -- the four steps ----------------------------------------------------------------------
    def PsiStart(
        self, request: holder_pb2.PsiStartRequest, call: CallInfo
    ) -> holder_pb2.PsiStarted:
        job_id = self._psi_job(call)
        if self.alignments.exists(call.caller, job_id):
            raise CallFailed(
                "FAILED_PRECONDITION",
                f"{self.node_id}: alignment '{job_id}' exists already; use a new job id",
            )
        try:
            holder = PsiHolder(
                list(self._psi_codes),
                salt=request.salt,
                cache_dir=self.psi_cache,
                workers=self.workers,
                min_overlap=max(1, int(request.min_overlap)),
            )
        except ConfigError as exc:
            raise invalid(f"PsiStart: {exc}") from None
        blinded = holder.blinded_set()
        self.psi.add(call.caller, job_id, holder)
        self._publish(call, job_id, PSI_SET_BLOB, blinded)
        call.counts["set_size"] = holder.size
        call.counts["cache_hit"] = int(holder.stats.cache_hit)
        return holder_pb2.PsiStarted(set_blob_id=PSI_SET_BLOB, set_size=holder.size)

    def PsiBlind(
        self, request: holder_pb2.PsiBlindRequest, call: CallInfo
    ) -> holder_pb2.PsiBlinded:
        job_id = self._psi_job(call)
        holder = self.psi.get(call.caller, job_id)
        queries = self._read_blob(call, job_id, request.queries_blob_id)
        try:
            answer = holder.blind_queries(queries)
        except PsiProtocolError as exc:
            raise invalid(f"{self.node_id}: {exc}") from None
        self._publish(call, job_id, PSI_ANSWER_BLOB, answer)
        n = len(queries) // POINT_BYTES
        call.counts["queries"] = n
        return holder_pb2.PsiBlinded(answer_blob_id=PSI_ANSWER_BLOB, n_queries=n)

    def PsiAccept(
        self, request: holder_pb2.PsiAcceptRequest, call: CallInfo
    ) -> holder_pb2.PsiAccepted:
        job_id = self._psi_job(call)
        holder = self.psi.get(call.caller, job_id)
        positions = self._read_blob(call, job_id, request.positions_blob_id)
        try:
            rows = holder.accept_intersection(positions)
        except PsiProtocolError as exc:
            raise invalid(f"{self.node_id}: {exc}") from None
        except PsiOverlapError:
            self._end_job(call, job_id)
            raise
        self.alignments.save(call.caller, job_id, rows, holder_set_size=holder.size)
        self._end_job(call, job_id)
        call.counts["rows"] = int(rows.size)
        log.info("%s: alignment %s with %s: %d rows", self.node_id, job_id, call.caller, rows.size)
        return holder_pb2.PsiAccepted(size=int(rows.size))

    def PsiAbort(
        self, request: holder_pb2.PsiAbortRequest, call: CallInfo
    ) -> holder_pb2.PsiAborted:
        job_id = self._psi_job(call)
        dropped = self._end_job(call, job_id)
        log.info(
            "%s: PSI job %s aborted by %s: %s", self.node_id, job_id, call.caller,
            request.reason[:300],
        )  # fmt: skip
        call.counts["aborted"] = int(dropped)
        return holder_pb2.PsiAborted()
