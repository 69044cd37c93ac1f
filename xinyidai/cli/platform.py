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
from parties.data import uscc as uscc_codes
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
    """The feed's head (checked: chain and signatures) and the institution registry; in a bank's
    (or holder's) folder, what it has applied of the feed: its status, the authorisations
    granted to it and the whitelists pushed to it (a bank)."""
    follower = _follower_config(node_dir)
    if follower is not None:
        _follower_status(follower)
        return
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


def _follower_config(node_dir: Path) -> NodeConfig | None:
    """The node's config when ``node_dir`` is a bank's or holder's folder (None: a platform's,
    or no node.yaml - ``_config`` names that problem)."""
    path = node_dir / "node.yaml"
    if not path.is_file():
        return None
    config = load_node_config(path)
    return None if config.role == "platform" else config


def _follower_status(config: NodeConfig) -> None:
    """A following node's copy of the feed, read-only. For the operator's view only: holders
    stay the authority on every authorisation (docs/platform.md)."""
    from parties.platform.follower import FollowState

    path = config.node_dir / FollowState.FILE
    if config.platform is None:
        raise ConfigError(
            f"{config.node_dir / 'node.yaml'}: no 'platform:' section; node "
            f"'{config.node_id}' does not follow a platform (dev mode)"
        )
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; node '{config.node_id}' has not applied any of the platform's "
            "feed yet (start it with `xinyidai node serve`)"
        )
    state = FollowState(FollowState.node_dir_url(config.node_dir))
    try:
        seq, head = state.head()
        banks = state.banks()
        own = state.own_authorisations() if config.role == "bank" else []
        pushes = state.whitelists() if config.role == "bank" else []
    finally:
        state.close()
    _say(
        f"{config.role} {config.node_id}: platform feed applied up to seq {seq} ({head[:16]}...) "
        f"from {config.platform.node_id} at {config.platform.address}"
    )
    if config.role == "bank":
        me = banks.get(config.node_id)
        if me is None:
            _say(f"status: not admitted (not in the platform's registry as of seq {seq})")
        else:
            _say(
                f"status: {me.status} since {utc_text(me.at)} ({me.reason}); certificate "
                f"sha256 {me.cert_sha256[:16]}..."
            )
        now = time.time()
        live = sum(a.status(now) == "live" for a in own)
        _say(f"authorisations granted to this bank: {len(own)} ({live} live)")
        for a in own:  # one line each, whole ids (a table would cut them on a narrow terminal)
            revoked = f" {utc_text(a.revoked_at)}" if a.revoked_at is not None else ""
            _say(
                f"  {a.auth_id}  {a.uscc}  {','.join(a.categories)}  until "
                f"{utc_text(a.valid_until)}  {a.status(now)}{revoked}"
            )
        _say(f"whitelist pushes: {len(pushes)}")
        for w in pushes:
            _say(
                f"  seq {w.seq}: region {w.region}, industry {w.industry}, {len(w.usccs)} "
                f"enterprise(s), {utc_text(w.at)}" + (f": {w.note}" if w.note else "")
            )
        return
    table = Table("bank", "status", "since", "reason")
    for b in sorted(banks.values(), key=lambda b: b.node_id):
        table.add_row(escape(b.node_id), b.status, utc_text(b.at), escape(b.reason))
    Console().print(table)


def _whitelist_codes(file: Path | None, codes: list[str]) -> list[str]:
    """USCCs from ``--uscc`` and/or a file (CSV with a ``uscc`` column, or one code a line)."""
    out = [c.strip() for c in codes if c.strip()]
    if file is None:
        return out
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not UTF-8 text") from None
    lines = [line.strip() for line in text.splitlines()]
    header = [h.strip().lower() for h in lines[0].split(",")] if lines else []
    column = header.index("uscc") if "uscc" in header else None
    first = 2 if column is not None else 1
    for number, line in enumerate(lines[first - 1 :], start=first):
        if not line:
            continue
        fields = line.split(",")
        if column is not None and len(fields) <= column:
            raise ConfigError(f"{file}, row {number}: no 'uscc' field")
        code = fields[column if column is not None else 0].strip()
        why = uscc_codes.problem(uscc_codes.normalise(code))
        if why is not None:
            raise ConfigError(f"{file}, row {number}: uscc {code[:20]!r}: {why}")
        out.append(code)
    return out


@app.command("whitelist")
def whitelist(
    node_dir: NodeDirOption,
    bank: Annotated[str, typer.Option("--bank", help="Node id of the bank it is pushed to.")],
    region: Annotated[str, typer.Option("--region", help="Region code, e.g. 5101 (Chengdu).")],
    industry: Annotated[
        str, typer.Option("--industry", help="GB/T 4754 industry section, e.g. C (or C13).")
    ],
    file: Annotated[
        Path | None,
        typer.Option("--file", help="CSV with a 'uscc' column, or one USCC per line."),
    ] = None,
    uscc: Annotated[list[str] | None, typer.Option("--uscc", help="A USCC (repeatable).")] = None,
    note: Annotated[str, typer.Option("--note", help="What the list is for.")] = "",
) -> None:
    """Push a whitelist (推送白名单) of enterprises by region and industry to one bank."""
    codes = _whitelist_codes(file, list(uscc or []))
    if not codes:
        raise ConfigError("give the enterprises with --file and/or --uscc")
    _config, feed, audit = _open(node_dir)
    try:
        event = feed.whitelist(bank, region=region, industry=industry, usccs=codes, note=note)
    except FeedError as exc:
        raise _fail(exc) from None
    count = len(event.content()["usccs"])
    audit.append(
        direction="local",
        peer=bank,
        operation="platform.whitelist",
        reason=f"region {region}, industry {industry}: {count} enterprise(s)",
        counts={"seq": event.seq, "enterprises": count},
    )
    _say(
        f"whitelist of {count} enterprise(s), region {region}, industry {industry}, pushed to "
        f"bank {bank} (feed seq {event.seq})"
    )


@app.command("stats")
def stats(node_dir: NodeDirOption) -> None:
    """Statistics for the auditor: per bank, authorisations granted, live and revoked, and
    whitelist pushes; per following node, the last audit head witnessed; per bank and holder,
    the requests the holder reported answering and refusing. Counts only."""
    from parties.platform.stats import AccessStore, platform_statistics

    config, feed, audit = _open(node_dir)
    with AccessStore.for_node_dir(config.node_dir) as store:
        result = platform_statistics(
            feed, audit, nodes=[p.node_id for p in config.peers], access=store
        )
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result.events.items())) or "none"
    _say(f"feed at seq {result.feed_seq} ({kinds})")
    table = Table("bank", "status", "grants", "live", "revoked", "whitelist pushes", "listed")
    for b in result.banks:
        table.add_row(
            escape(b.bank),
            b.status or "not admitted",
            str(b.grants),
            str(b.live),
            str(b.revoked),
            str(b.whitelist_pushes),
            str(b.whitelisted),
        )
    Console().print(table)
    witnessed = Table("node", "last witnessed head", "at")
    for w in result.witnesses:
        head = "never" if w.head_seq is None else f"{w.head_seq}:{w.head_hash}..."
        witnessed.add_row(escape(w.node), head, utc_text(w.at) if w.at is not None else "-")
    Console().print(witnessed)
    access = Table(
        "bank",
        "holder",
        "operation",
        "allowed today/7d/all",
        "refused today/7d/all",
        "enterprises today/7d/all",
        title="access reported by holders",
    )
    for a in result.access:
        access.add_row(
            escape(a.bank),
            escape(a.holder),
            escape(a.operation),
            f"{a.today.allowed}/{a.week.allowed}/{a.total.allowed}",
            f"{a.today.refused}/{a.week.refused}/{a.total.refused}",
            f"{a.today.enterprises}/{a.week.enterprises}/{a.total.enterprises}",
        )
    Console().print(access if result.access else "access reported by holders: none yet")


account_app = typer.Typer(
    help="The portal's embedded accounts (enterprises by USCC, auditors, bank operators).",
    no_args_is_help=True,
)
app.add_typer(account_app, name="account")


def _read_password() -> str:
    """From a prompt (asked twice) on a terminal, else the first line of stdin; never argv."""
    import getpass
    import sys

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise ConfigError("the two passwords differ; nothing created")
        return first
    return sys.stdin.readline().rstrip("\r\n")


@account_app.command("create")
def account_create(
    node_dir: NodeDirOption,
    uscc: Annotated[
        str | None, typer.Option("--uscc", help="An enterprise's account: its USCC.")
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="An auditor's or operator's login name.")
    ] = None,
    kind: Annotated[
        str, typer.Option("--kind", help="enterprise | auditor | operator.")
    ] = "enterprise",
    bank: Annotated[str, typer.Option("--bank", help="operator: the bank's node id.")] = "",
) -> None:
    """Enrol a portal account; the password is read from a prompt or stdin (never argv)."""
    from parties.platform.accounts import AccountError, AccountStore

    if (uscc is None) == (name is None):
        raise ConfigError("give --uscc (an enterprise) or --name (an auditor or operator)")
    if uscc is not None and kind != "enterprise":
        raise ConfigError("--uscc makes an enterprise account; use --name for other kinds")
    if name is not None and kind == "enterprise":
        raise ConfigError("an enterprise account is keyed by --uscc")
    config = _config(node_dir)
    login = uscc if uscc is not None else str(name)
    store = AccountStore.for_node_dir(config.node_dir)
    audit = AuditLog(config.resolved_audit_url, config.node_id)
    try:
        account = store.create(login, _read_password(), kind=kind, bank_id=bank)
    except AccountError as exc:
        raise ConfigError(str(exc)) from None
    finally:
        store.close()
    audit.append(
        direction="local",
        peer=config.node_id,
        operation="portal.account",
        subject=account.login if account.kind == "enterprise" else "",
        reason=f"{account.kind} account {account.login} created"
        + (f" for bank {account.bank_id}" if account.bank_id else ""),
    )
    audit.close()
    _say(f"{account.kind} account {account.login} created")


@account_app.command("list")
def account_list(node_dir: NodeDirOption) -> None:
    """The portal's accounts (never their password hashes)."""
    from parties.platform.accounts import AccountStore

    config = _config(node_dir)
    store = AccountStore.for_node_dir(config.node_dir)
    table = Table("login", "kind", "bank", "created")
    for a in store.list():
        table.add_row(escape(a.login), a.kind, escape(a.bank_id), utc_text(a.created_at))
    store.close()
    Console().print(table)
