"""`xinyidai platform ...`: the platform operator's commands, run in the platform node's folder.

The platform is the only signer: ``grant`` signs an enterprise's authorisation with the key its
``node.yaml`` names and publishes it in the feed; ``revoke``, ``admit``, ``suspend`` and
``reinstate`` publish signed events the same way. Every holder following the platform applies
them within its poll interval (docs/platform.md). Each command is one audit record at the
platform.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.audit import AuditLog
from federation.errors import ConfigError
from federation.pki import certificate_identity
from parties.authorisation import PlatformSigner, utc_text
from parties.config import NodeConfig, load_node_config
from parties.platform.events import FeedError
from parties.platform.feed import FeedStore
from parties.platform.service import load_signing_key

app = typer.Typer(
    help="The platform node: issue and revoke authorisations, admit and suspend banks.",
    no_args_is_help=True,
)

NodeDirOption = Annotated[
    Path, typer.Option("--node-dir", help="The platform node's folder (holds node.yaml).")
]


def _config(node_dir: Path) -> NodeConfig:
    path = node_dir / "node.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (is {node_dir} a platform node's folder?)")
    config = load_node_config(path)
    if config.role != "platform":
        raise ConfigError(f"{path}: role is '{config.role}', not 'platform'")
    return config


def _open(node_dir: Path) -> tuple[NodeConfig, FeedStore, AuditLog]:
    config = _config(node_dir)
    feed = FeedStore.for_node_dir(config.node_dir, load_signing_key(config))
    return config, feed, AuditLog(config.resolved_audit_url, config.node_id)


def _say(text: str) -> None:
    Console(soft_wrap=True).print(escape(text), highlight=False)


def _fail(exc: FeedError) -> ConfigError:
    return ConfigError(str(exc))


@app.command("grant")
def grant(
    node_dir: NodeDirOption,
    uscc: Annotated[str, typer.Option("--uscc", help="Enterprise's unified social credit code.")],
    bank: Annotated[str, typer.Option("--bank", help="Node id of the bank being authorised.")],
    categories: Annotated[
        str, typer.Option("--categories", help="Comma-separated: tax,electricity,water,gas.")
    ],
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose of use.")] = "financing",
    days: Annotated[int, typer.Option("--days", min=1, help="Validity from now, in days.")] = 365,
) -> None:
    """Sign an enterprise's authorisation and publish it to every following holder."""
    config, feed, audit = _open(node_dir)
    signer = PlatformSigner(load_signing_key(config))
    now = time.time()
    signed = signer.issue(
        uscc=uscc,
        bank_id=bank,
        purpose=purpose,
        categories=[c.strip() for c in categories.split(",") if c.strip()],
        valid_from=now,
        valid_until=now + days * 86400,
    )
    try:
        (event,) = feed.grant(signed)
    except FeedError as exc:
        raise _fail(exc) from None
    audit.append(
        direction="local",
        peer=config.node_id,
        operation="platform.grant",
        subject=signed.auth.uscc,
        purpose=purpose,
        reason=f"authorisation {signed.auth.auth_id} for bank {bank}",
        counts={"seq": event.seq},
    )
    _say(
        f"authorisation {signed.auth.auth_id}: {signed.auth.uscc} -> {bank}, "
        f"{', '.join(signed.auth.categories)}, until {utc_text(signed.auth.valid_until)} "
        f"(feed seq {event.seq})"
    )


@app.command("revoke")
def revoke(
    auth_id: Annotated[str, typer.Argument(help="The authorisation id.")],
    node_dir: NodeDirOption,
    reason: Annotated[str, typer.Option("--reason", help="Who asked, and why.")],
) -> None:
    """Publish a signed revocation; every following holder stops using it."""
    config, feed, audit = _open(node_dir)
    try:
        event = feed.revoke(auth_id, reason=reason)
    except FeedError as exc:
        raise _fail(exc) from None
    if event is None:
        _say(f"authorisation {auth_id} was already revoked; nothing changed")
        return
    audit.append(
        direction="local",
        peer=config.node_id,
        operation="platform.revoke",
        reason=f"authorisation {auth_id}: {reason.strip()}"[:300],
        counts={"seq": event.seq},
    )
    _say(f"authorisation {auth_id} revoked (feed seq {event.seq})")


def _fingerprint(bank: str, cert: Path) -> str:
    try:
        pem = cert.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{cert}: cannot read: {exc.strerror}") from None
    identity = certificate_identity(pem)
    if identity != bank:
        raise ConfigError(f"{cert}: the certificate is node '{identity}', not '{bank}'")
    return x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()


def _institution(node_dir: Path, bank: str, status: str, reason: str, cert: Path | None) -> None:
    _config, feed, audit = _open(node_dir)
    fingerprint = _fingerprint(bank, cert) if cert is not None else None
    try:
        event = feed.set_institution(bank, status=status, reason=reason, cert_sha256=fingerprint)
    except FeedError as exc:
        raise _fail(exc) from None
    audit.append(
        direction="local",
        peer=bank,
        operation=f"platform.{event.kind}",
        reason=reason.strip()[:300],
        counts={"seq": event.seq},
    )
    _say(f"bank {bank}: {event.kind} (feed seq {event.seq})")


@app.command("admit")
def admit(
    bank: Annotated[str, typer.Argument(help="The bank's node id.")],
    node_dir: NodeDirOption,
    cert: Annotated[Path, typer.Option("--cert", help="The bank's node certificate (PEM).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (e.g. the admission decision).")] = (
        "admitted"
    ),
) -> None:
    """Admit a bank (its id and certificate fingerprint) to every following holder."""
    _institution(node_dir, bank, "admitted", reason, cert)


@app.command("suspend")
def suspend(
    bank: Annotated[str, typer.Argument(help="The bank's node id.")],
    node_dir: NodeDirOption,
    reason: Annotated[str, typer.Option("--reason", help="Why; holders name it in refusals.")],
) -> None:
    """Suspend a bank: every following holder refuses it, naming the reason."""
    _institution(node_dir, bank, "suspended", reason, None)


@app.command("reinstate")
def reinstate(
    bank: Annotated[str, typer.Argument(help="The bank's node id.")],
    node_dir: NodeDirOption,
    reason: Annotated[str, typer.Option("--reason", help="Why.")],
) -> None:
    """Lift a bank's suspension."""
    _institution(node_dir, bank, "reinstated", reason, None)


@app.command("status")
def status(node_dir: NodeDirOption) -> None:
    """The feed's head (checked: chain and signatures) and the institution registry."""
    config, feed, _audit = _open(node_dir)
    key = load_signing_key(config).public_key()
    try:
        n = feed.verify(key)
    except FeedError as exc:
        raise _fail(exc) from None
    seq, head = feed.head()
    _say(f"feed: {n} events, head seq {seq} ({head[:16]}...), chain and signatures verified")
    table = Table("bank", "status", "since", "reason", "certificate sha256")
    for inst in feed.institutions():
        table.add_row(
            escape(inst.node_id),
            inst.status,
            utc_text(inst.at),
            escape(inst.reason),
            inst.cert_sha256[:16] + "...",
        )
    Console().print(table)
