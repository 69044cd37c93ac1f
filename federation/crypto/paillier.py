"""Fast Paillier engine on ``phe`` key objects: DJN fixed-base encryption, CRT decryption,
re-randomisation, fixed-width wire format and an all-cores process pool.

Why not plain ``phe``: ``pk.encrypt`` spends one full ``r^n mod n^2`` (2048-bit exponent) per
value, ~100 encryptions/s per core at 2048 bits, and wraps every value in a Python object. The
bank encrypts one packed (gradient, hessian) per sample per tree, so this engine is the platform's
training speed. Keys stay ``phe`` objects, and ciphertexts are plain residues mod n^2 with g = n+1,
so both libraries decrypt each other's ciphertexts.

Obfuscation modes (see docs/crypto.md for the security argument):

* ``"djn"`` (default): ``r = hs^a mod n^2`` with ``hs = h^n mod n^2`` public and ``a`` a short
  uniformly random exponent (2κ bits), computed from a precomputed fixed-base table with a
  handful of multiplications. Damgård–Jurik–Nielsen's short-exponent variant.
* ``"textbook"``: ``r^n mod n^2`` with r uniform in Z*_n, exactly as phe does.

``h`` is derived from a public random seed by hashing, so a data holder can check that ``hs``
really is an n-th power before it relies on it to re-randomise what it returns.

Modules: ``keys`` (key policy, public parameters), ``wire`` (ciphertext bytes), ``tables`` and
``core`` (the arithmetic of one process), ``pool`` (worker processes), ``errors``. This module
is the engine that drives them, and re-exports their public names.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal, TypeVar

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from federation import compute
from federation.crypto.core import Core, CrtKey
from federation.crypto.errors import (
    CiphertextFormatError,
    CryptoError,
    InsecureKeyError,
    MissingPrivateKeyError,
    PlaintextRangeError,
    PublicParamsError,
)
from federation.crypto.keys import (
    MIN_KEY_BITS,
    PublicParams,
    byte_len,
    check_key_size,
    default_exponent_bits,
    export_private_key_insecurely,
    generate_keypair,
    import_private_key,
    make_public_params,
    public_params_from_bytes,
    public_params_to_bytes,
    security_bits,
)
from federation.crypto.pool import (
    WorkerConfig,
    default_start_method,
    prepare_key,
    prestart_workers,
    shared_pool,
    worker_task,
)
from federation.crypto.randomness import ObfuscatorPool
from federation.crypto.wire import (
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    from_fixed,
    to_fixed,
)

Obfuscation = Literal["djn", "textbook"]
OBFUSCATIONS: tuple[str, ...] = ("djn", "textbook")

# Relative cost of one item of each operation, in DJN encryptions; decides when to use the pool.
_COST = {"djn": 1, "textbook": 50, "decrypt": 15}

_f_mod = gmpy2.f_mod
_ONE = mpz(1)

T = TypeVar("T")


class PaillierEngine:
    """Encrypt, re-randomise and (with the private key) decrypt vectors, on all cores.

    Use as a context manager (or call :meth:`close`) so the worker pool shuts down cleanly.
    Small inputs stay in-process; the pool starts lazily on the first large one.

    ``obfuscation`` defaults by role: ``"djn"`` for the key holder (its adversaries, the data
    holders, do not know the factorisation — the setting DJN's assumption covers) and
    ``"textbook"`` without a private key (a data holder's re-randomisation must hide its data
    from the key holder, who knows p and q and may even have chosen them; uniform r hides
    perfectly whatever the key). Either can be chosen explicitly; see docs/crypto.md.
    """

    def __init__(
        self,
        params: PublicParams,
        *,
        private_key: PaillierPrivateKey | None = None,
        obfuscation: Obfuscation | None = None,
        workers: int | None = None,
        parallel_threshold: int = 4096,
        exponent_bits: int | None = None,
        window_bits: int = 10,
        start_method: str | None = None,
    ):
        """
        ``parallel_threshold`` is in DJN-encryption equivalents (one decryption ≈ 15, one
        textbook encryption ≈ 50): below it the pool's start and transfer cost is not worth it.
        ``exponent_bits`` (DJN short exponent) defaults to 2κ and may only be raised.
        """
        if not isinstance(params, PublicParams):
            raise CryptoError(f"params must be PublicParams, got {type(params).__name__}")
        key_bits = params.key_bits
        check_key_size(key_bits, "used by a PaillierEngine")
        if obfuscation is None:
            obfuscation = "djn" if private_key is not None else "textbook"
        self._check_mode(obfuscation)
        min_e = default_exponent_bits(key_bits)
        e_bits = min_e if exponent_bits is None else int(exponent_bits)
        if not min_e <= e_bits <= key_bits:
            raise CryptoError(
                f"exponent_bits must be in [{min_e}, {key_bits}] for a {key_bits}-bit key "
                f"(2κ with κ={security_bits(key_bits)}), got {exponent_bits}"
            )
        if not 1 <= window_bits <= 12:
            raise CryptoError(f"window_bits must be in [1, 12], got {window_bits}")
        n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if n_workers < 1:
            raise CryptoError(f"workers must be at least 1, got {workers}")
        if parallel_threshold < 0:
            raise CryptoError(f"parallel_threshold must be >= 0, got {parallel_threshold}")
        crt = None
        if private_key is not None:
            if not isinstance(private_key, PaillierPrivateKey):
                raise CryptoError("private_key must be a phe PaillierPrivateKey")
            if private_key.public_key.n != params.public_key.n:
                raise CryptoError("private_key does not belong to the public parameters' key")
            crt = CrtKey(private_key.p, private_key.q)
        self.params = params
        self.obfuscation: str = obfuscation
        self._local_workers = n_workers
        self.parallel_threshold = int(parallel_threshold)
        self.exponent_bits = e_bits
        self.window_bits = int(window_bits)
        self._private_key = private_key
        self._start_method = start_method or default_start_method()
        self._core = Core(
            params.n, params.hs, exponent_bits=e_bits, window_bits=self.window_bits, crt=crt
        )
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._config: WorkerConfig | None = None
        self._obfuscator_pools: dict[str, ObfuscatorPool] = {}

    # -- properties -------------------------------------------------------------------------

    @property
    def public_key(self) -> PaillierPublicKey:
        return self.params.public_key

    @property
    def n(self) -> mpz:
        return self._core.n

    @property
    def nsquare(self) -> mpz:
        return self._core.nsq

    @property
    def ciphertext_bytes(self) -> int:
        return self._core.ciphertext_bytes

    @property
    def plaintext_bytes(self) -> int:
        return self._core.plaintext_bytes

    @property
    def can_decrypt(self) -> bool:
        return self._core.crt is not None

    @property
    def workers(self) -> int:
        """How many chunks run at once: the local pool's size, or the party's cluster's CPUs
        when the process uses one (``federation.compute``)."""
        remote = compute.current()
        return self._local_workers if remote is None else remote.workers

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> PaillierEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Let go of the process's warm worker pool (it stays up for the next job; the node
        stops it with ``federation.crypto.pool.shutdown_pools``) and drop any precomputed
        obfuscators."""
        self.drop_obfuscators()
        with self._pool_lock:
            self._pool = None

    def _get_pool(self) -> ProcessPoolExecutor | compute.ComputeEngine | None:
        """Where chunks go: the party's cluster when the process uses one (even with one CPU:
        the work belongs there), else the local warm pool, or None (in-process)."""
        remote = compute.current()
        if remote is not None:
            self._key_config()
            return remote
        if self._local_workers <= 1:
            return None
        with self._pool_lock:
            return self._start_pool()

    def _start_pool(self) -> ProcessPoolExecutor:
        """The process's warm pool (looked up on every use, so a pool the node stopped or a
        broken one is replaced); each task carries n, hs (and p, q for the key holder), from
        which a worker builds this key's core once and keeps it."""
        self._key_config()
        pool = self._pool = shared_pool(self._local_workers, self._start_method)
        return pool

    def _key_config(self) -> WorkerConfig:
        """What a worker needs to build this key's core: n, hs (and p, q at the key holder)."""
        if self._config is None:
            core = self._core
            crt = core.crt
            self._config = (
                core.n.to_bytes(core.plaintext_bytes, "big"),
                core.hs.to_bytes(core.ciphertext_bytes, "big"),
                self.exponent_bits,
                self.window_bits,
                self.obfuscation == "djn",
                None if crt is None else int(crt.p).to_bytes(byte_len(crt.p), "big"),
                None if crt is None else int(crt.q).to_bytes(byte_len(crt.q), "big"),
            )
        return self._config

    def warm(self) -> None:
        """Start the worker pool now, in the background (workers import and build their tables
        while the caller does other work), so the first large operation does not wait."""
        pool = self._get_pool()
        if pool is not None:
            for _ in range(self.workers):
                pool.submit(prepare_key, self._worker_config())

    def _worker_config(self) -> WorkerConfig:
        config = self._config
        if config is None:  # pragma: no cover - _get_pool sets it before any submit
            raise CryptoError("crypto worker pool was not started")
        return config

    def run_tasks(self, fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]]) -> list[T]:
        """Run module-level ``fn(*args)`` for each args tuple on the pool, results in order.

        For other crypto primitives (histograms, ciphertext packing) that want this engine's
        workers; runs in-process when the engine has a single worker or there is one task.
        """
        pool = self._get_pool() if len(tasks) > 1 or compute.current() is not None else None
        if pool is None:
            return [fn(*args) for args in tasks]
        futures = [pool.submit(fn, *args) for args in tasks]
        return self._collect(futures)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Start module-level ``fn(*args)`` on the pool and return at once (``collect`` gets
        the results); with a single worker it runs here, now, in a completed future.

        For work that should proceed while the caller does something else — a holder summing
        gradient chunks as they stream in (``histogram.StreamingBinSums``).
        """
        pool = self._get_pool()
        if pool is not None:
            return pool.submit(fn, *args)
        done: Future[T] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:  # delivered by collect, like a worker's error
            done.set_exception(exc)
        return done

    def collect(self, futures: Sequence[Future[T]]) -> list[T]:
        """The results of ``submit``'s futures, in order (a dead worker: ``CryptoError``)."""
        return self._collect(futures)

    @staticmethod
    def _collect(futures: Sequence[Future[T]]) -> list[T]:
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            raise CryptoError(
                f"a crypto worker process died: {exc}. Workers are started without fork, so "
                "the main program must be an importable file guarded by "
                "`if __name__ == '__main__':` (not stdin)"
            ) from exc
        finally:
            for f in futures:
                f.cancel()

    def _parallel(self, op: str, items: Sequence[mpz], cost: int, mode: str) -> list[mpz] | None:
        """Split ``items`` into chunks for the pool, or None when in-process is cheaper."""
        remote = compute.current() is not None
        if (
            (self.workers <= 1 and not remote)
            or len(items) < 2
            or len(items) * cost < self.parallel_threshold
        ):
            return None
        pool = self._get_pool()
        if pool is None:  # pragma: no cover - workers > 1 or a cluster always gives one
            return None
        core = self._core
        in_w, out_w = {
            "encrypt": (core.plaintext_bytes, core.ciphertext_bytes),
            "rerandomise": (core.ciphertext_bytes, core.ciphertext_bytes),
            "decrypt": (core.ciphertext_bytes, core.plaintext_bytes),
        }[op]
        n_chunks = min(len(items), self.workers * 4)
        bounds = np.linspace(0, len(items), n_chunks + 1).astype(int)
        futures = [
            pool.submit(worker_task, self._worker_config(), op, to_fixed(items[a:b], in_w), mode)
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        out: list[mpz] = []
        for buf in self._collect(futures):
            out.extend(from_fixed(buf, out_w))
        return out

    # -- validation -------------------------------------------------------------------------

    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in OBFUSCATIONS:
            raise CryptoError(f"obfuscation must be one of {OBFUSCATIONS}, got {mode!r}")

    def _check_plaintexts(self, values: Iterable[Any], offset: int = 0) -> list[mpz]:
        n = self._core.n
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, int | np.integer | mpz):
                raise PlaintextRangeError(
                    f"item {offset + i} of the plaintexts (0-based) is {type(v).__name__}, not an "
                    "integer; "
                    "encode real values with FixedPointCodec or GradHessPacker first"
                )
            m = mpz(v)
            if not 0 <= m < n:
                raise PlaintextRangeError(
                    f"item {offset + i} of the plaintexts (0-based) is outside [0, n); encode "
                    "signed values with "
                    "FixedPointCodec (negative x becomes n - |x|)"
                )
            out.append(m)
        return out

    def _check_ciphertexts(self, values: Iterable[Any]) -> list[mpz]:
        nsq = self._core.nsq
        out = []
        for i, v in enumerate(values):
            c = mpz(v)
            if not 0 < c < nsq:
                raise CiphertextFormatError(
                    f"item {i} of the ciphertexts (0-based) is not in [1, n^2)"
                )
            out.append(c)
        return out

    # -- operations -------------------------------------------------------------------------

    def encrypt(self, plaintexts: Iterable[int]) -> list[mpz]:
        """Encrypt integers in [0, n) (already encoded); returns raw residues mod n^2."""
        ms = self._check_plaintexts(plaintexts)
        mode = self.obfuscation
        head = self._take_obfuscators(len(ms), mode)
        done = self._core.encrypt_with(ms[: len(head)], head) if head else []
        rest = ms[len(head) :]
        if not rest:
            return done
        out = self._parallel("encrypt", rest, _COST[mode], mode)
        return done + (self._core.encrypt(rest, mode) if out is None else out)

    def encrypt_stream(self, plaintexts: Iterable[int], chunk_size: int = 1024) -> Iterator[bytes]:
        """Yield wire-ready chunks (``ciphertexts_to_bytes`` of ≤ ``chunk_size`` values) in order,
        so the caller can send chunk k while the pool still encrypts chunks k+1…

        At most 2 × workers chunks are in flight, so memory stays bounded for any input length.
        A bad plaintext raises (naming its index) when its chunk is read, which may be up to
        2 × workers chunks ahead of the last one yielded; the stream is over after that.
        """
        if chunk_size < 1:
            raise CryptoError(f"chunk_size must be >= 1, got {chunk_size}")
        mode = self.obfuscation
        it = iter(plaintexts)
        core = self._core
        width = core.ciphertext_bytes
        pool = self._get_pool()
        offset = 0

        def start(ms: list[mpz]) -> tuple[bytes, Future[bytes] | None]:
            # Obfuscators made ahead of time first (one multiply each, here); the rest as before.
            head = self._take_obfuscators(len(ms), mode)
            done = to_fixed(core.encrypt_with(ms[: len(head)], head), width) if head else b""
            rest = ms[len(head) :]
            if not rest:
                return done, None
            if pool is None:
                return done + to_fixed(core.encrypt(rest, mode), width), None
            buf = to_fixed(rest, core.plaintext_bytes)
            return done, pool.submit(worker_task, self._worker_config(), "encrypt", buf, mode)

        pending: deque[tuple[bytes, Future[bytes] | None]] = deque()
        try:
            while True:
                while len(pending) < 2 * self.workers:
                    chunk = list(itertools.islice(it, chunk_size))
                    if not chunk:
                        break
                    ms = self._check_plaintexts(chunk, offset)
                    offset += len(ms)
                    pending.append(start(ms))
                if not pending:
                    return
                done, future = pending.popleft()
                yield done if future is None else done + self._collect([future])[0]
        finally:
            for _, f in pending:
                if f is not None:
                    f.cancel()

    def obfuscators(self, count: int, *, obfuscation: Obfuscation | None = None) -> list[mpz]:
        """Fresh random n-th residues (encryptions of zero without the ``1 + m·n`` factor)."""
        mode = obfuscation or self.obfuscation
        self._check_mode(mode)
        return self._core.obfuscators(int(count), mode)

    def rerandomise(
        self, ciphertexts: Iterable[int], *, obfuscation: Obfuscation | None = None
    ) -> list[mpz]:
        """Multiply each ciphertext by a fresh obfuscator: same plaintext, unlinkable ciphertext.

        ``obfuscation`` overrides the engine's mode for this call (see docs/crypto.md on when a
        data holder should prefer ``"textbook"`` here).
        """
        mode = obfuscation or self.obfuscation
        self._check_mode(mode)
        cts = self._check_ciphertexts(ciphertexts)
        head = self._take_obfuscators(len(cts), mode)
        done = self._core.rerandomise_with(cts[: len(head)], head) if head else []
        rest = cts[len(head) :]
        if not rest:
            return done
        out = self._parallel("rerandomise", rest, _COST[mode], mode)
        return done + (self._core.rerandomise(rest, mode) if out is None else out)

    # -- obfuscators made ahead of time (federation/crypto/randomness.py) ---------------------

    def start_obfuscator_pool(
        self,
        *,
        capacity: int,
        batch: int = 256,
        obfuscation: Obfuscation | None = None,
        prefill: int = 0,
        background: bool = True,
        nice: int = 0,
    ) -> ObfuscatorPool:
        """Keep up to ``capacity`` obfuscators of one mode ready for encrypt/rerandomise.

        ``prefill`` of them are made now (the caller waits); with ``background`` a low-priority
        thread tops the pool up whenever values are used. ``nice`` > 0: the background fill
        runs in a separate pool of worker processes at that niceness (``pool.shared_pool``),
        so it takes only CPU the job leaves idle — while the node waits for a peer — instead
        of competing with it. Opt-in: capacity 0 does nothing.
        """
        mode = obfuscation or self.obfuscation
        self._check_mode(mode)
        pool = self._obfuscator_pools.get(mode)
        if pool is None:
            pool = self._obfuscator_pools[mode] = ObfuscatorPool(
                mode=mode, capacity=capacity, batch=batch
            )
        if prefill:
            pool.fill(self._produce_obfuscators, target=prefill)
        if background:
            pool.start(self.niced_producer(nice) if nice > 0 else self._produce_obfuscators)
        return pool

    def use_obfuscator_pool(self, pool: ObfuscatorPool) -> None:
        """Take over ``pool`` (made for this key ahead of the job, ``reserve.KeyReserve``):
        encrypt/rerandomise draw from it, and ``close`` drops it with the job."""
        self._check_mode(pool.mode)
        old = self._obfuscator_pools.get(pool.mode)
        if old is not None and old is not pool:
            old.clear()
        self._obfuscator_pools[pool.mode] = pool

    def _produce_obfuscators(self, count: int, mode: str) -> list[mpz]:
        # rerandomise(1) == r: the workers' existing task makes obfuscators as fixed-width bytes.
        out = self._parallel("rerandomise", [mpz(1)] * count, _COST[mode], mode)
        return self._core.obfuscators(count, mode) if out is None else out

    def niced_producer(self, nice: int) -> Callable[[int, str], list[mpz]]:
        """A producer of this key's obfuscators that runs in niced worker processes (at least
        one, even for a single-worker engine: in this process it would hold the GIL)."""
        workers = max(1, self.workers)
        config = self._key_config()
        width = self._core.ciphertext_bytes
        method = self._start_method

        def produce(count: int, mode: str) -> list[mpz]:
            pool = shared_pool(workers, method, nice=nice)
            bounds = np.linspace(0, count, min(count, workers) + 1).astype(int)
            futures = [
                pool.submit(
                    worker_task, config, "rerandomise", to_fixed([_ONE] * (b - a), width), mode
                )
                for a, b in itertools.pairwise(bounds)
                if b > a
            ]
            out: list[mpz] = []
            for buf in self._collect(futures):
                out.extend(from_fixed(buf, width))
            return out

        return produce

    def _take_obfuscators(self, count: int, mode: str) -> list[mpz]:
        pool = self._obfuscator_pools.get(mode)
        return [] if pool is None or count == 0 else pool.take(count)

    def obfuscator_pool(self, mode: str | None = None) -> ObfuscatorPool | None:
        """The pool of made-ahead obfuscators of ``mode`` (default the engine's), if any."""
        return self._obfuscator_pools.get(mode or self.obfuscation)

    def drop_obfuscators(self) -> None:
        """Stop filling and forget every precomputed obfuscator (job over or key dropped)."""
        pools, self._obfuscator_pools = self._obfuscator_pools, {}
        for pool in pools.values():
            pool.clear()

    def decrypt(self, ciphertexts: Iterable[int]) -> list[int]:
        """CRT decryption of raw ciphertexts (ours or phe's) to integers in [0, n)."""
        if not self.can_decrypt:
            raise MissingPrivateKeyError(
                "this engine has no private key; only the key holder can decrypt"
            )
        cts = self._check_ciphertexts(ciphertexts)
        out = self._parallel("decrypt", cts, _COST["decrypt"], "djn")
        ms = self._core.decrypt(cts) if out is None else out
        return [int(m) for m in ms]

    def add(self, a: int, b: int) -> mpz:
        """Homomorphic addition: Dec(a·b mod n^2) = Dec(a) + Dec(b) mod n."""
        return _f_mod(mpz(a) * mpz(b), self._core.nsq)

    def sum(self, ciphertexts: Iterable[int]) -> mpz:
        """Homomorphic sum of many ciphertexts (the trivial encryption 1 for none)."""
        nsq = self._core.nsq
        acc = mpz(1)
        for c in ciphertexts:
            acc = _f_mod(acc * c, nsq)
        return acc


def crt_decrypt(ciphertexts: Iterable[int], private_key: PaillierPrivateKey) -> list[int]:
    """Single-process CRT decryption with a ``phe`` private key (vectorised over the list)."""
    nsq = mpz(private_key.public_key.nsquare)
    cts = []
    for i, c in enumerate(ciphertexts):
        c = mpz(c)
        if not 0 < c < nsq:
            raise CiphertextFormatError(f"item {i} of the ciphertexts (0-based) is not in [1, n^2)")
        cts.append(c)
    return [int(m) for m in CrtKey(private_key.p, private_key.q).decrypt(cts)]


__all__ = [
    "MIN_KEY_BITS",
    "OBFUSCATIONS",
    "CiphertextFormatError",
    "CryptoError",
    "InsecureKeyError",
    "MissingPrivateKeyError",
    "Obfuscation",
    "PaillierEngine",
    "PlaintextRangeError",
    "PublicParams",
    "PublicParamsError",
    "check_key_size",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "crt_decrypt",
    "default_exponent_bits",
    "export_private_key_insecurely",
    "generate_keypair",
    "import_private_key",
    "make_public_params",
    "prestart_workers",
    "public_params_from_bytes",
    "public_params_to_bytes",
    "security_bits",
]
