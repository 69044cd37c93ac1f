"""`xinyidai data ...`: generate the synthetic city and check a party's file before loading it.

``check`` exists so a data owner can fix a file in one pass before a node refuses it: it runs
exactly the loader's validation and lists every problem, exiting 1 when there is any.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.errors import ConfigError
from parties.data.loader import check_table
from parties.data.schema import ROLES, schema_for
from parties.data.synth import city_summary, synthesize_city, write_city

app = typer.Typer(
    help="Party data: generate a synthetic city, check a file against its party's schema.",
    no_args_is_help=True,
)


@app.command()
def synth(
    *,
    enterprises: Annotated[
        int, typer.Option("--enterprises", "-n", help="Number of enterprises in the city.")
    ] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same city).")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Output directory.")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
) -> None:
    """Generate bank, tax and utility tables of a synthetic city, plus city.json."""
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"--format must be csv or parquet, got {fmt!r}")
    if enterprises < 10:
        raise ConfigError(f"--enterprises must be at least 10, got {enterprises}")
    tables = synthesize_city(n_enterprises=enterprises, seed=seed)
    paths = write_city(tables, out, fmt=fmt, seed=seed, n_enterprises=enterprises)
    summary = city_summary(tables)
    console = Console()
    table = Table(title=f"Synthetic city: {enterprises:,} enterprises, seed {seed}")
    table.add_column("party")
    table.add_column("rows", justify="right")
    table.add_column("file")
    rows: dict[str, int] = summary["rows"]  # type: ignore[assignment]
    for role, n in rows.items():
        table.add_row(role, f"{n:,}", escape(str(paths[role])))
    console.print(table)
    overlaps: dict[str, int] = summary["overlaps"]  # type: ignore[assignment]
    console.print(
        "overlaps: " + ", ".join(f"{k} {v:,}" for k, v in overlaps.items()), highlight=False
    )
    console.print(f"default rate (bank): {summary['default_rate']:.2%}", highlight=False)


@app.command()
def check(
    file: Annotated[
        Path | None,
        typer.Argument(help="CSV or Parquet file to check (with --config: default the party's)."),
    ] = None,
    *,
    role: Annotated[
        str | None, typer.Option("--role", help=f"Schema to check against: {', '.join(ROLES)}.")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="An experiment YAML: check against its party's columns."),
    ] = None,
    party: Annotated[
        str | None,
        typer.Option("--party", help="With --config: which party (default: every party)."),
    ] = None,
) -> None:
    """Validate FILE against ROLE's schema, or an experiment's party files against the
    experiment's columns (--config); exit 1 if there is any problem."""
    if config is not None:
        _check_experiment_files(config, file=file, party=party)
        return
    if role is None or file is None:
        raise ConfigError("give FILE and --role ROLE, or --config EXPERIMENT.yaml")
    schema = schema_for(role)
    console = Console()
    if not file.exists():  # the file first: a table of "absent" columns would mislead
        console.print(f"[red]1 problem:[/]\n  {escape(f'{file.name}: file not found ({file})')}")
        raise typer.Exit(1)
    report = check_table(file, schema)
    summary = Table(title=f"{escape(str(file))} ({escape(role)})")
    summary.add_column("column")
    summary.add_column("missing", justify="right")
    summary.add_column("required")
    for c in schema.columns:
        if c.name in report.missing:
            shown = f"{report.missing[c.name]:,}"
        else:
            shown = "absent"
        summary.add_row(escape(c.name), shown, "yes" if c.required else "")
    console.print(summary)
    console.print(
        f"rows: {report.rows:,}   duplicate keys: {report.duplicate_keys:,}   "
        f"invalid keys: {report.invalid_keys:,}",
        highlight=False,
    )
    if report.ok:
        console.print("[green]OK[/]: the file loads cleanly.")
        return
    console.print(f"[red]{report.problem_count:,} problem(s):[/]")
    for p in report.problems:
        console.print("  " + escape(p), highlight=False, soft_wrap=True)
    raise typer.Exit(1)


def _check_experiment_files(config: Path, *, file: Path | None, party: str | None) -> None:
    """``data check --config``: the experiment's own checks (columns, types, labels, keys) of
    one party's file (``--party``, or the party FILE belongs to; FILE replaces its path) or of
    every party's file with the overlap between them."""
    from xinyidai.cli.experiment import print_check
    from xinyidai.experiment import load_experiment
    from xinyidai.experiment.check import ExperimentCheck, check_experiment, check_party

    cfg, _ = load_experiment(config)
    parties = cfg.parties()
    if file is not None and party is None:
        matching = [n for n, p in parties.items() if p.path == file.resolve()]
        if len(matching) != 1:
            raise ConfigError(
                f"{file} is {'no' if not matching else 'more than one'} party's file in "
                f"{config}; name the party with --party ({', '.join(parties)})"
            )
        party = matching[0]
    report: ExperimentCheck
    if party is None:
        report = check_experiment(cfg)
    else:
        if party not in parties:
            raise ConfigError(f"no party {party!r} in {config} ({', '.join(parties)})")
        if file is not None:
            parties[party].path = file.resolve()
        report = check_party(cfg, party)
    console = Console()
    print_check(console, report)
    if not report.ok:
        raise typer.Exit(1)
    console.print("[green]OK[/]: the file(s) load cleanly for this experiment.")
