"""Identity and files across real node processes (issue 10, item 6): only a SAN DNS name names a
node, a model name is an identifier and never a path, and every node folder and file is private.

The federation is built as ``xinyidai demo`` builds it; the test certificates are issued by that
federation's own CA (written here with ``cryptography``), so only what they *say* differs.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.errors import PeerError
from federation.transport.base import new_meta
from parties.config import PeerConfig, TlsConfig, load_node_config
from parties.node import connect, operator_client
from protos import bank_pb2, common_pb2, holder_pb2

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def federation(start_federation, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("identity")
    fed, examples = start_federation(workdir, enterprises=300, seed=5, deadline_s=10.0)
    return fed, examples


def _issue(fed, directory: Path, name: str, sans: list[x509.GeneralName]) -> TlsConfig:
    """A client certificate signed by the federation's own CA with the given SANs only."""
    ca_cert = x509.load_pem_x509_certificate(fed.pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(fed.pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return TlsConfig(
        ca=fed.pki.ca_cert, cert=directory / f"{name}.pem", key=directory / f"{name}.key"
    )


def _hello_as(fed, tls: TlsConfig):
    bank = load_node_config(fed.configs["bank"]).model_copy(update={"tls": tls})
    tax = load_node_config(fed.configs["tax"])
    target = PeerConfig(node_id="tax", address=tax.address, role="holder")
    with connect(bank, target, audit=None, deadline_s=5.0) as client:
        return client.call("Hello", common_pb2.HelloRequest(meta=new_meta()))


def test_only_a_san_dns_name_names_a_node(federation, tmp_path):
    fed, _ = federation
    # The control: the CA's own kind of certificate (one DNS SAN "bank") is the bank.
    assert _hello_as(fed, _issue(fed, tmp_path, "dns", [x509.DNSName("bank")])).caller_id == "bank"
    # An e-mail SAN "bank" from the same CA is nobody: gRPC lists it among the peer identities,
    # but it never names a node.
    with pytest.raises(PeerError) as email:
        _hello_as(fed, _issue(fed, tmp_path, "email", [x509.RFC822Name("bank")]))
    assert email.value.code == "UNAUTHENTICATED"
    assert "no SAN DNS name" in email.value.detail
    # Nor does a URI SAN, and two DNS names are ambiguous.
    with pytest.raises(PeerError) as uri:
        _hello_as(fed, _issue(fed, tmp_path, "uri", [x509.UniformResourceIdentifier("bank")]))
    assert uri.value.code == "UNAUTHENTICATED"
    two = [x509.DNSName("bank"), x509.DNSName("tax")]
    with pytest.raises(PeerError) as both:
        _hello_as(fed, _issue(fed, tmp_path, "two", two))
    assert both.value.code == "UNAUTHENTICATED" and "exactly one SAN DNS name" in both.value.detail


@pytest.mark.parametrize("name", ["../../outside", "../models/x", "/tmp/outside", "a/b", ".hidden"])
def test_a_model_name_is_an_identifier_never_a_path(federation, name):
    fed, examples = federation
    # A JSON file where the traversal would lead: it must never be opened.
    outside = fed.workdir / "outside.json"
    outside.write_text(json.dumps({"not": "a model"}))
    request = bank_pb2.ScoreRequest(
        meta=new_meta("financing"),
        uscc=examples["tax"]["authorised"],
        model_name=name,
        model_ref="",
    )
    with (
        operator_client(load_node_config(fed.configs["bank"])) as ops,
        pytest.raises(PeerError) as failed,
    ):
        ops.call("Score", request)
    assert failed.value.code == "INVALID_ARGUMENT"
    assert "model_name" in failed.value.detail and "letters, digits" in failed.value.detail


def test_node_folders_are_0700_and_their_files_0600_after_a_real_start(federation):
    fed, examples = federation
    # Some traffic first, so the databases have their -wal/-shm files.
    bank = load_node_config(fed.configs["bank"])
    tax = load_node_config(fed.configs["tax"])
    target = PeerConfig(node_id="tax", address=tax.address, role="holder")
    with connect(bank, target, audit=None) as client:
        client.call(
            "CheckAuthorisation",
            holder_pb2.AuthorisationQuery(meta=new_meta(), uscc=examples["tax"]["authorised"]),
        )
    assert stat.S_IMODE(fed.workdir.stat().st_mode) == 0o700
    for node_id in fed.configs:
        node_dir = fed.node_dir(node_id)
        assert stat.S_IMODE(node_dir.stat().st_mode) == 0o700, node_dir
        expected = {"node.yaml", "node.log", "audit.db", "serving.json", f"data/{node_id}.csv"}
        if node_id != "bank":
            expected |= {"consent.db"}
        paths = sorted(node_dir.rglob("*"))
        names = {p.relative_to(node_dir).as_posix() for p in paths}
        assert expected <= names, expected - names
        assert any(n.endswith("-wal") for n in names)
        for path in paths:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_dir():
                assert mode == 0o700, (path, oct(mode))
            else:
                assert mode & 0o077 == 0, (path, oct(mode))


def test_verification_cannot_test_equality_and_every_refusal_is_an_alert(federation):
    """The oracle of issue 10 (item 5) across processes: the bank relays, the holder refuses."""
    from federation.audit import AuditLog, sqlite_url
    from federation.transport.base import PeerRefused

    fed, examples = federation
    code = examples["tax"]["authorised"]

    def verify(predicate: dict) -> str:
        request = bank_pb2.BankVerifyRequest(
            meta=new_meta("financing"),
            holder="tax",
            uscc=code,
            predicate_json=json.dumps(predicate),
        )
        with operator_client(load_node_config(fed.configs["bank"])) as ops:
            return ops.call("Verify", request).answer

    vat = {"kind": "threshold", "column": "vat_paid_12m", "value": 100000}
    assert verify({**vat, "op": ">="}) in ("yes", "no")
    assert verify({**vat, "op": "<"}) in ("yes", "no")  # the same cut: free
    with pytest.raises(PeerRefused) as equality:
        verify({**vat, "op": ">"})  # with ">=" it would tell whether VAT paid is exactly 100000
    assert equality.value.refusal == "rate-limit" and "equals it" in equality.value.detail
    bank = load_node_config(fed.configs["bank"])
    tax = PeerConfig(node_id="tax", address=load_node_config(fed.configs["tax"]).address,
                     role="holder")  # fmt: skip
    off = json.dumps({**vat, "op": ">=", "value": 123456})
    with connect(bank, tax, audit=None) as holder, pytest.raises(PeerError) as off_grid:
        holder.call("Verify", holder_pb2.VerifyRequest(meta=new_meta(), uscc=code,
                                                       predicate_json=off))  # fmt: skip
    assert off_grid.value.code == "INVALID_ARGUMENT"
    assert "123456 is not one of this holder's values; nearest: 100000, 200000" in (
        off_grid.value.detail
    )
    log = AuditLog(sqlite_url(fed.node_dir("tax") / "audit.db"), "tax")
    try:
        alerts = [r for r in log.query(subject=code) if r.operation == "verify.alert"]
    finally:
        log.close()
    assert len(alerts) == 1 and alerts[0].peer == "bank" and "equals it" in alerts[0].reason
