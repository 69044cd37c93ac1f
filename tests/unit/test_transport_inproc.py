"""The holder's protocol through the in-process twin: same runtime, same bytes, no sockets."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from federation.audit import AuditLog
from federation.blobs import BlobStore
from federation.errors import PeerError
from federation.pki import init_pki
from federation.transport.base import (
    CallFailed,
    PeerBase,
    PeerRefused,
    ServiceRuntime,
    new_meta,
    rechunk,
)
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from parties.authorisation import PlatformSigner
from parties.config import NodeConfig, PeerConfig, TlsConfig
from parties.consent import ConsentRegistry
from parties.data.schema import schema_for
from parties.data.synth import synthesize_city
from parties.holder.service import HolderServicer
from protos import common_pb2, holder_pb2


@pytest.fixture()
def holder(tmp_path: Path):
    pki = init_pki(tmp_path / "pki", ["bank", "tax"])
    signer = PlatformSigner.from_file(pki.platform_signing_key)
    tables = synthesize_city(n_enterprises=300, seed=5)
    table = tables["tax"].set_index("uscc")
    config = NodeConfig(
        node_id="tax",
        role="holder",
        node_dir=tmp_path / "tax",
        tls=TlsConfig(ca=pki.ca_cert, cert=pki.node_cert("tax"), key=pki.node_key("tax")),
        platform_public_key=pki.platform_signing_pub,
        peers=[PeerConfig(node_id="bank", role="bank")],
    )
    consent = ConsentRegistry(
        f"sqlite:///{tmp_path / 'consent.db'}", signer.public_key, node_id="tax"
    )
    code = table.index[0]
    now = time.time()
    consent.grant(
        signer.issue(
            uscc=code,
            bank_id="bank",
            purpose="financing",
            categories=["tax"],
            valid_from=now - 10,
            valid_until=now + 3600,
        )
    )
    servicer = HolderServicer(
        config=config,
        table=table,
        schema=schema_for("tax"),
        consent=consent,
        blobs=BlobStore(tmp_path / "blobs", max_bytes=1 << 20),
        column_key=b"k" * 32,
    )
    served = AuditLog(f"sqlite:///{tmp_path / 'tax-audit.db'}", "tax")
    made = AuditLog(f"sqlite:///{tmp_path / 'bank-audit.db'}", "bank")
    runtime = ServiceRuntime(servicer, node_id="tax", audit=served, purposes=PurposePolicy())

    def peer(as_id: str = "bank") -> InProcessPeer:
        return InProcessPeer(runtime, self_id=as_id, audit=made, deadline_s=5.0)

    yield peer, code, served, made, runtime
    served.close()
    made.close()


def runtime_of(holder):
    return holder[4]


def test_hello_names_the_authenticated_caller_and_hides_column_names(holder):
    peer, _, served, made, _ = holder
    reply = peer().call("Hello", common_pb2.HelloRequest(meta=new_meta(job_id="j1")))
    assert reply.node_id == "tax" and reply.caller_id == "bank"
    names = set(schema_for("tax").names)
    assert reply.tables[0].n_rows == len(runtime_of(holder).servicer.table) > 0
    assert not names & {c.name_hash for c in reply.tables[0].columns}
    assert reply.consent.active == 1
    [s] = served.query(operation="Hello")
    [m] = made.query(operation="Hello")
    assert (s.direction, s.peer, s.job_id, s.decision) == ("served", "bank", "j1", "allow")
    assert (m.direction, m.peer, m.job_id) == ("made", "tax", "j1")


def test_in_process_peer_is_serving_through_the_common_contract(holder):
    peer, *_ = holder
    client: PeerBase = peer()
    assert client.health() == "SERVING"
    assert client.health(timeout=0.1, wait_for_ready=True) == "SERVING"


def test_refusals_carry_a_reason_and_are_audited(holder):
    peer, code, served, _, _ = holder
    with pytest.raises(PeerRefused) as purpose:
        peer().call("Hello", common_pb2.HelloRequest(meta=new_meta("marketing")))
    assert purpose.value.refusal == "purpose" and purpose.value.peer == "tax"
    with pytest.raises(PeerRefused) as caller:
        peer("utility").call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    assert caller.value.refusal == "caller"
    other = synthesize_city(n_enterprises=300, seed=6)["tax"]["uscc"].iloc[0]
    with pytest.raises(PeerRefused) as consent:
        peer().call(
            "CheckAuthorisation", holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=other)
        )
    assert consent.value.refusal == "consent" and "no authorisation" in consent.value.detail
    ok = peer().call(
        "CheckAuthorisation", holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=code)
    )
    assert ok.has_data and ok.auth_id
    decisions = [(e.decision, e.subject) for e in served.query()]
    assert decisions == [("deny", ""), ("deny", ""), ("deny", other), ("allow", code)]
    assert served.verify().ok


def test_invalid_requests_are_invalid_argument(holder):
    peer, code, _, _, runtime = holder
    with pytest.raises(CallFailed) as malformed:
        runtime.unary("Hello", b"\xff\xff\xff", caller="bank")
    assert malformed.value.status == "INVALID_ARGUMENT"
    with pytest.raises(PeerError) as no_meta:
        peer().call("Hello", common_pb2.HelloRequest())
    assert no_meta.value.code == "INVALID_ARGUMENT" and "meta" in no_meta.value.detail
    with pytest.raises(PeerError) as bad_code:
        peer().call(
            "CheckAuthorisation",
            holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=code[:-1] + "?"),
        )
    assert bad_code.value.code == "INVALID_ARGUMENT" and "uscc" in bad_code.value.detail
    with pytest.raises(PeerError) as category:
        peer().call(
            "CheckAuthorisation",
            holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=code, categories=["gas"]),
        )
    assert category.value.code == "INVALID_ARGUMENT" and "gas" in category.value.detail


def test_blobs_round_trip_and_respect_the_size_limit(holder, tmp_path):
    peer, _, _, _, _ = holder
    client = peer()
    client.chunk_bytes = 4096
    payload = hashlib.sha256(b"x").digest() * 3000  # 96,000 bytes, 24 chunks
    meta = new_meta(job_id="job-1")
    receipt = client.put_blob("vec", [payload[:1000], payload[1000:]], meta=meta)
    assert receipt.size == len(payload)
    assert b"".join(client.get_blob("vec", meta=meta)) == payload
    with pytest.raises(PeerError) as too_big:
        client.put_blob("huge", bytes(2 << 20), meta=meta)
    assert too_big.value.code == "RESOURCE_EXHAUSTED"
    assert not (tmp_path / "blobs" / "bank" / "job-1" / "huge").exists()
    with pytest.raises(PeerError) as missing:
        list(client.get_blob("nope", meta=meta))
    assert missing.value.code == "NOT_FOUND"
    with pytest.raises(PeerError):
        client.put_blob("../escape", b"x", meta=meta)


@pytest.mark.parametrize("sizes", [[], [0], [10], [4096], [4097], [1, 4095, 4096, 3], [10000, 5]])
def test_rechunk_is_exact(sizes):
    pieces = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
    chunks = list(rechunk(pieces, 4096))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(c) == 4096 for c in chunks[:-1]) and len(chunks[-1]) <= 4096
    assert len(chunks) >= 1


# ------------------------------------------------------------------------------------------------
# Record first, fail closed (issue 10): every request leaves exactly one record, refused ones too,
# and an answer that cannot be recorded is not given.


def _served(served: AuditLog, operation: str | None = None):
    return served.query(operation=operation)


def test_overlong_meta_fields_are_refused_before_any_work_and_recorded(holder, tmp_path):
    peer, _, served, made, _ = holder
    client = peer()
    meta = new_meta(job_id="j" * 200)
    with pytest.raises(PeerError) as refused:
        client.put_blob("vec", b"payload", meta=meta)
    assert refused.value.code == "INVALID_ARGUMENT"
    detail = refused.value.detail
    assert "meta.job_id is 200 characters" in detail and "limit of 128" in detail
    assert len(detail) < 300 and "j" * 40 not in detail  # a short prefix, never the value
    assert not (tmp_path / "blobs" / "bank").exists()  # nothing stored
    [record] = _served(served, "PutBlob")
    assert (record.decision, record.job_id) == ("deny", "j" * 128)  # cut to the column
    assert "job_id is 200 characters" in record.reason

    for field, value, limit in (
        ("purpose", "p" * 100, 64),
        ("model_id", "m" * 129, 128),
        ("request_id", "r" * 65, 64),
    ):
        with pytest.raises(PeerError) as bad:
            client.call(
                "Hello",
                common_pb2.HelloRequest(
                    meta=common_pb2.RequestMeta(**{"purpose": "financing", field: value})
                ),
            )
        assert bad.value.code == "INVALID_ARGUMENT", field
        assert f"meta.{field} is {len(value)} characters, over the limit of {limit}" in (
            bad.value.detail
        )
    with pytest.raises(PeerError) as form:
        client.call("Hello", common_pb2.HelloRequest(meta=new_meta(job_id="../up")))
    assert form.value.code == "INVALID_ARGUMENT" and "meta.job_id '../up' must be" in (
        form.value.detail
    )
    hellos = _served(served, "Hello")
    assert [r.decision for r in hellos] == ["deny"] * 4
    assert len(made.query()) == 5 and served.verify().ok and made.verify().ok


def _break(log: AuditLog) -> None:
    """Make every later append fail, as a lost or tampered database would: drop the head row."""
    import sqlite3

    con = sqlite3.connect(log.url.removeprefix("sqlite:///"))
    with con:
        con.execute("DELETE FROM audit_head")
    con.close()


def test_an_answer_that_cannot_be_recorded_is_withheld(holder):
    peer, _, served, _, runtime = holder
    client = peer()
    client.chunk_bytes = runtime.servicer.chunk_bytes = 1024
    meta = new_meta(job_id="job-1")
    client.put_blob("vec", bytes(range(256)) * 4, meta=meta)  # one 1 KiB chunk
    client.put_blob("big", bytes(5000), meta=meta)
    _break(served)
    with pytest.raises(PeerError) as unary:
        client.call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    assert unary.value.code == "INTERNAL" and "not recorded" in unary.value.detail
    with pytest.raises(PeerError) as put:
        client.put_blob("vec2", b"x", meta=meta)
    assert put.value.code == "INTERNAL" and "not recorded" in put.value.detail
    got: list[bytes] = []
    with pytest.raises(PeerError) as stream:
        got.extend(client.get_blob("vec", meta=meta))
    assert stream.value.code == "INTERNAL" and got == []  # its only message held back
    got.clear()
    with pytest.raises(PeerError):
        got.extend(client.get_blob("big", meta=meta))
    assert sum(map(len, got)) == 4096  # never the last chunk, the one with the digest
    # refusals too: an invalid request that cannot be recorded is still refused
    with pytest.raises(CallFailed) as refused:
        runtime.unary("Hello", b"\xff", caller="bank")
    assert refused.value.status == "INTERNAL"


def test_unknown_methods_oversize_messages_and_busy_calls_are_recorded(holder):
    from federation.transport.server import CallGate

    peer, _, served, _, runtime = holder
    with pytest.raises(CallFailed) as unknown:
        runtime.unary("Nope" * 100, b"", caller="bank")
    assert unknown.value.status == "UNIMPLEMENTED" and len(unknown.value.detail) < 300
    [record] = served.query(decision="deny")
    assert record.operation == ("Nope" * 100)[:128] and record.peer == "bank"

    runtime.limit(max_message_bytes=1000, gate=CallGate(capacity=1, workers=1))
    client = peer()
    with pytest.raises(PeerError) as big:
        client.call("Hello", common_pb2.HelloRequest(meta=new_meta(), protocol_version="v" * 2000))
    assert big.value.code == "RESOURCE_EXHAUSTED" and "message limit of 1000" in big.value.detail

    # one GetBlob in progress holds the only slot: the next call is refused "busy", recorded
    client.chunk_bytes = runtime.servicer.chunk_bytes = 256
    meta = new_meta(job_id="job-1")
    client.put_blob("vec", bytes(900), meta=meta)
    stream = client.get_blob("vec", meta=meta)
    assert len(next(stream)) == 256
    with pytest.raises(PeerError) as busy:
        client.call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    assert busy.value.code == "RESOURCE_EXHAUSTED" and "busy" in busy.value.detail
    stream.close()  # the bank stops reading: the stream is recorded as cancelled
    client.call("Hello", common_pb2.HelloRequest(meta=new_meta()))  # the slot is free again
    outcomes = [(r.operation, r.decision, r.reason.split(":")[0]) for r in served.query()]
    assert outcomes[1:] == [
        ("Hello", "deny", "tax"),  # oversize
        ("PutBlob", "allow", ""),
        ("Hello", "deny", "tax"),  # busy
        ("GetBlob", "error", "cancelled after 1 chunks / 267 bytes"),
        ("Hello", "allow", ""),
    ]


def test_each_side_records_the_others_head(holder):
    peer, _, served, made, _ = holder
    client = peer()
    made.append(direction="local", peer="bank", operation="warm-up")
    for _ in range(3):
        client.call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    with pytest.raises(PeerRefused):
        client.call("Hello", common_pb2.HelloRequest(meta=new_meta("marketing")))
    served_records, made_records = served.query(), made.query()[1:]
    for s, m in zip(served_records, made_records, strict=True):
        assert m.peer_head == f"{s.seq}:{s.hash}"  # the callee's head after its record
        bank_before = made.query()[m.seq - 2]
        assert s.peer_head == f"{bank_before.seq}:{bank_before.hash}"
    assert [h.seq for h in made.heads_of("tax")] == [1, 2, 3, 4]
    assert served.verify(witnesses=[made]).ok and made.verify(witnesses=[served]).ok


def test_subjects_a_handler_names_are_recorded_with_its_record(holder):
    from federation.transport.calls import SubjectAccess

    peer, code, served, _, runtime = holder
    hello = runtime.servicer.Hello

    def hello_about_two(request, call):
        call.subjects.append(SubjectAccess(code, "auth-1", "allow"))
        call.subjects.append(SubjectAccess("91110000100000009X", "", "refused:consent"))
        return hello(request, call)

    runtime.servicer.Hello = hello_about_two
    peer().call("Hello", common_pb2.HelloRequest(meta=new_meta()))
    [(entry, access)] = served.subjects_of(code)
    assert entry.operation == "Hello" and access == SubjectAccess(code, "auth-1", "allow")
    assert served.verify().ok
