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

from sqlalchemy import insert, inspect, select, text, update
from sqlalchemy.engine import Connection, Engine, RowMapping

from federation.audit import schema
from federation.audit.records import (
    CONTENT_FIELDS,
    GENESIS_HASH,
    OPTIONAL_FIELDS,
    AuditEntry,
    AuditProblem,
    SubjectAccess,
    canonical_json,
    record_hash,
    subjects_digest,
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


def upgrade(conn: Connection) -> None:
    """Add the columns a log written by an older version lacks (empty: hashed as before)."""
    present = {c["name"] for c in inspect(conn).get_columns(schema.records.name)}
    for name in schema.LATER_COLUMNS:
        if name not in present:
            width = schema.records.c[name].type.length  # type: ignore[attr-defined]
            conn.execute(
                text(
                    f"ALTER TABLE {schema.records.name} ADD COLUMN {name} "
                    f"VARCHAR({width}) NOT NULL DEFAULT ''"
                )
            )


def prepare(conn: Connection) -> None:
    """What a writer runs once its tables exist: upgrade old columns, write the genesis head."""
    upgrade(conn)
    init_head(conn)


def missing_tables(conn: Connection) -> list[str]:
    """Names of the log's tables that are not in the database (a reader never creates them)."""
    present = set(inspect(conn).get_table_names())
    return [t.name for t in (schema.records, schema.head) if t.name not in present]


def read_head(conn: Connection) -> ChainHead | None:
    """The stored head; None if the head row is gone."""
    row = conn.execute(
        select(schema.head.c.seq, schema.head.c.hash).where(schema.head.c.id == 1)
    ).first()
    return None if row is None else ChainHead(int(row.seq), str(row.hash))


def append_record(
    conn: Connection,
    content: dict[str, Any],
    *,
    where: str,
    subjects: list[SubjectAccess] | None = None,
) -> tuple[int, str, str]:
    """Chain ``content`` (every hashed field but ``seq``; optional fields only when non-empty)
    to the head, with its subject rows, inside the caller's write transaction; returns (seq,
    prev_hash, hash). ``where`` names the log in errors."""
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
    if subjects:
        conn.execute(
            insert(schema.subjects),
            [
                {"seq": seq, "uscc": s.uscc, "auth_id": s.auth_id, "status": s.status}
                for s in subjects
            ],
        )
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
        content.update({name: m[name] for name in OPTIONAL_FIELDS if m.get(name)})
        content["counts"] = counts
    except (TypeError, ValueError):
        content = None
    return ChainRow(seq=m["seq"], content=content, prev_hash=m["prev_hash"], hash=m["hash"])


def entry_from_db(m: RowMapping) -> AuditEntry:
    try:
        counts = json.loads(m["counts"])
    except (TypeError, ValueError):
        counts = {"<undecodable>": -1}
    values = {**dict(m), "counts": counts}
    for name in OPTIONAL_FIELDS:
        values[name] = values.get(name) or ""
    return AuditEntry(**values)


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


def read_subjects(
    conn: Connection, seqs: list[int] | None = None
) -> dict[int, list[SubjectAccess]]:
    """Subject rows by record seq (all, or those of ``seqs``)."""
    t = schema.subjects
    stmt = select(t.c.seq, t.c.uscc, t.c.auth_id, t.c.status).order_by(t.c.seq)
    if seqs is not None:
        stmt = stmt.where(t.c.seq.in_(seqs))
    out: dict[int, list[SubjectAccess]] = {}
    for row in conn.execute(stmt):
        out.setdefault(int(row.seq), []).append(SubjectAccess(row.uscc, row.auth_id, row.status))
    return out


def check_subjects(conn: Connection) -> list[AuditProblem]:
    """Every record's subject rows must still match the digest its hash covers.

    The rows sit in a side table, so the chain scan alone does not see them edited, added or
    removed; this compares them with each record's ``subjects_sha256``.
    """
    if schema.subjects.name not in set(inspect(conn).get_table_names()):
        rows: dict[int, list[SubjectAccess]] = {}
    else:
        rows = read_subjects(conn)
    r = schema.records
    claimed = {
        int(seq): str(digest)
        for seq, digest in conn.execute(
            select(r.c.seq, r.c.subjects_sha256).where(r.c.subjects_sha256 != "")
        )
    }
    problems = []
    for seq in sorted(set(rows) | set(claimed)):
        if subjects_digest(rows.get(seq, [])) != claimed.get(seq, ""):
            problems.append(
                AuditProblem(
                    seq,
                    "edited",
                    "edited — its enterprise rows (audit_subjects) were changed, added or removed",
                )
            )
    return problems
