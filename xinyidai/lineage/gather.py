"""Gathering a version's lineage from MLflow (run, registry, artifacts) and every node's audit log.

Why everything missing becomes a finding: an auditor needs the report most when the evidence
is incomplete or tampered with, so an absent artifact or tag, a digest that does not match, or
a broken audit chain is written into the report instead of stopping it.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parties.bank.registry import (
    BANK_MODEL_ARTIFACT,
    PROMOTE_OPERATION,
    TAG_BANK_PART,
    TAG_CODE_VERSION,
    TAG_CONFIG_SHA256,
    TAG_JOB_ID,
    TAG_PARTIES,
    TAG_PROTOCOL,
)
from xinyidai.lineage.model import DatasetInfo, Lineage, NodeAudit, iso_ms
from xinyidai.tracking import (
    CONFIG_DIR,
    CONSENT_DIR,
    TrackingConfig,
    mlflow_client,
    promotion_history,
    resolve,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from federation.audit import AuditLog

_PART_TAG = re.compile(r"^xinyidai\.part\.([a-z0-9-]+)\.sha256$")


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
        created=iso_ms(mv.creation_timestamp),
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
        lineage.run_start = iso_ms(info.start_time)
        lineage.run_end = iso_ms(info.end_time)
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
