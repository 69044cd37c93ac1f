"""Obfuscators (r^n mod n^2 — DJN h_s^a or textbook r^n) made ahead of time, used once each.

The obfuscator is the expensive part of encryption and re-randomisation (one fixed-base product
per digit against one multiply for the rest), so a node can make them while it would otherwise
wait — idle between jobs, or blocked on a peer — and the protocol's hot path only multiplies.

Security: values are the same distribution as the on-the-fly path (they come from the same
``Core.obfuscators`` code, in a worker or in-process); each is handed out at most once (popped
under a lock); they live in this process's memory only — never logged, written or sent — and
``clear`` drops them when the job or key is let go. An empty pool is not an error: callers
compute what the pool could not give, exactly as before.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from collections.abc import Callable

from gmpy2 import mpz

from federation.crypto.errors import CryptoError

# (count, mode) -> that many fresh obfuscators; the engine supplies one that uses its workers.
Producer = Callable[[int, str], list[mpz]]

log = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[ObfuscatorPool] = weakref.WeakSet()
_LIVE_LOCK = threading.Lock()


def stop_fillers() -> None:
    """Stop every pool's background filler in this process and drop its values (the node is
    stopping: no filler may start worker processes after the pools are shut down)."""
    with _LIVE_LOCK:
        pools = list(_LIVE)
    for pool in pools:
        pool.clear()


class ObfuscatorPool:
    """A bounded, thread-safe store of precomputed obfuscators for one key and one mode."""

    def __init__(self, *, mode: str, capacity: int, batch: int = 256, nice: int = 10):
        if capacity < 0:
            raise CryptoError(f"obfuscator pool capacity must be >= 0, got {capacity}")
        if batch < 1:
            raise CryptoError(f"obfuscator pool batch must be >= 1, got {batch}")
        self.mode = mode
        self.capacity = int(capacity)
        self.batch = int(batch)
        self.nice = int(nice)
        self._values: deque[mpz] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._producer: Producer | None = None
        self.served = 0  # values handed out (a count, never the values)
        self.fallback = 0  # values callers had to compute because the pool was short
        self._expected: int | None = None  # values the job will still ask for (None: unknown)

    def __len__(self) -> int:
        with self._lock:
            return len(self._values)

    def __repr__(self) -> str:  # never the values
        return f"ObfuscatorPool(mode={self.mode!r}, size={len(self)}, capacity={self.capacity})"

    def expect(self, count: int) -> None:
        """The job will ask for about ``count`` more values: the filler makes no more than that
        (values made beyond a job's need would only be dropped with it)."""
        with self._lock:
            self._expected = max(0, int(count))

    def goal(self) -> int:
        """How many values the filler keeps ready now."""
        with self._lock:
            return self._goal()

    def _goal(self) -> int:
        if self._expected is None:
            return self.capacity
        return min(self.capacity, self._expected)

    def take(self, count: int) -> list[mpz]:
        """Up to ``count`` values, each removed from the pool as it is handed out."""
        with self._lock:
            k = min(int(count), len(self._values))
            out = [self._values.popleft() for _ in range(k)]
            if self._expected is not None:
                self._expected = max(0, self._expected - int(count))
        self.served += k
        self.fallback += int(count) - k
        if k:
            self._wake.set()
        return out

    def put(self, values: list[mpz]) -> int:
        """Store values up to capacity; returns how many were kept."""
        with self._lock:
            room = self._goal() - len(self._values)
            kept = values[: max(room, 0)]
            self._values.extend(kept)
        return len(kept)

    def fill(self, producer: Producer, target: int | None = None) -> int:
        """Fill to ``target`` (default: capacity) now, in the caller's thread; returns added."""
        added = 0
        while not self._stop.is_set():
            goal = self.goal() if target is None else min(int(target), self.goal())
            need = min(goal - len(self), self.batch)
            if need <= 0:
                break
            kept = self.put(producer(need, self.mode))
            if kept == 0:
                break
            added += kept
        return added

    def start(self, producer: Producer) -> None:
        """Keep the pool topped up from a low-priority background thread."""
        if self.capacity == 0 or self._thread is not None:
            return
        self._producer = producer
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="obfuscator-pool", daemon=True)
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._thread.start()

    def _run(self) -> None:
        try:  # Linux: lower only this thread (the hot path keeps its priority)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        except (AttributeError, OSError):  # pragma: no cover - other platforms
            pass
        producer = self._producer
        while not self._stop.is_set() and producer is not None:
            try:
                self.fill(producer)
            except Exception as exc:  # callers use the fallback path from now on
                if not self._stop.is_set():
                    log.warning("obfuscator pool: filling stopped (%s)", type(exc).__name__)
                return
            self._wake.wait(0.5)
            self._wake.clear()

    def clear(self) -> None:
        """Stop filling and drop every stored value (the job or key is let go)."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)
        with self._lock:
            self._values.clear()
