"""`xinyidai pki ...`: make and inspect the development PKI (see ``federation.pki``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from federation.errors import ConfigError
from federation.pki import describe_pki, init_pki, issue_node_certificate

app = typer.Typer(
    help="Development PKI: federation CA, node certificates, platform key.", no_args_is_help=True
)

DirOption = Annotated[Path, typer.Option("--dir", help="PKI directory (e.g. .xinyidai/demo/pki).")]
DaysOption = Annotated[int, typer.Option("--days", min=1, help="Certificate validity in days.")]


def _print_files(console: Console, paths: list[Path]) -> None:
    for path in paths:
        mode = path.stat().st_mode & 0o777
        console.print(f"  {oct(mode)[2:]:>4}  {path}", highlight=False)


@app.command("init")
def init(
    directory: DirOption,
    nodes: Annotated[
        str, typer.Option("--nodes", help="Comma-separated node ids, e.g. bank,tax,utility.")
    ],
    days: DaysOption = 365,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing PKI (new CA: re-deploy all).")
    ] = False,
) -> None:
    """Create a CA, one certificate and key per node, and the platform's signing key pair."""
    node_ids = [n.strip() for n in nodes.split(",") if n.strip()]
    if not node_ids:
        raise ConfigError("--nodes: give at least one node id, e.g. --nodes bank,tax,utility")
    layout = init_pki(directory, node_ids, days=days, overwrite=overwrite)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"PKI for {', '.join(node_ids)} written to {directory}:", highlight=False)
    _print_files(console, layout.files())


ISSUE_HELP = "\n\n".join(
    (
        "Issue a certificate for one more node, or for a bank operator, from the existing CA.",
        "Identity: the certificate names one node by its one dot-free SAN DNS name, the id "
        "given by --node. Nodes calling a node check the server against that id (gRPC's "
        "ssl_target_name_override); --host adds the host names and IP addresses a client "
        "outside the federation dials, so it can check the server by host name instead.",
        "Operators: a bank serves Greet, Score, ScoreBatch and Verify only to the ids listed "
        "under `operators:` in its node.yaml (default: the bank's own id, i.e. the CLI on the "
        "bank's host with the bank's certificate). For each operator: issue a certificate with "
        "--node OPERATOR-ID, add OPERATOR-ID to `operators:`, and hand the operator the "
        "certificate, its key and ca.pem.",
    )
)


@app.command("issue", help=ISSUE_HELP)
def issue(
    directory: DirOption,
    node: Annotated[
        str,
        typer.Option(
            "--node", help="Node id to add (e.g. gas), or a bank operator's id (e.g. officer-li)."
        ),
    ],
    days: DaysOption = 365,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Re-issue an existing node's certificate.")
    ] = False,
    host: Annotated[
        list[str] | None,
        typer.Option(
            "--host",
            help="A host name (with a dot) or IP address the node is reached by, added to its "
            "certificate; repeatable. localhost adds 127.0.0.1 and ::1.",
        ),
    ] = None,
) -> None:
    """Issue a certificate for one more node or operator (help: ``ISSUE_HELP``)."""
    layout = issue_node_certificate(
        directory, node, days=days, overwrite=overwrite, hosts=host or []
    )
    console = Console(highlight=False, soft_wrap=True)
    extra = f" (also reached as {', '.join(host)})" if host else ""
    console.print(f"certificate for node '{node}'{extra}:", highlight=False, markup=False)
    _print_files(console, [layout.node_cert(node), layout.node_key(node)])


@app.command("show")
def show(directory: DirOption) -> None:
    """List certificates: subject, SAN, expiry, whether the CA signed it, key file mode."""
    infos = describe_pki(directory)
    table = Table(title=f"PKI in {directory}")
    for column in ("file", "subject", "SAN", "expires (UTC)", "signed by CA", "key mode"):
        table.add_column(column)
    for info in infos:
        mode = "-" if info.key_mode is None else oct(info.key_mode)[2:]
        if info.key_mode is not None and info.key_mode & 0o077:
            mode = f"[red]{mode} (too open)[/]"
        table.add_row(
            info.path.name + (" (CA)" if info.is_ca else ""),
            info.subject,
            ", ".join(info.san) or "-",
            info.not_after.strftime("%Y-%m-%d %H:%M"),
            "yes" if info.signed_by_ca else "[red]NO[/]",
            mode,
        )
    console = Console(width=160)
    console.print(table)
    layout_pub = directory / "platform_signing.pub"
    console.print(
        f"platform consent-signing key: {layout_pub if layout_pub.exists() else 'absent'}",
        highlight=False,
    )
