"""The in-process twin of the gRPC carrier: the same runtime and client code, no sockets.

Requests and responses still go through protobuf bytes, so a protocol that passes here passes the
wire too (nothing but protobuf can cross). The callee's audit head comes back through a
``trailer`` dict, the twin of gRPC's trailing metadata. Used by protocol tests and
single-process simulation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from federation.transport.client import PeerBase
from federation.transport.server import ServiceRuntime


class InProcessPeer(PeerBase):
    """Calls a ``ServiceRuntime`` directly, as ``self_id`` (the identity mTLS would have proved)."""

    def __init__(self, runtime: ServiceRuntime, **kwargs: Any):
        kwargs.setdefault("node_id", runtime.node_id)
        kwargs.setdefault("service", runtime.service)
        super().__init__(**kwargs)
        self.runtime = runtime

    def health(self, *, timeout: float = 5.0, wait_for_ready: bool = False) -> str:
        """Always ``SERVING``: the runtime lives in this process, so it is up while this is."""
        return "SERVING"

    def _unary(self, method: str, raw: bytes, timeout: float) -> bytes:
        trailer: dict[str, str] = {}
        try:
            return self.runtime.unary(
                method, raw, caller=self.self_id, time_remaining=lambda: timeout, trailer=trailer
            )
        finally:
            self._heard_head(trailer.get("head"))

    def _client_stream(self, method: str, raws: Iterator[bytes], timeout: float) -> bytes:
        trailer: dict[str, str] = {}
        try:
            return self.runtime.client_stream(
                method, raws, caller=self.self_id, time_remaining=lambda: timeout, trailer=trailer
            )
        finally:
            self._heard_head(trailer.get("head"))

    def _server_stream(self, method: str, raw: bytes, timeout: float) -> Iterator[bytes]:
        trailer: dict[str, str] = {}
        try:
            yield from self.runtime.server_stream(
                method, raw, caller=self.self_id, time_remaining=lambda: timeout, trailer=trailer
            )
        finally:
            self._heard_head(trailer.get("head"))
