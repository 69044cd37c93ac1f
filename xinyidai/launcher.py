"""Starting and stopping a local federation's node processes: one OS process per node, each
serving mutual-TLS gRPC on loopback, waited on until its health service says SERVING.

Why its own module: the demo, the experiment runner, the notebooks and the end-to-end tests all
start nodes the same way; none of them should need the demo to do it.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from federation.errors import ConfigError, PeerError, XinyidaiError
from federation.files import make_files_private, open_private_append, private_dir
from federation.pki import PkiLayout
from parties.config import PeerConfig

MARKER = ".xinyidai-demo"
"""A folder holding this file was made by the launcher and may be emptied by the next run."""


@dataclass
class Federation:
    """The files and processes of a local federation (the demo's, and the end-to-end tests')."""

    workdir: Path
    pki: PkiLayout
    configs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    bank_id: str = "bank"

    def node_dir(self, node_id: str) -> Path:
        return self.workdir / node_id


def free_ports(n: int) -> list[int]:
    """Ports the kernel says are free now (bound and released; a tiny race is acceptable locally)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def prepare_workdir(workdir: Path, *, made_by: str = "xinyidai demo") -> None:
    """Empty a previous run's folder; never delete a folder this tool did not make.

    The folder is made 0700 and this process's umask set to 077 (``make_files_private``): what
    the demo, the experiment runner or a test writes into it next - PKI, node folders, tables,
    configs, consent databases - is private from its first byte.
    """
    make_files_private()
    if workdir.exists() and any(workdir.iterdir()):
        if not (workdir / MARKER).exists():
            raise ConfigError(
                f"{workdir} exists and was not made by `{made_by}`; choose another --workdir"
            )
        shutil.rmtree(workdir)
    private_dir(workdir)
    os.chmod(workdir, 0o700)  # an empty folder the user made is ours now
    (workdir / MARKER).write_text(f"made by {made_by}; removed and remade by the next run\n")


_LAUNCHED: list[subprocess.Popen[bytes]] = []


@atexit.register
def _stop_launched() -> None:
    """Node processes this interpreter started and nobody stopped (a notebook cell that raised,
    an interrupted run) get SIGTERM when it exits, instead of serving on in the background."""
    for proc in _LAUNCHED:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)


def start_nodes(fed: Federation, *, timeout: float = 60.0, only: list[str] | None = None) -> None:
    """Start each node (or ``only`` these) as its own OS process; wait until SERVING over mTLS."""
    from parties.config import load_node_config
    from parties.node import connect

    chosen = {k: v for k, v in fed.configs.items() if only is None or k in only}
    for node_id, config in chosen.items():
        log = open_private_append(fed.node_dir(node_id) / "node.log")
        fed.processes[node_id] = subprocess.Popen(
            [sys.executable, "-m", "xinyidai.cli.main", "node", "serve", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        _LAUNCHED.append(fed.processes[node_id])
        log.close()
    bank = load_node_config(fed.configs[fed.bank_id])
    deadline = time.monotonic() + timeout
    for node_id, config_path in chosen.items():
        cfg = load_node_config(config_path)
        target = PeerConfig(node_id=node_id, address=cfg.address, role=cfg.role)
        with connect(bank, target, audit=None) as client:
            while True:
                proc = fed.processes[node_id]
                if proc.poll() is not None:
                    tail = (fed.node_dir(node_id) / "node.log").read_text(errors="replace")[-2000:]
                    raise XinyidaiError(
                        f"node '{node_id}' exited with code {proc.returncode} while starting:\n{tail}"
                    )
                try:
                    if client.health(timeout=1.0) == "SERVING":
                        break
                except PeerError:
                    pass
                if time.monotonic() > deadline:
                    raise XinyidaiError(
                        f"node '{node_id}' did not become healthy in {timeout:.0f}s"
                    )
                time.sleep(0.1)


def stop_nodes(fed: Federation, *, grace: float = 15.0) -> dict[str, int]:
    """SIGTERM every node, wait for a clean exit, SIGKILL what does not stop in time."""
    for proc in fed.processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = {}
    for node_id, proc in fed.processes.items():
        try:
            codes[node_id] = proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            codes[node_id] = proc.wait()
    return codes


@contextmanager
def running(fed: Federation) -> Iterator[Federation]:
    try:
        start_nodes(fed)
        yield fed
    finally:
        stop_nodes(fed)
