"""``xinyidai audit lineage NAME VERSION``: the auditor's lineage report of a model version.

Reads MLflow (run, registry) and the audit logs of the given node directories, verifies each
log, and writes a Markdown and a standalone HTML report. A broken audit chain is reported in
the files and on the terminal, and the command then exits with code 1 (the report is still
written).
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from federation.errors import ConfigError
from xinyidai.cli.model import MlflowDirOption, TrackingUriOption, tracking_config

DEFAULT_OUT = Path(".xinyidai") / "lineage"


def lineage(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. credit-sbt.")],
    version: Annotated[str, typer.Argument(help="Version number, or an alias (champion).")],
    out: Annotated[
        Path, typer.Option("--out", help="Directory for the .md and .html reports.")
    ] = DEFAULT_OUT,
    node_dir: Annotated[
        list[Path] | None,
        typer.Option(
            "--node-dir",
            help="A node directory whose audit.db to read (repeat for bank, tax, utility...).",
        ),
    ] = None,
    mlflow_dir: MlflowDirOption = None,
    tracking_uri: TrackingUriOption = None,
) -> None:
    """Lineage report of a model version: run, data, consent, promotions, score requests.

    Traces the version to its run, config, code version, each party's data digest and consent
    snapshot, PSI job, crypto parameters, metrics, promotions and every score request served
    with it; writes NAME-vVERSION-lineage.md and .html into --out.
    """
    from federation.audit import AuditLog, sqlite_url
    from xinyidai.lineage import build_lineage, write_report

    dirs = list(node_dir or [])
    seen: dict[str, Path] = {}
    for directory in dirs:
        path = directory / "audit.db"
        if not path.is_file():
            raise ConfigError(f"{path}: no audit log here - is {directory} a node directory?")
        node_id = directory.resolve().name
        if node_id in seen:
            raise ConfigError(f"node '{node_id}' given twice ({seen[node_id]} and {directory})")
        seen[node_id] = directory
    console = Console(highlight=False, soft_wrap=True)
    with ExitStack() as stack:
        logs = {
            node_id: stack.enter_context(AuditLog(sqlite_url(d / "audit.db"), node_id))
            for node_id, d in seen.items()
        }
        report = build_lineage(
            name, version, audit_logs=logs, tracking=tracking_config(mlflow_dir, tracking_uri)
        )
    md_path, html_path = write_report(report, out)
    console.print(f"lineage of {escape(report.model_id)}: {escape(str(md_path))}")
    console.print(f"  and {escape(str(html_path))}")
    if not dirs:
        console.print("[yellow]no --node-dir given: score requests and audit trail not shown[/]")
    for finding in report.findings:
        console.print(f"  [yellow]finding:[/] {escape(finding)}")
    broken = report.broken_nodes
    for node in broken:
        detail = "; ".join(node.problems) or node.error or "verification failed"
        console.print(
            f"[bold red]audit chain BROKEN[/] at node '{escape(node.node_id)}': {escape(detail)}"
        )
    if broken:
        raise typer.Exit(1)
