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
  part's splits read (only under one of ``auth_ids`` when the bank names them), then open
  disputes, then whether it holds a record; only then the leaves its own splits allow
  (docs/scoring.md). One enterprise: every refusal is PERMISSION_DENIED; a batch: one status
  per enterprise, and one audit subject row per enterprise.
- ``Verify``: one yes/no question about one authorised enterprise (``parties.holder.verify``).
The runtime (``federation.transport``) has already checked the caller's certificate, the purpose, and
will write the audit record; the handlers here add the decisions only a holder can make. Every
per-enterprise decision — these handlers' and the protocol services' (``Predict``,
``ScorePoints``: ``models.base.HolderModule.gate``) — goes through one ``HolderGate``.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from federation.audit import AuditLog
from federation.blobs import BlobEndpoints, BlobStore
from federation.errors import Refused, XinyidaiError
from federation.ids import name_problem
from federation.transport.base import CallFailed, CallInfo, invalid
from federation.transport.calls import SubjectAccess
from models.base import RowAccess
from models.psi.passive import PsiHolderHandlers
from models.psi.store import AlignmentStore
from parties.config import NodeConfig
from parties.consent import ConsentDecision, ConsentRegistry, check_auth_ids
from parties.data import uscc
from parties.data.encoding import encode_table
from parties.data.schema import PartySchema
from parties.holder.quota import AnswerQuota
from parties.summary import data_categories, hello_reply, node_aliases, table_summary
from protos import common_pb2, holder_pb2

if TYPE_CHECKING:
    from models.secureboost.passive import SecureBoostHolderServicer
    from parties.disputes import DisputeRecord, DisputeRegistry
    from parties.holder.feed import InstitutionCheck
    from parties.holder.verify import Verifier
    from parties.holder.views import TrainingView


@dataclass(frozen=True)
class Admission:
    """What the gate let through: one status per enterprise (``ok`` or why not), the
    authorisation id behind each (the one that allowed it, or the closest miss; "" if none) and,
    for a single enterprise, the consent decision."""

    statuses: list[str]
    auth_ids: list[str]
    decision: ConsentDecision | None = None


def subject_rows(codes: Sequence[str], admission: Admission) -> list[SubjectAccess]:
    """One audit subject row per enterprise: ``allow`` (with the authorisation that covered
    it), ``no-data``, or ``refused:<why>``."""
    out = []
    for code, status, auth_id in zip(codes, admission.statuses, admission.auth_ids, strict=True):
        word = "allow" if status == "ok" else status if status == "no-data" else f"refused:{status}"
        out.append(SubjectAccess(str(code)[:64], auth_id[:128], word))
    return out


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


def _refusal_reason(
    code: str, status: str, decision: ConsentDecision | None, auth_ids: Sequence[str]
) -> str:
    """The consent refusal as the calling bank reads it: the enterprise named, the bank not
    (it is the caller: "for this bank", never "for bank bank"), this node not (its runtime names
    it once)."""
    if status == "no-consent":
        return f"no authorisation from enterprise {code} for this bank"
    if status == "auth-id":
        return (
            f"none of the {len(set(auth_ids))} authorisation id(s) given is an authorisation "
            f"from enterprise {code} for this bank"
        )
    return decision.reason if decision is not None else status


PRIVATE_SETUPS = 16
"""Private-scoring contexts (one per bank and served version) a holder keeps in memory."""
MAX_BATCH = 10_000
"""Most enterprises one ``ScoreReach`` may name (the bank asks in chunks of 4,096)."""


class HolderGate:
    """The holder's one per-enterprise gate: ``DataHolder``'s handlers (``enterprise_gate``)
    and every protocol servicer (``models.base.EnterpriseGate``, injected by the node).

    Maps a request's alignment rows to enterprises (the stored alignment: the only mapping),
    then per enterprise: an authorisation for the calling bank, the purpose and the categories
    the answer reads (only one of ``auth_ids`` when given), not revoked or expired, and no open
    dispute covering those categories. One read of the consent and dispute stores per request.
    """

    def __init__(
        self,
        *,
        node_id: str,
        table_codes: Sequence[str],
        consent: ConsentRegistry,
        alignments: AlignmentStore,
        categories: Sequence[str],
        column_categories: Mapping[str, str],
        disputes: DisputeRegistry | None = None,
    ):
        self.node_id = node_id
        self.codes = np.asarray(list(table_codes), dtype=object)
        self.consent = consent
        self.alignments = alignments
        self.categories = list(categories)
        self.column_categories = dict(column_categories)
        self.disputes = disputes
        # The platform's institution registry (parties.holder.feed), set by the node when it
        # follows a platform; None: dev mode, every bank the policy lists is served.
        self.institutions: InstitutionCheck | None = None
        # Answers per (bank, enterprise) per 24 h (parties.holder.quota), set by the node from
        # ``policy.max_answers_per_enterprise_per_day``; None: not counted. ``alerts``: the
        # node's audit log, which gets an alert whenever a bank hits the quota.
        self.answers: AnswerQuota | None = None
        self.alerts: AuditLog | None = None

    def quota_reason(self, code: str) -> str:
        """The refusal an enterprise past the answer quota gets (names the limit)."""
        limit = self.answers.limit if self.answers is not None else 0
        return (
            f"enterprise {code} was answered about {limit} times for this bank in the last "
            f"24 h (policy max_answers_per_enterprise_per_day = {limit})"
        )

    def check_bank(self, bank: str) -> None:
        """Refuse a bank the platform has not admitted or has suspended (every request from a
        bank passes here: ``HolderServicer.authorise_caller`` and every row access)."""
        if self.institutions is not None:
            self.institutions.check(bank)

    def check_certificate(self, caller: str, cert_sha256: str) -> None:
        """Refuse a bank presenting another certificate than the platform admitted (the node's
        ``ServiceRuntime.certificate_check`` on every holder service)."""
        if self.institutions is not None:
            self.institutions.check_certificate(caller, cert_sha256)

    # -- models.base.EnterpriseGate ----------------------------------------------------------
    def admit(self, access: RowAccess) -> list[SubjectAccess]:
        self.check_bank(access.bank)
        codes = self.codes_of(access.bank, access.alignment_id, access.rows, access.method)
        if access.evaluation:
            return [SubjectAccess(str(c)[:64], "", "evaluation") for c in codes]
        admission = self.admit_codes(
            bank=access.bank,
            purpose=access.purpose,
            codes=codes,
            categories=self.scope(access.categories, access.columns),
            # one enterprise (a served Score): its own indexed lookup, not a read and decode
            # of every authorisation the bank holds here (that read made Predict ~20 ms)
            single=len(codes) == 1,
            quota=True,
        )
        return subject_rows(codes, admission)

    def scope(self, categories: Sequence[str], columns: Sequence[str]) -> list[str]:
        """The data categories an answer reads: as given, else of its columns (a ``woe:``
        column is its raw column's), else — or for a column not in the schema — all."""
        if categories:
            return sorted(set(categories))
        if not columns:
            return list(self.categories)
        found = set()
        for name in columns:
            category = self.column_categories.get(str(name).removeprefix("woe:"))
            if category is None:
                return list(self.categories)
            found.add(category)
        return sorted(found)

    def codes_of(
        self, bank: str, alignment_id: str, rows: np.ndarray, what: str = "request"
    ) -> list[str]:
        """The enterprises at ``rows`` of the bank's alignment (INVALID_ARGUMENT naming what
        is wrong: an unknown alignment, a position past its end, more rows than it has)."""
        problem = name_problem(alignment_id, "alignment_id")
        if problem is not None:
            raise invalid(f"{what}: {problem}")
        try:
            table_rows = self.alignments.load(bank, alignment_id)
        except XinyidaiError as exc:
            raise CallFailed("FAILED_PRECONDITION", f"{what}: {exc}") from None
        n = int(table_rows.size)
        positions = np.asarray(rows, dtype=np.int64).ravel()
        if positions.size > max(n, 1):
            raise invalid(f"{what}: {positions.size} rows asked, the alignment has {n}")
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            raise invalid(f"{what}: rows must be in [0, {n})")
        return [str(c) for c in self.codes[table_rows[positions]]]

    def admit_codes(
        self,
        *,
        bank: str,
        purpose: str,
        codes: Sequence[str],
        categories: Sequence[str],
        auth_ids: Sequence[str] = (),
        single: bool = False,
        disputes: bool = True,
        quota: bool = False,
    ) -> Admission:
        """Consent (and, with ``disputes``, open disputes) per code. ``single``: one
        enterprise, judged by ``ConsentRegistry.check`` for its specific reason. ``quota``: an
        answer about the enterprise (a score, points, a prediction): counted against the
        bank's answers per enterprise per 24 h, status ``quota`` past it."""
        self.check_bank(bank)
        if single:
            decision = self.consent.check(
                uscc=codes[0],
                bank_id=bank,
                purpose=purpose,
                categories=categories,
                auth_ids=auth_ids,
            )
            status = "ok" if decision.allowed else decision.status or "no-consent"
            statuses, ids = [status], [decision.auth_id or ""]
        else:
            pairs = self.consent.decisions(
                codes, bank_id=bank, purpose=purpose, categories=categories, auth_ids=auth_ids
            )
            statuses, ids = [p[0] for p in pairs], [p[1] for p in pairs]
            decision = None
        if disputes and self.disputes is not None:
            _mark_disputed(self.disputes, codes, statuses, categories)
        if quota and self.answers is not None:
            statuses = self.answers.take(bank, codes, statuses)
            over = [c for c, s in zip(codes, statuses, strict=True) if s == "quota"]
            if over and self.alerts is not None:
                self.alerts.alert(
                    peer=bank,
                    operation="answer-quota",
                    subject=over[0] if len(over) == 1 else "",
                    reason=f"{len(over)} enterprise(s) past {self.answers.limit} answers for "
                    f"{bank} in 24 h (first {over[0]}); refused",
                    counts={"enterprises": len(over)},
                    purpose=purpose,
                )
        return Admission(statuses, ids, decision)


class HolderServicer(PsiHolderHandlers, BlobEndpoints):
    """``xinyidai.v1.DataHolder`` at one holder: identity, consent, blobs, PSI, scoring reach and
    verification, for the banks its policy lists (the protocol services run next to it)."""

    service = holder_pb2.DESCRIPTOR.services_by_name["DataHolder"]
    replayable = frozenset({"CheckAuthorisation", "ScoreReach", "PrivateScore", "Verify"})
    """A retry of these (the bank's, same bytes and request id) is answered from the first
    answer (``ServiceRuntime._replay``): one question, one answer, one entry about the
    enterprise, one use of the verification budget."""

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
        gate: HolderGate | None = None,
    ):
        """Scoring and verification (optional; a node passes all four): ``secureboost``, the
        node's SecureBoost servicer (its model parts); ``view``, the encoded table it trains on
        (else encoded here); ``disputes``, the node's dispute registry; ``verifier``, the
        predicate evaluator (with the same disputes and a threshold budget). ``gate``: the
        node's ``HolderGate``, shared with its protocol servicers (default: one built here
        from ``consent``, ``disputes`` and the alignments)."""
        self.config = config
        self.table = table
        self.schema = schema
        self.consent = consent
        self.chunk_bytes = config.limits.chunk_kb * 1024
        self.categories = data_categories(schema)
        self._summary = table_summary(
            table, schema, column_key, aliases=node_aliases(config, schema)
        )
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
        self._private_setups: dict[tuple[str, str, str], tuple[Any, Any, int, Any]] = {}
        self.gate = gate or HolderGate(
            node_id=config.node_id,
            table_codes=list(table.index),
            consent=consent,
            alignments=alignments,
            categories=self.categories,
            column_categories={c.name: c.category for c in schema.columns},
            disputes=disputes,
        )

    def authorise_caller(self, caller: str, method: str) -> None:
        if caller not in self._banks:
            raise Refused(
                "caller",
                f"'{caller}' is not a bank this holder serves (policy lists: "
                f"{', '.join(sorted(self._banks)) or 'none'})",
            )
        self.gate.check_bank(caller)

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
        auth_ids: Sequence[str] = (),
        quota: bool = False,
    ) -> Admission:
        """Every answer about named enterprises passes here before anything is computed.

        ``HolderGate.admit_codes`` (the same code path as the protocol servicers'): an
        authorisation of each enterprise for the calling bank, the call's purpose and
        ``categories`` (one of ``auth_ids`` if given); with ``disputes``, no open dispute
        covering them. Every enterprise gets an audit subject row naming the authorisation
        that covered it. One enterprise (``batch`` False): a refusal raises (PERMISSION_DENIED
        naming the reason). A batch: one status per code, from one read of the stores.
        """
        admission = self.gate.admit_codes(
            bank=call.caller,
            purpose=call.meta.purpose,
            codes=codes,
            categories=categories,
            auth_ids=auth_ids,
            single=not batch,
            disputes=disputes,
            quota=quota,
        )
        call.subjects.extend(subject_rows(codes, admission))
        if not batch and admission.statuses[0] != "ok":
            status, decision = admission.statuses[0], admission.decision
            if status == "disputed":
                raise Refused(
                    "disputed",
                    f"enterprise {codes[0]} has an open dispute covering "
                    f"{', '.join(categories)} data here; no answer until it is resolved",
                )
            if status == "quota":
                raise Refused("limit", self.gate.quota_reason(codes[0]))
            note = ""
            if status == "auth-id" and self.gate.institutions is not None:
                note = self.gate.institutions.unknown_auth()
            raise Refused(
                "auth-id" if status == "auth-id" else "consent",
                _refusal_reason(codes[0], status, decision, auth_ids) + note,
            )
        return admission

    # -- who the holder is -------------------------------------------------------------------
    def Hello(self, request: common_pb2.HelloRequest, call: CallInfo) -> common_pb2.HelloReply:
        stats = self.consent.stats(bank_id=call.caller)
        reply = hello_reply(self.config, call.caller, self.categories, self._summary)
        consent = common_pb2.ConsentStats(
            active=stats.active,
            revoked=stats.revoked,
            expired=stats.expired,
            enterprises=stats.enterprises,
        )
        if request.alignment_id:
            consent.auth_set_sha256, consent.auth_set_size = self._auth_set(
                call, request.alignment_id
            )
        reply.consent.CopyFrom(consent)
        return reply

    def _auth_set(self, call: CallInfo, alignment_id: str) -> tuple[str, int]:
        """sha256 over the sorted ids (one per line) of the active authorisations, for the
        caller and the request's purpose, of the alignment's enterprises, and their number.

        Why: the bank logs it with a model version (its consent snapshot), so an auditor can
        tie the version to the exact authorisations this holder held; no USCC leaves."""
        problem = name_problem(alignment_id, "alignment_id")
        if problem is not None:
            raise invalid(f"Hello: {problem}")
        try:
            rows = self.gate.alignments.load(call.caller, alignment_id)
        except XinyidaiError as exc:
            raise CallFailed("FAILED_PRECONDITION", f"Hello: {exc}") from None
        codes = {str(c) for c in self.gate.codes[rows]}
        ids = sorted(
            r.auth.auth_id
            for r in self.consent.list(bank_id=call.caller, include_inactive=False)
            if r.auth.purpose == call.meta.purpose and r.auth.uscc in codes
        )
        return hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest(), len(ids)

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
        self,
        call: CallInfo,
        request: holder_pb2.ScoreReachRequest
        | holder_pb2.PrivateScoreRequest
        | holder_pb2.PrivateScoreSetupRequest,
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

    def _gated_reach(
        self, request: holder_pb2.ScoreReachRequest | holder_pb2.PrivateScoreRequest, call: CallInfo
    ) -> tuple[list[str], list[str], list[str], list[str], np.ndarray, int]:
        """The checks every scoring answer passes, in order (request form, model part, the
        holder gate per enterprise, data); returns (codes, statuses, auth ids, categories,
        bool reach (n_ok, leaves) of the ``ok`` ones, n_leaves)."""
        single = bool(request.uscc)
        if single == bool(request.usccs):
            raise invalid(f"{call.method}: give one uscc or a list of usccs")
        if len(request.usccs) > MAX_BATCH:
            raise invalid(
                f"{call.method}: at most {MAX_BATCH} usccs per request, got "
                f"{len(request.usccs)} (the bank sends batches in chunks)"
            )
        codes = [uscc.normalise(c) for c in ([request.uscc] if single else request.usccs)]
        auth_ids = check_auth_ids(request.auth_ids, f"{call.method}.auth_ids")
        part, cats = self._model_part(call, request)
        if single:
            self._enterprise(codes[0])
        admission = self.enterprise_gate(
            call, codes, cats, batch=not single, disputes=True, auth_ids=auth_ids, quota=True
        )
        statuses = list(admission.statuses)
        rows: list[int] = []
        for i, code in enumerate(codes):
            if statuses[i] != "ok":
                continue
            row = self._row_of.get(code)
            if row is None:
                statuses[i] = "no-data"
                call.subjects[-len(codes) + i] = SubjectAccess(
                    code[:64], admission.auth_ids[i][:128], "no-data"
                )
            else:
                rows.append(row)
        values, names = self._encoded_table()
        reach, n_leaves = part.score_reach(
            call.caller, call.meta.job_id, values, names, np.asarray(rows, dtype=np.int64)
        )
        for status in set(statuses):
            call.counts[f"status_{status.replace('-', '_')}"] = statuses.count(status)
        call.counts["enterprises"] = len(codes)
        ids = [a if st == "ok" else "" for st, a in zip(statuses, admission.auth_ids, strict=True)]
        return codes, statuses, ids, cats, reach, n_leaves

    def ScoreReach(
        self, request: holder_pb2.ScoreReachRequest, call: CallInfo
    ) -> holder_pb2.ScoreReachReply:
        _, statuses, ids, cats, reach, n_leaves = self._gated_reach(request, call)
        return holder_pb2.ScoreReachReply(
            statuses=statuses,
            reach=np.packbits(reach.ravel()).tobytes(),
            n_leaves=n_leaves,
            categories=cats,
            part_sha256=self.secureboost.part_sha256(call.caller, call.meta.job_id)
            if self.secureboost is not None
            else "",
            auth_ids=ids,
        )

    # -- private scoring (docs/scoring.md, "Serving modes") ----------------------------------
    def PrivateScoreSetup(
        self, request: holder_pb2.PrivateScoreSetupRequest, call: CallInfo
    ) -> holder_pb2.PrivateScoreSetupReply:
        """Keep the bank's public CKKS context for a part held here (checked like ScoreReach's),
        with a fresh X25519 key for the chain; at most ``PRIVATE_SETUPS`` kept."""
        from models.secureboost.private_scoring import (
            HolderChainKey,
            PrivateScoringError,
            ZeroReserve,
            load_public_context,
        )

        part, _ = self._model_part(call, request)
        try:
            ctx = load_public_context(bytes(request.ckks_context))
        except PrivateScoringError as exc:
            raise invalid(f"PrivateScoreSetup: {exc}") from None
        digest = hashlib.sha256(bytes(request.ckks_context)).hexdigest()
        slots = int(ctx.seal_context().data.first_context_data().parms().poly_modulus_degree()) // 2
        key = HolderChainKey()
        setups = self._private_setups
        # re-randomisers made ahead by a niced worker (models.secureboost.private_scoring)
        zeros = ZeroReserve(bytes(request.ckks_context), capacity=4)
        setups[(call.caller, call.meta.job_id, digest)] = (ctx, key, slots, zeros)
        while len(setups) > PRIVATE_SETUPS:
            setups.pop(next(iter(setups)))[3].close()
        values, names = self._encoded_table()
        _, n_leaves = part.score_reach(
            call.caller, call.meta.job_id, values, names, np.zeros(0, dtype=np.int64)
        )
        return holder_pb2.PrivateScoreSetupReply(
            context_sha256=digest, x25519_public_key=key.public, n_leaves=n_leaves
        )

    def PrivateScore(
        self, request: holder_pb2.PrivateScoreRequest, call: CallInfo
    ) -> holder_pb2.PrivateScoreReply:
        from models.secureboost.private_scoring import (
            Layout,
            PrivateScoringError,
            chain_info,
            codes_aad,
            holder_step,
        )

        setup = self._private_setups.get((call.caller, call.meta.job_id, request.context_sha256))
        if setup is None:
            raise CallFailed(
                "FAILED_PRECONDITION",
                "private-setup: no CKKS context for this model here (PrivateScoreSetup first)",
            )
        ctx, key, slots, zeros = setup
        codes, statuses, ids, cats, reach, n_leaves = self._gated_reach(request, call)
        layout = Layout(n_leaves=n_leaves, n_blocks=int(request.n_blocks), slots=slots)
        mask = np.zeros((len(codes), n_leaves), dtype=bool)
        ok = np.flatnonzero(np.asarray(statuses, dtype=object) == "ok")
        mask[ok] = reach
        aad = codes_aad(codes, layout, call.meta.model_id)
        me = self.config.node_id
        try:
            layout.check()
            payload = bytes(request.payload)
            if request.previous_holder:
                payload = key.open(
                    bytes(request.previous_public_key),
                    chain_info(call.meta.model_id, request.previous_holder, me),
                    aad,
                    payload,
                )
            payload = holder_step(
                ctx, layout, payload, mask, last=not request.next_holder, zeros=zeros
            )
            if request.next_holder:
                payload = key.seal(
                    bytes(request.next_public_key),
                    chain_info(call.meta.model_id, me, request.next_holder),
                    aad,
                    payload,
                )
        except PrivateScoringError as exc:
            raise invalid(f"PrivateScore: {exc}") from None
        return holder_pb2.PrivateScoreReply(
            statuses=statuses,
            auth_ids=ids,
            categories=cats,
            payload=payload,
            part_sha256=self.secureboost.part_sha256(call.caller, call.meta.job_id)
            if self.secureboost is not None
            else "",
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
