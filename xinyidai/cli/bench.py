"""``xinyidai bench ...``: benchmarks that need a running federation (experiments/).

``xinyidai bench scoring --out RESULT.json`` builds a demo federation of three node processes,
trains and registers a SecureBoost model over them, and times the bank's scoring service
(``experiments/bench_scoring.py``): ``Score`` p50/p99 and ``ScoreBatch`` enterprises per second.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer

from federation.errors import ConfigError

app = typer.Typer(help="Benchmarks over a local federation.", no_args_is_help=True)

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _experiment(name: str) -> ModuleType:
    """``experiments/<name>.py`` (a folder of scripts, not a package) as a module."""
    path = EXPERIMENTS / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"xinyidai_experiments_{name}", path)
    if spec is None or spec.loader is None or not path.is_file():
        raise ConfigError(f"{path} is missing: run from a checkout of the project")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@app.command("scoring")
def scoring(
    out: Annotated[Path, typer.Option("--out", help="Result JSON (a .md table beside it).")],
    enterprises: Annotated[int, typer.Option(min=200, help="Demo city size.")] = 4000,
    trees: Annotated[int, typer.Option(min=1, help="SecureBoost trees.")] = 50,
    depth: Annotated[int, typer.Option(min=1, max=6, help="Tree depth.")] = 4,
    requests: Annotated[int, typer.Option(min=10, help="Single Score requests timed.")] = 500,
    batches: Annotated[int, typer.Option(min=1, help="ScoreBatch calls timed.")] = 5,
    workdir: Annotated[
        Path | None, typer.Option(help="Keep the federation here (default: a temp folder).")
    ] = None,
) -> None:
    """Score p50/p99 (ms) and ScoreBatch throughput (enterprises/s) on three local nodes."""
    bench = _experiment("bench_scoring")
    result = bench.run(
        enterprises=enterprises,
        trees=trees,
        depth=depth,
        requests=requests,
        batches=batches,
        workdir=workdir,
        progress=typer.echo,
    )
    bench.save(result, out)
    typer.echo(bench.markdown(result))
