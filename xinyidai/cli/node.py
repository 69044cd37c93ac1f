"""``xinyidai node ...``: run a node process, ask a node how it is."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(help="Run and query federation nodes (bank, tax, utility).", no_args_is_help=True)


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="the node's node.yaml"),
) -> None:
    """Serve a node (mutual-TLS gRPC) until SIGTERM or Ctrl-C."""
    from parties.node import serve as run

    run(config)


@app.command()
def health(
    config: Path = typer.Option(..., "--config", "-c", help="node.yaml of the node to ask as"),
    peer: str = typer.Option(..., "--peer", help="node id of the peer to check"),
    timeout: float = typer.Option(5.0, help="seconds to wait"),
) -> None:
    """Check a peer's gRPC health over mutual TLS, as this node."""
    from parties.config import PeerConfig, load_node_config
    from parties.node import connect

    cfg = load_node_config(config)
    peers = {p.node_id: p for p in cfg.peers}
    if peer == cfg.node_id:
        target = PeerConfig(node_id=cfg.node_id, address=cfg.address, role=cfg.role)
    elif peer in peers:
        target = peers[peer]
    else:
        from federation.errors import ConfigError

        raise ConfigError(f"{config}: no peer '{peer}' (known: {', '.join(sorted(peers))})")
    with connect(cfg, target, audit=None) as client:
        status = client.health(timeout=timeout)
    Console().print(f"{peer} at {target.address}: {status}")
