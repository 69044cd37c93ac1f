"""``xinyidai score ...``: the command-line client of the bank node's scoring service.

It speaks to the bank node named by ``--config`` (the bank's ``node.yaml``) as one of the bank's
operators (its certificate); the node resolves the model in its registry and asks the holders,
each of which checks the enterprise's authorisation, the purpose and disputes itself
(docs/scoring.md). Models are named ``NAME`` (its champion), ``NAME@ALIAS`` or ``NAME:VERSION``;
``--local`` serves the bank's ``NODE_DIR/models/<job>.json`` by job id without a registry.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from federation.errors import ConfigError, PeerError
from federation.transport.base import new_meta
from xinyidai.cli.errors import fail, peer_error_text

app = typer.Typer(
    help="Score enterprises, build whitelists, verify facts - through the bank node.",
    no_args_is_help=True,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The bank node's node.yaml.", exists=True)
]
ModelOption = Annotated[
    str,
    typer.Option("--model", "-m", help="NAME (champion), NAME@ALIAS or NAME:VERSION."),
]
LocalOption = Annotated[
    bool, typer.Option("--local", help="--model is a local job id (no registry).")
]
PurposeOption = Annotated[str, typer.Option("--purpose", help="Purpose of the request.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the reply as JSON.")]


def parse_model(model: str, *, local: bool = False) -> tuple[str, str]:
    """``NAME@ALIAS`` / ``NAME:VERSION`` / ``NAME`` (champion) -> (name, version or alias)."""
    model = model.strip()
    if local:
        return model, ""
    for sep in ("@", ":"):
        if sep in model:
            name, ref = model.split(sep, 1)
            if not name or not ref:
                raise ConfigError(
                    f"--model {model!r}: expected NAME{sep}{'ALIAS' if sep == '@' else 'VERSION'}"
                )
            return name, ref
    return model, "champion"


def _call(config: Path, method: str, request: Any) -> Any:
    from parties.config import load_node_config
    from parties.node import operator_client

    node = load_node_config(config)
    if node.role != "bank":
        raise ConfigError(f"{config}: node '{node.node_id}' is a {node.role}, not a bank")
    with operator_client(node) as client:
        try:
            return client.call(method, request)
        except PeerError as exc:
            fail(peer_error_text(exc, role="bank"))
    raise AssertionError("unreachable")


def _number(message: Any, name: str, form: str) -> str:
    """A score's number, or "-" when the reply carries none (the enterprise was not scored)."""
    return format(getattr(message, name), form) if message.HasField(name) else "-"


def _print_json(reply: Any) -> None:
    from parties.bank.scoring import reply_dict

    typer.echo(json.dumps(reply_dict(reply), indent=1, ensure_ascii=False))


@app.command("one")
def one(
    uscc: Annotated[str, typer.Argument(help="The enterprise's unified social credit code.")],
    model: ModelOption,
    config: ConfigOption,
    local: LocalOption = False,
    purpose: PurposeOption = "financing",
    as_json: JsonOption = False,
) -> None:
    """Score one enterprise: probability of default, points, reasons, each source's status."""
    from protos import bank_pb2

    name, ref = parse_model(model, local=local)
    reply = _call(
        config,
        "Score",
        bank_pb2.ScoreRequest(meta=new_meta(purpose), uscc=uscc, model_name=name, model_ref=ref),
    )
    if as_json:
        _print_json(reply)
        return
    out = Console(highlight=False, soft_wrap=True)
    sources = ", ".join(f"{s.node_id} {s.status}" for s in reply.sources)
    out.print(
        escape(
            f"{reply.uscc}  model {reply.model_name}/{reply.model_version} "
            f"({reply.model_family or 'secureboost'}, {reply.serving_mode or 'fast'})  sources: {sources}"
        )
    )
    if not reply.scored or not reply.HasField("points"):
        out.print(f"[yellow]no score[/]: no data at {escape(', '.join(reply.missing_sources))}")
        raise typer.Exit(1)
    out.print(
        f"points [bold]{reply.points:.1f}[/]  probability of default "
        f"{reply.probability_default:.4f}  reasons: "
        f"{escape(', '.join(reply.reason_categories) or '-')}"
    )


@app.command("batch")
def batch(
    model: ModelOption,
    config: ConfigOption,
    region: Annotated[
        str, typer.Option("--region", help="Region code prefix (USCC positions 3-8).")
    ] = "",
    industry: Annotated[
        str, typer.Option("--industry", help="GB/T 4754 industry section letter.")
    ] = "",
    threshold: Annotated[
        float, typer.Option("--threshold", help="Whitelist: points at least this.")
    ] = 600.0,
    limit: Annotated[int, typer.Option("--limit", min=0, help="At most this many (0: all).")] = 0,
    local: LocalOption = False,
    purpose: PurposeOption = "financing",
    as_json: JsonOption = False,
) -> None:
    """A ranked whitelist of the bank's authorised applicants in a region or industry."""
    from protos import bank_pb2

    if bool(region) == bool(industry):
        raise ConfigError("give exactly one of --region or --industry")
    name, ref = parse_model(model, local=local)
    reply = _call(
        config,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta(purpose),
            model_name=name,
            model_ref=ref,
            region=region,
            industry=industry,
            threshold=threshold if math.isfinite(threshold) else -1e308,
            limit=limit,
        ),
    )
    if as_json:
        _print_json(reply)
        return
    out = Console(highlight=False, soft_wrap=True)
    table = Table(
        title=escape(
            f"whitelist, model {reply.model_name}/{reply.model_version} "
            f"({reply.model_family or 'secureboost'}, {reply.serving_mode or 'fast'}): "
            f"{len(reply.enterprises)} of {reply.candidates} candidates ({reply.scored} scored)"
        )
    )
    for column in ("#", "uscc", "status", "points", "P(default)", "reasons"):
        table.add_column(column)
    for rank, e in enumerate(reply.enterprises, 1):
        table.add_row(
            f"{rank}=" if e.tie else str(rank),  # "=": equal points, ranked by USCC
            escape(e.uscc),
            escape(e.status),
            _number(e, "points", ".1f"),
            _number(e, "probability_default", ".4f"),
            escape(", ".join(e.reason_categories) or "-"),
        )
    out.print(table)
    if any(e.tie for e in reply.enterprises):
        out.print("=: tied on points with another enterprise; ties are ranked by USCC")
    if reply.excluded:
        out.print(
            escape(
                "not scored: " + ", ".join(f"{k} {v}" for k, v in sorted(reply.excluded.items()))
            )
        )


@app.command("verify")
def verify(
    uscc: Annotated[str, typer.Argument(help="The enterprise's unified social credit code.")],
    holder: Annotated[str, typer.Option("--holder", help="The holder to ask (tax, utility).")],
    predicate: Annotated[
        str,
        typer.Option(
            "--predicate",
            help='Predicate JSON, e.g. \'{"kind": "threshold", "column": "vat_paid_12m", '
            '"op": ">=", "value": 100000}\'.',
        ),
    ],
    config: ConfigOption,
    purpose: PurposeOption = "financing",
    as_json: JsonOption = False,
) -> None:
    """Ask one holder a yes/no question about one authorised enterprise (via the bank)."""
    from protos import bank_pb2

    reply = _call(
        config,
        "Verify",
        bank_pb2.BankVerifyRequest(
            meta=new_meta(purpose), holder=holder, uscc=uscc, predicate_json=predicate
        ),
    )
    if as_json:
        _print_json(reply)
        return
    typer.echo(f"{reply.holder}: {reply.answer}")
