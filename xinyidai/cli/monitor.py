"""``xinyidai monitor ...``: post-loan monitoring (贷后监测) at the bank (docs/monitoring.md).

``psi`` compares the points a model version served (the bank's score log) with its training
population; ``watch`` re-scores a watch list through the bank node and alerts on score drops and
on enterprises that can no longer be scored. Both run next to the bank node (they read its
``NODE_DIR``: the score log, the saved training population, the audit log).

Exit codes: 0 fine; 1 ``psi`` label ``shift`` or ``watch`` raised alerts (for cron jobs);
2 the question could not be answered (error printed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.errors import PeerError, XinyidaiError
from xinyidai.cli.errors import peer_error_text

app = typer.Typer(
    help="Post-loan monitoring: population stability and watch-list re-scoring at the bank.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The bank node's node.yaml.", exists=True)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _err(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(message)}")
    raise typer.Exit(2)


def _bank(config: Path) -> Any:
    from parties.config import load_node_config

    node = load_node_config(config)
    if node.role != "bank":
        _err(f"{config}: node '{node.node_id}' is a {node.role}, not a bank")
    return node


@app.command("psi")
def psi(
    name: Annotated[str, typer.Argument(help="Registered model name (or local job id).")],
    version: Annotated[str, typer.Argument(help="Version number, alias, or 'local'.")],
    config: ConfigOption,
    since: Annotated[str, typer.Option("--since", help="Window start, ISO 8601 (UTC).")] = "",
    until: Annotated[str, typer.Option("--until", help="Window end, ISO 8601 (UTC).")] = "",
    bins: Annotated[int, typer.Option("--bins", min=2, help="Quantile bins.")] = 10,
    as_json: JsonOption = False,
) -> None:
    """PSI of the points a model version served against its training population."""
    from parties.bank.monitoring import population_stability

    try:
        report = population_stability(
            _bank(config), name, version, since=since or None, until=until or None, bins=bins
        )
    except XinyidaiError as exc:
        _err(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=1))
    else:
        out = Console(highlight=False, soft_wrap=True)
        colour = {"stable": "green", "watch": "yellow", "shift": "red"}[report.label]
        out.print(
            f"model {report.model_name}/{report.model_version} (job {report.job_id}): "
            f"PSI [bold]{report.psi:.4f}[/] [{colour}]{report.label}[/]  "
            f"training {report.n_expected}, served {report.n_actual} enterprises "
            f"({report.n_served} scores), {report.since or 'beginning'} .. {report.until or 'now'}"
        )
        table = Table()
        for column in ("bin", "points", "training %", "served %", "PSI"):
            table.add_column(column)
        for b in report.bins:
            table.add_row(
                str(b["bin"]),
                f"({b['lower']:.1f}, {b['upper']:.1f}]",
                f"{100 * b['expected_pct']:.1f}",
                f"{100 * b['actual_pct']:.1f}",
                f"{b['psi']:.4f}",
            )
        out.print(table)
    if report.label == "shift":
        raise typer.Exit(1)


@app.command("watch")
def watch(
    watch_list: Annotated[
        Path, typer.Option("--list", help="Watch list: one USCC per line.", exists=True)
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="NAME (champion), NAME@ALIAS or NAME:VERSION.")
    ],
    drop: Annotated[
        float, typer.Option("--drop", min=0, help="Alert when points fall by more than this.")
    ],
    config: ConfigOption,
    purpose: Annotated[str, typer.Option("--purpose", help="Purpose of the request.")] = (
        "financing"
    ),
    as_json: JsonOption = False,
) -> None:
    """Re-score a watch list; alert on drops beyond --drop and on enterprises now unscorable."""
    from federation.audit import AuditLog
    from parties.bank.monitoring import read_watchlist, rescore_watchlist
    from parties.bank.score_log import ScoreLog
    from parties.node import operator_client

    node = _bank(config)
    try:
        codes = read_watchlist(watch_list)
        with (
            ScoreLog.for_config(node) as scores,
            AuditLog(node.resolved_audit_url, node.node_id) as audit,
            operator_client(node) as client,
        ):
            report = rescore_watchlist(
                client,
                model,
                codes,
                drop_threshold_points=drop,
                score_log=scores,
                audit=audit,
                purpose=purpose,
            )
    except PeerError as exc:
        _err(peer_error_text(exc, role="bank"))
        return
    except XinyidaiError as exc:
        _err(str(exc))
        return
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=1, ensure_ascii=False))
    else:
        out = Console(highlight=False, soft_wrap=True)
        table = Table(
            title=f"watch list, model {report.model_name}/{report.model_version}: "
            f"{len(report.alerts)} alert(s) of {len(report.items)} (drop > {drop:g} points)"
        )
        for column in ("uscc", "status", "points", "before", "change", "alert"):
            table.add_column(column)
        for i in report.items:
            table.add_row(
                i.uscc,
                i.status,
                "-" if i.points is None else f"{i.points:.1f}",
                "-"
                if i.previous_points is None
                else f"{i.previous_points:.1f} (v{i.previous_version})",
                "-" if i.change is None else f"{i.change:+.1f}",
                i.alert or "-",
            )
        out.print(table)
    if report.alerts:
        raise typer.Exit(1)
