"""Crypto and PSI worker pools start without the node's import tree (issue 14, part 1).

The check runs this file as a script in a fresh interpreter, after importing the CLI, so its
``__main__`` is as heavy as a node's (``python -m xinyidai.cli.main node serve``): under the
stdlib behaviour every worker would re-import it, and with it xinyidai, sqlalchemy and
cryptography. The workers report their own ``sys.modules``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import xinyidai.cli.main  # noqa: F401  (as heavy a main module as a node's)

HEAVY = ("xinyidai", "sqlalchemy", "cryptography")


def _probe() -> dict[str, object]:
    """Run in the child interpreter: real pools, real workers, their loaded packages."""
    from federation.crypto import PaillierEngine, generate_keypair, make_public_params
    from federation.crypto.pool import shutdown_pools, worker_modules
    from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes
    from federation.psi.workers import _pool, shutdown_workers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            _pk, sk = generate_keypair(512)
            params = make_public_params(_pk)
            engine = PaillierEngine(params, private_key=sk, workers=2, parallel_threshold=1)
    with engine:
        crypto = engine.run_tasks(worker_modules, [()] * 4)
        plain = [3, 1, 4, 1, 5, 9, 2, 6]
        ok = [int(v) for v in engine.decrypt(engine.encrypt(plain))] == plain
    psi = [f.result() for f in [_pool(2).submit(worker_modules) for _ in range(4)]]
    shutdown_workers()
    shutdown_pools()
    return {
        "parent_has_cli": "xinyidai" in sys.modules,
        "crypto": sorted({m for _pid, mods in crypto for m in mods}),
        "psi": sorted({m for _pid, mods in psi for m in mods}),
        "roundtrip": ok,
    }


def test_pool_workers_do_not_import_the_cli() -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["parent_has_cli"] and report["roundtrip"]
    assert "gmpy2" in report["crypto"]  # the workers did import what they need
    for pool in ("crypto", "psi"):
        loaded = [m for m in HEAVY if m in report[pool]]
        assert not loaded, f"{pool} pool workers imported {loaded}"


def _job(bits: int, values: list[int]) -> tuple[set[int], list[int]]:
    """One job's engine, with its own fresh key, on the process's warm pool."""
    from federation.crypto import PaillierEngine, generate_keypair, make_public_params
    from federation.crypto.pool import worker_modules
    from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            pk, sk = generate_keypair(bits)
            engine = PaillierEngine(
                make_public_params(pk), private_key=sk, workers=2, parallel_threshold=1
            )
    with engine:
        engine.warm()
        pids = {pid for pid, _mods in engine.run_tasks(worker_modules, [()] * 6)}
        encrypted = engine.encrypt(values)
        out = [int(v) for v in engine.decrypt([engine.add(c, c) for c in encrypted])]
    return pids, out


def test_second_job_reuses_warm_workers_with_its_own_key() -> None:
    from federation.crypto.pool import default_start_method, shared_pool, shutdown_pools, start_pool

    start_pool(2)
    try:
        started = set(shared_pool(2, default_start_method())._processes)
        first_pids, first = _job(512, [1, 2, 3, 40])
        second_pids, second = _job(576, [7, 0, 11, 5])
        after = set(shared_pool(2, default_start_method())._processes)
    finally:
        shutdown_pools()
    assert first == [2, 4, 6, 80] and second == [14, 0, 22, 10]
    assert len(started) == 2 and after == started  # no worker was started for either job
    assert first_pids <= started and second_pids <= started  # the warm ones served both keys


def test_usage_is_the_process_tree_with_live_pool_workers() -> None:
    """A node's figures include its warm pool workers (alive, never reaped); the experiment
    runner leaves out reaped children, which are the node processes reporting for themselves."""
    import resource

    from federation.crypto.pool import default_start_method, shared_pool, shutdown_pools, start_pool
    from federation.usage import process_usage

    start_pool(2)
    try:
        pool = shared_pool(2, default_start_method())
        before = process_usage(reaped_children=False)
        list(pool.map(sum, [range(30_000_000)] * 2))  # CPU spent only in the two workers
        during = process_usage(reaped_children=False)
    finally:
        shutdown_pools()
    own_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert during["worker_processes"] >= 2
    assert during["cpu_seconds"] - before["cpu_seconds"] > 0.2
    assert during["peak_rss_mb"] > own_peak_mb + 10  # each worker's own peak is added
    subprocess.run([sys.executable, "-c", "sum(range(30_000_000))"], check=True)
    gap = process_usage()["cpu_seconds"] - process_usage(reaped_children=False)["cpu_seconds"]
    assert gap > 0.2  # the reaped child's CPU is in the first figure only


if __name__ == "__main__":
    print(json.dumps(_probe()))
