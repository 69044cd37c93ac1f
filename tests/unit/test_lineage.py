"""The auditor's lineage report: a version traced to its run, config, code, each party's data
digest and consent snapshot, PSI job, crypto, metrics, promotions and every score request served
with it (from the nodes' audit logs), in Markdown and standalone HTML; a tampered audit log is
reported loudly and the report still completes; ``xinyidai audit lineage``."""

from __future__ import annotations

import hashlib
import html
import json
import re
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from federation.audit import AuditLog, sqlite_url
from xinyidai.cli.lineage import lineage as lineage_command
from xinyidai.lineage import build_lineage, lineage_report
from xinyidai.tracking import (
    PartyDataset,
    TrackingConfig,
    TrainingRecord,
    log_training,
    mlflow_client,
    promote,
)

BANK_MODEL = json.dumps({"format": "test-model/1", "trees": []})
CONFIG = "model: secureboost\nnote: '<b>bold</b> & ``` fences'\n"
T0 = 1_750_000_000.0
USCC = ("91350100M000100Y43", "91110000600037341L", "92440300MA5FXXXX1E")
EVIL = "<script>alert('x')</script>"


def _store(tmp_path_factory: pytest.TempPathFactory, name: str) -> TrackingConfig:
    """A fresh local store whose database is a copy of one migrated once per session."""
    template = tmp_path_factory.getbasetemp() / "mlflow-template"
    if not (template / "mlflow.db").exists():
        mlflow_client(TrackingConfig.resolve(template)).search_experiments()
    dest = tmp_path_factory.mktemp(name)
    src, dst = sqlite3.connect(template / "mlflow.db"), sqlite3.connect(dest / "mlflow.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return TrackingConfig.resolve(dest)


def _digest(party: str) -> str:
    return hashlib.sha256(f"{party} table v3".encode()).hexdigest()


def _record(job_id: str, model_name: str = "credit-sbt") -> TrainingRecord:
    return TrainingRecord(
        job_id=job_id,
        model_name=model_name,
        protocol="secureboost",
        parties=["bank", "tax", "utility"],
        bank_model_json=BANK_MODEL,
        params={"n_trees": 3, "max_depth": 2, "comment": EVIL + " | pipe"},
        metrics={"test_auc": 0.8125, "test_ks": 0.5, "bank_only_auc": 0.71},
        step_metrics={"tree_seconds": [2.5, 2.0, 1.75]},
        key_bits=2048,
        psi_job="psi-42",
        config_text=CONFIG,
        datasets=[
            PartyDataset("bank", "bank", _digest("bank"), 500, (("0a1b2c3d4e5f6071", "float"),)),
            PartyDataset("tax", "tax", _digest("tax"), 420, (("1a2b3c4d5e6f7081", "int"),)),
            PartyDataset("utility", "utility", _digest("utility"), 450),
        ],
        consent={
            "tax": {"active": 40, "revoked": 2, "expired": 1, "enterprises": 39},
            "utility": {"active": 38, "revoked": 0, "expired": 3, "enterprises": 37},
        },
        consent_taken_at=T0,
        holder_parts={"tax": "ab" * 32, "utility": "cd" * 32},
        code_version="0123456789abcdef0123456789abcdef01234567",
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    return _store(tmp_path_factory, "lineage")


@pytest.fixture(scope="module")
def versions(store: TrackingConfig):
    """Two versions of credit-sbt; v2 promoted over v1."""
    v1 = log_training(_record("job-1"), tracking=store)
    v2 = log_training(_record("job-2"), tracking=store)
    promote("credit-sbt", v1.version, by="alice", reason="first model", tracking=store)
    promote("credit-sbt", v2.version, by="bob", reason=f"better KS {EVIL}", tracking=store)
    return v1, v2


def _logs(tmp_path: Path) -> dict[str, Path]:
    """Audit logs of three nodes: the training job's records and score requests."""
    paths = {}
    for node in ("bank", "tax", "utility"):
        path = tmp_path / node / "audit.db"
        path.parent.mkdir(parents=True)
        with AuditLog(sqlite_url(path), node) as log:
            log.append(direction="local", peer=node, operation="train", job_id="job-2", ts=T0)
            peer = "officer-li" if node == "bank" else "bank"
            for i, code in enumerate(USCC):
                denied = node == "tax" and i == 2
                log.append(
                    direction="served",
                    peer=peer,
                    operation="Score",
                    purpose="financing",
                    model_id="credit-sbt/2",
                    subject=code,
                    decision="deny" if denied else "allow",
                    reason="no consent <revoked>" if denied else "",
                    ts=T0 + 100 + i,
                )
            log.append(  # served with another version: not in v2's report
                direction="served",
                peer=peer,
                operation="Score",
                model_id="credit-sbt/1",
                subject="91500000MA5UXXXX2P",
                ts=T0 + 200,
            )
        paths[node] = path
    return paths


def _open(paths: dict[str, Path]) -> dict[str, AuditLog]:
    return {node: AuditLog(sqlite_url(p), node) for node, p in paths.items()}


def _table_rows(md: str, heading: str) -> list[list[str]]:
    section = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", r)[1:-1]] for r in rows[1:]]


def test_report_traces_version_to_run_data_consent_crypto_metrics_promotions_and_scores(
    store: TrackingConfig, versions, tmp_path: Path
) -> None:
    _, v2 = versions
    logs = _open(_logs(tmp_path))
    md_path, html_path = lineage_report(
        "credit-sbt", "champion", audit_logs=logs, out_dir=tmp_path / "out", tracking=store
    )
    assert md_path.name == "credit-sbt-v2-lineage.md" and html_path.suffix == ".html"
    md = md_path.read_text()

    run = dict(_table_rows(md, "Model version and run"))
    assert run["version"] == "2" and run["aliases"] == "challenger, champion"
    assert run["MLflow run"] == v2.run_id and run["training job"] == "job-2"
    assert run["protocol"] == "secureboost" and run["parties"] == "bank, tax, utility"
    assert run["PSI (alignment) job"] == "psi-42"
    assert (run["crypto scheme"], run["key size (bits)"]) == ("paillier-djn", "2048")
    assert run["code version"] == "0123456789abcdef0123456789abcdef01234567"

    config_sha = hashlib.sha256(CONFIG.encode()).hexdigest()
    assert f"sha256 of the logged experiment.yaml: {config_sha} (matches)" in md
    assert "````\n" + CONFIG.rstrip("\n") + "\n````" in md  # verbatim, fence longer than ```

    params = dict(_table_rows(md, "Parameters"))
    assert params["n_trees"] == "3"
    assert params["comment"] == "&lt;script&gt;alert('x')&lt;/script&gt; \\| pipe"
    metrics = {r[0]: r[1:] for r in _table_rows(md, "Metrics")}
    assert metrics["test_auc"] == ["0.8125", "final"]
    assert metrics["tree_seconds"] == ["1.75", "per step: 0: 2.5, 1: 2, 2: 1.75"]

    data = {r[0]: r for r in _table_rows(md, "Data: each party's digest")}
    assert sorted(data) == ["bank-bank", "tax-tax", "utility-utility"]
    for party in ("bank", "tax", "utility"):
        assert data[f"{party}-{party}"][2] == _digest(party)
        assert data[f"{party}-{party}"][3] == f"xinyidai://{party}/{party}"
    assert data["tax-tax"][4:6] == ["420", "1"]

    consent = {r[0]: r for r in _table_rows(md, "Consent snapshot")}
    assert consent["tax"][1] == "2025-06-15T15:06:40+00:00"
    assert consent["tax"][2:6] == ["40", "2", "1", "39"]
    assert consent["utility"][2:5] == ["38", "0", "3"]
    parts = {r[0]: r for r in _table_rows(md, "Model parts")}
    assert parts["bank"][1:] == [
        hashlib.sha256(BANK_MODEL.encode()).hexdigest(),
        "artifact matches",
    ]
    assert parts["tax"][1] == "ab" * 32 and parts["utility"][1] == "cd" * 32

    promotions = _table_rows(md, "Promotions")
    assert [(r[1], r[2], r[3]) for r in promotions] == [("1", "-", "alice"), ("2 ◀", "1", "bob")]
    assert promotions[1][4] == "better KS &lt;script&gt;alert('x')&lt;/script&gt;"

    audit = {r[0]: r for r in _table_rows(md, "Audit logs")}
    assert [audit[n][1] for n in ("bank", "tax", "utility")] == ["intact"] * 3
    assert audit["tax"][2] == "5" and audit["tax"][4] == "1" and audit["tax"][7] == "3"

    scores = _table_rows(md, "Score requests served with credit-sbt/2")
    assert len(scores) == 9  # 3 nodes x 3 codes; the credit-sbt/1 request is not listed
    assert scores[0][:6] == [
        "2025-06-15T15:08:20.000+00:00",
        "bank",
        "served",
        "officer-li",
        "Score",
        USCC[0],
    ]
    denied = [r for r in scores if r[6] == "deny"]
    assert denied == [
        [
            "2025-06-15T15:08:22.000+00:00",
            "tax",
            "served",
            "bank",
            "Score",
            USCC[2],
            "deny",
            "no consent &lt;revoked&gt;",
        ]
    ]
    assert "No inconsistency found" in md and "BROKEN" not in md

    page = html_path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    for external in ("<script", "<link", "src=", "http://", "https://", "@import"):
        assert external not in page
    assert EVIL not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert v2.run_id in page and USCC[2] in page and config_sha in page
    assert 'role="alert"' not in page
    for log in logs.values():
        log.close()


def test_tampered_audit_log_is_shown_loudly_and_the_report_completes(
    store: TrackingConfig, versions, tmp_path: Path
) -> None:
    paths = _logs(tmp_path)
    con = sqlite3.connect(paths["tax"])  # an intruder hides a denial
    with con:
        con.execute("UPDATE audit_log SET decision = 'allow', reason = '' WHERE seq = 4")
    con.close()
    logs = _open(paths)
    md_path, html_path = lineage_report(
        "credit-sbt", "2", audit_logs=logs, out_dir=tmp_path / "out", tracking=store
    )
    md, page = md_path.read_text(), html_path.read_text()
    alarm = "AUDIT CHAIN BROKEN at node 'tax': record 4: edited — stored hash does not match"
    assert md.startswith("# Lineage of credit-sbt version 2\n\n> **⚠ " + alarm)
    assert "Audit logs: 3 read, 2 intact, 1 broken" in md
    audit = {r[0].strip("*"): r for r in _table_rows(md, "Audit logs")}
    assert audit["tax"][1] == "**BROKEN (1 problem(s))**"
    assert audit["bank"][1] == audit["utility"][1] == "intact"
    scores = _table_rows(md, "Score requests served with credit-sbt/2")
    assert len(scores) == 9  # still listed, marked as coming from a log that failed
    assert {r[1] for r in scores if "tax" in r[1]} == {"**tax (UNTRUSTED LOG)**"}
    boxed = '<div class="alarm-box" role="alert">⚠ ' + html.escape(alarm)
    assert page.count(boxed) == 2  # at the top and in the audit section
    assert '<tr class="alarm"><td>tax</td>' in page
    for log in logs.values():
        log.close()


def test_findings_name_missing_and_mismatched_evidence(
    store: TrackingConfig, versions, tmp_path: Path
) -> None:
    record = _record("job-3", model_name="credit-gaps")
    record.datasets = record.datasets[:2]  # the utility's digest was not logged
    record.consent = {"tax": record.consent["tax"]}
    tracked = log_training(record, tracking=store)
    # The bank's model artifact is replaced in the artifact store after registration.
    artifacts = Path(store.local_dir) / "artifacts"
    (stored,) = [p for p in artifacts.rglob("bank/model.json") if tracked.run_id in str(p)]
    stored.write_text('{"format": "swapped"}')
    lineage = build_lineage("credit-gaps", "challenger", audit_logs={}, tracking=store)
    assert "no dataset input (data digest) for party 'utility'" in lineage.findings
    assert "no consent snapshot for holder 'utility'" in lineage.findings
    assert any(
        f.startswith("bank model artifact sha256") and "does not match" in f
        for f in lineage.findings
    )
    md_path, _ = lineage_report("credit-gaps", "1", audit_logs={}, out_dir=tmp_path, tracking=store)
    md = md_path.read_text()
    assert "no audit log was given" in md and "DOES NOT MATCH" in md


def test_lineage_command_writes_both_files_and_exits_1_on_a_broken_chain(
    store: TrackingConfig, versions, tmp_path: Path
) -> None:
    paths = _logs(tmp_path / "nodes")
    app = typer.Typer()
    app.command("lineage")(lineage_command)
    app.command("noop")(lambda: None)
    out = tmp_path / "reports"
    args = ["lineage", "credit-sbt", "champion", "--out", str(out)]
    args += ["--mlflow-dir", str(store.local_dir)]
    for path in paths.values():
        args += ["--node-dir", str(path.parent)]
    runner = CliRunner()
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert (out / "credit-sbt-v2-lineage.md").is_file()
    assert (out / "credit-sbt-v2-lineage.html").stat().st_mode & 0o777 == 0o600

    con = sqlite3.connect(paths["utility"])
    with con:
        con.execute("DELETE FROM audit_log WHERE seq = 2")
    con.close()
    broken = runner.invoke(app, args)
    assert broken.exit_code == 1
    assert "audit chain BROKEN at node 'utility'" in broken.output
    assert "BROKEN" in (out / "credit-sbt-v2-lineage.md").read_text()

    missing = runner.invoke(app, [*args, "--node-dir", str(tmp_path)])
    assert missing.exit_code != 0 and "no audit log here" in str(missing.exception)
