"""The data holder's gRPC service: typed, vetted requests from the banks its policy lists.

What a holder answers, and to whom:
- ``Hello``: its identity, keyed-hashed column names, row counts and consent counts — to listed banks.
- ``CheckAuthorisation``: whether it would serve the calling bank for one enterprise. Only under a
  platform-signed authorisation from that enterprise for that bank, purpose and data categories;
  otherwise PERMISSION_DENIED with the reason. Whether it holds the enterprise's record is said only
  after consent passes.
- ``PutBlob``/``GetBlob``: payloads of the calling bank's own jobs (ciphertexts), never anyone else's.
- ``PsiStart``/``PsiBlind``/``PsiAccept``/``PsiAbort``: alignment by private set intersection
  (``models.psi.passive``, docs/psi.md) with the calling bank. The result (this node's rows in the
  common order) is stored under ``NODE_DIR/alignments/<bank>/`` and is what jobs naming the
  alignment train on.
- ``ScoreReach``: for a model version whose part it holds (digest equal to the one the bank's
  registry recorded), per enterprise: consent for the caller, purpose and the categories the
  part's splits read, then open disputes, then whether it holds a record; only then the leaves
  its own splits allow (docs/scoring.md). One enterprise: every refusal is PERMISSION_DENIED; a
  batch: one status per enterprise (the audit record counts them).
- ``Verify``: one yes/no question about one authorised enterprise (``parties.holder.verify``).
The runtime (``federation.transport``) has already checked the caller's certificate, the purpose, and
will write the audit record; the handlers here add the decisions only a holder can make. Every
per-enterprise decision goes through ``enterprise_gate``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from federation.blobs import BlobEndpoints, BlobStore
from federation.errors import Refused
from federation.transport.base import CallFailed, CallInfo, invalid
from models.psi.passive import PsiHolderHandlers
from models.psi.store import AlignmentStore
from parties.config import NodeConfig
from parties.consent import ConsentDecision, ConsentRegistry
from parties.data import uscc
from parties.data.encoding import encode_table
from parties.data.schema import PartySchema
from parties.summary import data_categories, hello_reply, table_summary
from protos import common_pb2, holder_pb2

if TYPE_CHECKING:
    from models.secureboost.passive import SecureBoostHolderServicer
    from parties.disputes import DisputeRecord, DisputeRegistry
    from parties.holder.verify import Verifier
    from parties.holder.views import TrainingView


@dataclass(frozen=True)
class Admission:
    """What the gate let through: one status per enterprise (``ok`` or why not) and, for a
    single enterprise, the authorisation that allowed it."""

    statuses: list[str]
    decision: ConsentDecision | None = None


def _mark_disputed(
    disputes: DisputeRegistry,
    codes: Sequence[str],
    statuses: list[str],
    categories: Sequence[str],
) -> None:
    """``disputed`` for every admitted code with an open dispute covering ``categories``
    (one read of the open disputes, not one per enterprise)."""
    from parties.disputes import DisputeStatus

    open_: dict[str, list[DisputeRecord]] = defaultdict(list)
    for d in disputes.list(open_only=True):
        open_[d.uscc].append(d)
    for i, code in enumerate(codes):
        if statuses[i] == "ok" and code in open_:
            if DisputeStatus(code, tuple(open_[code])).covers_any(categories):
                statuses[i] = "disputed"


class HolderServicer(PsiHolderHandlers, BlobEndpoints):
    """``xinyidai.v1.DataHolder`` at one holder: identity, consent, blobs, PSI, scoring reach and
    verification, for the banks its policy lists (the protocol services run next to it)."""

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
        self.chunk_bytes = config.limits.chunk_kb * 1024
        self.categories = data_categories(schema)
        self._summary = table_summary(table, schema, column_key)
        self._banks = {p.node_id for p in config.banks}
        if alignments is None:
            alignments = AlignmentStore(
                config.node_dir / "alignments",
                node_id=config.node_id,
                table_codes=list(table.index),
            )
        self.init_psi(
            node_id=config.node_id,
            codes=table.index,
            blobs=blobs,
            alignments=alignments,
            psi_cache=psi_cache if psi_cache is not None else config.node_dir / "psi-cache",
            workers=workers,
        )
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

    # -- the per-enterprise gate -------------------------------------------------------------
    def _enterprise(self, raw: str) -> str:
        """A USCC from a request, normalised; INVALID_ARGUMENT naming it when it is not one."""
        code = uscc.normalise(raw)
        reason = uscc.problem(code)
        if reason is not None:
            raise invalid(f"uscc {raw!r}: {reason}")
        return code

    def enterprise_gate(
        self,
        call: CallInfo,
        codes: Sequence[str],
        categories: Sequence[str],
        *,
        batch: bool = False,
        disputes: bool = False,
    ) -> Admission:
        """Every answer about named enterprises passes here before anything is computed.

        Consent: an authorisation of each enterprise for the calling bank, the call's purpose
        and ``categories``; with ``disputes``, no open dispute covering them. One enterprise
        (``batch`` False): a refusal raises (PERMISSION_DENIED naming the reason). A batch:
        one status per code, from one read of the stores. The holder gate of the next issue
        (field validation and an audit record before the answer) belongs here too.
        """
        purpose = call.meta.purpose
        if not batch:
            decision = self.consent.check(
                uscc=codes[0], bank_id=call.caller, purpose=purpose, categories=categories
            )
            if not decision.allowed:
                raise Refused("consent", decision.reason)
            if disputes and self.disputes is not None:
                if self.disputes.status(codes[0]).covers_any(categories):
                    raise Refused(
                        "disputed",
                        f"enterprise {codes[0]} has an open dispute covering "
                        f"{', '.join(categories)} data at {self.config.node_id}; "
                        "no score until resolved",
                    )
            return Admission(["ok"], decision)
        statuses = self.consent.statuses(
            codes, bank_id=call.caller, purpose=purpose, categories=categories
        )
        if disputes and self.disputes is not None:
            _mark_disputed(self.disputes, codes, statuses, categories)
        return Admission(statuses)

    # -- who the holder is -------------------------------------------------------------------
    def Hello(self, request: common_pb2.HelloRequest, call: CallInfo) -> common_pb2.HelloReply:
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

    def CheckAuthorisation(
        self, request: holder_pb2.AuthorisationQuery, call: CallInfo
    ) -> holder_pb2.AuthorisationAnswer:
        code = self._enterprise(request.uscc)
        asked = list(request.categories) or self.categories
        unknown = sorted(set(asked) - set(self.categories))
        if unknown:
            raise invalid(f"this holder holds no category {', '.join(unknown)}")
        call.counts["enterprises"] = 1
        decision = self.enterprise_gate(call, [code], asked).decision
        auth_id, valid_until = (decision.auth_id, decision.valid_until) if decision else (None, 0)
        return holder_pb2.AuthorisationAnswer(
            auth_id=auth_id or "",
            has_data=code in self.table.index,
            valid_until=int(valid_until or 0),
        )

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

    def _model_part(
        self, call: CallInfo, request: holder_pb2.ScoreReachRequest
    ) -> tuple[SecureBoostHolderServicer, list[str]]:
        """Check the part named by the request; return the servicer holding it and the data
        categories its splits read."""
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
        return self.secureboost, cats or list(self.categories)

    def ScoreReach(
        self, request: holder_pb2.ScoreReachRequest, call: CallInfo
    ) -> holder_pb2.ScoreReachReply:
        single = bool(request.uscc)
        if single == bool(request.usccs):
            raise invalid("ScoreReach: give one uscc or a list of usccs")
        codes = [uscc.normalise(c) for c in ([request.uscc] if single else request.usccs)]
        part, cats = self._model_part(call, request)
        if single:
            self._enterprise(codes[0])
        statuses = self.enterprise_gate(call, codes, cats, batch=not single, disputes=True).statuses
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
        reach, n_leaves = part.score_reach(
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
            part_sha256=part.part_sha256(call.caller, call.meta.job_id),
        )

    # -- verification (数据核验) -------------------------------------------------------------
    def Verify(self, request: holder_pb2.VerifyRequest, call: CallInfo) -> holder_pb2.VerifyAnswer:
        from parties.holder.predicates import PredicateError

        if self.verifier is None:
            raise CallFailed("UNIMPLEMENTED", f"{self.config.node_id} serves no verification")
        code = self._enterprise(request.uscc)
        try:
            predicate = self.verifier.check(request.predicate_json)
            cats = self.verifier.categories(predicate)
        except PredicateError as exc:
            raise invalid(str(exc)) from None
        self.enterprise_gate(call, [code], cats)
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
