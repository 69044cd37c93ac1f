"""The hash chain itself: append a record to the head, scan the chain, check a known head.

Each record's hash covers its content *and* the previous record's hash, and a separately
stored head (seq and hash of the last record) is written in the same transaction as each
append. Everything here works on one open connection, so the caller decides the transaction
and the lock (see ``AuditLog``).

A ``ChainHead`` is also what leaves the node: printed as ``SEQ:HASH`` it is an anchor an
operator publishes, and :func:`check_anchor` is how any head known from outside (an anchor,
or later a peer's witness of this node's head) is checked against the stored chain.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine, RowMapping

from federation.audit import schema
from federation.audit.records import (
    CONTENT_FIELDS,
    GENESIS_HASH,
    AuditEntry,
    AuditProblem,
    canonical_json,
    record_hash,
)
from federation.errors import AuditChainError

T = TypeVar("T")

_HEAD_TEXT = re.compile(r"^(\d{1,19}):([0-9a-f]{64})$")


class ChainHead(NamedTuple):
    """(seq, hash) of the last record; seq 0 with the genesis hash for an empty log."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> ChainHead:
        """Read the ``SEQ:HASH`` form an operator copied from ``str(head)``."""
        match = _HEAD_TEXT.match(text.strip())
        if match is None:
            raise ValueError(
                f"{text!r} is not an audit head: expected SEQ:HASH (a record number, a colon "
                "and 64 lower-case hex digits)"
            )
        return cls(int(match.group(1)), match.group(2))

    def __str__(self) -> str:
        return f"{self.seq}:{self.hash}"


# ------------------------------------------------------------------------------------------------
# Head and append


def init_head(conn: Connection) -> None:
    """Write the genesis head into a new, empty log.

    A missing head over existing records is tampering: it is left for ``verify`` to report,
    never papered over here.
    """
    has_head = conn.execute(select(schema.head.c.id)).first() is not None
    empty = conn.execute(select(schema.records.c.seq).limit(1)).first() is None
    if not has_head and empty:
        conn.execute(insert(schema.head).values(id=1, seq=0, hash=GENESIS_HASH))


def read_head(conn: Connection) -> ChainHead | None:
    """The stored head; None if the head row is gone."""
    row = conn.execute(
        select(schema.head.c.seq, schema.head.c.hash).where(schema.head.c.id == 1)
    ).first()
    return None if row is None else ChainHead(int(row.seq), str(row.hash))


def append_record(conn: Connection, content: dict[str, Any], *, where: str) -> tuple[int, str, str]:
    """Chain ``content`` (every hashed field but ``seq``) to the head, inside the caller's
    write transaction; returns (seq, prev_hash, hash). ``where`` names the log in errors."""
    head = conn.execute(
        select(schema.head.c.seq, schema.head.c.hash).where(schema.head.c.id == 1).with_for_update()
    ).one_or_none()
    if head is None:
        raise AuditChainError(
            f"audit log {where}: head row missing - the log was tampered with; "
            "run `xinyidai audit verify`"
        )
    seq = int(head.seq) + 1
    full = {"seq": seq, **content}
    digest = record_hash(head.hash, full)
    stored = {**full, "counts": canonical_json(full["counts"]).decode("utf-8")}
    conn.execute(insert(schema.records).values(**stored, prev_hash=head.hash, hash=digest))
    conn.execute(update(schema.head).where(schema.head.c.id == 1).values(seq=seq, hash=digest))
    return seq, str(head.hash), digest


def consistent_read(engine: Engine, read: Callable[[Connection], T]) -> tuple[ChainHead | None, T]:
    """Run ``read`` in one transaction between two reads of the head, retrying (up to five
    times) while appends commit meanwhile (PostgreSQL's snapshot does not cover both)."""
    for _ in range(5):
        with engine.connect() as conn, conn.begin():
            before = read_head(conn)
            result = read(conn)
            after = read_head(conn)
        if before == after:
            break
    return after, result


# ------------------------------------------------------------------------------------------------
# Reading the chain back


@dataclass
class ChainRow:
    """A record as read back for verification: only what the chain needs."""

    seq: int
    content: dict[str, Any] | None  # None: a stored field could not be decoded
    prev_hash: str
    hash: str

    def hash_at(self, seq: int) -> str | None:
        """The hash this row would have if it were record ``seq``; None if not computable."""
        if self.content is None:
            return None
        try:
            return record_hash(str(self.prev_hash), {**self.content, "seq": seq})
        except (TypeError, ValueError, UnicodeError):
            return None


def row_from_db(m: RowMapping) -> ChainRow:
    content: dict[str, Any] | None
    try:
        counts = json.loads(m["counts"])
        content = {name: m[name] for name in CONTENT_FIELDS}
        content["counts"] = counts
    except (TypeError, ValueError):
        content = None
    return ChainRow(seq=m["seq"], content=content, prev_hash=m["prev_hash"], hash=m["hash"])


def entry_from_db(m: RowMapping) -> AuditEntry:
    try:
        counts = json.loads(m["counts"])
    except (TypeError, ValueError):
        counts = {"<undecodable>": -1}
    return AuditEntry(**{**dict(m), "counts": counts})


@dataclass(frozen=True)
class Scan:
    """Result of one streaming pass: whether every link and hash held, and where it ended."""

    intact: bool
    n_records: int
    last_seq: int
    last_hash: str


def scan(conn: Connection) -> Scan:
    """One pass in seq order, in constant memory: the common, intact case needs no more."""
    expected_seq, expected_prev, n, intact = 1, GENESIS_HASH, 0, True
    stmt = select(schema.records).order_by(schema.records.c.seq).execution_options(yield_per=2000)
    for m in conn.execute(stmt).mappings():
        n += 1
        if intact:
            row = row_from_db(m)
            if (
                row.seq != expected_seq
                or row.prev_hash != expected_prev
                or row.hash_at(row.seq) != row.hash
            ):
                intact = False
        expected_seq, expected_prev = m["seq"] + 1, m["hash"]
    return Scan(intact, n, expected_seq - 1, expected_prev)


def read_rows(conn: Connection) -> list[ChainRow]:
    """Every record in seq order, for the diagnosis of a chain that failed the scan."""
    stmt = select(schema.records).order_by(schema.records.c.seq)
    return [row_from_db(m) for m in conn.execute(stmt).mappings()]


def check_anchor(conn: Connection, anchor: tuple[int, str]) -> list[AuditProblem]:
    """The record at the anchor's seq must still have the anchor's hash.

    An anchor is published outside this database, so it is the only defence against a
    consistent rewrite of the tail (head included) by someone who can write the database.
    """
    seq, digest = anchor
    stored = conn.execute(select(schema.records.c.hash).where(schema.records.c.seq == seq)).scalar()
    if stored is None:
        return [AuditProblem(seq, "truncated", "missing — the anchored record is gone")]
    if stored != digest:
        return [
            AuditProblem(
                seq,
                "edited",
                f"edited — hash differs from the anchor published earlier ({digest[:16]}…); "
                "the chain was rewritten from here on",
            )
        ]
    return []
