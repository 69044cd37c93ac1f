"""How the CLI words an error that came back from a node, so each node is named once.

A node's status names the node that decided it: a node's own detail arrives without its name
(``PeerError`` names the peer), a relayed one starts with the node that decided it
(``holder 'tax': ...``, see ``federation.transport.calls.relay_failure``). The address of the
node the CLI called appears only when that node itself could not be reached (the gRPC carrier
adds it then, and only then).
"""

from __future__ import annotations

import re

import typer
from rich.console import Console
from rich.markup import escape

from federation.errors import PeerError
from federation.transport.calls import PeerRefused

_RELAYED = re.compile(r"^(bank|holder) '[^']+'")


def peer_error_text(exc: PeerError, *, role: str) -> str:
    """``refused (<code>): <node>: <why>`` or ``<STATUS>: <node>: <what>``, where ``<node>``
    is the node that decided (``holder 'tax'``) or, for the called node's own answer, ``<role>
    '<its id>'``."""
    detail = exc.detail if _RELAYED.match(exc.detail) else f"{role} '{exc.peer}': {exc.detail}"
    if isinstance(exc, PeerRefused):
        return f"refused ({exc.refusal}): {detail}"
    return f"{exc.code}: {detail}"


def fail(message: str) -> None:
    """Print ``error: <message>`` (literally: no rich markup from a peer's text) and exit 2."""
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[bold red]error:[/] {escape(message)}"
    )
    raise typer.Exit(2)
