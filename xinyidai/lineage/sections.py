"""The report's sections as one structure (titles, sentences, tables, alarms), rendered twice.

Why one structure: the Markdown and the HTML must say the same thing; each renderer only lays
out what a section function decided, so a fact cannot appear in one format and not the other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from parties.bank.registry import (
    TAG_BANK_PART,
    TAG_CODE_VERSION,
    TAG_CONFIG_SHA256,
    TAG_CRYPTO_SCHEME,
    TAG_KEY_BITS,
    TAG_PROTOCOL,
    TAG_PSI_JOB,
)
from xinyidai.lineage.model import Lineage, iso


@dataclass
class Table:
    headers: Sequence[str]
    rows: list[Sequence[str]]
    alarm_rows: set[int] = field(default_factory=set)  # row indices shown as alarms


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)  # plain sentences
    table: Table | None = None
    code: tuple[str, str] | None = None  # (label, text)
    alarms: list[str] = field(default_factory=list)
    bullets: bool = False  # lines as a list (findings) rather than sentences


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _keys_row(tags: dict[str, str]) -> tuple[str, str]:
    """Paillier's modulus size, or CKKS's parameters (a CKKS key has no single size)."""
    ring = tags.get("xinyidai.crypto.poly_modulus_degree", "")
    if not ring:
        return ("key size (bits)", tags.get(TAG_KEY_BITS, "") or "-")
    chain = tags.get("xinyidai.crypto.coeff_mod_bit_sizes", "").replace(",", "+")
    total = tags.get("xinyidai.crypto.coeff_modulus_bits", "?")
    level = tags.get("xinyidai.crypto.security_bits", "?")
    scale = tags.get("xinyidai.crypto.scale_bits", "?")
    return (
        "CKKS parameters",
        f"N = {ring}, coefficient moduli {chain} = {total} bits, scale 2^{scale}; "
        f"~{level}-bit security (HomomorphicEncryption.org standard)",
    )


def _run(lin: Lineage) -> Section:
    tags = lin.tags
    run = Section("Model version and run")
    run.table = Table(
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
            _keys_row(tags),
            # served how: docs/scoring.md "Serving modes" (untagged: registered before modes, fast)
            ("serving mode", lin.version_tags.get("xinyidai.serving_mode", "") or "fast"),
            ("code version", tags.get(TAG_CODE_VERSION, "-")),
        ],
    )
    return run


def _config(lin: Lineage) -> Section:
    cfg = Section("Configuration")
    recorded = lin.tags.get(TAG_CONFIG_SHA256, "")
    cfg.lines.append(f"Recorded sha256 ({TAG_CONFIG_SHA256}): {recorded or '-'}")
    if lin.config_text is not None:
        verdict = "matches" if lin.config_sha256 == recorded else "DOES NOT MATCH"
        cfg.lines.append(f"sha256 of the logged {lin.config_name}: {lin.config_sha256} ({verdict})")
        if verdict != "matches":
            cfg.alarms.append("the logged config does not match the recorded digest")
        cfg.code = (lin.config_name, lin.config_text)
    else:
        cfg.lines.append("No resolved config was logged with the run.")
    return cfg


def _params(lin: Lineage) -> Section:
    params = Section("Parameters")
    params.table = Table(("parameter", "value"), [(k, v) for k, v in lin.params.items()])
    return params


def _metrics(lin: Lineage) -> Section:
    metrics = Section("Metrics")
    rows: list[Sequence[str]] = []
    for key, value in lin.metrics.items():
        if key in lin.history:
            hist = lin.history[key]
            steps = ", ".join(f"{s}: {_fmt(v)}" for s, v in hist[:50])
            more = f" … ({len(hist)} steps)" if len(hist) > 50 else ""
            rows.append((key, _fmt(value), f"per step: {steps}{more}"))
        else:
            rows.append((key, _fmt(value), "final"))
    metrics.table = Table(("metric", "last value", "kind"), rows)
    return metrics


def _data(lin: Lineage) -> Section:
    data = Section("Data: each party's digest (no rows, no column names left any party)")
    data.table = Table(
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
    return data


def _consent(lin: Lineage) -> Section:
    consent = Section("Consent snapshot at registration (per holder)")
    keys = ("active", "revoked", "expired", "enterprises", "not_yet_valid")
    consent.table = Table(
        ("holder", "taken at (UTC)", *keys, "authorisation set (ids, sha256)"),
        [
            (
                holder,
                iso(snap.get("taken_at")) if isinstance(snap.get("taken_at"), int | float) else "-",
                *(str(snap.get(k, "-")) for k in keys),
                f"{snap.get('auth_set_size', 0)} ids, {snap['auth_set_sha256']}"
                if snap.get("auth_set_sha256")
                else "-",
            )
            for holder, snap in sorted(lin.consent.items())
        ],
    )
    if any(snap.get("auth_set_sha256") for snap in lin.consent.values()):
        consent.lines.append(
            "Authorisation set: computed by each holder at registration, the sha256 over the "
            "sorted ids (one per line) of the active authorisations it held for this bank and "
            "purpose covering the alignment's enterprises; no enterprise code left the holder."
        )
    return consent


def _parts(lin: Lineage) -> Section:
    parts = Section("Model parts (each party keeps its own)")
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
    parts.table = Table(("party", "part sha256", "check"), part_rows)
    return parts


def _promotions(lin: Lineage) -> Section:
    promo = Section("Promotions (model history; this version marked)")
    promo.table = Table(
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
    return promo


def _audit(lin: Lineage) -> Section:
    audit = Section("Audit logs")
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
                f"{iso(node.job_first)} → {iso(node.job_last)}" if node.job_records else "-",
                str(len(node.score_requests)),
                str(len(node.promotions)),
            )
        )
        if node.broken:
            detail = "; ".join(node.problems) or node.error or "verification failed"
            audit.alarms.append(f"AUDIT CHAIN BROKEN at node '{node.node_id}': {detail}")
    audit.table = Table(
        (
            "node",
            "chain",
            "records",
            "head",
            f"job {lin.job_id or '-'} records",
            "denied",
            "job span (UTC)",
            "records naming the version",
            "promotions",
        ),
        audit_rows,
        alarm_rows,
    )
    if not lin.nodes:
        audit.alarms.append("no audit log was given: score requests and the job trail are unknown")
    return audit


def _scores(lin: Lineage) -> Section:
    scores = Section(f"Score requests served with {lin.model_id}")
    score_rows: list[Sequence[str]] = []
    score_alarms: set[int] = set()
    for i, (node, e) in enumerate(lin.score_requests):
        if node.broken:
            score_alarms.add(i)
        score_rows.append(
            (
                iso(e.ts, "milliseconds"),
                node.node_id + (" (UNTRUSTED LOG)" if node.broken else ""),
                e.direction,
                e.peer,
                e.operation,
                e.subject or "-",
                e.decision,
                e.reason or "-",
            )
        )
    scores.table = Table(
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
    if score_rows:
        scores.lines.append(
            "One row per audit record: "
            + served_sentence(lin)
            + " Each request is recorded by the operator's client, the bank and every holder "
            "asked."
        )
    else:
        scores.lines.append("No score request names this version in the given logs.")
    return scores


def _findings(lin: Lineage) -> Section:
    found = Section("Findings", bullets=True)
    found.lines = list(lin.findings) or ["No inconsistency found between MLflow and the logs."]
    return found


_SECTIONS: tuple[Callable[[Lineage], Section], ...] = (
    _run,
    _config,
    _params,
    _metrics,
    _data,
    _consent,
    _parts,
    _promotions,
    _audit,
    _scores,
    _findings,
)


def sections(lin: Lineage) -> list[Section]:
    """Every section of the report, in order."""
    return [make(lin) for make in _SECTIONS]


def served_sentence(lin: Lineage) -> str:
    """The sentence "N score request(s) served with this version (one: a, batch: b, verify: c)",
    counted from the bank's records (``Lineage.requests_by_kind``), and the records behind them."""
    kinds = lin.requests_by_kind
    by_kind = ", ".join(f"{kind}: {n}" for kind, n in kinds.items())
    return (
        f"{sum(kinds.values())} score request(s) served with this version ({by_kind}), "
        f"leaving {len(lin.score_requests)} audit record(s) across the nodes."
    )


def headline(lin: Lineage) -> tuple[list[str], list[str]]:
    """(summary sentences, alarms) for the top of the report."""
    n_ok = sum(1 for n in lin.nodes if n.verified)
    summary = [
        f"Model {lin.name} version {lin.version}"
        + (f" ({', '.join(lin.aliases)})" if lin.aliases else "")
        + f", trained by job {lin.job_id or '-'} in MLflow run {lin.run_id or '-'}.",
        f"Audit logs: {len(lin.nodes)} read, {n_ok} intact, {len(lin.broken_nodes)} broken; "
        + served_sentence(lin),
        f"Report generated {iso(lin.generated_at)} UTC.",
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
