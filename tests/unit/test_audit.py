"""The hash-chained audit log: chaining, every kind of tampering named by verify (tampering is
done on the SQLite file directly, as an intruder would), concurrent appends from threads and
processes, queries, and the ``xinyidai audit`` commands."""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from federation.audit import GENESIS_HASH, AuditLog, ChainHead, record_hash, sqlite_url
from federation.errors import AuditChainError, ConfigError
from xinyidai.cli.main import app

N = 60
PEERS = ("bank", "utility", "bank", "bank")
OPS = ("psi.intersect", "vfl.gradient", "score.enterprise")


def _fill(log: AuditLog, n: int = N, t0: float = 1_700_000_000.0) -> None:
    for i in range(n):
        log.append(
            direction="served" if i % 3 else "made",
            peer=PEERS[i % len(PEERS)],
            operation=OPS[i % len(OPS)],
            purpose="financing",
            job_id=f"job-{i // 20}",
            model_id="lr-1" if i % 2 else "",
            counts={"rows": i, "ciphertexts": 2 * i},
            decision="deny" if i % 7 == 0 else "allow",
            reason="no consent" if i % 7 == 0 else "",
            ts=t0 + i,
        )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "tax" / "audit.db"
    path.parent.mkdir()
    with AuditLog(sqlite_url(path), "tax") as log:
        _fill(log)
    return path


def _verify(path: Path):
    with AuditLog(sqlite_url(path), "tax") as log:
        return log.verify()


def _rows(path: Path) -> list[dict]:
    con = sqlite3.connect(path)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT * FROM audit_log ORDER BY seq")]
    con.close()
    return rows


def _sql(path: Path, *statements: tuple[str, tuple]) -> None:
    con = sqlite3.connect(path)
    with con:
        for sql, params in statements:
            con.execute(sql, params)
    con.close()


def _content(row: dict, seq: int | None = None) -> dict:
    keys = (
        "seq",
        "ts",
        "node_id",
        "direction",
        "peer",
        "operation",
        "purpose",
        "job_id",
        "model_id",
        "subject",
        "request_id",
        "counts",
        "decision",
        "reason",
    )
    out = {k: row[k] for k in keys}
    out["counts"] = json.loads(row["counts"])
    if seq is not None:
        out["seq"] = seq
    return out


# ------------------------------------------------------------------------------------------------
# Chaining


def test_records_are_chained_as_specified(db: Path) -> None:
    rows = _rows(db)
    assert [r["seq"] for r in rows] == list(range(1, N + 1))
    prev = "0" * 64
    for r in rows:
        assert r["prev_hash"] == prev
        # Recompute independently of the module: sha256(prev_hash || canonical JSON).
        body = json.dumps(_content(r), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert r["hash"] == hashlib.sha256((prev + body).encode("utf-8")).hexdigest()
        prev = r["hash"]
    assert rows[5]["counts"] == '{"ciphertexts":10,"rows":5}'  # canonical JSON
    result = _verify(db)
    assert result.ok and result.problems == []
    assert result.n_records == N and result.head_seq == N and result.head_hash == rows[-1]["hash"]


def test_append_returns_the_stored_entry(tmp_path: Path) -> None:
    with AuditLog(sqlite_url(tmp_path / "a.db"), "bank") as log:
        first = log.append(direction="made", peer="tax", operation="psi.intersect", counts={"n": 3})
        second = log.append(
            direction="local", peer="", operation="consent.grant", reason="中文理由"
        )
        assert first.seq == 1 and first.prev_hash == GENESIS_HASH and first.node_id == "bank"
        assert second.seq == 2 and second.prev_hash == first.hash
        assert log.query() == [first, second]
        assert first.as_dict()["counts"] == {"n": 3}
        assert abs(first.ts - time.time()) < 5
        assert log.verify().ok


def test_invalid_appends_are_refused_and_write_nothing(tmp_path: Path) -> None:
    with AuditLog(sqlite_url(tmp_path / "a.db"), "bank") as log:
        log.append(direction="made", peer="tax", operation="op")
        bad_calls = [
            dict(direction="sideways", peer="tax", operation="op"),
            dict(direction="made", peer="tax", operation=""),
            dict(direction="made", peer="tax", operation="op", counts={"rows": 1.5}),
            dict(direction="made", peer="tax", operation="op", counts={"rows": True}),
            dict(direction="made", peer=None, operation="op"),
            dict(direction="made", peer="tax", operation="op", ts=float("nan")),
            dict(direction="made", peer="tax", operation="op", decision="x" * 17),
        ]
        for kwargs in bad_calls:
            with pytest.raises((ValueError, TypeError)):
                log.append(**kwargs)
        assert log.verify().n_records == 1 and log.verify().ok


def test_opening_a_log_in_a_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        AuditLog(sqlite_url(tmp_path / "nowhere" / "audit.db"), "tax")
    with pytest.raises(ConfigError, match="not a database URL"):
        AuditLog("not a url", "tax")


def test_many_appends_keep_one_chain(tmp_path: Path) -> None:
    """Append speed is measured in experiments/bench_audit.py; here: 200 appends, one valid chain."""
    with AuditLog(sqlite_url(tmp_path / "a.db"), "tax") as log:
        for i in range(200):
            log.append(
                direction="served",
                peer="bank",
                operation="score",
                counts={"rows": i},
                subject="91510104MA6CXXXX0X",
                request_id=f"r{i}",
            )
        result = log.verify()
        assert result.ok and result.n_records == 200
        assert [e.request_id for e in log.query(subject="91510104MA6CXXXX0X", limit=2)] == [
            "r198",
            "r199",
        ]


# ------------------------------------------------------------------------------------------------
# Tampering


def _only(result, kind: str):
    assert not result.ok
    assert [p.kind for p in result.problems] == [kind], [str(p) for p in result.problems]
    return result.problems[0]


def test_edited_field_is_named(db: Path) -> None:
    _sql(db, ("UPDATE audit_log SET peer = 'insurer' WHERE seq = 17", ()))
    problem = _only(_verify(db), "edited")
    assert problem.seq == 17
    assert str(problem) == "record 17: edited — stored hash does not match its content"


def test_edited_counts_and_decision_are_named(db: Path) -> None:
    _sql(
        db,
        ("UPDATE audit_log SET counts = '{\"rows\":1}' WHERE seq = 3", ()),
        ("UPDATE audit_log SET decision = 'allow' WHERE seq = 8", ()),  # was deny
    )
    result = _verify(db)
    assert [(p.seq, p.kind) for p in result.problems] == [(3, "edited"), (8, "edited")]


def test_edit_with_recomputed_hash_is_caught_by_the_next_link(db: Path) -> None:
    row = _rows(db)[21]  # seq 22, a "deny" the intruder wants to turn into an "allow"
    assert row["decision"] == "deny"
    content = _content(row)
    content["decision"] = "allow"
    content["reason"] = ""
    forged = record_hash(row["prev_hash"], content)
    _sql(
        db,
        ("UPDATE audit_log SET decision='allow', reason='', hash=? WHERE seq=22", (forged,)),
    )
    problem = _only(_verify(db), "edited")
    assert problem.seq == 22 and "recomputed hash" in str(problem)


def test_edit_of_the_last_record_with_recomputed_hash_is_caught_by_the_head(db: Path) -> None:
    row = _rows(db)[-1]
    content = {**_content(row), "peer": "insurer"}
    forged = record_hash(row["prev_hash"], content)
    _sql(db, ("UPDATE audit_log SET peer='insurer', hash=? WHERE seq=?", (forged, N)))
    problem = _only(_verify(db), "edited")
    assert problem.seq == N and "stored head" in str(problem)


def test_deleted_middle_record_is_named(db: Path) -> None:
    _sql(db, ("DELETE FROM audit_log WHERE seq = 42", ()))
    problem = _only(_verify(db), "deleted")
    assert str(problem) == "record 42: missing — deleted (seq jumps 41 → 43)"


def test_deleted_run_and_first_record(db: Path) -> None:
    _sql(db, ("DELETE FROM audit_log WHERE seq IN (1, 30, 31, 32)", ()))
    result = _verify(db)
    assert [(p.seq, p.kind) for p in result.problems] == [(1, "deleted"), (30, "deleted")]
    assert "records 30..32 deleted (seq jumps 29 → 33)" in str(result.problems[1])
    assert "log starts at record 2" in str(result.problems[0])


def test_deleted_and_renumbered_records_are_still_found(db: Path) -> None:
    con = sqlite3.connect(db)
    with con:
        con.execute("DELETE FROM audit_log WHERE seq = 25")
        for seq in range(26, N + 1):  # close the gap, as a careful intruder would
            con.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq - 1, seq))
        con.execute("UPDATE audit_head SET seq = ?", (N - 1,))
    con.close()
    result = _verify(db)
    kinds = {(p.seq, p.kind) for p in result.problems}
    assert kinds == {
        (25, "deleted"),
        (25, "reordered"),  # records 25.. now hold the content of 26..
        (0, "head"),  # the head's seq was moved back but its hash is still record 60's
    }, [str(p) for p in result.problems]


def test_truncated_tail_is_caught_by_the_head(db: Path) -> None:
    _sql(db, ("DELETE FROM audit_log WHERE seq = ?", (N,)))
    problem = _only(_verify(db), "truncated")
    assert problem.seq == N
    assert f"deleted after record {N - 1} (the stored head is record {N})" in str(problem)
    _sql(db, ("DELETE FROM audit_log WHERE seq > 50", ()))
    assert f"records 51..{N} deleted" in str(_only(_verify(db), "truncated"))


def test_truncation_with_a_rewritten_head_needs_an_anchor(db: Path) -> None:
    """The documented limit: tail and head rewritten together pass verify; an anchor (head
    published elsewhere earlier) catches it."""
    anchor_row = _rows(db)[-1]
    anchor = (anchor_row["seq"], anchor_row["hash"])
    prev = _rows(db)[-2]
    _sql(
        db,
        ("DELETE FROM audit_log WHERE seq = ?", (N,)),
        ("UPDATE audit_head SET seq = ?, hash = ?", (N - 1, prev["hash"])),
    )
    assert _verify(db).ok  # consistent rewrite: undetectable from the database alone
    with AuditLog(sqlite_url(db), "tax") as log:
        problem = _only(log.verify(anchor=anchor), "truncated")
        assert problem.seq == N
        good = (N - 1, prev["hash"])
        assert log.verify(anchor=good).ok


def test_head_round_trips_through_its_seq_hash_text(db: Path) -> None:
    """An operator copies ``str(log.head())`` somewhere safe and passes it back as an anchor."""
    with AuditLog(sqlite_url(db), "tax") as log:
        head = log.head()
        assert head is not None and head == (N, _rows(db)[-1]["hash"])
        text = str(head)
        assert text == f"{N}:{head.hash}"
        assert ChainHead.parse(f" {text}\n") == head
        assert log.verify(anchor=ChainHead.parse(text)).ok
    for bad in ("", "12", "x:" + "0" * 64, "3:" + "0" * 63, "3:" + "A" * 64, "-1:" + "0" * 64):
        with pytest.raises(ValueError, match="SEQ:HASH"):
            ChainHead.parse(bad)


def test_forged_record_appended_after_the_head_is_named(db: Path) -> None:
    last = _rows(db)[-1]
    content = {**_content(last, seq=N + 1), "peer": "insurer", "decision": "allow"}
    forged = record_hash(last["hash"], content)  # perfectly chained, but the head was not moved
    cols = ", ".join([*content, "prev_hash", "hash"])
    values = [*content.values(), last["hash"], forged]
    values[list(content).index("counts")] = json.dumps(content["counts"])
    _sql(db, (f"INSERT INTO audit_log ({cols}) VALUES ({', '.join('?' * len(values))})", values))
    problem = _only(_verify(db), "inserted")
    assert problem.seq == N + 1 and "after the stored head" in str(problem)


def test_forged_record_inserted_in_the_middle_is_named(db: Path) -> None:
    rows = _rows(db)
    k = 10
    con = sqlite3.connect(db)
    with con:
        for seq in range(N, k, -1):  # make room at k + 1
            con.execute("UPDATE audit_log SET seq = ? WHERE seq = ?", (seq + 1, seq))
        content = {**_content(rows[k], seq=k + 1), "peer": "insurer", "decision": "allow"}
        forged = record_hash(rows[k - 1]["hash"], content)  # links to record k, hashes fine
        con.execute(
            "INSERT INTO audit_log (seq, ts, node_id, direction, peer, operation, purpose, job_id,"
            " model_id, subject, request_id, counts, decision, reason, prev_hash, hash)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                *[
                    content[c]
                    for c in (
                        "seq",
                        "ts",
                        "node_id",
                        "direction",
                        "peer",
                        "operation",
                        "purpose",
                        "job_id",
                        "model_id",
                        "subject",
                        "request_id",
                    )
                ],
                json.dumps(content["counts"]),
                content["decision"],
                content["reason"],
                rows[k - 1]["hash"],
                forged,
            ),
        )
    con.close()
    result = _verify(db)
    kinds = [(p.seq, p.kind) for p in result.problems]
    assert (k + 1, "inserted") in kinds, kinds
    assert (k + 2, "reordered") in kinds  # the genuine records after it were renumbered
    assert len(kinds) == 2
    assert "forged" in str(result.problems[0])


def test_swapped_records_are_named_as_reordered(db: Path) -> None:
    rows = _rows(db)
    i, j = 12, 33
    cols = [c for c in rows[0] if c != "seq"]
    assignments = ", ".join(f"{c} = ?" for c in cols)
    _sql(
        db,
        (f"UPDATE audit_log SET {assignments} WHERE seq = ?", (*[rows[j - 1][c] for c in cols], i)),
        (f"UPDATE audit_log SET {assignments} WHERE seq = ?", (*[rows[i - 1][c] for c in cols], j)),
    )
    result = _verify(db)
    assert [(p.seq, p.kind) for p in result.problems] == [(i, "reordered"), (j, "reordered")]
    assert str(result.problems[0]) == f"record {i}: reordered — holds the content of record {j}"
    assert str(result.problems[1]) == f"record {j}: reordered — holds the content of record {i}"


def test_swapped_neighbours_are_named_as_reordered(db: Path) -> None:
    rows = _rows(db)
    cols = [c for c in rows[0] if c != "seq"]
    assignments = ", ".join(f"{c} = ?" for c in cols)
    _sql(
        db,
        (f"UPDATE audit_log SET {assignments} WHERE seq = 5", tuple(rows[5][c] for c in cols)),
        (f"UPDATE audit_log SET {assignments} WHERE seq = 6", tuple(rows[4][c] for c in cols)),
    )
    result = _verify(db)
    assert [(p.seq, p.kind) for p in result.problems] == [(5, "reordered"), (6, "reordered")]


def test_deleted_head_is_reported_and_blocks_appends(db: Path) -> None:
    _sql(db, ("DELETE FROM audit_head", ()))
    with AuditLog(sqlite_url(db), "tax") as log:
        problem = _only(log.verify(), "head")
        assert str(problem).startswith("audit head: missing")
        with pytest.raises(AuditChainError, match="head row missing"):
            log.append(direction="served", peer="bank", operation="score")
        with pytest.raises(AuditChainError, match="audit head: missing"):
            log.verify().raise_if_broken()
    assert len(_rows(db)) == N  # nothing appended, nothing "repaired"


# ------------------------------------------------------------------------------------------------
# Concurrency: threads of one process and several processes append to one log at once.

_CHILD = textwrap.dedent(
    """
    import sys
    from federation.audit import AuditLog
    url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    log = AuditLog(url, "tax")
    print("ready", flush=True)
    sys.stdin.readline()  # wait for "go" so all writers overlap
    for i in range(n):
        log.append(direction="local", peer=name, operation="cli.append", counts={"i": i})
    log.close()
    """
)


def test_concurrent_appends_from_threads_and_processes_keep_one_valid_chain(
    tmp_path: Path,
) -> None:
    url = sqlite_url(tmp_path / "audit.db")
    n_proc, n_threads, per_writer = 3, 6, 40
    log = AuditLog(url, "tax")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, url, f"proc{p}", str(per_writer)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for p in range(n_proc)
    ]
    for child in children:
        assert child.stdout.readline().strip() == "ready"
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            start.wait()
            for i in range(per_writer):
                log.append(direction="served", peer=f"thread{t}", operation="rpc", counts={"i": i})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for child in children:
        assert child.wait(60) == 0
    assert not errors, errors

    result = log.verify()
    assert result.ok, [str(p) for p in result.problems]
    total = (n_proc + n_threads) * per_writer
    assert result.n_records == total and result.head_seq == total
    by_peer = log.summary()["by_peer"]
    assert by_peer == {
        **{f"proc{p}": per_writer for p in range(n_proc)},
        **{f"thread{t}": per_writer for t in range(n_threads)},
    }
    # Writers really interleaved (otherwise this test would prove nothing about locking).
    peers = [e.peer for e in log.query()]
    switches = sum(a != b for a, b in itertools.pairwise(peers))
    assert switches > n_proc + n_threads
    log.close()


# ------------------------------------------------------------------------------------------------
# Reading


def test_query_filters_and_limit(db: Path) -> None:
    with AuditLog(sqlite_url(db), "tax") as log:
        everything = log.query()
        assert [e.seq for e in everything] == list(range(1, N + 1))
        t0 = everything[0].ts
        window = log.query(since=t0 + 10, until=t0 + 20)
        assert [e.seq for e in window] == list(range(11, 21))  # since inclusive, until exclusive
        denied = log.query(decision="deny")
        assert [e.seq for e in denied] == [i + 1 for i in range(N) if i % 7 == 0]
        assert all(e.reason == "no consent" for e in denied)
        utility = log.query(peer="utility", operation="vfl.gradient")
        expected = [
            i + 1 for i in range(N) if PEERS[i % 4] == "utility" and OPS[i % 3] == "vfl.gradient"
        ]
        assert [e.seq for e in utility] == expected and expected
        last3 = log.query(job_id="job-1", limit=3)
        assert [e.seq for e in last3] == [38, 39, 40]  # the most recent three, oldest first
        assert log.query(peer="nobody") == []


def test_summary_counts(db: Path) -> None:
    with AuditLog(sqlite_url(db), "tax") as log:
        s = log.summary()
    assert s["records"] == N
    assert s["by_decision"] == {"allow": N - len(range(0, N, 7)), "deny": len(range(0, N, 7))}
    assert s["by_peer"] == {"bank": 45, "utility": 15}
    assert sum(s["by_operation"].values()) == N
    assert s["by_direction"] == {"served": 40, "made": 20}
    assert s["last_ts"] - s["first_ts"] == N - 1


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_verify_show_summary(db: Path) -> None:
    runner = CliRunner()
    node_dir = str(db.parent)
    ok = runner.invoke(app, ["audit", "verify", node_dir])
    assert ok.exit_code == 0, ok.output
    assert f"audit chain intact: {N} records, head {_rows(db)[-1]['hash']}" in ok.output

    shown = runner.invoke(
        app, ["audit", "show", node_dir, "--decision", "deny", "--caller", "bank", "--json"]
    )
    assert shown.exit_code == 0, shown.output
    lines = [json.loads(line) for line in shown.output.splitlines()]
    assert lines and all(x["decision"] == "deny" and x["peer"] == "bank" for x in lines)
    assert [x["seq"] for x in lines] == [
        i + 1 for i in range(N) if i % 7 == 0 and PEERS[i % 4] == "bank"
    ]
    since = runner.invoke(
        app,
        ["audit", "show", node_dir, "--since", "2023-11-14T22:13:30", "--limit", "2", "--json"],
    )  # 1_700_000_000 is 2023-11-14T22:13:20Z
    assert [json.loads(x)["seq"] for x in since.output.splitlines()] == [N - 1, N]
    table = runner.invoke(app, ["audit", "show", node_dir, "--operation", "psi.intersect"])
    assert table.exit_code == 0 and "psi.intersect" in table.output
    bad_time = runner.invoke(app, ["audit", "show", node_dir, "--since", "yesterday"])
    assert bad_time.exit_code == 2 and "not an ISO date" in bad_time.output

    summary = runner.invoke(app, ["audit", "summary", node_dir, "--json"])
    assert json.loads(summary.output)["records"] == N

    _sql(db, ("UPDATE audit_log SET reason = '' WHERE seq = 8", ()))
    _sql(db, ("DELETE FROM audit_log WHERE seq = 42", ()))
    broken = runner.invoke(app, ["audit", "verify", node_dir])
    assert broken.exit_code == 1
    assert "record 8: edited — stored hash does not match its content" in broken.output
    assert "record 42: missing — deleted (seq jumps 41 → 43)" in broken.output


def test_cli_refuses_a_directory_without_a_log(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "verify", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
    assert "audit.db" in str(result.exception)
    assert not (tmp_path / "audit.db").exists()  # did not create an empty log


_COLUMNS = (
    "ts",
    "node_id",
    "direction",
    "peer",
    "operation",
    "purpose",
    "job_id",
    "model_id",
    "subject",
    "request_id",
    "counts",
    "decision",
    "reason",
    "prev_hash",
    "hash",
)


@pytest.mark.parametrize("seed", range(24))
def test_random_tampering_is_never_reported_ok(tmp_path: Path, seed: int) -> None:
    """Whatever an intruder changes, verify fails and names the record touched."""
    rng = random.Random(seed)
    path = tmp_path / "audit.db"
    with AuditLog(sqlite_url(path), "tax") as log:
        _fill(log, 25)
    kind = ("edit", "delete", "swap", "copy")[seed % 4]
    a, b = rng.sample(range(1, 26), 2)
    rows = {r["seq"]: r for r in _rows(path)}
    if kind == "edit":
        column = rng.choice(_COLUMNS)
        _sql(path, (f"UPDATE audit_log SET {column} = ? WHERE seq = ?", ("tampered", a)))
    elif kind == "delete":
        _sql(path, ("DELETE FROM audit_log WHERE seq = ?", (a,)))
    elif kind == "swap":
        sets = ", ".join(f"{c} = ?" for c in _COLUMNS)
        _sql(
            path,
            (f"UPDATE audit_log SET {sets} WHERE seq = ?", (*[rows[b][c] for c in _COLUMNS], a)),
            (f"UPDATE audit_log SET {sets} WHERE seq = ?", (*[rows[a][c] for c in _COLUMNS], b)),
        )
    else:  # a verbatim copy of a genuine record appended at the end
        cols = ", ".join(("seq", *_COLUMNS))
        _sql(
            path,
            (
                f"INSERT INTO audit_log ({cols}) VALUES ({', '.join('?' * (1 + len(_COLUMNS)))})",
                (26, *[rows[a][c] for c in _COLUMNS]),
            ),
        )
        a = 26
    result = _verify(path)
    assert not result.ok
    assert a in {p.seq for p in result.problems}, (kind, a, [str(p) for p in result.problems])
