"""The gRPC carrier: mutual-TLS servers and channels around ``ServiceRuntime`` and ``PeerBase``.

- Every node presents a certificate from the federation CA whose subjectAltName is its node id; the
  server requires a client certificate and reads the caller's identity from it (never from a message).
- Clients verify the server against the node id they meant to reach (``ssl_target_name_override``),
  so a certificate for ``tax`` cannot answer for ``utility`` even on the same host.
- Requests arrive as raw bytes and are parsed by the runtime, so a malformed message is answered with
  INVALID_ARGUMENT (gRPC's own deserialiser would answer INTERNAL).
- Retries of UNAVAILABLE come from gRPC's service config, health from ``grpc_health``; every call has a
  deadline; message sizes are capped by configuration.
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
from federation.transport.calls import REFUSAL_METADATA_KEY, CallFailed
from federation.transport.client import PeerBase
from federation.transport.server import ServiceRuntime

log = logging.getLogger(__name__)

_IDENTITY = lambda x: x  # noqa: E731 - raw bytes in and out; the runtime parses

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
    """The node id in the caller's certificate (mTLS has already verified the chain)."""
    identities = context.peer_identities() or []
    if context.peer_identity_key() != "x509_subject_alternative_name" or not identities:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, "caller certificate has no node id (SAN)")
    return bytes(identities[0]).decode("ascii", "replace")


def _abort(context: grpc.ServicerContext, exc: CallFailed) -> None:
    if exc.refusal:
        context.set_trailing_metadata(((REFUSAL_METADATA_KEY, exc.refusal),))
    status = getattr(grpc.StatusCode, exc.status, grpc.StatusCode.UNKNOWN)
    context.abort(status, exc.detail)


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
                try:
                    return rt.client_stream(
                        name,
                        request_iterator,
                        caller=_caller_of(context),
                        time_remaining=_remaining(context),
                    )
                except CallFailed as exc:
                    _abort(context, exc)
                    raise  # unreachable: abort raises

            return grpc.stream_unary_rpc_method_handler(
                client_stream, request_deserializer=_IDENTITY, response_serializer=_IDENTITY
            )
        if method.server_streaming and not method.client_streaming:

            def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
                try:
                    yield from rt.server_stream(
                        name,
                        request,
                        caller=_caller_of(context),
                        time_remaining=_remaining(context),
                    )
                except CallFailed as exc:
                    _abort(context, exc)

            return grpc.unary_stream_rpc_method_handler(
                server_stream, request_deserializer=_IDENTITY, response_serializer=_IDENTITY
            )
        if method.client_streaming or method.server_streaming:
            return None  # bidirectional streams are not part of the contract yet

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            try:
                return rt.unary(
                    name, request, caller=_caller_of(context), time_remaining=_remaining(context)
                )
            except CallFailed as exc:
                _abort(context, exc)
                raise

        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=_IDENTITY, response_serializer=_IDENTITY
        )


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
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="rpc"),
            options=[
                ("grpc.max_send_message_length", max_message_bytes),
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=max_workers * 4,
        )
        for runtime in runtimes:
            self._server.add_generic_rpc_handlers((_GenericHandler(runtime),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
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
        trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
        for key, value in trailing or ():
            if key == REFUSAL_METADATA_KEY:
                refusal = value if isinstance(value, str) else value.decode()
        name = code.name if code is not None else "UNKNOWN"
        if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED"):
            detail = f"{detail} (at {self.address})"
        return CallFailed(name, detail or name, refusal=refusal)

    def _unary(self, method: str, raw: bytes, timeout: float) -> bytes:
        rpc = self._channel.unary_unary(
            self._prefix + method, request_serializer=_IDENTITY, response_deserializer=_IDENTITY
        )
        try:
            return rpc(raw, timeout=timeout)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            raise self._failed(exc) from None

    def _client_stream(self, method: str, raws: Iterator[bytes], timeout: float) -> bytes:
        rpc = self._channel.stream_unary(
            self._prefix + method, request_serializer=_IDENTITY, response_deserializer=_IDENTITY
        )
        try:
            return rpc(raws, timeout=timeout)  # type: ignore[no-any-return]
        except grpc.RpcError as exc:
            raise self._failed(exc) from None

    def _server_stream(self, method: str, raw: bytes, timeout: float) -> Iterator[bytes]:
        rpc = self._channel.unary_stream(
            self._prefix + method, request_serializer=_IDENTITY, response_deserializer=_IDENTITY
        )
        try:
            yield from rpc(raw, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._failed(exc) from None

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
