"""The server half of the transport: one dispatch core every carrier plugs into.

``ServiceRuntime`` parses a request from raw bytes, checks the caller and the purpose, runs the
handler, writes one audit record, and turns errors into a status that names the node and the
reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message

from federation.errors import Refused, XinyidaiError
from federation.transport.calls import (
    FAILED_PRECONDITION,
    INTERNAL,
    PERMISSION_DENIED,
    TRAFFIC,
    CallFailed,
    CallInfo,
    invalid,
    message_class,
    subject_of,
)

if TYPE_CHECKING:
    from federation.audit import AuditLog

log = logging.getLogger(__name__)


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
