"""Enterprise authorisations: signed by the platform, stored and checked by each data holder.

Why signatures: a holder (tax bureau, utility) must not take a bank's word that an enterprise
agreed to share its data. The 信易贷 platform, where the enterprise applies for a loan, records
the enterprise's authorisation and signs it with its Ed25519 key; the holder stores the signed
record and, before answering any per-enterprise question, checks that a *valid signed*
authorisation covers this enterprise, this bank, this purpose and every data category asked for.
The signature is re-verified on every check, so a row edited directly in the holder's database
stops authorising anything.

What it does not do: revocation is holder-local state (not signed), so someone with write access
to the database could clear a revocation - the audit log records every revocation, which is how
that is caught. See ``docs/security.md``.
"""

from __future__ import annotations

import base64
import builtins
import datetime as dt
import json
import math
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import (
    Column,
    Double,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from federation.audit import (
    canonical_json,
    create_tables,
    immediate,
    open_engine,
    redacted,
    single_read,
    sqlite_url,
)
from federation.errors import ConfigError, Refused, XinyidaiError
from federation.pki import load_platform_signing_key, node_id_problem
from federation.transport.policy import PURPOSE_PATTERN
from parties.data import uscc as uscc_codes

__all__ = [
    "KNOWN_CATEGORIES",
    "Authorisation",
    "ConsentDecision",
    "ConsentError",
    "ConsentRecord",
    "ConsentRegistry",
    "ConsentStats",
    "InvalidAuthorisation",
    "PlatformSigner",
    "SignedAuthorisation",
]

KNOWN_CATEGORIES: tuple[str, ...] = ("tax", "electricity", "water", "gas")
"""Data categories an enterprise can authorise, one per kind of holder data."""


_AUTH_ID = re.compile(r"[0-9a-f]{32}")
_FIELDS = (
    "auth_id",
    "uscc",
    "bank_id",
    "purpose",
    "categories",
    "valid_from",
    "valid_until",
    "issued_at",
)


class ConsentError(XinyidaiError):
    """A consent operation cannot be done (unknown authorisation, conflicting record...)."""


class InvalidAuthorisation(ConsentError):
    """An authorisation is malformed or its signature does not verify; nothing was stored."""


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# ------------------------------------------------------------------------------------------------
# The signed record


@dataclass(frozen=True)
class Authorisation:
    """An enterprise's permission for one bank to use some of its data for one purpose.

    Times are UTC epoch seconds; ``categories`` is sorted and without duplicates, so the same
    permission always has the same canonical bytes.
    """

    auth_id: str
    uscc: str
    bank_id: str
    purpose: str
    categories: tuple[str, ...]
    valid_from: float
    valid_until: float
    issued_at: float

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _FIELDS}
        out["categories"] = list(self.categories)
        return out

    def canonical_bytes(self) -> bytes:
        """What the platform signs: canonical JSON (sorted keys, no spaces, UTF-8)."""
        return canonical_json(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Authorisation:
        """Build from a decoded record; raises ``InvalidAuthorisation`` naming every problem."""
        if not isinstance(data, Mapping):
            raise InvalidAuthorisation(
                f"authorisation must be an object, got {type(data).__name__}"
            )
        missing = [f for f in _FIELDS if f not in data]
        extra = sorted(set(data) - set(_FIELDS))
        problems = [f"missing field '{f}'" for f in missing]
        problems += [f"unknown field '{f}'" for f in extra]
        if problems:
            raise InvalidAuthorisation(f"authorisation malformed: {'; '.join(problems)}")
        categories = data["categories"]
        if not isinstance(categories, list | tuple):
            raise InvalidAuthorisation(
                f"authorisation {data['auth_id']!r} malformed: field 'categories' must be a list"
            )
        times = {}
        for name in ("valid_from", "valid_until", "issued_at"):
            if not _is_time(data[name]):
                raise InvalidAuthorisation(
                    f"authorisation {data['auth_id']!r} malformed: field '{name}' must be a "
                    f"number of seconds, got {data[name]!r}"
                )
            times[name] = float(data[name])
        return cls(
            auth_id=data["auth_id"],
            uscc=data["uscc"],
            bank_id=data["bank_id"],
            purpose=data["purpose"],
            categories=tuple(categories),
            **times,
        )

    def problems(self) -> list[str]:
        """Every reason this record is malformed (empty if it is well-formed)."""
        out = []
        if not isinstance(self.auth_id, str) or not _AUTH_ID.fullmatch(self.auth_id):
            out.append(f"auth_id {self.auth_id!r} is not 32 lowercase hex digits")
        reason = uscc_codes.problem(self.uscc)
        if reason is not None:
            out.append(f"uscc {self.uscc!r}: {reason}")
        reason = node_id_problem(self.bank_id)
        if reason is not None:
            out.append(f"bank_id: {reason}")
        if not isinstance(self.purpose, str) or not PURPOSE_PATTERN.fullmatch(self.purpose):
            out.append(
                f"purpose {self.purpose!r} must be a lowercase word such as 'financing' "
                "(letters, digits, '_', '-', '.'; at most 64)"
            )
        if not self.categories:
            out.append("categories is empty: an authorisation must name the data it covers")
        unknown = [c for c in self.categories if c not in KNOWN_CATEGORIES]
        if unknown:
            out.append(f"unknown categories {unknown} (known: {', '.join(KNOWN_CATEGORIES)})")
        if list(self.categories) != sorted(set(self.categories)):
            out.append("categories must be sorted and without duplicates")
        times = [self.valid_from, self.valid_until, self.issued_at]
        if not all(_is_time(t) for t in times):
            out.append(f"times must be finite numbers, got {times}")
        elif self.valid_until <= self.valid_from:
            out.append(
                f"valid_until ({_iso(self.valid_until)}) is not after valid_from "
                f"({_iso(self.valid_from)})"
            )
        return out

    @property
    def expires_at(self) -> str:
        return _iso(self.valid_until)


@dataclass(frozen=True)
class SignedAuthorisation:
    """An authorisation and the platform's Ed25519 signature over its canonical bytes."""

    auth: Authorisation
    signature: bytes

    def verifies(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(self.signature, self.auth.canonical_bytes())
        except (InvalidSignature, TypeError, ValueError):
            return False
        return True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (signature in base64), e.g. to hand a grant to a holder."""
        return {"auth": self.auth.to_dict(), "signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignedAuthorisation:
        if not isinstance(data, Mapping) or set(data) != {"auth", "signature"}:
            raise InvalidAuthorisation(
                "signed authorisation must have exactly 'auth' and 'signature'"
            )
        try:
            signature = base64.b64decode(data["signature"], validate=True)
        except (TypeError, ValueError):
            raise InvalidAuthorisation("signed authorisation: signature is not base64") from None
        return cls(Authorisation.from_dict(data["auth"]), signature)


class PlatformSigner:
    """The platform side: turns an enterprise's consent into a signed authorisation."""

    def __init__(self, private_key: Ed25519PrivateKey):
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigError(
                f"platform signing key must be Ed25519, got {type(private_key).__name__}"
            )
        self._key = private_key

    @classmethod
    def from_file(cls, path: Path) -> PlatformSigner:
        return cls(load_platform_signing_key(Path(path)))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def __repr__(self) -> str:  # never show key material
        return "PlatformSigner(<Ed25519 key>)"

    def issue(
        self,
        *,
        uscc: str,
        bank_id: str,
        purpose: str,
        categories: Sequence[str],
        valid_from: float,
        valid_until: float,
    ) -> SignedAuthorisation:
        """Validate, then sign. The USCC is normalised first (full-width, spaces, case)."""
        if isinstance(categories, str):
            categories = [c for c in categories.split(",") if c]
        code = uscc_codes.normalise(uscc) if isinstance(uscc, str) else uscc
        auth = Authorisation(
            auth_id=uuid.uuid4().hex,
            uscc=code,
            bank_id=bank_id,
            purpose=purpose,
            categories=tuple(sorted(set(categories))),
            valid_from=float(valid_from) if _is_time(valid_from) else valid_from,
            valid_until=float(valid_until) if _is_time(valid_until) else valid_until,
            issued_at=time.time(),
        )
        problems = auth.problems()
        if problems:
            raise InvalidAuthorisation(f"cannot issue authorisation: {'; '.join(problems)}")
        return SignedAuthorisation(auth, self._key.sign(auth.canonical_bytes()))


# ------------------------------------------------------------------------------------------------
# The holder's registry


@dataclass(frozen=True)
class ConsentRecord:
    """A stored authorisation and its state at the time it was read.

    ``status`` is one of active, revoked, expired, not-yet-valid, or invalid (the stored record
    no longer matches the platform's signature; ``problem`` says how).
    """

    signed: SignedAuthorisation
    status: str
    granted_at: float
    revoked_at: float | None = None
    revoke_reason: str | None = None
    problem: str | None = None

    @property
    def auth(self) -> Authorisation:
        return self.signed.auth

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.signed.auth.to_dict(),
            "status": self.status,
            "granted_at": self.granted_at,
            "revoked_at": self.revoked_at,
            "revoke_reason": self.revoke_reason,
            "problem": self.problem,
        }


@dataclass(frozen=True)
class ConsentDecision:
    """The answer to "may this bank have these data about this enterprise, for this purpose"."""

    allowed: bool
    reason: str
    auth_id: str | None = None
    valid_until: float | None = None  # of the authorisation that allowed, if one did

    def raise_if_denied(self) -> None:
        if not self.allowed:
            raise Refused("consent", self.reason)


@dataclass(frozen=True)
class ConsentStats:
    """Counts at one moment. ``enterprises``: distinct enterprises with an active authorisation.

    Computed from the stored columns without re-verifying signatures (``check`` does that)."""

    active: int
    revoked: int
    expired: int
    enterprises: int
    not_yet_valid: int = 0


_metadata = MetaData()
_consent = Table(
    "consent",
    _metadata,
    Column("auth_id", String(32), primary_key=True),
    Column("uscc", String(18), nullable=False),
    Column("bank_id", String(63), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("categories", String(255), nullable=False),
    Column("valid_from", Double, nullable=False),
    Column("valid_until", Double, nullable=False),
    Column("issued_at", Double, nullable=False),
    Column("record", Text, nullable=False),  # the canonical JSON that was signed
    Column("signature", LargeBinary, nullable=False),
    Column("granted_at", Double, nullable=False),
    Column("revoked_at", Double, nullable=True),
    Column("revoke_reason", Text, nullable=True),
)
_index = Index("ix_consent_uscc_bank", _consent.c.uscc, _consent.c.bank_id)
# Built once: constructing the statement per call costs more than running it.
_LOOKUP = select(_consent).where(
    and_(_consent.c.uscc == bindparam("uscc"), _consent.c.bank_id == bindparam("bank_id"))
)

_VERIFIED_CACHE_MAX = 100_000


class ConsentRegistry:
    """A holder's store of signed authorisations, and the check made before every answer."""

    def __init__(self, url: str, platform_public_key: Ed25519PublicKey, *, node_id: str):
        if not isinstance(platform_public_key, Ed25519PublicKey):
            raise ConfigError(
                "consent registry needs the platform's Ed25519 public key, got "
                f"{type(platform_public_key).__name__}"
            )
        self.node_id = node_id
        self._public_key = platform_public_key
        self._engine = open_engine(url, label="consent registry")
        self.url = redacted(self._engine)  # for messages: never the password
        # (record, signature) -> signature ok. Keyed by the exact stored bytes, so an edited row
        # misses the cache and is verified again; only genuine rows are ever cached as ok.
        self._verified: dict[tuple[str, bytes], bool] = {}
        self._create_schema()

    @classmethod
    def for_node_dir(
        cls, node_dir: Path, platform_public_key: Ed25519PublicKey, *, node_id: str | None = None
    ) -> ConsentRegistry:
        """The registry at ``NODE_DIR/consent.db``; the node id defaults to the directory name."""
        node_dir = Path(node_dir)
        return cls(
            sqlite_url(node_dir / "consent.db"),
            platform_public_key,
            node_id=node_id or node_dir.resolve().name,
        )

    def __enter__(self) -> ConsentRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._engine.dispose()

    def _create_schema(self) -> None:
        create_tables(self._engine, [_consent], [_index], label="consent registry")

    # -- writing -------------------------------------------------------------------------------

    def grant(self, signed: SignedAuthorisation) -> None:
        """Store a signed authorisation after checking its form and signature.

        Idempotent: granting the same record again changes nothing (a revoked one stays
        revoked). A different record under an existing ``auth_id`` is refused.
        """
        if not isinstance(signed, SignedAuthorisation):
            raise InvalidAuthorisation(
                f"grant needs a SignedAuthorisation, got {type(signed).__name__}"
            )
        auth = signed.auth
        problems = auth.problems()
        if problems:
            raise InvalidAuthorisation(
                f"authorisation {auth.auth_id!r} malformed, not stored: {'; '.join(problems)}"
            )
        if not signed.verifies(self._public_key):
            raise InvalidAuthorisation(
                f"authorisation {auth.auth_id}: signature invalid — not signed by the platform "
                f"key node '{self.node_id}' trusts; not stored"
            )
        record = auth.canonical_bytes().decode("utf-8")
        signature = bytes(signed.signature)
        for _attempt in range(2):
            try:
                with self._engine.connect() as conn:
                    immediate(conn)
                    with conn.begin():
                        existing = conn.execute(
                            select(_consent.c.record, _consent.c.signature).where(
                                _consent.c.auth_id == auth.auth_id
                            )
                        ).first()
                        if existing is not None:
                            if existing.record == record and bytes(existing.signature) == signature:
                                return
                            raise ConsentError(
                                f"authorisation {auth.auth_id} is already stored with different "
                                "content; refusing to replace it"
                            )
                        conn.execute(
                            insert(_consent).values(
                                auth_id=auth.auth_id,
                                uscc=auth.uscc,
                                bank_id=auth.bank_id,
                                purpose=auth.purpose,
                                categories=",".join(auth.categories),
                                valid_from=auth.valid_from,
                                valid_until=auth.valid_until,
                                issued_at=auth.issued_at,
                                record=record,
                                signature=signature,
                                granted_at=time.time(),
                            )
                        )
                return
            except IntegrityError:
                continue  # another process stored the same auth_id meanwhile: compare again
        raise ConsentError(f"authorisation {auth.auth_id}: could not be stored (conflict)")

    def revoke(self, auth_id: str, *, reason: str) -> None:
        """Mark an authorisation revoked from now on. Revoking twice keeps the first revocation."""
        if not isinstance(reason, str) or not reason.strip():
            raise ConsentError("a revocation needs a reason (who asked, and why)")
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                row = conn.execute(
                    select(_consent.c.revoked_at).where(_consent.c.auth_id == auth_id)
                ).first()
                if row is None:
                    raise ConsentError(
                        f"no authorisation {auth_id!r} at node '{self.node_id}'; nothing revoked"
                    )
                if row.revoked_at is not None:
                    return
                conn.execute(
                    update(_consent)
                    .where(_consent.c.auth_id == auth_id)
                    .values(revoked_at=time.time(), revoke_reason=reason.strip())
                )

    # -- reading -------------------------------------------------------------------------------

    def _decode(self, row: Any) -> tuple[SignedAuthorisation, str | None]:
        """The stored authorisation and why it cannot be trusted (None if it can)."""
        signature = bytes(row.signature)
        try:
            auth = Authorisation.from_dict(json.loads(row.record))
        except (ValueError, XinyidaiError) as exc:
            fallback = Authorisation(
                auth_id=row.auth_id,
                uscc=row.uscc,
                bank_id=row.bank_id,
                purpose=row.purpose,
                categories=tuple(c for c in str(row.categories).split(",") if c),
                valid_from=row.valid_from,
                valid_until=row.valid_until,
                issued_at=row.issued_at,
            )
            return SignedAuthorisation(fallback, signature), f"stored record unreadable ({exc})"
        signed = SignedAuthorisation(auth, signature)
        key = (row.record, signature)
        ok = self._verified.get(key)
        if ok is None:
            ok = signed.verifies(self._public_key)
            if len(self._verified) >= _VERIFIED_CACHE_MAX:
                self._verified.clear()
            self._verified[key] = ok
        if not ok:
            return signed, "the stored record was altered or was not signed by the platform"
        # The indexed columns are what lookups use; they must say what the signature covers.
        differing = [
            name
            for name in ("auth_id", "uscc", "bank_id", "purpose", "valid_from", "valid_until")
            if getattr(row, name) != getattr(auth, name)
        ]
        if row.categories != ",".join(auth.categories):
            differing.append("categories")
        if differing:
            return signed, f"stored column(s) {', '.join(differing)} differ from the signed record"
        return signed, None

    @staticmethod
    def _status(
        auth: Authorisation, revoked_at: float | None, problem: str | None, at: float
    ) -> str:
        if problem is not None:
            return "invalid"
        if revoked_at is not None:
            return "revoked"
        if at < auth.valid_from:
            return "not-yet-valid"
        if at >= auth.valid_until:
            return "expired"
        return "active"

    def _record(self, row: Any, at: float) -> ConsentRecord:
        signed, problem = self._decode(row)
        return ConsentRecord(
            signed=signed,
            status=self._status(signed.auth, row.revoked_at, problem, at),
            granted_at=row.granted_at,
            revoked_at=row.revoked_at,
            revoke_reason=row.revoke_reason,
            problem=problem,
        )

    def get(self, auth_id: str, *, at: float | None = None) -> ConsentRecord:
        """One stored authorisation by id (``ConsentError`` if unknown)."""
        with self._engine.connect() as conn:
            row = conn.execute(select(_consent).where(_consent.c.auth_id == auth_id)).first()
        if row is None:
            raise ConsentError(f"no authorisation {auth_id!r} at node '{self.node_id}'")
        return self._record(row, time.time() if at is None else at)

    def list(
        self,
        *,
        uscc: str | None = None,
        bank_id: str | None = None,
        include_inactive: bool = True,
        at: float | None = None,
    ) -> builtins.list[ConsentRecord]:
        """Stored authorisations, oldest issued first; only active ones if not ``include_inactive``."""
        now = time.time() if at is None else at
        stmt = select(_consent).order_by(_consent.c.issued_at, _consent.c.auth_id)
        if uscc is not None:
            stmt = stmt.where(_consent.c.uscc == uscc_codes.normalise(uscc))
        if bank_id is not None:
            stmt = stmt.where(_consent.c.bank_id == bank_id)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).all()
        records = [self._record(row, now) for row in rows]
        if not include_inactive:
            records = [r for r in records if r.status == "active"]
        return records

    def check(
        self,
        *,
        uscc: str,
        bank_id: str,
        purpose: str,
        categories: Sequence[str],
        at: float | None = None,
    ) -> ConsentDecision:
        """Allowed only if one authorisation for this enterprise and bank covers the purpose and
        *all* categories, is within its validity window, not revoked, and still verifies.
        ``at`` (default now) moves the validity window only: a revocation applies whatever
        ``at`` is, since it is permanent from the moment it is recorded.

        When several authorisations exist and none allows, the reason given is that of the one
        that came closest (then the most recently issued), which is the one a person would look
        at first.
        """
        now = time.time() if at is None else float(at)
        code = uscc_codes.normalise(uscc) if isinstance(uscc, str) else uscc
        bad = uscc_codes.problem(code)
        if bad is not None:
            return ConsentDecision(
                False, f"{uscc!r} is not a valid unified social credit code: {bad}"
            )
        wanted = (categories,) if isinstance(categories, str) else tuple(categories)
        if not wanted:
            return ConsentDecision(False, "no data categories requested; consent covers named data")
        with self._engine.connect() as conn:
            single_read(conn)
            rows = conn.execute(_LOOKUP, {"uscc": code, "bank_id": bank_id}).all()
        if not rows:
            return ConsentDecision(
                False, f"no authorisation from enterprise {code} for bank {bank_id}"
            )
        best: tuple[int, float, str, str] | None = None  # (stage, issued_at, reason, auth_id)
        for row in rows:
            signed, problem = self._decode(row)
            auth = signed.auth
            aid = auth.auth_id
            stage, reason = 0, ""
            if problem is not None:
                reason = f"authorisation {aid}: signature invalid — {problem}"
            elif row.revoked_at is not None:
                stage = 1
                reason = (
                    f"authorisation {aid} revoked at {_iso(row.revoked_at)} ({row.revoke_reason})"
                )
            elif now < auth.valid_from:
                stage = 2
                reason = f"authorisation {aid} is not valid until {_iso(auth.valid_from)}"
            elif now >= auth.valid_until:
                stage = 3
                reason = f"authorisation {aid} expired at {_iso(auth.valid_until)}"
            elif purpose != auth.purpose:
                stage = 4
                reason = (
                    f"authorisation {aid}: purpose {purpose!r} not authorised "
                    f"(authorised: {auth.purpose})"
                )
            else:
                uncovered = [c for c in wanted if c not in auth.categories]
                if uncovered:
                    stage = 5
                    reason = (
                        f"authorisation {aid} does not cover category {uncovered[0]!r} "
                        f"(covers: {', '.join(auth.categories)})"
                    )
                else:
                    return ConsentDecision(
                        True,
                        f"authorised by {aid} until {_iso(auth.valid_until)}",
                        aid,
                        auth.valid_until,
                    )
            candidate = (stage, auth.issued_at if _is_time(auth.issued_at) else 0.0, reason, aid)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        if best is None:  # unreachable: rows is not empty
            return ConsentDecision(
                False, f"no authorisation from enterprise {code} for bank {bank_id}"
            )
        return ConsentDecision(False, best[2], best[3])

    def stats(self, at: float | None = None, *, bank_id: str | None = None) -> ConsentStats:
        """Counts by state at ``at`` (default now), from the stored columns; only the
        authorisations given to ``bank_id`` if given (what a holder tells that bank)."""
        now = time.time() if at is None else float(at)
        c = _consent.c
        scope = [c.bank_id == bank_id] if bank_id is not None else []
        live = c.revoked_at.is_(None)
        active = and_(live, c.valid_from <= now, c.valid_until > now, *scope)
        with self._engine.connect() as conn:

            def count(*where: Any) -> int:
                return int(conn.execute(select(func.count()).where(*where, *scope)).scalar_one())

            return ConsentStats(
                active=count(active),
                revoked=count(c.revoked_at.is_not(None)),
                expired=count(live, c.valid_until <= now),
                enterprises=int(
                    conn.execute(
                        select(func.count(func.distinct(c.uscc))).where(active)
                    ).scalar_one()
                ),
                not_yet_valid=count(live, c.valid_from > now),
            )


# ------------------------------------------------------------------------------------------------
