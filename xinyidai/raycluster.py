"""A real Ray cluster on this host, for tests and benchmarks: a head and worker nodes on loopback.

Why here and not in the engine: production clusters are the operator's (``ray start`` on their
hosts, KubeRay...); a node only connects to one. Tests and ``experiments/bench_scale.py`` need
the same thing on one machine — each "host" a ``ray start --block`` process with its own CPU
limit, in its own session so that stopping it stops its raylet, GCS and workers with it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from federation.errors import ConfigError
from federation.usage import descendants


def _ray_cli() -> str:
    cli = Path(sys.executable).with_name("ray")
    if not cli.exists():
        raise ConfigError("Ray is not installed in this environment: pip install 'xinyidai[ray]'")
    return str(cli)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def process_title(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


@dataclass
class LocalRayCluster:
    """``LocalRayCluster.start(cpus=[1, 1])``: a head with 1 CPU and one worker node with 1 CPU.

    ``address`` is what a node.yaml's ``compute.address`` takes. ``stop()`` ends every process
    of the cluster; ``kill_head()`` ends only the head (its GCS, raylet and workers)."""

    port: int
    temp_dir: Path
    cpus: list[int]
    client_port: int = 0
    object_store_mb: int = 128
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        """The head's Ray Client address (``ray://``), for a driver outside the cluster."""
        return f"ray://127.0.0.1:{self.client_port}"

    @classmethod
    def start(
        cls, cpus: list[int], *, port: int | None = None, object_store_mb: int = 128
    ) -> LocalRayCluster:
        # Short: Ray's unix socket paths live under it (107-byte limit).
        temp = Path(tempfile.mkdtemp(prefix="xr", dir="/tmp"))
        cluster = cls(
            port=port or _free_port(),
            client_port=_free_port(),  # several heads on one host: never Ray's default 10001
            temp_dir=temp,
            cpus=list(cpus),
            object_store_mb=object_store_mb,
        )
        try:
            cluster.start_head()
            for n in cpus[1:]:
                cluster.add_node(n)
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Workers import the kernels by name: the project must be importable from them.
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        return env

    def _launch(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = open(self.temp_dir / log_name, "wb")
        proc = subprocess.Popen(
            [_ray_cli(), "start", "--block", "--disable-usage-stats", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self._env(),
            start_new_session=True,
        )
        log.close()
        return proc

    def start_head(self) -> None:
        """Start the head (again, after ``kill_head``: same port, so nodes reconnect)."""
        proc = self._launch(
            [
                "--head",
                f"--port={self.port}",
                f"--ray-client-server-port={self.client_port}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={self.cpus[0]}",
                "--include-dashboard=false",
                f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
                f"--temp-dir={self.temp_dir}",
            ],
            "head.log",
        )
        if self.nodes:
            self.nodes[0] = proc
        else:
            self.nodes.append(proc)
        self.wait_nodes(1)

    def add_node(self, cpus: int) -> None:
        proc = self._launch(
            [
                f"--address={self.address}",
                "--node-ip-address=127.0.0.1",
                f"--num-cpus={cpus}",
                f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
            ],
            f"node-{len(self.nodes)}.log",
        )
        self.nodes.append(proc)
        self.wait_nodes(len(self.nodes))

    def wait_nodes(self, count: int, timeout_s: float = 90.0) -> None:
        """Wait until the first ``count`` node processes say their Ray runtime started."""
        deadline = time.monotonic() + timeout_s
        logs = ["head.log"] + [f"node-{i}.log" for i in range(1, count)]
        while time.monotonic() < deadline:
            for proc, name in zip(self.nodes, logs, strict=False):
                if proc.poll() is not None:
                    text = (self.temp_dir / name).read_text(errors="replace")[-2000:]
                    raise ConfigError(f"Ray node {name} on port {self.port} did not start:\n{text}")
            if all(
                "Ray runtime started" in (self.temp_dir / name).read_text(errors="replace")
                for name in logs
            ):
                return
            time.sleep(0.2)
        raise ConfigError(f"the Ray cluster on port {self.port} has not {count} node(s) up")

    def worker_processes(self, *, node: int | None = None) -> dict[int, str]:
        """Live Ray worker processes (pid → title, e.g. ``ray::worker_task``) of every node,
        or of ``node`` (0 = head)."""
        chosen = self.nodes if node is None else [self.nodes[node]]
        found = {}
        for proc in chosen:
            for pid in descendants(proc.pid):
                title = process_title(pid)
                if title.startswith("ray::") and "Agent" not in title:
                    found[pid] = title
        return found

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            pids = descendants(proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for pid in pids:  # anything that left the session (Ray re-parents some helpers)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait(30)

    def kill_head(self) -> None:
        """The head node lost: its GCS, raylet and workers end at once (the others stay)."""
        self._stop(self.nodes[0])

    def stop(self) -> None:
        for proc in reversed(self.nodes):
            self._stop(proc)
        self.nodes.clear()
