"""End to end (issue 10, items 2 and 3): record first, fail closed, and witnessed audit logs,
over real node processes (mutual TLS on loopback).

- An over-long meta field is refused INVALID_ARGUMENT before any work, recorded (cut to the
  record's columns), and never echoed at length into the status or the node's log.
- Calls gRPC used to answer before any Python code - an unknown service or method, a call over
  the node's concurrency cap - and a GetBlob the bank abandons mid-stream each leave exactly one
  record (matched by request id).
- A holder's audit log rewritten (hashes recomputed) or truncated (head moved) passes plain
  ``audit verify`` but not ``audit verify tax --witness bank``: the bank recorded tax's heads.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import yaml
from typer.testing import CliRunner

from federation.audit import AuditLog, record_hash
from federation.audit.records import CONTENT_FIELDS, OPTIONAL_FIELDS
from federation.errors import PeerError
from federation.transport.base import new_meta
from protos import bank_pb2, common_pb2
from xinyidai.cli.main import app

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory):
    """A three-node federation whose tax node has one worker (a concurrency cap of 4 calls)
    and 16 KiB stream chunks, so a cap and a mid-stream cancel are easy to reach."""
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes

    workdir = tmp_path_factory.mktemp("record-first")
    federation, _ = build_federation(workdir, enterprises=200, seed=3, deadline_s=20.0, workers=1)
    path = federation.configs["tax"]
    config = yaml.safe_load(path.read_text())
    config.setdefault("limits", {}).update(max_workers=1, chunk_kb=16)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    try:
        start_nodes(federation)
        yield federation
    finally:
        stop_nodes(federation)


@pytest.fixture(scope="module")
def bank(fed):
    """The bank's identity and audit log, and a client of tax acting as the bank."""
    from parties.config import load_node_config
    from parties.node import connect

    config = load_node_config(fed.configs["bank"])
    audit = AuditLog(config.resolved_audit_url, "bank")
    [tax] = [p for p in config.holders if p.node_id == "tax"]
    peer = connect(config, tax, audit=audit, deadline_s=30.0)
    yield config, audit, peer
    peer.close()
    audit.close()


def _log(fed, node: str) -> AuditLog:
    return AuditLog(f"sqlite:///{fed.node_dir(node) / 'audit.db'}", node, create=False)


def _served(fed, node: str, request_ids: set[str]) -> list:
    with _log(fed, node) as log:
        return [r for r in log.query() if r.request_id in request_ids]


def _meta(**kw) -> common_pb2.RequestMeta:
    return new_meta(**kw)


def test_overlong_fields_are_refused_recorded_and_never_echoed(fed, bank):
    config, _, tax = bank
    meta = _meta(job_id="j" * 200)
    with pytest.raises(PeerError) as refused:
        tax.put_blob("vec", b"payload", meta=meta)
    assert refused.value.code == "INVALID_ARGUMENT"
    assert "meta.job_id is 200 characters" in refused.value.detail
    assert len(refused.value.detail) < 300 and "j" * 40 not in refused.value.detail
    assert not any((fed.node_dir("tax") / "blobs").rglob("vec"))
    [record] = _served(fed, "tax", {meta.request_id})
    assert (record.operation, record.decision, record.job_id) == ("PutBlob", "deny", "j" * 128)

    # Bank.Score with an over-long purpose or job id: refused by the bank, no holder is asked
    from parties.node import operator_client

    with _log(fed, "tax") as t, _log(fed, "utility") as u:
        before = (len(t.query()), len(u.query()))
    sent = []
    with operator_client(config) as operator:
        for kw in ({"purpose": "p" * 100}, {"job_id": "j" * 200}):
            meta = _meta(**kw)
            sent.append(meta.request_id)
            with pytest.raises(PeerError) as score:
                operator.call("Score", bank_pb2.ScoreRequest(meta=meta, uscc="9" * 18))
            assert score.value.code == "INVALID_ARGUMENT", score.value.detail
            assert len(score.value.detail) < 300
    with _log(fed, "tax") as t, _log(fed, "utility") as u:
        assert (len(t.query()), len(u.query())) == before
    records = [r for r in _served(fed, "bank", set(sent)) if r.direction == "served"]
    assert [(r.operation, r.decision) for r in records] == [("Score", "deny")] * 2
    for node in ("tax", "bank"):
        text = (fed.node_dir(node) / "node.log").read_text(errors="replace")
        assert "j" * 129 not in text and "p" * 65 not in text

    # a 10 MB job id: refused with a short prefix, the node's log does not grow by it
    node_log = fed.node_dir("tax") / "node.log"
    size = node_log.stat().st_size
    with pytest.raises(PeerError) as huge:
        tax.call("Hello", common_pb2.HelloRequest(meta=_meta(job_id="J" * (10 << 20))))
    assert huge.value.code == "INVALID_ARGUMENT" and len(huge.value.detail) < 300
    assert "10485760 characters" in huge.value.detail
    assert node_log.stat().st_size - size < 4096


def test_unknown_methods_are_recorded(fed, bank):
    _, _, tax = bank
    channel = tax._channel  # the bank's own mTLS channel; a raw call is what a probe sends
    for path in ("/xinyidai.v1.DataHolder/DumpEverything", "/xinyidai.v1.NoSuchService/Call"):
        rpc = channel.unary_unary(path)
        with pytest.raises(grpc.RpcError) as unknown:
            rpc(b"", timeout=10)
        assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # A message over the node's own limit (16 MB) but under gRPC's hard cap reaches the
    # runtime: refused and recorded (a client with a raised send limit, as a probe would use).
    from parties.node import identity_of

    identity = identity_of(bank[0])
    big_channel = grpc.secure_channel(
        tax.address,
        grpc.ssl_channel_credentials(identity.ca, identity.key, identity.cert),
        options=[("grpc.ssl_target_name_override", "tax"), ("grpc.max_send_message_length", -1)],
    )
    oversize = _meta()
    request = common_pb2.HelloRequest(meta=oversize, protocol_version="v" * (17 << 20))
    with pytest.raises(grpc.RpcError) as too_big:
        big_channel.unary_unary("/xinyidai.v1.DataHolder/Hello")(
            request.SerializeToString(), timeout=30
        )
    big_channel.close()
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "message limit of 16777216 bytes" in too_big.value.details()
    [record] = _served(fed, "tax", {oversize.request_id})  # its meta was read for the record
    assert record.decision == "deny" and record.counts["request_bytes"] > 17 << 20

    with _log(fed, "tax") as log:
        records = [r for r in log.query(decision="deny") if r.operation.startswith("/")]
    assert [(r.operation, r.peer) for r in records] == [
        ("/xinyidai.v1.DataHolder/DumpEverything", "bank"),
        ("/xinyidai.v1.NoSuchService/Call", "bank"),
    ]


def test_cap_rejections_and_cancelled_streams_leave_exactly_one_record_each(fed, bank):
    _, _, tax = bank
    meta = _meta(job_id="load")
    tax.put_blob("big", bytes(24 << 20), meta=meta)  # 1,536 chunks of 16 KiB back
    # Four GetBlobs fill tax's cap (one worker, four calls): the first holds the worker,
    # blocked by flow control once the bank stops reading; three wait for it.
    metas = [_meta(job_id="load") for _ in range(4)]
    first = tax.get_blob("big", meta=metas[0], timeout=60)
    assert len(next(first)) == 16 << 10
    get_blob = tax._channel.unary_stream("/xinyidai.v1.DataHolder/GetBlob")
    waiting = [  # raw calls: started at once, cancellable from here without reading them
        get_blob(common_pb2.BlobRequest(meta=m, blob_id="big").SerializeToString(), timeout=60)
        for m in metas[1:]
    ]
    time.sleep(1.5)

    hellos = [_meta() for _ in range(8)]

    def hello(m):
        try:
            tax.call("Hello", common_pb2.HelloRequest(meta=m))
            return "OK"
        except PeerError as exc:
            return exc.code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(hello, hellos))
    assert codes == ["RESOURCE_EXHAUSTED"] * 8

    for call in waiting:
        call.cancel()  # given up before a worker came free: no work is done for them
    time.sleep(0.5)
    first.close()  # the bank stops reading: its carrier cancels the call
    ids = {m.request_id for m in [meta, *metas, *hellos]}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_served(fed, "tax", ids)) < len(ids):
        time.sleep(0.5)
    records = _served(fed, "tax", ids)
    assert Counter(r.request_id for r in records) == Counter(ids)  # exactly one each
    by_id = {r.request_id: r for r in records}
    assert by_id[meta.request_id].decision == "allow"
    for m in hellos:
        assert by_id[m.request_id].decision == "deny"
        assert by_id[m.request_id].reason.startswith("tax: busy")
    held = by_id[metas[0].request_id]
    assert held.decision == "error" and held.reason.startswith("cancelled after ")
    assert 1 <= held.counts["chunks"] < 1536
    for m in metas[1:]:
        waited = by_id[m.request_id]
        assert (waited.decision, waited.reason) == (
            "deny",
            "cancelled while waiting for a free worker",
        )


def test_a_mixed_burst_leaves_exactly_one_record_per_request(fed, bank):
    """A bounded loopback load: 160 requests from 12 threads at a node that runs one call at a
    time and admits four - served, refused (purpose, malformed USCC), unknown, or rejected as
    busy - and every one of them is in the holder's log exactly once, with the matching
    decision."""
    _, _, tax = bank
    unknown = tax._channel.unary_unary("/xinyidai.v1.DataHolder/DumpEverything")
    kinds = ["hello", "purpose", "uscc", "unknown"]
    expected = {
        "hello": {"OK": "allow"},
        "purpose": {"PERMISSION_DENIED": "deny"},
        "uscc": {"INVALID_ARGUMENT": "error"},
        "unknown": {"UNIMPLEMENTED": "deny"},
    }
    plan = [(kinds[i % 4], _meta()) for i in range(160)]
    for kind, m in plan:
        if kind == "purpose":
            m.purpose = "marketing"

    def send(item: tuple[str, common_pb2.RequestMeta]) -> str:
        kind, m = item
        try:
            if kind == "hello":
                tax.call("Hello", common_pb2.HelloRequest(meta=m))
            elif kind == "purpose":
                tax.call("Hello", common_pb2.HelloRequest(meta=m))
            elif kind == "uscc":
                from protos import holder_pb2

                tax.call("CheckAuthorisation", holder_pb2.AuthorisationQuery(meta=m, uscc="x"))
            else:
                unknown(common_pb2.HelloRequest(meta=m).SerializeToString(), timeout=20)
            return "OK"
        except PeerError as exc:
            return str(exc.code)
        except grpc.RpcError as exc:
            return exc.code().name

    def unknown_records() -> int:
        with _log(fed, "tax") as log:
            return sum(r.operation.endswith("/DumpEverything") for r in log.query())

    before = unknown_records()
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(send, plan))
    # An unknown method's request is never parsed (its type is unknown), so its record carries
    # no request id: those are counted by operation instead.
    assert unknown_records() - before == 40
    kept = [i for i, (kind, _) in enumerate(plan) if kind != "unknown"]
    plan, codes = [plan[i] for i in kept], [codes[i] for i in kept]
    ids = {m.request_id for _, m in plan}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_served(fed, "tax", ids)) < len(ids):
        time.sleep(0.5)
    records = _served(fed, "tax", ids)
    assert Counter(r.request_id for r in records) == Counter(ids)  # exactly one each
    by_id = {r.request_id: r for r in records}
    for (kind, m), code in zip(plan, codes, strict=True):
        record = by_id[m.request_id]
        if code == "RESOURCE_EXHAUSTED":
            assert (record.decision, record.reason[:9]) == ("deny", "tax: busy"), record
        else:
            assert code in expected[kind], (kind, code, record.reason)
            assert record.decision == expected[kind][code], (kind, record)
    assert "OK" in codes  # the burst was served, not only refused


def _rechain(db: Path, start: int) -> None:
    """Recompute every hash from record ``start`` on and move the head, as an intruder who
    knows the (public, keyless) algorithm would after editing or deleting records."""
    con = sqlite3.connect(db)
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
        con.execute("UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1", (rows[-1]["seq"], prev))
    con.close()


def test_rewrite_and_truncation_are_caught_by_the_peers_witness(fed, bank):
    _, _, tax = bank
    ids = []
    for _ in range(5):
        m = _meta()
        ids.append(m.request_id)
        tax.call("Hello", common_pb2.HelloRequest(meta=m))
    tax_dir, bank_dir = str(fed.node_dir("tax")), str(fed.node_dir("bank"))
    runner = CliRunner()
    ok = runner.invoke(app, ["audit", "verify", tax_dir, "--witness", bank_dir])
    assert ok.exit_code == 0, ok.output
    assert "witnessed by bank: all present" in ok.output

    db = fed.node_dir("tax") / "audit.db"
    [second] = _served(fed, "tax", {ids[1]})
    con = sqlite3.connect(db)
    with con:  # the holder's operator hides that the bank called (the peer is rewritten)
        con.execute("UPDATE audit_log SET peer = 'utility' WHERE seq = ?", (second.seq,))
    con.close()
    _rechain(db, second.seq)
    plain = runner.invoke(app, ["audit", "verify", tax_dir])
    assert plain.exit_code == 0, plain.output  # the chain alone cannot see it
    caught = runner.invoke(app, ["audit", "verify", tax_dir, "--witness", bank_dir])
    assert caught.exit_code == 1, caught.output
    assert f"record {second.seq}: witnessed by bank" in caught.output

    # repair nothing; now cut the last three calls off and move the head back
    [third] = _served(fed, "tax", {ids[2]})
    con = sqlite3.connect(db)
    with con:
        con.execute("DELETE FROM audit_log WHERE seq >= ?", (third.seq,))
    con.close()
    _rechain(db, second.seq)
    assert runner.invoke(app, ["audit", "verify", tax_dir]).exit_code == 0
    cut = runner.invoke(app, ["audit", "verify", tax_dir, "--witness", bank_dir])
    assert cut.exit_code == 1
    assert f"record {third.seq}: witnessed by bank" in cut.output and "gone" in cut.output

    # dropping the tables is an error, never "intact: 0 records"
    con = sqlite3.connect(db)
    with con:
        con.execute("DROP TABLE audit_log")
    con.close()
    dropped = runner.invoke(app, ["audit", "verify", tax_dir])
    assert dropped.exit_code != 0 and "intact" not in dropped.output
    assert "audit_log" in str(dropped.exception) and str(db) in str(dropped.exception)
