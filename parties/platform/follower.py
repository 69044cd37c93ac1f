"""A node following the platform's feed: a holder (authorisations, revocations, admitted banks)
or a bank (its own admitted status, the authorisations granted to it, whitelist pushes).

Why pull: the follower needs no inbound port for the platform, and a follower that was down
simply asks for everything after the last event it applied (``NODE_DIR/platform_follow.db``
keeps that seq and hash), so a restart continues where it stopped. Every event is checked -
sequence, chain, hash, the platform's Ed25519 signature with ``platform_public_key`` - before it
is applied; a bad event is refused, recorded once in the audit log, and nothing after it is
applied until the platform serves a good one. Applying is idempotent (a grant already stored, a
revocation already made, change nothing), so an event applied twice after a crash is harmless.

Why a long poll: the follower asks ``Feed`` to wait up to ``WAIT_S`` for an event past its seq,
so a new event arrives within the platform's check interval (about 0.05 s) and an idle follower
makes one call - one audit record at the platform - per ``WAIT_S`` instead of one per second.

Access statistics (a holder): the first Feed call of each poll also carries, per bank,
operation and decision, how many requests this holder's audit log recorded since the last
report and how many enterprise rows they touched - counts from one grouped query over the
audit records past the last reported seq, never a USCC. The range is written to
``platform_follow.db`` before it is sent and marked reported after the platform took it, so a
crash in between resends the same range, which the platform stores once.

Who learns what: the follower learns the whole feed (every authorisation of every enterprise
and bank); a bank *keeps* only what concerns itself (its status, its authorisations, its
whitelists) - for its operator's view. Holders stay the authority on every authorisation: a
bank never refuses or admits anything on its copy.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    MetaData,
    String,
    Table,
    Text,
    case,
    func,
    insert,
    select,
    update,
)

from federation.audit import AuditLog, schema
from federation.audit.chain import ChainHead
from federation.errors import PeerError, XinyidaiError
from federation.store import SqlStore, immediate
from federation.transport.calls import new_meta
from parties.authorisation import SignedAuthorisation
from parties.config import NodeConfig
from parties.consent import ConsentRegistry
from parties.platform.events import GENESIS, FeedEvent, authenticated_prefix
from parties.platform.stats import MAX_ACCESS_ROWS, AccessCount, known_operations
from protos import platform_pb2

__all__ = [
    "PAGE",
    "WAIT_S",
    "BankStatus",
    "FeedFollower",
    "FollowState",
    "OwnAuthorisation",
    "Whitelist",
]

log = logging.getLogger(__name__)

PAGE = 1000
"""Events asked for per Feed call (the platform caps it at its own page size)."""
WAIT_S = 20.0
"""How long one Feed call waits at the platform for a new event (long poll)."""

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
_own_auths = Table(  # a bank: the authorisations granted to it
    "follow_own_auths",
    _metadata,
    Column("auth_id", String(32), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("categories", String(255), nullable=False),
    Column("valid_until", Double, nullable=False),
    Column("granted_seq", BigInteger, nullable=False),
    Column("revoked_at", Double, nullable=True),
    Column("revoke_reason", Text, nullable=True),
)
_access_state = Table(  # a holder: its audit seqs counted for the platform's statistics
    "follow_access",
    _metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("reported_seq", BigInteger, nullable=False),  # the platform has (.., reported_seq]
    Column("pending_seq", BigInteger, nullable=False),  # sent (reported_seq, pending_seq]
)
_own_whitelists = Table(  # a bank: the whitelists pushed to it
    "follow_own_whitelists",
    _metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("region", String(8), nullable=False),
    Column("industry", String(8), nullable=False),
    Column("usccs", Text, nullable=False),  # comma-separated
    Column("note", Text, nullable=False),
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


@dataclass(frozen=True)
class OwnAuthorisation:
    """An authorisation granted to this bank, as its copy of the feed has it."""

    auth_id: str
    uscc: str
    categories: tuple[str, ...]
    valid_until: float
    revoked_at: float | None
    revoke_reason: str | None

    def status(self, now: float | None = None) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.valid_until <= (time.time() if now is None else now) else "live"


@dataclass(frozen=True)
class Whitelist:
    """A whitelist the platform pushed to this bank (推送白名单)."""

    seq: int
    region: str
    industry: str
    usccs: tuple[str, ...]
    note: str
    at: float


@dataclass
class _Changes:
    """What one commit of the follow state writes besides the seq (banks, a bank's own)."""

    banks: list[BankStatus] = field(default_factory=list)
    own_grants: list[tuple[SignedAuthorisation, int]] = field(default_factory=list)
    own_revokes: list[tuple[str, str, float]] = field(default_factory=list)
    whitelists: list[Whitelist] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.banks or self.own_grants or self.own_revokes or self.whitelists)


class FollowState(SqlStore):
    """What this node has applied of the feed: the last seq and hash, the banks' statuses, and
    (a bank) the authorisations and whitelists addressed to it."""

    LABEL = "platform follow state"
    TABLES = (_state, _institutions, _own_auths, _own_whitelists, _access_state)
    FILE = "platform_follow.db"

    def head(self) -> tuple[int, str]:
        with self._engine.connect() as conn:
            row = conn.execute(select(_state).where(_state.c.id == 1)).first()
        return (0, GENESIS) if row is None else (int(row.seq), row.hash)

    def access_range(self) -> tuple[int, int]:
        """(reported, pending): audit seqs up to ``reported`` are counted at the platform;
        ``pending`` > ``reported`` is a range sent but not confirmed (resend it as is)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_access_state).where(_access_state.c.id == 1)).first()
        return (0, 0) if row is None else (int(row.reported_seq), int(row.pending_seq))

    def set_access_range(self, reported: int, pending: int) -> None:
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                values = {"reported_seq": reported, "pending_seq": pending}
                found = conn.execute(
                    select(_access_state.c.id).where(_access_state.c.id == 1)
                ).first()
                if found is None:
                    conn.execute(insert(_access_state).values(id=1, **values))
                else:
                    conn.execute(
                        update(_access_state).where(_access_state.c.id == 1).values(**values)
                    )

    def banks(self) -> dict[str, BankStatus]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_institutions)).all()
        return {
            r.node_id: BankStatus(
                r.node_id, r.cert_sha256, r.status, r.reason, int(r.seq), float(r.at)
            )
            for r in rows
        }

    def own_authorisations(self) -> list[OwnAuthorisation]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_own_auths).order_by(_own_auths.c.granted_seq)).all()
        return [
            OwnAuthorisation(
                r.auth_id,
                r.uscc,
                tuple(c for c in r.categories.split(",") if c),
                float(r.valid_until),
                None if r.revoked_at is None else float(r.revoked_at),
                r.revoke_reason,
            )
            for r in rows
        ]

    def whitelists(self) -> list[Whitelist]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_own_whitelists).order_by(_own_whitelists.c.seq)).all()
        return [
            Whitelist(
                int(r.seq),
                r.region,
                r.industry,
                tuple(c for c in r.usccs.split(",") if c),
                r.note,
                float(r.at),
            )
            for r in rows
        ]

    def advance(self, event: FeedEvent, banks: Sequence[BankStatus] = ()) -> None:
        """Record every event up to ``event`` as applied (and the banks' new statuses) in one
        transaction."""
        self.commit(event, _Changes(banks=list(banks)))

    def commit(self, event: FeedEvent, changes: _Changes) -> None:
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                for bank in changes.banks:
                    self._bank(conn, bank)
                self._own(conn, changes)
                values = {"seq": event.seq, "hash": event.hash, "updated_at": time.time()}
                if conn.execute(select(_state.c.id).where(_state.c.id == 1)).first() is None:
                    conn.execute(insert(_state).values(id=1, **values))
                else:
                    conn.execute(update(_state).where(_state.c.id == 1).values(**values))

    @staticmethod
    def _bank(conn: Connection, bank: BankStatus) -> None:
        values = {
            "cert_sha256": bank.cert_sha256,
            "status": bank.status,
            "reason": bank.reason,
            "seq": bank.seq,
            "at": bank.at,
        }
        found = conn.execute(
            select(_institutions.c.node_id).where(_institutions.c.node_id == bank.node_id)
        ).first()
        if found is None:
            conn.execute(insert(_institutions).values(node_id=bank.node_id, **values))
        else:
            conn.execute(
                update(_institutions)
                .where(_institutions.c.node_id == bank.node_id)
                .values(**values)
            )

    @staticmethod
    def _own(conn: Connection, changes: _Changes) -> None:
        """A bank's own authorisations and whitelists, idempotently (re-applied pages)."""
        for signed, seq in changes.own_grants:
            auth = signed.auth
            if (
                conn.execute(
                    select(_own_auths.c.auth_id).where(_own_auths.c.auth_id == auth.auth_id)
                ).first()
                is None
            ):
                conn.execute(
                    insert(_own_auths).values(
                        auth_id=auth.auth_id,
                        uscc=auth.uscc,
                        categories=",".join(auth.categories),
                        valid_until=auth.valid_until,
                        granted_seq=seq,
                    )
                )
        for auth_id, reason, at in changes.own_revokes:
            conn.execute(
                update(_own_auths)
                .where(_own_auths.c.auth_id == auth_id, _own_auths.c.revoked_at.is_(None))
                .values(revoked_at=at, revoke_reason=reason)
            )
        for w in changes.whitelists:
            if (
                conn.execute(
                    select(_own_whitelists.c.seq).where(_own_whitelists.c.seq == w.seq)
                ).first()
                is None
            ):
                conn.execute(
                    insert(_own_whitelists).values(
                        seq=w.seq,
                        region=w.region,
                        industry=w.industry,
                        usccs=",".join(w.usccs),
                        note=w.note,
                        at=w.at,
                    )
                )


def count_access(
    audit: AuditLog, *, after: int, upto: int, banks: Sequence[str]
) -> list[AccessCount]:
    """Per (bank, operation, decision): the requests this node served to ``banks`` with audit
    seq in (``after``, ``upto``], and the enterprise rows they touched (a batch's subject
    rows, else 1 for a one-enterprise request). One grouped query on the seq primary key."""
    r, t = schema.records, schema.subjects
    per_seq = (
        select(t.c.seq, func.count().label("n"))
        .where(t.c.seq > after, t.c.seq <= upto)
        .group_by(t.c.seq)
        .subquery()
    )
    enterprises = func.sum(func.coalesce(per_seq.c.n, case((r.c.subject != "", 1), else_=0)))
    stmt = (
        select(r.c.peer, r.c.operation, r.c.decision, func.count(), enterprises)
        .select_from(r.outerjoin(per_seq, per_seq.c.seq == r.c.seq))
        .where(
            r.c.seq > after,
            r.c.seq <= upto,
            r.c.direction == "served",
            r.c.peer.in_(list(banks)),
            r.c.operation.in_(sorted(_OPERATIONS)),
            r.c.decision.in_(["allow", "deny", "error"]),
        )
        .group_by(r.c.peer, r.c.operation, r.c.decision)
        .order_by(r.c.peer, r.c.operation, r.c.decision)
    )
    with audit._engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [AccessCount(str(b), str(o), str(d), int(n), int(e or 0)) for b, o, d, n, e in rows]


_OPERATIONS = known_operations()


class FeedFollower:
    """Applies the platform's events; long-polls the platform in a background thread
    (``start``/``stop``).

    A holder (``consent`` given) stores grants and revocations in its consent registry, a page
    per transaction (``ConsentRegistry.apply_feed``); a bank (``consent`` None) keeps the
    grants and whitelists addressed to it in its follow state. Both keep every bank's status."""

    def __init__(
        self,
        *,
        config: NodeConfig,
        consent: ConsentRegistry | None,
        public_key: Any,
        audit: AuditLog | None,
        state: FollowState | None = None,
        wait_s: float = WAIT_S,
    ):
        self.config = config
        self.node_id = config.node_id
        self.consent = consent
        self.public_key = public_key
        self.audit = audit
        self.wait_s = wait_s
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
        Returns how many were applied (events at or below the current seq are skipped).

        Grants and revocations of a page go to the consent registry in one transaction; a
        bank's status change is committed at once (it takes effect before anything after it)."""
        run, bad = authenticated_prefix(events, self.public_key, seq=self.seq, prev=self.hash)
        pending: list[FeedEvent] = []  # checked, not yet committed
        ops: list[tuple[int, tuple[str, Any, str]]] = []  # (index in pending, consent op)
        changes = _Changes()
        applied = 0
        for event in run:
            bank: BankStatus | None = None
            try:
                op, bank = self._decode(event, changes)
            except (XinyidaiError, KeyError, TypeError, ValueError) as exc:
                bad = (event, f"content refused: {str(exc)[:200]}")
                break
            if op is not None:
                ops.append((len(pending), op))
            pending.append(event)
            if bank is not None:
                changes.banks.append(bank)
                n = self._flush(pending, ops, changes)
                applied += n
                if n < len(pending):
                    return applied
                pending, ops, changes = [], [], _Changes()
        n = self._flush(pending, ops, changes)
        if bad is not None and n == len(pending):  # all before it went in (else that one refused)
            self._refuse(*bad)
        return applied + n

    def _flush(
        self,
        pending: list[FeedEvent],
        ops: list[tuple[int, tuple[str, Any, str]]],
        changes: _Changes,
    ) -> int:
        """Commit ``pending``: the consent ops in one transaction, then the follow state. If
        the registry refuses an op, the events before it are committed and it is refused.
        Returns how many of ``pending`` were committed."""
        if not pending:
            return 0
        upto = len(pending)
        if ops and self.consent is not None:
            n, problem = self.consent.apply_feed([op for _, op in ops])
            if problem is not None:
                upto = ops[n][0]
                self._refuse(pending[upto], f"content refused: {problem[:200]}")
                changes = _Changes()  # only a holder has ops, and it has no own changes
        if upto == 0:
            return 0
        last = pending[upto - 1]
        self.state.commit(last, changes)
        with self._lock:
            self.seq, self.hash = last.seq, last.hash
            for bank in changes.banks:
                self._banks[bank.node_id] = bank
        return upto

    def _decode(
        self, event: FeedEvent, changes: _Changes
    ) -> tuple[tuple[str, Any, str] | None, BankStatus | None]:
        """The consent op (a holder) or own change (a bank) of one checked event, or its new
        bank status."""
        if event.is_redacted:
            # Another bank's grant, revocation or whitelist, sent to a bank without its body.
            if self.consent is not None or event.kind not in ("grant", "revoke", "whitelist"):
                raise XinyidaiError(f"{event.kind} event came without its body")
            return None, None
        body = event.content()
        if event.kind == "grant":
            signed = SignedAuthorisation.from_dict(body)
            if self.consent is not None:
                return ("grant", signed, ""), None
            if signed.auth.bank_id == self.node_id:
                if not signed.verifies(self.public_key):
                    raise XinyidaiError(
                        f"authorisation {signed.auth.auth_id}: signature does not verify"
                    )
                changes.own_grants.append((signed, event.seq))
            return None, None
        if event.kind == "revoke":
            auth_id, reason = str(body["auth_id"]), f"platform: {body['reason']}"
            if self.consent is not None:
                return ("revoke", auth_id, reason), None
            changes.own_revokes.append((auth_id, reason, float(body.get("revoked_at", event.at))))
            return None, None
        if event.kind == "whitelist":  # a holder applies nothing; the bank it names keeps it
            if self.consent is None and str(body["bank"]) == self.node_id:
                changes.whitelists.append(
                    Whitelist(
                        event.seq,
                        str(body["region"]),
                        str(body["industry"]),
                        tuple(str(c) for c in body["usccs"]),
                        str(body.get("note", "")),
                        event.at,
                    )
                )
            return None, None
        return None, BankStatus(
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
                # a long poll waits up to wait_s at the platform before it answers
                deadline_s=self.wait_s + min(5.0, self.config.limits.deadline_s),
            )
        return self._peer

    def _meta(self, head: ChainHead | None) -> Any:
        """The request's meta, carrying this node's audit chain head: the platform records it
        with the call, so every poll is the platform's witness of this log
        (``xinyidai audit verify NODE_DIR --witness PLATFORM_DIR``)."""
        meta = new_meta()
        meta.head = str(head) if head is not None else ""
        return meta

    def _access_report(self, head: ChainHead | None) -> tuple[list[AccessCount], int, int] | None:
        """A holder's counts since its last report, as (rows, from_seq, upto_seq), the range
        recorded as pending first; None for a bank, or when there is nothing new."""
        if self.consent is None or self.audit is None or head is None:
            return None
        reported, pending = self.state.access_range()
        with self._lock:
            banks = sorted(self._banks)
        if pending > reported:  # sent before and not confirmed: the same range again
            return (
                count_access(self.audit, after=reported, upto=pending, banks=banks),
                reported,
                pending,
            )
        upto = head.seq
        if upto <= reported:
            return None
        rows = count_access(self.audit, after=reported, upto=upto, banks=banks)
        while len(rows) > MAX_ACCESS_ROWS and upto > reported + 1:  # the rest next poll
            upto = reported + (upto - reported) // 2
            rows = count_access(self.audit, after=reported, upto=upto, banks=banks)
        self.state.set_access_range(reported, upto)
        return rows, reported, upto

    def poll_once(self, *, wait: bool = False) -> int:
        """Fetch and apply every event past ours; the number applied (``PeerError`` if the
        platform cannot be reached). ``wait``: the first call long-polls (up to ``wait_s``)."""
        total = 0
        wait_ms = int(self.wait_s * 1000) if wait else 0
        head = self.audit.head() if self.audit is not None else None
        report = self._access_report(head)
        while True:
            start = self.seq
            request = platform_pb2.FeedRequest(
                meta=self._meta(head), since_seq=start, max_events=PAGE, wait_ms=wait_ms
            )
            if report is not None:
                rows, from_seq, upto_seq = report
                request.access_from_seq, request.access_upto_seq = from_seq, upto_seq
                request.access.extend(
                    platform_pb2.AccessCount(
                        bank=c.bank,
                        operation=c.operation,
                        decision=c.decision,
                        records=c.records,
                        enterprises=c.enterprises,
                    )
                    for c in rows
                )
            try:
                page = self._client().call("Feed", request)
            except PeerError as exc:
                if (
                    report is None
                    or exc.code != "INVALID_ARGUMENT"
                    or "access report" not in str(exc)
                ):
                    raise
                self._drop_report(report[2], str(exc))  # never let statistics stop the feed
                report = None
                continue
            if report is not None:  # the platform has it: count from there next time
                self.state.set_access_range(report[2], report[2])
                report = None
            wait_ms = 0
            self.head_seq = int(page.head_seq)
            events = [
                FeedEvent(
                    e.seq,
                    e.kind,
                    bytes(e.body),
                    e.prev,
                    e.at,
                    e.hash,
                    bytes(e.signature),
                    e.body_sha256,
                )
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

    def _drop_report(self, upto: int, problem: str) -> None:
        """The platform refused an access report: say so once, skip its range."""
        log.error("node %s: platform refused access statistics: %s", self.node_id, problem[:300])
        if self.audit is not None:
            self.audit.append(
                direction="local",
                peer=self._platform_id(),
                operation="platform.access",
                decision="error",
                reason=f"access statistics up to seq {upto} refused: {problem}"[:300],
                counts={"upto": upto},
            )
        self.state.set_access_range(upto, upto)

    def _loop(self) -> None:
        link = self.config.platform
        poll = link.poll_s if link is not None else 1.0
        while not self._stop.is_set():
            started = time.monotonic()
            applied = 0
            try:
                applied = self.poll_once(wait=True)
            except PeerError as exc:
                if self._stop.is_set():
                    break  # stop() closed the channel under a waiting poll
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
                if applied or time.monotonic() - started >= poll:
                    continue  # news, or the platform waited for news: ask again at once
            # unreachable, or nothing new without waiting (a busy platform): pace the polls
            self._stop.wait(max(0.0, poll - (time.monotonic() - started)))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="platform-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling; one last poll, if the platform is there, leaves it this log's head."""
        self._stop.set()
        peer, self._peer = self._peer, None
        if peer is not None:
            peer.close()  # ends a waiting long poll at once
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self.connected:
                try:
                    self.poll_once()
                except PeerError:
                    pass
        if self._peer is not None:
            self._peer.close()
