"""A holder following the platform's feed: authorisations, revocations and admitted banks.

Why pull: the holder needs no inbound port for the platform, and a holder that was down simply
asks for everything after the last event it applied (``NODE_DIR/platform_follow.db`` keeps that
seq and hash), so a restart continues where it stopped. Every event is checked - sequence,
chain, hash, the platform's Ed25519 signature with ``platform_public_key`` - before it is
applied; a bad event is refused, recorded once in the audit log, and nothing after it is applied
until the platform serves a good one. Applying is idempotent (a grant already stored, a
revocation already made, change nothing), so an event applied twice after a crash is harmless.

``InstitutionCheck`` is the hook the holder gate calls for every request from a bank: with a
platform configured, only banks the platform admitted and has not suspended are served; without
one (dev mode) every bank the holder's ``peers`` list is served, as before.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

from federation.audit import AuditLog
from federation.errors import PeerError, Refused, XinyidaiError
from federation.store import SqlStore, immediate
from federation.transport.calls import new_meta
from parties.authorisation import ConsentError, SignedAuthorisation, utc_text
from parties.config import NodeConfig
from parties.consent import ConsentRegistry
from parties.platform.events import GENESIS, FeedEvent
from protos import platform_pb2

__all__ = ["PAGE", "FeedFollower", "FollowState", "InstitutionCheck", "attach_follower"]

log = logging.getLogger(__name__)

PAGE = 500
"""Events asked for per Feed call (the platform caps it at its own page size)."""

_metadata = MetaData()
_state = Table(
    "follow_state",
    _metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("updated_at", Double, nullable=False),
)
_institutions = Table(
    "follow_institutions",
    _metadata,
    Column("node_id", String(63), primary_key=True),
    Column("cert_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("at", Double, nullable=False),
)


@dataclass(frozen=True)
class BankStatus:
    node_id: str
    cert_sha256: str
    status: str
    reason: str
    seq: int
    at: float


class FollowState(SqlStore):
    """What this holder has applied of the feed: the last seq and hash, and the banks'
    statuses."""

    LABEL = "platform follow state"
    TABLES = (_state, _institutions)
    FILE = "platform_follow.db"

    def head(self) -> tuple[int, str]:
        with self._engine.connect() as conn:
            row = conn.execute(select(_state).where(_state.c.id == 1)).first()
        return (0, GENESIS) if row is None else (int(row.seq), row.hash)

    def banks(self) -> dict[str, BankStatus]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_institutions)).all()
        return {
            r.node_id: BankStatus(
                r.node_id, r.cert_sha256, r.status, r.reason, int(r.seq), float(r.at)
            )
            for r in rows
        }

    def advance(self, event: FeedEvent, banks: Sequence[BankStatus] = ()) -> None:
        """Record every event up to ``event`` as applied (and the banks' new statuses) in one
        transaction."""
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                for bank in banks:
                    values = {
                        "cert_sha256": bank.cert_sha256,
                        "status": bank.status,
                        "reason": bank.reason,
                        "seq": bank.seq,
                        "at": bank.at,
                    }
                    found = conn.execute(
                        select(_institutions.c.node_id).where(
                            _institutions.c.node_id == bank.node_id
                        )
                    ).first()
                    if found is None:
                        conn.execute(insert(_institutions).values(node_id=bank.node_id, **values))
                    else:
                        conn.execute(
                            update(_institutions)
                            .where(_institutions.c.node_id == bank.node_id)
                            .values(**values)
                        )
                values = {"seq": event.seq, "hash": event.hash, "updated_at": time.time()}
                if conn.execute(select(_state.c.id).where(_state.c.id == 1)).first() is None:
                    conn.execute(insert(_state).values(id=1, **values))
                else:
                    conn.execute(update(_state).where(_state.c.id == 1).values(**values))


class FeedFollower:
    """Applies the platform's events to this holder's consent registry and bank table; polls
    the platform every ``platform.poll_s`` in a background thread (``start``/``stop``)."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        consent: ConsentRegistry,
        public_key: Any,
        audit: AuditLog | None,
        state: FollowState | None = None,
    ):
        self.config = config
        self.node_id = config.node_id
        self.consent = consent
        self.public_key = public_key
        self.audit = audit
        self.state = state or FollowState(FollowState.node_dir_url(config.node_dir))
        self.seq, self.hash = self.state.head()
        self._banks = self.state.banks()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._peer: Any = None
        self.connected: bool | None = None  # None: not tried yet
        self.last_contact = 0.0
        self.head_seq = self.seq  # the platform's head as last seen
        self._refused: set[tuple[int, str]] = set()

    # -- the hook the holder gate calls ------------------------------------------------------
    def bank_status(self, bank: str) -> BankStatus | None:
        with self._lock:
            return self._banks.get(bank)

    # -- applying ------------------------------------------------------------------------------
    def apply(self, events: list[FeedEvent]) -> int:
        """Apply events in order; stops at the first one that fails its checks (recorded).
        Returns how many were applied (events at or below the current seq are skipped)."""
        applied, seq, prev = 0, self.seq, self.hash
        last: FeedEvent | None = None
        banks: list[BankStatus] = []
        for event in events:
            if event.seq <= seq:
                continue
            bank: BankStatus | None = None
            problem = event.problem(self.public_key, expected_seq=seq + 1, prev=prev)
            if problem is None:
                try:
                    bank = self._apply_one(event)
                except (XinyidaiError, KeyError, TypeError, ValueError) as exc:
                    problem = f"content refused: {str(exc)[:200]}"
            if problem is not None:
                self._refuse(event, problem)
                break
            if bank is not None:
                banks.append(bank)
                # a bank's status takes effect at once, not at the end of the page
                self._commit(event, banks)
                banks, last = [], None
            else:
                last = event
            seq, prev = event.seq, event.hash
            applied += 1
        if last is not None:
            # one state write per page: re-applying a page after a crash changes nothing
            self._commit(last, banks)
        return applied

    def _commit(self, event: FeedEvent, banks: list[BankStatus]) -> None:
        self.state.advance(event, banks)
        with self._lock:
            self.seq, self.hash = event.seq, event.hash
            for bank in banks:
                self._banks[bank.node_id] = bank

    def _apply_one(self, event: FeedEvent) -> BankStatus | None:
        body = event.content()
        if event.kind == "grant":
            signed = SignedAuthorisation.from_dict(body)
            self.consent.grant(signed)  # verifies the authorisation's own signature; idempotent
            return None
        if event.kind == "revoke":
            auth_id = str(body["auth_id"])
            try:
                self.consent.revoke(auth_id, reason=f"platform: {body['reason']}")
            except ConsentError:
                pass  # never granted here (this holder joined later): nothing to revoke
            return None
        return BankStatus(
            node_id=str(body["node_id"]),
            cert_sha256=str(body["cert_sha256"]),
            status=str(body["status"]),
            reason=str(body["reason"]),
            seq=event.seq,
            at=event.at,
        )

    def _refuse(self, event: FeedEvent, problem: str) -> None:
        # Recorded once per distinct bad event, not once per poll that fetches it again.
        key = (
            event.seq,
            hashlib.sha256(event.body + event.signature + event.hash.encode()).hexdigest(),
        )
        if key in self._refused:
            return
        if len(self._refused) > 10_000:
            self._refused.clear()
        self._refused.add(key)
        log.error("node %s: platform feed event %d refused: %s", self.node_id, event.seq, problem)
        if self.audit is not None:
            self.audit.append(
                direction="local",
                peer=self._platform_id(),
                operation="platform.feed",
                decision="deny",
                reason=f"event {event.seq} ({event.kind[:16]}) refused: {problem}"[:300],
                counts={"seq": event.seq},
            )

    # -- polling -------------------------------------------------------------------------------
    def _platform_id(self) -> str:
        return self.config.platform.node_id if self.config.platform is not None else "platform"

    def _client(self) -> Any:
        if self._peer is None:
            from federation.transport.grpc_transport import GrpcPeer, TlsIdentity

            link = self.config.platform
            if link is None:
                raise XinyidaiError(f"node '{self.node_id}': no platform configured")
            tls = self.config.tls
            self._peer = GrpcPeer(
                node_id=link.node_id,
                address=link.address,
                identity=TlsIdentity.from_files(tls.ca, tls.cert, tls.key),
                max_message_bytes=self.config.limits.max_message_mb << 20,
                service=platform_pb2.DESCRIPTOR.services_by_name["Platform"],
                self_id=self.node_id,
                audit=None,  # one local record per applied page instead of one per poll
                deadline_s=min(5.0, self.config.limits.deadline_s),
            )
        return self._peer

    def _meta(self) -> Any:
        """The request's meta, carrying this node's audit chain head: the platform records it
        with the call, so every poll is the platform's witness of this log
        (``xinyidai audit verify NODE_DIR --witness PLATFORM_DIR``)."""
        meta = new_meta()
        head = self.audit.head() if self.audit is not None else None
        meta.head = str(head) if head is not None else ""
        return meta

    def poll_once(self) -> int:
        """Fetch and apply every event past ours; the number applied (``PeerError`` if the
        platform cannot be reached)."""
        total = 0
        while True:
            start = self.seq
            page = self._client().call(
                "Feed",
                platform_pb2.FeedRequest(meta=self._meta(), since_seq=start, max_events=PAGE),
            )
            self.head_seq = int(page.head_seq)
            events = [
                FeedEvent(e.seq, e.kind, bytes(e.body), e.prev, e.at, e.hash, bytes(e.signature))
                for e in page.events
            ]
            n = self.apply(events)
            total += n
            if n and self.audit is not None:
                self.audit.append(
                    direction="local",
                    peer=self._platform_id(),
                    operation="platform.feed",
                    reason=f"applied events {start + 1}..{self.seq}",
                    counts={"events": n, "seq": self.seq},
                )
            if not events or n < len(events) or self.seq >= self.head_seq:
                return total

    def _loop(self) -> None:
        link = self.config.platform
        poll = link.poll_s if link is not None else 1.0
        while not self._stop.is_set():
            try:
                self.poll_once()
            except PeerError as exc:
                if self.connected is not False:
                    log.warning(
                        "node %s: platform unreachable (%s); serving with the authorisations "
                        "held (feed seq %d) until it is back",
                        self.node_id,
                        str(exc)[:200],
                        self.seq,
                    )
                self.connected = False
            except Exception:  # the follower must never take the node down
                log.exception("node %s: platform feed poll failed", self.node_id)
            else:
                if self.connected is False:
                    log.info(
                        "node %s: platform reachable again; feed at seq %d",
                        self.node_id,
                        self.seq,
                    )
                self.connected = True
                self.last_contact = time.time()
            self._stop.wait(poll)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="platform-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; one last poll, if the platform is there, leaves it this log's head."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self.connected:
                try:
                    self.poll_once()
                except PeerError:
                    pass
        if self._peer is not None:
            self._peer.close()


class InstitutionCheck:
    """The holder gate's bank check: admitted and not suspended, per the platform's feed.

    Without a follower (no ``platform:`` in ``node.yaml``) it admits every bank (dev mode)."""

    def __init__(self, follower: FeedFollower | None = None):
        self.follower = follower

    @property
    def follows_platform(self) -> bool:
        return self.follower is not None

    def check(self, bank: str) -> None:
        follower = self.follower
        if follower is None:
            return
        status = follower.bank_status(bank)
        if status is None:
            raise Refused(
                "institution",
                f"bank '{bank}' is not admitted by the platform (not in this holder's "
                f"institution registry, feed seq {follower.seq})",
            )
        if status.status != "admitted":
            raise Refused(
                "institution",
                f"bank '{bank}' is suspended by the platform since {utc_text(status.at)}: "
                f"{status.reason}",
            )

    def unknown_auth(self) -> str:
        """What to add to an ``auth-id`` refusal when following a platform."""
        follower = self.follower
        if follower is None:
            return ""
        return f"; not yet known at this holder (platform feed applied up to seq {follower.seq})"


def attach_follower(
    config: NodeConfig, *, consent: ConsentRegistry, gate: Any, public_key: Any, audit: AuditLog
) -> FeedFollower | None:
    """The holder node's follower (started with the node), wired into its gate; None and a
    log line saying so when ``node.yaml`` names no platform (dev mode)."""
    if config.platform is None:
        log.warning(
            "node %s: no platform configured (dev mode): authorisations come only from "
            "`xinyidai consent grant`, and every bank listed under peers is served",
            config.node_id,
        )
        return None
    follower = FeedFollower(config=config, consent=consent, public_key=public_key, audit=audit)
    gate.institutions = InstitutionCheck(follower)
    log.info(
        "node %s: following platform %s at %s every %.1fs (applied up to seq %d)",
        config.node_id,
        config.platform.node_id,
        config.platform.address,
        config.platform.poll_s,
        follower.seq,
    )
    return follower
