"""The Ray driver: a child process of a node that turns its task requests into Ray tasks.

Why a separate process: a Ray driver whose head node is lost for longer than Ray's GCS
reconnect timeout terminates its whole process. Here that process is this child, so the node
loses only the work in flight and tells the protocol so (``ComputeLostError``); the timeout is
the node's ``compute.head_timeout_s``, set before Ray is imported.

Messages on the pipe (the node's own machine; plain data only, checked by the node):
``("task", id, "module:qualname", args)`` → ``("ok", id, result)`` | ``("err", id, class,
message)`` | ``("lost", id, message)``; ``("stop",)`` ends the process. The first message the
node receives is ``("ready", info)`` or ``("fatal", message)``.
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
from concurrent.futures import Future
from functools import partial
from typing import Any

_ALLOWED = ("federation.", "models.")


def _resolve(name: str) -> Any:
    module, _, qualname = name.partition(":")
    if not module.startswith(_ALLOWED) or not qualname or "<" in qualname:
        raise ValueError(f"not a compute kernel: {name}")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def serve(conn: Any, address: str, namespace: str, head_timeout_s: float, max_retries: int) -> None:
    """Connect to the cluster at ``address`` and run the node's tasks on it until told to stop
    (or the node goes away: the pipe closes)."""
    # Read by Ray's core worker at init: how long a lost GCS is waited for before this
    # process ends (Ray's default is 60 s).
    os.environ["RAY_gcs_rpc_server_reconnect_timeout_s"] = str(max(1, round(head_timeout_s)))
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
        import ray.exceptions as rex
    except ImportError:
        conn.send(("fatal", "Ray is not installed here: pip install 'xinyidai[ray]'"))
        return
    try:
        ray.init(
            address=address,
            namespace=namespace,
            logging_level=logging.ERROR,
            log_to_driver=False,
            configure_logging=False,
        )
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        nodes = [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]
    except Exception as exc:  # ConnectionError, a bad address, a version mismatch...
        conn.send(("fatal", f"{type(exc).__name__}: {str(exc)[:500]}"))
        return
    conn.send(
        (
            "ready",
            {
                "cluster_cpus": int(resources.get("CPU", 0)),
                "nodes": len(nodes),
                "ray_version": ray.__version__,
                "driver_pid": os.getpid(),
            },
        )
    )
    send_lock = threading.Lock()
    remotes: dict[str, Any] = {}
    lost_kinds = (
        rex.WorkerCrashedError,
        rex.NodeDiedError,
        rex.ObjectLostError,
        rex.RaySystemError,
        rex.GetTimeoutError,
        ConnectionError,
    )

    def reply(message: tuple[Any, ...]) -> None:
        with send_lock:
            try:
                conn.send(message)
            except (OSError, EOFError, BrokenPipeError):  # the node is gone
                os._exit(0)

    def done(task_id: int, future: Future[Any]) -> None:
        try:
            reply(("ok", task_id, future.result()))
        except rex.RayTaskError as exc:  # the kernel itself raised: the same error, by name
            cause = exc.cause if exc.cause is not None else exc
            kind = f"{type(cause).__module__}:{type(cause).__qualname__}"
            reply(("err", task_id, kind, str(cause)[:2000]))
        except lost_kinds as exc:
            reply(("lost", task_id, f"{type(exc).__name__}: {str(exc)[:500]}"))
        except Exception as exc:  # cancelled, or anything Ray adds later: never a hang
            reply(("lost", task_id, f"{type(exc).__name__}: {str(exc)[:500]}"))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message[0] == "stop":
            break
        _, task_id, name, args = message
        try:
            remote = remotes.get(name)
            if remote is None:
                remote = remotes[name] = ray.remote(_resolve(name)).options(
                    num_cpus=1,
                    max_retries=max_retries,
                    retry_exceptions=False,
                    scheduling_strategy="SPREAD",
                )
            future = remote.remote(*args).future()
        except Exception as exc:
            reply(("lost", task_id, f"{type(exc).__name__}: {str(exc)[:500]}"))
            continue
        future.add_done_callback(partial(done, task_id))
    try:
        ray.shutdown()
    finally:
        os._exit(0)
