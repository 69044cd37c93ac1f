"""End to end: three node processes, mutual TLS on loopback, policy refusals, faults, audit."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time

import grpc
import pytest

from federation.audit import AuditLog
from federation.errors import PeerError
from federation.pki import init_pki
from federation.transport.base import CallFailed, PeerRefused, new_meta
from federation.transport.grpc_transport import GrpcPeer, TlsIdentity
from parties.config import PeerConfig, load_node_config
from parties.node import HOLDER_SERVICE, connect, operator_client
from protos import bank_pb2, common_pb2, holder_pb2

pytestmark = pytest.mark.e2e


def _bank(fed):
    return load_node_config(fed.configs["bank"])


def _holder_peer(fed, holder: str, *, audit=None, deadline_s=None):
    bank = _bank(fed)
    peer = next(p for p in bank.peers if p.node_id == holder)
    return connect(bank, peer, audit=audit, deadline_s=deadline_s)


def test_three_separate_processes_report_serving(local_federation):
    fed, _ = local_federation
    pids = {node: proc.pid for node, proc in fed.processes.items()}
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    for holder in ("tax", "utility"):
        with _holder_peer(fed, holder) as peer:
            assert peer.health() == "SERVING"


def test_bank_greets_each_holder_and_holders_know_the_caller(local_federation):
    fed, _ = local_federation
    with operator_client(_bank(fed)) as ops:
        reply = ops.call("Greet", bank_pb2.GreetRequest(meta=new_meta(job_id="t-greet")))
    by_id = {g.node_id: g for g in reply.peers}
    assert set(by_id) == {"tax", "utility"}
    for holder, greeting in by_id.items():
        assert greeting.ok, greeting.error
        assert greeting.hello.node_id == holder
        assert greeting.hello.caller_id == "bank"  # read from the bank's certificate, not a message
        table = greeting.hello.tables[0]
        assert table.n_rows > 0 and len(table.columns) > 3
        plain_names = {"tax_credit_grade", "elec_avg_amount_3m", "water_in_arrears"}
        assert not plain_names & {c.name_hash for c in table.columns}
        assert greeting.hello.consent.active > 0
    assert set(by_id["utility"].hello.categories) == {"electricity", "water", "gas"}


def test_consent_is_checked_per_enterprise_bank_and_purpose(local_federation):
    fed, examples = local_federation
    with _holder_peer(fed, "tax") as tax:
        ok = tax.call(
            "CheckAuthorisation",
            holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=examples["tax"]["authorised"]),
        )
        assert ok.auth_id and ok.has_data
        for code, expected in [
            (examples["tax"]["unauthorised"], "no authorisation"),
            (examples["tax"]["revoked"], "revoked"),
        ]:
            with pytest.raises(PeerRefused) as refused:
                tax.call(
                    "CheckAuthorisation",
                    holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=code),
                )
            assert refused.value.refusal == "consent"
            assert expected in refused.value.detail
        with pytest.raises(PeerRefused) as purpose:
            tax.call(
                "CheckAuthorisation",
                holder_pb2.AuthorisationQuery(
                    meta=new_meta("marketing"), uscc=examples["tax"]["authorised"]
                ),
            )
        assert purpose.value.refusal == "purpose" and "marketing" in purpose.value.detail


def test_a_holder_refuses_a_caller_its_policy_does_not_list(local_federation):
    """tax has a valid federation certificate, but it is not a bank: utility refuses it."""
    fed, _ = local_federation
    tax_cfg = load_node_config(fed.configs["tax"])
    utility_addr = load_node_config(fed.configs["utility"]).address
    target = PeerConfig(node_id="utility", address=utility_addr, role="holder")
    with connect(tax_cfg, target, audit=None) as as_tax:
        with pytest.raises(PeerRefused) as refused:
            as_tax.call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    assert refused.value.refusal == "caller" and "'tax'" in refused.value.detail


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(local_federation, tmp_path):
    fed, _ = local_federation
    rogue = init_pki(tmp_path / "rogue", ["bank"])
    identity = TlsIdentity(
        ca=fed.pki.ca_cert.read_bytes(),  # trusts the real CA, presents a foreign certificate
        cert=rogue.node_cert("bank").read_bytes(),
        key=rogue.node_key("bank").read_bytes(),
    )
    address = load_node_config(fed.configs["tax"]).address
    peer = GrpcPeer(
        node_id="tax",
        address=address,
        identity=identity,
        service=HOLDER_SERVICE,
        self_id="bank",
        audit=None,
        deadline_s=5.0,
    )
    started = time.monotonic()
    with peer, pytest.raises(PeerError) as failed:
        peer.call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    assert failed.value.code == "UNAVAILABLE" and failed.value.peer == "tax"
    assert time.monotonic() - started < 10


def test_a_client_without_certificate_is_refused(local_federation):
    fed, _ = local_federation
    address = load_node_config(fed.configs["tax"]).address
    channel = grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(root_certificates=fed.pki.ca_cert.read_bytes()),
        options=[("grpc.ssl_target_name_override", "tax")],
    )
    call = channel.unary_unary("/xinyidai.v1.DataHolder/Hello")
    with pytest.raises(grpc.RpcError) as failed:
        call(common_pb2.HelloRequest(meta=new_meta()).SerializeToString(), timeout=5)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    channel.close()


def test_malformed_and_oversize_messages_are_refused_and_the_server_keeps_serving(local_federation):
    fed, _ = local_federation
    bank = _bank(fed)
    identity = TlsIdentity.from_files(bank.tls.ca, bank.tls.cert, bank.tls.key)
    address = load_node_config(fed.configs["tax"]).address
    channel = grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(identity.ca, identity.key, identity.cert),
        options=[
            ("grpc.ssl_target_name_override", "tax"),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    hello = channel.unary_unary("/xinyidai.v1.DataHolder/Hello")
    with pytest.raises(grpc.RpcError) as malformed:
        hello(b"\xff\xff\xff\xff not a protobuf", timeout=5)
    assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed HelloRequest" in malformed.value.details()
    oversize = common_pb2.HelloRequest(meta=new_meta(), protocol_version="x" * (20 << 20))
    with pytest.raises(grpc.RpcError) as too_big:
        hello(oversize.SerializeToString(), timeout=10)
    assert too_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    reply = common_pb2.HelloReply.FromString(
        hello(common_pb2.HelloRequest(meta=new_meta()).SerializeToString(), timeout=5)
    )
    assert reply.node_id == "tax"
    channel.close()


def test_hundreds_of_megabytes_stream_in_chunks_both_ways(local_federation):
    fed, _ = local_federation
    size, piece = 256 << 20, 4 << 20
    block = hashlib.sha256(b"seed").digest() * (piece // 32)
    sent = hashlib.sha256()

    def payload():
        for i in range(size // piece):
            data = bytes([i % 251]) + block[1:]
            sent.update(data)
            yield data

    meta = new_meta(job_id="job-stream")
    with _holder_peer(fed, "tax", deadline_s=120) as tax:
        receipt = tax.put_blob("ciphertexts-0", payload(), meta=meta, total_size=size)
        assert receipt.size == size and receipt.sha256 == sent.digest()
        back = hashlib.sha256()
        n = 0
        for chunk in tax.get_blob("ciphertexts-0", meta=meta):
            back.update(chunk)
            n += len(chunk)
    assert n == size and back.digest() == sent.digest()
    stored = fed.node_dir("tax") / "blobs" / "bank" / "job-stream"
    assert not list(stored.glob(".*partial"))


def test_a_blob_cut_short_leaves_nothing_behind(local_federation):
    fed, _ = local_federation
    meta = new_meta(job_id="job-cut")
    short = [
        common_pb2.BlobChunk(blob_id="cut", meta=meta, total_size=10, data=b"12345"),
        common_pb2.BlobChunk(offset=5, data=b"678", sha256=hashlib.sha256(b"12345678").digest()),
    ]
    with _holder_peer(fed, "tax") as tax:
        with pytest.raises(CallFailed) as failed:
            tax._client_stream("PutBlob", iter(m.SerializeToString() for m in short), 5.0)
    assert failed.value.status == "INVALID_ARGUMENT"
    assert "received 8 bytes, announced 10" in failed.value.detail
    stored = fed.node_dir("tax") / "blobs" / "bank" / "job-cut"
    assert stored.is_dir() and list(stored.iterdir()) == []


def test_a_stopped_node_gives_a_clear_error_within_the_deadline(local_federation):
    fed, _ = local_federation
    proc = fed.processes["utility"]
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with _holder_peer(fed, "utility", deadline_s=2.0) as utility:
            with pytest.raises(PeerError) as failed:
                utility.call("Hello", common_pb2.HelloRequest(meta=new_meta()))
        elapsed = time.monotonic() - started
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert failed.value.peer == "utility" and failed.value.code == "DEADLINE_EXCEEDED"
    assert "utility" in str(failed.value) and elapsed < 5
    with _holder_peer(fed, "utility") as utility:  # and it serves again once resumed
        assert utility.call("Hello", common_pb2.HelloRequest(meta=new_meta())).node_id == "utility"


def test_audit_chains_are_intact_and_record_both_sides(local_federation):
    fed, _ = local_federation
    with operator_client(_bank(fed)) as ops:
        ops.call("Greet", bank_pb2.GreetRequest(meta=new_meta(job_id="t-audit")))
    for node_id in ("bank", "tax", "utility"):
        log = AuditLog(f"sqlite:///{fed.node_dir(node_id) / 'audit.db'}", node_id)
        result = log.verify()
        assert result.ok, result.problems
        if node_id != "bank":
            served = log.query(operation="Hello", job_id="t-audit")
            assert [e.peer for e in served] == ["bank"] and served[0].direction == "served"
        else:
            made = log.query(operation="Hello", job_id="t-audit")
            assert {e.peer for e in made} == {"tax", "utility"}
            assert {e.direction for e in made} == {"made"}
        log.close()


def test_cli_audit_verify_reports_an_edited_log(local_federation, tmp_path):
    fed, _ = local_federation
    copy = tmp_path / "tax"
    copy.mkdir()
    src = sqlite3.connect(fed.node_dir("tax") / "audit.db")
    dst = sqlite3.connect(copy / "audit.db")
    src.backup(dst)
    src.close()
    run = [sys.executable, "-m", "xinyidai.cli.main", "audit", "verify", str(copy)]
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    dst.execute("update audit_log set reason = 'nothing to see' where seq = 2")
    dst.execute("delete from audit_log where seq = 4")
    dst.commit()
    dst.close()
    out = subprocess.run(run, capture_output=True, text=True)
    assert out.returncode == 1
    assert "record 2: edited" in out.stdout
    assert "record 4: missing" in out.stdout


def test_a_node_killed_mid_stream_gives_a_clear_error_naming_it(local_federation):
    """Last: kills the utility node while a large payload streams to it."""
    fed, _ = local_federation
    proc = fed.processes["utility"]

    def slow_payload():
        for i in range(200):
            if i == 3:
                proc.kill()
            time.sleep(0.02)
            yield bytes(1 << 20)

    started = time.monotonic()
    with _holder_peer(fed, "utility", deadline_s=8.0) as utility:
        with pytest.raises(PeerError) as failed:
            utility.put_blob("dying", slow_payload(), meta=new_meta(job_id="job-kill"))
    assert failed.value.peer == "utility"
    assert failed.value.code in {"UNAVAILABLE", "CANCELLED", "INTERNAL", "UNKNOWN"}
    assert time.monotonic() - started < 10
    proc.wait(timeout=5)
    with _holder_peer(fed, "utility", deadline_s=3.0) as utility:
        with pytest.raises(PeerError) as down:
            utility.call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    assert down.value.peer == "utility" and down.value.code == "UNAVAILABLE"
    assert "utility" in str(down.value)
