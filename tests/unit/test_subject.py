"""The enterprise's view: disputes (real SQLite stores, real audit log), the subject report built
from a node's table, audit records, alignments and model parts, and the `subject` commands."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from federation.audit import AuditLog, sqlite_url
from federation.errors import AuditChainError, ConfigError
from models.psi.store import AlignmentStore
from parties.authorisation import PlatformSigner
from parties.config import NodeConfig, PeerConfig, TableConfig, TlsConfig
from parties.consent import ConsentRegistry
from parties.data import uscc
from parties.data.loader import load_table
from parties.data.schema import TAX
from parties.data.synth import synthesize_city
from parties.disputes import DisputeError, DisputeRegistry
from parties.subject import SubjectReport, subject_report
from xinyidai.cli.subject import app

DAY = 86400.0


@pytest.fixture(scope="module")
def city() -> dict[str, pd.DataFrame]:
    return synthesize_city(n_enterprises=80, seed=5)


@pytest.fixture
def node(tmp_path: Path, city: dict[str, pd.DataFrame]) -> dict:
    """A tax holder's node directory: node.yaml, data, platform key; stores opened on it."""
    node_dir = tmp_path / "tax"
    (node_dir / "data").mkdir(parents=True)
    csv = node_dir / "data" / "tax.csv"
    city["tax"].to_csv(csv, index=False)
    signing = Ed25519PrivateKey.generate()
    (node_dir / "platform_signing.pub").write_bytes(
        signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    config = NodeConfig(
        node_id="tax",
        role="holder",
        node_dir=Path("."),
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
        data=TableConfig(path=Path("data/tax.csv"), schema_role="tax"),
        platform_public_key=Path("platform_signing.pub"),
        peers=[PeerConfig(node_id="bank", role="bank")],
    )
    (node_dir / "node.yaml").write_text(config.to_yaml())
    table = load_table(csv, TAX)
    audit = AuditLog.for_node_dir(node_dir, "tax")
    disputes = DisputeRegistry.for_node_dir(node_dir, audit=audit, categories=["tax"])
    consent = ConsentRegistry.for_node_dir(node_dir, signing.public_key(), node_id="tax")
    yield {
        "dir": node_dir,
        "table": table,
        "audit": audit,
        "disputes": disputes,
        "consent": consent,
        "signer": PlatformSigner(signing),
        "code": str(table.index[3]),
        "other": str(table.index[4]),
    }
    consent.close()
    disputes.close()
    audit.close()


def _registry(tmp_path: Path, categories=("electricity", "water", "gas")) -> DisputeRegistry:
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "utility")
    return DisputeRegistry(
        sqlite_url(tmp_path / "consent.db"), node_id="utility", audit=audit, categories=categories
    )


def _code(i: int = 0) -> str:
    return str(uscc.generate(np.random.default_rng(99), 5, uscc.CHENGDU_REGIONS)[i])


# ------------------------------------------------------------------------------------------------
# Disputes


def test_dispute_status_resolve_cycle_is_audited(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    code = _code()
    assert not reg.status(code).disputed

    # Full-width input with spaces is the same enterprise.
    typed = " ".join(code).translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789"})
    d = reg.dispute(typed, reason="the arrears were paid in March", by="enterprise")
    assert d.uscc == code and d.is_open and d.categories == ()
    status = reg.status(code)
    assert status.disputed and status.all_categories
    assert status.covers("electricity") and status.covers("gas")
    assert [x.dispute_id for x in status.open] == [d.dispute_id]

    resolved = reg.resolve(d.dispute_id, note="bill corrected, arrears flag cleared", by="alice")
    assert not resolved.is_open
    assert resolved.resolved_by == "alice"
    assert resolved.resolution_note == "bill corrected, arrears flag cleared"
    assert not reg.status(code).disputed
    assert reg.get(d.dispute_id).resolved_at == resolved.resolved_at

    records = reg.audit.query(subject=code)
    assert [r.operation for r in records] == ["subject.dispute", "subject.resolve"]
    assert [r.peer for r in records] == ["enterprise", "alice"]
    assert d.dispute_id in records[0].reason and "arrears were paid" in records[0].reason
    assert "bill corrected" in records[1].reason
    assert all(r.direction == "local" and r.decision == "allow" for r in records)
    assert reg.audit.verify().ok


def test_category_disputes_cover_only_their_categories(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    code = _code()
    reg.dispute(code, reason="water meter misread", by="enterprise", categories=["water"])
    status = reg.status(code)
    assert status.disputed and not status.all_categories
    assert status.categories == frozenset({"water"})
    assert status.covers("water") and not status.covers("electricity")
    assert status.covers_any(["gas", "water"]) and not status.covers_any(["gas"])
    # Naming every category this node holds is the same as disputing all its data.
    everything = reg.dispute(
        code, reason="all wrong", by="enterprise", categories="electricity,water,gas"
    )
    assert everything.categories == ()
    assert reg.status(code).all_categories


def test_a_second_dispute_is_added_an_identical_retry_is_not(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    code = _code()
    first = reg.dispute(
        code, reason="electricity bill wrong", by="enterprise", categories=["electricity"]
    )
    second = reg.dispute(
        code, reason="gas connection is not ours", by="enterprise", categories=["gas"]
    )
    retry = reg.dispute(
        code, reason="electricity bill wrong", by="platform", categories=["electricity"]
    )
    assert first.dispute_id != second.dispute_id
    assert retry.dispute_id == first.dispute_id
    assert [d.dispute_id for d in reg.list(uscc=code)] == [first.dispute_id, second.dispute_id]
    assert len(reg.audit.query(subject=code, operation="subject.dispute")) == 2

    reg.resolve(first.dispute_id, note="confirmed correct", by="bob")
    status = reg.status(code)
    assert [d.dispute_id for d in status.open] == [second.dispute_id]
    assert status.covers("gas") and not status.covers("electricity")
    assert [d.dispute_id for d in reg.list(open_only=True)] == [second.dispute_id]
    # Once resolved, the same complaint may be raised again as a new dispute.
    again = reg.dispute(
        code, reason="electricity bill wrong", by="enterprise", categories=["electricity"]
    )
    assert again.dispute_id not in (first.dispute_id, second.dispute_id)


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    code = _code()
    bad = code[:17] + ("0" if code[17] != "0" else "1")
    with pytest.raises(DisputeError, match="check character"):
        reg.dispute(bad, reason="x", by="enterprise")
    with pytest.raises(DisputeError, match="length 17"):
        reg.status(code[:17])
    with pytest.raises(DisputeError, match="category 'tax' is not data node 'utility' holds"):
        reg.dispute(code, reason="x", by="enterprise", categories=["tax"])
    with pytest.raises(DisputeError, match="reason must be non-empty"):
        reg.dispute(code, reason="  ", by="enterprise")
    with pytest.raises(DisputeError, match="'by'"):
        reg.dispute(code, reason="x", by="")
    with pytest.raises(DisputeError, match="not 32 lowercase hex"):
        reg.resolve("nope", note="x", by="alice")
    with pytest.raises(DisputeError, match=f"no dispute {'a' * 32} at node 'utility'"):
        reg.resolve("a" * 32, note="x", by="alice")
    with pytest.raises(DisputeError, match="no dispute"):
        reg.get("b" * 32)
    d = reg.dispute(code, reason="x", by="enterprise")
    reg.resolve(d.dispute_id, note="done", by="alice")
    with pytest.raises(DisputeError, match=r"already resolved .* by alice \(done\)"):
        reg.resolve(d.dispute_id, note="again", by="bob")
    assert reg.get(d.dispute_id).resolution_note == "done"
    # Nothing refused was stored or put on record as a change.
    assert len(reg.list()) == 1
    assert [r.operation for r in reg.audit.query()] == ["subject.dispute", "subject.resolve"]
    with pytest.raises(ConfigError, match="non-empty subset"):
        _registry(tmp_path, categories=("tax", "nonsense"))


def test_disputes_persist_and_the_status_lookup_uses_the_index(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    code = _code()
    d = reg.dispute(code, reason="x", by="enterprise", categories=["gas"])
    reg.close()
    reopened = _registry(tmp_path)
    assert [x.dispute_id for x in reopened.status(code).open] == [d.dispute_id]
    con = sqlite3.connect(tmp_path / "consent.db")
    plan = con.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM subject_dispute WHERE uscc = ? AND resolved_at IS NULL",
        (code,),
    ).fetchall()
    con.close()
    assert "USING INDEX ix_subject_dispute_uscc_open" in " ".join(str(row[-1]) for row in plan)


def test_a_dispute_that_cannot_be_recorded_is_not_stored(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    code = _code()
    con = sqlite3.connect(tmp_path / "audit.db")
    con.execute("DELETE FROM audit_head")  # a tampered log refuses appends
    con.commit()
    con.close()
    with pytest.raises(AuditChainError):
        reg.dispute(code, reason="x", by="enterprise")
    assert not reg.status(code).disputed
    assert reg.list() == []


# ------------------------------------------------------------------------------------------------
# The subject report


def _populate(node: dict) -> dict:
    """Consent, audit records, alignments and model parts about ``node['code']``."""
    code, other, table = node["code"], node["other"], node["table"]
    audit: AuditLog = node["audit"]
    now = time.time()
    signed = node["signer"].issue(
        uscc=code,
        bank_id="bank",
        purpose="financing",
        categories=["tax"],
        valid_from=now - DAY,
        valid_until=now + 30 * DAY,
    )
    node["consent"].grant(signed)
    served = dict(direction="served", purpose="financing")
    audit.append(**served, peer="bank", operation="CheckAuthorisation", subject=code, ts=now - 50)
    audit.append(**served, peer="bank2", operation="Verify", subject=code, decision="deny",
                 reason="consent: no authorisation", ts=now - 40)  # fmt: skip
    audit.append(**served, peer="bank", operation="Score", subject=code, job_id="score-7",
                 model_id="credit-sbt/3", ts=now - 30)  # fmt: skip
    audit.append(**served, peer="bank", operation="CheckAuthorisation", subject=other, ts=now - 20)
    # Training records carry the job and model version, not a subject.
    audit.append(**served, peer="bank", operation="Start", job_id="sbt-1", model_id="credit-sbt/1")

    pos = table.index.get_loc(code)
    store = AlignmentStore(node["dir"] / "alignments", node_id="tax", table_codes=list(table.index))
    store.save("bank", "psi-1", np.array([pos, 0, 7]))
    store.save("bank", "psi-2", np.array([i for i in range(10) if i != pos]))
    store.save("bank", "psi-3", np.array([pos]))
    (node["dir"] / "alignments" / "bank" / "psi-3.rows").write_bytes(b"\x00" * 4)  # damaged
    models = node["dir"] / "models" / "bank"
    models.mkdir(parents=True)
    for job, alignment in (("sbt-1", "psi-1"), ("sbt-2", "psi-2")):
        part = {"format": "xinyidai.secureboost.holder/1", "alignment_id": alignment}
        (models / f"{job}.json").write_text(json.dumps(part))
    return {"auth_id": signed.auth.auth_id}


def _report(node: dict, code: str | None = None) -> SubjectReport:
    return subject_report(
        code or node["code"],
        node_id="tax",
        table=node["table"],
        schema=TAX,
        audit=node["audit"],
        consent=node["consent"],
        disputes=node["disputes"],
        models_dir=node["dir"] / "models",
    )


def test_report_lists_the_row_its_uses_requests_authorisations_and_disputes(node: dict) -> None:
    made = _populate(node)
    code, table = node["code"], node["table"]
    dispute = node["disputes"].dispute(code, reason="VAT paid is understated", by="enterprise")
    report = _report(node)

    assert report.holds_record and report.uscc == code and report.node_id == "tax"
    by_column = {f.column: f for f in report.fields}
    assert set(by_column) == set(TAX.names) - {"uscc"}
    vat = by_column["vat_paid_12m"]
    assert (vat.label_zh, vat.category, vat.grade) == ("近一年增值税实缴", "tax", 3)
    assert vat.value == pytest.approx(float(table.at[code, "vat_paid_12m"]))
    assert by_column["tax_credit_grade"].value == table.at[code, "tax_credit_grade"]
    assert by_column["in_tax_arrears"].value is bool(table.at[code, "in_tax_arrears"])
    assert by_column["consecutive_normal_months"].value == int(
        table.at[code, "consecutive_normal_months"]
    )
    assert all(f.disputed for f in report.fields)

    uses = {(u.kind, u.job_id): u for u in report.uses}
    assert set(uses) == {("alignment", "psi-1"), ("training", "sbt-1"), ("request", "score-7")}
    assert uses[("training", "sbt-1")].model_ids == ("credit-sbt/1",)
    assert "psi-1" in uses[("training", "sbt-1")].detail
    assert uses[("request", "score-7")].model_ids == ("credit-sbt/3",)
    assert uses[("request", "score-7")].bank == "bank"
    assert any("psi-3" in n and "damaged" in n for n in report.notes)

    assert [(a.peer, a.operation, a.decision) for a in report.accesses] == [
        ("bank", "CheckAuthorisation", "allow"),
        ("bank2", "Verify", "deny"),
        ("bank", "Score", "allow"),
    ]
    assert report.banks == ("bank", "bank2")
    assert [e.operation for e in report.events] == ["subject.dispute"]
    assert [a["auth_id"] for a in report.authorisations] == [made["auth_id"]]
    assert report.authorisations[0]["status"] == "active"
    assert [d.dispute_id for d in report.disputes] == [dispute.dispute_id]

    data = json.loads(report.to_json())
    assert data["uscc"] == code
    assert {f["column"]: f["value"] for f in data["fields"]}["vat_paid_12m"] == vat.value
    assert data["disputes"][0]["status"] == "open"
    assert data["banks"] == ["bank", "bank2"]
    text = report.to_text()
    for expected in ("近一年增值税实缴", code, "credit-sbt/3", "bank2", "VAT paid is understated"):
        assert expected in text


def test_report_marks_only_the_disputed_category_and_clears_after_repair(node: dict) -> None:
    code = node["code"]
    disputes = DisputeRegistry.for_node_dir(
        node["dir"], audit=node["audit"], categories=["tax", "electricity"]
    )
    d = disputes.dispute(code, reason="wrong bill", by="enterprise", categories=["electricity"])
    report = _report({**node, "disputes": disputes})
    assert not any(f.disputed for f in report.fields)  # this node's data is all 'tax'
    disputes.resolve(d.dispute_id, note="fixed", by="alice")
    report = _report({**node, "disputes": disputes})
    assert report.disputes[0].resolved_by == "alice"
    disputes.close()


def test_report_for_an_enterprise_the_node_does_not_hold(node: dict) -> None:
    _populate(node)
    absent = next(c for c in uscc.generate(np.random.default_rng(3), 50, uscc.CHENGDU_REGIONS)
                  if c not in node["table"].index)  # fmt: skip
    report = _report(node, absent)
    assert not report.holds_record
    assert report.fields == () and report.uses == () and report.accesses == ()
    assert "holds no record" in report.to_text()
    with pytest.raises(DisputeError, match="check character"):
        _report(node, absent[:17] + ("0" if absent[17] != "0" else "1"))


# ------------------------------------------------------------------------------------------------
# The commands


def test_cli_dispute_list_report_resolve(node: dict) -> None:
    _populate(node)
    runner = CliRunner()
    code, node_dir = node["code"], str(node["dir"])

    result = runner.invoke(
        app, ["dispute", code.lower(), "--reason", "arrears paid", "--node-dir", node_dir]
    )
    assert result.exit_code == 0, result.output
    dispute_id = result.output.split()[1]
    assert f"enterprise {code}: all data disputed" in result.output

    listed = runner.invoke(app, ["list", "--node-dir", node_dir, "--json"])
    rows = [json.loads(line) for line in listed.output.splitlines()]
    assert [(r["dispute_id"], r["status"]) for r in rows] == [(dispute_id, "open")]

    report = runner.invoke(app, ["report", code, "--node-dir", node_dir, "--json"])
    assert report.exit_code == 0, report.output
    data = json.loads(report.output)
    assert data["disputes"][0]["dispute_id"] == dispute_id
    assert {u["job_id"] for u in data["uses"]} == {"psi-1", "sbt-1", "score-7"}
    assert any(f["column"] == "vat_paid_12m" and f["disputed"] for f in data["fields"])
    text = runner.invoke(app, ["report", code, "--node-dir", node_dir])
    assert "纳税信用等级" in text.output and dispute_id in text.output

    resolved = runner.invoke(
        app, ["resolve", dispute_id, "--note", "repaired", "--by", "alice", "--node-dir", node_dir]
    )
    assert resolved.exit_code == 0, resolved.output
    assert f"repaired {dispute_id}" in resolved.output
    table = runner.invoke(app, ["list", "--node-dir", node_dir, "--uscc", code])
    assert "repaired" in table.output and "alice" in table.output

    ops = [e.operation for e in node["audit"].query(subject=code) if e.direction == "local"]
    assert ops == ["subject.dispute", "subject.report", "subject.report", "subject.resolve"]
    assert node["audit"].verify().ok

    # a second dispute the operator rejects: the enterprise sees "rejected" and why
    again = runner.invoke(
        app, ["dispute", code, "--reason", "arrears flag", "--node-dir", node_dir]
    )
    assert again.exit_code == 0, again.output
    second = again.output.split()[1]
    rejected = runner.invoke(
        app,
        ["resolve", second, "--reject", "--note", "meter readings confirmed", "--by", "bob",
         "--node-dir", node_dir],
    )  # fmt: skip
    assert rejected.exit_code == 0, rejected.output
    assert f"rejected {second}" in rejected.output
    data = json.loads(runner.invoke(app, ["report", code, "--json", "--node-dir", node_dir]).output)
    statuses = {d["dispute_id"]: d["status"] for d in data["disputes"]}
    assert statuses == {dispute_id: "repaired", second: "rejected"}


def test_cli_errors_are_clear(node: dict, tmp_path: Path) -> None:
    runner = CliRunner()
    code, node_dir = node["code"], str(node["dir"])
    bad = code[:17] + ("0" if code[17] != "0" else "1")
    result = runner.invoke(app, ["dispute", bad, "--reason", "x", "--node-dir", node_dir])
    assert isinstance(result.exception, DisputeError)
    assert "check character" in str(result.exception)
    result = runner.invoke(app, ["resolve", "c" * 32, "--note", "x", "--node-dir", node_dir])
    assert isinstance(result.exception, DisputeError)
    assert f"no dispute {'c' * 32}" in str(result.exception)
    result = runner.invoke(
        app, ["dispute", code, "--reason", "x", "--category", "gas", "--node-dir", node_dir]
    )
    assert "category 'gas' is not data node 'tax' holds" in str(result.exception)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["list", "--node-dir", str(empty)])
    assert isinstance(result.exception, ConfigError)
    assert "node.yaml: not found" in str(result.exception)
    assert node["disputes"].list() == []


def test_a_store_from_before_outcomes_opens_and_keeps_its_closed_disputes(tmp_path: Path) -> None:
    """A consent.db whose dispute table predates ``outcome``: opening it adds the column; the
    disputes already closed read as ``resolved``, new ones as ``repaired``/``rejected``."""
    path = tmp_path / "consent.db"
    code = _code()
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE subject_dispute (dispute_id VARCHAR(32) PRIMARY KEY, uscc VARCHAR(18) "
            "NOT NULL, categories VARCHAR(255) NOT NULL, reason TEXT NOT NULL, raised_by "
            "VARCHAR(128) NOT NULL, raised_at FLOAT NOT NULL, resolved_at FLOAT, resolved_by "
            "VARCHAR(128), resolution_note TEXT)"
        )
        db.execute(
            "INSERT INTO subject_dispute VALUES (?, ?, '', 'old', 'enterprise', 1.0, 2.0, "
            "'alice', 'fixed')",
            ("a" * 32, code),
        )
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "utility")
    with audit, DisputeRegistry(sqlite_url(path), node_id="utility", audit=audit) as reg:
        assert reg.get("a" * 32).status == "resolved"
        d = reg.dispute(code, reason="meter misread", by="enterprise")
        closed = reg.resolve(d.dispute_id, note="readings confirmed", by="bob", outcome="rejected")
        assert closed.status == "rejected" and reg.get(d.dispute_id).status == "rejected"
        with pytest.raises(DisputeError, match="outcome 'maybe' must be one of"):
            reg.resolve(reg.dispute(code, reason="x", by="e").dispute_id, note="n", by="b",
                        outcome="maybe")  # fmt: skip
        reasons = [r.reason for r in audit.query(subject=code)]
        assert f"dispute {d.dispute_id} rejected: readings confirmed" in reasons
