"""The data holder's gRPC service: typed, vetted requests from the banks its policy lists.

What a holder answers, and to whom:
- ``Hello``: its identity, keyed-hashed column names, row counts and consent counts — to listed banks.
- ``CheckAuthorisation``: whether it would serve the calling bank for one enterprise. Only under a
  platform-signed authorisation from that enterprise for that bank, purpose and data categories;
  otherwise PERMISSION_DENIED with the reason. Whether it holds the enterprise's record is said only
  after consent passes.
- ``PutBlob``/``GetBlob``: payloads of the calling bank's own jobs (ciphertexts), never anyone else's.
The runtime (``federation.transport``) has already checked the caller's certificate, the purpose, and
will write the audit record; the handlers here add the decisions only a holder can make.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pandas as pd

from federation.blobs import BlobStore
from federation.errors import Refused
from federation.transport.base import CallInfo, invalid
from parties.config import NodeConfig
from parties.consent import ConsentRegistry
from parties.data import uscc
from parties.data.schema import PartySchema
from parties.summary import table_summary
from protos import common_pb2, holder_pb2

PROTOCOL_VERSION = "1"
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


class HolderServicer:
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
    ):
        self.config = config
        self.table = table
        self.schema = schema
        self.consent = consent
        self.blobs = blobs
        self.categories = data_categories(schema)
        self._summary = table_summary(table, schema, column_key)
        self._banks = {p.node_id for p in config.banks}

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

    def PutBlob(self, chunks: Iterator[Any], call: CallInfo) -> Any:
        receipt = self.blobs.receive(chunks, owner=call.caller)
        call.counts["blob_bytes"] = receipt.size
        return receipt

    def GetBlob(self, request: Any, call: CallInfo) -> Iterator[Any]:
        chunk_bytes = self.config.limits.chunk_kb * 1024
        return self.blobs.stream(
            call.caller, request.meta.job_id, request.blob_id, chunk_bytes=chunk_bytes
        )
