"""The client half of the transport: typed calls, deadlines, audit of calls made, clear errors.

``PeerBase`` serialises, calls through its carrier, records the call in the caller's audit log,
and turns failures into ``PeerError`` naming the peer. A carrier implements the underscored
hooks and ``health``.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

from federation.audit.chain import ChainHead
from federation.audit.records import LIMITS
from federation.errors import PeerError
from federation.transport.calls import (
    PERMISSION_DENIED,
    TRAFFIC,
    CallFailed,
    PeerRefused,
    cap,
    check_blob_id,
    message_class,
    rechunk,
    subject_of,
)
from protos import common_pb2

if TYPE_CHECKING:
    from federation.audit import AuditLog


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
        self._reply = threading.local()

    # carriers implement these three (and ``health``); each raises CallFailed for a status
    # from the peer, and calls ``_heard_head`` with the callee's audit head from the reply
    def _unary(self, method: str, raw: bytes, timeout: float) -> bytes:
        raise NotImplementedError

    def _client_stream(self, method: str, raws: Iterator[bytes], timeout: float) -> bytes:
        raise NotImplementedError

    def _server_stream(self, method: str, raw: bytes, timeout: float) -> Iterator[bytes]:
        raise NotImplementedError

    def health(self, *, timeout: float = 5.0, wait_for_ready: bool = False) -> str:
        """The peer's health status name (``SERVING``...); raises ``PeerError`` if unreachable.

        Part of the contract so launchers and operators can wait for any peer to come up
        without knowing which carrier reaches it.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release the carrier's resources."""

    def __enter__(self) -> PeerBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- witnessed heads -------------------------------------------------------------------------
    def _heard_head(self, head: str | bytes | None) -> None:
        """Carriers pass the callee's chain head from the reply here (a thread's own slot, so
        concurrent calls through one peer never mix their heads up)."""
        text = head.decode("ascii", "replace") if isinstance(head, bytes) else (head or "")
        try:
            self._reply.head = str(ChainHead.parse(text)) if text else ""
        except ValueError:
            self._reply.head = ""  # a malformed head witnesses nothing; never stored

    def _take_head(self) -> str:
        head: str = getattr(self._reply, "head", "")
        self._reply.head = ""
        return head

    def _stamp(self, request: Message) -> None:
        """Put this node's current chain head into an outgoing request's meta, so the callee
        records it (its witness of our log). A request without a meta is left without one."""
        if self.audit is None:
            return
        try:
            if not request.HasField("meta"):
                return
        except ValueError:  # a message type with no meta field
            return
        head = self.audit.head()
        meta: Any = request.meta  # type: ignore[attr-defined]
        meta.head = str(head) if head is not None else ""

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
        peer_head = self._take_head()
        if self.audit is None:
            return

        def field(name: str) -> str:
            value = getattr(meta, name, "")
            return value[: LIMITS[name]] if isinstance(value, str) else ""

        self.audit.append(
            direction="made",
            peer=self.node_id,
            operation=method,
            purpose=field("purpose"),
            job_id=field("job_id"),
            model_id=field("model_id"),
            subject=subject[: LIMITS["subject"]],
            request_id=field("request_id"),
            counts=counts,
            decision=decision,
            reason=cap(reason, 500),
            peer_head=peer_head,
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
        self._take_head()
        self._stamp(request)
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
        self._take_head()
        own_head = self.audit.head() if self.audit is not None else None

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
                    if own_head is not None:
                        msg.meta.head = str(own_head)
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
        self._take_head()
        self._stamp(request)
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
        except GeneratorExit:  # the consumer stopped reading: the carrier cancelled the call
            self._record(
                "GetBlob",
                meta,
                counts,
                "error",
                f"abandoned after {counts['chunks']} chunks / {counts['response_bytes']} bytes",
            )
            raise
        if expected != digest.digest():
            self._record("GetBlob", meta, counts, "error", "digest mismatch")
            raise PeerError(
                self.node_id, "GetBlob", f"blob {blob_id} arrived corrupted or cut short"
            )
        self._record("GetBlob", meta, counts, "allow", "")
