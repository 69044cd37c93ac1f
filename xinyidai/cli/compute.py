"""``xinyidai compute ...``: where a node's heavy work runs, checked before a job needs it."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="A node's compute engine (local process pool or the party's Ray cluster).",
    no_args_is_help=True,
)


@app.command()
def check(
    config: Path = typer.Option(..., "--config", "-c", help="the node's node.yaml"),
    values: int = typer.Option(
        2048, min=1, max=1_000_000, help="values in the encryption round trip"
    ),
) -> None:
    """Say which engine the node would use and its CPUs, and run a short encryption round trip
    on it (a throwaway 2048-bit key, never the node's)."""
    from federation import compute as engines
    from parties.compute import check_compute
    from parties.config import load_node_config

    cfg = load_node_config(config)
    console = Console(soft_wrap=True, highlight=False)
    try:
        found = check_compute(cfg, values=values)
    finally:
        engines.shutdown()
    for line in found.lines():
        console.print(escape(line))
    if not found.correct:
        raise typer.Exit(2)
