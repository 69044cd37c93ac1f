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
