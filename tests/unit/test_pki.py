"""Development PKI: certificates chain to the CA, carry the node id as their only SAN, work for
mutual TLS in gRPC, and private keys are written 0600; bad requests change nothing."""

from __future__ import annotations

import datetime as dt
import os
import stat
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import DNSName, PolicyBuilder, Store, VerificationError
from typer.testing import CliRunner

from federation.errors import ConfigError
from federation.pki import (
    PkiLayout,
    certificate_identity,
    describe_pki,
    init_pki,
    issue_node_certificate,
    load_platform_public_key,
    load_platform_signing_key,
    peer_node_id,
)
from xinyidai.cli.main import app

NODES = ["bank", "tax", "utility"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"), NODES, days=30)


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    """A second, unrelated CA issuing certificates with the same node names."""
    return init_pki(tmp_path_factory.mktemp("rogue"), NODES, days=30)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_node_certificates_chain_to_the_ca_for_both_tls_roles(pki: PkiLayout) -> None:
    ca = _cert(pki.ca_cert)
    store = Store([ca])
    for node in NODES:
        cert = _cert(pki.node_cert(node))
        cert.verify_directly_issued_by(ca)
        server_chain = (
            PolicyBuilder().store(store).build_server_verifier(DNSName(node)).verify(cert, [])
        )
        assert server_chain[-1] == ca
        client = PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
        assert client.subjects == [DNSName(node)]
        # A server certificate for one node must not pass as another node's.
        other = next(n for n in NODES if n != node)
        with pytest.raises(VerificationError):
            PolicyBuilder().store(store).build_server_verifier(DNSName(other)).verify(cert, [])


def test_certificate_contents(pki: PkiLayout) -> None:
    ca = _cert(pki.ca_cert)
    ca_bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert ca_bc.critical and ca_bc.value.ca and ca_bc.value.path_length == 0
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    for node in NODES:
        cert = _cert(pki.node_cert(node))
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == node
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert list(san) == [x509.DNSName(node)]  # the DNS name and nothing else
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        key = serialization.load_pem_private_key(pki.node_key(node).read_bytes(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert key.curve.name == "secp256r1"
        assert key.public_key() == cert.public_key()
        assert cert.not_valid_after_utc - cert.not_valid_before_utc <= dt.timedelta(
            days=30, minutes=5
        )
        assert certificate_identity(pki.node_cert(node).read_bytes()) == node


def test_private_keys_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        layout = init_pki(tmp_path / "pki", ["bank", "tax"])
        issue_node_certificate(tmp_path / "pki", "gas")
    finally:
        os.umask(old)
    keys = [layout.ca_key, layout.platform_signing_key] + [
        layout.node_key(n) for n in ("bank", "tax", "gas")
    ]
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for path in [layout.ca_cert, layout.platform_signing_pub, layout.node_cert("gas")]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    # No temporary files left behind.
    assert all(not p.name.startswith(".") for p in (tmp_path / "pki").iterdir())


def test_platform_signing_pair_matches(pki: PkiLayout) -> None:
    private = load_platform_signing_key(pki.platform_signing_key)
    public = load_platform_public_key(pki.platform_signing_pub)
    assert isinstance(private, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    public.verify(private.sign(b"consent"), b"consent")
    with pytest.raises(InvalidSignature):
        public.verify(private.sign(b"consent"), b"consent for marketing")
    # The node TLS key is not a consent-signing key.
    with pytest.raises(ConfigError, match="expected an Ed25519 key"):
        load_platform_signing_key(pki.node_key("bank"))


def test_certificate_from_another_ca_is_rejected(pki: PkiLayout, rogue: PkiLayout) -> None:
    ca = _cert(pki.ca_cert)
    forged = _cert(rogue.node_cert("tax"))
    assert certificate_identity(rogue.node_cert("tax").read_bytes()) == "tax"  # same name...
    with pytest.raises((ValueError, InvalidSignature)):
        forged.verify_directly_issued_by(ca)
    with pytest.raises(VerificationError):  # ...but no chain to our CA
        PolicyBuilder().store(Store([ca])).build_client_verifier().verify(forged, [])
    infos = {i.path.name: i for i in describe_pki(rogue.directory)}
    assert infos["tax.pem"].signed_by_ca  # rogue CA signed its own
    # Put the rogue certificate among ours: describe_pki must flag it.
    mixed = Path(str(pki.directory) + "-mixed")
    mixed.mkdir()
    for name in ("ca.pem", "bank.pem"):
        (mixed / name).write_bytes((pki.directory / name).read_bytes())
    (mixed / "tax.pem").write_bytes(rogue.node_cert("tax").read_bytes())
    flags = {i.path.name: i.signed_by_ca for i in describe_pki(mixed)}
    assert flags == {"ca.pem": True, "bank.pem": True, "tax.pem": False}


def test_refuses_to_overwrite_an_existing_pki(tmp_path: Path) -> None:
    init_pki(tmp_path, ["bank", "tax"])
    before = _snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"already exists.*overwrite"):
        init_pki(tmp_path, ["bank", "tax"])
    with pytest.raises(ConfigError, match="already exists"):
        init_pki(tmp_path, ["gas"])  # a different node list still finds the CA
    assert _snapshot(tmp_path) == before
    init_pki(tmp_path, ["bank", "tax"], overwrite=True)
    after = _snapshot(tmp_path)
    assert after["ca.pem"] != before["ca.pem"]
    assert after["platform_signing.pub"] != before["platform_signing.pub"]


@pytest.mark.parametrize(
    "bad", ["Bank", "tax_bureau", "tax.gov", "", "-tax", "tax-", "a" * 64, "ca", "银行"]
)
def test_rejects_node_ids_that_are_not_dns_labels(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="node id"):
        init_pki(tmp_path / "pki", ["bank", bad])
    assert not (tmp_path / "pki").exists()  # validated before anything was written


def test_rejects_duplicates_and_empty_lists(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="more than once: tax"):
        init_pki(tmp_path, ["tax", "bank", "tax"])
    with pytest.raises(ConfigError, match="at least one"):
        init_pki(tmp_path, [])
    with pytest.raises(ConfigError, match="at least 1 day"):
        init_pki(tmp_path, ["tax"], days=0)
    assert list(tmp_path.iterdir()) == []


def test_issue_adds_a_node_to_the_existing_ca(tmp_path: Path) -> None:
    layout = init_pki(tmp_path, ["bank"])
    ca_before = layout.ca_cert.read_bytes()
    issue_node_certificate(tmp_path, "gas", days=10)
    gas = _cert(layout.node_cert("gas"))
    gas.verify_directly_issued_by(_cert(layout.ca_cert))
    assert layout.ca_cert.read_bytes() == ca_before
    assert certificate_identity(layout.node_cert("gas").read_bytes()) == "gas"
    assert layout.node_ids() == ["bank", "gas"]
    first = layout.node_cert("gas").read_bytes()
    with pytest.raises(ConfigError, match="already has a certificate"):
        issue_node_certificate(tmp_path, "gas")
    assert layout.node_cert("gas").read_bytes() == first
    issue_node_certificate(tmp_path, "gas", overwrite=True)
    assert layout.node_cert("gas").read_bytes() != first


def test_issue_without_a_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca\.pem: not found"):
        issue_node_certificate(tmp_path, "gas")
    assert list(tmp_path.iterdir()) == []


def test_certificate_identity_rejects_certificates_without_one_san(pki: PkiLayout) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
    )
    no_san = builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(ConfigError, match="no subjectAltName"):
        certificate_identity(no_san)  # the CN alone does not make an identity
    two = builder.add_extension(
        x509.SubjectAlternativeName([x509.DNSName("bank"), x509.DNSName("tax")]), critical=False
    ).sign(key, hashes.SHA256())
    with pytest.raises(ConfigError, match="exactly one SAN"):
        certificate_identity(two.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        certificate_identity(b"-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")


@pytest.mark.parametrize(
    ("sans", "message"),
    [
        ([x509.RFC822Name("bank")], "no SAN DNS name"),  # an e-mail SAN never names a node
        ([x509.UniformResourceIdentifier("bank")], "no SAN DNS name"),
        ([x509.RFC822Name("bank"), x509.DNSName("tax"), x509.DNSName("bank")], "found 2"),
        ([x509.DNSName("bank.example.com")], "not a node id"),
        ([x509.DNSName("*")], "not a node id"),
    ],
)
def test_only_one_san_dns_name_that_is_a_node_id_names_a_node(
    sans: list[x509.GeneralName], message: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    pem = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank")]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    for read in (certificate_identity, peer_node_id):  # peer_node_id caches: twice each
        for _ in range(2):
            with pytest.raises(ConfigError, match=message):
                read(pem)
    named = [x509.RFC822Name("someone@bank"), x509.DNSName("bank")]  # other types beside it: fine
    assert peer_node_id(_with_sans(key, named)) == "bank"


def _with_sans(key: ec.EllipticCurvePrivateKey, sans: list[x509.GeneralName]) -> bytes:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")]))
        .public_key(key.public_key())
        .serial_number(2)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


# ------------------------------------------------------------------------------------------------
# The certificates in real use: mutual TLS in gRPC (BoringSSL).


def _serve(pki: PkiLayout, node: str) -> tuple[grpc.Server, int]:
    def who(_request: bytes, context: grpc.ServicerContext) -> bytes:
        names = context.auth_context().get("x509_subject_alternative_name", [])
        return b",".join(names)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "test.Identity", {"Who": grpc.unary_unary_rpc_method_handler(who)}
            ),
        )
    )
    creds = grpc.ssl_server_credentials(
        [(pki.node_key(node).read_bytes(), pki.node_cert(node).read_bytes())],
        root_certificates=pki.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


def _call(port: int, client: PkiLayout, node: str, ca: PkiLayout, target: str) -> bytes:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca.ca_cert.read_bytes(),
        private_key=client.node_key(node).read_bytes(),
        certificate_chain=client.node_cert(node).read_bytes(),
    )
    with grpc.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", target)]
    ) as channel:
        return channel.unary_unary("/test.Identity/Who")(b"", timeout=5)


def test_mutual_tls_in_grpc_identifies_the_caller_by_san(pki: PkiLayout, rogue: PkiLayout) -> None:
    server, port = _serve(pki, "tax")
    try:
        assert _call(port, pki, "bank", pki, target="tax") == b"bank"
        assert _call(port, pki, "utility", pki, target="tax") == b"utility"
        # The server's SAN is checked: the tax node cannot pose as the utility.
        with pytest.raises(grpc.RpcError) as wrong_name:
            _call(port, pki, "bank", pki, target="utility")
        assert wrong_name.value.code() == grpc.StatusCode.UNAVAILABLE
        # A client certificate from another CA is refused in the handshake.
        with pytest.raises(grpc.RpcError) as foreign:
            _call(port, rogue, "bank", pki, target="tax")
        assert foreign.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(None)


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_init_issue_show(tmp_path: Path) -> None:
    runner = CliRunner()
    d = tmp_path / "pki"
    result = runner.invoke(
        app, ["pki", "init", "--dir", str(d), "--nodes", "bank,tax", "--days", "7"]
    )
    assert result.exit_code == 0, result.output
    assert "ca.key" in result.output and "600" in result.output
    assert certificate_identity((d / "tax.pem").read_bytes()) == "tax"

    again = runner.invoke(app, ["pki", "init", "--dir", str(d), "--nodes", "bank"])
    assert isinstance(again.exception, ConfigError)
    assert "already exists" in str(again.exception)

    result = runner.invoke(app, ["pki", "issue", "--dir", str(d), "--node", "gas"])
    assert result.exit_code == 0, result.output
    assert (d / "gas.pem").is_file()

    result = runner.invoke(app, ["pki", "show", "--dir", str(d)])
    assert result.exit_code == 0, result.output
    for node in ("bank", "tax", "gas"):
        assert f"CN={node}" in result.output
    assert "NO" not in result.output  # every certificate chains to the CA

    bad = runner.invoke(app, ["pki", "issue", "--dir", str(d), "--node", "Gas_2"])
    assert isinstance(bad.exception, ConfigError)
