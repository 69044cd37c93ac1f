"""How many answers about one enterprise a bank may have from this holder in any 24 h.

Why: scoring answers (``ScoreReach``, ``PrivateScore``, a linear ``Predict``, a scorecard's
``ScorePoints``) each tell the bank something about the enterprise's rows, and the bank chooses
the model. A dishonest bank can serve crafted models (leaf weights that encode leaf ids, one
stump per bin) and ask again and again; nothing in one answer stops that. The consent gate says
*whether* a bank may ask about an enterprise; this quota says *how often*: with ``limit`` answers
per (bank, enterprise) per rolling window, whatever a crafted model extracts per answer is
multiplied by at most ``limit`` a day, and a bank that hits it leaves an audit alert.

Counting is in memory (a lock and one deque per pair, pruned as it is read) so the hot path
costs microseconds; it is seeded at start from the node's own audit log (the per-enterprise
subject rows written before every answer), so a restart does not reset it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

__all__ = ["QUOTA_OPERATIONS", "AnswerQuota"]

QUOTA_OPERATIONS = ("ScoreReach", "PrivateScore", "Predict", "ScorePoints")
"""The methods whose admitted enterprises count (``operation`` as the runtime records it)."""


class AnswerQuota:
    """At most ``limit`` admitted answers per (bank, enterprise) in any ``window_s`` seconds."""

    def __init__(
        self,
        limit: int,
        *,
        window_s: float = 86_400.0,
        clock: Callable[[], float] = time.time,
    ):
        if limit < 1:
            raise ValueError(f"answer quota must be at least 1, got {limit}")
        self.limit = int(limit)
        self.window_s = float(window_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], deque[float]] = {}

    def seed(self, uses: Iterable[tuple[str, str, float]]) -> int:
        """Count earlier answers ``(bank, uscc, ts)`` (from the audit log); returns how many
        fell inside the window."""
        cutoff = self._clock() - self.window_s
        n = 0
        with self._lock:
            for bank, code, ts in sorted(uses, key=lambda u: u[2]):
                if ts > cutoff:
                    self._seen.setdefault((bank, code), deque()).append(float(ts))
                    n += 1
        return n

    def take(self, bank: str, codes: Sequence[str], statuses: Sequence[str]) -> list[str]:
        """``statuses`` with every admitted (``ok``) enterprise past its quota turned into
        ``quota``; the others admitted are counted. One lock for the whole request."""
        out = list(statuses)
        now = self._clock()
        cutoff = now - self.window_s
        with self._lock:
            for i, (code, status) in enumerate(zip(codes, statuses, strict=True)):
                if status != "ok":
                    continue
                seen = self._seen.get((bank, code))
                if seen is None:
                    seen = self._seen[(bank, code)] = deque()
                while seen and seen[0] <= cutoff:
                    seen.popleft()
                if len(seen) >= self.limit:
                    out[i] = "quota"
                else:
                    seen.append(now)
        return out

    def used(self, bank: str, code: str) -> int:
        """Answers about ``code`` counted for ``bank`` in the current window."""
        cutoff = self._clock() - self.window_s
        with self._lock:
            return sum(1 for ts in self._seen.get((bank, code), ()) if ts > cutoff)
