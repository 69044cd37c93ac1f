"""Statistics for the auditor (统计分析): per bank, how many authorisations the platform issued,
how many are live or revoked, how many whitelists it pushed; per following node, the last audit
head the platform witnessed and when.

Per bank and holder, the access statistics holders report with their feed polls (how many
requests of each operation they answered or refused, how many enterprise rows those touched):
``AccessStore`` keeps them in ``NODE_DIR/platform_access.db``; ``check_access`` is what the
platform accepts (known banks, known RPC names, bounded numbers), so no USCC can be stored even
if a holder tried to send one.

Counts only: no USCC, no authorisation id, no category of any enterprise leaves this module, so
the figures can be shown to an auditor (or on the portal) without showing enterprise data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    case,
    func,
    insert,
    select,
    true,
)

from federation.audit import AuditLog
from federation.store import SqlStore, immediate
from parties.platform.feed import FeedStore, _auths, _events, _whitelists
from protos import (
    bank_pb2,
    holder_pb2,
    linear_pb2,
    scorecard_pb2,
    secureboost_pb2,
    subject_pb2,
    woe_pb2,
)

__all__ = [
    "ACCESS_DECISIONS",
    "MAX_ACCESS_ROWS",
    "AccessCount",
    "AccessError",
    "AccessStatistics",
    "AccessStore",
    "BankStatistics",
    "PlatformStatistics",
    "WitnessStatistics",
    "check_access",
    "known_operations",
    "platform_statistics",
]

MAX_ACCESS_ROWS = 256
"""Most (bank, operation, decision) rows the platform takes with one Feed call."""
MAX_ACCESS_NUMBER = 1 << 40
"""Largest records/enterprises number accepted in one row (far above any real count)."""
ACCESS_DECISIONS = ("allow", "deny", "error")
DAY_S = 86_400.0


@dataclass(frozen=True)
class BankStatistics:
    """One bank's counts (``status``: admitted, suspended, or "" if never admitted)."""

    bank: str
    status: str
    grants: int
    live: int  # not revoked, valid now
    revoked: int
    whitelist_pushes: int
    whitelisted: int  # enterprises named in those pushes, with repeats across pushes


@dataclass(frozen=True)
class WitnessStatistics:
    """The last audit chain head of ``node`` the platform recorded (from its Feed calls)."""

    node: str
    head_seq: int | None  # None: never witnessed
    head_hash: str  # a 16-character prefix
    at: float | None


@dataclass(frozen=True)
class AccessCount:
    """Requests of ``bank`` for ``operation`` a holder decided ``decision`` on: how many
    (``records``) and how many enterprise rows they touched (``enterprises``). Counts only."""

    bank: str
    operation: str
    decision: str
    records: int
    enterprises: int


@dataclass(frozen=True)
class Window:
    """Allowed and refused requests, and enterprise rows answered, in one period."""

    allowed: int = 0
    refused: int = 0  # deny and error
    enterprises: int = 0  # in allowed requests


@dataclass(frozen=True)
class AccessStatistics:
    """What ``holder`` reported of ``bank``'s ``operation`` requests: today (since 00:00 UTC),
    the last 7 days, all time."""

    bank: str
    holder: str
    operation: str
    today: Window
    week: Window
    total: Window


@dataclass(frozen=True)
class PlatformStatistics:
    at: float
    feed_seq: int
    events: dict[str, int]  # per kind
    banks: list[BankStatistics]
    witnesses: list[WitnessStatistics]
    access: list[AccessStatistics] = field(default_factory=list)


class AccessError(ValueError):
    """A holder's access report the platform refuses (INVALID_ARGUMENT to the holder)."""


def known_operations() -> frozenset[str]:
    """Every RPC method a holder (or bank) serves: the only operation names the platform
    stores, so a free-text field can never carry enterprise data."""
    names: set[str] = set()
    for module in (
        holder_pb2,
        bank_pb2,
        linear_pb2,
        scorecard_pb2,
        secureboost_pb2,
        subject_pb2,
        woe_pb2,
    ):
        for service in module.DESCRIPTOR.services_by_name.values():
            names.update(m.name for m in service.methods)
    return frozenset(names)


_OPERATIONS = known_operations()


def check_access(
    rows: Sequence[AccessCount],
    *,
    node: str,
    banks: Iterable[str],
    from_seq: int,
    upto_seq: int,
    head_seq: int | None,
    limit: int = MAX_ACCESS_ROWS,
) -> None:
    """Refuse, naming the row and field, a report the platform will not store: more than
    ``limit`` rows, a bank it never admitted, an operation that is no RPC, a decision outside
    ``ACCESS_DECISIONS``, numbers out of range, or a seq range past the head ``node`` sent."""
    if len(rows) > limit:
        raise AccessError(f"access report of '{node}': {len(rows)} rows, more than {limit}")
    if upto_seq < from_seq or (rows and upto_seq == from_seq):
        raise AccessError(
            f"access report of '{node}': access_upto_seq {upto_seq} must be past "
            f"access_from_seq {from_seq}"
        )
    if head_seq is None or upto_seq > head_seq:
        raise AccessError(
            f"access report of '{node}': access_upto_seq {upto_seq} is past the audit head "
            f"the request carries ({'none' if head_seq is None else head_seq})"
        )
    known = set(banks)
    seen: set[tuple[str, str, str]] = set()
    for i, row in enumerate(rows, start=1):
        where = f"access report of '{node}', row {i}"
        if row.bank not in known:
            raise AccessError(f"{where}: bank is not an institution this platform admitted")
        if row.operation not in _OPERATIONS:
            raise AccessError(f"{where}: operation is not an RPC method of any node")
        if row.decision not in ACCESS_DECISIONS:
            raise AccessError(f"{where}: decision must be one of {', '.join(ACCESS_DECISIONS)}")
        for name, value in (("records", row.records), ("enterprises", row.enterprises)):
            if not 0 <= value <= MAX_ACCESS_NUMBER:
                raise AccessError(f"{where}: {name} {value} out of range")
        key = (row.bank, row.operation, row.decision)
        if key in seen:
            raise AccessError(f"{where}: ({row.bank}, {row.operation}, {row.decision}) repeated")
        seen.add(key)


_access_metadata = MetaData()
_access = Table(
    "access_counts",
    _access_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", String(63), nullable=False),  # the reporting holder
    Column("bank", String(63), nullable=False),
    Column("operation", String(63), nullable=False),
    Column("decision", String(8), nullable=False),
    Column("records", BigInteger, nullable=False),
    Column("enterprises", BigInteger, nullable=False),
    Column("from_seq", BigInteger, nullable=False),  # the holder's audit seq range counted
    Column("upto_seq", BigInteger, nullable=False),
    Column("head", String(80), nullable=False),  # the witnessed head the report came with
    Column("at", Double, nullable=False),
)


class AccessStore(SqlStore):
    """The access counts holders reported (``NODE_DIR/platform_access.db``, 0600), each row
    tied to the audit head it came with. A report for a seq range already stored (a holder
    retrying after a crash) changes nothing."""

    LABEL = "platform access statistics"
    TABLES = (_access,)
    INDEXES = (
        Index("ix_access_counts_node_upto", _access.c.node, _access.c.upto_seq),
        Index("ix_access_counts_at", _access.c.at),
    )
    FILE = "platform_access.db"

    @classmethod
    def for_node_dir(cls, node_dir: Path) -> AccessStore:
        store = cls(cls.node_dir_url(node_dir))
        path = Path(node_dir) / cls.FILE
        if path.exists():
            os.chmod(path, 0o600)
        return store

    def reported_upto(self, node: str) -> int:
        """The highest audit seq of ``node`` already counted here (0: none)."""
        with self._engine.connect() as conn:
            value = conn.execute(
                select(func.max(_access.c.upto_seq)).where(_access.c.node == node)
            ).scalar()
        return int(value or 0)

    def record(
        self,
        node: str,
        rows: Sequence[AccessCount],
        *,
        from_seq: int,
        upto_seq: int,
        head: str,
        at: float | None = None,
    ) -> bool:
        """Store one checked report; False (nothing stored) when its range was counted
        already or overlaps what was (a holder that lost its follow state)."""
        at = time.time() if at is None else at
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                last = conn.execute(
                    select(func.max(_access.c.upto_seq)).where(_access.c.node == node)
                ).scalar()
                if from_seq < int(last or 0) or upto_seq <= from_seq:
                    return False
                for r in rows:
                    conn.execute(
                        insert(_access).values(
                            node=node,
                            bank=r.bank,
                            operation=r.operation,
                            decision=r.decision,
                            records=r.records,
                            enterprises=r.enterprises,
                            from_seq=from_seq,
                            upto_seq=upto_seq,
                            head=head[:80],
                            at=at,
                        )
                    )
                if not rows:  # an empty range still moves this holder's counted seq on
                    conn.execute(
                        insert(_access).values(
                            node=node,
                            bank="",
                            operation="",
                            decision="",
                            records=0,
                            enterprises=0,
                            from_seq=from_seq,
                            upto_seq=upto_seq,
                            head=head[:80],
                            at=at,
                        )
                    )
        return True

    def statistics(self, now: float) -> list[AccessStatistics]:
        """Per (bank, holder, operation): today (UTC), the last 7 days, all time."""
        a = _access.c
        today, week = now - now % DAY_S, now - 7 * DAY_S
        allowed = a.decision == "allow"

        def sums(since: float | None) -> list[Any]:
            inside = a.at >= since if since is not None else true()
            return [
                func.sum(case((allowed & inside, a.records), else_=0)),
                func.sum(case((~allowed & inside, a.records), else_=0)),
                func.sum(case((allowed & inside, a.enterprises), else_=0)),
            ]

        stmt = (
            select(a.bank, a.node, a.operation, *sums(today), *sums(week), *sums(None))
            .where(a.bank != "")
            .group_by(a.bank, a.node, a.operation)
            .order_by(a.bank, a.node, a.operation)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        out: list[AccessStatistics] = []
        for r in rows:
            n = [int(v or 0) for v in tuple(r)[3:]]
            out.append(
                AccessStatistics(
                    bank=str(r[0]),
                    holder=str(r[1]),
                    operation=str(r[2]),
                    today=Window(*n[0:3]),
                    week=Window(*n[3:6]),
                    total=Window(*n[6:9]),
                )
            )
        return out


def platform_statistics(
    feed: FeedStore,
    audit: AuditLog | None = None,
    *,
    nodes: Sequence[str] = (),
    now: float | None = None,
    access: AccessStore | None = None,
) -> PlatformStatistics:
    """Per-bank counts from the feed; with ``audit`` (the platform's log), the last witnessed
    head of each of ``nodes`` (the platform's peers); with ``access``, what holders reported of
    each bank's requests. Counts only, never enterprise data."""
    now = time.time() if now is None else now
    engine = feed._engine
    with engine.connect() as conn:
        kinds = {
            str(k): int(n)
            for k, n in conn.execute(
                select(_events.c.kind, func.count()).group_by(_events.c.kind)
            ).all()
        }
        grants = {
            str(b): (int(g), int(r or 0))
            for b, g, r in conn.execute(
                select(_auths.c.bank_id, func.count(), func.count(_auths.c.revoked_seq)).group_by(
                    _auths.c.bank_id
                )
            ).all()
        }
        live: dict[str, int] = {}
        unrevoked = select(_auths.c.bank_id, _events.c.body).join(
            _events, _events.c.seq == _auths.c.granted_seq
        )
        for bank, body in conn.execute(unrevoked.where(_auths.c.revoked_seq.is_(None))):
            auth = json.loads(bytes(body)).get("auth", {})
            if float(auth.get("valid_from", 0)) <= now < float(auth.get("valid_until", 0)):
                live[str(bank)] = live.get(str(bank), 0) + 1
        pushes = {
            str(b): (int(n), int(c or 0))
            for b, n, c in conn.execute(
                select(_whitelists.c.bank_id, func.count(), func.sum(_whitelists.c.count)).group_by(
                    _whitelists.c.bank_id
                )
            ).all()
        }
    statuses = {i.node_id: i.status for i in feed.institutions()}
    seq, _ = feed.head()
    banks = [
        BankStatistics(
            bank=bank,
            status=statuses.get(bank, ""),
            grants=grants.get(bank, (0, 0))[0],
            live=live.get(bank, 0),
            revoked=grants.get(bank, (0, 0))[1],
            whitelist_pushes=pushes.get(bank, (0, 0))[0],
            whitelisted=pushes.get(bank, (0, 0))[1],
        )
        for bank in sorted(set(statuses) | set(grants) | set(pushes))
    ]
    witnesses = [_witness(audit, node) for node in nodes] if audit is not None else []
    return PlatformStatistics(
        at=now,
        feed_seq=seq,
        events=kinds,
        banks=banks,
        witnesses=witnesses,
        access=access.statistics(now) if access is not None else [],
    )


def _witness(audit: AuditLog, node: str) -> WitnessStatistics:
    for entry in reversed(audit.query(peer=node, operation="Feed", limit=20)):
        if entry.peer_head:
            seq_text, _, digest = entry.peer_head.partition(":")
            try:
                head_seq = int(seq_text)
            except ValueError:
                continue
            return WitnessStatistics(node, head_seq, digest[:16], entry.ts)
    return WitnessStatistics(node, None, "", None)
