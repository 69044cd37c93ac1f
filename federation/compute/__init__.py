"""Where a party's heavy work runs: this host's warm process pool, or the party's own Ray cluster.

Why an interface: the bank's Paillier encryption and decryption, a holder's ciphertext histogram
sums and re-randomisation, and PSI blinding are all "map a module-level kernel over chunks of
bytes"; the protocols should not care whether the chunks go to two local processes or to a
hundred cores of the party's own cluster. Two engines implement it:

* ``local`` (default): the process's warm pool (``federation.crypto.pool.shared_pool``), as
  before. Nothing to configure.
* ``ray`` (``pip install 'xinyidai[ray]'``): tasks on the party's own Ray cluster, driven from
  a child process of the node (``federation.compute.ray_engine``), so a lost head node costs
  that child, never the node, and the protocol gets a clear :class:`ComputeLostError`.

What crosses into an engine is checked (:func:`check_task_args`): bytes, numbers, strings and
numeric numpy arrays only — never a pickled Python object — so a peer's ciphertexts reach the
cluster as the bytes they arrived as. Ray is only ever a party's *internal* fabric: the wire
between parties stays gRPC with mutual TLS.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np

from federation.errors import ConfigError, XinyidaiError

T = TypeVar("T")

EngineName = Literal["local", "ray"]


class ComputeError(XinyidaiError):
    """A compute engine could not be used (not installed, not reachable, refused a task)."""


class ComputeLostError(ComputeError):
    """The engine went away mid-work (the cluster's head node lost, the driver process died).

    The work of the chunks in flight is lost; a job that checkpoints per tree resumes from the
    last finished tree once the engine is back (``models.secureboost.active``).
    """


@dataclass(frozen=True)
class ComputeSpec:
    """A node's choice of engine (node.yaml ``compute:``; ``parties.config.ComputeConfig``).

    ``address``: ``"auto"`` (a cluster started on this host with ``ray start``), ``host:port``
    of the head's GCS, or ``ray://host:10001`` (Ray Client). ``num_cpus``: how many tasks this
    node keeps in flight (default: every CPU the cluster reports at connect time).
    ``head_timeout_s``: how long the driver waits for a lost head before the work in flight
    fails with :class:`ComputeLostError`. ``max_retries``: Ray's retries of a chunk whose worker
    died.
    """

    engine: EngineName = "local"
    address: str | None = None
    num_cpus: int | None = None
    head_timeout_s: float = 15.0
    max_retries: int = 3
    namespace: str = "xinyidai"

    def describe(self) -> str:
        if self.engine == "local":
            return "local process pool"
        cpus = "all its CPUs" if self.num_cpus is None else f"{self.num_cpus} CPUs"
        return f"Ray cluster at {self.address} ({cpus})"


class ComputeEngine(Protocol):
    """What the protocols need: start a kernel on a chunk, get a future, in any order."""

    name: str

    @property
    def workers(self) -> int:
        """How many chunks run at once (the protocols split work into ~4 chunks per worker)."""
        ...

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]: ...

    def map(self, fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]]) -> list[T]: ...

    def describe(self) -> dict[str, Any]: ...

    def wait_ready(self, timeout_s: float) -> bool:
        """Reconnect after a loss within ``timeout_s``; True once the engine answers."""
        ...

    def close(self) -> None: ...


_PLAIN = (bytes, int, float, str, bool, type(None))
_NUMERIC_KINDS = frozenset("biuf")


def check_task_args(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Refuse anything but plain data as a task's arguments: bytes, numbers, strings, tuples of
    them and numeric numpy arrays. Why: what reaches a cluster must not be a pickled object
    (least of all a peer's), and the function must be a module-level kernel importable by name
    on the cluster's workers."""
    module = getattr(fn, "__module__", "") or ""
    qualname = getattr(fn, "__qualname__", "") or ""
    if not module.startswith(("federation.", "models.")) or "<" in qualname:
        raise ComputeError(
            f"only module-level kernels of federation/ or models/ run on a compute engine, "
            f"not {module}.{qualname}"
        )

    def check(value: Any, where: str) -> None:
        if isinstance(value, _PLAIN):
            return
        if isinstance(value, tuple):
            for i, item in enumerate(value):
                check(item, f"{where}[{i}]")
            return
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in _NUMERIC_KINDS:
                raise ComputeError(
                    f"{qualname}: argument {where} is a numpy array of dtype {value.dtype}; "
                    "only numeric arrays cross to a compute engine"
                )
            return
        raise ComputeError(
            f"{qualname}: argument {where} is a {type(value).__name__}; only bytes, numbers, "
            "strings, tuples of them and numeric arrays cross to a compute engine"
        )

    for i, arg in enumerate(args):
        check(arg, str(i))


def task_name(fn: Callable[..., Any]) -> str:
    """``module:qualname`` — how a kernel is named to the engine's driver and workers."""
    return f"{fn.__module__}:{fn.__qualname__}"


_CURRENT: ComputeEngine | None = None
_CURRENT_SPEC: ComputeSpec = ComputeSpec()
_LOCK = threading.Lock()
_AT_EXIT = False


def current() -> ComputeEngine | None:
    """The engine this process uses for its heavy work, or None for the local warm pool."""
    return _CURRENT


def current_spec() -> ComputeSpec:
    return _CURRENT_SPEC


def use(spec: ComputeSpec | None) -> ComputeEngine | None:
    """Make ``spec`` this process's engine (None or ``local``: the warm local pool), connecting
    now so a wrong address is an error here, before any job starts. Idempotent for an
    unchanged spec; a changed one closes the previous engine."""
    global _CURRENT, _CURRENT_SPEC
    spec = spec or ComputeSpec()
    with _LOCK:
        if spec == _CURRENT_SPEC and (_CURRENT is not None or spec.engine == "local"):
            return _CURRENT
        old, _CURRENT, _CURRENT_SPEC = _CURRENT, None, ComputeSpec()
        if old is not None:
            old.close()
        if spec.engine == "local":
            return None
        if spec.engine != "ray":
            raise ConfigError(f"compute.engine must be 'local' or 'ray', got {spec.engine!r}")
        from federation.compute.ray_engine import RayEngine

        engine = RayEngine(spec)
        _CURRENT, _CURRENT_SPEC = engine, spec
        global _AT_EXIT
        if not _AT_EXIT:  # the driver child stops before the interpreter tears down
            atexit.register(shutdown)
            _AT_EXIT = True
        return engine


def shutdown() -> None:
    """Let go of the process's cluster engine (node stop); the local pool has its own stop."""
    use(None)


__all__ = [
    "ComputeEngine",
    "ComputeError",
    "ComputeLostError",
    "ComputeSpec",
    "check_task_args",
    "current",
    "current_spec",
    "shutdown",
    "task_name",
    "use",
]
