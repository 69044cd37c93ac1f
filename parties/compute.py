"""A node's compute engine, from its ``node.yaml`` (``compute:``), for the process doing its work.

Called by a node as it starts and by the bank's entry points (alignment, training), which may run
in an operator's process rather than the node's (``xinyidai experiment run``, notebooks): the
heavy work of that node then runs where its own file says, whichever process drives it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from federation import compute
from federation.errors import ConfigError
from parties.config import NodeConfig


def use_compute(config: NodeConfig) -> compute.ComputeEngine | None:
    """Run ``config``'s heavy work on its engine (None: the local warm pool); a cluster that
    cannot be reached is a ``ConfigError`` naming the node and the address, before any work."""
    try:
        return compute.use(config.compute.spec())
    except compute.ComputeError as exc:
        raise ConfigError(f"{config.node_id}: compute: {exc}") from exc


@dataclass
class ComputeCheck:
    """What ``xinyidai compute check`` found: the engine, its CPUs, one round trip's figures."""

    node_id: str
    where: str
    details: dict[str, Any]
    values: int
    key_bits: int
    encrypt_s: float
    decrypt_s: float
    correct: bool

    def lines(self) -> list[str]:
        d = self.details
        out = [f"node {self.node_id}: {self.where}"]
        if d.get("engine") == "ray":
            out.append(
                f"  cluster: {d['cluster_cpus']} CPUs on {d['nodes']} node(s), Ray "
                f"{d['ray_version']}; this node keeps {d['workers']} task(s) in flight; "
                f"driver pid {d['driver_pid']}"
            )
        else:
            out.append(f"  local pool: {d['workers']} worker process(es) on this host")
        rate = self.values / self.encrypt_s if self.encrypt_s else float("inf")
        drate = self.values / self.decrypt_s if self.decrypt_s else float("inf")
        out.append(
            f"  round trip ({self.key_bits}-bit throwaway key, {self.values} values): encrypt "
            f"{self.encrypt_s:.2f} s ({rate:,.0f}/s), decrypt {self.decrypt_s:.2f} s "
            f"({drate:,.0f}/s) — {'correct' if self.correct else 'WRONG RESULTS'}"
        )
        return out


def check_compute(config: NodeConfig, *, values: int = 2048, key_bits: int = 2048) -> ComputeCheck:
    """Connect to ``config``'s engine and encrypt then decrypt ``values`` integers on it with
    a throwaway key (never the node's): the cluster is reachable, its workers import the
    kernels, and results come back right. The first call includes the workers' start-up."""
    from federation.crypto.paillier import PaillierEngine, generate_keypair, make_public_params

    engine = use_compute(config)
    public, private = generate_keypair(key_bits)
    params = make_public_params(public)
    plain = [(i * 7919) % 1_000_003 for i in range(values)]
    with PaillierEngine(
        params,
        private_key=private,
        workers=config.limits.compute_workers,
        parallel_threshold=1,  # even a short check runs on the engine, not in this process
    ) as paillier:
        started = time.perf_counter()
        cts = paillier.encrypt(plain)
        encrypt_s = time.perf_counter() - started
        started = time.perf_counter()
        back = paillier.decrypt(cts)
        decrypt_s = time.perf_counter() - started
    details = (
        engine.describe()
        if engine is not None
        else {"engine": "local", "workers": config.limits.compute_workers}
    )
    return ComputeCheck(
        node_id=config.node_id,
        where=config.compute.spec().describe(),
        details=details,
        values=values,
        key_bits=key_bits,
        encrypt_s=encrypt_s,
        decrypt_s=decrypt_s,
        correct=back == plain,
    )
