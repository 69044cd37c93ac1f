"""The portal's building blocks: argon2 accounts keyed by a valid USCC, sessions rotated at
sign-in, CSRF tokens per session, and the sign-in rate limit."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from parties.platform.accounts import AccountError, AccountStore
from xinyidai.portal.security import RateLimiter, SessionStore

USCC = "91350100M000100Y43"


def test_accounts_store_an_argon2_hash_only_in_a_private_file(tmp_path: Path) -> None:
    store = AccountStore.for_node_dir(tmp_path)
    store.create(USCC, "a long enough secret", kind="enterprise")
    store.create("auditor1", "another secret!", kind="auditor")
    store.create("ops", "operator secret", kind="operator", bank_id="bank")
    assert store.authenticate(USCC.lower(), "a long enough secret") is not None
    assert store.authenticate(USCC, "wrong secret!!") is None
    assert store.authenticate("nobody", "a long enough secret") is None
    store.close()
    assert stat.S_IMODE((tmp_path / "portal.db").stat().st_mode) == 0o600
    rows = (
        sqlite3.connect(tmp_path / "portal.db")
        .execute("SELECT password_hash FROM portal_accounts")
        .fetchall()
    )
    assert all(r[0].startswith("$argon2id$") and "secret" not in r[0] for r in rows)


@pytest.mark.parametrize(
    ("login", "kind", "bank", "problem"),
    [
        ("91350100M000100Y44", "enterprise", "", "unified social credit code"),  # check digit
        ("auditor1", "enterprise", "", "keyed by its USCC"),
        (USCC, "auditor", "", "login name"),
        ("ops", "operator", "", "bank's node id"),
        ("aud", "auditor", "bank", "only an operator"),
    ],
)
def test_bad_accounts_are_refused(
    tmp_path: Path, login: str, kind: str, bank: str, problem: str
) -> None:
    store = AccountStore.for_node_dir(tmp_path)
    with pytest.raises(AccountError, match=problem):
        store.create(login, "a long enough secret", kind=kind, bank_id=bank)
    with pytest.raises(AccountError, match="at least"):
        store.create(USCC, "short", kind="enterprise")
    store.close()


def test_rotation_replaces_the_session_id_and_its_csrf_token() -> None:
    sessions = SessionStore(idle_s=60)
    before = sessions.new()
    after = sessions.rotate(before)
    assert after.sid != before.sid and after.csrf != before.csrf
    assert sessions.get(before.sid) is None and sessions.get(after.sid) is after
    assert after.csrf_ok(after.csrf) and not after.csrf_ok(before.csrf)
    assert not after.csrf_ok(None) and not after.csrf_ok("")


def test_idle_sessions_expire() -> None:
    sessions = SessionStore(idle_s=0.0)
    s = sessions.new()
    assert sessions.get(s.sid) is None


def test_rate_limit_per_key_and_reset_on_success() -> None:
    limiter = RateLimiter(max_failures=3, window_s=60)
    for _ in range(3):
        assert limiter.blocked("login:a", "addr:x") == 0
        limiter.failed("login:a", "addr:x")
    assert limiter.blocked("login:a") > 0 and limiter.blocked("addr:x") > 0
    assert limiter.blocked("login:b", "addr:y") == 0
    limiter.succeeded("login:a")
    assert limiter.blocked("login:a") == 0 and limiter.blocked("addr:x") > 0
