"""The auditor's lineage report of one registered model version (Markdown + standalone HTML).

Why: an auditor asks "what is this model, what was it trained on, under whose consent, who put
it into production, and what has it been used for?". The answers are spread over MLflow (the
run: parameters, config, code version, each party's data digest, consent snapshots, crypto,
metrics; the registry: part digests, aliases, promotions) and every node's hash-chained audit
log (the training job's records, and each score request served with the version: records
whose ``model_id`` is ``"<name>/<version>"``). ``lineage_report`` gathers them into one file.

Each audit log is verified first (``AuditLog.verify``). A broken chain does not stop the
report: it is shown at the top and in the node's section, loudly, naming the node and every
problem, and the records read from that log are marked as untrusted. Anything missing from
MLflow (an artifact, a tag) is listed under "Findings" rather than failing.

Every value that came from MLflow or a log is escaped (HTML entities in both outputs, table
pipes in Markdown), so a crafted parameter or audit reason cannot inject markup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.files import write_atomic
from xinyidai.tracking import (
    BANK_MODEL_ARTIFACT,
    CONFIG_DIR,
    CONSENT_DIR,
    PROMOTE_OPERATION,
    TAG_BANK_PART,
    TAG_CODE_VERSION,
    TAG_CONFIG_SHA256,
    TAG_CRYPTO_SCHEME,
    TAG_JOB_ID,
    TAG_KEY_BITS,
    TAG_PARTIES,
    TAG_PROTOCOL,
    TAG_PSI_JOB,
    Promotion,
    TrackingConfig,
    mlflow_client,
    model_id,
    promotion_history,
    resolve,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from federation.audit import AuditEntry, AuditLog

__all__ = [
    "DatasetInfo",
    "Lineage",
    "NodeAudit",
    "build_lineage",
    "lineage_report",
    "render_html",
    "render_markdown",
    "write_report",
]

_PART_TAG = re.compile(r"^xinyidai\.part\.([a-z0-9-]+)\.sha256$")


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
    def score_requests(self) -> list[tuple[NodeAudit, AuditEntry]]:
        rows = [(n, e) for n in self.nodes for e in n.score_requests]
        return sorted(rows, key=lambda r: (r[1].ts, r[0].node_id, r[1].seq))


# ---------------------------------------------------------------------------------------------
# Gathering


def _iso(ts: float | None, timespec: str = "seconds") -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec=timespec)


def _iso_ms(ms: int | None) -> str:
    return "-" if ms is None else _iso(ms / 1000)


def _download_text(client: MlflowClient, run_id: str, path: str, tmp: Path) -> str | None:
    try:
        local = client.download_artifacts(run_id, path, str(tmp))
        return Path(local).read_text(encoding="utf-8")
    except Exception:
        return None


def _datasets(run: Any, findings: list[str]) -> list[DatasetInfo]:
    out: list[DatasetInfo] = []
    inputs = getattr(run, "inputs", None)
    for dataset_input in getattr(inputs, "dataset_inputs", None) or []:
        ds = dataset_input.dataset
        try:
            profile = json.loads(ds.profile) if ds.profile else {}
        except ValueError:
            profile = {}
            findings.append(f"dataset '{ds.name}': profile is not JSON")
        try:
            source = json.loads(ds.source).get("uri", ds.source)
        except (ValueError, AttributeError):
            source = str(ds.source)
        out.append(
            DatasetInfo(
                name=str(ds.name),
                party=str(profile.get("party", "")),
                table=str(profile.get("table", "")),
                digest=str(profile.get("table_digest") or ds.digest),
                source=str(source),
                n_rows=profile.get("num_rows"),
                n_columns=profile.get("num_columns"),
                schema_digest=str(profile.get("schema_digest", "")),
            )
        )
    return sorted(out, key=lambda d: d.name)


def _audit(node_id: str, log: AuditLog, *, model: str, job_id: str) -> NodeAudit:
    """Verify the chain, then read the job's records and the version's score requests."""
    try:
        result = log.verify()
    except Exception as exc:  # an unreadable log is a finding, not a crash
        return NodeAudit(node_id, verified=False, error=f"{type(exc).__name__}: {exc}")
    node = NodeAudit(
        node_id,
        verified=result.ok,
        n_records=result.n_records,
        head_hash=result.head_hash,
        problems=[str(p) for p in result.problems],
    )
    try:
        # AuditLog.query has no model_id filter: one pass over the records (oldest first).
        for entry in log.query():
            if entry.model_id == model:
                if entry.operation == PROMOTE_OPERATION:
                    node.promotions.append(entry)
                else:
                    node.score_requests.append(entry)
            if job_id and entry.job_id == job_id:
                node.job_records += 1
                node.job_denied += entry.decision != "allow"
                node.job_first = entry.ts if node.job_first is None else node.job_first
                node.job_last = entry.ts
    except Exception as exc:
        node.error = f"{type(exc).__name__}: {exc}"
    return node


def build_lineage(
    name: str,
    version: str | int,
    *,
    audit_logs: Mapping[str, AuditLog],
    tracking: TrackingConfig | None = None,
    now: float | None = None,
) -> Lineage:
    """Gather the lineage of ``name`` at ``version`` (a number or an alias such as champion)."""
    import time

    config = tracking if tracking is not None else TrackingConfig.resolve()
    resolved = resolve(name, version, tracking=config)
    client = mlflow_client(config)
    mv = client.get_model_version(name, resolved.version)
    registered = client.get_registered_model(name)
    aliases = sorted(a for a, v in (registered.aliases or {}).items() if str(v) == resolved.version)
    lineage = Lineage(
        name=name,
        version=resolved.version,
        generated_at=time.time() if now is None else now,
        aliases=aliases,
        status=str(mv.status),
        created=_iso_ms(mv.creation_timestamp),
        source=str(mv.source or ""),
        run_id=resolved.run_id,
        version_tags=dict(sorted(resolved.tags.items())),
        promotions=promotion_history(name, client=client),
    )
    findings = lineage.findings
    for key, digest in lineage.version_tags.items():
        match = _PART_TAG.match(key)
        if match and match.group(1) != "bank":
            lineage.holder_parts[match.group(1)] = digest
    if not resolved.run_id:
        findings.append("the model version names no MLflow run: its training is untraceable")
    else:
        run = client.get_run(resolved.run_id)
        info = run.info
        lineage.experiment_id = str(info.experiment_id)
        lineage.run_name = str(info.run_name or "")
        lineage.run_status = str(info.status)
        lineage.run_start = _iso_ms(info.start_time)
        lineage.run_end = _iso_ms(info.end_time)
        lineage.tags = dict(sorted(run.data.tags.items()))
        lineage.params = dict(sorted(run.data.params.items()))
        lineage.metrics = dict(sorted(run.data.metrics.items()))
        for key in lineage.metrics:
            points = client.get_metric_history(resolved.run_id, key)
            if len(points) > 1 or any(p.step for p in points):
                lineage.history[key] = sorted((int(p.step), float(p.value)) for p in points)
        lineage.datasets = _datasets(run, findings)
        _read_artifacts(client, lineage)
        _check(lineage)
    model = lineage.model_id
    for node_id, log in sorted(audit_logs.items()):
        lineage.nodes.append(_audit(node_id, log, model=model, job_id=lineage.job_id))
    for node in lineage.nodes:
        if node.error and node.verified:
            findings.append(f"node '{node.node_id}': audit log could not be read ({node.error})")
    return lineage


def _read_artifacts(client: MlflowClient, lineage: Lineage) -> None:
    run_id, findings = lineage.run_id, lineage.findings
    with tempfile.TemporaryDirectory(prefix="xinyidai-lineage-") as tmp:
        base = Path(tmp)
        configs = [a.path for a in client.list_artifacts(run_id, CONFIG_DIR) if not a.is_dir]
        if configs:
            lineage.config_name = configs[0].rsplit("/", 1)[-1]
            text = _download_text(client, run_id, configs[0], base)
            lineage.config_text = text
            if text is not None:
                lineage.config_sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
        model_text = _download_text(client, run_id, BANK_MODEL_ARTIFACT, base)
        if model_text is None:
            findings.append(f"the run has no bank model artifact ({BANK_MODEL_ARTIFACT})")
        else:
            lineage.bank_part_sha256 = hashlib.sha256(model_text.encode("utf-8")).hexdigest()
        for artifact in client.list_artifacts(run_id, CONSENT_DIR):
            if artifact.is_dir or not artifact.path.endswith(".json"):
                continue
            holder = artifact.path.rsplit("/", 1)[-1][: -len(".json")]
            text = _download_text(client, run_id, artifact.path, base)
            try:
                lineage.consent[holder] = json.loads(text) if text is not None else {}
            except ValueError:
                findings.append(f"consent snapshot of '{holder}' is not JSON")


def _check(lineage: Lineage) -> None:
    """Cross-checks an auditor would do by hand; each failure is a finding."""
    findings, tags = lineage.findings, lineage.tags
    recorded = tags.get(TAG_CONFIG_SHA256, "")
    if lineage.config_text is None:
        findings.append("the run has no resolved config artifact")
    elif recorded and recorded != lineage.config_sha256:
        findings.append(
            f"config artifact sha256 {lineage.config_sha256} does not match the run's "
            f"{TAG_CONFIG_SHA256} tag {recorded}"
        )
    part = lineage.version_tags.get(TAG_BANK_PART, "")
    if lineage.bank_part_sha256 and part and part != lineage.bank_part_sha256:
        findings.append(
            f"bank model artifact sha256 {lineage.bank_part_sha256} does not match the version's "
            f"{TAG_BANK_PART} tag {part}"
        )
    for key in (TAG_PROTOCOL, TAG_CODE_VERSION, TAG_CONFIG_SHA256, TAG_PARTIES, TAG_JOB_ID):
        if not tags.get(key):
            findings.append(f"the run has no {key} tag")
    parties = lineage.parties
    with_data = {d.party or d.name.split("-", 1)[0] for d in lineage.datasets}
    for party in parties:
        if party not in with_data:
            findings.append(f"no dataset input (data digest) for party '{party}'")
    for holder in parties[1:]:
        if holder not in lineage.consent:
            findings.append(f"no consent snapshot for holder '{holder}'")
        if holder not in lineage.holder_parts:
            findings.append(f"no model-part digest for holder '{holder}' on the version")


def lineage_report(
    name: str,
    version: str | int,
    *,
    audit_logs: Mapping[str, AuditLog],
    out_dir: Path | str,
    tracking: TrackingConfig | None = None,
) -> tuple[Path, Path]:
    """Write ``<name>-v<version>-lineage.md`` and ``.html`` (standalone) into ``out_dir``."""
    lineage = build_lineage(name, version, audit_logs=audit_logs, tracking=tracking)
    return write_report(lineage, out_dir)


def write_report(lineage: Lineage, out_dir: Path | str) -> tuple[Path, Path]:
    """Render ``lineage`` to ``out_dir``. The files name enterprises (score-request
    subjects), so they are written private (0600, directory 0700)."""
    out = Path(out_dir)
    stem = f"{lineage.name}-v{lineage.version}-lineage"
    md_path, html_path = out / f"{stem}.md", out / f"{stem}.html"
    write_atomic(md_path, render_markdown(lineage).encode("utf-8"))
    write_atomic(html_path, render_html(lineage).encode("utf-8"))
    return md_path, html_path


# ---------------------------------------------------------------------------------------------
# Sections (one structure, rendered twice)


@dataclass
class _Table:
    headers: Sequence[str]
    rows: list[Sequence[str]]
    alarm_rows: set[int] = field(default_factory=set)  # row indices shown as alarms


@dataclass
class _Section:
    title: str
    lines: list[str] = field(default_factory=list)  # plain sentences
    table: _Table | None = None
    code: tuple[str, str] | None = None  # (label, text)
    alarms: list[str] = field(default_factory=list)
    bullets: bool = False  # lines as a list (findings) rather than sentences


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _sections(lin: Lineage) -> list[_Section]:
    tags = lin.tags
    out: list[_Section] = []

    run = _Section("Model version and run")
    run.table = _Table(
        ("field", "value"),
        [
            ("registered model", lin.name),
            ("version", lin.version),
            ("aliases", ", ".join(lin.aliases) or "-"),
            ("status", lin.status),
            ("registered at (UTC)", lin.created),
            ("model source", lin.source),
            ("MLflow run", lin.run_id or "-"),
            ("run name / status", f"{lin.run_name or '-'} / {lin.run_status or '-'}"),
            ("run started / ended (UTC)", f"{lin.run_start or '-'} / {lin.run_end or '-'}"),
            ("training job", lin.job_id or "-"),
            ("protocol", tags.get(TAG_PROTOCOL, "-")),
            ("parties", ", ".join(lin.parties) or "-"),
            ("PSI (alignment) job", tags.get(TAG_PSI_JOB, "") or "-"),
            ("crypto scheme", tags.get(TAG_CRYPTO_SCHEME, "-")),
            ("key size (bits)", tags.get(TAG_KEY_BITS, "") or "-"),
            ("code version", tags.get(TAG_CODE_VERSION, "-")),
        ],
    )
    out.append(run)

    cfg = _Section("Configuration")
    recorded = tags.get(TAG_CONFIG_SHA256, "")
    cfg.lines.append(f"Recorded sha256 ({TAG_CONFIG_SHA256}): {recorded or '-'}")
    if lin.config_text is not None:
        verdict = "matches" if lin.config_sha256 == recorded else "DOES NOT MATCH"
        cfg.lines.append(f"sha256 of the logged {lin.config_name}: {lin.config_sha256} ({verdict})")
        if verdict != "matches":
            cfg.alarms.append("the logged config does not match the recorded digest")
        cfg.code = (lin.config_name, lin.config_text)
    else:
        cfg.lines.append("No resolved config was logged with the run.")
    out.append(cfg)

    params = _Section("Parameters")
    params.table = _Table(("parameter", "value"), [(k, v) for k, v in lin.params.items()])
    out.append(params)

    metrics = _Section("Metrics")
    rows: list[Sequence[str]] = []
    for key, value in lin.metrics.items():
        if key in lin.history:
            hist = lin.history[key]
            steps = ", ".join(f"{s}: {_fmt(v)}" for s, v in hist[:50])
            more = f" … ({len(hist)} steps)" if len(hist) > 50 else ""
            rows.append((key, _fmt(value), f"per step: {steps}{more}"))
        else:
            rows.append((key, _fmt(value), "final"))
    metrics.table = _Table(("metric", "last value", "kind"), rows)
    out.append(metrics)

    data = _Section("Data: each party's digest (no rows, no column names left any party)")
    data.table = _Table(
        ("dataset", "party", "table digest", "source", "rows", "columns (keyed hashes)", "schema"),
        [
            (
                d.name,
                d.party or "-",
                d.digest,
                d.source,
                "-" if d.n_rows is None else str(d.n_rows),
                "-" if d.n_columns is None else str(d.n_columns),
                d.schema_digest or "-",
            )
            for d in lin.datasets
        ],
    )
    out.append(data)

    consent = _Section("Consent snapshot at training time (per holder)")
    keys = ("active", "revoked", "expired", "enterprises", "not_yet_valid")
    consent.table = _Table(
        ("holder", "taken at (UTC)", *keys),
        [
            (
                holder,
                _iso(snap.get("taken_at"))
                if isinstance(snap.get("taken_at"), int | float)
                else "-",
                *(str(snap.get(k, "-")) for k in keys),
            )
            for holder, snap in sorted(lin.consent.items())
        ],
    )
    out.append(consent)

    parts = _Section("Model parts (each party keeps its own)")
    recorded_bank = lin.version_tags.get(TAG_BANK_PART, "")
    part_rows: list[Sequence[str]] = [
        (
            lin.parties[0] if lin.parties else "bank",
            recorded_bank or "-",
            "artifact " + ("matches" if lin.bank_part_sha256 == recorded_bank else "DOES NOT MATCH")
            if lin.bank_part_sha256
            else "artifact missing",
        )
    ]
    part_rows += [(h, d, "held by the holder") for h, d in sorted(lin.holder_parts.items())]
    parts.table = _Table(("party", "part sha256", "check"), part_rows)
    out.append(parts)

    promo = _Section("Promotions (model history; this version marked)")
    promo.table = _Table(
        ("at (UTC)", "version", "previous champion", "by", "reason"),
        [
            (
                p.at,
                f"{p.version} ◀" if p.version == lin.version else p.version,
                p.previous or "-",
                p.by,
                p.reason or "-",
            )
            for p in lin.promotions
        ],
    )
    if not lin.promotions:
        promo.lines.append("Never promoted.")
    out.append(promo)

    audit = _Section("Audit logs")
    audit_rows: list[Sequence[str]] = []
    alarm_rows: set[int] = set()
    for i, node in enumerate(lin.nodes):
        if node.error and not node.verified and not node.n_records:
            state = f"UNREADABLE: {node.error}"
        elif node.verified:
            state = "intact"
        else:
            state = f"BROKEN ({len(node.problems)} problem(s))"
        if node.broken:
            alarm_rows.add(i)
        audit_rows.append(
            (
                node.node_id,
                state,
                str(node.n_records),
                node.head_hash[:16] + ("…" if node.head_hash else "-"),
                str(node.job_records),
                str(node.job_denied),
                f"{_iso(node.job_first)} → {_iso(node.job_last)}" if node.job_records else "-",
                str(len(node.score_requests)),
                str(len(node.promotions)),
            )
        )
        if node.broken:
            detail = "; ".join(node.problems) or node.error or "verification failed"
            audit.alarms.append(f"AUDIT CHAIN BROKEN at node '{node.node_id}': {detail}")
    audit.table = _Table(
        (
            "node",
            "chain",
            "records",
            "head",
            f"job {lin.job_id or '-'} records",
            "denied",
            "job span (UTC)",
            "score requests",
            "promotions",
        ),
        audit_rows,
        alarm_rows,
    )
    if not lin.nodes:
        audit.alarms.append("no audit log was given: score requests and the job trail are unknown")
    out.append(audit)

    scores = _Section(f"Score requests served with {lin.model_id}")
    score_rows: list[Sequence[str]] = []
    score_alarms: set[int] = set()
    for i, (node, e) in enumerate(lin.score_requests):
        if node.broken:
            score_alarms.add(i)
        score_rows.append(
            (
                _iso(e.ts, "milliseconds"),
                node.node_id + (" (UNTRUSTED LOG)" if node.broken else ""),
                e.direction,
                e.peer,
                e.operation,
                e.subject or "-",
                e.decision,
                e.reason or "-",
            )
        )
    scores.table = _Table(
        (
            "time (UTC)",
            "node",
            "dir",
            "caller/peer",
            "operation",
            "subject (USCC)",
            "decision",
            "reason",
        ),
        score_rows,
        score_alarms,
    )
    if not score_rows:
        scores.lines.append("No score request names this version in the given logs.")
    out.append(scores)

    found = _Section("Findings", bullets=True)
    found.lines = list(lin.findings) or ["No inconsistency found between MLflow and the logs."]
    out.append(found)
    return out


def _headline(lin: Lineage) -> tuple[list[str], list[str]]:
    """(summary sentences, alarms) for the top of the report."""
    n_ok = sum(1 for n in lin.nodes if n.verified)
    summary = [
        f"Model {lin.name} version {lin.version}"
        + (f" ({', '.join(lin.aliases)})" if lin.aliases else "")
        + f", trained by job {lin.job_id or '-'} in MLflow run {lin.run_id or '-'}.",
        f"Audit logs: {len(lin.nodes)} read, {n_ok} intact, {len(lin.broken_nodes)} broken; "
        f"{len(lin.score_requests)} score request(s) served with this version.",
        f"Report generated {_iso(lin.generated_at)} UTC.",
    ]
    alarms = []
    for node in lin.broken_nodes:
        detail = "; ".join(node.problems) or node.error or "verification failed"
        alarms.append(
            f"AUDIT CHAIN BROKEN at node '{node.node_id}': {detail}. Records from this log cannot "
            "be trusted."
        )
    if lin.findings:
        alarms.append(f"{len(lin.findings)} finding(s): see Findings.")
    return summary, alarms


# ---------------------------------------------------------------------------------------------
# Markdown


def _md(text: str) -> str:
    """Inline-safe Markdown: HTML entities (renderers pass raw HTML through), no table breaks."""
    escaped = html.escape(str(text), quote=False)
    escaped = escaped.replace("\\", "\\\\").replace("|", "\\|").replace("`", "\\`")
    return re.sub(r"[\r\n]+", " ", escaped)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def render_markdown(lin: Lineage) -> str:
    """The report as Markdown (GitHub-flavoured tables)."""
    summary, alarms = _headline(lin)
    out = [f"# Lineage of {_md(lin.name)} version {_md(lin.version)}", ""]
    for alarm in alarms:
        out += [f"> **⚠ {_md(alarm)}**", ">"]
    if alarms:
        out.append("")
    out += [_md(s) + "  " for s in summary]
    out.append("")
    for section in _sections(lin):
        out += [f"## {_md(section.title)}", ""]
        for alarm in section.alarms:
            out += [f"> **⚠ {_md(alarm)}**", ""]
        for line in section.lines:
            out.append(f"- {_md(line)}" if section.bullets else _md(line) + "  ")
        if section.lines:
            out.append("")
        table = section.table
        if table is not None and table.rows:
            out.append("| " + " | ".join(_md(h) for h in table.headers) + " |")
            out.append("|" + "---|" * len(table.headers))
            for i, row in enumerate(table.rows):
                cells = [_md(c) for c in row]
                if i in table.alarm_rows:
                    cells = [f"**{c}**" if c else c for c in cells]
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
        elif table is not None:
            out += ["(none)", ""]
        if section.code is not None:
            label, text = section.code
            fence = _fence(text)
            out += [f"`{_md(label)}`:", "", fence, text.rstrip("\n"), fence, ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
# HTML (standalone: inline style, no scripts, no external assets)

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;max-width:72em;
color:#1d232a;line-height:1.45;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #1d232a;padding-bottom:.2em}
h2{font-size:1.2em;margin-top:1.8em;border-bottom:1px solid #c7ccd1}
table{border-collapse:collapse;width:100%;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #c7ccd1;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef1f4;word-break:normal;hyphens:auto}
td{overflow-wrap:anywhere;word-break:normal}
tr.alarm td{background:#fde2e1;color:#8a1c14;font-weight:600}
.alarm-box{background:#b3261e;color:#fff;padding:.7em 1em;margin:.6em 0;font-weight:700;
border-radius:4px}
.finding{color:#8a1c14}
pre{background:#f6f8fa;border:1px solid #c7ccd1;padding:.8em;overflow-x:auto;font-size:.85em}
.summary p{margin:.2em 0}
footer{margin-top:2em;font-size:.8em;color:#5c6670}
"""


def _h(text: Any) -> str:
    return html.escape(str(text), quote=True)


def render_html(lin: Lineage) -> str:
    """The report as one standalone HTML file."""
    summary, alarms = _headline(lin)
    title = f"Lineage of {lin.name} version {lin.version}"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_h(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{_h(title)}</h1>",
    ]
    out += [f'<div class="alarm-box" role="alert">⚠ {_h(a)}</div>' for a in alarms]
    out.append('<div class="summary">' + "".join(f"<p>{_h(s)}</p>" for s in summary) + "</div>")
    for section in _sections(lin):
        out.append(f"<h2>{_h(section.title)}</h2>")
        out += [f'<div class="alarm-box" role="alert">⚠ {_h(a)}</div>' for a in section.alarms]
        if section.bullets:
            css = ' class="finding"' if lin.findings else ""
            out.append("<ul>" + "".join(f"<li{css}>{_h(x)}</li>" for x in section.lines) + "</ul>")
        else:
            out += [f"<p>{_h(line)}</p>" for line in section.lines]
        table = section.table
        if table is not None and table.rows:
            out.append("<table><thead><tr>")
            out.append("".join(f"<th>{_h(h)}</th>" for h in table.headers))
            out.append("</tr></thead><tbody>")
            for i, row in enumerate(table.rows):
                css = ' class="alarm"' if i in table.alarm_rows else ""
                out.append(f"<tr{css}>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>")
            out.append("</tbody></table>")
        elif table is not None:
            out.append("<p>(none)</p>")
        if section.code is not None:
            label, text = section.code
            out.append(f"<p><code>{_h(label)}</code></p><pre>{_h(text)}</pre>")
    out.append(
        f"<footer>xinyidai lineage report · {_h(lin.model_id)} · generated "
        f"{_h(_iso(lin.generated_at))} UTC</footer>"
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
