"""The portal's embedded sign-in: accounts (argon2-hashed passwords) in the platform's SQLite.

Why embedded by default: a city platform without an identity provider still needs enterprises
to sign in; production deployments configure OIDC instead (``portal.auth.kind: oidc``,
docs/platform.md) and these accounts are then only for auditors and bank operators, if any.

Three kinds of account:
- ``enterprise``: keyed by its USCC (check digit validated); acts only for that USCC;
- ``auditor``: a login name; sees audit heads, chain status and counts, never enterprise data;
- ``operator``: a login name tied to one bank node id; sees that bank's status and who
  authorised it.

Passwords are hashed with argon2id (``argon2-cffi``'s defaults, RFC 9106's second recommended
profile); the hash is the only thing stored. The file is created 0600 inside the node's 0700
folder.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Boolean, Column, Double, MetaData, String, Table, insert, select, update

from federation.errors import XinyidaiError
from federation.pki import node_id_problem
from federation.store import SqlStore, immediate
from parties.data import uscc as uscc_codes

__all__ = ["KINDS", "Account", "AccountError", "AccountStore", "normalise_login"]

KINDS = ("enterprise", "auditor", "operator")
MIN_PASSWORD = 10
MAX_PASSWORD = 256
_NAME = re.compile(r"[a-z][a-z0-9_.-]{2,62}")

_metadata = MetaData()
_accounts = Table(
    "portal_accounts",
    _metadata,
    Column("login", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("bank_id", String(63), nullable=False),  # operators: their bank; "" otherwise
    Column("password_hash", String(255), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("disabled", Boolean, nullable=False),
)


class AccountError(XinyidaiError):
    """An account cannot be made or used as asked (bad USCC, weak password, unknown kind...)."""


@dataclass(frozen=True)
class Account:
    """A portal account (never its password hash)."""

    login: str  # the USCC for an enterprise; a login name otherwise
    kind: str
    bank_id: str = ""
    created_at: float = 0.0
    disabled: bool = False


def normalise_login(raw: str) -> str:
    """The login as stored: a USCC normalised (NFKC, upper case) when it looks like one, a
    lower-case name otherwise; ``AccountError`` if it is neither."""
    if not isinstance(raw, str):
        raise AccountError("login must be text")
    text = raw.strip()
    code = uscc_codes.normalise(text)
    if len(code) == 18 and uscc_codes.problem(code) is None:
        return code
    name = text.lower()
    if _NAME.fullmatch(name):
        return name
    if len(code) == 18:
        raise AccountError(f"not a valid unified social credit code: {uscc_codes.problem(code)}")
    raise AccountError(
        "login must be a USCC (18 characters) or a name of 3-63 lowercase letters, digits, "
        "'.', '_' or '-'"
    )


def _password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise AccountError(f"password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"password must be at most {MAX_PASSWORD} characters")
    return password


class AccountStore(SqlStore):
    """``NODE_DIR/portal.db``: the portal's accounts."""

    LABEL = "portal accounts"
    TABLES = (_accounts,)
    FILE = "portal.db"

    def __init__(self, url: str):
        self._hasher = PasswordHasher()
        # A hash to verify against when the login is unknown: the same work either way, so
        # timing does not tell which logins exist.
        self._dummy = self._hasher.hash(os.urandom(16).hex())
        super().__init__(url)

    @classmethod
    def for_node_dir(cls, node_dir: Path) -> AccountStore:
        path = Path(node_dir) / cls.FILE
        if not path.exists():
            fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(path, 0o600)
        return cls(cls.node_dir_url(node_dir))

    def create(self, login: str, password: str, *, kind: str, bank_id: str = "") -> Account:
        """Enrol an account (``AccountError`` if it exists or its fields are wrong)."""
        if kind not in KINDS:
            raise AccountError(f"unknown account kind {kind!r} (known: {', '.join(KINDS)})")
        name = normalise_login(login)
        is_uscc = len(name) == 18 and name.upper() == name and uscc_codes.problem(name) is None
        if kind == "enterprise" and not is_uscc:
            raise AccountError("an enterprise account is keyed by its USCC")
        if kind != "enterprise" and is_uscc:
            raise AccountError(f"an {kind} account needs a login name, not a USCC")
        if kind == "operator":
            problem = node_id_problem(bank_id)
            if problem is not None:
                raise AccountError(f"an operator account needs its bank's node id: {problem}")
        elif bank_id:
            raise AccountError("only an operator account names a bank")
        digest = self._hasher.hash(_password(password))
        now = time.time()
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                if conn.execute(select(_accounts.c.login).where(_accounts.c.login == name)).first():
                    raise AccountError(f"account {name!r} already exists")
                conn.execute(
                    insert(_accounts).values(
                        login=name,
                        kind=kind,
                        bank_id=bank_id,
                        password_hash=digest,
                        created_at=now,
                        disabled=False,
                    )
                )
        return Account(name, kind, bank_id, now)

    def set_password(self, login: str, password: str) -> None:
        name = normalise_login(login)
        digest = self._hasher.hash(_password(password))
        with self._engine.connect() as conn, conn.begin():
            done = conn.execute(
                update(_accounts).where(_accounts.c.login == name).values(password_hash=digest)
            )
            if done.rowcount == 0:
                raise AccountError(f"no account {name!r}")

    def get(self, login: str) -> Account | None:
        try:
            name = normalise_login(login)
        except AccountError:
            return None
        with self._engine.connect() as conn:
            row = conn.execute(select(_accounts).where(_accounts.c.login == name)).first()
        return None if row is None else _account(row)

    def list(self) -> list[Account]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(_accounts).order_by(_accounts.c.login)).all()
        return [_account(r) for r in rows]

    def authenticate(self, login: str, password: str) -> Account | None:
        """The account if the password matches (and it is enabled); None otherwise. Costs one
        argon2 verification whether or not the login exists."""
        try:
            name = normalise_login(login)
        except AccountError:
            name = ""
        row = None
        if name:
            with self._engine.connect() as conn:
                row = conn.execute(select(_accounts).where(_accounts.c.login == name)).first()
        digest = row.password_hash if row is not None else self._dummy
        try:
            self._hasher.verify(digest, password if isinstance(password, str) else "")
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None or row.disabled:
            return None
        if self._hasher.check_needs_rehash(digest):
            with self._engine.connect() as conn, conn.begin():
                conn.execute(
                    update(_accounts)
                    .where(_accounts.c.login == name)
                    .values(password_hash=self._hasher.hash(password))
                )
        return _account(row)


def _account(row: Any) -> Account:
    return Account(row.login, row.kind, row.bank_id, float(row.created_at), bool(row.disabled))
