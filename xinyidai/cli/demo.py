"""``xinyidai demo``: the whole federation on this machine in one command."""

from __future__ import annotations

from pathlib import Path

import typer

DEFAULT_WORKDIR = Path(".xinyidai") / "demo"


def demo(
    workdir: Path = typer.Option(
        DEFAULT_WORKDIR, "--workdir", help="where everything is made (git-ignored by default)"
    ),
    enterprises: int = typer.Option(2000, min=200, help="enterprises in the synthetic city"),
    seed: int = typer.Option(7, help="seed of the synthetic city"),
    trees: int = typer.Option(5, min=1, max=50, help="SecureBoost trees to train"),
    workers: int = typer.Option(2, min=1, max=64, help="worker processes per node (PSI, Paillier)"),
) -> None:
    """PKI, synthetic city, three node processes over mutual TLS, greetings, consent,
    PSI alignment, SecureBoost training and evaluation, audit."""
    from xinyidai.demo import run_demo

    raise typer.Exit(
        run_demo(
            workdir.resolve(), enterprises=enterprises, seed=seed, trees=trees, workers=workers
        )
    )
