"""Test carriers shared by the protocol tests: the real ``InProcessPeer`` underneath, plus a
wire recorder, a link that drops, and the test-only small-key switch.

Imported by the test modules next to it (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes
from federation.transport.base import CallFailed
from federation.transport.inproc import InProcessPeer


@contextmanager
def small_keys(*also_ignore: type[Warning]) -> Iterator[None]:
    """Small Paillier keys under the test-only switch, without its (deliberately loud) warnings."""
    with allow_insecure_key_sizes(), warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        for category in also_ignore:
            warnings.simplefilter("ignore", category)
        yield


class RecordingPeer(InProcessPeer):
    """Records every serialised request and response that crosses the carrier."""

    def __init__(self, runtime, **kwargs):
        super().__init__(runtime, **kwargs)
        self.wire: list[tuple[str, str, bytes]] = []

    def _unary(self, method, raw, timeout):
        self.wire.append((method, "request", raw))
        out = super()._unary(method, raw, timeout)
        self.wire.append((method, "response", out))
        return out

    def _client_stream(self, method, raws, timeout):
        def tap():
            for raw in raws:
                self.wire.append((method, "request", raw))
                yield raw

        out = super()._client_stream(method, tap(), timeout)
        self.wire.append((method, "response", out))
        return out

    def _server_stream(self, method, raw, timeout):
        self.wire.append((method, "request", raw))
        for out in super()._server_stream(method, raw, timeout):
            self.wire.append((method, "response", out))
            yield out


class FlakyPeer(InProcessPeer):
    """Drops out at the ``trip_at``-th call of ``trip_method``: every later call fails but
    Finish, so the bank's abort can still reach the holder once the link is back."""

    trip_method = "Histograms"
    trip_at: int | None = None

    def __init__(self, runtime, **kwargs):
        super().__init__(runtime, **kwargs)
        self.calls = 0
        self.down = False

    def _unary(self, method, raw, timeout):
        if method == self.trip_method:
            self.calls += 1
            if self.trip_at is not None and self.calls >= self.trip_at:
                self.down = True
        if self.down and method != "Finish":
            raise CallFailed("UNAVAILABLE", f"connection to {self.node_id} reset")
        return super()._unary(method, raw, timeout)
