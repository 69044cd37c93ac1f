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
) -> None:
    """PKI, synthetic city, three node processes over mutual TLS, greetings, consent, audit."""
    from federation.demo import run_demo

    raise typer.Exit(run_demo(workdir.resolve(), enterprises=enterprises, seed=seed))
