"""The portal's sessions, CSRF tokens and sign-in rate limit.

Why server-side sessions: the cookie carries only a random id (256 bits); what the session may
do (its account, its USCC) stays in the platform's memory, so a cookie can be revoked and never
says whom it belongs to. The id is replaced on sign-in (an id planted before sign-in - session
fixation - is never signed in), sessions end after ``idle_s`` without a request and on sign-out.
A platform restart signs everyone out (sessions are not written to disk).

CSRF: every form carries the session's token (a second random value, compared in constant
time); a POST without it, or with another session's, is refused before anything happens. The
sign-in form has one too: a visitor's anonymous session is made when the form is shown.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field

__all__ = ["RateLimiter", "Session", "SessionStore"]


@dataclass
class Session:
    """One browser's session. ``login`` empty: not signed in (only a CSRF token)."""

    sid: str
    csrf: str
    created: float
    seen: float
    login: str = ""
    kind: str = ""  # enterprise | auditor | operator
    uscc: str = ""  # enterprises: the only USCC this session acts for
    bank_id: str = ""  # operators: their bank
    lang: str = "zh"
    flash: list[str] = field(default_factory=list)

    @property
    def signed_in(self) -> bool:
        return bool(self.login)

    def csrf_ok(self, token: str | None) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token, self.csrf)


class SessionStore:
    """Sessions in memory, keyed by the cookie's id; bounded (oldest anonymous ones go first)."""

    def __init__(self, *, idle_s: float, max_sessions: int = 20_000):
        self.idle_s = idle_s
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, sid: str | None) -> Session | None:
        """The live session for this cookie value (None: unknown, or idle too long)."""
        if not sid or len(sid) > 100:
            return None
        now = time.time()
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle_s:
                del self._sessions[sid]
                return None
            session.seen = now
            return session

    def new(self, *, lang: str = "zh") -> Session:
        now = time.time()
        session = Session(
            sid=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), created=now, seen=now
        )
        session.lang = lang
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                self._expire(now)
            self._sessions[session.sid] = session
        return session

    def rotate(self, old: Session) -> Session:
        """A fresh id and CSRF token for a session about to sign in; the old id stops working."""
        fresh = self.new(lang=old.lang)
        with self._lock:
            self._sessions.pop(old.sid, None)
        return fresh

    def drop(self, session: Session) -> None:
        with self._lock:
            self._sessions.pop(session.sid, None)

    def _expire(self, now: float) -> None:
        for sid in [s.sid for s in self._sessions.values() if now - s.seen > self.idle_s]:
            del self._sessions[sid]
        if len(self._sessions) >= self.max_sessions:
            anonymous = sorted(
                (s for s in self._sessions.values() if not s.signed_in), key=lambda s: s.seen
            )
            for s in anonymous[: max(1, len(anonymous) // 2)]:
                del self._sessions[s.sid]


class RateLimiter:
    """At most ``max_failures`` failed sign-ins per key (a login, a client address) within
    ``window_s``; while over, every attempt with that key is refused without checking the
    password (so guessing costs the attacker time, not the platform argon2 work)."""

    def __init__(self, *, max_failures: int, window_s: float):
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and now - times[0] > self.window_s:
            times.popleft()
        return times

    def blocked(self, *keys: str) -> float:
        """Seconds until every key may try again (0: allowed now)."""
        now = time.time()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                if len(times) >= self.max_failures:
                    wait = max(wait, self.window_s - (now - times[0]))
        return wait

    def failed(self, *keys: str) -> None:
        now = time.time()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)
            if len(self._failures) > 100_000:  # bounded memory under a spray of addresses
                for key in [k for k, v in self._failures.items() if not v]:
                    del self._failures[key]

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
