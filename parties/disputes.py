"""Disputes (异议) about an enterprise's records at a node, and their repair (信用修复).

Why: under the 信易贷 rules an enterprise (keyed by its USCC) may dispute what a node holds about
it - all of it, or only some data categories. While a dispute covering a category is open, the
holder's scoring and verification handlers answer "disputed" for it (they ask
``DisputeRegistry.status(uscc)`` before answering); ``resolve`` records the repair (a note and
who did it). Every change is written to the node's audit log with ``subject`` = the USCC. What
the enterprise can see about itself is ``parties.subject``.

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
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection

from federation.audit import AuditLog
from federation.errors import ConfigError, XinyidaiError
from federation.store import SqlStore, create_tables, immediate, single_read
from parties.authorisation import utc_text
from parties.config import NodeConfig
from parties.data import uscc as uscc_codes
from parties.data.schema import CATEGORIES

__all__ = [
    "DISPUTABLE_CATEGORIES",
    "DisputeError",
    "DisputeRecord",
    "DisputeRegistry",
    "DisputeStatus",
    "normalise_uscc",
]

DISPUTABLE_CATEGORIES: tuple[str, ...] = tuple(c for c in CATEGORIES if c != "identity")
"""Data categories a dispute can name (the USCC itself is the key, not a disputable datum)."""

_DISPUTE_ID = re.compile(r"[0-9a-f]{32}")
_MAX_REASON = 2000
OUTCOMES = ("repaired", "rejected")
"""How a holder's operator closes a dispute (``resolve``)."""
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


def _text(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DisputeError(f"{what} must be non-empty text")
    value = value.strip()
    if len(value) > limit:
        raise DisputeError(f"{what} is {len(value)} characters long; at most {limit}")
    return value


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
    outcome: str = ""
    """``repaired`` (the holder corrected its data: credit repair) or ``rejected`` (the data
    stands, the note says why); empty while open, and for disputes closed before outcomes were
    kept."""

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None

    @property
    def status(self) -> str:
        """``open``, ``repaired``, ``rejected`` or (closed before outcomes were kept) ``resolved``."""
        if self.is_open:
            return "open"
        return self.outcome or "resolved"

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
            "status": self.status,
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
    # Added later (``DisputeRegistry._create_schema`` adds it to an older store, empty).
    Column("outcome", String(16), nullable=False, server_default=""),
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
        outcome=str(row.outcome or ""),
    )


class DisputeRegistry(SqlStore):
    """A node's disputes (SQLAlchemy: SQLite file by default, PostgreSQL by URL).

    ``audit`` receives one record per change (``subject.dispute``, ``subject.resolve``) with
    ``subject`` = the USCC, written inside the same database transaction as the change: a
    change that cannot be put on record is rolled back. ``categories``: the data categories
    this node holds; a dispute naming another is refused (default: any of
    ``DISPUTABLE_CATEGORIES``).
    """

    LABEL = "dispute registry"
    TABLES = (_disputes,)
    INDEXES = (_index,)
    FILE = "consent.db"

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
        super().__init__(url)

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
            cls.node_dir_url(node_dir),
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

    def __repr__(self) -> str:
        return f"DisputeRegistry({self.url!r}, node_id={self.node_id!r})"

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

    def _create_schema(self) -> None:
        def add_outcome(conn: Connection) -> None:
            # A store made before outcomes were kept: add the column (empty = "resolved").
            columns = {c["name"] for c in inspect(conn).get_columns(_disputes.name)}
            if "outcome" not in columns:
                conn.execute(
                    text(
                        f"ALTER TABLE {_disputes.name} "
                        "ADD COLUMN outcome VARCHAR(16) NOT NULL DEFAULT ''"
                    )
                )

        create_tables(self._engine, self.TABLES, self.INDEXES, label=self.LABEL, then=add_outcome)

    def resolve(
        self, dispute_id: str, *, note: str, by: str, outcome: str = "repaired"
    ) -> DisputeRecord:
        """Close a dispute: ``repaired`` (the data was corrected: credit repair) or
        ``rejected`` (the data stands), recording who and why; the enterprise sees both."""
        if outcome not in OUTCOMES:
            raise DisputeError(f"outcome {outcome!r} must be one of {', '.join(OUTCOMES)}")
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
                        f"dispute {dispute_id} was already resolved at {utc_text(before.resolved_at or 0.0)}"
                        f" by {before.resolved_by} ({before.resolution_note}); nothing changed"
                    )
                now = time.time()
                conn.execute(
                    update(_disputes)
                    .where(_disputes.c.dispute_id == dispute_id)
                    .values(resolved_at=now, resolved_by=by, resolution_note=note, outcome=outcome)
                )
                self.audit.append(
                    direction="local",
                    peer=by,
                    operation="subject.resolve",
                    subject=before.uscc,
                    reason=f"dispute {dispute_id} {outcome}: {note}"[:500],
                    ts=now,
                )
        return dataclasses.replace(
            before, resolved_at=now, resolved_by=by, resolution_note=note, outcome=outcome
        )

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
