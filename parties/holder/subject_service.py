"""``xinyidai.v1.Subject`` at a holder: an enterprise's rights exercised through the platform.

Why a service of its own: the platform's portal asks, on behalf of a signed-in enterprise, for
what this holder has about it (``parties.subject.subject_report``), files its disputes and lists
them. The caller is the platform node only (its certificate identity, ``platform.node_id`` in
``node.yaml``); every request carries a subject token the platform signed for that enterprise,
that session and this holder (``parties.platform.tokens``); and the runtime writes the call's one
audit record with the enterprise's USCC as subject, like every other call. Disputes filed here
are resolved by this holder's operators (``xinyidai subject resolve``); the enterprise reads
the outcome through ``Disputes``.

Who learns what: the platform learns this holder's report about the one enterprise the token
names (its own row, uses, requests about it, its authorisations and disputes) and relays it to
that enterprise's session; nothing about any other enterprise. The holder learns that the
enterprise looked, and what it disputes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from federation.audit import AuditLog
from federation.errors import Refused
from federation.transport.base import CallInfo, invalid
from federation.transport.policy import PurposePolicy
from parties.config import NodeConfig
from parties.consent import ConsentRegistry
from parties.data import uscc as uscc_codes
from parties.data.schema import PartySchema
from parties.disputes import DisputeError, DisputeRecord, DisputeRegistry
from parties.platform.tokens import verify_subject_token
from parties.subject import subject_report
from protos import subject_pb2

__all__ = ["MAX_LISTED", "SUBJECT_PURPOSE", "SUBJECT_SERVICE", "SubjectServicer"]

SUBJECT_SERVICE = subject_pb2.DESCRIPTOR.services_by_name["Subject"]
SUBJECT_PURPOSE = "subject-rights"
"""The one purpose ``Subject`` calls state (not ``financing``: no bank asks)."""
MAX_LISTED = 2000
"""Most requests (and events) one report lists, newest kept; a note says how many were left out."""


def _dispute(d: DisputeRecord) -> subject_pb2.Dispute:
    return subject_pb2.Dispute(
        dispute_id=d.dispute_id,
        categories=list(d.categories),
        reason=d.reason,
        raised_by=d.raised_by,
        raised_at=d.raised_at,
        status=d.status,
        resolved_at=d.resolved_at or 0.0,
        resolved_by=d.resolved_by or "",
        resolution_note=d.resolution_note or "",
    )


class SubjectServicer:
    """``Report``, ``FileDispute``, ``Disputes`` for the platform, under a subject token."""

    service = SUBJECT_SERVICE
    purposes = PurposePolicy((SUBJECT_PURPOSE,))
    """The node runs this service's runtime with this purpose policy, not its own list."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        table: pd.DataFrame,
        schema: PartySchema,
        audit: AuditLog,
        consent: ConsentRegistry,
        disputes: DisputeRegistry,
        public_key: Any,
    ):
        self.config = config
        self.node_id = config.node_id
        self.table = table
        self.schema = schema
        self.audit = audit
        self.consent = consent
        self.disputes = disputes
        self.public_key = public_key
        self.platform_id = config.platform.node_id if config.platform is not None else None

    def authorise_caller(self, caller: str, method: str) -> None:
        if self.platform_id is None:
            raise Refused(
                "caller",
                "this holder follows no platform (dev mode): subject requests are answered "
                "only through a platform (`platform:` in node.yaml)",
            )
        if caller != self.platform_id:
            raise Refused(
                "caller",
                f"'{caller}' is not this holder's platform ('{self.platform_id}'); only the "
                "platform relays an enterprise's subject requests",
            )

    def _enterprise(self, request: Any, call: CallInfo) -> str:
        """The request's USCC once the token vouches for it (``Refused`` / INVALID_ARGUMENT)."""
        code = uscc_codes.normalise(request.uscc)
        problem = uscc_codes.problem(code)
        if problem is not None:
            raise invalid(f"uscc {request.uscc[:32]!r}: {problem}")
        if not request.HasField("token"):
            raise Refused("subject-token", "no subject token: requests need the platform's token")
        claims = verify_subject_token(
            self.public_key,
            bytes(request.token.body),
            bytes(request.token.signature),
            uscc=code,
            holder=self.node_id,
        )
        call.subject = code
        call.counts["token_ttl_s"] = int(claims.expires - claims.issued)
        return code

    def Report(
        self, request: subject_pb2.SubjectReportRequest, call: CallInfo
    ) -> subject_pb2.SubjectReportReply:
        code = self._enterprise(request, call)
        config = self.config
        report = subject_report(
            code,
            node_id=self.node_id,
            table=self.table,
            schema=self.schema,
            audit=self.audit,
            consent=self.consent,
            disputes=self.disputes,
            models_dir=config.node_dir / "models",
            alignments_dir=Path(config.node_dir) / "alignments",
            role=config.role,
        )
        data = report.to_dict()
        for key in ("accesses", "events"):
            items = data[key]
            if len(items) > MAX_LISTED:
                data["notes"].append(
                    f"{key}: the newest {MAX_LISTED} of {len(items)} shown (ask this holder's "
                    "operator for the rest)"
                )
                data[key] = items[-MAX_LISTED:]
        call.counts.update(
            fields=len(report.fields), uses=len(report.uses), requests=len(report.accesses)
        )
        body = json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
        return subject_pb2.SubjectReportReply(node_id=self.node_id, report_json=body)

    def FileDispute(
        self, request: subject_pb2.FileDisputeRequest, call: CallInfo
    ) -> subject_pb2.Dispute:
        code = self._enterprise(request, call)
        try:
            record = self.disputes.dispute(
                code,
                reason=request.text,
                by=f"enterprise via {self.platform_id}",
                categories=list(request.categories) or None,
            )
        except DisputeError as exc:
            raise invalid(f"FileDispute: {exc}") from None
        return _dispute(record)

    def Disputes(
        self, request: subject_pb2.DisputesRequest, call: CallInfo
    ) -> subject_pb2.DisputeList:
        code = self._enterprise(request, call)
        records = self.disputes.list(uscc=code)
        call.counts["disputes"] = len(records)
        return subject_pb2.DisputeList(
            node_id=self.node_id,
            disputes=[_dispute(d) for d in records],
            categories=list(self.disputes.categories),
        )
