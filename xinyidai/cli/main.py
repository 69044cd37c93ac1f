"""The ``xinyidai`` command: one module per command group, wired together here.

Errors a user can act on (``XinyidaiError``) print as one clear message and exit with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from federation.errors import XinyidaiError
from xinyidai.cli import (
    audit,
    compute,
    consent,
    data,
    demo,
    experiment,
    lineage,
    model,
    monitor,
    node,
    pki,
    platform,
    score,
    subject,
)

app = typer.Typer(
    name="xinyidai",
    help="Privacy-preserving joint credit modelling for SMEs (信易贷 joint modelling).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(pki.app, name="pki")
app.add_typer(data.app, name="data")
app.add_typer(consent.app, name="consent")
app.add_typer(audit.app, name="audit")
app.add_typer(node.app, name="node")
app.add_typer(experiment.app, name="experiment")
app.add_typer(subject.app, name="subject")
app.add_typer(model.app, name="model")
app.add_typer(score.app, name="score")
app.add_typer(monitor.app, name="monitor")
app.add_typer(platform.app, name="platform")
app.add_typer(compute.app, name="compute")
audit.app.command("lineage")(lineage.lineage)
app.command(name="demo")(demo.demo)


def main() -> None:
    try:
        app()
    except XinyidaiError as exc:
        # The message is user text (file and column names, a config's name rule): printed
        # literally, so '[b]default' or '^[a-z0-9][a-z0-9-]{0,62}$' is not read as markup.
        Console(stderr=True, soft_wrap=True).print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
