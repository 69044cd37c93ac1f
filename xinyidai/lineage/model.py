"""What the lineage report says, gathered before rendering so the Markdown and HTML agree.

Why plain dataclasses: ``gather`` fills them from MLflow and the audit logs, ``sections`` and
``render`` only read them, so a report can be rendered (and tested) without MLflow.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from parties.bank.registry import TAG_JOB_ID, TAG_PARTIES, model_id

if TYPE_CHECKING:
    from federation.audit import AuditEntry
    from xinyidai.tracking import Promotion


REQUEST_KINDS = {"Score": "one", "ScoreBatch": "batch", "Verify": "verify"}
"""The bank's scoring operations, by the kind of request each serves."""


def iso(ts: float | None, timespec: str = "seconds") -> str:
    """A UTC timestamp for the report (``-`` when unknown)."""
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec=timespec)


def iso_ms(ms: int | None) -> str:
    """``iso`` of MLflow's millisecond timestamps."""
    return "-" if ms is None else iso(ms / 1000)


@dataclass
class DatasetInfo:
    """One party's dataset input as logged: its digest and what it revealed of its schema."""

    name: str
    party: str
    table: str
    digest: str
    source: str
    n_rows: int | None
    n_columns: int | None
    schema_digest: str


@dataclass
class NodeAudit:
    """One node's audit log as the report saw it."""

    node_id: str
    verified: bool
    n_records: int = 0
    head_hash: str = ""
    problems: list[str] = field(default_factory=list)
    error: str = ""  # the log could not be read at all
    job_records: int = 0
    job_denied: int = 0
    job_first: float | None = None
    job_last: float | None = None
    score_requests: list[AuditEntry] = field(default_factory=list)
    promotions: list[AuditEntry] = field(default_factory=list)  # ``model.promote`` records

    @property
    def broken(self) -> bool:
        return not self.verified


@dataclass
class Lineage:
    """Everything the report says, gathered before rendering (so both formats agree)."""

    name: str
    version: str
    generated_at: float
    aliases: list[str]
    status: str
    created: str
    source: str
    run_id: str
    experiment_id: str = ""
    run_name: str = ""
    run_status: str = ""
    run_start: str = ""
    run_end: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    version_tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    config_name: str = ""
    config_text: str | None = None
    config_sha256: str = ""  # of the logged config text
    bank_part_sha256: str = ""  # of the logged bank model artifact
    holder_parts: dict[str, str] = field(default_factory=dict)
    datasets: list[DatasetInfo] = field(default_factory=list)
    consent: dict[str, dict[str, Any]] = field(default_factory=dict)
    promotions: list[Promotion] = field(default_factory=list)
    nodes: list[NodeAudit] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    @property
    def model_id(self) -> str:
        return model_id(self.name, self.version)

    @property
    def job_id(self) -> str:
        return self.tags.get(TAG_JOB_ID, "") or self.version_tags.get(TAG_JOB_ID, "")

    @property
    def parties(self) -> list[str]:
        raw = self.tags.get(TAG_PARTIES, "")
        return [p for p in raw.split(",") if p]

    @property
    def broken_nodes(self) -> list[NodeAudit]:
        return [n for n in self.nodes if n.broken]

    @property
    def requests_by_kind(self) -> dict[str, int]:
        """Score requests served with this version, by kind (one, batch, verify): the bank's
        own ``served`` records of its scoring operations, one per request id.

        Why not every record naming the version: one request leaves several records (the
        operator's call, the bank's, each holder's), and a retry repeats the request id."""
        counts = dict.fromkeys(REQUEST_KINDS.values(), 0)
        bank = self.parties[0] if self.parties else None
        seen: set[tuple[str, str]] = set()
        for node, entry in self.score_requests:
            kind = REQUEST_KINDS.get(entry.operation)
            if kind is None or entry.direction != "served":
                continue
            if bank is not None and node.node_id != bank:
                continue
            key = (node.node_id, entry.request_id or f"#{entry.seq}")
            if key in seen:
                continue
            seen.add(key)
            counts[kind] += 1
        return counts

    @property
    def score_requests(self) -> list[tuple[NodeAudit, AuditEntry]]:
        rows = [(n, e) for n in self.nodes for e in n.score_requests]
        return sorted(rows, key=lambda r: (r[1].ts, r[0].node_id, r[1].seq))
