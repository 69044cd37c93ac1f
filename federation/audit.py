"""Hash-chained audit log: one record per RPC a node serves or makes, and per local action.

Why a chain: the log is the evidence that a node only ever answered authorised questions, so it
must be hard to doctor quietly. Each record's hash covers its content *and* the previous record's
hash, so editing, deleting, inserting or reordering any record breaks every later link - and
``verify`` names which record and how. A separately stored *head* (seq and hash of the last
record), written in the same transaction as each append, catches truncation of the tail, which
a chain alone cannot see.

What it does not do: anyone who can write the database *and* recompute hashes (the algorithm is
public, there is no key) can rewrite the whole tail consistently, head included. Catching that
needs the head published somewhere the node cannot rewrite (peers, a notary) - ``verify``
accepts such an ``anchor``. See ``docs/security.md``.

Concurrency: appends are serialised by a database lock - ``BEGIN IMMEDIATE`` on SQLite, a row
lock on the one-row head table elsewhere (PostgreSQL) - so gRPC worker threads and a CLI process
can append to the same log at once. A ``threading.Lock`` in front keeps threads of one process
from spinning in SQLite's busy handler. SQLite runs in WAL mode with ``synchronous=NORMAL``: an
append then costs about a millisecond and readers never block the writer.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, RowMapping, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.schema import CreateIndex, CreateTable

from federation.errors import AuditChainError, ConfigError

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "AuditProblem",
    "AuditVerification",
    "canonical_json",
    "immediate",
    "open_engine",
    "record_hash",
    "redacted",
    "single_read",
    "sqlite_url",
]

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record."""

Direction = Literal["served", "made", "local"]
DIRECTIONS: tuple[str, ...] = ("served", "made", "local")

# Column widths, checked in ``append`` so SQLite (which ignores them) and PostgreSQL (which
# enforces them) accept exactly the same records.
_LIMITS = {
    "node_id": 63,
    "peer": 255,
    "operation": 128,
    "purpose": 64,
    "job_id": 128,
    "model_id": 128,
    "subject": 64,
    "request_id": 64,
    "decision": 16,
}

_metadata = MetaData()
_records = Table(
    "audit_log",
    _metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", Double, nullable=False),
    Column("node_id", String(_LIMITS["node_id"]), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("peer", String(_LIMITS["peer"]), nullable=False),
    Column("operation", String(_LIMITS["operation"]), nullable=False),
    Column("purpose", String(_LIMITS["purpose"]), nullable=False),
    Column("job_id", String(_LIMITS["job_id"]), nullable=False),
    Column("model_id", String(_LIMITS["model_id"]), nullable=False),
    Column("subject", String(_LIMITS["subject"]), nullable=False),
    Column("request_id", String(_LIMITS["request_id"]), nullable=False),
    Column("counts", Text, nullable=False),
    Column("decision", String(_LIMITS["decision"]), nullable=False),
    Column("reason", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
)
_head = Table(
    "audit_head",
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)
_indexes = (
    Index("ix_audit_log_ts", _records.c.ts),
    Index("ix_audit_log_peer", _records.c.peer),
    Index("ix_audit_log_job_id", _records.c.job_id),
    Index("ix_audit_log_subject", _records.c.subject),
)

_CONTENT_FIELDS = (
    "seq",
    "ts",
    "node_id",
    "direction",
    "peer",
    "operation",
    "purpose",
    "job_id",
    "model_id",
    "subject",
    "request_id",
    "counts",
    "decision",
    "reason",
)


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: one byte string per value, so hashes are reproducible."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """``sha256(prev_hash || canonical JSON of the record's other fields)``, hex."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(dict(content))).hexdigest()


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of an SQLite file (absolute, so it does not depend on the cwd)."""
    return f"sqlite:///{Path(path).resolve()}"


@dataclass(frozen=True)
class AuditEntry:
    """One audit record as stored. ``counts`` holds sizes (rows, ciphertexts...), never data."""

    seq: int
    ts: float
    node_id: str
    direction: str
    peer: str
    operation: str
    purpose: str
    job_id: str
    model_id: str
    subject: str
    request_id: str
    counts: dict[str, int]
    decision: str
    reason: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["counts"] = dict(self.counts)
        return out

    def content(self) -> dict[str, Any]:
        """The fields the hash covers (everything but ``prev_hash`` and ``hash``)."""
        return {name: getattr(self, name) for name in _CONTENT_FIELDS}


@dataclass(frozen=True)
class AuditProblem:
    """One finding of ``verify``. ``kind`` is one of: edited, deleted, inserted, reordered,
    truncated, head. ``seq`` is where the record sits in the table (for deleted and truncated:
    the first missing seq; 0 for problems with the head itself)."""

    seq: int
    kind: str
    detail: str

    def __str__(self) -> str:
        where = "audit head" if self.seq == 0 else f"record {self.seq}"
        return f"{where}: {self.detail}"


@dataclass
class AuditVerification:
    """Result of ``AuditLog.verify``: ``ok`` only if every check passed."""

    ok: bool
    n_records: int
    head_hash: str
    problems: list[AuditProblem] = field(default_factory=list)
    head_seq: int = 0

    def raise_if_broken(self) -> None:
        """Raise ``AuditChainError`` naming the first problem (for start-up checks)."""
        if not self.ok:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            first = self.problems[0] if self.problems else "verification failed"
            raise AuditChainError(f"audit log failed verification: {first}{more}")


# ------------------------------------------------------------------------------------------------
# Engine set-up


def open_engine(url: str, *, label: str = "audit log") -> Engine:
    """An engine for ``url``; on SQLite with the busy timeout, ``synchronous=NORMAL`` and the
    hooks that let ``immediate`` take the write lock at BEGIN. ``label`` names the store in
    errors."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        # The URL itself is not echoed: it may carry a password.
        raise ConfigError(f"{label} URL is not a database URL ({exc})") from None
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except ImportError as exc:
            extra = " (pip install 'xinyidai[postgres]')" if "postgres" in parsed.drivername else ""
            raise ConfigError(
                f"{label}: no database driver for {parsed.drivername!r}: {exc}{extra}"
            ) from None
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        parent = Path(database).parent
        if not parent.is_dir():
            raise ConfigError(f"{label} {database}: directory {parent} does not exist")
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    engine = create_engine(
        parsed,
        # 30 s busy timeout: a writer in another process holds the lock for about a millisecond.
        connect_args={"timeout": 30.0, "check_same_thread": False},
        **({} if in_memory else {"pool_size": 8, "max_overflow": 24}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself, so appends can ask for IMMEDIATE.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: no corruption, ~1 ms commits
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode:  # "" (see ``single_read``): no BEGIN, the statement is its own transaction
            conn.exec_driver_sql(f"BEGIN {mode}")

    if not in_memory:
        _set_wal(engine, f"{label} {database}")
    return engine


def _set_wal(engine: Engine, what: str) -> None:
    """Switch the file to WAL (readers never block the writer). The mode is stored in the file
    and cannot change inside a transaction, hence the raw DBAPI connection."""
    try:
        raw = engine.raw_connection()
    except OperationalError as exc:
        raise ConfigError(f"{what}: cannot open database ({exc.orig})") from None
    try:
        cur = raw.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        row = cur.fetchone()
        mode = row[0] if row else None
        cur.close()
    except Exception as exc:
        raise ConfigError(f"{what}: cannot open database ({exc})") from None
    finally:
        raw.close()
    if mode != "wal":
        raise ConfigError(f"{what}: could not switch SQLite to WAL mode (got {mode!r})")


def single_read(conn: Connection) -> Connection:
    """Mark ``conn`` for one read-only statement: skip the BEGIN round trip on SQLite.

    Saves about a tenth of a millisecond on hot paths (the consent check) where one SELECT
    needs no transaction around it."""
    return conn.execution_options(sqlite_begin="")


def redacted(engine: Engine) -> str:
    """The engine's URL with any password masked, for messages and logs."""
    return engine.url.render_as_string(hide_password=True)


def immediate(conn: Connection) -> Connection:
    """Mark ``conn`` so its next transaction takes the SQLite write lock at BEGIN.

    Without it a transaction that reads and then writes can fail with SQLITE_BUSY under WAL
    instead of waiting; on other databases it changes nothing."""
    return conn.execution_options(sqlite_begin="IMMEDIATE")


# ------------------------------------------------------------------------------------------------
# Rows as read back for verification


@dataclass
class _Row:
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


def create_tables(
    engine: Engine,
    tables: Sequence[Table],
    indexes: Sequence[Index] = (),
    *,
    label: str,
    then: Callable[[Connection], None] | None = None,
) -> None:
    """Create missing ``tables`` and ``indexes`` (then run ``then``) in one write transaction.

    Safe when several processes open the same store at once: on PostgreSQL a concurrent creator
    may win the race (IntegrityError/ProgrammingError), so the whole step is retried; a
    database that cannot be opened at all is a ``ConfigError`` naming ``label`` and the URL.
    Every node store (audit log, consent, disputes, verification budget, score log) opens so.
    """
    for attempt in range(3):
        try:
            with engine.connect() as conn:
                immediate(conn)
                with conn.begin():
                    for table in tables:
                        conn.execute(CreateTable(table, if_not_exists=True))
                    for index in indexes:
                        conn.execute(CreateIndex(index, if_not_exists=True))
                    if then is not None:
                        then(conn)
            return
        except (IntegrityError, ProgrammingError):
            if attempt == 2:
                raise
        except OperationalError as exc:
            raise ConfigError(
                f"{label} {redacted(engine)}: cannot open database ({exc.orig})"
            ) from None


def _row_from_db(m: RowMapping) -> _Row:
    content: dict[str, Any] | None
    try:
        counts = json.loads(m["counts"])
        content = {name: m[name] for name in _CONTENT_FIELDS}
        content["counts"] = counts
    except (TypeError, ValueError):
        content = None
    return _Row(seq=m["seq"], content=content, prev_hash=m["prev_hash"], hash=m["hash"])


def _entry_from_db(m: RowMapping) -> AuditEntry:
    try:
        counts = json.loads(m["counts"])
    except (TypeError, ValueError):
        counts = {"<undecodable>": -1}
    return AuditEntry(**{**dict(m), "counts": counts})


# ------------------------------------------------------------------------------------------------
# Diagnosis: which record, and what happened to it


def _ranges(numbers: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Consecutive runs of sorted integers as (first, last)."""
    run: list[int] = []
    for n in sorted(numbers):
        if run and n != run[-1] + 1:
            yield run[0], run[-1]
            run = []
        run.append(n)
    if run:
        yield run[0], run[-1]


def _span(first: int, last: int) -> str:
    return f"record {first}" if first == last else f"records {first}..{last}"


_UNSET = -1


def _diagnose(rows: list[_Row], head: tuple[int, str] | None) -> list[AuditProblem]:
    """Name every tampered record in ``rows`` (table order by seq) against the stored head.

    The idea: the ``prev_hash`` links and the hashes (which cover each record's seq) say where
    every record *originally* was in the chain, independently of the seq column it sits at now.
    Comparing the two tells an edit (content no longer matches its hash) from a deletion (a
    position nobody claims), an insertion (a second record claiming a position, or one beyond
    the head) and a reordering (a record whose content belongs at another position).
    """
    n = len(rows)
    idx_by_hash: dict[str, int] = {}
    for i, r in enumerate(rows):
        idx_by_hash.setdefault(r.hash, i)
    referenced = {r.prev_hash for r in rows}

    # claimed[i]: the seq at which row i's content matches its stored hash (None: at none).
    claimed: list[int | None] = [_UNSET] * n

    def position(i: int) -> int:
        c = claimed[i]
        return rows[i].seq if c is None or c == _UNSET else c

    def resolve(start: int) -> None:
        path, on_path, cur = [], set(), start
        while claimed[cur] == _UNSET and cur not in on_path:
            on_path.add(cur)
            path.append(cur)
            j = idx_by_hash.get(rows[cur].prev_hash)
            if rows[cur].prev_hash == GENESIS_HASH or j is None:
                break
            cur = j
        for k in reversed(path):
            r = rows[k]
            candidates = []
            if r.prev_hash == GENESIS_HASH:
                candidates.append(1)
            else:
                j = idx_by_hash.get(r.prev_hash)
                if j is not None and claimed[j] != _UNSET:
                    candidates.append(position(j) + 1)
            candidates += [r.seq, r.seq - 1, r.seq + 1]  # +-1: a renumbering after insert/delete
            claimed[k] = next(
                (t for t in dict.fromkeys(candidates) if t >= 1 and r.hash_at(t) == r.hash), None
            )

    for i in range(n):
        if claimed[i] == _UNSET:
            resolve(i)

    problems: list[AuditProblem] = []
    flagged: set[int] = set()  # row indices already explained

    # 0. The head's hash is harder to fake than its seq: if it names a record at another
    #    position, report that and trust the hash from here on.
    if head is not None and head[1] in idx_by_hash:
        at = position(idx_by_hash[head[1]])
        if at != head[0]:
            problems.append(
                AuditProblem(
                    0,
                    "head",
                    f"edited — the stored head says record {head[0]} but holds the hash of "
                    f"record {at}",
                )
            )
            head = (at, head[1])

    # 1. Inserted: two rows claiming one position (the genuine one continues the chain), or
    #    rows beyond the stored head.
    by_position: dict[int, list[int]] = defaultdict(list)
    for i in range(n):
        by_position[position(i)].append(i)
    for pos, group in sorted(by_position.items()):
        if len(group) < 2:
            continue
        genuine = [
            i
            for i in group
            if rows[i].hash in referenced or (head is not None and rows[i].hash == head[1])
        ]
        keep = genuine[0] if len(genuine) == 1 else group[0]
        for i in group:
            if i == keep:
                continue
            flagged.add(i)
            if rows[i].hash == rows[keep].hash:
                what = f"a copy of record {pos} (now at seq {rows[keep].seq})"
            elif len(genuine) == 1:
                what = (
                    f"forged: it claims to be record {pos}, but the chain continues from the "
                    f"record at seq {rows[keep].seq}"
                )
            else:
                what = f"it and the record at seq {rows[keep].seq} both claim to be record {pos}"
            problems.append(AuditProblem(rows[i].seq, "inserted", f"inserted — {what}"))
    if head is not None:
        for i in range(n):
            if i not in flagged and position(i) > head[0]:
                flagged.add(i)
                problems.append(
                    AuditProblem(
                        rows[i].seq,
                        "inserted",
                        f"inserted — after the stored head (record {head[0]}): it was added "
                        "outside the audit log",
                    )
                )

    genuine_rows = [i for i in range(n) if i not in flagged]
    positions = {position(i): i for i in genuine_rows}

    # 2. Edited: content matches its hash at no position.
    for i in genuine_rows:
        if claimed[i] is None:
            flagged.add(i)
            problems.append(
                AuditProblem(
                    rows[i].seq, "edited", "edited — stored hash does not match its content"
                )
            )

    # 3. Reordered: content belongs at another position. Runs with one shift are one finding.
    moved = [i for i in genuine_rows if claimed[i] is not None and claimed[i] != rows[i].seq]
    run: list[int] = []

    def flush(run: list[int]) -> None:
        if not run:
            return
        first = rows[run[0]]
        if len(run) == 1:
            detail = f"reordered — holds the content of record {claimed[run[0]]}"
        else:
            shift = first.seq - (claimed[run[0]] or 0)
            detail = (
                f"reordered — records {first.seq}..{rows[run[-1]].seq} were renumbered "
                f"{shift:+d} (each holds the content of the record {abs(shift)} "
                f"{'below' if shift > 0 else 'above'} it)"
            )
        problems.append(AuditProblem(first.seq, "reordered", detail))
        flagged.update(run)

    for i in moved:
        shift = rows[i].seq - (claimed[i] or 0)
        if run and (i != run[-1] + 1 or shift != rows[run[-1]].seq - (claimed[run[-1]] or 0)):
            flush(run)
            run = []
        run.append(i)
    flush(run)

    # 4. Deleted: positions up to the last genuine one that no record claims.
    last = max(positions, default=0)
    missing = [p for p in range(1, last) if p not in positions]
    for first, lastm in _ranges(missing):
        jump = (
            f"seq jumps {first - 1} → {lastm + 1}"
            if first > 1
            else f"the log starts at record {lastm + 1}"
        )
        what = "deleted" if first == lastm else f"records {first}..{lastm} deleted"
        problems.append(AuditProblem(first, "deleted", f"missing — {what} ({jump})"))

    # 5. Links: a record whose predecessor's hash exists nowhere, while a record still sits at
    #    the predecessor's position, means that record was rewritten with a recomputed hash.
    for i in genuine_rows:
        c = claimed[i]
        if c is None:
            continue
        r = rows[i]
        if c == 1 and r.prev_hash != GENESIS_HASH:
            if i not in flagged:
                flagged.add(i)
                problems.append(
                    AuditProblem(
                        r.seq,
                        "edited",
                        "edited — the first record does not start from the genesis hash",
                    )
                )
            continue
        if c == 1:
            continue
        j = idx_by_hash.get(r.prev_hash)
        if j is None and (c - 1) in positions:
            q = positions[c - 1]
            if q not in flagged:
                flagged.add(q)
                problems.append(
                    AuditProblem(
                        rows[q].seq,
                        "edited",
                        f"edited — rewritten with a recomputed hash (record {c} still links to "
                        "its original hash)",
                    )
                )
        elif j is not None and position(j) != c - 1 and i not in flagged:
            flagged.add(i)
            problems.append(
                AuditProblem(
                    r.seq,
                    "edited",
                    f"edited — links to record {position(j)} but claims to be record {c}",
                )
            )

    # 6. The head: truncation of the tail, or a rewritten last record.
    if head is None:
        problems.append(
            AuditProblem(
                0,
                "head",
                "missing — the head row was deleted, so truncation of the tail cannot be checked",
            )
        )
    elif head[0] > last:
        problems.append(
            AuditProblem(
                last + 1,
                "truncated",
                f"missing — log truncated: {_span(last + 1, head[0])} deleted after record "
                f"{last} (the stored head is record {head[0]})",
            )
        )
    elif head[0] >= 1:
        tail = positions.get(head[0])
        if tail is not None and rows[tail].hash != head[1] and tail not in flagged:
            problems.append(
                AuditProblem(
                    rows[tail].seq,
                    "edited",
                    "edited — its hash does not match the stored head (rewritten with a "
                    "recomputed hash)",
                )
            )
    problems.sort(key=lambda p: (p.seq == 0, p.seq, p.kind))
    return problems


# ------------------------------------------------------------------------------------------------


class AuditLog:
    """The audit log of one node, in any SQLAlchemy database (SQLite file by default).

    Safe to share between threads; several processes may open the same database.
    """

    def __init__(self, url: str, node_id: str):
        if not isinstance(node_id, str) or not node_id or len(node_id) > _LIMITS["node_id"]:
            raise ConfigError(f"audit log node id must be 1-63 characters, got {node_id!r}")
        self.node_id = node_id
        self._engine = open_engine(url)
        self.url = redacted(self._engine)  # for messages: never the password
        self._lock = threading.Lock()
        self._create_schema()

    @classmethod
    def for_node_dir(cls, node_dir: Path, node_id: str | None = None) -> AuditLog:
        """The log at ``NODE_DIR/audit.db``; the node id defaults to the directory name."""
        node_dir = Path(node_dir)
        return cls(sqlite_url(node_dir / "audit.db"), node_id or node_dir.resolve().name)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"AuditLog({self.url!r}, node_id={self.node_id!r})"

    # -- schema --------------------------------------------------------------------------------

    def _create_schema(self) -> None:
        """Create missing tables and the head row; safe when several processes start at once."""

        def head_row(conn: Connection) -> None:
            has_head = conn.execute(select(_head.c.id)).first() is not None
            empty = conn.execute(select(_records.c.seq).limit(1)).first() is None
            # A missing head over existing records is tampering: leave it for verify() to
            # report, do not paper over it.
            if not has_head and empty:
                conn.execute(insert(_head).values(id=1, seq=0, hash=GENESIS_HASH))

        create_tables(
            self._engine, _metadata.sorted_tables, _indexes, label="audit log", then=head_row
        )

    # -- writing -------------------------------------------------------------------------------

    def append(
        self,
        *,
        direction: Direction,
        peer: str,
        operation: str,
        purpose: str = "",
        job_id: str = "",
        model_id: str = "",
        subject: str = "",
        request_id: str = "",
        counts: Mapping[str, int] | None = None,
        decision: str = "allow",
        reason: str = "",
        ts: float | None = None,
    ) -> AuditEntry:
        """Append one record, chained to the current head, and return it as stored."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        fields = {
            "peer": peer,
            "operation": operation,
            "purpose": purpose,
            "job_id": job_id,
            "model_id": model_id,
            "subject": subject,
            "request_id": request_id,
            "decision": decision,
        }
        for name, value in fields.items():
            if not isinstance(value, str):
                raise TypeError(f"audit field {name} must be str, got {type(value).__name__}")
            if len(value) > _LIMITS[name]:
                raise ValueError(f"audit field {name} longer than {_LIMITS[name]} characters")
        if not operation:
            raise ValueError("audit field operation must not be empty")
        if not decision:
            raise ValueError("audit field decision must not be empty")
        if not isinstance(reason, str):
            raise TypeError(f"audit field reason must be str, got {type(reason).__name__}")
        clean_counts: dict[str, int] = {}
        for key, number in (counts or {}).items():
            if not isinstance(key, str) or isinstance(number, bool) or not isinstance(number, int):
                raise TypeError(f"audit counts must map str to int, got {key!r}: {number!r}")
            clean_counts[key] = int(number)
        stamp = time.time() if ts is None else float(ts)
        if not math.isfinite(stamp):
            raise ValueError(f"audit timestamp must be finite, got {ts!r}")

        with self._lock, self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                head = conn.execute(
                    select(_head.c.seq, _head.c.hash).where(_head.c.id == 1).with_for_update()
                ).one_or_none()
                if head is None:
                    raise AuditChainError(
                        f"audit log {self.url}: head row missing - the log was tampered with; "
                        "run `xinyidai audit verify`"
                    )
                seq = int(head.seq) + 1
                content = {
                    "seq": seq,
                    "ts": stamp,
                    "node_id": self.node_id,
                    "direction": direction,
                    **fields,
                    "counts": clean_counts,
                    "reason": reason,
                }
                digest = record_hash(head.hash, content)
                conn.execute(
                    insert(_records).values(
                        **{**content, "counts": canonical_json(clean_counts).decode("utf-8")},
                        prev_hash=head.hash,
                        hash=digest,
                    )
                )
                conn.execute(update(_head).where(_head.c.id == 1).values(seq=seq, hash=digest))
        return AuditEntry(
            seq=seq,
            ts=stamp,
            node_id=self.node_id,
            direction=direction,
            peer=peer,
            operation=operation,
            purpose=purpose,
            job_id=job_id,
            model_id=model_id,
            subject=subject,
            request_id=request_id,
            counts=clean_counts,
            decision=decision,
            reason=reason,
            prev_hash=head.hash,
            hash=digest,
        )

    # -- reading -------------------------------------------------------------------------------

    def head(self) -> tuple[int, str] | None:
        """(seq, hash) of the last record as the separately stored head says; None if absent."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == 1)).first()
        return None if row is None else (int(row.seq), str(row.hash))

    def verify(self, *, anchor: tuple[int, str] | None = None) -> AuditVerification:
        """Check every hash and link and the head; name each tampered record.

        ``anchor`` is a (seq, hash) published earlier outside this database; the record at that
        seq must still have that hash. It is the only defence against a consistent rewrite of
        the tail (see the module docstring).

        The common, intact case is one streaming pass in constant memory; only a log that
        fails it is read whole for the diagnosis.
        """
        for _ in range(5):
            with self._engine.connect() as conn, conn.begin():
                head_before = self._read_head(conn)
                intact, n_records, last_seq, last_hash = self._scan(conn)
                head_after = self._read_head(conn)
            if head_before == head_after:  # no append committed meanwhile (PostgreSQL)
                break
        head = head_after
        problems: list[AuditProblem] = []
        if not intact or head != (last_seq, last_hash):
            problems = self._diagnose()
            if not problems:  # cannot happen if _diagnose is complete; never report "ok" then
                problems = [AuditProblem(0, "head", "inconsistent — chain or head did not verify")]
        if anchor is not None:
            problems += self._check_anchor(anchor)
        return AuditVerification(
            ok=not problems,
            n_records=n_records,
            head_hash=head[1] if head else last_hash,
            head_seq=head[0] if head else last_seq,
            problems=problems,
        )

    @staticmethod
    def _read_head(conn: Connection) -> tuple[int, str] | None:
        row = conn.execute(select(_head.c.seq, _head.c.hash).where(_head.c.id == 1)).first()
        return None if row is None else (int(row.seq), str(row.hash))

    @staticmethod
    def _scan(conn: Connection) -> tuple[bool, int, int, str]:
        """One pass in seq order: (all links and hashes fine, count, last seq, last hash)."""
        expected_seq, expected_prev, n, intact = 1, GENESIS_HASH, 0, True
        stmt = select(_records).order_by(_records.c.seq).execution_options(yield_per=2000)
        for m in conn.execute(stmt).mappings():
            n += 1
            if intact:
                row = _row_from_db(m)
                if (
                    row.seq != expected_seq
                    or row.prev_hash != expected_prev
                    or row.hash_at(row.seq) != row.hash
                ):
                    intact = False
            expected_seq, expected_prev = m["seq"] + 1, m["hash"]
        return intact, n, expected_seq - 1, expected_prev

    def _diagnose(self) -> list[AuditProblem]:
        for _ in range(5):
            with self._engine.connect() as conn, conn.begin():
                head_before = self._read_head(conn)
                rows = [
                    _row_from_db(m)
                    for m in conn.execute(select(_records).order_by(_records.c.seq)).mappings()
                ]
                head = self._read_head(conn)
            if head == head_before:
                break
        return _diagnose(rows, head)

    def _check_anchor(self, anchor: tuple[int, str]) -> list[AuditProblem]:
        seq, digest = anchor
        with self._engine.connect() as conn:
            stored = conn.execute(select(_records.c.hash).where(_records.c.seq == seq)).scalar()
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

    def query(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        peer: str | None = None,
        operation: str | None = None,
        decision: str | None = None,
        job_id: str | None = None,
        subject: str | None = None,
        limit: int | None = None,
    ) -> list[AuditEntry]:
        """Records matching every given filter, oldest first.

        ``since`` is inclusive, ``until`` exclusive. ``limit`` keeps the *most recent* matches
        (what an operator looking at a log wants), still returned oldest first.
        """
        stmt = select(_records)
        if since is not None:
            stmt = stmt.where(_records.c.ts >= since)
        if until is not None:
            stmt = stmt.where(_records.c.ts < until)
        for column, value in (
            (_records.c.peer, peer),
            (_records.c.operation, operation),
            (_records.c.decision, decision),
            (_records.c.job_id, job_id),
            (_records.c.subject, subject),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            stmt = stmt.order_by(_records.c.seq.desc()).limit(limit)
        else:
            stmt = stmt.order_by(_records.c.seq)
        with self._engine.connect() as conn:
            entries = [_entry_from_db(m) for m in conn.execute(stmt).mappings()]
        return sorted(entries, key=lambda e: e.seq) if limit is not None else entries

    def summary(self) -> dict[str, Any]:
        """Counts by operation, peer, decision and direction, plus the time span covered."""
        out: dict[str, Any] = {}
        with self._engine.connect() as conn:
            n, first, last = conn.execute(
                select(func.count(), func.min(_records.c.ts), func.max(_records.c.ts))
            ).one()
            out["records"] = int(n)
            out["first_ts"] = first
            out["last_ts"] = last
            for name in ("operation", "peer", "decision", "direction"):
                col = _records.c[name]
                rows = conn.execute(
                    select(col, func.count()).group_by(col).order_by(func.count().desc(), col)
                ).all()
                out[f"by_{name}"] = {str(k): int(v) for k, v in rows}
        return out
