"""The bank's side of talking to many holders: fan out at once, stop on the first failure, and
say which holder failed at which step.

Why one module: SecureBoost, WOE and LR drive the same shape of job — start every holder, run
rounds that call all of them, finish or abort them all — and each had its own copy of the
thread pool, the first-failure rule, the "who failed where" bookkeeping and the best-effort
abort. :class:`HolderDriver` is that loop once; :func:`ask_holders` is the one-round version
scoring uses.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

from google.protobuf.message import Message

from federation.errors import PeerError, XinyidaiError
from federation.transport.base import PeerBase, new_meta
from protos import common_pb2

__all__ = ["HolderDriver", "TrainingFailure", "ask_holders"]

log = logging.getLogger(__name__)
T = TypeVar("T")

TrainingFailure = Callable[..., Exception]
"""``error(message, holder=..., stage=...)``: the protocol's "job stopped" exception class."""


class HolderDriver:
    """One bank job against ``holders`` (any ``PeerBase``: in-process or gRPC).

    ``stage`` says what the job is doing (set by the protocol as it goes); ``holder`` is the
    holder being blamed while a call or a reply is handled; ``started`` lists the holders that
    may hold job state (they get ``Finish(abort)`` on failure). Calls go out concurrently, one
    thread per holder, inside :meth:`running`.
    """

    def __init__(
        self,
        holders: Mapping[str, PeerBase],
        *,
        purpose: str,
        job_id: str,
        thread_name: str = "holder",
    ):
        self.holders = dict(holders)
        self.purpose = purpose
        self.job_id = job_id
        self.thread_name = thread_name
        self.stage = "start"
        self.holder: str | None = None
        self.started: list[str] = []
        self._pool: ThreadPoolExecutor | None = None

    def meta(self) -> common_pb2.RequestMeta:
        """A fresh request meta for this job (purpose, job id, request id)."""
        meta: common_pb2.RequestMeta = new_meta(self.purpose, job_id=self.job_id)
        return meta

    # -- the job ---------------------------------------------------------------------------
    @contextmanager
    def running(
        self,
        *,
        abort: Callable[[], Message],
        error: TrainingFailure,
        attributable: tuple[type[BaseException], ...],
        what: str,
        dropped: str,
    ) -> Iterator[HolderDriver]:
        """Run the job's calls: on any failure every started holder is asked to drop the job
        (``abort()`` is its ``Finish(abort)``), and a failure of the ``attributable`` kinds
        (peer, crypto, protocol errors) becomes ``error`` naming the holder and the stage.

        ``what`` names the job in the message ("SecureBoost job sb-1"); ``dropped`` says what
        the holders were told ("Every holder was asked to drop the job...").
        """
        self._pool = ThreadPoolExecutor(
            max(1, len(self.holders)), thread_name_prefix=self.thread_name
        )
        try:
            yield self
        except Exception as exc:
            self.abort(abort)
            if isinstance(exc, attributable):
                who = f"holder '{self.holder}'" if self.holder else "a holder"
                raise error(
                    f"{what} failed at {self.stage} ({who}): {exc}. {dropped}",
                    holder=self.holder,
                    stage=self.stage,
                ) from exc
            raise
        finally:
            self._pool.shutdown(wait=True)
            self._pool = None

    def abort(self, request: Callable[[], Message]) -> None:
        """Best effort ``Finish(abort)`` to every started holder (one may be the one down)."""
        for name in self.started:
            try:
                self.holders[name].call("Finish", request())
            except XinyidaiError as exc:
                log.warning("could not abort job %s at %s: %s", self.job_id, name, exc)
        self.started.clear()

    # -- calls -----------------------------------------------------------------------------
    @contextmanager
    def blame(self, holder: str) -> Iterator[None]:
        """Attribute a failure inside the block to ``holder`` (e.g. while checking its reply)."""
        self.holder = holder
        yield
        self.holder = None

    def call(self, holder: str, method: str, request: Message) -> Any:
        """One call to one holder, blamed on it if it fails."""
        with self.blame(holder):
            return self.holders[holder].call(method, request)

    def each(self, fn: Callable[[str], T], names: Sequence[str] | None = None) -> dict[str, T]:
        """``fn(holder)`` for every holder at once (holders compute in parallel on their own
        machines); the first failure in holder order is blamed on its holder and raised after
        every call has returned."""
        order = list(self.holders) if names is None else list(names)
        futures: dict[str, Future[T]] | None = None
        if self._pool is not None and len(order) > 1:
            futures = {name: self._pool.submit(fn, name) for name in order}
        results: dict[str, T] = {}
        failure: tuple[str, BaseException] | None = None
        for name in order:
            try:
                results[name] = fn(name) if futures is None else futures[name].result()
            except Exception as exc:
                if failure is None:
                    failure = (name, exc)
                if futures is None:
                    break
        if failure is not None:
            self.holder = failure[0]
            raise failure[1]
        self.holder = None
        return results

    def each_call(self, method: str, request: Message | Callable[[str], Message]) -> dict[str, Any]:
        """The same call (or ``request(holder)``) to every holder at once."""

        def one(name: str) -> Any:
            message = request(name) if callable(request) else request
            return self.holders[name].call(method, message)

        return self.each(one)

    def finish(self, request: Message | Callable[[str], Message]) -> dict[str, Any]:
        """``Finish`` at every holder at once; a holder that finished leaves ``started`` (it
        keeps its part and is not asked to abort if another holder fails)."""
        done: set[str] = set()

        def one(name: str) -> Any:
            message = request(name) if callable(request) else request
            reply = self.holders[name].call("Finish", message)
            done.add(name)
            return reply

        try:
            return self.each(one)
        finally:
            self.started = [name for name in self.started if name not in done]

    def broadcast_blob(
        self,
        blob_id: str,
        pieces: Iterable[bytes],
        *,
        total: int,
        then: Callable[[str], T],
    ) -> dict[str, T]:
        """Stream ``pieces`` to every holder at once as they are produced, then ``then(holder)``.

        Why a tee: the pieces are ciphertexts the bank encrypts while it sends; each piece goes
        to per-holder queues as it leaves the encryptor, so the holders receive while the bank
        still encrypts and the payload is produced once. ``running`` must be open.
        """
        pool = self._pool
        if pool is None:
            raise XinyidaiError("broadcast_blob needs an open HolderDriver.running block")
        end = object()
        queues: dict[str, queue.SimpleQueue[object]] = {
            n: queue.SimpleQueue() for n in self.holders
        }
        failed = threading.Event()

        def stream(name: str) -> Iterator[bytes]:
            q = queues[name]
            while (item := q.get()) is not end:
                if failed.is_set():
                    raise XinyidaiError("the bank stopped producing the payload (see its error)")
                yield item  # type: ignore[misc]

        def send(name: str) -> T:
            self.holders[name].put_blob(blob_id, stream(name), meta=self.meta(), total_size=total)
            return then(name)

        futures = {name: pool.submit(send, name) for name in self.holders}
        try:
            for piece in pieces:
                for q in queues.values():
                    q.put(piece)
        except BaseException:
            failed.set()
            raise
        finally:
            for q in queues.values():
                q.put(end)
            for f in futures.values():
                f.exception()  # let every stream end before this returns or raises
        for name, f in futures.items():
            error = f.exception()
            if error is not None:
                self.holder = name
                raise error
        return {name: f.result() for name, f in futures.items()}


def ask_holders(
    holders: Mapping[str, PeerBase],
    names: Sequence[str],
    method: str,
    request: Message,
    *,
    failure: Callable[[str, PeerError], Exception] | None = None,
) -> dict[str, Any]:
    """One scoring round: ``method`` to each of ``names`` in order; a ``PeerError`` becomes
    ``failure(holder, error)`` (None: raised as it is)."""
    out: dict[str, Any] = {}
    for name in names:
        try:
            out[name] = holders[name].call(method, request)
        except PeerError as exc:
            if failure is None:
                raise
            raise failure(name, exc) from exc
    return out
