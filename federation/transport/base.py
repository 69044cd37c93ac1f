"""The transport contract every algorithm and node uses: one dispatch core, two carriers.

``ServiceRuntime`` is the server half: it parses a request from raw bytes, checks the caller and the
purpose, runs the handler, writes one audit record, and turns errors into a status that names the node
and the reason. ``PeerBase`` is the client half: it serialises, calls, records the call in the caller's
audit log, and turns failures into ``PeerError`` naming the peer. The gRPC carrier (``grpc_transport``)
and the in-process twin (``inproc``) both plug into these, so a protocol tested without sockets runs
unchanged across processes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from federation.errors import PeerError, Refused, XinyidaiError
from protos import common_pb2

if TYPE_CHECKING:
    from federation.audit import AuditLog

log = logging.getLogger(__name__)

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

REFUSAL_METADATA_KEY = "xinyidai-refusal"


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
    """Raised inside a handler (or by the runtime) to end a call with a status and a clear detail."""

    def __init__(self, status: str, detail: str, *, refusal: str = ""):
        self.status = status
        self.detail = detail
        self.refusal = refusal
        super().__init__(f"{status}: {detail}")


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


def new_meta(purpose: str = "financing", *, job_id: str = "", model_id: str = "") -> Any:
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


def message_class(descriptor: Any) -> type[Message]:
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


class ServiceRuntime:
    """Server-side dispatch shared by every carrier: parse → authorise → purpose → handle → audit."""

    def __init__(
        self,
        servicer: Servicer,
        *,
        node_id: str,
        audit: AuditLog | None,
        purposes: PurposeChecker,
    ):
        self.servicer = servicer
        self.node_id = node_id
        self.audit = audit
        self.purposes = purposes
        self.service: ServiceDescriptor = servicer.service
        self.methods: dict[str, MethodDescriptor] = {m.name: m for m in self.service.methods}

    # -- helpers ---------------------------------------------------------------------------------
    def _method(self, name: str) -> MethodDescriptor:
        method = self.methods.get(name)
        if method is None:
            raise CallFailed("UNIMPLEMENTED", f"{self.service.full_name} has no method {name}")
        return method

    def _parse(self, method: MethodDescriptor, raw: bytes) -> Message:
        cls = message_class(method.input_type)
        try:
            return cls.FromString(raw)
        except (DecodeError, ValueError) as exc:
            raise invalid(f"malformed {method.input_type.name} for {method.name}: {exc}") from None

    def _admit(self, call: CallInfo, request: Message) -> None:
        self.servicer.authorise_caller(call.caller, call.method)
        meta = getattr(request, "meta", None)
        if meta is None or not request.HasField("meta"):
            raise invalid(f"{call.method}: request carries no meta (purpose, job)")
        call.meta = meta
        call.subject = subject_of(request)
        self.purposes.check(meta.purpose)

    def _record(self, call: CallInfo, decision: str, reason: str) -> None:
        TRAFFIC.add(
            sent=call.counts.get("response_bytes", 0), received=call.counts.get("request_bytes", 0)
        )
        if self.audit is None:
            return
        meta = call.meta
        try:
            self.audit.append(
                direction="served",
                peer=call.caller,
                operation=call.method,
                purpose=getattr(meta, "purpose", ""),
                job_id=getattr(meta, "job_id", ""),
                model_id=getattr(meta, "model_id", ""),
                subject=call.subject,
                request_id=getattr(meta, "request_id", "")[:64],
                counts=call.counts,
                decision=decision,
                reason=reason[:500],
            )
        except Exception:  # an audit failure must be loud; the node operator has to see it
            log.exception("audit append failed on %s for %s", self.node_id, call.method)
            raise

    def _run(self, call: CallInfo, body: Callable[[], Any]) -> Any:
        """Run ``body`` and audit the outcome; map every error to a CallFailed."""
        try:
            result = body()
        except CallFailed as exc:
            self._record(call, "deny" if exc.status == PERMISSION_DENIED else "error", exc.detail)
            raise
        except Refused as exc:
            self._record(call, "deny", f"{exc.code}: {exc.reason}")
            raise CallFailed(
                PERMISSION_DENIED, f"{self.node_id}: {exc.reason}", refusal=exc.code
            ) from None
        except XinyidaiError as exc:
            self._record(call, "error", str(exc))
            raise CallFailed(FAILED_PRECONDITION, f"{self.node_id}: {exc}") from None
        except Exception as exc:
            log.exception("%s failed on %s", call.method, self.node_id)
            self._record(call, "error", f"internal error: {type(exc).__name__}")
            raise CallFailed(
                INTERNAL, f"{self.node_id}: internal error in {call.method} (see the node's log)"
            ) from None
        return result

    # -- the three call shapes -------------------------------------------------------------------
    def unary(
        self,
        name: str,
        raw: bytes,
        *,
        caller: str,
        time_remaining: Callable[[], float | None] = lambda: None,
    ) -> bytes:
        method = self._method(name)
        call = CallInfo(caller=caller, method=name, time_remaining=time_remaining)
        call.counts["request_bytes"] = len(raw)

        def body() -> bytes:
            request = self._parse(method, raw)
            self._admit(call, request)
            response = getattr(self.servicer, name)(request, call)
            out: bytes = response.SerializeToString()
            call.counts["response_bytes"] = len(out)
            return out

        result: bytes = self._run(call, body)
        self._record(call, "allow", "")
        return result

    def client_stream(
        self,
        name: str,
        raws: Iterable[bytes],
        *,
        caller: str,
        time_remaining: Callable[[], float | None] = lambda: None,
    ) -> bytes:
        method = self._method(name)
        call = CallInfo(caller=caller, method=name, time_remaining=time_remaining)
        call.counts["request_bytes"] = 0
        raw_iter = iter(raws)

        def requests() -> Iterator[Message]:
            first = True
            for raw in raw_iter:
                call.counts["request_bytes"] += len(raw)
                request = self._parse(method, raw)
                if first:
                    self._admit(call, request)
                    first = False
                yield request
            if first:
                raise invalid(f"{name}: empty stream")

        def body() -> bytes:
            response = getattr(self.servicer, name)(requests(), call)
            out: bytes = response.SerializeToString()
            call.counts["response_bytes"] = len(out)
            return out

        result: bytes = self._run(call, body)
        self._record(call, "allow", "")
        return result

    def server_stream(
        self,
        name: str,
        raw: bytes,
        *,
        caller: str,
        time_remaining: Callable[[], float | None] = lambda: None,
    ) -> Iterator[bytes]:
        method = self._method(name)
        call = CallInfo(caller=caller, method=name, time_remaining=time_remaining)
        call.counts["request_bytes"] = len(raw)

        def start() -> Iterator[Message]:
            request = self._parse(method, raw)
            self._admit(call, request)
            return iter(getattr(self.servicer, name)(request, call))

        responses = self._run(call, start)
        call.counts["response_bytes"] = 0

        def stream() -> Iterator[bytes]:
            while True:
                item = self._run(call, lambda: next(responses, None))
                if item is None:
                    break
                out: bytes = item.SerializeToString()
                call.counts["response_bytes"] += len(out)
                yield out
            self._record(call, "allow", "")

        return stream()


class PeerBase:
    """Client half shared by both carriers: typed calls, deadlines, audit of calls made, clear errors."""

    def __init__(
        self,
        *,
        node_id: str,
        service: ServiceDescriptor,
        self_id: str,
        audit: AuditLog | None,
        deadline_s: float,
        chunk_bytes: int = 1 << 20,
    ):
        self.node_id = node_id
        self.service = service
        self.self_id = self_id
        self.audit = audit
        self.deadline_s = deadline_s
        self.chunk_bytes = chunk_bytes
        self.methods = {m.name: m for m in service.methods}

    # carriers implement these three; each raises CallFailed for a status from the peer
    def _unary(self, method: str, raw: bytes, timeout: float) -> bytes:
        raise NotImplementedError

    def _client_stream(self, method: str, raws: Iterator[bytes], timeout: float) -> bytes:
        raise NotImplementedError

    def _server_stream(self, method: str, raw: bytes, timeout: float) -> Iterator[bytes]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the carrier's resources."""

    def __enter__(self) -> PeerBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- errors and audit ------------------------------------------------------------------------
    def _error(self, method: str, exc: CallFailed) -> PeerError:
        if exc.status == PERMISSION_DENIED:
            return PeerRefused(self.node_id, method, exc.detail, refusal=exc.refusal or "policy")
        return PeerError(self.node_id, method, exc.detail, code=exc.status)

    def _record(
        self,
        method: str,
        meta: Any,
        counts: dict[str, int],
        decision: str,
        reason: str,
        subject: str = "",
    ) -> None:
        TRAFFIC.add(sent=counts.get("request_bytes", 0), received=counts.get("response_bytes", 0))
        if self.audit is None:
            return
        self.audit.append(
            direction="made",
            peer=self.node_id,
            operation=method,
            purpose=getattr(meta, "purpose", ""),
            job_id=getattr(meta, "job_id", ""),
            model_id=getattr(meta, "model_id", ""),
            subject=subject,
            request_id=getattr(meta, "request_id", "")[:64],
            counts=counts,
            decision=decision,
            reason=reason[:500],
        )

    def _check_blob_id(self, method: str, blob_id: str) -> None:
        try:
            check_blob_id(blob_id)
        except CallFailed as exc:
            raise self._error(method, exc) from None

    def _response_class(self, method: str) -> type[Message]:
        if method not in self.methods:
            raise PeerError(self.node_id, method, f"{self.service.full_name} has no such method")
        return message_class(self.methods[method].output_type)

    # -- the public API --------------------------------------------------------------------------
    def call(self, method: str, request: Message, *, timeout: float | None = None) -> Any:
        """One unary call with a deadline; returns the typed response or raises ``PeerError``."""
        response_cls = self._response_class(method)
        raw = request.SerializeToString()
        counts = {"request_bytes": len(raw)}
        meta = getattr(request, "meta", None)
        subject = subject_of(request)
        started = time.monotonic()
        try:
            out = self._unary(method, raw, timeout or self.deadline_s)
        except CallFailed as exc:
            decision = "deny" if exc.status == PERMISSION_DENIED else "error"
            self._record(method, meta, counts, decision, exc.detail, subject)
            raise self._error(method, exc) from None
        counts["response_bytes"] = len(out)
        counts["elapsed_ms"] = int((time.monotonic() - started) * 1000)
        self._record(method, meta, counts, "allow", "", subject)
        return response_cls.FromString(out)

    def put_blob(
        self,
        blob_id: str,
        data: bytes | Iterable[bytes],
        *,
        meta: Any,
        content_type: str = "application/octet-stream",
        total_size: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Stream a large payload to the peer in chunks; returns its receipt (size and sha256).

        ``data`` may be one bytes object or an iterator of pieces (for example ciphertext batches as
        they are encrypted), so the payload never has to sit in memory twice.
        """
        self._check_blob_id("PutBlob", blob_id)
        pieces: Iterable[bytes] = [data] if isinstance(data, bytes | bytearray) else data
        if total_size is None and isinstance(data, bytes | bytearray):
            total_size = len(data)
        digest = hashlib.sha256()
        counts = {"request_bytes": 0, "chunks": 0}

        def chunks() -> Iterator[bytes]:
            offset = 0
            parts = rechunk(pieces, self.chunk_bytes, digest)
            part = next(parts)
            first = True
            while True:
                following = next(parts, None)
                msg = common_pb2.BlobChunk(offset=offset, data=part)
                if first:
                    msg.blob_id, msg.content_type = blob_id, content_type
                    msg.meta.CopyFrom(meta)
                    msg.total_size = total_size or 0
                    first = False
                if following is None:
                    msg.sha256 = digest.digest()
                offset += len(part)
                raw = msg.SerializeToString()
                counts["chunks"] += 1
                counts["request_bytes"] += len(raw)
                yield raw
                if following is None:
                    return
                part = following

        try:
            out = self._client_stream("PutBlob", chunks(), timeout or self.deadline_s)
        except CallFailed as exc:
            self._record("PutBlob", meta, counts, "error", exc.detail)
            raise self._error("PutBlob", exc) from None
        receipt = common_pb2.BlobReceipt.FromString(out)
        if receipt.sha256 != digest.digest():
            self._record("PutBlob", meta, counts, "error", "receipt digest mismatch")
            raise PeerError(self.node_id, "PutBlob", "the peer stored different bytes than sent")
        self._record("PutBlob", meta, counts, "allow", "")
        return receipt

    def get_blob(self, blob_id: str, *, meta: Any, timeout: float | None = None) -> Iterator[bytes]:
        """Stream a payload back from the peer, verifying its sha256 at the end."""
        self._check_blob_id("GetBlob", blob_id)
        request = common_pb2.BlobRequest(meta=meta, blob_id=blob_id)
        counts = {"response_bytes": 0, "chunks": 0}
        digest = hashlib.sha256()
        expected = b""
        try:
            for raw in self._server_stream(
                "GetBlob", request.SerializeToString(), timeout or self.deadline_s
            ):
                chunk = common_pb2.BlobChunk.FromString(raw)
                counts["response_bytes"] += len(raw)
                counts["chunks"] += 1
                digest.update(chunk.data)
                if chunk.sha256:
                    expected = chunk.sha256
                yield chunk.data
        except CallFailed as exc:
            self._record("GetBlob", meta, counts, "error", exc.detail)
            raise self._error("GetBlob", exc) from None
        if expected != digest.digest():
            self._record("GetBlob", meta, counts, "error", "digest mismatch")
            raise PeerError(
                self.node_id, "GetBlob", f"blob {blob_id} arrived corrupted or cut short"
            )
        self._record("GetBlob", meta, counts, "allow", "")
