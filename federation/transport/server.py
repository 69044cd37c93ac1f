"""The server half of the transport: one dispatch core every carrier plugs into.

``ServiceRuntime`` admits a call (concurrency cap, message size), parses the request, checks its
meta (every field's size and form), the caller and the purpose, runs the handler, writes exactly
one audit record, and turns errors into a status that names the node and the reason.

Record first, fail closed: the record of a call is written *before* its answer leaves (for a
server stream: before its last message, which carries the digest), and if it cannot be written
the answer is withheld and the call fails ``INTERNAL`` "not recorded". Every refusal the
runtime can see - an over-long field, an oversize message, a busy node, an unknown method, a
stream the client cancelled - is recorded too, once.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from federation.audit.chain import ChainHead
from federation.audit.records import LIMITS
from federation.errors import Refused, XinyidaiError
from federation.ids import is_name
from federation.transport.calls import (
    CANCELLED,
    DEADLINE_EXCEEDED,
    FAILED_PRECONDITION,
    INTERNAL,
    INVALID_ARGUMENT,
    PERMISSION_DENIED,
    RESOURCE_EXHAUSTED,
    TRAFFIC,
    UNIMPLEMENTED,
    CallFailed,
    CallInfo,
    RecentRequests,
    cap,
    message_class,
    prefix,
    subject_of,
)
from federation.transport.policy import PURPOSE_PATTERN

if TYPE_CHECKING:
    from federation.audit import AuditLog

log = logging.getLogger(__name__)

_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@/:+=-]{0,127}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Checked in ``_admit``: (field, limit, is the form right). An empty value is always allowed
# (not every call belongs to a job); the purpose's presence is the purpose policy's business.
_META_FIELDS: tuple[tuple[str, int, Callable[[str], bool], str], ...] = (
    (
        "purpose",
        64,
        lambda v: PURPOSE_PATTERN.fullmatch(v) is not None,
        "a lowercase word (a-z, 0-9, '_', '.', '-')",
    ),
    ("job_id", 128, is_name, "letters, digits, '.', '_' or '-'"),
    (
        "model_id",
        128,
        lambda v: _MODEL_ID.fullmatch(v) is not None,
        "letters, digits and ._@/:+=-",
    ),
    (
        "request_id",
        64,
        lambda v: _REQUEST_ID.fullmatch(v) is not None,
        "letters, digits, '.', '_' or '-'",
    ),
    ("head", LIMITS["peer_head"], lambda v: _is_head(v), "SEQ:HASH (an audit chain head)"),
)


def _is_head(value: str) -> bool:
    try:
        ChainHead.parse(value)
    except ValueError:
        return False
    return True


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _top_level_field(data: bytes, number: int) -> bytes | None:
    """The bytes of length-delimited field ``number`` of a raw protobuf message (its last
    occurrence), or None: walks the top-level tags only, skipping every other field's bytes."""
    pos, found, size = 0, None, len(data)
    try:
        while pos < size:
            key, pos = _varint(data, pos)
            wire = key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length, pos = _varint(data, pos)
                if key >> 3 == number:
                    found = data[pos : pos + length]
                pos += length
            else:
                return found
    except ValueError:
        return found
    return found


class PurposeChecker(Protocol):
    def check(self, purpose: str) -> None: ...


class Servicer(Protocol):
    """A node's service implementation: one method per RPC, named as in the ``.proto``.

    Unary: ``Method(request, call) -> response``; client stream: ``Method(requests_iter, call)``;
    server stream: ``Method(request, call) -> iterator``. ``authorise_caller`` refuses callers the node's
    policy does not list for that method.
    """

    service: ServiceDescriptor

    def authorise_caller(self, caller: str, method: str) -> None: ...


class CallGate:
    """The node's own cap on concurrent calls, shared by every service on its server.

    Why not gRPC's ``maximum_concurrent_rpcs``: gRPC answers calls over it before any Python
    code runs, so they would leave no record. Here a call over ``capacity`` is refused
    ``RESOURCE_EXHAUSTED`` "busy" *and recorded*; at most ``workers`` handlers run at once, the
    rest of the admitted calls wait (as they waited in gRPC's queue before).
    """

    def __init__(self, *, capacity: int, workers: int):
        if capacity < 1 or workers < 1:
            raise ValueError("capacity and workers must be >= 1")
        self.capacity = capacity
        self.workers = workers
        self._admitted = threading.BoundedSemaphore(capacity)
        self._running = threading.BoundedSemaphore(workers)

    def try_admit(self) -> bool:
        return self._admitted.acquire(blocking=False)

    def release_admission(self) -> None:
        self._admitted.release()

    def run(self, timeout: float | None) -> bool:
        """Wait (at most ``timeout`` seconds) for a free worker; False if none came free."""
        return self._running.acquire(timeout=timeout)

    def done(self) -> None:
        self._running.release()


class _Permit:
    """One call's hold on the gate: admission, then a worker slot, each released once."""

    def __init__(self, gate: CallGate | None):
        self.gate = gate
        self.admitted = False
        self.running = False

    def release(self) -> None:
        if self.gate is None:
            return
        if self.running:
            self.running = False
            self.gate.done()
        if self.admitted:
            self.admitted = False
            self.gate.release_admission()


class ServiceRuntime:
    """Server-side dispatch shared by every carrier: admit → parse → meta → authorise → purpose
    → handle → record → answer."""

    def __init__(
        self,
        servicer: Servicer,
        *,
        node_id: str,
        audit: AuditLog | None,
        purposes: PurposeChecker,
        max_message_bytes: int | None = None,
        gate: CallGate | None = None,
        certificate_check: Callable[[str, str], None] | None = None,
    ):
        """``certificate_check(caller, cert_sha256)``: raises ``Refused`` when the caller's
        certificate is not the one its node id is registered with (a holder following the
        platform: the admitted bank's fingerprint); run right after ``authorise_caller``."""
        self.certificate_check = certificate_check
        self.servicer = servicer
        self.node_id = node_id
        self.audit = audit
        self.purposes = purposes
        self.max_message_bytes = max_message_bytes
        self.gate = gate
        self.service: ServiceDescriptor = servicer.service
        self.methods: dict[str, MethodDescriptor] = {m.name: m for m in self.service.methods}
        # Unary methods whose answer a retry of the same request gets again (``_replay``):
        # those the servicer names, whose work must not be done twice for one request.
        self.replayable = frozenset(getattr(servicer, "replayable", ()))
        self.recent = RecentRequests()

    def limit(self, *, max_message_bytes: int | None, gate: CallGate | None) -> None:
        """Set the node's message limit and concurrency gate (the gRPC server does, once)."""
        self.max_message_bytes = max_message_bytes
        self.gate = gate

    # -- helpers ---------------------------------------------------------------------------------
    def _method(self, call: CallInfo) -> MethodDescriptor:
        method = self.methods.get(call.method)
        if method is None:
            raise CallFailed(
                UNIMPLEMENTED,
                f"{self.node_id}: {self.service.full_name} has no method {prefix(call.method)}",
                decision="deny",
            )
        return method

    def _check_size(self, call: CallInfo, size: int, what: str, raw: bytes | None = None) -> None:
        limit = self.max_message_bytes
        if limit is not None and size > limit:
            self._peek(call, raw)
            raise CallFailed(
                RESOURCE_EXHAUSTED,
                f"{self.node_id}: {call.method} {what} of {size} bytes exceeds this node's "
                f"message limit of {limit} bytes (limits.max_message_mb)",
                decision="deny",
            )

    def _parse(self, method: MethodDescriptor, raw: bytes) -> Message:
        cls = message_class(method.input_type)
        try:
            return cls.FromString(raw)
        except (DecodeError, ValueError) as exc:
            raise CallFailed(
                INVALID_ARGUMENT,
                f"malformed {method.input_type.name} for {method.name}: {cap(str(exc), 120)}",
                decision="deny",
            ) from None

    def _admit(self, call: CallInfo, request: Message) -> None:
        """Everything checked before the handler sees the request; refusals name the field."""
        meta = getattr(request, "meta", None)
        if meta is None or not request.HasField("meta"):
            raise CallFailed(
                INVALID_ARGUMENT,
                f"{call.method}: request carries no meta (purpose, job)",
                decision="deny",
            )
        call.meta = meta  # recorded (cut to the record's columns) even if refused below
        call.subject = subject_of(request)
        for name, limit, good, form in _META_FIELDS:
            value = getattr(meta, name, "")
            if not value:
                continue
            if len(value) > limit:
                raise CallFailed(
                    INVALID_ARGUMENT,
                    f"{call.method}: meta.{name} is {len(value)} characters, over the limit of "
                    f"{limit} ({prefix(value)})",
                    decision="deny",
                )
            if not good(value):
                raise CallFailed(
                    INVALID_ARGUMENT,
                    f"{call.method}: meta.{name} {prefix(value)} must be {form}",
                    decision="deny",
                )
        call.peer_head = meta.head
        self.servicer.authorise_caller(call.caller, call.method)
        if self.certificate_check is not None:
            self.certificate_check(call.caller, call.caller_cert_sha256)
        self.purposes.check(meta.purpose)

    def _record(self, call: CallInfo, decision: str, reason: str, trailer: dict[str, str]) -> None:
        """Write the call's one record (a no-op if it is already written).

        Raises ``CallFailed(INTERNAL, "not recorded")`` if the write fails: the caller must
        then withhold the answer (fail closed)."""
        if call.recorded:
            return
        call.recorded = True
        if call.note:  # a retry: said first, so a reader of the log sees it before the rest
            reason = f"{call.note}; {reason}" if reason else call.note
        TRAFFIC.add(
            sent=call.counts.get("response_bytes", 0), received=call.counts.get("request_bytes", 0)
        )
        if self.audit is None:
            return
        meta = call.meta

        def field(name: str) -> str:
            value = getattr(meta, name, "")
            return value[: LIMITS[name]] if isinstance(value, str) else ""

        try:
            entry = self.audit.append(
                direction="served",
                peer=call.caller[: LIMITS["peer"]],
                operation=call.method[: LIMITS["operation"]],
                purpose=field("purpose"),
                job_id=field("job_id"),
                model_id=field("model_id"),
                subject=call.subject[: LIMITS["subject"]],
                request_id=field("request_id"),
                counts=call.counts,
                decision=decision,
                reason=cap(reason, 500),
                subjects=call.subjects,
                peer_head=call.peer_head if _is_head(call.peer_head) else "",
            )
        except Exception as exc:  # loud for the operator, closed for the caller
            log.error(
                "audit append failed on %s for %s: %s",
                self.node_id,
                call.method[:64],
                cap(f"{type(exc).__name__}: {exc}"),
            )
            # INTERNAL, not UNAVAILABLE: gRPC's retry policy must not re-run the handler.
            raise CallFailed(
                INTERNAL,
                f"{self.node_id}: {call.method[:64]} not recorded (the audit log cannot be "
                "written); the answer was withheld",
                decision="error",
            ) from None
        trailer["head"] = f"{entry.seq}:{entry.hash}"

    def _fail(self, call: CallInfo, exc: BaseException, trailer: dict[str, str]) -> CallFailed:
        """Record ``exc`` as the call's outcome and return the CallFailed to answer with."""
        failed: CallFailed
        if isinstance(exc, CallFailed):
            decision = exc.decision or ("deny" if exc.status == PERMISSION_DENIED else "error")
            failed, reason = exc, exc.detail
        elif isinstance(exc, Refused):
            decision, reason = "deny", f"{exc.code}: {exc.reason}"
            failed = CallFailed(
                PERMISSION_DENIED, f"{self.node_id}: {exc.reason}", refusal=exc.code
            )
        elif isinstance(exc, XinyidaiError):
            decision, reason = "error", str(exc)
            failed = CallFailed(FAILED_PRECONDITION, f"{self.node_id}: {exc}")
        else:
            # The traceback without the exception's text (which may echo a peer's value), and
            # the text capped: one bad request never grows node.log by more than a few KiB.
            log.error(
                "%s failed on %s: %s\n%s",
                call.method[:64],
                self.node_id,
                cap(f"{type(exc).__name__}: {exc}"),
                cap("".join(traceback.format_tb(exc.__traceback__)), 4000),
            )
            decision, reason = "error", f"internal error: {type(exc).__name__}"
            failed = CallFailed(
                INTERNAL, f"{self.node_id}: internal error in {call.method} (see the node's log)"
            )
        try:
            self._record(call, decision, reason, trailer)  # raises "not recorded" if it cannot
        except CallFailed:
            self._settle(call, None)
            raise
        self._settle(call, failed)
        return failed

    # -- retries of one request (request id handling) --------------------------------------------
    def _replay(self, call: CallInfo, raw: bytes) -> bytes | None:
        """A retry of a request this node has answered: its answer again (bytes, or the same
        failure raised), recorded as a retry with no subject (the first record names the
        enterprise; a retry adds no second entry about it). None: a new request, now
        remembered under ``call.replay_key`` until ``_settle``.

        Only the servicer's ``replayable`` methods, and only requests with a request id."""
        request_id = getattr(call.meta, "request_id", "")
        if call.method not in self.replayable or not request_id:
            return None
        key = RecentRequests.key(call.caller, call.method, request_id, raw)
        earlier = self.recent.begin(key)
        if earlier is None:
            call.replay_key = key
            return None
        call.counts["retry"] = 1
        call.subject = ""
        call.note = f"retry of request {request_id[:64]}"
        remaining = call.time_remaining()
        if not earlier.done.wait(timeout=60.0 if remaining is None else max(0.0, remaining)):
            raise CallFailed(
                DEADLINE_EXCEEDED,
                f"{self.node_id}: deadline passed while the first attempt of this request "
                "was still running",
                decision="error",
            )
        outcome = earlier.outcome
        if outcome is None:  # not kept (too big, or never recorded): do it again, marked
            call.note += ": answer not kept, run again"
            return None
        call.note += ": answer replayed"
        if isinstance(outcome, CallFailed):
            raise CallFailed(
                outcome.status, outcome.detail, refusal=outcome.refusal, decision=outcome.decision
            )
        call.counts["response_bytes"] = len(outcome)
        return outcome

    def _settle(self, call: CallInfo, outcome: bytes | CallFailed | None) -> None:
        """Keep the answer of a replayable call for its retries (None: keep none)."""
        if call.replay_key is not None:
            self.recent.finish(call.replay_key, outcome)
            call.replay_key = None

    def _run(self, call: CallInfo, body: Callable[[], Any], trailer: dict[str, str]) -> Any:
        """Run ``body``; on any error record it and raise the CallFailed to answer with."""
        try:
            return body()
        except Exception as exc:
            raise self._fail(call, exc, trailer) from None

    def _peek(self, call: CallInfo, raw: bytes | None) -> None:
        """Best effort, for the record of a call refused before it is parsed (busy, oversize):
        its meta (request id, job, purpose), read by skipping over the other top-level fields
        of the raw message, so even a huge one costs no parse and no copy."""
        method = self.methods.get(call.method)
        field = method.input_type.fields_by_name.get("meta") if method is not None else None
        if raw is None or field is None or call.meta is not None:
            return
        meta_bytes = _top_level_field(raw, field.number)
        if meta_bytes is None:
            return
        try:
            call.meta = message_class(field.message_type).FromString(meta_bytes)
        except (DecodeError, ValueError):
            return

    def _enter(
        self,
        call: CallInfo,
        trailer: dict[str, str],
        raw: bytes | None = None,
        active: Callable[[], bool] = lambda: True,
    ) -> _Permit:
        """Pass the gate: refuse (recorded) if the node is full or the deadline passes first."""
        permit = _Permit(self.gate)
        gate = self.gate
        if gate is None:
            return permit
        if not gate.try_admit():
            self._peek(call, raw)
            raise self._fail(
                call,
                CallFailed(
                    RESOURCE_EXHAUSTED,
                    f"{self.node_id}: busy ({gate.capacity} calls in progress); retry later",
                    decision="deny",
                ),
                trailer,
            )
        permit.admitted = True
        remaining = call.time_remaining()
        if not gate.run(None if remaining is None else max(0.0, remaining)):
            permit.release()
            self._peek(call, raw)
            raise self._fail(
                call,
                CallFailed(
                    DEADLINE_EXCEEDED,
                    f"{self.node_id}: deadline passed while waiting for a free worker",
                    decision="deny",
                ),
                trailer,
            )
        permit.running = True
        if not active():  # the caller gave up while it waited: do no work for nobody
            permit.release()
            self._peek(call, raw)
            raise self._fail(
                call,
                CallFailed(CANCELLED, "cancelled while waiting for a free worker", decision="deny"),
                trailer,
            )
        return permit

    def refuse(
        self,
        method: str,
        *,
        caller: str,
        status: str,
        detail: str,
        trailer: dict[str, str] | None = None,
    ) -> CallFailed:
        """Record a call the carrier refused before dispatch (unknown service or method, a
        caller without a node id) and return the CallFailed to answer with."""
        call = CallInfo(caller=caller, method=method)
        return self._fail(call, CallFailed(status, detail, decision="deny"), trailer or {})

    # -- the three call shapes -------------------------------------------------------------------
    def unary(
        self,
        name: str,
        raw: bytes,
        *,
        caller: str,
        time_remaining: Callable[[], float | None] = lambda: None,
        trailer: dict[str, str] | None = None,
        active: Callable[[], bool] = lambda: True,
        caller_cert_sha256: str = "",
    ) -> bytes:
        """One request, one answer; ``trailer`` receives this node's head ("head") after the
        call's record is written (the carrier sends it back with the answer)."""
        trailer = {} if trailer is None else trailer
        call = CallInfo(
            caller=caller,
            method=name,
            time_remaining=time_remaining,
            caller_cert_sha256=caller_cert_sha256,
        )
        call.counts["request_bytes"] = len(raw)
        permit = self._enter(call, trailer, raw, active)
        try:

            def body() -> bytes:
                method = self._method(call)
                self._check_size(call, len(raw), "request", raw)
                request = self._parse(method, raw)
                self._admit(call, request)
                replayed = self._replay(call, raw)
                if replayed is not None:
                    return replayed
                response = getattr(self.servicer, name)(request, call)
                out: bytes = response.SerializeToString()
                call.counts["response_bytes"] = len(out)
                self._check_size(call, len(out), "response")
                return out

            result: bytes = self._run(call, body, trailer)
            self._record(call, "allow", "", trailer)
            self._settle(call, result)
            return result
        finally:
            self._settle(call, None)  # no-op once settled; else (not recorded) keep nothing
            permit.release()

    def client_stream(
        self,
        name: str,
        raws: Iterable[bytes],
        *,
        caller: str,
        time_remaining: Callable[[], float | None] = lambda: None,
        trailer: dict[str, str] | None = None,
        active: Callable[[], bool] = lambda: True,
        caller_cert_sha256: str = "",
    ) -> bytes:
        """A stream of requests, one answer. The first message is checked (size, meta, caller,
        purpose) before the handler is even called, so a refused stream has no side effect."""
        trailer = {} if trailer is None else trailer
        call = CallInfo(
            caller=caller,
            method=name,
            time_remaining=time_remaining,
            caller_cert_sha256=caller_cert_sha256,
        )
        call.counts["request_bytes"] = 0
        permit = self._enter(call, trailer, None, active)
        try:
            raw_iter = iter(raws)

            def take(method: MethodDescriptor) -> Message | None:
                raw = next(raw_iter, None)
                if raw is None:
                    return None
                call.counts["request_bytes"] += len(raw)
                self._check_size(call, len(raw), "message", raw)
                return self._parse(method, raw)

            def first() -> tuple[MethodDescriptor, Message]:
                method = self._method(call)
                request = take(method)
                if request is None:
                    raise CallFailed(INVALID_ARGUMENT, f"{name}: empty stream", decision="deny")
                self._admit(call, request)
                return method, request

            method, head = self._run(call, first, trailer)

            def requests() -> Iterator[Message]:
                yield head
                while (request := take(method)) is not None:
                    yield request

            def body() -> bytes:
                response = getattr(self.servicer, name)(requests(), call)
                out: bytes = response.SerializeToString()
                call.counts["response_bytes"] = len(out)
                self._check_size(call, len(out), "response")
                return out

            result: bytes = self._run(call, body, trailer)
            self._record(call, "allow", "", trailer)
            return result
        finally:
            permit.release()

    def server_stream(
        self,
        name: str,
        raw: bytes,
        *,
        caller: str,
        time_remaining: Callable[[], float | None] = lambda: None,
        trailer: dict[str, str] | None = None,
        active: Callable[[], bool] = lambda: True,
        caller_cert_sha256: str = "",
    ) -> Generator[bytes, None, None]:
        """One request, a stream of answers. The last message is held back until the call is
        recorded; a stream the client abandons is recorded as cancelled after N chunks."""
        trailer = {} if trailer is None else trailer
        call = CallInfo(
            caller=caller,
            method=name,
            time_remaining=time_remaining,
            caller_cert_sha256=caller_cert_sha256,
        )
        call.counts["request_bytes"] = len(raw)
        permit = self._enter(call, trailer, raw, active)
        try:

            def start() -> Iterator[Message]:
                method = self._method(call)
                self._check_size(call, len(raw), "request", raw)
                request = self._parse(method, raw)
                self._admit(call, request)
                return iter(getattr(self.servicer, name)(request, call))

            responses: Iterator[Message] = self._run(call, start, trailer)
        except BaseException:
            permit.release()
            raise
        call.counts["response_bytes"] = 0
        call.counts["chunks"] = 0
        return self._stream(call, responses, permit, trailer)

    def _stream(
        self,
        call: CallInfo,
        responses: Iterator[Message],
        permit: _Permit,
        trailer: dict[str, str],
    ) -> Generator[bytes, None, None]:
        finished = False
        try:
            held: bytes | None = None

            def following() -> bytes | None:
                item = next(responses, None)
                if item is None:
                    return None
                out: bytes = item.SerializeToString()
                self._check_size(call, len(out), "message")
                return out

            while (out := self._run(call, following, trailer)) is not None:
                if held is not None:
                    call.counts["chunks"] += 1  # counted as handed to the carrier
                    call.counts["response_bytes"] += len(held)
                    yield held
                held = out
            if held is not None:
                call.counts["chunks"] += 1
                call.counts["response_bytes"] += len(held)
            self._record(call, "allow", "", trailer)  # before the last message leaves
            finished = True
            if held is not None:
                yield held
        finally:
            if not finished and not call.recorded:
                # The client went away (cancelled, deadline) while we were streaming.
                try:
                    self._record(
                        call,
                        "error",
                        f"cancelled after {call.counts['chunks']} chunks / "
                        f"{call.counts['response_bytes']} bytes",
                        trailer,
                    )
                except CallFailed:
                    pass  # logged in _record; nobody is left to answer
            close = getattr(responses, "close", None)
            if close is not None:
                close()
            permit.release()
