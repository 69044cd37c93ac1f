"""``xinyidai experiment run CONFIG --out RESULT.json``: a federated experiment from one YAML file."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Run federated experiments described by YAML configs.", no_args_is_help=True)


@app.command("run")
def run(
    config: Path = typer.Argument(..., help="experiment YAML (see experiments/*.yaml)"),
    out: Path = typer.Option(..., "--out", help="where to write the result JSON"),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="node directories (default .xinyidai/experiments/<name>)"
    ),
    track: bool = typer.Option(
        True, "--track/--no-track", help="log the job to MLflow and register its model"
    ),
    mlflow_dir: Path | None = typer.Option(
        None, "--mlflow-dir", help="MLflow store folder (default .xinyidai/mlflow)"
    ),
) -> None:
    """Start one node process per party, align by PSI, train, evaluate; write RESULT.json."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from federation.experiment import load_experiment, run_experiment
    from federation.tracking import TrackingConfig

    console = Console(stderr=True)
    cfg, digest = load_experiment(config)
    where = (workdir or Path(".xinyidai") / "experiments" / cfg.name).resolve()
    console.print(
        f"[bold]{cfg.name}[/]: bank + {', '.join(cfg.holders)}; {cfg.model.type} "
        f"{cfg.model.n_trees} trees depth {cfg.model.max_depth}; Paillier {cfg.crypto.key_bits}",
        highlight=False,
    )
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} trees"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("training", total=cfg.model.n_trees, start=False)

        def on_tree(t: int) -> None:
            bar.start_task(task)
            bar.update(task, completed=t + 1, description=f"tree {t} done")

        def say(message: str) -> None:
            if not message.startswith("tree "):
                bar.console.print(f"  {message}", highlight=False)
            if message.startswith("aligned"):
                bar.start_task(task)

        result = run_experiment(
            cfg,
            config_sha256=digest,
            workdir=where,
            progress=say,
            on_tree=on_tree,
            track=track,
            tracking=TrackingConfig.resolve(mlflow_dir) if mlflow_dir else None,
            config_text=config.read_text(encoding="utf-8"),
        )
    result.write(out)
    d = result.data
    console.print(
        f"test AUC federated [bold green]{d['test_auc']:.4f}[/]  bank-only "
        f"{d['bank_only_auc']:.4f}  centralised {d['centralised_auc']:.4f}; "
        f"trained in {d['train_seconds']:.1f} s ({d['n_train']} train / {d['n_test']} test)",
        highlight=False,
    )
    if d["mlflow"]:
        m = d["mlflow"]
        console.print(
            f"registered: models:/{m['model_name']}/{m['version']} (alias challenger; "
            f"run {m['run_id']})",
            highlight=False,
        )
    console.print(f"result: {out}", highlight=False)
    typer.echo(json.dumps({k: d[k] for k in ("test_auc", "train_seconds")}))
