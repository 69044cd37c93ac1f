"""`xinyidai subject ...`: an enterprise's view of a node - report, dispute, resolve, list.

The operator of a node runs these on the enterprise's behalf (信息主体权益): ``report`` shows
everything the node holds about one enterprise and everything on record about its use;
``dispute`` marks its data disputed (scoring and verification then answer "disputed");
``resolve`` records the credit repair. Every command that changes something, and every report
produced, is written to the node's audit log with the enterprise's USCC as subject.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.audit import AuditLog
from federation.errors import ConfigError
from federation.pki import load_platform_public_key
from parties.config import NodeConfig, load_node_config
from parties.consent import ConsentRegistry
from parties.data.loader import load_table
from parties.disputes import (
    DISPUTABLE_CATEGORIES,
    DisputeRecord,
    DisputeRegistry,
    normalise_uscc,
)
from parties.subject import subject_report

app = typer.Typer(
    help="An enterprise's view of this node: report what is held, dispute it, resolve disputes.",
    no_args_is_help=True,
)

NodeDirOption = Annotated[
    Path, typer.Option("--node-dir", help="Node directory (holds node.yaml).")
]
UsccArgument = Annotated[str, typer.Argument(help="The enterprise's unified social credit code.")]


def _operator() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _config(node_dir: Path) -> NodeConfig:
    if not node_dir.is_dir():
        raise ConfigError(f"{node_dir}: node directory not found")
    path = node_dir / "node.yaml"
    if not path.is_file():
        raise ConfigError(f"{path}: not found - is {node_dir} a node directory?")
    return load_node_config(path)


def _categories(config: NodeConfig) -> list[str]:
    """The data categories this node holds (what a dispute here can name)."""
    if config.data is None:
        return list(DISPUTABLE_CATEGORIES)
    held = config.data.table_schema(config.node_id).categories
    return [c for c in held if c in DISPUTABLE_CATEGORIES]


def _stores(config: NodeConfig) -> tuple[AuditLog, DisputeRegistry]:
    # The audit log first: a change that cannot be put on record must not happen at all.
    audit = AuditLog(config.resolved_audit_url, config.node_id)
    try:
        disputes = DisputeRegistry.for_config(config, audit=audit, categories=_categories(config))
    except BaseException:
        audit.close()
        raise
    return audit, disputes


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command("report")
def report(
    uscc: UsccArgument,
    node_dir: NodeDirOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    by: Annotated[
        str, typer.Option("--by", help="Who asked for the report (recorded in the audit log).")
    ] = "enterprise",
) -> None:
    """Everything this node holds about the enterprise, and everything on record about its use."""
    code = normalise_uscc(uscc)
    config = _config(node_dir)
    if config.data is None:
        raise ConfigError(f"node '{config.node_id}': no data table configured")
    schema = config.data.table_schema(config.node_id)
    table = load_table(config.data.path, schema)
    audit, disputes = _stores(config)
    consent = None
    try:
        if config.role == "holder" and config.platform_public_key is not None:
            consent = ConsentRegistry(
                config.resolved_consent_url,
                load_platform_public_key(config.platform_public_key),
                node_id=config.node_id,
            )
        result = subject_report(
            code,
            node_id=config.node_id,
            table=table,
            schema=schema,
            audit=audit,
            consent=consent,
            disputes=disputes,
            models_dir=config.node_dir / "models",
            alignments_dir=config.node_dir / "alignments",
            role=config.role,
        )
        audit.append(
            direction="local",
            peer=by.strip()[:255] or "enterprise",
            operation="subject.report",
            subject=code,
            counts={
                "fields": len(result.fields),
                "uses": len(result.uses),
                "requests": len(result.accesses),
            },
            reason="subject report produced for the enterprise",
        )
    finally:
        if consent is not None:
            consent.close()
        disputes.close()
        audit.close()
    if as_json:
        typer.echo(result.to_json())
        return
    result.render(Console(width=200, highlight=False))


@app.command("dispute")
def dispute(
    uscc: UsccArgument,
    node_dir: NodeDirOption,
    reason: Annotated[str, typer.Option("--reason", help="What the enterprise disputes, and why.")],
    category: Annotated[
        list[str] | None,
        typer.Option(
            "--category",
            help="Only data of this category (repeatable or comma-separated); default: all data.",
        ),
    ] = None,
    by: Annotated[
        str, typer.Option("--by", help="Who raised the dispute (recorded in the audit log).")
    ] = "enterprise",
) -> None:
    """Mark the enterprise's data here disputed until resolved (audited)."""
    code = normalise_uscc(uscc)
    categories = [c for item in category or [] for c in item.split(",") if c.strip()]
    audit, disputes = _stores(_config(node_dir))
    with audit, disputes:
        before = {d.dispute_id for d in disputes.list(uscc=code, open_only=True)}
        record = disputes.dispute(code, reason=reason, by=by, categories=categories or None)
    scope = ",".join(record.categories) or "all data"
    if record.dispute_id in before:
        typer.echo(f"dispute {record.dispute_id} is already open with this reason; nothing added")
    else:
        typer.echo(f"disputed {record.dispute_id}")
    typer.echo(f"  enterprise {record.uscc}: {scope} disputed: {record.reason}")


@app.command("resolve")
def resolve(
    dispute_id: Annotated[str, typer.Argument(help="Dispute id (32 hex digits).")],
    note: Annotated[str, typer.Option("--note", help="What was done (repaired, confirmed...).")],
    node_dir: NodeDirOption,
    by: Annotated[
        str | None, typer.Option("--by", help="Who resolved it; default: the current user.")
    ] = None,
    reject: Annotated[
        bool,
        typer.Option(
            "--reject",
            help="The data stands (the note says why); default: repaired (credit repair done).",
        ),
    ] = False,
) -> None:
    """Close a dispute as repaired (default) or rejected, with the note and who (audited)."""
    audit, disputes = _stores(_config(node_dir))
    with audit, disputes:
        record = disputes.resolve(
            dispute_id,
            note=note,
            by=by or _operator(),
            outcome="rejected" if reject else "repaired",
        )
        still_open = disputes.status(record.uscc)
    typer.echo(
        f"{record.outcome} {record.dispute_id} (enterprise {record.uscc}) by {record.resolved_by}"
    )
    if still_open.disputed:
        typer.echo(f"  {len(still_open.open)} other dispute(s) of this enterprise still open")


def _status(d: DisputeRecord) -> str:
    if d.is_open:
        return "[red]open[/]"
    return escape(f"{d.status} {_iso(d.resolved_at)} by {d.resolved_by}: {d.resolution_note}")


@app.command("list")
def list_(
    node_dir: NodeDirOption,
    uscc: Annotated[str | None, typer.Option("--uscc", help="Only this enterprise.")] = None,
    open_only: Annotated[bool, typer.Option("--open-only", help="Hide resolved ones.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List disputes, oldest first."""
    code = normalise_uscc(uscc) if uscc is not None else None
    audit, disputes = _stores(_config(node_dir))
    with audit, disputes:
        records = disputes.list(uscc=code, open_only=open_only)
    if as_json:
        for record in records:
            typer.echo(json.dumps(record.to_dict(), ensure_ascii=False, sort_keys=True))
        return
    table = Table(title=f"disputes at {escape(disputes.node_id)} ({len(records)})")
    for column in ("dispute id", "enterprise", "categories", "raised (UTC)", "by", "reason"):
        table.add_column(column, overflow="fold")
    table.add_column("status", overflow="fold")
    for d in records:
        table.add_row(
            d.dispute_id,
            d.uscc,
            ",".join(d.categories) or "all data",
            _iso(d.raised_at),
            escape(d.raised_by),
            escape(d.reason),
            _status(d),
        )
    Console(width=200).print(table)
