"""What both halves of a call share: statuses, the errors that carry them, call metadata.

Kept apart from the server (``server``) and client (``client``) halves so each carrier, and every
servicer, can depend on this vocabulary without pulling in either half.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Iterator
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

TRANSPORT_FAILURES = frozenset({UNAVAILABLE, DEADLINE_EXCEEDED, CANCELLED})
"""Statuses that say the peer did not answer (down, stalled, cut off), not what it decided: the
only ones a relaying node turns into UNAVAILABLE, and (UNAVAILABLE) the only one gRPC retries."""

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


_RELAYED = frozenset(
    {
        INVALID_ARGUMENT,
        PERMISSION_DENIED,
        NOT_FOUND,
        FAILED_PRECONDITION,
        RESOURCE_EXHAUSTED,
        INTERNAL,
        UNIMPLEMENTED,
    }
)
"""Statuses a relaying node answers with as they are (others, e.g. UNKNOWN, become INTERNAL)."""


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


def relay_failure(exc: PeerError, *, role: str) -> CallFailed:
    """A peer's failure, to answer our own caller with: its status class kept, the peer named
    once (``<role> '<id>': <what it said>``).

    Why: a client must be able to tell its own mistake (INVALID_ARGUMENT), a missing
    precondition or a refusal (with its refusal code) from a node that did not answer; only the
    last is UNAVAILABLE (and so retried by gRPC). Answered as is: the runtime does not prefix
    a relayed status with its own node id."""
    name = f"{role} '{exc.peer}'"
    if exc.code in TRANSPORT_FAILURES:
        return CallFailed(UNAVAILABLE, f"{name} did not answer ({exc.code}): {exc.detail}")
    if exc.code == PERMISSION_DENIED:
        refusal = getattr(exc, "refusal", "") or "policy"
        return CallFailed(
            PERMISSION_DENIED, f"{name}: {exc.detail}", refusal=refusal, decision="deny"
        )
    status = exc.code if exc.code in _RELAYED else INTERNAL
    return CallFailed(status, f"{name}: {exc.detail}", decision="error")


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
    purpose: str = "financing", *, job_id: str = "", model_id: str = "", request_id: str = ""
) -> common_pb2.RequestMeta:
    """A RequestMeta with ``request_id`` (a fresh one if empty)."""
    return common_pb2.RequestMeta(
        purpose=purpose,
        job_id=job_id,
        model_id=model_id,
        request_id=request_id or uuid.uuid4().hex,
    )


MAX_REQUEST_ID = 64


def child_request_id(parent: str, peer: str, part: int = 0) -> str:
    """The request id of a call a node makes to ``peer`` while serving request ``parent``:
    ``<parent>.<peer>`` (``.<part>`` for the second and later calls of one request).

    Why: an auditor follows one logical request from the bank's record to each holder's by its
    id, and a holder recognises the bank's retry of the same call. Cut to the 64 characters a
    request id may have (the parent's tail gives way); a fresh id when there is no parent or the
    suffix alone is too long."""
    suffix = f".{peer}" + (f".{part}" if part else "")
    if not parent or len(suffix) >= MAX_REQUEST_ID:
        return uuid.uuid4().hex
    return parent[: MAX_REQUEST_ID - len(suffix)] + suffix


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
    caller_cert_sha256: str = ""
    """SHA-256 (hex) of the client certificate the caller presented; "" where the carrier has
    none (the in-process twin). Checked by ``ServiceRuntime.certificate_check`` when set."""
    recorded: bool = False  # set by the runtime once the call's one record is written
    note: str = ""  # why this record is special (a retry), written as its reason
    replay_key: Hashable | None = None  # set by the runtime when its answer may be replayed


class RecentRequests:
    """Answers to recent requests, so a retry of one is recognised and answered the same.

    Keyed by (caller, method, request id, sha256 of the request bytes): gRPC resends the very
    bytes of a request it retries, so only a true repeat matches (the same id on another request
    — a job's shared meta — does not). Bounded: ``max_entries`` requests of the last ``ttl_s``
    seconds, answers up to ``max_bytes`` in total (older ones go first; a bigger answer is not
    kept, and a retry of it runs again).

    Why at the callee: a client cannot tell a lost answer from a lost request, so it resends;
    the callee answers the resend from here, without doing the work again (no second call to a
    holder, no second entry in an enterprise's report), and records it as a retry.
    """

    def __init__(
        self, *, max_entries: int = 1024, ttl_s: float = 300.0, max_bytes: int = 32 << 20
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, _Recent] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def key(caller: str, method: str, request_id: str, raw: bytes) -> Hashable:
        return (caller, method, request_id, hashlib.sha256(raw).digest())

    def begin(self, key: Hashable) -> _Recent | None:
        """None for a new request (now in progress under ``key``); else the earlier one's."""
        now = time.monotonic()
        with self._lock:
            self._expire(now)
            found = self._entries.get(key)
            if found is not None:
                return found
            self._entries[key] = _Recent(now)
            while len(self._entries) > self.max_entries:
                self._drop(next(iter(self._entries)))
            return None

    def finish(self, key: Hashable, outcome: bytes | CallFailed | None) -> None:
        """The answer given under ``key`` (None: none to replay; a retry runs again)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            size = len(outcome) if isinstance(outcome, bytes) else 0
            if outcome is None or size > self.max_bytes:
                self._drop(key)
            else:
                entry.outcome, entry.size = outcome, size
                self._bytes += size
                while self._bytes > self.max_bytes:
                    self._drop(next(iter(self._entries)))
            entry.done.set()

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.size
        entry.done.set()

    def _expire(self, now: float) -> None:
        while self._entries:
            first = next(iter(self._entries))
            if now - self._entries[first].started <= self.ttl_s:
                return
            self._drop(first)


class _Recent:
    """One remembered request: when it started, its answer once given."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = threading.Event()
        self.outcome: bytes | CallFailed | None = None
        self.size = 0


def message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)
