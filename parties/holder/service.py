"""The data holder's gRPC service: typed, vetted requests from the banks its policy lists.

What a holder answers, and to whom:
- ``Hello``: its identity, keyed-hashed column names, row counts and consent counts — to listed banks.
- ``CheckAuthorisation``: whether it would serve the calling bank for one enterprise. Only under a
  platform-signed authorisation from that enterprise for that bank, purpose and data categories;
  otherwise PERMISSION_DENIED with the reason. Whether it holds the enterprise's record is said only
  after consent passes.
- ``PutBlob``/``GetBlob``: payloads of the calling bank's own jobs (ciphertexts), never anyone else's.
- ``PsiStart``/``PsiBlind``/``PsiAccept``/``PsiAbort``: alignment by private set intersection
  (docs/psi.md) with the calling bank; large messages travel as blobs of the bank's job. The
  result (this node's rows in the common order) is stored under ``NODE_DIR/alignments/<bank>/``
  and is what SecureBoost jobs naming the alignment train on.
- ``ScoreReach``: for a model version whose part it holds (digest equal to the one the bank's
  registry recorded), per enterprise: consent for the caller, purpose and the categories the
  part's splits read, then open disputes, then whether it holds a record; only then the leaves
  its own splits allow (docs/scoring.md). One enterprise: every refusal is PERMISSION_DENIED; a
  batch: one status per enterprise (the audit record counts them).
- ``Verify``: one yes/no question about one authorised enterprise (``parties.holder.verify``).
The runtime (``federation.transport``) has already checked the caller's certificate, the purpose, and
will write the audit record; the handlers here add the decisions only a holder can make.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from federation.blobs import BlobEndpoints, BlobStore
from federation.errors import ConfigError, Refused
from federation.psi import POINT_BYTES, PsiHolder, PsiOverlapError, PsiProtocolError
from federation.transport.base import CallFailed, CallInfo, check_blob_id, invalid
from parties.config import NodeConfig
from parties.consent import ConsentRegistry
from parties.data import uscc
from parties.data.schema import PartySchema
from parties.holder.alignment import AlignmentStore, PsiSessions, encode_table
from parties.summary import table_summary
from protos import common_pb2, holder_pb2

if TYPE_CHECKING:
    from models.secureboost.passive import SecureBoostHolderServicer
    from parties.holder.alignment import TrainingView
    from parties.holder.verify import Verifier
    from parties.subject import DisputeRegistry

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "1"
PSI_SET_BLOB = "psi-set"
PSI_ANSWER_BLOB = "psi-answers"
SOFTWARE_VERSION = "0.1.0"


def data_categories(schema: PartySchema) -> list[str]:
    return sorted({c.category for c in schema.columns} - {"identity", "label", ""})


def hello_reply(
    config: NodeConfig, caller: str, categories: list[str], summary: Any
) -> common_pb2.HelloReply:
    """What any node says about itself in ``Hello`` (consent counts are the holder's addition)."""
    reply = common_pb2.HelloReply(
        node_id=config.node_id,
        role=config.role,
        caller_id=caller,
        software_version=SOFTWARE_VERSION,
        protocol_version=PROTOCOL_VERSION,
        allowed_purposes=config.allowed_purposes,
        categories=categories,
    )
    reply.tables.append(summary)
    return reply


class HolderServicer(BlobEndpoints):
    service = holder_pb2.DESCRIPTOR.services_by_name["DataHolder"]

    def __init__(
        self,
        *,
        config: NodeConfig,
        table: pd.DataFrame,
        schema: PartySchema,
        consent: ConsentRegistry,
        blobs: BlobStore,
        column_key: bytes,
        alignments: AlignmentStore | None = None,
        psi_cache: Path | None = None,
        workers: int = 1,
        secureboost: SecureBoostHolderServicer | None = None,
        view: TrainingView | None = None,
        disputes: DisputeRegistry | None = None,
        verifier: Verifier | None = None,
    ):
        """Scoring and verification (optional; a node passes all four): ``secureboost``, the
        node's SecureBoost servicer (its model parts); ``view``, the encoded table it trains on
        (else encoded here); ``disputes``, the node's dispute registry; ``verifier``, the
        predicate evaluator (with the same disputes and a threshold budget)."""
        self.config = config
        self.table = table
        self.schema = schema
        self.consent = consent
        self.blobs = blobs
        self.chunk_bytes = config.limits.chunk_kb * 1024
        self.categories = data_categories(schema)
        self._summary = table_summary(table, schema, column_key)
        self._banks = {p.node_id for p in config.banks}
        self.alignments = alignments or AlignmentStore(
            config.node_dir / "alignments", node_id=config.node_id, table_codes=list(table.index)
        )
        self.psi_cache = psi_cache if psi_cache is not None else config.node_dir / "psi-cache"
        self.workers = workers
        self.psi = PsiSessions()
        self.secureboost = secureboost
        self.disputes = disputes
        self.verifier = verifier
        self._view = view
        self._encoded: tuple[np.ndarray, list[str]] | None = None
        self._row_of = {code: i for i, code in enumerate(table.index)}

    def authorise_caller(self, caller: str, method: str) -> None:
        if caller not in self._banks:
            raise Refused(
                "caller",
                f"'{caller}' is not a bank this holder serves (policy lists: "
                f"{', '.join(sorted(self._banks)) or 'none'})",
            )

    def Hello(self, request: Any, call: CallInfo) -> Any:
        stats = self.consent.stats(bank_id=call.caller)
        reply = hello_reply(self.config, call.caller, self.categories, self._summary)
        reply.consent.CopyFrom(
            common_pb2.ConsentStats(
                active=stats.active,
                revoked=stats.revoked,
                expired=stats.expired,
                enterprises=stats.enterprises,
            )
        )
        return reply

    def CheckAuthorisation(self, request: Any, call: CallInfo) -> Any:
        code = uscc.normalise(request.uscc)
        reason = uscc.problem(code)
        if reason is not None:
            raise invalid(f"uscc {request.uscc!r}: {reason}")
        asked = list(request.categories) or self.categories
        unknown = sorted(set(asked) - set(self.categories))
        if unknown:
            raise invalid(f"this holder holds no category {', '.join(unknown)}")
        decision = self.consent.check(
            uscc=code, bank_id=call.caller, purpose=call.meta.purpose, categories=asked
        )
        call.counts["enterprises"] = 1
        if not decision.allowed:
            raise Refused("consent", decision.reason)
        return holder_pb2.AuthorisationAnswer(
            auth_id=decision.auth_id or "",
            has_data=code in self.table.index,
            valid_until=int(decision.valid_until or 0),
        )

    # -- alignment (PSI) ---------------------------------------------------------------------
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

    def PsiStart(self, request: Any, call: CallInfo) -> Any:
        job_id = self._psi_job(call)
        if self.alignments.exists(call.caller, job_id):
            raise CallFailed(
                "FAILED_PRECONDITION",
                f"{self.config.node_id}: alignment '{job_id}' exists already; use a new job id",
            )
        try:
            holder = PsiHolder(
                list(self.table.index),
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

    def PsiBlind(self, request: Any, call: CallInfo) -> Any:
        job_id = self._psi_job(call)
        holder = self.psi.get(call.caller, job_id)
        queries = self._read_blob(call, job_id, request.queries_blob_id)
        try:
            answer = holder.blind_queries(queries)
        except PsiProtocolError as exc:
            raise invalid(f"{self.config.node_id}: {exc}") from None
        self._publish(call, job_id, PSI_ANSWER_BLOB, answer)
        n = len(queries) // POINT_BYTES
        call.counts["queries"] = n
        return holder_pb2.PsiBlinded(answer_blob_id=PSI_ANSWER_BLOB, n_queries=n)

    def PsiAccept(self, request: Any, call: CallInfo) -> Any:
        job_id = self._psi_job(call)
        holder = self.psi.get(call.caller, job_id)
        positions = self._read_blob(call, job_id, request.positions_blob_id)
        try:
            rows = holder.accept_intersection(positions)
        except PsiProtocolError as exc:
            raise invalid(f"{self.config.node_id}: {exc}") from None
        except PsiOverlapError:
            self.psi.drop(call.caller, job_id)
            self._forget_blobs(call, job_id)
            raise
        self.alignments.save(call.caller, job_id, rows, holder_set_size=holder.size)
        self.psi.drop(call.caller, job_id)
        self._forget_blobs(call, job_id)
        call.counts["rows"] = int(rows.size)
        log.info(
            "%s: alignment %s with %s: %d rows", self.config.node_id, job_id, call.caller, rows.size
        )
        return holder_pb2.PsiAccepted(size=int(rows.size))

    def PsiAbort(self, request: Any, call: CallInfo) -> Any:
        job_id = self._psi_job(call)
        dropped = self.psi.drop(call.caller, job_id)
        self._forget_blobs(call, job_id)
        log.info(
            "%s: PSI job %s aborted by %s: %s", self.config.node_id, job_id, call.caller,
            request.reason[:300],
        )  # fmt: skip
        call.counts["aborted"] = int(dropped)
        return holder_pb2.PsiAborted()

    # -- scoring (docs/scoring.md) -----------------------------------------------------------
    def _encoded_table(self) -> tuple[np.ndarray, list[str]]:
        """Every row of this node's table encoded as training saw it (computed once)."""
        if self._encoded is None:
            if self._view is not None:
                self._encoded = (self._view.values, list(self._view.names))
            else:
                as_of = self.config.data.as_of if self.config.data is not None else None
                self._encoded = encode_table(self.table, self.schema, as_of=as_of)
        return self._encoded

    def _model_part(self, call: CallInfo, request: Any) -> list[str]:
        """Check the part named by the request; return the data categories its splits read."""
        if self.secureboost is None:
            raise CallFailed("UNIMPLEMENTED", f"{self.config.node_id} serves no scoring")
        job_id = call.meta.job_id
        if not job_id or not call.meta.model_id:
            raise invalid(
                "ScoreReach: meta.job_id (the training job) and meta.model_id are required"
            )
        held = self.secureboost.part_sha256(call.caller, job_id)
        try:
            features = self.secureboost.used_features(call.caller, job_id)
        except CallFailed:
            raise Refused(
                "model-part",
                f"no model part of job '{job_id}' for {call.caller} here; "
                f"{call.meta.model_id} cannot be served",
            ) from None
        if request.part_sha256 and request.part_sha256 != held:
            raise Refused(
                "model-part",
                f"the part of job '{job_id}' held here has sha256 {held[:12] or 'unknown'}…, "
                f"{call.meta.model_id} names {request.part_sha256[:12]}…; refusing to serve it",
            )
        cats = sorted({self.schema.column(f).category for f in features})
        return cats or list(self.categories)

    def _consent_batch(
        self, codes: Sequence[str], bank: str, purpose: str, cats: Sequence[str]
    ) -> list[str]:
        """One status per code from one read of the bank's authorisations (statuses as
        ``ConsentRegistry.check`` decides: any active one covering purpose and categories)."""
        rank = {"invalid": 0, "revoked": 1, "not-yet-valid": 2, "expired": 3}
        found: dict[str, list[Any]] = defaultdict(list)
        wanted = set(codes)
        for record in self.consent.list(bank_id=bank):
            if record.auth.uscc in wanted:
                found[record.auth.uscc].append(record)
        out: list[str] = []
        for code in codes:
            best, best_rank = "no-consent", -1
            for record in found.get(code, ()):
                auth = record.auth
                if record.status != "active":
                    status, r = record.status, rank.get(record.status, 0)
                elif auth.purpose != purpose:
                    status, r = "purpose", 4
                elif not set(cats) <= set(auth.categories):
                    status, r = "category", 5
                else:
                    status, r = "ok", 6
                if r > best_rank:
                    best, best_rank = status, r
            out.append(best)
        return out

    def ScoreReach(self, request: Any, call: CallInfo) -> Any:
        single = bool(request.uscc)
        if single == bool(request.usccs):
            raise invalid("ScoreReach: give one uscc or a list of usccs")
        codes = [uscc.normalise(c) for c in ([request.uscc] if single else request.usccs)]
        cats = self._model_part(call, request)
        purpose = call.meta.purpose
        if single:
            reason = uscc.problem(codes[0])
            if reason is not None:
                raise invalid(f"uscc {codes[0]!r}: {reason}")
            decision = self.consent.check(
                uscc=codes[0], bank_id=call.caller, purpose=purpose, categories=cats
            )
            if not decision.allowed:
                raise Refused("consent", decision.reason)
            statuses = ["ok"]
        else:
            statuses = self._consent_batch(codes, call.caller, purpose, cats)
        if self.disputes is not None:
            if single:
                if self.disputes.status(codes[0]).covers_any(cats):
                    raise Refused(
                        "disputed",
                        f"enterprise {codes[0]} has an open dispute covering "
                        f"{', '.join(cats)} data at {self.config.node_id}; no score until resolved",
                    )
            else:
                from parties.subject import DisputeStatus

                open_: dict[str, list[Any]] = defaultdict(list)
                for d in self.disputes.list(open_only=True):
                    open_[d.uscc].append(d)
                for i, code in enumerate(codes):
                    if statuses[i] == "ok" and code in open_:
                        if DisputeStatus(code, tuple(open_[code])).covers_any(cats):
                            statuses[i] = "disputed"
        rows: list[int] = []
        for i, code in enumerate(codes):
            if statuses[i] != "ok":
                continue
            row = self._row_of.get(code)
            if row is None:
                statuses[i] = "no-data"
            else:
                rows.append(row)
        values, names = self._encoded_table()
        assert self.secureboost is not None  # checked by _model_part
        reach, n_leaves = self.secureboost.score_reach(
            call.caller, call.meta.job_id, values, names, np.asarray(rows, dtype=np.int64)
        )
        for status in set(statuses):
            call.counts[f"status_{status.replace('-', '_')}"] = statuses.count(status)
        call.counts["enterprises"] = len(codes)
        return holder_pb2.ScoreReachReply(
            statuses=statuses,
            reach=np.packbits(reach.ravel()).tobytes(),
            n_leaves=n_leaves,
            categories=cats,
            part_sha256=self.secureboost.part_sha256(call.caller, call.meta.job_id),
        )

    # -- verification (数据核验) -------------------------------------------------------------
    def Verify(self, request: Any, call: CallInfo) -> Any:
        from parties.holder.verify import PredicateError

        if self.verifier is None:
            raise CallFailed("UNIMPLEMENTED", f"{self.config.node_id} serves no verification")
        code = uscc.normalise(request.uscc)
        reason = uscc.problem(code)
        if reason is not None:
            raise invalid(f"uscc {request.uscc!r}: {reason}")
        try:
            predicate = self.verifier.check(request.predicate_json)
            cats = self.verifier.categories(predicate)
        except PredicateError as exc:
            raise invalid(str(exc)) from None
        decision = self.consent.check(
            uscc=code, bank_id=call.caller, purpose=call.meta.purpose, categories=cats
        )
        if not decision.allowed:
            raise Refused("consent", decision.reason)
        answer = self.verifier.verify(
            code, predicate, bank_id=call.caller, authorised_categories=cats
        )
        call.counts["enterprises"] = 1
        if self.disputes is not None:  # the question, never the value, next to the served record
            self.disputes.audit.append(
                direction="local",
                peer=call.caller,
                operation="verify.question",
                purpose=call.meta.purpose,
                subject=code,
                request_id=call.meta.request_id[:64],
                reason=predicate.describe()[:500],
            )
        return holder_pb2.VerifyAnswer(answer=str(answer), categories=cats)
