"""The information subject's view: what a node holds about one enterprise, and how it was used.

Why: under the 信易贷 rules an enterprise (keyed by its USCC) may see everything a node holds
about it and how it was used, and dispute it (``parties.disputes``). ``subject_report``: what
this node holds about the enterprise (its row, with each column's Chinese name, category and
grade - the enterprise's own data shown to itself), which alignments, training jobs and model
versions used it, which banks asked about it and when, its authorisations and its disputes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.markup import escape
from rich.table import Table as RichTable

from federation.audit import AuditEntry, AuditLog
from federation.transport.calls import SubjectAccess
from models.psi.store import AlignmentError, AlignmentStore
from parties.authorisation import utc_text
from parties.consent import ConsentRegistry
from parties.data.schema import PartySchema
from parties.disputes import DisputeRecord, DisputeRegistry, DisputeStatus, normalise_uscc

__all__ = [
    "Access",
    "DataUse",
    "HeldField",
    "SubjectReport",
    "subject_report",
]


def _iso(ts: float | None) -> str:
    return "-" if ts is None else utc_text(ts)


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
    auth_id: str = ""  # the authorisation that covered this enterprise in the request
    status: str = ""  # this enterprise's outcome: allow, evaluation, no-data, refused:<why>


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
        self._render_held(console)
        for title, columns, rows in self._listings():
            self._table(console, title, columns, rows)
        for note in self.notes:
            console.print(f"[yellow]note:[/] {escape(note)}")

    def _render_held(self, console: Console) -> None:
        if not self.holds_record:
            console.print("This node holds no record of the enterprise.")
            return
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

    def _listings(self) -> list[tuple[str, Sequence[str], list[tuple[Any, ...]]]]:
        """(title, columns, rows) of every table after the data held, in print order."""
        return [
            (
                f"Used by ({len(self.uses)})",
                ("kind", "bank", "job", "model versions", "when (UTC)", "detail"),
                [
                    (u.kind, u.bank, u.job_id, ", ".join(u.model_ids), _iso(u.ts), u.detail)
                    for u in self.uses
                ],
            ),
            (
                f"Requests about the enterprise ({len(self.accesses)})",
                (
                    "when (UTC)",
                    "dir",
                    "peer",
                    "operation",
                    "purpose",
                    "model",
                    "decision",
                    "this enterprise",
                    "authorisation",
                    "reason",
                ),
                [
                    (
                        _iso(a.ts),
                        a.direction,
                        a.peer,
                        a.operation,
                        a.purpose,
                        a.model_id or a.job_id,
                        a.decision,
                        a.status,
                        a.auth_id,
                        a.reason,
                    )
                    for a in self.accesses
                ],
            ),
            (
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
            ),
            (
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
                        else f"{d.status} {_iso(d.resolved_at)} by {d.resolved_by}: "
                        f"{d.resolution_note}",
                    )
                    for d in self.disputes
                ],
            ),
            (
                f"Other records about the enterprise ({len(self.events)})",
                ("when (UTC)", "operation", "by", "decision", "reason"),
                [(_iso(e.ts), e.operation, e.peer, e.decision, e.reason) for e in self.events],
            ),
        ]

    @staticmethod
    def _table(
        console: Console, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
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


def _access(entry: AuditEntry, subject: SubjectAccess | None = None) -> Access:
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
        auth_id=subject.auth_id if subject is not None else "",
        status=subject.status if subject is not None else "",
    )


def _alignment_uses(
    code: str, table: pd.DataFrame, node_id: str, alignments_dir: Path, notes: list[str]
) -> dict[tuple[str, str], DataUse]:
    """Stored PSI alignments (bank, job) whose common set includes the enterprise's row."""
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


def _request_uses(about: Sequence[tuple[AuditEntry, SubjectAccess]]) -> list[DataUse]:
    """Per-enterprise requests that named a job or a model version (scoring one enterprise or
    a batch, a model's evaluation or prediction, verification...), with this enterprise's
    outcomes and the authorisations that covered it."""
    requested: dict[tuple[str, str], set[str]] = {}
    first_seen: dict[tuple[str, str], float] = {}
    ops: dict[tuple[str, str], set[str]] = {}
    outcomes: dict[tuple[str, str], set[str]] = {}
    for e, subject in about:
        if e.direction == "local" or not (e.job_id or e.model_id):
            continue
        key = (e.peer, e.job_id)
        requested.setdefault(key, set())
        if e.model_id:
            requested[key].add(e.model_id)
        first_seen.setdefault(key, e.ts)
        ops.setdefault(key, set()).add(e.operation)
        word = subject.status + (f" under {subject.auth_id}" if subject.auth_id else "")
        outcomes.setdefault(key, set()).add(word)
    out: list[DataUse] = []
    for (peer, job_id), model_ids in requested.items():
        key = (peer, job_id)
        out.append(
            DataUse(
                kind="request",
                bank=peer,
                job_id=job_id,
                model_ids=tuple(sorted(model_ids)),
                ts=first_seen[key],
                detail=f"audited {', '.join(sorted(ops[key]))}: {'; '.join(sorted(outcomes[key]))}",
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

    # One-enterprise records (their subject column) and batch records (one subject row per
    # enterprise: ScoreReach batches, Predict / ScorePoints rows, a job's evaluation).
    about = audit.subjects_of(code)
    accesses = tuple(_access(e, s) for e, s in about if e.direction != "local")
    events = tuple(_access(e, s) for e, s in about if e.direction == "local")

    alignments: dict[tuple[str, str], DataUse] = {}
    if alignments_dir is None and models_dir is not None:
        alignments_dir = Path(models_dir).parent / "alignments"
    if holds and alignments_dir is not None:
        alignments = _alignment_uses(code, table, node_id, Path(alignments_dir), notes)
    uses: list[DataUse] = list(alignments.values())
    if holds and models_dir is not None:
        uses += _training_uses(Path(models_dir), alignments, audit, notes)
    uses += _request_uses(about)
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
