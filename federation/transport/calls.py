"""What both halves of a call share: statuses, the errors that carry them, call metadata.

Kept apart from the server (``server``) and client (``client``) halves so each carrier, and every
servicer, can depend on this vocabulary without pulling in either half.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import message_factory
from google.protobuf.message import Message

# Re-exported: handlers name it from here; it is defined with the record it is written into.
from federation.audit.records import SubjectAccess as SubjectAccess
from federation.errors import PeerError
from protos import common_pb2

# Status names shared by both carriers (the gRPC carrier maps them to grpc.StatusCode).
OK = "OK"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
PERMISSION_DENIED = "PERMISSION_DENIED"
NOT_FOUND = "NOT_FOUND"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
UNAVAILABLE = "UNAVAILABLE"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
INTERNAL = "INTERNAL"

UNIMPLEMENTED = "UNIMPLEMENTED"
CANCELLED = "CANCELLED"

REFUSAL_METADATA_KEY = "xinyidai-refusal"
HEAD_METADATA_KEY = "xinyidai-head"
"""Trailing metadata key of the callee's audit chain head (``SEQ:HASH``) on every reply."""

MAX_DETAIL = 300
"""Longest status detail or audit reason the runtime writes: a peer-supplied value never grows
a status, a log line or a record by more than this."""


def cap(text: str, limit: int = MAX_DETAIL) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was (never echo a huge value)."""
    if len(text) <= limit:
        return text
    tail = f"… ({len(text)} chars)"
    return text[: max(0, limit - len(tail))] + tail


def prefix(value: str, limit: int = 32) -> str:
    """A short prefix of a peer-supplied value plus its length, for errors about that value."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} chars)"


class Traffic:
    """Bytes this process sent and received over any carrier (protobuf payloads, both halves).

    Why: experiments report bytes per node; counting at the one place every call is recorded
    keeps the figure true for both carriers without touching the sockets.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = 0
        self.received = 0

    def add(self, *, sent: int, received: int) -> None:
        with self._lock:
            self.sent += sent
            self.received += received

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"bytes_sent": self.sent, "bytes_received": self.received}


TRAFFIC = Traffic()
_BLOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PeerRefused(PeerError):
    """The peer answered, and said no by policy (purpose, consent, caller, dispute...)."""

    def __init__(self, peer: str, operation: str, detail: str, *, refusal: str):
        self.refusal = refusal
        super().__init__(peer, operation, detail, code=PERMISSION_DENIED)


class CallFailed(Exception):
    """Raised inside a handler (or by the runtime) to end a call with a status and a clear detail.

    ``decision`` overrides the audit decision the runtime records ("deny" for refusals before
    any work, e.g. an invalid meta or a busy node); empty means "deny" for PERMISSION_DENIED
    and "error" otherwise.
    """

    def __init__(self, status: str, detail: str, *, refusal: str = "", decision: str = ""):
        self.status = status
        self.detail = cap(detail)
        self.refusal = refusal
        self.decision = decision
        super().__init__(f"{status}: {self.detail}")


def invalid(detail: str) -> CallFailed:
    return CallFailed(INVALID_ARGUMENT, detail)


def check_blob_id(blob_id: str) -> str:
    if not _BLOB_ID.match(blob_id):
        raise invalid(f"blob_id {blob_id!r} must match {_BLOB_ID.pattern}")
    return blob_id


def rechunk(pieces: Iterable[bytes], size: int, digest: Any = None) -> Iterator[bytes]:
    """Re-cut a stream of byte pieces into chunks of exactly ``size`` bytes (the last may be shorter).

    Linear in the payload: large pieces are sliced through a memoryview, small ones gathered in one
    buffer. Always yields at least one (possibly empty) chunk. Feeds ``digest`` if given.
    """
    buf = bytearray()
    emitted = False
    for piece in pieces:
        view = memoryview(piece)
        if digest is not None:
            digest.update(view)
        pos = 0
        if buf:
            take = min(size - len(buf), len(view))
            buf += view[:take]
            pos = take
            if len(buf) == size:
                yield bytes(buf)
                emitted = True
                buf = bytearray()
        while len(view) - pos >= size:
            yield bytes(view[pos : pos + size])
            emitted = True
            pos += size
        buf += view[pos:]
    if buf or not emitted:
        yield bytes(buf)


def subject_of(request: Message) -> str:
    """The enterprise a request is about (its ``uscc`` field, if it has one), for audit records."""
    code = getattr(request, "uscc", "")
    return code.strip().upper()[:64] if isinstance(code, str) else ""


def new_meta(
    purpose: str = "financing", *, job_id: str = "", model_id: str = ""
) -> common_pb2.RequestMeta:
    """A RequestMeta with a fresh request id."""
    return common_pb2.RequestMeta(
        purpose=purpose, job_id=job_id, model_id=model_id, request_id=uuid.uuid4().hex
    )


@dataclass
class CallInfo:
    """What a handler knows about the call beyond the request: who, for how long, and what to record."""

    caller: str
    method: str
    meta: Any = None
    time_remaining: Callable[[], float | None] = lambda: None
    counts: dict[str, int] = field(default_factory=dict)
    subject: str = ""  # the enterprise (USCC) a request is about, for the audit record
    subjects: list[SubjectAccess] = field(default_factory=list)
    """Every enterprise the request was about (batch requests: many); handlers append."""
    peer_head: str = ""  # the caller's audit chain head (SEQ:HASH) as its request stated
    recorded: bool = False  # set by the runtime once the call's one record is written


def message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)
