"""Development PKI: one federation CA, a certificate per node, and the platform's signing key.

Why a private CA: every node authenticates every other node by mutual TLS, and the gRPC server
takes the caller's identity from the certificate's subjectAltName. A CA that only this
federation trusts means "has a certificate" already means "is a member"; the SAN then says
*which* member. Node identities are DNS labels because that is what a SAN DNSName can carry and
what ``grpc.ssl_target_name_override`` is compared against.

Keys are ECDSA P-256 (accepted by BoringSSL inside gRPC, small, fast handshakes). The platform's
consent-signing key is Ed25519: it signs enterprise authorisations, not TLS sessions, so it is
kept apart from the CA - a holder trusts it for consent only.

This is a *development* PKI: keys are unencrypted files (mode 0600), there is no revocation list
and no OCSP. See ``docs/security.md`` for what that does and does not protect.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from federation.errors import ConfigError

__all__ = [
    "CertificateInfo",
    "PkiLayout",
    "certificate_identity",
    "certificate_sha256",
    "describe_pki",
    "host_names",
    "init_pki",
    "issue_node_certificate",
    "load_platform_public_key",
    "load_platform_signing_key",
    "node_id_problem",
    "peer_node_id",
    "validate_node_id",
]

CA_COMMON_NAME = "xinyidai federation CA"
_NODE_ID = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_RESERVED = frozenset({"ca"})  # would collide with ca.pem / ca.key
_CLOCK_SKEW = dt.timedelta(minutes=5)  # back-date notBefore so a slightly slow peer clock works
_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LOOPBACK = ("127.0.0.1", "::1")


def node_id_problem(node_id: object) -> str | None:
    """Why ``node_id`` cannot name a node (``None`` if it can).

    Node ids end up as SAN DNSNames and file names, so they must be DNS labels: lowercase
    letters, digits and '-', 1-63 characters, not starting or ending with '-'.
    """
    if not isinstance(node_id, str) or not node_id:
        return "node id is empty"
    if not _NODE_ID.fullmatch(node_id):
        return (
            f"node id {node_id!r} is not a DNS label (use 1-63 lowercase letters, digits and "
            "'-', not starting or ending with '-')"
        )
    if node_id in _RESERVED:
        return f"node id {node_id!r} is reserved (it would overwrite the CA files)"
    return None


def validate_node_id(node_id: str) -> str:
    """Return ``node_id`` unchanged, or raise ``ConfigError`` saying why it is unusable."""
    problem = node_id_problem(node_id)
    if problem is not None:
        raise ConfigError(problem)
    return node_id


@dataclass(frozen=True)
class PkiLayout:
    """Where the PKI files live inside ``directory``; ``nodes`` lists the nodes just written."""

    directory: Path
    nodes: tuple[str, ...] = field(default=())

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def platform_signing_key(self) -> Path:
        return self.directory / "platform_signing.key"

    @property
    def platform_signing_pub(self) -> Path:
        return self.directory / "platform_signing.pub"

    def node_cert(self, node: str) -> Path:
        return self.directory / f"{validate_node_id(node)}.pem"

    def node_key(self, node: str) -> Path:
        return self.directory / f"{validate_node_id(node)}.key"

    def node_ids(self) -> list[str]:
        """Every node that has a certificate in the directory (sorted)."""
        found = []
        for path in self.directory.glob("*.pem"):
            if path.stem != "ca" and node_id_problem(path.stem) is None:
                found.append(path.stem)
        return sorted(found)

    def files(self) -> list[Path]:
        """The files ``init_pki`` writes, CA first."""
        out = [self.ca_cert, self.ca_key]
        for node in self.nodes:
            out += [self.node_cert(node), self.node_key(node)]
        return [*out, self.platform_signing_key, self.platform_signing_pub]


def host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    """The SAN entries for the host names and addresses a node is reached by (``--host``).

    Why only fully qualified names (with a dot) and IP addresses: a certificate's identity is
    its one dot-free DNS name (the node id, ``certificate_identity``); a dot-free host name
    would be a second candidate identity. ``localhost`` therefore becomes the loopback
    addresses 127.0.0.1 and ::1. Wildcards are refused: a node is reached by names, not patterns.
    """
    out: list[x509.GeneralName] = []
    for raw in hosts:
        host = raw.strip().lower().rstrip(".")
        shown = raw if len(raw) <= 64 else raw[:61] + "..."
        if host == "localhost":
            out += [x509.IPAddress(ipaddress.ip_address(a)) for a in _LOOPBACK]
            continue
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            continue
        except ValueError:
            pass
        labels = host.split(".")
        if len(labels) < 2 or len(host) > 253 or not all(_HOST_LABEL.fullmatch(x) for x in labels):
            raise ConfigError(
                f"host {shown!r}: give a fully qualified host name with a dot (e.g. "
                "tax.example.org), an IP address or localhost; a dot-free name would read as a "
                "node id, and wildcards are not allowed"
            )
        out.append(x509.DNSName(host))
    unique: list[x509.GeneralName] = []
    for name in out:
        if name not in unique:
            unique.append(name)
    return unique


# ------------------------------------------------------------------------------------------------
# Writing files: all-or-nothing, private keys 0600 from the first byte.


def _write_all(files: dict[Path, tuple[bytes, int]]) -> None:
    """Write every file, or none: each goes to a temporary file first, then all are renamed.

    Temporary files are created 0600 by ``mkstemp`` and chmod-ed to their final mode before the
    rename, so a private key is never readable by others, not even briefly.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for path, (data, mode) in files.items():
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, mode)
        for tmp, path in staged:
            os.replace(tmp, path)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # gRPC needs the key in clear; the file mode protects it
    )


def _ensure_directory(directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory}: exists and is not a directory")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


# ------------------------------------------------------------------------------------------------
# Certificates


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_ca(days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xinyidai federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME),
        ]
    )
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_node_cert(
    node_id: str,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    days: int,
    hosts: Sequence[x509.GeneralName] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    # A node certificate must not outlive its CA: a verifier would reject the tail anyway.
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "xinyidai federation"),
                    x509.NameAttribute(NameOID.COMMON_NAME, node_id),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        # The SAN's one dot-free DNS name is the node's identity; host names (with a dot) and
        # IP addresses beside it only say where the node is reached (``host_names``).
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id), *hosts]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _check_days(days: int) -> None:
    if not isinstance(days, int) or days < 1:
        raise ConfigError(f"certificate validity must be at least 1 day, got {days!r}")


def init_pki(
    directory: Path, nodes: Sequence[str], *, days: int = 365, overwrite: bool = False
) -> PkiLayout:
    """Create a CA, a certificate and key per node, and the platform's Ed25519 signing pair.

    Everything is generated in memory first and written all-or-nothing, so a refused or failed
    run leaves an existing PKI untouched. An existing PKI is only replaced with
    ``overwrite=True``: a new CA invalidates every certificate already handed out.
    """
    directory = Path(directory)
    _check_days(days)
    if isinstance(nodes, str):
        raise ConfigError("nodes must be a list of node ids, not one string")
    node_list = [validate_node_id(n) for n in nodes]
    if not node_list:
        raise ConfigError("init_pki needs at least one node id")
    duplicates = sorted({n for n in node_list if node_list.count(n) > 1})
    if duplicates:
        raise ConfigError(f"node ids given more than once: {', '.join(duplicates)}")
    layout = PkiLayout(directory, tuple(node_list))
    if not overwrite:
        existing = [p for p in layout.files() if p.exists()]
        if existing:
            raise ConfigError(
                f"{directory}: a PKI already exists ({', '.join(p.name for p in existing)}); "
                "pass overwrite=True (--overwrite) to replace it - every node then needs its new "
                "certificate and the platform's new public key"
            )
    _ensure_directory(directory)

    ca_cert, ca_key = _make_ca(days)
    files: dict[Path, tuple[bytes, int]] = {
        layout.ca_cert: (ca_cert.public_bytes(serialization.Encoding.PEM), 0o644),
        layout.ca_key: (_key_pem(ca_key), 0o600),
    }
    for node in node_list:
        cert, key = _make_node_cert(node, ca_cert, ca_key, days)
        files[layout.node_cert(node)] = (cert.public_bytes(serialization.Encoding.PEM), 0o644)
        files[layout.node_key(node)] = (_key_pem(key), 0o600)
    signing = Ed25519PrivateKey.generate()
    files[layout.platform_signing_key] = (_key_pem(signing), 0o600)
    files[layout.platform_signing_pub] = (
        signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    _write_all(files)
    return layout


def _load_ca(layout: PkiLayout) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    for path in (layout.ca_cert, layout.ca_key):
        if not path.is_file():
            raise ConfigError(f"{path}: not found - run `xinyidai pki init` first")
    try:
        cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{layout.ca_cert}: not a PEM certificate ({exc})") from None
    try:
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    except (ValueError, TypeError):
        # The parser's message could quote key material; say only what is wrong.
        raise ConfigError(f"{layout.ca_key}: not an unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{layout.ca_key}: expected an ECDSA key, got {type(key).__name__}")
    if key.public_key() != cert.public_key():
        raise ConfigError(f"{layout.ca_key}: does not belong to the certificate {layout.ca_cert}")
    return cert, key


def issue_node_certificate(
    directory: Path,
    node_id: str,
    *,
    days: int = 365,
    overwrite: bool = False,
    hosts: Sequence[str] = (),
) -> PkiLayout:
    """Add a node (or a bank operator: an identity a bank lists under ``operators:``) to an
    existing CA: write ``<node_id>.pem`` and ``<node_id>.key``.

    ``hosts``: the host names / IP addresses the node is reached by, added to its SAN so a
    client can verify it by the name it dials (``host_names``). Refuses to replace an existing
    certificate unless ``overwrite=True`` (re-issuing changes the node's key, which its peers
    will notice only as a new certificate).
    """
    directory = Path(directory)
    _check_days(days)
    validate_node_id(node_id)
    if isinstance(hosts, str):
        raise ConfigError("hosts must be a list of host names, not one string")
    sans = host_names(hosts)
    layout = PkiLayout(directory, (node_id,))
    ca_cert, ca_key = _load_ca(layout)
    if not overwrite:
        existing = [p for p in (layout.node_cert(node_id), layout.node_key(node_id)) if p.exists()]
        if existing:
            raise ConfigError(
                f"{existing[0]}: node '{node_id}' already has a certificate; pass overwrite=True "
                "(--overwrite) to re-issue it"
            )
    cert, key = _make_node_cert(node_id, ca_cert, ca_key, days, sans)
    _write_all(
        {
            layout.node_cert(node_id): (cert.public_bytes(serialization.Encoding.PEM), 0o644),
            layout.node_key(node_id): (_key_pem(key), 0o600),
        }
    )
    return layout


# ------------------------------------------------------------------------------------------------
# Reading


def certificate_identity(pem: bytes) -> str:
    """The node id a certificate speaks for: its one dot-free SAN DNSName.

    The CN is deliberately ignored - hostname verification uses the SAN, so identity must too,
    or a certificate could claim one name to TLS and another to the application. SAN DNS names
    with a dot are the host names the node is reached by (``pki issue --host``) and never an
    identity; every dot-free DNS name is a candidate identity, so there must be exactly one and
    it must be a node id. Other SAN types (IP addresses, e-mail, URI) never name a node.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigError(f"not a PEM certificate ({exc})") from None
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ConfigError("certificate has no subjectAltName, so it names no node") from None
    names = san.get_values_for_type(x509.DNSName)
    if not names:
        raise ConfigError(
            "certificate has no SAN DNS name, so it names no node (other SAN types, such as "
            "an e-mail address, never name a node)"
        )
    labels = [n for n in names if "." not in n]
    if not labels:
        raise ConfigError(
            "certificate SAN DNS name is not a node id: its DNS names all contain a dot "
            "(host names); a node id is one dot-free DNS label"
        )
    if len(labels) != 1:
        raise ConfigError(
            "certificate must carry exactly one SAN DNS name that is a node id (dot-free), "
            f"found {len(labels)}"
        )
    problem = node_id_problem(labels[0])
    if problem is not None:
        raise ConfigError(f"certificate SAN DNS name is not a node id: {problem}")
    return labels[0]


@functools.lru_cache(maxsize=1024)
def _peer_identity(pem: bytes) -> tuple[str, str]:
    try:
        return certificate_identity(pem), ""
    except ConfigError as exc:
        return "", str(exc)


def peer_node_id(pem: bytes) -> str:
    """``certificate_identity`` of a peer's certificate as the TLS layer hands it over, cached by
    the certificate's bytes (a node sees a handful of peers, each on every call)."""
    node_id, problem = _peer_identity(bytes(pem))
    if problem:
        raise ConfigError(problem)
    return node_id


@functools.lru_cache(maxsize=1024)
def certificate_sha256(pem: bytes) -> str:
    """The SHA-256 fingerprint (hex, of the DER form) of a PEM certificate: what the platform's
    registry records at ``admit`` and a holder compares with the certificate a bank presents.
    "" for bytes that are not a certificate (the TLS layer only hands over parsed ones)."""
    try:
        cert = x509.load_pem_x509_certificate(bytes(pem))
    except ValueError:
        return ""
    return cert.fingerprint(hashes.SHA256()).hex()


@dataclass(frozen=True)
class CertificateInfo:
    """What ``xinyidai pki show`` prints about one certificate."""

    path: Path
    subject: str
    san: tuple[str, ...]
    not_after: dt.datetime
    is_ca: bool
    signed_by_ca: bool
    key_mode: int | None  # permission bits of the matching .key file, None if absent


def describe_pki(directory: Path) -> list[CertificateInfo]:
    """Describe the CA and every node certificate in ``directory``, checking each chains."""
    layout = PkiLayout(Path(directory))
    if not layout.ca_cert.is_file():
        raise ConfigError(f"{layout.ca_cert}: not found - is {directory} a PKI directory?")
    ca = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    out = []
    for path in [layout.ca_cert] + [layout.node_cert(n) for n in layout.node_ids()]:
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except ValueError:
            raise ConfigError(f"{path}: not a PEM certificate") from None
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(san.get_values_for_type(x509.DNSName)) + tuple(
                str(ip) for ip in san.get_values_for_type(x509.IPAddress)
            )
        except x509.ExtensionNotFound:
            names = ()
        try:
            cert.verify_directly_issued_by(ca)
            chained = True
        except (ValueError, TypeError, InvalidSignature):
            chained = False
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        key_path = path.with_suffix(".key")
        out.append(
            CertificateInfo(
                path=path,
                subject=cert.subject.rfc4514_string(),
                san=names,
                not_after=cert.not_valid_after_utc,
                is_ca=is_ca,
                signed_by_ca=chained,
                key_mode=key_path.stat().st_mode & 0o777 if key_path.exists() else None,
            )
        )
    return out


def load_platform_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the platform's Ed25519 consent-signing key, with an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: platform signing key not found")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_platform_public_key(path: Path) -> Ed25519PublicKey:
    """Load the platform's Ed25519 public key (PEM), with an error naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: platform public key not found")
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except ValueError:
        raise ConfigError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: expected an Ed25519 public key, got {type(key).__name__}")
    return key
