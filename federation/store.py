"""Opening a node's SQL stores: one way for every table a node keeps (audit log, consent,
disputes, verification budget, score log).

Why shared: each store needs the same care - SQLite in WAL mode with a busy timeout so gRPC
threads and CLI processes can write at once, write transactions that take the lock at BEGIN,
table creation that survives several processes starting together, and URLs whose passwords
never reach a message. Doing it once keeps the stores consistent with each other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

from sqlalchemy import Index, Table, create_engine, event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.schema import CreateIndex, CreateTable

from federation.errors import ConfigError

__all__ = [
    "SqlStore",
    "create_tables",
    "immediate",
    "open_engine",
    "redacted",
    "single_read",
    "sqlite_url",
]


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of an SQLite file (absolute, so it does not depend on the cwd)."""
    return f"sqlite:///{Path(path).resolve()}"


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
    _add_sqlite_hooks(engine)
    if not in_memory:
        _set_wal(engine, f"{label} {database}")
    return engine


def _add_sqlite_hooks(engine: Engine) -> None:
    """Let SQLAlchemy's "begin" event issue BEGIN itself, so writers can ask for IMMEDIATE."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA synchronous=NORMAL")  # safe with WAL: no corruption, ~1 ms commits
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        if mode:  # "" (see ``single_read``): no BEGIN, the statement is its own transaction
            conn.exec_driver_sql(f"BEGIN {mode}")


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


class SqlStore:
    """One of a node's SQL stores: opened the common way, its tables created, closed as a
    context manager.

    Why a base class: the consent registry, the dispute registry, the verification budget and
    the score log each repeated the same opening, schema creation and closing; deriving keeps
    them identical (same label in every error, no password in ``url``). A subclass names its
    ``LABEL``, ``TABLES``, ``INDEXES`` and ``FILE`` (its SQLite file in a node directory), sets
    its own attributes, then calls ``super().__init__(url)``.
    """

    LABEL: ClassVar[str] = "store"
    TABLES: ClassVar[Sequence[Table]] = ()
    INDEXES: ClassVar[Sequence[Index]] = ()
    FILE: ClassVar[str] = ""

    def __init__(self, url: str) -> None:
        self._engine = open_engine(url, label=self.LABEL)
        self.url = redacted(self._engine)  # for messages: never the password
        self._create_schema()

    @classmethod
    def node_dir_url(cls, node_dir: Path) -> str:
        """The URL of this store's SQLite file in ``node_dir`` (``NODE_DIR/<FILE>``)."""
        if not cls.FILE:
            raise ConfigError(f"{cls.LABEL} has no file of its own in a node directory")
        return sqlite_url(Path(node_dir) / cls.FILE)

    def _create_schema(self) -> None:
        create_tables(self._engine, self.TABLES, self.INDEXES, label=self.LABEL)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()
