"""``xinyidai node ...``: run a node process, ask a node how it is."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

app = typer.Typer(help="Run and query federation nodes (bank, tax, utility).", no_args_is_help=True)


@app.command()
def serve(
    config: Path = typer.Option(..., "--config", "-c", help="the node's node.yaml"),
) -> None:
    """Serve a node (mutual-TLS gRPC) until SIGTERM or Ctrl-C; a platform with ``portal:`` in
    its node.yaml also serves the web portal, in the same process, on its own port."""
    from parties.config import load_node_config
    from parties.node import serve as run

    cfg = load_node_config(config)
    if cfg.role == "platform" and cfg.portal is not None:
        run(config, attach=_start_portal)
    else:
        run(config)


def _start_portal(node: Any) -> Callable[[], None]:
    """Start the portal next to the platform node's gRPC service; return its stop."""
    from xinyidai.portal.server import PortalServer, portal_context, write_portal_state

    server = PortalServer(portal_context(node.config, node))
    server.start()
    write_portal_state(node.config.node_dir, server.url)
    node.audit.append(
        direction="local",
        peer=node.config.node_id,
        operation="portal.start",
        reason=f"portal on {server.url}",
        counts={"port": server.port},
    )

    def stop() -> None:
        server.stop()
        (node.config.node_dir / "portal.url").unlink(missing_ok=True)

    return stop


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
