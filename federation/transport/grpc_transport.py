"""The gRPC carrier: mutual-TLS servers and channels around ``ServiceRuntime`` and ``PeerBase``.

- Every node presents a certificate from the federation CA whose subjectAltName is its node id; the
  server requires a client certificate and reads the caller's identity from it (never from a message).
- Clients verify the server against the node id they meant to reach (``ssl_target_name_override``),
  so a certificate for ``tax`` cannot answer for ``utility`` even on the same host.
- Requests arrive as raw bytes and are parsed by the runtime, so a malformed message is answered with
  INVALID_ARGUMENT (gRPC's own deserialiser would answer INTERNAL).
- Retries of UNAVAILABLE come from gRPC's service config, health from ``grpc_health``; every call has a
  deadline.
- Every request gets exactly one audit record, also the ones refused before a handler: the node's
  message limit and concurrency cap are enforced by the runtime (recorded), not by gRPC; unknown
  services and methods reach a catch-all handler that records them. What gRPC still rejects
  unrecorded, before any Python code: messages over ``HARD_CAP_FACTOR`` times the node's limit,
  more than ``HARD_CONCURRENCY_FACTOR`` times the node's capacity at once, and TLS handshakes
  that fail (no or an untrusted client certificate).
- Every reply carries the callee's audit chain head in trailing metadata (``xinyidai-head``); every
  request carries the caller's in its ``RequestMeta.head``: each side records the other's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from federation.errors import ConfigError, PeerError
from federation.transport.calls import (
    HEAD_METADATA_KEY,
    REFUSAL_METADATA_KEY,
    UNIMPLEMENTED,
    CallFailed,
    cap,
    prefix,
)
from federation.transport.client import PeerBase
from federation.transport.server import CallGate, ServiceRuntime

log = logging.getLogger(__name__)

_IDENTITY = lambda x: x  # noqa: E731 - raw bytes in and out; the runtime parses

HARD_CAP_FACTOR = 4
"""gRPC's own receive limit is this many times the node's ``limits.max_message_mb`` (at most
2 GiB - 1): between the two, the runtime refuses and records; above it, gRPC refuses unrecorded."""

CAPACITY_FACTOR = 4
"""Calls admitted at once per server worker (admitted calls wait for a free worker)."""

HARD_CONCURRENCY_FACTOR = 4
"""gRPC's own ``maximum_concurrent_rpcs`` is this many times the node's capacity: a flood beyond
it is refused by gRPC unrecorded; everything below reaches the runtime's recorded "busy"."""

NO_NODE_ID = "<no node id>"
"""The peer named in the record of a call whose certificate names no node."""

RETRY_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.2s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass(frozen=True)
class TlsIdentity:
    """The PEM material a node (or an operator acting for it) presents: CA, certificate, key."""

    ca: bytes
    cert: bytes
    key: bytes

    @classmethod
    def from_files(cls, ca: Path, cert: Path, key: Path) -> TlsIdentity:
        try:
            return cls(ca.read_bytes(), cert.read_bytes(), key.read_bytes())
        except OSError as exc:
            raise ConfigError(f"cannot read TLS material: {exc.filename}: {exc.strerror}") from None


def channel_options(max_message_bytes: int, target_node_id: str) -> list[tuple[str, Any]]:
    return [
        ("grpc.ssl_target_name_override", target_node_id),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", RETRY_SERVICE_CONFIG),
        ("grpc.keepalive_time_ms", 20_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]


def _caller_of(context: grpc.ServicerContext) -> str:
    """The node id in the caller's certificate (mTLS has already verified the chain): its one
    SAN DNS name, read from the certificate itself.

    Why not ``peer_identities()``: gRPC lists every SAN there, of every type, so an e-mail or
    URI SAN "bank" on a certificate of the federation CA would pass for the bank.
    """
    from federation.pki import peer_node_id

    pems = context.auth_context().get("x509_pem_cert") or []
    if len(pems) != 1:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "caller presented no client certificate")
    try:
        return peer_node_id(pems[0])
    except ConfigError as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, f"caller {exc}")
        raise  # unreachable: abort raises


def _fingerprint_of(context: grpc.ServicerContext) -> str:
    """SHA-256 (hex) of the caller's client certificate (DER), as ``xinyidai platform admit``
    records it; "" if there is not exactly one (``_identify`` refuses that call anyway)."""
    from federation.pki import certificate_sha256

    pems = context.auth_context().get("x509_pem_cert") or []
    return certificate_sha256(pems[0]) if len(pems) == 1 else ""


def _trail(context: grpc.ServicerContext, trailer: dict[str, str], refusal: str = "") -> None:
    pairs = []
    if refusal:
        pairs.append((REFUSAL_METADATA_KEY, refusal))
    if trailer.get("head"):
        pairs.append((HEAD_METADATA_KEY, trailer["head"]))
    if pairs:
        context.set_trailing_metadata(tuple(pairs))


def _abort(context: grpc.ServicerContext, exc: CallFailed, trailer: dict[str, str]) -> None:
    _trail(context, trailer, exc.refusal)
    status = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.UNKNOWN)
    context.abort(status, cap(exc.detail))


def _identify(rt: ServiceRuntime, method: str, context: grpc.ServicerContext) -> str:
    """The caller's node id; a certificate without one is refused by ``_caller_of`` and the
    refusal recorded here too (every request leaves one record)."""
    try:
        return _caller_of(context)
    except Exception:
        try:
            rt.refuse(
                method,
                caller=NO_NODE_ID,
                status="UNAUTHENTICATED",
                detail="caller certificate names no node",
            )
        except CallFailed:
            pass  # "not recorded": logged by the runtime; the call is refused either way
        raise


def _remaining(context: grpc.ServicerContext) -> Callable[[], float | None]:
    return lambda: context.time_remaining()


class _GenericHandler(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no stubs
    """Routes ``/<service>/<method>`` to the runtime; handlers are built once, not per call."""

    def __init__(self, runtime: ServiceRuntime):
        self.runtime = runtime
        prefix = f"/{runtime.service.full_name}/"
        self._handlers = {
            prefix + name: handler
            for name, method in runtime.methods.items()
            if (handler := self._build(name, method)) is not None
        }

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    def _build(self, name: str, method: Any) -> grpc.RpcMethodHandler | None:
        rt = self.runtime
        if method.client_streaming and not method.server_streaming:

            def client_stream(
                request_iterator: Iterator[bytes], context: grpc.ServicerContext
            ) -> bytes:
                trailer: dict[str, str] = {}
                try:
                    out = rt.client_stream(
                        name,
                        request_iterator,
                        caller=_identify(rt, name, context),
                        caller_cert_sha256=_fingerprint_of(context),
                        time_remaining=_remaining(context),
                        active=context.is_active,
                        trailer=trailer,
                    )
                except CallFailed as exc:
                    _abort(context, exc, trailer)
                    raise  # unreachable: abort raises
                _trail(context, trailer)
                return out

            return grpc.stream_unary_rpc_method_handler(
                client_stream, request_deserializer=_IDENTITY, response_serializer=_IDENTITY
            )
        if method.server_streaming and not method.client_streaming:

            def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                trailer: dict[str, str] = {}
                try:
                    stream = rt.server_stream(
                        name,
                        request,
                        caller=_identify(rt, name, context),
                        caller_cert_sha256=_fingerprint_of(context),
                        time_remaining=_remaining(context),
                        active=context.is_active,
                        trailer=trailer,
                    )
                    try:
                        for out in stream:
                            if "head" in trailer:  # recorded: the last message is next
                                _trail(context, trailer)
                            yield out
                            if not context.is_active():  # cancelled: let the runtime record it
                                break
                    finally:
                        stream.close()  # records "cancelled after N chunks" if it did not end
                except CallFailed as exc:
                    _abort(context, exc, trailer)

            return grpc.unary_stream_rpc_method_handler(
                server_stream, request_deserializer=_IDENTITY, response_serializer=_IDENTITY
            )
        if method.client_streaming or method.server_streaming:
            return None  # bidirectional streams are not part of the contract yet

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            trailer: dict[str, str] = {}
            try:
                out = rt.unary(
                    name,
                    request,
                    caller=_identify(rt, name, context),
                    caller_cert_sha256=_fingerprint_of(context),
                    time_remaining=_remaining(context),
                    active=context.is_active,
                    trailer=trailer,
                )
            except CallFailed as exc:
                _abort(context, exc, trailer)
                raise
            _trail(context, trailer)
            return out

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=_IDENTITY, response_serializer=_IDENTITY
        )


class _CatchAll(grpc.GenericRpcHandler):  # type: ignore[misc]  # grpc ships no stubs
    """Answers every method no service claims: recorded, then ``UNIMPLEMENTED``.

    Registered last, so it only sees what every other handler (health included) declined. A
    stream-unary handler reads nothing, so it fits a call of any shape."""

    def __init__(self, runtime: ServiceRuntime):
        self.runtime = runtime

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        path = method.decode("utf-8", "replace") if isinstance(method, bytes) else str(method)

        def refuse(request_iterator: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
            return self._refuse(path, context)

        return grpc.stream_unary_rpc_method_handler(
            refuse, request_deserializer=_IDENTITY, response_serializer=_IDENTITY
        )

    def _refuse(self, path: str, context: grpc.ServicerContext) -> bytes:
        trailer: dict[str, str] = {}
        detail = f"{self.runtime.node_id}: no such service or method {prefix(path, 80)}"
        try:
            failed = self.runtime.refuse(
                path,
                caller=_identify(self.runtime, path[:128], context),
                status=UNIMPLEMENTED,
                detail=detail,
                trailer=trailer,
            )
        except CallFailed as exc:
            failed = exc
        _abort(context, failed, trailer)
        raise AssertionError("unreachable: abort raises")


class GrpcServer:
    """A node's mutual-TLS gRPC server: its services plus the standard health service."""

    def __init__(
        self,
        runtimes: list[ServiceRuntime],
        *,
        address: str,
        identity: TlsIdentity,
        max_message_bytes: int,
        max_workers: int = 16,
    ):
        self.health = health.HealthServicer()
        # The node's own limits live in the runtime (refusals recorded); gRPC keeps larger hard
        # caps only as a last line against floods (refusals there are not recorded).
        capacity = max_workers * CAPACITY_FACTOR
        self.gate = CallGate(capacity=capacity, workers=max_workers)
        hard_cap = min(max_message_bytes * HARD_CAP_FACTOR, 2**31 - 1)
        self._server = grpc.server(
            # One thread per admitted call plus spares that answer "busy" while it is full.
            futures.ThreadPoolExecutor(
                max_workers=capacity + max_workers, thread_name_prefix="rpc"
            ),
            options=[
                ("grpc.max_send_message_length", hard_cap),
                ("grpc.max_receive_message_length", hard_cap),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=capacity * HARD_CONCURRENCY_FACTOR,
        )
        for runtime in runtimes:
            runtime.limit(max_message_bytes=max_message_bytes, gate=self.gate)
            self._server.add_generic_rpc_handlers((_GenericHandler(runtime),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        if runtimes:
            self._server.add_generic_rpc_handlers((_CatchAll(runtimes[0]),))
        credentials = grpc.ssl_server_credentials(
            [(identity.key, identity.cert)], root_certificates=identity.ca, require_client_auth=True
        )
        try:
            self.port = self._server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {address}: {exc}") from None
        if self.port == 0:
            raise ConfigError(f"cannot listen on {address} (in use or not a local address)")
        self.service_names = [rt.service.full_name for rt in runtimes]

    def start(self) -> None:
        self._server.start()
        for name in ["", *self.service_names]:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait(grace + 1)

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._server.wait_for_termination(timeout))


class GrpcPeer(PeerBase):
    """A typed, audited, deadline-bounded client for one remote node over mutual TLS."""

    def __init__(
        self,
        *,
        node_id: str,
        address: str,
        identity: TlsIdentity,
        max_message_bytes: int = 16 << 20,
        **kwargs: Any,
    ):
        super().__init__(node_id=node_id, **kwargs)
        self.address = address
        credentials = grpc.ssl_channel_credentials(
            root_certificates=identity.ca, private_key=identity.key, certificate_chain=identity.cert
        )
        self._channel = grpc.secure_channel(
            address, credentials, options=channel_options(max_message_bytes, node_id)
        )
        self._prefix = f"/{self.service.full_name}/"

    def close(self) -> None:
        self._channel.close()

    def _failed(self, exc: grpc.RpcError) -> CallFailed:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        refusal = ""
        answered = False  # the callee recorded the call: its head came back with the status
        trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
        for key, value in trailing or ():
            if key == REFUSAL_METADATA_KEY:
                refusal = value if isinstance(value, str) else value.decode()
            elif key == HEAD_METADATA_KEY:
                answered = True
        name = code.name if code is not None else "UNKNOWN"
        if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and not answered:
            # Only when this node could not be reached: a status it answered with (e.g. a
            # holder behind it that did not answer) is not about this address.
            detail = f"{detail} (at {self.address})"
        return CallFailed(name, detail or name, refusal=refusal)

    def _hear(self, call: Any) -> None:
        """Pass the callee's audit head from a finished call's trailing metadata on."""
        head = ""
        trailing = call.trailing_metadata() if hasattr(call, "trailing_metadata") else None
        for key, value in trailing or ():
            if key == HEAD_METADATA_KEY:
                head = value
        self._heard_head(head)

    def _unary(self, method: str, raw: bytes, timeout: float) -> bytes:
        rpc = self._channel.unary_unary(
            self._prefix + method, request_serializer=_IDENTITY, response_deserializer=_IDENTITY
        )
        try:
            out, call = rpc.with_call(raw, timeout=timeout)
        except grpc.RpcError as exc:
            self._hear(exc)
            raise self._failed(exc) from None
        self._hear(call)
        return out  # type: ignore[no-any-return]

    def _client_stream(self, method: str, raws: Iterator[bytes], timeout: float) -> bytes:
        rpc = self._channel.stream_unary(
            self._prefix + method, request_serializer=_IDENTITY, response_deserializer=_IDENTITY
        )
        try:
            out, call = rpc.with_call(raws, timeout=timeout)
        except grpc.RpcError as exc:
            self._hear(exc)
            raise self._failed(exc) from None
        self._hear(call)
        return out  # type: ignore[no-any-return]

    def _server_stream(self, method: str, raw: bytes, timeout: float) -> Iterator[bytes]:
        rpc = self._channel.unary_stream(
            self._prefix + method, request_serializer=_IDENTITY, response_deserializer=_IDENTITY
        )
        responses = rpc(raw, timeout=timeout)
        try:
            yield from responses
        except grpc.RpcError as exc:
            self._hear(exc)
            raise self._failed(exc) from None
        finally:
            if not responses.done():
                responses.cancel()  # the consumer stopped early: tell the server at once
        self._hear(responses)

    def health(self, *, timeout: float = 5.0, wait_for_ready: bool = False) -> str:
        """The peer's health status name (``SERVING``...); raises ``PeerError`` if unreachable."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=self.service.full_name),
                timeout=timeout,
                wait_for_ready=wait_for_ready,
            )
        except grpc.RpcError as exc:
            failed = self._failed(exc)
            raise PeerError(self.node_id, "health", failed.detail, code=failed.status) from None
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
