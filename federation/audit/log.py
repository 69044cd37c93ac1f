"""``AuditLog``: one node's log in any SQLAlchemy database (SQLite file by default).

Concurrency: appends are serialised by a database lock - ``BEGIN IMMEDIATE`` on SQLite, a row
lock on the one-row head table elsewhere (PostgreSQL) - so gRPC worker threads and a CLI process
can append to the same log at once. A ``threading.Lock`` in front keeps threads of one process
from spinning in SQLite's busy handler. SQLite runs in WAL mode with ``synchronous=NORMAL``: an
append then costs about a millisecond and readers never block the writer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
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
    SubjectAccess,
    clean_content,
    clean_subjects,
    subjects_digest,
)
from federation.audit.witness import Witness
from federation.errors import AuditChainError, ConfigError
from federation.store import create_tables, immediate, open_engine, redacted, sqlite_url


class AuditLog:
    """The audit log of one node, in any SQLAlchemy database (SQLite file by default).

    Safe to share between threads; several processes may open the same database.
    """

    def __init__(self, url: str, node_id: str, *, create: bool = True):
        """``create=False`` (readers: ``audit verify``, a witness) never creates or changes
        anything: missing tables are an ``AuditChainError`` naming the database, because a log
        whose tables were dropped must never read as "intact: 0 records"."""
        if not isinstance(node_id, str) or not node_id or len(node_id) > LIMITS["node_id"]:
            raise ConfigError(f"audit log node id must be 1-63 characters, got {node_id!r}")
        self.node_id = node_id
        self._engine = open_engine(url)
        self.url = redacted(self._engine)  # for messages: never the password
        self._lock = threading.Lock()
        if not create:
            with self._engine.connect() as conn:
                missing = chain.missing_tables(conn)
            if missing:
                self._engine.dispose()
                raise AuditChainError(
                    f"audit log {self.url}: table(s) {', '.join(missing)} missing — the log was "
                    "dropped or this is not an audit log"
                )
            # A log no node has opened since the upgrade lacks the later (empty) columns;
            # adding them changes no record and no hash.
            with self._engine.connect() as conn:
                immediate(conn)
                with conn.begin():
                    chain.upgrade(conn)
            return
        # Safe when several processes start at once (see ``create_tables``).
        create_tables(
            self._engine,
            schema.metadata.sorted_tables,
            schema.indexes,
            label="audit log",
            then=chain.prepare,
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
        subjects: Iterable[SubjectAccess] = (),
        peer_head: str = "",
    ) -> AuditEntry:
        """Append one record, chained to the current head, and return it as stored.

        ``subjects``: the enterprises the request was about (one row each in a side table,
        written in the same transaction; the record's hash covers their digest).
        ``peer_head``: the other side's chain head as it stated it in this call (``SEQ:HASH``),
        so this record is that peer's witness (see ``verify(witnesses=...)``).
        """
        fields = {
            "peer": peer,
            "operation": operation,
            "purpose": purpose,
            "job_id": job_id,
            "model_id": model_id,
            "subject": subject,
            "request_id": request_id,
            "decision": decision,
            "peer_head": peer_head,
        }
        clean_counts, stamp = clean_content(
            direction=direction, fields=fields, counts=counts, reason=reason, ts=ts
        )
        rows = clean_subjects(subjects)
        digest_of_subjects = subjects_digest(rows)
        del fields["peer_head"]
        content: dict[str, Any] = {
            "ts": stamp,
            "node_id": self.node_id,
            "direction": direction,
            **fields,
            "counts": clean_counts,
            "reason": reason,
        }
        if peer_head:
            content["peer_head"] = peer_head
        if digest_of_subjects:
            content["subjects_sha256"] = digest_of_subjects
        with self._lock, self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                seq, prev_hash, digest = chain.append_record(
                    conn, content, where=self.url, subjects=rows
                )
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
            peer_head=peer_head,
            subjects_sha256=digest_of_subjects,
        )

    def alert(
        self,
        *,
        peer: str,
        operation: str,
        reason: str,
        subject: str = "",
        counts: Mapping[str, int] | None = None,
        purpose: str = "",
        job_id: str = "",
        model_id: str = "",
    ) -> AuditEntry:
        """Record an alert raised by the node itself (a policy limit hit, a failed
        verification...): direction "local", decision "alert", ``peer`` the node it is about.

        Why a record and not a log line: alerts are evidence about a peer's behaviour and
        belong in the chained, witnessed log the operator and the platform read."""
        return self.append(
            direction="local",
            peer=peer[: LIMITS["peer"]],
            operation=operation[: LIMITS["operation"]],
            purpose=purpose[: LIMITS["purpose"]],
            job_id=job_id[: LIMITS["job_id"]],
            model_id=model_id[: LIMITS["model_id"]],
            subject=subject[: LIMITS["subject"]],
            counts=counts,
            decision="alert",
            reason=reason[:500],
        )

    # -- reading -------------------------------------------------------------------------------

    def head(self) -> ChainHead | None:
        """(seq, hash) of the last record as the separately stored head says; None if absent."""
        with self._engine.connect() as conn:
            return chain.read_head(conn)

    def heads_of(self, node_id: str) -> list[ChainHead]:
        """Every head of ``node_id``'s chain this log witnessed (from its requests to us and
        its replies to our requests), oldest first, without repeats: the ``Witness`` protocol."""
        r = schema.records
        stmt = (
            select(r.c.peer_head).where(r.c.peer == node_id, r.c.peer_head != "").order_by(r.c.seq)
        )
        seen: dict[ChainHead, None] = {}
        with self._engine.connect() as conn:
            for (text,) in conn.execute(stmt):
                try:
                    seen.setdefault(ChainHead.parse(text), None)
                except ValueError:
                    continue  # the runtime refuses malformed heads; a stray one witnesses nothing
        return list(seen)

    def admitted_since(
        self, since: float, operations: Sequence[str]
    ) -> list[tuple[str, str, float]]:
        """``(peer, uscc, ts)`` of every enterprise admitted (subject status ``allow``) in a
        record of ``operations`` after ``since``: what a holder's answer quota counts again
        when the node restarts."""
        r, t = schema.records, schema.subjects
        stmt = (
            select(r.c.peer, t.c.uscc, r.c.ts)
            .select_from(t.join(r, r.c.seq == t.c.seq))
            .where(r.c.ts > since, r.c.operation.in_(list(operations)), t.c.status == "allow")
        )
        with self._engine.connect() as conn:
            return [(str(p), str(u), float(ts)) for p, u, ts in conn.execute(stmt)]

    def subjects_of(self, uscc: str) -> list[tuple[AuditEntry, SubjectAccess]]:
        """Every record about enterprise ``uscc``, with its subject row, oldest first.

        Covers both one-enterprise records (``subject`` column; status from the decision) and
        batch records (one ``audit_subjects`` row per enterprise), for the enterprise's report.
        """
        code = uscc.strip().upper()
        r, t = schema.records, schema.subjects
        out: list[tuple[AuditEntry, SubjectAccess]] = []
        with self._engine.connect() as conn:
            batch = conn.execute(
                select(t.c.seq, t.c.uscc, t.c.auth_id, t.c.status).where(t.c.uscc == code)
            ).all()
            rows_by_seq: dict[int, list[SubjectAccess]] = {}
            for row in batch:
                rows_by_seq.setdefault(int(row.seq), []).append(
                    SubjectAccess(row.uscc, row.auth_id, row.status)
                )
            stmt = select(r).where((r.c.subject == code) | r.c.seq.in_(list(rows_by_seq)))
            for m in conn.execute(stmt.order_by(r.c.seq)).mappings():
                entry = chain.entry_from_db(m)
                rows = rows_by_seq.get(entry.seq)
                if rows:
                    out.extend((entry, s) for s in rows)
                else:
                    out.append((entry, SubjectAccess(code, "", entry.decision)))
        return out

    def verify(
        self,
        *,
        anchor: tuple[int, str] | None = None,
        anchors: Sequence[tuple[int, str]] = (),
        witnesses: Sequence[Witness] = (),
    ) -> AuditVerification:
        """Check every hash and link and the head; name each tampered record.

        ``anchor``/``anchors`` are (seq, hash) heads published earlier outside this database
        (a ``ChainHead``, e.g. parsed from ``SEQ:HASH``); the record at that seq must still have
        that hash. ``witnesses`` are peers' logs (or, later, the platform) that recorded heads
        of this chain in calls with it; every such head is checked the same way, naming the
        witness. They are the only defence against a consistent rewrite of the tail, or its
        truncation with the head moved back (see ``chain``).

        The common, intact case is one streaming pass in constant memory; only a log that
        fails it is read whole for the diagnosis.
        """
        head, result = chain.consistent_read(self._engine, chain.scan)
        problems: list[AuditProblem] = []
        if not result.intact or head != (result.last_seq, result.last_hash):
            problems = self._diagnose()
            if not problems:  # cannot happen if diagnose is complete; never report "ok" then
                problems = [AuditProblem(0, "head", "inconsistent — chain or head did not verify")]
        with self._engine.connect() as conn:
            problems += chain.check_subjects(conn)
            for known in ([anchor] if anchor is not None else []) + list(anchors):
                problems += chain.check_anchor(conn, known)
            for witness in witnesses:
                for seen in witness.heads_of(self.node_id):
                    if seen.seq == 0:
                        continue  # the genesis head of an empty log: nothing to lose yet
                    for problem in chain.check_anchor(conn, seen):
                        problems.append(
                            AuditProblem(
                                problem.seq,
                                problem.kind,
                                f"witnessed by {witness.node_id} as {str(seen)[:28]}…: "
                                f"{problem.detail}",
                            )
                        )
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
