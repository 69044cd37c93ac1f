"""The information subject's view: what a node holds about one enterprise, its disputes, repair.

Why: under the 信易贷 rules an enterprise (keyed by its USCC) may see everything a node holds
about it and how it was used, dispute it (异议), and have it repaired (信用修复). Two pieces:

- ``DisputeRegistry``: a node's store of disputes. A dispute marks the enterprise's records -
  all of them, or only some data categories - as disputed; the holder's scoring and
  verification handlers ask ``status(uscc)`` before answering and answer "disputed" while a
  dispute covering the category is open. ``resolve`` records the repair (a note and who did it).
  Every change is written to the node's audit log with ``subject`` = the USCC.
- ``subject_report``: what this node holds about the enterprise (its row, with each column's
  Chinese name, category and grade - the enterprise's own data shown to itself), which
  alignments, training jobs and model versions used it, which banks asked about it and when, its
  authorisations and its disputes.

Where disputes are stored: in the node's *consent* database (``consent_url``, by default
``NODE_DIR/consent.db``), in their own table ``subject_dispute``. Disputes are, like
authorisations, per-enterprise state the enterprise controls; keeping them next to the consent
records means no new setting (``node.yaml`` already names that database, SQLite or PostgreSQL),
one backup and one set of database permissions for everything the enterprise decides. Only the
table is shared; the two stores never touch each other's rows.

Idempotency: disputing an enterprise that already has an open dispute *adds* a second one (each
complaint keeps its own reason and is resolved on its own); re-sending an identical open dispute
(same enterprise, categories and reason) returns the existing one and records nothing new, so a
retried request does not create twins. Resolving an already resolved dispute is refused, naming
the earlier resolution.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as dt
import io
import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable
from sqlalchemy import (
    Column,
    Double,
    Index,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    insert,
    select,
    update,
)

from federation.audit import (
    AuditEntry,
    AuditLog,
    create_tables,
    immediate,
    open_engine,
    redacted,
    single_read,
)
from federation.audit import sqlite_url as _sqlite_url
from federation.errors import ConfigError, XinyidaiError
from parties.config import NodeConfig
from parties.consent import ConsentRegistry
from parties.data import uscc as uscc_codes
from parties.data.schema import CATEGORIES, PartySchema

__all__ = [
    "DISPUTABLE_CATEGORIES",
    "Access",
    "DataUse",
    "DisputeError",
    "DisputeRecord",
    "DisputeRegistry",
    "DisputeStatus",
    "HeldField",
    "SubjectReport",
    "normalise_uscc",
    "subject_report",
]

DISPUTABLE_CATEGORIES: tuple[str, ...] = tuple(c for c in CATEGORIES if c != "identity")
"""Data categories a dispute can name (the USCC itself is the key, not a disputable datum)."""

_DISPUTE_ID = re.compile(r"[0-9a-f]{32}")
_MAX_REASON = 2000
_MAX_BY = 255  # the audit log's peer field


class DisputeError(XinyidaiError):
    """A dispute operation cannot be done (invalid USCC, unknown dispute, bad category...)."""


def normalise_uscc(code: object) -> str:
    """The USCC as stored (NFKC, no spaces, upper case), or ``DisputeError`` naming the problem."""
    if not isinstance(code, str):
        raise DisputeError(f"enterprise code must be text, got {type(code).__name__}")
    normal = uscc_codes.normalise(code)
    problem = uscc_codes.problem(normal)
    if problem is not None:
        raise DisputeError(f"{code!r} is not a valid unified social credit code: {problem}")
    return normal


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DisputeError(f"{what} must be non-empty text")
    value = value.strip()
    if len(value) > limit:
        raise DisputeError(f"{what} is {len(value)} characters long; at most {limit}")
    return value


# ------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class DisputeRecord:
    """One dispute. ``categories`` empty means all of this node's data about the enterprise."""

    dispute_id: str
    uscc: str
    categories: tuple[str, ...]
    reason: str
    raised_by: str
    raised_at: float
    resolved_at: float | None = None
    resolved_by: str | None = None
    resolution_note: str | None = None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    def covers(self, category: str) -> bool:
        """True when this dispute concerns data of ``category``."""
        return not self.categories or category in self.categories

    def to_dict(self) -> dict[str, Any]:
        return {
            "dispute_id": self.dispute_id,
            "uscc": self.uscc,
            "categories": list(self.categories),
            "reason": self.reason,
            "raised_by": self.raised_by,
            "raised_at": self.raised_at,
            "status": "open" if self.is_open else "resolved",
            "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by,
            "resolution_note": self.resolution_note,
        }


@dataclass(frozen=True)
class DisputeStatus:
    """The open disputes of one enterprise at one moment: what scoring/verification checks.

    ``all_categories``: an open dispute covers all of the node's data; ``categories``: the
    categories named by open per-category disputes.
    """

    uscc: str
    open: tuple[DisputeRecord, ...] = ()

    @property
    def disputed(self) -> bool:
        return bool(self.open)

    @property
    def all_categories(self) -> bool:
        return any(not d.categories for d in self.open)

    @property
    def categories(self) -> frozenset[str]:
        return frozenset(c for d in self.open for c in d.categories)

    def covers(self, category: str) -> bool:
        """True when an open dispute concerns data of ``category``."""
        return any(d.covers(category) for d in self.open)

    def covers_any(self, categories: Iterable[str]) -> bool:
        return any(self.covers(c) for c in categories)

    def to_dict(self) -> dict[str, Any]:
        return {
            "uscc": self.uscc,
            "disputed": self.disputed,
            "all_categories": self.all_categories,
            "categories": sorted(self.categories),
            "open": [d.dispute_id for d in self.open],
        }


# ------------------------------------------------------------------------------------------------
# The store

_metadata = MetaData()
_disputes = Table(
    "subject_dispute",
    _metadata,
    Column("dispute_id", String(32), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("categories", String(255), nullable=False),  # comma-separated; "" = all data
    Column("reason", Text, nullable=False),
    Column("raised_by", String(_MAX_BY), nullable=False),
    Column("raised_at", Double, nullable=False),
    Column("resolved_at", Double, nullable=True),
    Column("resolved_by", String(_MAX_BY), nullable=True),
    Column("resolution_note", Text, nullable=True),
)
# (uscc, resolved_at): the scoring/verification lookup reads only the enterprise's open rows.
_index = Index("ix_subject_dispute_uscc_open", _disputes.c.uscc, _disputes.c.resolved_at)
# Built once: constructing the statement per call costs more than running it.
_OPEN = select(_disputes).where(
    and_(_disputes.c.uscc == bindparam("uscc"), _disputes.c.resolved_at.is_(None))
)


def _record(row: Any) -> DisputeRecord:
    return DisputeRecord(
        dispute_id=row.dispute_id,
        uscc=row.uscc,
        categories=tuple(c for c in str(row.categories).split(",") if c),
        reason=row.reason,
        raised_by=row.raised_by,
        raised_at=float(row.raised_at),
        resolved_at=None if row.resolved_at is None else float(row.resolved_at),
        resolved_by=row.resolved_by,
        resolution_note=row.resolution_note,
    )


class DisputeRegistry:
    """A node's disputes (SQLAlchemy: SQLite file by default, PostgreSQL by URL).

    ``audit`` receives one record per change (``subject.dispute``, ``subject.resolve``) with
    ``subject`` = the USCC, written inside the same database transaction as the change: a
    change that cannot be put on record is rolled back. ``categories``: the data categories
    this node holds; a dispute naming another is refused (default: any of
    ``DISPUTABLE_CATEGORIES``).
    """

    def __init__(
        self,
        url: str,
        *,
        node_id: str,
        audit: AuditLog,
        categories: Sequence[str] | None = None,
    ):
        if not isinstance(audit, AuditLog):
            raise ConfigError(
                f"dispute registry needs the node's AuditLog, got {type(audit).__name__}"
            )
        self.node_id = node_id
        self.audit = audit
        allowed = tuple(categories) if categories is not None else DISPUTABLE_CATEGORIES
        unknown = [c for c in allowed if c not in DISPUTABLE_CATEGORIES]
        if unknown or not allowed:
            raise ConfigError(
                f"dispute registry categories {list(allowed)} must be a non-empty subset of "
                f"{', '.join(DISPUTABLE_CATEGORIES)}"
            )
        self.categories = allowed
        self._engine = open_engine(url, label="dispute registry")
        self.url = redacted(self._engine)  # for messages: never the password
        self._create_schema()

    @classmethod
    def for_node_dir(
        cls,
        node_dir: Path,
        *,
        audit: AuditLog,
        node_id: str | None = None,
        categories: Sequence[str] | None = None,
    ) -> DisputeRegistry:
        """The registry in ``NODE_DIR/consent.db``; the node id defaults to the directory name."""
        node_dir = Path(node_dir)
        return cls(
            _sqlite_url(node_dir / "consent.db"),
            node_id=node_id or node_dir.resolve().name,
            audit=audit,
            categories=categories,
        )

    @classmethod
    def for_config(
        cls, config: NodeConfig, *, audit: AuditLog, categories: Sequence[str] | None = None
    ) -> DisputeRegistry:
        """The registry of a configured node: its consent database (``consent_url``)."""
        return cls(
            config.resolved_consent_url,
            node_id=config.node_id,
            audit=audit,
            categories=categories,
        )

    def __enter__(self) -> DisputeRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    def __repr__(self) -> str:
        return f"DisputeRegistry({self.url!r}, node_id={self.node_id!r})"

    def _create_schema(self) -> None:
        create_tables(self._engine, [_disputes], [_index], label="dispute registry")

    def _categories(self, categories: Sequence[str] | str | None) -> tuple[str, ...]:
        if categories is None:
            return ()
        if isinstance(categories, str):
            categories = categories.split(",")
        wanted = sorted({str(c).strip().lower() for c in categories if str(c).strip()})
        unknown = [c for c in wanted if c not in self.categories]
        if unknown:
            raise DisputeError(
                f"category {', '.join(repr(c) for c in unknown)} is not data node "
                f"'{self.node_id}' holds (categories: {', '.join(self.categories)})"
            )
        if set(wanted) == set(self.categories):
            return ()  # every category this node holds: the same as "all data"
        return tuple(wanted)

    # -- writing -------------------------------------------------------------------------------

    def dispute(
        self,
        uscc: str,
        *,
        reason: str,
        by: str,
        categories: Sequence[str] | str | None = None,
    ) -> DisputeRecord:
        """Mark the enterprise's data (all, or only ``categories``) disputed from now on.

        ``by``: who raised it (the enterprise's representative, the platform...). Returns the
        stored dispute; an identical open dispute is returned instead of a second copy.
        """
        code = normalise_uscc(uscc)
        reason = _text(reason, "a dispute's reason", _MAX_REASON)
        by = _text(by, "'by' (who raised the dispute)", _MAX_BY)
        cats = self._categories(categories)
        stored = ",".join(cats)
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                twin = conn.execute(
                    select(_disputes).where(
                        _disputes.c.uscc == code,
                        _disputes.c.resolved_at.is_(None),
                        _disputes.c.categories == stored,
                        _disputes.c.reason == reason,
                    )
                ).first()
                if twin is not None:
                    return _record(twin)
                record = DisputeRecord(
                    dispute_id=uuid.uuid4().hex,
                    uscc=code,
                    categories=cats,
                    reason=reason,
                    raised_by=by,
                    raised_at=time.time(),
                )
                conn.execute(
                    insert(_disputes).values(
                        dispute_id=record.dispute_id,
                        uscc=code,
                        categories=stored,
                        reason=reason,
                        raised_by=by,
                        raised_at=record.raised_at,
                    )
                )
                # Inside the transaction: if the audit append fails, the dispute is rolled back.
                self.audit.append(
                    direction="local",
                    peer=by,
                    operation="subject.dispute",
                    subject=code,
                    reason=(
                        f"dispute {record.dispute_id}: {','.join(cats) or 'all data'}: {reason}"
                    )[:500],
                    ts=record.raised_at,
                )
        return record

    def resolve(self, dispute_id: str, *, note: str, by: str) -> DisputeRecord:
        """Close a dispute (credit repair done, or the data confirmed), recording who and why."""
        if not isinstance(dispute_id, str) or not _DISPUTE_ID.fullmatch(dispute_id.strip()):
            raise DisputeError(f"dispute id {dispute_id!r} is not 32 lowercase hex digits")
        dispute_id = dispute_id.strip()
        note = _text(note, "a resolution note", _MAX_REASON)
        by = _text(by, "'by' (who resolved the dispute)", _MAX_BY)
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                row = conn.execute(
                    select(_disputes).where(_disputes.c.dispute_id == dispute_id)
                ).first()
                if row is None:
                    raise DisputeError(f"no dispute {dispute_id} at node '{self.node_id}'")
                before = _record(row)
                if not before.is_open:
                    raise DisputeError(
                        f"dispute {dispute_id} was already resolved at {_iso(before.resolved_at)}"
                        f" by {before.resolved_by} ({before.resolution_note}); nothing changed"
                    )
                now = time.time()
                conn.execute(
                    update(_disputes)
                    .where(_disputes.c.dispute_id == dispute_id)
                    .values(resolved_at=now, resolved_by=by, resolution_note=note)
                )
                self.audit.append(
                    direction="local",
                    peer=by,
                    operation="subject.resolve",
                    subject=before.uscc,
                    reason=f"dispute {dispute_id} resolved: {note}"[:500],
                    ts=now,
                )
        return dataclasses.replace(before, resolved_at=now, resolved_by=by, resolution_note=note)

    # -- reading -------------------------------------------------------------------------------

    def status(self, uscc: str) -> DisputeStatus:
        """The enterprise's open disputes: one indexed SELECT (the scoring/verification check)."""
        code = normalise_uscc(uscc)
        with self._engine.connect() as conn:
            single_read(conn)
            rows = conn.execute(_OPEN, {"uscc": code}).all()
        return DisputeStatus(code, tuple(sorted(map(_record, rows), key=lambda d: d.raised_at)))

    def get(self, dispute_id: str) -> DisputeRecord:
        """One dispute by id (``DisputeError`` if unknown)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_disputes).where(_disputes.c.dispute_id == str(dispute_id).strip())
            ).first()
        if row is None:
            raise DisputeError(f"no dispute {dispute_id!r} at node '{self.node_id}'")
        return _record(row)

    def list(
        self, *, uscc: str | None = None, open_only: bool = False
    ) -> builtins.list[DisputeRecord]:
        """Disputes, oldest first; of one enterprise if ``uscc``; only open ones if asked."""
        stmt = select(_disputes).order_by(_disputes.c.raised_at, _disputes.c.dispute_id)
        if uscc is not None:
            stmt = stmt.where(_disputes.c.uscc == normalise_uscc(uscc))
        if open_only:
            stmt = stmt.where(_disputes.c.resolved_at.is_(None))
        with self._engine.connect() as conn:
            return [_record(row) for row in conn.execute(stmt).all()]


# ------------------------------------------------------------------------------------------------
# The subject report


@dataclass(frozen=True)
class HeldField:
    """One item of the enterprise's row at this node, as the sharing list describes it."""

    column: str
    label_zh: str
    category: str
    grade: int
    value: Any  # JSON-ready: bool, int, float, ISO date, text, or None (missing)
    disputed: bool = False


@dataclass(frozen=True)
class DataUse:
    """A job or model that used the enterprise's row.

    ``kind``: ``alignment`` (its code was in a PSI intersection with a bank), ``training`` (a
    stored model part was trained on an alignment that includes its row), ``request`` (an
    audited per-enterprise request named a job or model version).
    """

    kind: str
    bank: str
    job_id: str
    model_ids: tuple[str, ...] = ()
    ts: float | None = None
    detail: str = ""


@dataclass(frozen=True)
class Access:
    """One audited request about the enterprise: who asked, what, when, and the decision."""

    ts: float
    direction: str  # served: a peer asked this node; made: this node asked a peer
    peer: str
    operation: str
    purpose: str
    job_id: str
    model_id: str
    decision: str
    reason: str


@dataclass(frozen=True)
class SubjectReport:
    """Everything one node holds about, and has on record for, one enterprise."""

    uscc: str
    node_id: str
    role: str
    generated_at: float
    holds_record: bool
    fields: tuple[HeldField, ...]
    uses: tuple[DataUse, ...]
    accesses: tuple[Access, ...]
    events: tuple[Access, ...]  # local records: consent grants/revocations, disputes...
    authorisations: tuple[dict[str, Any], ...]
    disputes: tuple[DisputeRecord, ...]
    notes: tuple[str, ...] = field(default=())

    @property
    def banks(self) -> tuple[str, ...]:
        """Banks that asked this node about the enterprise (served requests)."""
        return tuple(sorted({a.peer for a in self.accesses if a.direction == "served"}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "xinyidai.subject-report/1",
            "uscc": self.uscc,
            "node_id": self.node_id,
            "role": self.role,
            "generated_at": self.generated_at,
            "holds_record": self.holds_record,
            "fields": [dataclasses.asdict(f) for f in self.fields],
            "uses": [dataclasses.asdict(u) for u in self.uses],
            "banks": list(self.banks),
            "accesses": [dataclasses.asdict(a) for a in self.accesses],
            "events": [dataclasses.asdict(a) for a in self.events],
            "authorisations": [dict(a) for a in self.authorisations],
            "disputes": [d.to_dict() for d in self.disputes],
            "notes": list(self.notes),
        }

    def to_json(self, *, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent, sort_keys=False)

    def render(self, console: Console) -> None:
        """Print as rich tables (every stored string escaped: it may come from a peer)."""
        console.print(
            f"[bold]Enterprise {self.uscc}[/] at node [bold]{escape(self.node_id)}[/] "
            f"({self.role}), report of {_iso(self.generated_at)}"
        )
        if not self.holds_record:
            console.print("This node holds no record of the enterprise.")
        else:
            t = RichTable(title=f"Data held ({len(self.fields)} items)")
            for col in ("column", "中文名", "category", "grade", "value", "disputed"):
                t.add_column(col, overflow="fold")
            for f in self.fields:
                value = "-" if f.value is None else escape(str(f.value))
                t.add_row(
                    f.column,
                    f.label_zh,
                    f.category,
                    str(f.grade),
                    value,
                    "[red]disputed[/]" if f.disputed else "",
                )
            console.print(t)
        self._table(
            console,
            f"Used by ({len(self.uses)})",
            ("kind", "bank", "job", "model versions", "when (UTC)", "detail"),
            [
                (u.kind, u.bank, u.job_id, ", ".join(u.model_ids), _iso(u.ts), u.detail)
                for u in self.uses
            ],
        )
        self._table(
            console,
            f"Requests about the enterprise ({len(self.accesses)})",
            ("when (UTC)", "dir", "peer", "operation", "purpose", "model", "decision", "reason"),
            [
                (
                    _iso(a.ts),
                    a.direction,
                    a.peer,
                    a.operation,
                    a.purpose,
                    a.model_id,
                    a.decision,
                    a.reason,
                )
                for a in self.accesses
            ],
        )
        self._table(
            console,
            f"Authorisations ({len(self.authorisations)})",
            ("auth id", "bank", "purpose", "categories", "valid until (UTC)", "status"),
            [
                (
                    a["auth_id"],
                    a["bank_id"],
                    a["purpose"],
                    ",".join(a["categories"]),
                    _iso(a["valid_until"]),
                    a["status"],
                )
                for a in self.authorisations
            ],
        )
        self._table(
            console,
            f"Disputes ({len(self.disputes)})",
            ("dispute id", "categories", "raised (UTC)", "by", "reason", "status"),
            [
                (
                    d.dispute_id,
                    ",".join(d.categories) or "all data",
                    _iso(d.raised_at),
                    d.raised_by,
                    d.reason,
                    "open"
                    if d.is_open
                    else f"resolved {_iso(d.resolved_at)} by {d.resolved_by}: {d.resolution_note}",
                )
                for d in self.disputes
            ],
        )
        self._table(
            console,
            f"Other records about the enterprise ({len(self.events)})",
            ("when (UTC)", "operation", "by", "decision", "reason"),
            [(_iso(e.ts), e.operation, e.peer, e.decision, e.reason) for e in self.events],
        )
        for note in self.notes:
            console.print(f"[yellow]note:[/] {escape(note)}")

    @staticmethod
    def _table(
        console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]
    ) -> None:
        if not rows:
            console.print(f"{title}: none")
            return
        t = RichTable(title=title)
        for col in columns:
            t.add_column(col, overflow="fold")
        for row in rows:
            t.add_row(*(escape(str(v)) for v in row))
        console.print(t)

    def to_text(self, *, width: int = 160) -> str:
        """The rendered tables as plain text."""
        buffer = io.StringIO()
        self.render(Console(file=buffer, width=width, highlight=False, color_system=None))
        return buffer.getvalue()


def _json_value(value: Any, dtype: str) -> Any:
    """A table cell as JSON: missing → None; bools from the loader's 0.0/1.0; dates ISO."""
    if value is None or (not isinstance(value, str) and bool(pd.isna(value))):
        return None
    if dtype == "bool":
        return bool(value)
    if dtype == "int":
        return int(value)
    if dtype == "float":
        number = float(value)
        return number if math.isfinite(number) else None
    if dtype == "date":
        return pd.Timestamp(value).date().isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _held_fields(
    code: str, table: pd.DataFrame, schema: PartySchema, status: DisputeStatus | None
) -> tuple[HeldField, ...]:
    row = table.loc[code]
    out = []
    for col in schema.columns:
        if col.name == schema.key:
            continue
        value = row[col.name] if col.name in table.columns else None
        out.append(
            HeldField(
                column=col.name,
                label_zh=col.label_zh,
                category=col.category,
                grade=col.grade,
                value=_json_value(value, col.dtype),
                disputed=bool(status is not None and status.covers(col.category)),
            )
        )
    return tuple(out)


def _access(entry: AuditEntry) -> Access:
    return Access(
        ts=entry.ts,
        direction=entry.direction,
        peer=entry.peer,
        operation=entry.operation,
        purpose=entry.purpose,
        job_id=entry.job_id,
        model_id=entry.model_id,
        decision=entry.decision,
        reason=entry.reason,
    )


def _alignment_uses(
    code: str, table: pd.DataFrame, node_id: str, alignments_dir: Path, notes: list[str]
) -> dict[tuple[str, str], DataUse]:
    """Stored PSI alignments (bank, job) whose common set includes the enterprise's row."""
    from parties.holder.alignment import AlignmentError, AlignmentStore

    found: dict[tuple[str, str], DataUse] = {}
    if not alignments_dir.is_dir():
        return found
    positions = table.index.get_indexer([code])
    if positions[0] < 0:
        return found
    position = int(positions[0])
    store = AlignmentStore(alignments_dir, node_id=node_id, table_codes=list(table.index))
    for meta_path in sorted(alignments_dir.glob("*/*.json")):
        bank, job_id = meta_path.parent.name, meta_path.stem
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            rows = store.load(bank, job_id)
        except (OSError, ValueError, AlignmentError) as exc:
            notes.append(f"alignment '{job_id}' of bank '{bank}' not checked: {exc}")
            continue
        if np.any(rows == position):
            created = meta.get("created")
            found[(bank, job_id)] = DataUse(
                kind="alignment",
                bank=bank,
                job_id=job_id,
                ts=float(created) if isinstance(created, int | float) else None,
                detail=f"PSI intersection of {int(rows.size)} enterprises",
            )
    return found


def _training_uses(
    models_dir: Path,
    alignments: dict[tuple[str, str], DataUse],
    audit: AuditLog,
    notes: list[str],
) -> list[DataUse]:
    """Stored model parts trained on an alignment that includes the enterprise."""
    out: list[DataUse] = []
    if not models_dir.is_dir():
        return out
    for path in sorted(models_dir.rglob("*.json")):
        relative = path.relative_to(models_dir)
        if len(relative.parts) < 2:
            continue
        bank, job_id = relative.parts[0], path.stem
        try:
            part = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            notes.append(f"model part {relative} not readable: {exc}")
            continue
        alignment_id = part.get("alignment_id") if isinstance(part, dict) else None
        if not isinstance(alignment_id, str) or (bank, alignment_id) not in alignments:
            continue
        # The model versions this job became are on record in the audit log (model_id).
        model_ids = sorted({e.model_id for e in audit.query(job_id=job_id) if e.model_id})
        fmt = part.get("format", "model part")
        out.append(
            DataUse(
                kind="training",
                bank=bank,
                job_id=job_id,
                model_ids=tuple(model_ids),
                ts=path.stat().st_mtime,
                detail=(
                    f"{fmt} trained on alignment '{alignment_id}', which includes this "
                    "enterprise (a job may use a subset of its rows)"
                ),
            )
        )
    return out


def subject_report(
    uscc: str,
    *,
    node_id: str,
    table: pd.DataFrame,
    schema: PartySchema,
    audit: AuditLog,
    consent: ConsentRegistry | None,
    disputes: DisputeRegistry,
    models_dir: Path | None,
    alignments_dir: Path | None = None,
    role: str | None = None,
) -> SubjectReport:
    """What this node holds about the enterprise and everything on record about its use.

    ``table``: the node's validated table (indexed by USCC, as ``load_table`` returns it).
    ``alignments_dir`` defaults to ``models_dir``'s sibling ``alignments`` (the node layout).
    The report reads; it writes nothing (the caller records that a report was produced).
    """
    code = normalise_uscc(uscc)
    notes: list[str] = []
    status = disputes.status(code)
    holds = code in table.index
    fields = _held_fields(code, table, schema, status) if holds else ()

    records = audit.query(subject=code)
    accesses = tuple(_access(e) for e in records if e.direction != "local")
    events = tuple(_access(e) for e in records if e.direction == "local")

    alignments: dict[tuple[str, str], DataUse] = {}
    if alignments_dir is None and models_dir is not None:
        alignments_dir = Path(models_dir).parent / "alignments"
    if holds and alignments_dir is not None:
        alignments = _alignment_uses(code, table, node_id, Path(alignments_dir), notes)
    uses: list[DataUse] = list(alignments.values())
    if holds and models_dir is not None:
        uses += _training_uses(Path(models_dir), alignments, audit, notes)
    # Per-enterprise requests that named a job or a model version (scoring, verification...).
    requested: dict[tuple[str, str], set[str]] = {}
    first_seen: dict[tuple[str, str], float] = {}
    for e in records:
        if e.direction == "local" or not (e.job_id or e.model_id):
            continue
        key = (e.peer, e.job_id)
        requested.setdefault(key, set())
        if e.model_id:
            requested[key].add(e.model_id)
        first_seen.setdefault(key, e.ts)
    for (peer, job_id), model_ids in requested.items():
        ops = sorted({e.operation for e in records if (e.peer, e.job_id) == (peer, job_id)})
        uses.append(
            DataUse(
                kind="request",
                bank=peer,
                job_id=job_id,
                model_ids=tuple(sorted(model_ids)),
                ts=first_seen[(peer, job_id)],
                detail=f"audited {', '.join(ops)}",
            )
        )
    uses.sort(key=lambda u: (u.ts if u.ts is not None else 0.0, u.kind, u.job_id))

    authorisations: tuple[dict[str, Any], ...] = ()
    if consent is not None:
        authorisations = tuple(r.to_dict() for r in consent.list(uscc=code))

    return SubjectReport(
        uscc=code,
        node_id=node_id,
        role=role or schema.role,
        generated_at=time.time(),
        holds_record=holds,
        fields=fields,
        uses=tuple(uses),
        accesses=accesses,
        events=events,
        authorisations=authorisations,
        disputes=tuple(disputes.list(uscc=code)),
        notes=tuple(notes),
    )
