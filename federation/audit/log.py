"""``AuditLog``: one node's log in any SQLAlchemy database (SQLite file by default).

Concurrency: appends are serialised by a database lock - ``BEGIN IMMEDIATE`` on SQLite, a row
lock on the one-row head table elsewhere (PostgreSQL) - so gRPC worker threads and a CLI process
can append to the same log at once. A ``threading.Lock`` in front keeps threads of one process
from spinning in SQLite's busy handler. SQLite runs in WAL mode with ``synchronous=NORMAL``: an
append then costs about a millisecond and readers never block the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from federation.audit import chain, schema
from federation.audit.chain import ChainHead
from federation.audit.diagnose import diagnose
from federation.audit.records import (
    LIMITS,
    AuditEntry,
    AuditProblem,
    AuditVerification,
    Direction,
    clean_content,
)
from federation.errors import ConfigError
from federation.store import create_tables, immediate, open_engine, redacted, sqlite_url


class AuditLog:
    """The audit log of one node, in any SQLAlchemy database (SQLite file by default).

    Safe to share between threads; several processes may open the same database.
    """

    def __init__(self, url: str, node_id: str):
        if not isinstance(node_id, str) or not node_id or len(node_id) > LIMITS["node_id"]:
            raise ConfigError(f"audit log node id must be 1-63 characters, got {node_id!r}")
        self.node_id = node_id
        self._engine = open_engine(url)
        self.url = redacted(self._engine)  # for messages: never the password
        self._lock = threading.Lock()
        # Safe when several processes start at once (see ``create_tables``).
        create_tables(
            self._engine,
            schema.metadata.sorted_tables,
            schema.indexes,
            label="audit log",
            then=chain.init_head,
        )

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
        clean_counts, stamp = clean_content(
            direction=direction, fields=fields, counts=counts, reason=reason, ts=ts
        )
        content = {
            "ts": stamp,
            "node_id": self.node_id,
            "direction": direction,
            **fields,
            "counts": clean_counts,
            "reason": reason,
        }
        with self._lock, self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                seq, prev_hash, digest = chain.append_record(conn, content, where=self.url)
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
            prev_hash=prev_hash,
            hash=digest,
        )

    # -- reading -------------------------------------------------------------------------------

    def head(self) -> ChainHead | None:
        """(seq, hash) of the last record as the separately stored head says; None if absent."""
        with self._engine.connect() as conn:
            return chain.read_head(conn)

    def verify(self, *, anchor: tuple[int, str] | None = None) -> AuditVerification:
        """Check every hash and link and the head; name each tampered record.

        ``anchor`` is a (seq, hash) published earlier outside this database (a ``ChainHead``,
        e.g. parsed from ``SEQ:HASH``); the record at that seq must still have that hash. It
        is the only defence against a consistent rewrite of the tail (see ``chain``).

        The common, intact case is one streaming pass in constant memory; only a log that
        fails it is read whole for the diagnosis.
        """
        head, result = chain.consistent_read(self._engine, chain.scan)
        problems: list[AuditProblem] = []
        if not result.intact or head != (result.last_seq, result.last_hash):
            problems = self._diagnose()
            if not problems:  # cannot happen if diagnose is complete; never report "ok" then
                problems = [AuditProblem(0, "head", "inconsistent — chain or head did not verify")]
        if anchor is not None:
            with self._engine.connect() as conn:
                problems += chain.check_anchor(conn, anchor)
        return AuditVerification(
            ok=not problems,
            n_records=result.n_records,
            head_hash=head[1] if head else result.last_hash,
            head_seq=head[0] if head else result.last_seq,
            problems=problems,
        )

    def _diagnose(self) -> list[AuditProblem]:
        head, rows = chain.consistent_read(self._engine, chain.read_rows)
        return diagnose(rows, head)

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
        records = schema.records
        stmt = select(records)
        if since is not None:
            stmt = stmt.where(records.c.ts >= since)
        if until is not None:
            stmt = stmt.where(records.c.ts < until)
        for column, value in (
            (records.c.peer, peer),
            (records.c.operation, operation),
            (records.c.decision, decision),
            (records.c.job_id, job_id),
            (records.c.subject, subject),
        ):
            if value is not None:
                stmt = stmt.where(column == value)
        if limit is not None:
            if limit < 0:
                raise ValueError(f"limit must be >= 0, got {limit}")
            stmt = stmt.order_by(records.c.seq.desc()).limit(limit)
        else:
            stmt = stmt.order_by(records.c.seq)
        with self._engine.connect() as conn:
            entries = [chain.entry_from_db(m) for m in conn.execute(stmt).mappings()]
        return sorted(entries, key=lambda e: e.seq) if limit is not None else entries

    def summary(self) -> dict[str, Any]:
        """Counts by operation, peer, decision and direction, plus the time span covered."""
        records = schema.records
        out: dict[str, Any] = {}
        with self._engine.connect() as conn:
            n, first, last = conn.execute(
                select(func.count(), func.min(records.c.ts), func.max(records.c.ts))
            ).one()
            out["records"] = int(n)
            out["first_ts"] = first
            out["last_ts"] = last
            for name in ("operation", "peer", "decision", "direction"):
                col = records.c[name]
                rows = conn.execute(
                    select(col, func.count()).group_by(col).order_by(func.count().desc(), col)
                ).all()
                out[f"by_{name}"] = {str(k): int(v) for k, v in rows}
        return out
