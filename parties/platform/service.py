"""The platform node's gRPC service (``xinyidai.v1.Platform``) and its process.

It serves the feed to the nodes its ``node.yaml`` lists as peers, over the same runtime as every
node (mutual TLS, one audit record per call, message limits, concurrency cap). Events are written
by the platform's operators with ``xinyidai platform ...`` in the platform's folder, which holds
the signing key; the serving process only reads the feed.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from typing import Any

from federation.audit import AuditLog
from federation.errors import ConfigError, Refused
from federation.pki import load_platform_signing_key
from federation.transport.base import CallInfo, ServiceRuntime, invalid
from federation.transport.grpc_transport import GrpcServer, TlsIdentity
from federation.transport.policy import PurposePolicy
from parties.config import NodeConfig
from parties.platform.events import FeedError
from parties.platform.feed import FeedStore
from parties.platform.stats import (
    MAX_ACCESS_ROWS,
    AccessCount,
    AccessError,
    AccessStore,
    check_access,
)
from protos import platform_pb2

__all__ = ["PLATFORM_SERVICE", "PlatformNode", "PlatformServicer", "load_signing_key"]

log = logging.getLogger(__name__)

PLATFORM_SERVICE = platform_pb2.DESCRIPTOR.services_by_name["Platform"]
REDACTABLE = frozenset({"grant", "revoke", "whitelist"})
"""Kinds a bank receives without their body unless addressed to it."""
MAX_WAIT_MS = 30_000
"""Longest long poll the platform grants (``FeedRequest.wait_ms`` is capped to it)."""
WAIT_TICK_S = 0.05
"""How often a waiting ``Feed`` re-reads the feed's head."""


def load_signing_key(config: NodeConfig) -> Any:
    """The platform's Ed25519 key, refused when others can read it (it signs every grant)."""
    path = config.platform_signing_key
    if path is None:
        raise ConfigError(f"platform '{config.node_id}': no platform_signing_key configured")
    if path.is_file() and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(
            f"{path}: the platform signing key is readable by others; run `chmod 600 {path}`"
        )
    return load_platform_signing_key(path)


class PlatformServicer:
    """``Platform.Feed`` for the nodes the platform's ``peers`` list (holders, banks)."""

    service = PLATFORM_SERVICE

    def __init__(self, *, config: NodeConfig, feed: FeedStore, access: AccessStore | None = None):
        self.config = config
        self.feed = feed
        self.access = access
        self.max_access_rows = MAX_ACCESS_ROWS  # this platform's own bound, not the holder's
        self._followers = {p.node_id for p in config.peers}
        self._banks = {p.node_id for p in config.peers if p.role == "bank"}
        # Long polls hold a worker each: at most half the workers wait, the rest answer at once.
        self._waiters = threading.BoundedSemaphore(max(1, config.limits.max_workers // 2))
        self._closing = threading.Event()

    def close(self) -> None:
        """End every waiting long poll (the node is stopping)."""
        self._closing.set()

    def _wait_for_event(self, since_seq: int, wait_s: float, call: CallInfo) -> None:
        """Long poll: return once the feed is past ``since_seq``, ``wait_s`` has passed, the
        caller's deadline is near, or the node stops. The feed is written by operator commands
        in other processes, so its head is re-read every ``WAIT_TICK_S``."""
        if wait_s <= 0 or not self._waiters.acquire(blocking=False):
            return
        try:
            end = time.monotonic() + wait_s
            while not self._closing.is_set():
                if self.feed.head()[0] > since_seq:
                    return
                left = end - time.monotonic()
                remaining = call.time_remaining()
                if remaining is not None:
                    left = min(left, remaining - 1.0)  # answer before the caller gives up
                if left <= 0:
                    return
                self._closing.wait(min(WAIT_TICK_S, left))
        finally:
            self._waiters.release()

    def authorise_caller(self, caller: str, method: str) -> None:
        if caller not in self._followers:
            raise Refused(
                "caller",
                f"'{caller}' is not a node this platform serves (peers: "
                f"{', '.join(sorted(self._followers)) or 'none'})",
            )

    def _take_access(self, request: platform_pb2.FeedRequest, call: CallInfo) -> None:
        """Check a holder's access report against this platform's own limits and store it,
        tied to the audit head its request carries (the head the platform witnesses)."""
        if self.access is None or not (request.access or request.access_upto_seq):
            return
        rows = [
            AccessCount(c.bank, c.operation, c.decision, int(c.records), int(c.enterprises))
            for c in request.access
        ]
        head_text = call.peer_head or ""
        seq_text = head_text.partition(":")[0]
        head_seq = int(seq_text) if seq_text.isdigit() else None
        from_seq, upto_seq = int(request.access_from_seq), int(request.access_upto_seq)
        try:
            check_access(
                rows,
                node=call.caller,
                banks=[i.node_id for i in self.feed.institutions()],
                from_seq=from_seq,
                upto_seq=upto_seq,
                head_seq=head_seq,
                limit=self.max_access_rows,
            )
        except AccessError as exc:
            raise invalid(f"Feed: {exc}") from None
        stored = self.access.record(
            call.caller, rows, from_seq=from_seq, upto_seq=upto_seq, head=head_text
        )
        call.counts["access_rows"] = len(rows) if stored else 0

    def Feed(self, request: platform_pb2.FeedRequest, call: CallInfo) -> platform_pb2.FeedPage:
        self._take_access(request, call)
        since = int(request.since_seq)
        wait_s = min(int(request.wait_ms), MAX_WAIT_MS) / 1000.0
        if wait_s > 0 and since == self.feed.head()[0]:
            self._wait_for_event(since, wait_s, call)
        try:
            events, head_seq, head_hash = self.feed.since(since, int(request.max_events))
        except FeedError as exc:
            raise invalid(f"Feed: {exc}") from None
        if call.caller in self._banks:
            # A bank keeps only its own grants, revocations and whitelists: the others reach it
            # without their bodies (kind, time and digest only), so one bank never learns which
            # enterprises authorised another.
            own = self.feed.about_bank(call.caller, [e.seq for e in events if e.kind in REDACTABLE])
            events = [
                e.redacted() if e.kind in REDACTABLE and e.seq not in own else e for e in events
            ]
            call.counts["redacted"] = sum(1 for e in events if e.is_redacted)
        call.counts["events"] = len(events)
        call.counts["since_seq"] = since
        return platform_pb2.FeedPage(
            events=[
                platform_pb2.FeedEvent(
                    seq=e.seq,
                    kind=e.kind,
                    body=e.body,
                    prev=e.prev,
                    at=e.at,
                    hash=e.hash,
                    signature=e.signature,
                    body_sha256=e.digest,
                )
                for e in events
            ],
            head_seq=head_seq,
            head_hash=head_hash,
        )


class PlatformNode:
    """One platform process: the feed store, the ``Platform`` service, its audit log."""

    def __init__(self, config: NodeConfig):
        from federation.files import private_dir

        self.config = config
        private_dir(config.node_dir)
        key = load_signing_key(config)  # present and private, or the node does not start
        self.feed = FeedStore.for_node_dir(config.node_dir, key)
        self.access = AccessStore.for_node_dir(config.node_dir)
        self.audit = AuditLog(config.resolved_audit_url, config.node_id)
        self.servicer = PlatformServicer(config=config, feed=self.feed, access=self.access)
        self.runtime = ServiceRuntime(
            self.servicer,
            node_id=config.node_id,
            audit=self.audit,
            purposes=PurposePolicy(config.allowed_purposes),
        )
        self.runtimes = [self.runtime]
        self.server = GrpcServer(
            self.runtimes,
            address=config.address,
            identity=TlsIdentity.from_files(config.tls.ca, config.tls.cert, config.tls.key),
            max_message_bytes=config.limits.max_message_mb << 20,
            max_workers=config.limits.max_workers,
        )

    @property
    def address(self) -> str:
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.server.port}"

    def start(self) -> None:
        self.server.start()
        seq, _ = self.feed.head()
        self.audit.append(
            direction="local",
            peer=self.config.node_id,
            operation="node.start",
            counts={"feed_seq": seq, "port": self.server.port},
        )
        state = {"address": self.address, "pid": os.getpid(), "started_at": time.time()}
        (self.config.node_dir / "serving.json").write_text(json.dumps(state))
        log.info(
            "node %s (platform) serving on %s; feed at seq %d",
            self.config.node_id,
            self.address,
            seq,
        )

    def stop(self, grace: float = 5.0) -> None:
        self.servicer.close()  # waiting long polls answer now, before the grace runs out
        self.server.stop(grace)
        self.audit.append(direction="local", peer=self.config.node_id, operation="node.stop")
        (self.config.node_dir / "serving.json").unlink(missing_ok=True)
        log.info("node %s stopped", self.config.node_id)
