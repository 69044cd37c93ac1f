"""The platform's feed: a sequenced, hash-chained, signed list of events in one SQL store.

Why one store for the events and the state they imply (which authorisations exist and are
revoked, which banks are admitted): the operator commands check against that state before they
sign anything (no revocation of an authorisation never granted, no suspension of an unknown
bank), and the event and the state change are one transaction, so they never disagree.
Holders pull ``since(seq)`` pages; the platform is the only writer.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Double,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    insert,
    select,
    update,
)

from federation.errors import ConfigError
from federation.pki import node_id_problem
from federation.store import SqlStore, immediate
from parties.authorisation import SignedAuthorisation
from parties.platform.events import GENESIS, FeedError, FeedEvent, sign_event, whitelist_body

__all__ = ["MAX_PAGE", "FeedStore", "Institution"]

MAX_PAGE = 1000
"""Most events one ``Feed`` page carries, whatever the follower asks for."""

_FINGERPRINT = re.compile(r"[0-9a-f]{64}")
_metadata = MetaData()
_events = Table(
    "feed_events",
    _metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("prev", String(64), nullable=False),
    Column("at", Double, nullable=False),
    Column("hash", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)
_auths = Table(
    "feed_auths",
    _metadata,
    Column("auth_id", String(32), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("bank_id", String(63), nullable=False),
    Column("granted_seq", BigInteger, nullable=False),
    Column("revoked_seq", BigInteger, nullable=True),
)
_institutions = Table(
    "feed_institutions",
    _metadata,
    Column("node_id", String(63), primary_key=True),
    Column("cert_sha256", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("at", Double, nullable=False),
)

_whitelists = Table(
    "feed_whitelists",
    _metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("bank_id", String(63), nullable=False),
    Column("region", String(8), nullable=False),
    Column("industry", String(8), nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("at", Double, nullable=False),
)


@dataclass(frozen=True)
class Institution:
    """A bank as the platform's registry has it: admitted or suspended, and since which event."""

    node_id: str
    cert_sha256: str
    status: str  # admitted | suspended
    reason: str
    seq: int
    at: float


def _event(row: Any) -> FeedEvent:
    return FeedEvent(
        seq=int(row.seq),
        kind=row.kind,
        body=bytes(row.body),
        prev=row.prev,
        at=float(row.at),
        hash=row.hash,
        signature=bytes(row.signature),
    )


def _row(event: FeedEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "kind": event.kind,
        "body": event.body,
        "prev": event.prev,
        "at": event.at,
        "hash": event.hash,
        "signature": event.signature,
    }


def _reason(reason: str, what: str) -> str:
    if not isinstance(reason, str) or not reason.strip():
        raise FeedError(f"{what} needs a reason (who asked, and why)")
    text = reason.strip()
    if len(text) > 500:
        raise FeedError(f"{what}: reason is {len(text)} characters (limit 500)")
    return text


class FeedStore(SqlStore):
    """The platform's feed (``NODE_DIR/platform_feed.db`` by default). Writing needs the
    platform's signing key; reading (``since``, ``head``) does not."""

    LABEL = "platform feed"
    TABLES = (_events, _auths, _institutions, _whitelists)
    FILE = "platform_feed.db"

    def __init__(self, url: str, signing_key: Ed25519PrivateKey | None = None):
        if signing_key is not None and not isinstance(signing_key, Ed25519PrivateKey):
            raise ConfigError(
                f"platform signing key must be Ed25519, got {type(signing_key).__name__}"
            )
        self._key = signing_key
        super().__init__(url)

    @classmethod
    def for_node_dir(
        cls, node_dir: Path, signing_key: Ed25519PrivateKey | None = None
    ) -> FeedStore:
        return cls(cls.node_dir_url(node_dir), signing_key)

    # -- reading -------------------------------------------------------------------------------
    def head(self) -> tuple[int, str]:
        """(latest seq, its hash); (0, GENESIS) for an empty feed."""
        with self._engine.connect() as conn:
            return self._head(conn)

    @staticmethod
    def _head(conn: Connection) -> tuple[int, str]:
        row = conn.execute(
            select(_events.c.seq, _events.c.hash).order_by(_events.c.seq.desc()).limit(1)
        ).first()
        return (0, GENESIS) if row is None else (int(row.seq), row.hash)

    def since(self, since_seq: int, max_events: int = MAX_PAGE) -> tuple[list[FeedEvent], int, str]:
        """Events with seq > ``since_seq``, at most ``max_events`` (≤ ``MAX_PAGE``), oldest
        first, and the head. A ``since_seq`` past the head is an error naming both: the follower
        has seen events this platform does not have (another platform, or a restored backup)."""
        if isinstance(since_seq, bool) or not isinstance(since_seq, int) or since_seq < 0:
            raise FeedError(f"since_seq must be a whole number >= 0, got {since_seq!r}")
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
            raise FeedError(f"max_events must be a whole number >= 0, got {max_events!r}")
        limit = MAX_PAGE if max_events == 0 else min(max_events, MAX_PAGE)
        with self._engine.connect() as conn:
            head_seq, head_hash = self._head(conn)
            if since_seq > head_seq:
                raise FeedError(
                    f"since_seq {since_seq} is past this platform's feed head {head_seq}: the "
                    "follower has events this platform never issued"
                )
            rows = conn.execute(
                select(_events)
                .where(_events.c.seq > since_seq)
                .order_by(_events.c.seq)
                .limit(limit)
            ).all()
        return [_event(r) for r in rows], head_seq, head_hash

    def about_bank(self, bank: str, seqs: Sequence[int]) -> set[int]:
        """Which of ``seqs`` are grants, revocations or whitelists addressed to ``bank``: the
        events a bank following the feed receives with their bodies (the rest of those kinds go
        to it redacted, ``PlatformServicer.Feed``)."""
        if not seqs:
            return set()
        lo, hi = min(seqs), max(seqs)
        a, w = _auths, _whitelists
        with self._engine.connect() as conn:
            granted = conn.execute(
                select(a.c.granted_seq).where(a.c.bank_id == bank, a.c.granted_seq.between(lo, hi))
            ).scalars()
            revoked = conn.execute(
                select(a.c.revoked_seq).where(a.c.bank_id == bank, a.c.revoked_seq.between(lo, hi))
            ).scalars()
            pushed = conn.execute(
                select(w.c.seq).where(w.c.bank_id == bank, w.c.seq.between(lo, hi))
            ).scalars()
            return {int(s) for s in (*granted, *revoked, *pushed) if s is not None}

    def verify(self, public_key: Any) -> int:
        """Check the whole chain and every signature; the number of events (``FeedError``
        naming the first bad event otherwise)."""
        prev, n = GENESIS, 0
        with self._engine.connect() as conn:
            for row in conn.execute(select(_events).order_by(_events.c.seq)):
                event = _event(row)
                problem = event.problem(public_key, expected_seq=n + 1, prev=prev)
                if problem is not None:
                    raise FeedError(f"platform feed event {event.seq}: {problem}")
                prev, n = event.hash, n + 1
        return n

    def institutions(self) -> list[Institution]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_institutions).order_by(_institutions.c.node_id)).all()
        return [
            Institution(r.node_id, r.cert_sha256, r.status, r.reason, int(r.seq), float(r.at))
            for r in rows
        ]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(_events)).scalar_one())

    # -- writing (the platform's operators) ----------------------------------------------------
    def _signer(self) -> Ed25519PrivateKey:
        if self._key is None:
            raise ConfigError("this feed store was opened without the platform's signing key")
        return self._key

    def _append(self, conn: Connection, kind: str, body: dict[str, Any]) -> FeedEvent:
        seq, prev = self._head(conn)
        event = sign_event(
            self._signer(), seq=seq + 1, kind=kind, body=body, prev=prev, at=time.time()
        )
        conn.execute(
            insert(_events).values(
                seq=event.seq,
                kind=event.kind,
                body=event.body,
                prev=event.prev,
                at=event.at,
                hash=event.hash,
                signature=event.signature,
            )
        )
        return event

    def grant(self, signed: SignedAuthorisation | Sequence[SignedAuthorisation]) -> list[FeedEvent]:
        """Publish one or more signed authorisations (one transaction). Idempotent per auth id:
        an authorisation already in the feed is not published twice."""
        items = [signed] if isinstance(signed, SignedAuthorisation) else list(signed)
        for item in items:
            problems = item.auth.problems()
            if problems:
                raise FeedError(
                    f"authorisation {item.auth.auth_id!r} malformed: {'; '.join(problems)}"
                )
            # Ed25519 signatures are deterministic: signing again with this key and comparing
            # is the check "signed by this platform" at half the cost of a verification
            if self._key is not None and self._key.sign(item.auth.canonical_bytes()) != bytes(
                item.signature
            ):
                raise FeedError(
                    f"authorisation {item.auth.auth_id}: not signed by this platform's key"
                )
        out: list[FeedEvent] = []
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                # one lookup, one head read and two multi-row inserts per batch, not per grant
                ids = [item.auth.auth_id for item in items]
                known: set[str] = set()
                for start in range(0, len(ids), 500):
                    known.update(
                        conn.execute(
                            select(_auths.c.auth_id).where(
                                _auths.c.auth_id.in_(ids[start : start + 500])
                            )
                        ).scalars()
                    )
                seq, prev = self._head(conn)
                auth_rows = []
                for item in items:
                    auth = item.auth
                    if auth.auth_id in known:
                        continue
                    known.add(auth.auth_id)
                    event = sign_event(
                        self._signer(),
                        seq=seq + 1,
                        kind="grant",
                        body=item.to_dict(),
                        prev=prev,
                        at=time.time(),
                    )
                    seq, prev = event.seq, event.hash
                    out.append(event)
                    auth_rows.append(
                        {
                            "auth_id": auth.auth_id,
                            "uscc": auth.uscc,
                            "bank_id": auth.bank_id,
                            "granted_seq": event.seq,
                            "revoked_seq": None,
                        }
                    )
                if out:
                    conn.execute(insert(_events), [_row(e) for e in out])
                    conn.execute(insert(_auths), auth_rows)
        return out

    def revoke(self, auth_id: str, *, reason: str) -> FeedEvent | None:
        """Publish a revocation (None if it is already revoked: the first revocation stands)."""
        text = _reason(reason, "a revocation")
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                row = conn.execute(select(_auths).where(_auths.c.auth_id == auth_id)).first()
                if row is None:
                    raise FeedError(
                        f"no authorisation {str(auth_id)[:40]!r} in this platform's feed; "
                        "nothing revoked"
                    )
                if row.revoked_seq is not None:
                    return None
                event = self._append(
                    conn, "revoke", {"auth_id": auth_id, "reason": text, "revoked_at": time.time()}
                )
                conn.execute(
                    update(_auths).where(_auths.c.auth_id == auth_id).values(revoked_seq=event.seq)
                )
        return event

    def whitelist(
        self, bank: str, *, region: str, industry: str, usccs: Sequence[str], note: str = ""
    ) -> FeedEvent:
        """Push a whitelist of enterprises (by region and industry) to an admitted bank: one
        signed ``whitelist`` event, checked by ``events.whitelist_body`` (check digits, at most
        ``MAX_WHITELIST`` USCCs). Only the named bank keeps it; holders apply nothing."""
        body = whitelist_body(bank=bank, region=region, industry=industry, usccs=usccs, note=note)
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                row = conn.execute(
                    select(_institutions.c.status).where(_institutions.c.node_id == bank)
                ).first()
                if row is None:
                    raise FeedError(f"bank '{bank}' was never admitted by this platform")
                if row.status != "admitted":
                    raise FeedError(f"bank '{bank}' is {row.status}; no whitelist pushed")
                event = self._append(conn, "whitelist", body)
                conn.execute(
                    insert(_whitelists).values(
                        seq=event.seq,
                        bank_id=bank,
                        region=region,
                        industry=industry,
                        count=len(body["usccs"]),
                        at=event.at,
                    )
                )
        return event

    def set_institution(
        self, node_id: str, *, status: str, reason: str, cert_sha256: str | None = None
    ) -> FeedEvent:
        """admit (needs ``cert_sha256``), suspend or reinstate a bank."""
        problem = node_id_problem(node_id)
        if problem is not None:
            raise FeedError(f"bank id: {problem}")
        text = _reason(reason, f"{status} of bank '{node_id}'")
        kind = {"admitted": "admit", "suspended": "suspend", "reinstated": "reinstate"}.get(status)
        if kind is None:
            raise FeedError(f"unknown institution status {status!r}")
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                row = conn.execute(
                    select(_institutions).where(_institutions.c.node_id == node_id)
                ).first()
                if kind == "admit":
                    if cert_sha256 is None or not _FINGERPRINT.fullmatch(cert_sha256):
                        raise FeedError(
                            "admitting a bank needs its certificate's SHA-256 fingerprint "
                            "(64 lowercase hex digits)"
                        )
                    if row is not None and (
                        row.status != "admitted" or row.cert_sha256 == cert_sha256
                    ):
                        # a new admit only carries a re-issued certificate of an admitted bank
                        raise FeedError(
                            f"bank '{node_id}' is already in the registry ({row.status}"
                            + (", same certificate" if row.cert_sha256 == cert_sha256 else "")
                            + "); use suspend / reinstate"
                        )
                else:
                    if row is None:
                        raise FeedError(f"bank '{node_id}' was never admitted by this platform")
                    if kind == "suspend" and row.status == "suspended":
                        raise FeedError(f"bank '{node_id}' is already suspended")
                    if kind == "reinstate" and row.status != "suspended":
                        raise FeedError(f"bank '{node_id}' is not suspended")
                    cert_sha256 = row.cert_sha256
                new_status = "suspended" if kind == "suspend" else "admitted"
                body = {
                    "node_id": node_id,
                    "cert_sha256": cert_sha256,
                    "status": new_status,
                    "reason": text,
                }
                event = self._append(conn, kind, body)
                values = {
                    "cert_sha256": cert_sha256,
                    "status": new_status,
                    "reason": text,
                    "seq": event.seq,
                    "at": event.at,
                }
                if row is None:
                    conn.execute(insert(_institutions).values(node_id=node_id, **values))
                else:
                    conn.execute(
                        update(_institutions)
                        .where(_institutions.c.node_id == node_id)
                        .values(**values)
                    )
        return event
