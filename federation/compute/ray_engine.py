"""The Ray engine, seen from the node: a driver child process and futures for its tasks.

The node sends each task (a kernel's ``module:qualname`` and plain-data arguments) to its driver
(``federation.compute.ray_agent``), which submits it to the party's Ray cluster with
``max_retries`` (a worker killed mid-chunk costs that chunk's retry, nothing else) and sends the
result back. If the driver ends — the head node was lost longer than ``head_timeout_s``, or the
driver was killed — every chunk in flight fails with ``ComputeLostError`` naming the cluster;
the next task starts a new driver (the cluster may be back).

Which processes hold what (docs/scale.md): the bank's ``decrypt`` tasks carry p and q, so they
reach the bank's driver, the raylets that schedule the task and the worker processes that run
it — all inside the bank's own cluster; no other party's cluster ever sees a task of the bank.
"""

from __future__ import annotations

import importlib
import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

from federation.compute import (
    ComputeError,
    ComputeLostError,
    ComputeSpec,
    check_task_args,
    task_name,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

CONNECT_TIMEOUT_S = 60.0


def _signature(value: Any) -> str:
    """A task argument's shape by type, for the record of what crossed (``arg_kinds``)."""
    if isinstance(value, tuple):
        return "(" + ",".join(_signature(v) for v in value) + ")"
    if hasattr(value, "dtype"):
        return f"ndarray[{value.dtype}]"
    return type(value).__name__


def _rebuild_error(kind: str, message: str) -> Exception:
    """The kernel's own error class when it is one of ours (so a protocol attributes it as
    before), else a ``ComputeError`` that names it."""
    module, _, qualname = kind.partition(":")
    if module.startswith(("federation.", "models.")):
        try:
            cls: Any = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
            if isinstance(cls, type) and issubclass(cls, Exception):
                error: Exception = cls(message)
                return error
        except Exception:  # a class that needs more than a message: named below instead
            log.debug("compute: cannot rebuild %s from its message", kind)
    return ComputeError(f"a compute task failed: {qualname or kind}: {message}")


class RayEngine:
    """Tasks on the party's own Ray cluster, through a driver child process."""

    name = "ray"

    def __init__(self, spec: ComputeSpec):
        if not spec.address:
            raise ComputeError(
                "compute.engine 'ray' needs compute.address ('auto', host:port or ray://host:port)"
            )
        self.spec = spec
        self.info: dict[str, Any] = {}
        self.arg_kinds: Counter[tuple[str, str]] = Counter()
        self.tasks_sent = 0
        self.lost_chunks = 0
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._pending: dict[int, Future[Any]] = {}
        self._process: Any = None
        self._conn: Any = None
        self._closed = False
        with self._lock:
            self._connect()

    # -- the driver child ------------------------------------------------------------------
    def _connect(self) -> None:
        """Start the driver and wait for it to reach the cluster (or say why it cannot)."""
        from federation.crypto.pool import worker_context

        ctx = worker_context("spawn")  # no fork of a threaded node; no re-import of its CLI
        parent, child = ctx.Pipe(duplex=True)
        from federation.compute.ray_agent import serve

        process = ctx.Process(
            target=serve,
            args=(
                child,
                self.spec.address,
                self.spec.namespace,
                self.spec.head_timeout_s,
                self.spec.max_retries,
            ),
            name="xinyidai-ray-driver",
            daemon=True,
        )
        process.start()
        child.close()
        where = self.spec.describe()
        if not parent.poll(CONNECT_TIMEOUT_S):
            process.kill()
            raise ComputeLostError(f"{where}: no answer within {CONNECT_TIMEOUT_S:.0f} s")
        try:
            kind, info = parent.recv()
        except (EOFError, OSError) as exc:
            process.join(5)
            raise ComputeLostError(
                f"{where}: the driver process ended while connecting (exit code {process.exitcode})"
            ) from exc
        if kind != "ready":
            process.join(5)
            # Once connected before, a cluster that cannot be reached again is a lost one (a
            # job may wait for it to come back); never reached at all, it is a wrong setting.
            error = ComputeLostError if self.info else ComputeError
            raise error(f"cannot use the {where}: {info}")
        self.info = dict(info)
        self._process, self._conn = process, parent
        threading.Thread(
            target=self._read, args=(parent, process), name="ray-results", daemon=True
        ).start()
        log.info(
            "compute: %s — %d CPUs on %d node(s), Ray %s, driver pid %d",
            where,
            self.info["cluster_cpus"],
            self.info["nodes"],
            self.info["ray_version"],
            self.info["driver_pid"],
        )

    def _read(self, conn: Any, process: Any) -> None:
        """Deliver results as they come; when the driver ends, fail whatever was in flight."""
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind, task_id = message[0], message[1]
            with self._lock:
                future = self._pending.pop(task_id, None)
            if future is None or future.done():  # cancelled by its caller meanwhile
                continue
            if kind == "ok":
                future.set_result(message[2])
            elif kind == "err":
                future.set_exception(_rebuild_error(message[2], message[3]))
            else:
                self.lost_chunks += 1
                future.set_exception(
                    ComputeLostError(f"{self.spec.describe()}: a chunk was lost: {message[2]}")
                )
        process.join(5)
        with self._lock:
            if self._conn is conn:
                self._conn, self._process = None, None
            pending, self._pending = self._pending, {}
        if pending and not self._closed:
            self.lost_chunks += len(pending)
            log.error(
                "compute: the driver for the %s ended (exit code %s) with %d chunk(s) in flight",
                self.spec.describe(),
                process.exitcode,
                len(pending),
            )
        for future in pending.values():
            if not future.done():
                future.set_exception(
                    ComputeLostError(
                        f"the {self.spec.describe()} was lost (its driver process ended with "
                        f"exit code {process.exitcode}; head node unreachable for "
                        f"{self.spec.head_timeout_s:.0f} s?): {len(pending)} chunk(s) in "
                        "flight were lost"
                    )
                )

    # -- the engine ------------------------------------------------------------------------
    @property
    def workers(self) -> int:
        if self.spec.num_cpus is not None:
            return int(self.spec.num_cpus)
        return max(1, int(self.info.get("cluster_cpus", 1)))

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        check_task_args(fn, args)
        name = task_name(fn)
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise ComputeError(f"the {self.spec.describe()} engine was closed")
            if self._conn is None:
                self._connect()  # after a loss: the cluster may be back
            task_id = next(self._ids)
            self._pending[task_id] = future
            try:
                self._conn.send(("task", task_id, name, args))
            except (OSError, EOFError, BrokenPipeError) as exc:
                self._pending.pop(task_id, None)
                raise ComputeLostError(
                    f"the {self.spec.describe()}'s driver process is gone: {exc}"
                ) from exc
            self.tasks_sent += 1
            self.arg_kinds[(name, _signature(args))] += 1
        return future

    def map(self, fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]]) -> list[T]:
        futures = [self.submit(fn, *args) for args in tasks]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def wait_ready(self, timeout_s: float) -> bool:
        """Reconnect (after a loss) within ``timeout_s``; True once the cluster answers."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if self._conn is not None:
                    return True
                try:
                    self._connect()
                    return True
                except ComputeError as exc:
                    last = exc
            if time.monotonic() >= deadline:
                log.warning("compute: %s", last)
                return False
            time.sleep(1.0)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "ray",
            "address": self.spec.address,
            "workers": self.workers,
            "tasks_sent": self.tasks_sent,
            "lost_chunks": self.lost_chunks,
            **self.info,
        }

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, process = self._conn, self._process
            self._conn = self._process = None
        if conn is not None:
            try:
                conn.send(("stop",))
            except (OSError, EOFError):
                pass
        if process is not None:
            process.join(10)
            if process.is_alive():
                process.kill()
                process.join(5)
