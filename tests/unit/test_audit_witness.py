"""Witnessed audit logs (issue 10): subject rows covered by the record's hash, alerts, peers'
witnessed heads catching a consistent rewrite or a truncation that plain ``verify`` cannot see,
and a log whose tables were dropped never reading as intact.

Tampering is done on the SQLite file directly, as an intruder who can write it would: edit a
record, then recompute every later hash and the head so the chain is consistent again."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation.audit import AuditLog, ChainHead, SubjectAccess, record_hash, sqlite_url
from federation.audit.records import CONTENT_FIELDS, OPTIONAL_FIELDS
from federation.errors import AuditChainError
from xinyidai.cli.main import app

CODES = ("91110000100000001A", "91110000100000002B", "91110000100000003C")


def _open(path: Path, node_id: str) -> AuditLog:
    return AuditLog(sqlite_url(path), node_id)


def _rechain(path: Path, start: int) -> None:
    """Recompute the hash of every record from ``start`` on and move the head: what an
    intruder who knows the (public, keyless) algorithm does after editing a record."""
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM audit_log ORDER BY seq")]
    prev = rows[start - 2]["hash"] if start > 1 else "0" * 64
    with con:
        for row in rows[start - 1 :]:
            content = {k: row[k] for k in CONTENT_FIELDS}
            content.update({k: row[k] for k in OPTIONAL_FIELDS if row[k]})
            content["counts"] = json.loads(row["counts"])
            digest = record_hash(prev, content)
            con.execute(
                "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?",
                (prev, digest, row["seq"]),
            )
            prev = digest
        last = rows[-1]["seq"]
        con.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (last, prev))
    con.close()


def _sql(path: Path, *statements: str) -> None:
    con = sqlite3.connect(path)
    with con:
        for sql in statements:
            con.execute(sql)
    con.close()


@pytest.fixture
def pair(tmp_path: Path):
    """A tax log and a bank log that exchanged heads in 12 calls, as the transport does: the
    bank's request carries its head (tax records it), tax's reply carries tax's head (the
    bank records it)."""
    (tmp_path / "tax").mkdir()
    (tmp_path / "bank").mkdir()
    tax = _open(tmp_path / "tax" / "audit.db", "tax")
    bank = _open(tmp_path / "bank" / "audit.db", "bank")
    for i in range(12):
        tax.append(direction="local", peer="tax", operation="consent.grant", reason=f"r{i}")
        bank_head = str(bank.head())
        served = tax.append(direction="served", peer="bank", operation="Hello", peer_head=bank_head)
        bank.append(
            direction="made",
            peer="tax",
            operation="Hello",
            peer_head=f"{served.seq}:{served.hash}",
        )
    tax.close()
    bank.close()
    return tmp_path


def test_subject_rows_are_written_with_their_record_and_covered_by_its_hash(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.db"
    with _open(path, "tax") as log:
        plain = log.append(direction="served", peer="bank", operation="Hello")
        batch = log.append(
            direction="served",
            peer="bank",
            operation="ScoreBatch",
            subjects=[
                SubjectAccess(CODES[0], "auth-1", "allow"),
                SubjectAccess(CODES[1], "", "refused:revoked"),
            ],
        )
        one = log.append(direction="served", peer="bank", operation="Predict", subject=CODES[0])
        assert plain.subjects_sha256 == "" and len(batch.subjects_sha256) == 64
        # a record without subjects hashes exactly as records did before subjects existed
        assert plain.hash == record_hash(plain.prev_hash, {**plain.content()})
        assert set(plain.content()) == set(CONTENT_FIELDS)
        assert log.verify().ok

        report = log.subjects_of(CODES[0])
        assert [(e.seq, s.auth_id, s.status) for e, s in report] == [
            (batch.seq, "auth-1", "allow"),
            (one.seq, "", "allow"),
        ]
        assert [(e.operation, s.status) for e, s in log.subjects_of(CODES[1].lower())] == [
            ("ScoreBatch", "refused:revoked")
        ]
        alert = log.alert(peer="bank", operation="policy.max_trees", reason="x" * 900)
        assert (alert.direction, alert.decision, len(alert.reason)) == ("local", "alert", 500)

    # an edited, a removed and an added subject row are each caught
    for tamper in (
        "UPDATE audit_subjects SET status = 'allow' WHERE status = 'refused:revoked'",
        f"DELETE FROM audit_subjects WHERE uscc = '{CODES[1]}'",
        f"INSERT INTO audit_subjects VALUES ({one.seq}, '{CODES[2]}', 'a', 'allow')",
    ):
        copy = tmp_path / "copy.db"
        copy.write_bytes(path.read_bytes())
        _sql(copy, tamper)
        with _open(copy, "tax") as log:
            result = log.verify()
        assert not result.ok, tamper
        assert any("audit_subjects" in str(p) for p in result.problems), result.problems
        copy.unlink()


def test_peer_head_is_hashed(pair: Path) -> None:
    db = pair / "tax" / "audit.db"
    _sql(db, "UPDATE audit_log SET peer_head = '1:' || substr(hash, 1, 64) WHERE seq = 4")
    with _open(db, "tax") as log:
        result = log.verify()
    assert not result.ok and result.problems[0].seq == 4


def test_consistent_rewrite_passes_plain_verify_but_not_the_peers_witness(pair: Path) -> None:
    db = pair / "tax" / "audit.db"
    _sql(db, "UPDATE audit_log SET reason = 'nothing happened' WHERE seq = 5")
    _rechain(db, 5)
    with _open(db, "tax") as log, _open(pair / "bank" / "audit.db", "bank") as bank:
        assert log.verify().ok  # the chain alone cannot see it
        result = log.verify(witnesses=[bank])
    assert not result.ok
    # every head the bank saw from record 5 on is gone; the earlier ones are intact
    assert {p.seq for p in result.problems} == {6, 8, 10, 12, 14, 16, 18, 20, 22, 24}
    assert all("witnessed by bank" in p.detail and p.kind == "edited" for p in result.problems)


def test_truncated_tail_with_moved_head_is_caught_by_the_witness_and_an_anchor(
    pair: Path,
) -> None:
    db = pair / "tax" / "audit.db"
    with _open(db, "tax") as log:
        anchor = log.head()
    assert anchor is not None and anchor.seq == 24
    _sql(db, "DELETE FROM audit_log WHERE seq > 19")
    _rechain(db, 19)  # the head now names record 19
    with _open(db, "tax") as log, _open(pair / "bank" / "audit.db", "bank") as bank:
        assert log.verify().ok
        by_witness = log.verify(witnesses=[bank])
        by_anchor = log.verify(anchors=[anchor])
    assert {(p.seq, p.kind) for p in by_witness.problems} == {
        (20, "truncated"),
        (22, "truncated"),
        (24, "truncated"),
    }
    assert [(p.seq, p.kind) for p in by_anchor.problems] == [(24, "truncated")]


def test_heads_of_lists_each_witnessed_head_once(pair: Path) -> None:
    with _open(pair / "bank" / "audit.db", "bank") as bank:
        heads = bank.heads_of("tax")
        assert [h.seq for h in heads] == list(range(2, 25, 2))
        assert all(isinstance(h, ChainHead) for h in heads)
        assert bank.heads_of("utility") == []
    with _open(pair / "tax" / "audit.db", "tax") as tax:
        # the bank's head before each call: genesis first, then its records 1..11
        assert [h.seq for h in tax.heads_of("bank")] == list(range(12))


def test_dropped_tables_are_an_error_and_never_recreated(pair: Path) -> None:
    db = pair / "tax" / "audit.db"
    _sql(db, "DROP TABLE audit_log", "DROP TABLE audit_head")
    with pytest.raises(AuditChainError, match=r"audit_log, audit_head missing") as missing:
        AuditLog(sqlite_url(db), "tax", create=False)
    assert str(db) in str(missing.value)
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "verify", str(pair / "tax")])
    assert result.exit_code != 0
    assert "intact" not in result.output
    assert "missing" in str(result.exception)
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    con.close()
    assert "audit_log" not in tables  # verify did not recreate it


def test_cli_verify_with_witness_and_anchor(pair: Path) -> None:
    runner = CliRunner()
    tax, bank = str(pair / "tax"), str(pair / "bank")
    with _open(pair / "tax" / "audit.db", "tax") as log:
        head = log.head()
    ok = runner.invoke(app, ["audit", "verify", tax, "--witness", bank, "--anchor", str(head)])
    assert ok.exit_code == 0, ok.output
    assert "12 head(s) witnessed by bank: all present" in ok.output
    assert f"(as anchor: {head})" in ok.output

    _sql(pair / "tax" / "audit.db", "UPDATE audit_log SET peer = 'bank2' WHERE seq = 21")
    _rechain(pair / "tax" / "audit.db", 21)
    plain = runner.invoke(app, ["audit", "verify", tax])
    assert plain.exit_code == 0, plain.output
    caught = runner.invoke(app, ["audit", "verify", tax, "--witness", bank])
    assert caught.exit_code == 1
    assert "record 22: witnessed by bank" in caught.output
    anchored = runner.invoke(app, ["audit", "verify", tax, "--anchor", str(head)])
    assert anchored.exit_code == 1 and "record 24" in anchored.output
    bad = runner.invoke(app, ["audit", "verify", tax, "--anchor", "7:nothex"])
    assert bad.exit_code == 2 and "SEQ:HASH" in bad.output


def test_an_older_log_gains_the_new_columns_and_still_verifies(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with _open(db, "tax") as log:
        for i in range(3):
            log.append(direction="local", peer="tax", operation="op", reason=str(i))
    # an audit.db written before this issue: no peer_head / subjects_sha256, no side table
    _sql(
        db,
        "ALTER TABLE audit_log DROP COLUMN peer_head",
        "ALTER TABLE audit_log DROP COLUMN subjects_sha256",
        "DROP TABLE audit_subjects",
    )
    with AuditLog(sqlite_url(db), "tax", create=False) as reader:  # `audit verify`, `show`
        assert reader.verify().ok and len(reader.query()) == 3
    with _open(db, "tax") as log:
        assert log.verify().ok
        log.append(direction="served", peer="bank", operation="Hello", peer_head="0:" + "0" * 64)
        assert log.verify().ok and log.verify().n_records == 4
