"""The Paillier engine's worker processes: started without fork, state set once per worker.

Each worker rebuilds the arithmetic core (and its fixed-base table) from the key once, in the
pool initializer; after that a task is a chunk of fixed-width bytes in and out.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from gmpy2 import mpz

from federation.crypto.core import Core, CrtKey
from federation.crypto.errors import CryptoError
from federation.crypto.wire import from_fixed, to_fixed

_WORKER: Core | None = None


def init_worker(config: tuple[bytes, bytes, int, int, bool, bytes | None, bytes | None]) -> None:
    """Pool initializer: rebuild the core and precompute the fixed-base table once per worker.

    ``config`` travels over the pool's local pipe inside this party's own machine; it carries
    p and q only for the key holder's engine, so its workers can decrypt.
    """
    global _WORKER
    n_b, hs_b, exponent_bits, window_bits, build_table, p_b, q_b = config
    crt = None
    if p_b is not None and q_b is not None:
        crt = CrtKey(int.from_bytes(p_b, "big"), int.from_bytes(q_b, "big"))
    _WORKER = Core(
        mpz.from_bytes(n_b, "big"),
        mpz.from_bytes(hs_b, "big"),
        exponent_bits=exponent_bits,
        window_bits=window_bits,
        crt=crt,
    )
    if build_table:
        _WORKER.table()


def worker_task(op: str, buf: bytes, mode: str) -> bytes:
    """One chunk of work in a worker; inputs and outputs are fixed-width bytes."""
    core = _WORKER
    if core is None:  # pragma: no cover - only if the initializer failed
        raise CryptoError("crypto worker was not initialised")
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


def context(method: str) -> multiprocessing.context.BaseContext:
    """The pool's context; a forkserver imports the crypto modules once, so each later worker
    (every job's pool) starts in milliseconds instead of re-importing numpy and gmpy2."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)
    return ctx


def shutdown_pool(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
