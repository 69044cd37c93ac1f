"""``xinyidai model ...``: the model registry - list, show and promote registered versions.

Training registers every model as a new version with the alias ``challenger``; a person moves
``champion`` with ``promote`` (who, when and why are kept on the version and in the model's
promotion history). Where the registry is: ``--config BANK/node.yaml`` (the store that bank node
serves from, chosen exactly as the node chooses it), ``--mlflow-dir`` (default
``.xinyidai/mlflow``), ``--tracking-uri``, or the ``MLFLOW_TRACKING_URI`` environment variable.
Why ``--config``: a promotion written to another store than the one the bank serves from would
never reach a score.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from xinyidai.tracking import TrackingConfig

app = typer.Typer(help="Registered models: list, show, promote.", no_args_is_help=True)

MlflowDirOption = Annotated[
    Path | None,
    typer.Option(
        "--mlflow-dir",
        help="Local MLflow store (mlflow.db + artifacts/); default .xinyidai/mlflow, or "
        "MLFLOW_TRACKING_URI when that is set.",
    ),
]
TrackingUriOption = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking server or database URI."),
]
NodeConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A bank's node.yaml: use the MLflow store that node serves from (its mlflow: "
        "setting, MLFLOW_TRACKING_URI, or NODE_DIR/mlflow).",
    ),
]
NameArg = Annotated[str, typer.Argument(help="Registered model name, e.g. credit-sbt.")]
VersionArg = Annotated[str, typer.Argument(help="Version number, or an alias (champion).")]


def tracking_config(
    mlflow_dir: Path | None, tracking_uri: str | None, node_config: Path | None = None
) -> TrackingConfig:
    """The store the options name (shared by ``xinyidai audit lineage``)."""
    from xinyidai.tracking import TrackingConfig

    if node_config is not None:
        if mlflow_dir is not None or tracking_uri is not None:
            raise typer.BadParameter(
                "give --config or --mlflow-dir/--tracking-uri, not both", param_hint="--config"
            )
        from parties.config import load_node_config

        return TrackingConfig.for_node(load_node_config(node_config)).tracking
    return TrackingConfig.resolve(mlflow_dir, tracking_uri=tracking_uri)


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


@app.command("list")
def list_(
    mlflow_dir: MlflowDirOption = None,
    tracking_uri: TrackingUriOption = None,
    config: NodeConfigOption = None,
) -> None:
    """Every registered model with its latest version and aliases."""
    from xinyidai.tracking import list_models

    store = tracking_config(mlflow_dir, tracking_uri, config)
    models = list_models(tracking=store)
    if not models:
        _console().print(f"no registered models in {escape(store.describe())}")
        return
    table = Table(title=f"registered models ({escape(store.describe())})")
    for column in ("name", "latest", "versions", "aliases", "description"):
        table.add_column(column, overflow="fold")
    for m in models:
        aliases = ", ".join(f"{a}→v{v}" for a, v in m["aliases"].items()) or "-"
        table.add_row(
            escape(m["name"]),
            escape(m["latest_version"]),
            str(m["versions"]),
            escape(aliases),
            escape(m["description"]),
        )
    Console(width=160).print(table)


@app.command("show")
def show(
    name: NameArg,
    version: VersionArg,
    mlflow_dir: MlflowDirOption = None,
    tracking_uri: TrackingUriOption = None,
    config: NodeConfigOption = None,
) -> None:
    """One version: aliases, run, part digests, promotion, parameters and final metrics."""
    from xinyidai.tracking import describe_version

    info = describe_version(
        name, version, tracking=tracking_config(mlflow_dir, tracking_uri, config)
    )
    console = _console()
    console.print(
        f"[bold]{escape(info['name'])} v{escape(info['version'])}[/] "
        f"({escape(', '.join(info['aliases']) or 'no alias')}) - {escape(info['status'])}, "
        f"registered {escape(info['created'])}"
    )
    console.print(f"  run: {escape(info['run_id'] or '-')}")
    console.print(f"  source: {escape(info['source'])}")
    for title in ("tags", "run_tags", "params", "metrics"):
        values = info[title]
        if not values:
            continue
        console.print(f"  {title.replace('_', ' ')}:")
        for key, value in values.items():
            console.print(f"    {escape(str(key))} = {escape(str(value))}")


@app.command("promote")
def promote(
    name: NameArg,
    version: Annotated[str, typer.Argument(help="Version number to make champion.")],
    by: Annotated[str, typer.Option("--by", help="Who promotes (kept on record).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (kept on record).")] = "",
    node_dir: Annotated[
        Path | None,
        typer.Option("--node-dir", help="Bank node directory: also record it in its audit.db."),
    ] = None,
    mlflow_dir: MlflowDirOption = None,
    tracking_uri: TrackingUriOption = None,
    config: NodeConfigOption = None,
) -> None:
    """Move alias champion to VERSION; print the previous champion."""
    from xinyidai.tracking import promote as run_promote

    store = tracking_config(mlflow_dir, tracking_uri, config)
    if node_dir is not None:
        from xinyidai.cli.audit import open_log

        with open_log(node_dir, None) as log:
            previous = run_promote(name, version, by=by, reason=reason, tracking=store, audit=log)
    else:
        previous = run_promote(name, version, by=by, reason=reason, tracking=store)
    target = version.strip().lstrip("vV")
    if previous == target:
        was = "it already was; the promotion is on record again"
    else:
        was = f"was v{previous}" if previous else "first champion"
    _console().print(f"{escape(name)} v{escape(target)} is now champion ({escape(was)})")
