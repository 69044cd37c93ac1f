"""A ready key: the next job's Paillier key pair and its obfuscators, made while the node is idle.

Why: a SecureBoost job needs a fresh key pair (so no two jobs share ciphertexts under one key)
and then one obfuscator per encrypted gradient — almost all of the bank's encryption cost. Both
can be made before the job exists. ``KeyReserve`` keeps one such key ready: a background thread
generates the pair while no job runs, and an ``ObfuscatorPool`` for it fills from worker
processes at low priority (niced, ``pool.shared_pool(nice=...)``), so the work uses only CPU the
node leaves idle. A job takes the key with ``lease()``; the key and its pool belong to that job
alone (taken under a lock, never handed out twice, dropped with the job's engine), and the
reserve prepares the next key once no job is running. An empty reserve (nothing ready yet, or a
second job at once) yields None and the job generates its key as before.

Secrets: the private key and the obfuscators live in this process's memory (and, as for every
engine, in its own worker processes); never logged, written or sent. ``repr`` shows sizes only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from phe.paillier import PaillierPrivateKey, PaillierPublicKey

from federation.crypto.errors import CryptoError
from federation.crypto.keys import (
    PublicParams,
    check_key_size,
    generate_keypair,
    make_public_params,
)
from federation.crypto.paillier import PaillierEngine
from federation.crypto.randomness import ObfuscatorPool

log = logging.getLogger(__name__)

DEFAULT_NICE = 19


class ReadyKey:
    """One job's key pair, its public parameters and its pool of DJN obfuscators."""

    __slots__ = ("params", "pool", "prepared_s", "private_key", "public_key")

    def __init__(
        self,
        *,
        public_key: PaillierPublicKey,
        private_key: PaillierPrivateKey,
        params: PublicParams,
        pool: ObfuscatorPool,
        prepared_s: float,
    ):
        self.public_key = public_key
        self.private_key = private_key
        self.params = params
        self.pool = pool
        self.prepared_s = prepared_s  # seconds to generate the pair (the pool fills after)

    def __repr__(self) -> str:  # never the key or the values
        return f"ReadyKey(bits={self.params.key_bits}, obfuscators={len(self.pool)})"


class KeyReserve:
    """Keeps the next job's key (and up to ``capacity`` of its obfuscators) ready.

    ``workers`` niced processes (``nice``, default 19: the lowest priority) fill the pool ``batch`` values at a
    time. Filling continues while the key's job runs (the job draws from the pool as it
    encrypts, and waits for peers leave CPU to refill it); the *next* key is generated only
    when no leased job is running.
    """

    def __init__(
        self,
        *,
        key_bits: int = 2048,
        capacity: int,
        batch: int = 1024,
        workers: int = 2,
        nice: int = DEFAULT_NICE,
        start_method: str | None = None,
    ):
        if capacity < 1:
            raise CryptoError(f"a key reserve needs an obfuscator capacity >= 1, got {capacity}")
        if batch < 1:
            raise CryptoError(f"obfuscator batch must be >= 1, got {batch}")
        if workers < 1:
            raise CryptoError(f"workers must be at least 1, got {workers}")
        if not 0 <= nice <= 19:
            raise CryptoError(f"nice must be in [0, 19], got {nice}")
        check_key_size(int(key_bits), "reserved")
        self.key_bits = int(key_bits)
        self.capacity = int(capacity)
        self.batch = int(batch)
        self.workers = int(workers)
        self.nice = int(nice)
        self.start_method = start_method
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._ready: ReadyKey | None = None
        self._preparing = False  # a key is being generated (lease may wait for it)
        self._active = 0
        self._thread: threading.Thread | None = None
        self._prepare_started = 0.0
        self.keys_made = 0
        self.keys_served = 0
        self.fill_seconds: float | None = None  # last key: start of preparation → pool full

    def __repr__(self) -> str:
        with self._lock:
            ready = self._ready
        size = 0 if ready is None else len(ready.pool)
        return (
            f"KeyReserve(bits={self.key_bits}, ready={ready is not None}, obfuscators={size}, "
            f"capacity={self.capacity})"
        )

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> KeyReserve:
        """Start preparing in the background (returns at once)."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._preparing = self._ready is None and self._active == 0
                self._thread = threading.Thread(target=self._run, name="key-reserve", daemon=True)
                self._thread.start()
        return self

    def stop(self) -> None:
        """Stop preparing and drop the ready key and its obfuscators."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        with self._lock:
            ready, self._ready = self._ready, None
            self._thread = None
            self._preparing = False
        if ready is not None:
            ready.pool.clear()

    # -- jobs ------------------------------------------------------------------------------
    @contextmanager
    def lease(self, key_bits: int, *, wait_s: float = 0.0) -> Iterator[ReadyKey | None]:
        """The ready key for one job (None: none ready, or of another size), removed from the
        reserve as it is handed out; the next one is prepared after the job.

        ``wait_s``: if the key is being generated right now, wait up to this long for it — a
        job would otherwise generate a second key while this one is nearly done (a run that
        starts its reserve with the nodes and trains seconds later)."""
        if key_bits == self.key_bits:
            self._await_preparation(wait_s)
        with self._lock:
            ready = None
            if self._ready is not None and key_bits == self.key_bits:
                ready, self._ready = self._ready, None
                self.keys_served += 1
            self._active += 1
        try:
            yield ready
        finally:
            if ready is not None:  # one job only: whatever the job left is dropped with it
                ready.pool.clear()
            with self._lock:
                self._active -= 1
            self._wake.set()

    def _await_preparation(self, wait_s: float) -> None:
        deadline = time.monotonic() + max(0.0, wait_s)
        while time.monotonic() < deadline:
            with self._lock:
                if self._ready is not None or not self._preparing:
                    return
            time.sleep(0.02)

    def attach(self, engine: PaillierEngine, ready: ReadyKey | None, *, need: int) -> None:
        """Give a job's engine its obfuscators: the ready key's pool, or (a key made at job
        start) a fresh pool that fills at low priority while the job waits for its peers.
        ``need``: about how many encryptions the job will do; no more are made for it."""
        if ready is not None:
            ready.pool.expect(need)
            engine.use_obfuscator_pool(ready.pool)
        else:
            pool = engine.start_obfuscator_pool(
                capacity=self.capacity, batch=self.batch, nice=self.nice, background=False
            )
            pool.expect(need)
            pool.start(engine.niced_producer(self.nice))

    def wait_filled(self, timeout: float) -> bool:
        """Block until a key is ready with a full pool (benchmarks, tests); False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                ready = self._ready
            if ready is not None and len(ready.pool) >= self.capacity:
                self._note_full()
                return True
            time.sleep(0.05)
        return False

    def ready_size(self) -> int:
        """Obfuscators of the ready key (0: no key ready)."""
        with self._lock:
            ready = self._ready
        return 0 if ready is None else len(ready.pool)

    # -- the background thread ---------------------------------------------------------------
    def _run(self) -> None:
        try:  # Linux: lower only this thread (key generation holds the GIL for a moment)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError):  # pragma: no cover - other platforms
            pass
        while not self._stop.is_set():
            with self._lock:
                needed = self._ready is None and self._active == 0
                self._preparing = needed
            if needed:
                try:
                    self._prepare()
                except Exception as exc:  # jobs fall back to generating their own key
                    log.warning("key reserve: preparing a key failed (%s)", type(exc).__name__)
                    with self._lock:
                        self._preparing = False
                    self._stop.wait(5.0)
                with self._lock:
                    self._preparing = False
            self._wake.wait(1.0)
            self._wake.clear()
            self._note_full()

    def _prepare(self) -> None:
        self._prepare_started = time.monotonic()
        self.fill_seconds = None
        public, private = generate_keypair(self.key_bits)
        params = make_public_params(public)
        maker = PaillierEngine(
            params, private_key=private, workers=self.workers, start_method=self.start_method
        )
        pool = ObfuscatorPool(mode="djn", capacity=self.capacity, batch=self.batch, nice=self.nice)
        ready = ReadyKey(
            public_key=public,
            private_key=private,
            params=params,
            pool=pool,
            prepared_s=time.monotonic() - self._prepare_started,
        )
        if self._stop.is_set():
            return
        pool.start(maker.niced_producer(self.nice))
        with self._lock:
            self._ready = ready
            self._preparing = False
            self.keys_made += 1

    def _note_full(self) -> None:
        if self.fill_seconds is not None:
            return
        with self._lock:
            ready = self._ready
        if ready is not None and len(ready.pool) >= self.capacity:
            self.fill_seconds = time.monotonic() - self._prepare_started


_RESERVES: dict[tuple[int, int, int, int, int], KeyReserve] = {}
_RESERVES_LOCK = threading.Lock()


def key_reserve(
    *, key_bits: int, capacity: int, batch: int, workers: int, nice: int = DEFAULT_NICE
) -> KeyReserve:
    """This process's running reserve for these settings (started on first call)."""
    key = (int(key_bits), int(capacity), int(batch), int(workers), int(nice))
    with _RESERVES_LOCK:
        reserve = _RESERVES.get(key)
        if reserve is None:
            reserve = _RESERVES[key] = KeyReserve(
                key_bits=key_bits, capacity=capacity, batch=batch, workers=workers, nice=nice
            )
        return reserve.start()


def running_reserve(key_bits: int) -> KeyReserve | None:
    """A reserve of ``key_bits`` keys started in this process (the first one), else None."""
    with _RESERVES_LOCK:
        for (bits, *_), reserve in _RESERVES.items():
            if bits == int(key_bits):
                return reserve
    return None


def stop_reserve(reserve: KeyReserve) -> None:
    """Stop one reserve of this process (its owner's job is done) and forget it."""
    with _RESERVES_LOCK:
        for key, found in list(_RESERVES.items()):
            if found is reserve:
                del _RESERVES[key]
    reserve.stop()


def stop_reserves() -> None:
    """Stop every reserve of this process (node stop) and drop their keys."""
    with _RESERVES_LOCK:
        reserves = list(_RESERVES.values())
        _RESERVES.clear()
    for reserve in reserves:
        reserve.stop()


__all__ = [
    "DEFAULT_NICE",
    "KeyReserve",
    "ReadyKey",
    "key_reserve",
    "running_reserve",
    "stop_reserve",
    "stop_reserves",
]
