"""The PSI's process pool: the group work runs on all cores, in record-aligned chunks.

Pools are kept for the life of the process so each job does not pay start-up again; chunks
cross to the workers as plain bytes, so nothing secret but the scalar of the step travels,
and only over the pool's local pipe.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from federation import compute
from federation.crypto.pool import worker_context
from federation.errors import ConfigError
from federation.psi.curve import POINT_BYTES, mult_chunk
from federation.psi.errors import PsiError, PsiProtocolError

#: Below this many points per step the work runs in-process: starting chunks on the pool
#: costs more than it saves for a few thousand 40 µs scalar multiplications.
PARALLEL_MIN = 16_384

_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def resolve_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"PSI workers must be a positive integer or None, got {workers!r}")
    return workers


def _pool(workers: int) -> ProcessPoolExecutor:
    # "spawn": a node also runs gRPC threads, and forking a threaded process can deadlock.
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            ctx = worker_context("spawn")  # workers skip the node's CLI as their main module
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
            _POOLS[workers] = pool
        return pool


def shutdown_workers() -> None:
    """Stop the PSI worker processes (they are otherwise kept for the next job)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def run_chunked(
    func: Callable[..., Any],
    data: bytes,
    record: int,
    args: tuple[Any, ...],
    *,
    workers: int,
    parallel_min: int,
) -> list[Any]:
    """Apply ``func(chunk, *args)`` over record-aligned chunks of ``data``, in order.

    ~8 chunks per worker keep both cores busy to the end without paying per-task overhead on
    tiny tasks.
    """
    n = len(data) // record
    remote = compute.current()  # the party's own cluster, when the node uses one
    if remote is not None:
        workers = remote.workers
    if (workers <= 1 and remote is None) or n < parallel_min:
        return [func(data, *args)]
    per = max(1024, min(65_536, -(-n // (workers * 8))))
    chunks = [data[i * record : (i + per) * record] for i in range(0, n, per)]
    if remote is not None:
        return remote.map(func, [(chunk, *args) for chunk in chunks])
    try:
        pool = _pool(workers)
        return list(pool.map(func, chunks, *(itertools.repeat(a) for a in args)))
    except BrokenProcessPool as exc:
        with _POOLS_LOCK:
            _POOLS.pop(workers, None)
        raise PsiError(
            "a PSI worker process died (out of memory?); retry, or use fewer workers"
        ) from exc


def mult_all(
    points: bytes, scalar: bytes, keep: int, *, step: str, what: str, workers: int, par: int
) -> bytes:
    """Every peer point checked and raised to ``scalar``; the first bad one is named."""
    results = run_chunked(
        mult_chunk, points, POINT_BYTES, (scalar, keep), workers=workers, parallel_min=par
    )
    base = 0
    for out, bad, why in results:
        if bad >= 0:
            raise PsiProtocolError(step, f"{what} {base + bad}: {why}")
        base += len(out) // keep
    return b"".join(r[0] for r in results)
