"""Statistics for the auditor (统计分析): per bank, how many authorisations the platform issued,
how many are live or revoked, how many whitelists it pushed; per following node, the last audit
head the platform witnessed and when.

Counts only: no USCC, no authorisation id, no category of any enterprise leaves this module, so
the figures can be shown to an auditor (or on the portal) without showing enterprise data.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

from federation.audit import AuditLog
from parties.platform.feed import FeedStore, _auths, _events, _whitelists

__all__ = ["BankStatistics", "PlatformStatistics", "WitnessStatistics", "platform_statistics"]


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
class PlatformStatistics:
    at: float
    feed_seq: int
    events: dict[str, int]  # per kind
    banks: list[BankStatistics]
    witnesses: list[WitnessStatistics]


def platform_statistics(
    feed: FeedStore,
    audit: AuditLog | None = None,
    *,
    nodes: Sequence[str] = (),
    now: float | None = None,
) -> PlatformStatistics:
    """Per-bank counts from the feed; with ``audit`` (the platform's log), the last witnessed
    head of each of ``nodes`` (the platform's peers). Counts only, never enterprise data."""
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
    return PlatformStatistics(at=now, feed_seq=seq, events=kinds, banks=banks, witnesses=witnesses)


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
