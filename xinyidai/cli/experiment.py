"""``xinyidai experiment run CONFIG --out RESULT.json``: a federated experiment from one YAML file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

    from xinyidai.experiment import ExperimentConfig
    from xinyidai.experiment.check import ExperimentCheck

app = typer.Typer(help="Run federated experiments described by YAML configs.", no_args_is_help=True)


@app.command("check")
def check(
    config: Path = typer.Argument(..., help="experiment YAML (see experiments/*.yaml)"),
) -> None:
    """Check every party's file of CONFIG (columns, types, labels, keys, overlap) without
    starting anything; list every problem at once; exit 1 if there is any."""
    from rich.console import Console

    from xinyidai.experiment import load_experiment
    from xinyidai.experiment.check import check_experiment

    console = Console()
    cfg, _ = load_experiment(config)
    report = check_experiment(cfg)
    print_check(console, report)
    if not report.ok:
        raise typer.Exit(1)
    console.print(f"[green]OK[/]: {escape(cfg.name)} is ready to run.", highlight=False)


def print_check(console: Console, report: ExperimentCheck) -> None:
    """The check's findings, user text printed literally (a column '[b]x' stays '[b]x')."""
    from xinyidai.experiment.check import check_summary

    for line in check_summary(report):
        console.print(escape(line), highlight=False, soft_wrap=True)
    for note in report.notes:
        console.print("note: " + escape(note), highlight=False, soft_wrap=True)
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s):[/]", highlight=False)
        for problem in report.problems:
            console.print("  " + escape(problem), highlight=False, soft_wrap=True)


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

    from xinyidai.experiment import load_experiment, run_experiment
    from xinyidai.experiment.check import check_experiment
    from xinyidai.tracking import TrackingConfig

    console = Console(stderr=True)
    cfg, digest = load_experiment(config)
    checked = check_experiment(cfg)  # every problem before any node starts or bar prints
    for note in checked.notes:
        console.print("note: " + escape(note), highlight=False, soft_wrap=True)
    checked.raise_if_problems(str(config))
    where = (workdir or Path(".xinyidai") / "experiments" / cfg.name).resolve()
    trees = cfg.model.type == "secureboost"
    total, unit = _announce(console, cfg)
    with _progress_bar(console, unit) as bar:
        task = bar.add_task("training", total=total, start=False)

        def on_tree(t: int) -> None:
            bar.start_task(task)
            bar.update(task, completed=t + 1, description=f"tree {t} done")

        def on_epoch(epoch: int, loss: float) -> None:
            bar.start_task(task)
            bar.update(task, completed=epoch, description=f"epoch {epoch} (loss {loss:.4f})")

        result = run_experiment(
            cfg,
            config_sha256=digest,
            workdir=where,
            progress=_say(bar, task),
            on_tree=on_tree if trees else None,
            on_epoch=None if trees else on_epoch,
            track=track,
            tracking=TrackingConfig.resolve(mlflow_dir) if mlflow_dir else None,
            config_text=config.read_text(encoding="utf-8"),
            checked=checked,
        )
    result.write(out)
    _report(console, result.data, out)
    typer.echo(json.dumps({k: result.data[k] for k in ("test_auc", "train_seconds")}))


def _announce(console: Console, cfg: ExperimentConfig) -> tuple[int, str]:
    """Print what is about to run; (the progress bar's total, its unit)."""
    from xinyidai.experiment import SecureBoostModelConfig

    m = cfg.model
    if isinstance(m, SecureBoostModelConfig):
        what, total, unit = f"{m.n_trees} trees depth {m.max_depth}", m.n_trees, "trees"
    else:
        what, total, unit = f"{m.backend}, up to {m.max_iter} epochs", m.max_iter, "epochs"
    crypto = "CKKS" if getattr(m, "backend", "") == "ckks" else f"Paillier {cfg.crypto.key_bits}"
    console.print(
        f"[bold]{escape(cfg.name)}[/]: bank + {', '.join(cfg.holders)}; {m.type} {what}; "
        f"{crypto}; model {escape(str(m.name))}",
        highlight=False,
    )
    return total, unit


def _progress_bar(console: Console, unit: str) -> Progress:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} " + unit),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _say(bar: Progress, task: Any) -> Callable[[str], None]:
    """Progress messages above the bar (per-tree/epoch ones only move the bar); the bar's clock
    starts once the parties are aligned."""

    def say(message: str) -> None:
        if not message.startswith(("tree ", "epoch ")):
            bar.console.print(f"  {escape(message)}", highlight=False)
        if message.startswith("aligned"):
            bar.start_task(task)

    return say


def _report(console: Console, d: dict[str, Any], out: Path) -> None:
    console.print(
        f"test AUC federated [bold green]{d['test_auc']:.4f}[/]  bank-only "
        f"{d['bank_only_auc']:.4f}  centralised {d['centralised_auc']:.4f}; "
        f"KS {d['test_ks']:.4f}, Gini {d['test_gini']:.4f}; "
        f"trained in {d['train_seconds']:.1f} s ({d['n_train']} train / {d['n_test']} test)",
        highlight=False,
    )
    if "points_max_abs_diff" in d:
        console.print(
            f"scorecard points: max |federated - centralised| = {d['points_max_abs_diff']:g} "
            f"per enterprise; base points {d['base_points']:g}",
            highlight=False,
        )
    if d.get("iv"):
        top = ", ".join(f"{f['feature']} {f['iv']:.3f}" for f in d["iv"][:6])
        console.print(escape(f"IV by feature (holders' published names): {top}"), highlight=False)
    if d["mlflow"]:
        m = d["mlflow"]
        console.print(
            escape(
                f"registered: models:/{m['model_name']}/{m['version']} (alias challenger; "
                f"run {m['run_id']}; MLflow experiment {m.get('experiment', '')})"
            ),
            highlight=False,
        )
    console.print(escape(f"result: {out}"), highlight=False)
