"""The Paillier engine's worker processes: started without fork, warm for the life of the node.

Workers start once per process (with the node) and serve every job: they import only the crypto
kernels, never the node's CLI, and keep the arithmetic core (and its fixed-base table) of the
few most recent keys, indexed by the key's configuration, which each task carries (about 1 KB
next to a chunk of ciphertexts). A new job's key costs one table build per worker, not a pool.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import context as mp_context
from multiprocessing import popen_forkserver, popen_spawn_posix, spawn
from typing import Any

from gmpy2 import mpz

from federation.crypto.core import Core, CrtKey
from federation.crypto.errors import CryptoError
from federation.crypto.wire import from_fixed, to_fixed

WorkerConfig = tuple[bytes, bytes, int, int, bool, bytes | None, bytes | None]

_CORES: OrderedDict[WorkerConfig, Core] = OrderedDict()
_KEYS_KEPT = 4  # a node serves a few jobs at once; each key's table is ~n bytes x 2^window


def core_for(config: WorkerConfig) -> Core:
    """This worker's core for ``config``, built (with its fixed-base table) on first use.

    ``config`` travels over the pool's local pipe inside this party's own machine; it carries
    p and q only for the key holder's engine, so its workers can decrypt. Cores live only in
    worker memory and the oldest is dropped once more than a few keys are in use.
    """
    core = _CORES.get(config)
    if core is not None:
        _CORES.move_to_end(config)
        return core
    n_b, hs_b, exponent_bits, window_bits, build_table, p_b, q_b = config
    crt = None
    if p_b is not None and q_b is not None:
        crt = CrtKey(int.from_bytes(p_b, "big"), int.from_bytes(q_b, "big"))
    core = Core(
        mpz.from_bytes(n_b, "big"),
        mpz.from_bytes(hs_b, "big"),
        exponent_bits=exponent_bits,
        window_bits=window_bits,
        crt=crt,
    )
    if build_table:
        core.table()
    _CORES[config] = core
    while len(_CORES) > _KEYS_KEPT:
        _CORES.popitem(last=False)
    return core


def prepare_key(config: WorkerConfig) -> None:
    """A task that only builds this worker's core (and table) for a job's key."""
    core_for(config)


def worker_task(config: WorkerConfig, op: str, buf: bytes, mode: str) -> bytes:
    """One chunk of work in a worker under ``config``'s key; fixed-width bytes in and out."""
    core = core_for(config)
    if op == "encrypt":
        out = core.encrypt(from_fixed(buf, core.plaintext_bytes), mode)
        return to_fixed(out, core.ciphertext_bytes)
    if op == "rerandomise":
        out = core.rerandomise(from_fixed(buf, core.ciphertext_bytes), mode)
        return to_fixed(out, core.ciphertext_bytes)
    if op == "decrypt":
        out = core.decrypt(from_fixed(buf, core.ciphertext_bytes))
        return to_fixed(out, core.plaintext_bytes)
    raise CryptoError(f"unknown worker operation {op!r}")  # pragma: no cover


def noop() -> None:
    """A task that only makes a worker start (and run its initializer)."""


def worker_modules() -> tuple[int, list[str]]:
    """This worker's pid and the top-level packages it has imported (for start-up checks)."""
    import os
    import sys

    return os.getpid(), sorted({name.split(".")[0] for name in sys.modules})


_PRELOAD = ["gmpy2", "numpy", "federation.crypto.encoding", "federation.crypto.histogram"]


def default_start_method() -> str:
    # Never fork: the parent may run gRPC threads, and forking a threaded process is unsafe.
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def prestart_workers() -> None:
    """Start this process's forkserver now (it imports the crypto modules once), so the first
    job's worker pool does not wait for it; nodes call this when they start serving."""
    if default_start_method() == "forkserver":
        from multiprocessing import forkserver

        context("forkserver")
        forkserver.ensure_running()


_LAUNCHING = threading.local()
_PATCH_LOCK = threading.Lock()


def _preparation_data(name: str) -> dict[str, Any]:
    """multiprocessing's preparation data, minus the main module while a pool worker launches.

    Why: with forkserver or spawn every child re-imports the parent's ``__main__`` (for a node,
    ``xinyidai.cli.main`` and its whole tree: sqlalchemy, cryptography, MLflow clients) before
    it runs a task. Pool tasks are module-level functions of ``federation``, so workers need only
    ``sys.path``; other multiprocessing users in the process keep the stdlib behaviour.
    """
    data: dict[str, Any] = _ORIGINAL_PREPARATION(name)
    if getattr(_LAUNCHING, "omit_main", False):
        data.pop("init_main_from_name", None)
        data.pop("init_main_from_path", None)
    return data


_ORIGINAL_PREPARATION = spawn.get_preparation_data


def _install() -> None:
    with _PATCH_LOCK:
        if spawn.get_preparation_data is not _preparation_data:
            spawn.get_preparation_data = _preparation_data


class _NoMainLaunch:
    """Mixin for a Popen class: launch the child without the parent's main module."""

    def _launch(self, process_obj: Any) -> None:
        _LAUNCHING.omit_main = True
        try:
            super()._launch(process_obj)  # type: ignore[misc]
        finally:
            _LAUNCHING.omit_main = False


class _ForkServerPopen(_NoMainLaunch, popen_forkserver.Popen):
    pass


class _SpawnPopen(_NoMainLaunch, popen_spawn_posix.Popen):
    pass


class _ForkServerProcess(mp_context.ForkServerProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _ForkServerPopen(process_obj)


class _SpawnProcess(mp_context.SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> Any:
        return _SpawnPopen(process_obj)


class _ForkServerContext(mp_context.ForkServerContext):
    Process = _ForkServerProcess


class _SpawnContext(mp_context.SpawnContext):
    Process = _SpawnProcess


def worker_context(method: str, *, preload: list[str] | None = None) -> Any:
    """A ``forkserver`` or ``spawn`` context whose workers skip the parent's main module.

    ``preload`` (forkserver only) names the modules the forkserver imports once, so each worker
    it forks starts with them already loaded.
    """
    _install()
    if method == "forkserver":
        ctx = _ForkServerContext()
        if preload:
            ctx.set_forkserver_preload(preload)
        return ctx
    if method == "spawn":
        return _SpawnContext()
    return multiprocessing.get_context(method)  # "fork" children inherit, nothing to import


def context(method: str) -> multiprocessing.context.BaseContext:
    """The pool's context; a forkserver imports the crypto modules once, so each later worker
    (every job's pool) starts in milliseconds instead of re-importing numpy and gmpy2, and no
    worker re-imports the node's CLI as its main module."""
    ctx: multiprocessing.context.BaseContext = worker_context(
        method, preload=_PRELOAD if method == "forkserver" else None
    )
    return ctx


_SHARED: dict[tuple[int, str, int], ProcessPoolExecutor] = {}
_SHARED_LOCK = threading.Lock()


def lower_priority(nice: int) -> None:
    """Pool initializer: make this worker process ``nice`` (Linux: 19 is the lowest priority).

    Why a process and not a thread: gmpy2 holds the GIL, so a low-priority thread would still
    take turns with the protocol's thread; a niced process only gets CPU nobody else wants."""
    import os

    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except (AttributeError, OSError):  # pragma: no cover - other platforms
        pass


def shared_pool(workers: int, method: str, *, nice: int = 0) -> ProcessPoolExecutor:
    """This process's warm pool of ``workers`` crypto workers, started on first use and kept
    for every later job (a broken or stopped pool is replaced). ``nice`` > 0: a separate pool
    of low-priority workers, for work made ahead of time (obfuscators) that must not slow a
    running job."""
    key = (workers, method, nice)
    with _SHARED_LOCK:
        pool = _SHARED.get(key)
        if (
            pool is None
            or getattr(pool, "_broken", False)
            or getattr(pool, "_shutdown_thread", False)
        ):
            if nice > 0:
                pool = ProcessPoolExecutor(
                    max_workers=workers,
                    mp_context=context(method),
                    initializer=lower_priority,
                    initargs=(nice,),
                )
            else:
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=context(method))
            _SHARED[key] = pool
        return pool


def start_pool(workers: int, method: str | None = None) -> None:
    """Start the warm pool's worker processes now (nodes call this when they start serving)."""
    if workers <= 1:
        return
    pool = shared_pool(workers, method or default_start_method())
    try:
        for future in [pool.submit(noop) for _ in range(workers)]:
            future.result()
    except RuntimeError:  # the node stopped (shutdown_pools) while its pool was starting
        return


def shutdown_pools() -> None:
    """Stop every warm crypto pool of this process (at node stop, before usage is written);
    first the ready keys and obfuscator fillers, which would otherwise start pools again."""
    from federation.crypto.randomness import stop_fillers
    from federation.crypto.reserve import stop_reserves

    stop_reserves()
    stop_fillers()
    with _SHARED_LOCK:
        pools = list(_SHARED.values())
        _SHARED.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def shutdown_pool(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
