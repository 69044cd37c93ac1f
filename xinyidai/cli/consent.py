"""`xinyidai consent ...`: grant, revoke and list enterprise authorisations at a data holder.

``grant`` is the offline / development path: it plays both sides, signing as the platform (with the
platform signing key) and stores as the holder, verifying with the holder's copy of the
platform public key when the node has one - so a wrong signing key is refused, as it would be
in production. Every grant and revocation is also recorded in the node's audit log.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.audit import AuditLog, sqlite_url
from federation.errors import ConfigError, XinyidaiError
from federation.pki import load_platform_public_key
from parties.authorisation import PlatformSigner
from parties.consent import ConsentRegistry

app = typer.Typer(
    help="Enterprise authorisations at a data holder: grant, revoke, list.", no_args_is_help=True
)

NodeDirOption = Annotated[
    Path, typer.Option("--node-dir", help="Node directory (holds consent.db and audit.db).")
]
PlatformKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--platform-key",
        help="Platform public key (PEM); default NODE_DIR/platform_signing.pub.",
    ),
]
UrlOption = Annotated[
    str | None, typer.Option("--url", help="Consent database URL instead of NODE_DIR/consent.db.")
]
AuditUrlOption = Annotated[
    str | None, typer.Option("--audit-url", help="Audit database URL instead of NODE_DIR/audit.db.")
]


def _node_dir(node_dir: Path) -> Path:
    if not node_dir.is_dir():
        raise ConfigError(f"{node_dir}: node directory not found")
    return node_dir


def _public_key(node_dir: Path, given: Path | None) -> Ed25519PublicKey | None:
    if given is not None:
        return load_platform_public_key(given)
    default = node_dir / "platform_signing.pub"
    return load_platform_public_key(default) if default.is_file() else None


def _registry(node_dir: Path, key: Ed25519PublicKey, url: str | None) -> ConsentRegistry:
    return ConsentRegistry(
        url or sqlite_url(node_dir / "consent.db"), key, node_id=node_dir.resolve().name
    )


def _audit(node_dir: Path, url: str | None) -> AuditLog:
    return AuditLog(url or sqlite_url(node_dir / "audit.db"), node_dir.resolve().name)


def _require_key(node_dir: Path, given: Path | None) -> Ed25519PublicKey:
    key = _public_key(node_dir, given)
    if key is None:
        raise ConfigError(
            f"{node_dir / 'platform_signing.pub'}: not found - copy the platform public key there "
            "or pass --platform-key PATH"
        )
    return key


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("grant")
def grant(
    node_dir: NodeDirOption,
    signing_key: Annotated[
        Path, typer.Option("--signing-key", help="Platform Ed25519 signing key (PEM).")
    ],
    uscc: Annotated[str, typer.Option("--uscc", help="Enterprise's unified social credit code.")],
    bank: Annotated[str, typer.Option("--bank", help="Node id of the bank being authorised.")],
    categories: Annotated[
        str, typer.Option("--categories", help="Comma-separated: tax,electricity,water,gas.")
    ],
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose of use.")] = "financing",
    days: Annotated[int, typer.Option("--days", min=1, help="Validity from now, in days.")] = 365,
    platform_key: PlatformKeyOption = None,
    url: UrlOption = None,
    audit_url: AuditUrlOption = None,
) -> None:
    """OFFLINE / DEV ONLY: sign as the platform and store at this holder (audited).

    In a deployment the platform node is the only signer: `xinyidai platform grant` publishes
    the authorisation and every following holder applies it (docs/platform.md)."""
    node_dir = _node_dir(node_dir)
    signer = PlatformSigner.from_file(signing_key)
    key = _public_key(node_dir, platform_key) or signer.public_key
    now = time.time()
    signed = signer.issue(
        uscc=uscc,
        bank_id=bank,
        purpose=purpose,
        categories=[c.strip() for c in categories.split(",") if c.strip()],
        valid_from=now,
        valid_until=now + days * 86400,
    )
    auth = signed.auth
    # Open the audit log first: a grant that cannot be recorded must not happen at all.
    with _audit(node_dir, audit_url) as log, _registry(node_dir, key, url) as registry:
        record = functools.partial(
            log.append,
            direction="local",
            peer=auth.bank_id,
            operation="consent.grant",
            purpose=auth.purpose,
            subject=auth.uscc,
        )
        try:
            registry.grant(signed)
        except XinyidaiError as exc:  # a refused grant is on record too
            record(decision="deny", reason=str(exc)[:500])
            raise
        record(
            reason=(
                f"auth {auth.auth_id}: enterprise {auth.uscc} authorises "
                f"{','.join(auth.categories)} until {_iso(auth.valid_until)} UTC"
            )
        )
    typer.echo(f"granted {auth.auth_id}")
    typer.echo(
        f"  enterprise {auth.uscc} -> bank {auth.bank_id}, purpose {auth.purpose}, "
        f"categories {','.join(auth.categories)}, valid until {_iso(auth.valid_until)} UTC"
    )


@app.command("revoke")
def revoke(
    node_dir: NodeDirOption,
    auth_id: Annotated[str, typer.Argument(help="Authorisation id (32 hex digits).")],
    reason: Annotated[str, typer.Option("--reason", help="Who asked and why.")],
    platform_key: PlatformKeyOption = None,
    url: UrlOption = None,
    audit_url: AuditUrlOption = None,
) -> None:
    """Revoke an authorisation from now on (audited)."""
    node_dir = _node_dir(node_dir)
    key = _require_key(node_dir, platform_key)
    with _audit(node_dir, audit_url) as log, _registry(node_dir, key, url) as registry:
        before = registry.get(auth_id)
        if before.revoked_at is not None:
            typer.echo(
                f"{auth_id} was already revoked at {_iso(before.revoked_at)} UTC "
                f"({before.revoke_reason}); nothing changed"
            )
            return
        registry.revoke(auth_id, reason=reason)
        log.append(
            direction="local",
            peer=before.auth.bank_id,
            operation="consent.revoke",
            purpose=before.auth.purpose,
            subject=before.auth.uscc,
            reason=f"auth {auth_id}: enterprise {before.auth.uscc}: {reason.strip()}",
        )
    typer.echo(f"revoked {auth_id}")


@app.command("list")
def list_(
    node_dir: NodeDirOption,
    uscc: Annotated[str | None, typer.Option("--uscc", help="Only this enterprise.")] = None,
    bank: Annotated[str | None, typer.Option("--bank", help="Only this bank.")] = None,
    active_only: Annotated[
        bool, typer.Option("--active-only", help="Hide revoked/expired/invalid ones.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    platform_key: PlatformKeyOption = None,
    url: UrlOption = None,
) -> None:
    """List stored authorisations with their current status (signatures re-verified)."""
    node_dir = _node_dir(node_dir)
    if url is None and not (node_dir / "consent.db").is_file():
        raise ConfigError(f"{node_dir / 'consent.db'}: no consent registry at this node")
    with _registry(node_dir, _require_key(node_dir, platform_key), url) as registry:
        records = registry.list(uscc=uscc, bank_id=bank, include_inactive=not active_only)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record.to_dict(), ensure_ascii=False, sort_keys=True))
        return
    table = Table(title=f"authorisations at {node_dir.resolve().name} ({len(records)})")
    for column in (
        "auth id",
        "enterprise",
        "bank",
        "purpose",
        "categories",
        "valid until (UTC)",
        "status",
    ):
        table.add_column(column, overflow="fold")
    colours = {"active": "green", "revoked": "red", "invalid": "bold red"}
    for r in records:
        status = r.status
        if r.status == "revoked":
            status = f"revoked {_iso(r.revoked_at)} ({r.revoke_reason})"
        elif r.status == "invalid":
            status = f"INVALID: {r.problem}"
        colour = colours.get(r.status, "yellow")
        table.add_row(
            r.auth.auth_id,
            r.auth.uscc,
            r.auth.bank_id,
            r.auth.purpose,
            ",".join(r.auth.categories),
            _iso(r.auth.valid_until),
            f"[{colour}]{escape(status)}[/]",
        )
    Console(width=200).print(table)
