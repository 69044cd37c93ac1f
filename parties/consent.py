"""Enterprise authorisations at a data holder: stored, revoked, and checked before every answer.

Why signatures: a holder (tax bureau, utility) must not take a bank's word that an enterprise
agreed to share its data. The 信易贷 platform, where the enterprise applies for a loan, records
the enterprise's authorisation and signs it with its Ed25519 key (``parties.authorisation``); the
holder stores the signed record and, before answering any per-enterprise question, checks that a
*valid signed* authorisation covers this enterprise, this bank, this purpose and every data
category asked for.
The signature is re-verified on every check, so a row edited directly in the holder's database
stops authorising anything.

What it does not do: revocation is holder-local state (not signed), so someone with write access
to the database could clear a revocation - the audit log records every revocation, which is how
that is caught. See ``docs/security.md``.
"""

from __future__ import annotations

import builtins
import json
import re
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
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

from federation.errors import ConfigError, Refused, XinyidaiError
from federation.store import SqlStore, immediate, single_read
from federation.transport.calls import invalid, prefix
from parties.authorisation import (
    Authorisation,
    ConsentError,
    InvalidAuthorisation,
    SignedAuthorisation,
    is_time,
    utc_text,
)
from parties.data import uscc as uscc_codes

__all__ = [
    "ConsentDecision",
    "ConsentRecord",
    "ConsentRegistry",
    "ConsentStats",
]


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
    status: str = ""  # short word of a refusal (``statuses``' vocabulary, or "auth-id")

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
_ALLOWED = 6  # the stage of an authorisation that covers the request

MAX_AUTH_IDS = 16
"""Most authorisation ids one request may name (``ScoreRequest.auth_ids``)."""
_AUTH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_auth_ids(values: Sequence[str], what: str = "auth_ids") -> builtins.list[str]:
    """A request's ``auth_ids``, checked for count and form before any work (INVALID_ARGUMENT
    naming the field; a bad value shown by a short prefix only)."""
    ids = [str(v) for v in values]
    if len(ids) > MAX_AUTH_IDS:
        raise invalid(f"{what}: at most {MAX_AUTH_IDS} authorisation ids, got {len(ids)}")
    for value in ids:
        if not _AUTH_ID.match(value):
            raise invalid(f"{what}: {prefix(value)} is not an authorisation id")
    return ids


_STAGE_STATUS = ("invalid", "revoked", "not-yet-valid", "expired", "purpose", "category", "ok")
"""``check``'s stages as ``statuses``' words."""


class ConsentRegistry(SqlStore):
    """A holder's store of signed authorisations, and the check made before every answer."""

    LABEL = "consent registry"
    TABLES = (_consent,)
    INDEXES = (_index,)
    FILE = "consent.db"

    def __init__(self, url: str, platform_public_key: Ed25519PublicKey, *, node_id: str):
        if not isinstance(platform_public_key, Ed25519PublicKey):
            raise ConfigError(
                "consent registry needs the platform's Ed25519 public key, got "
                f"{type(platform_public_key).__name__}"
            )
        self.node_id = node_id
        self._public_key = platform_public_key
        # (record, signature) -> signature ok. Keyed by the exact stored bytes, so an edited row
        # misses the cache and is verified again; only genuine rows are ever cached as ok.
        self._verified: dict[tuple[str, bytes], bool] = {}
        super().__init__(url)

    @classmethod
    def for_node_dir(
        cls, node_dir: Path, platform_public_key: Ed25519PublicKey, *, node_id: str | None = None
    ) -> ConsentRegistry:
        """The registry at ``NODE_DIR/consent.db``; the node id defaults to the directory name."""
        node_dir = Path(node_dir)
        return cls(
            cls.node_dir_url(node_dir),
            platform_public_key,
            node_id=node_id or node_dir.resolve().name,
        )

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

    def apply_feed(self, ops: Sequence[tuple[str, Any, str]]) -> tuple[int, str | None]:
        """Apply a page of the platform's feed in order, in one transaction: ``("grant",
        SignedAuthorisation, "")`` and ``("revoke", auth_id, reason)``.

        Why a batch: one transaction (one fsync) per page instead of one per authorisation is
        what lets a holder keep up with the platform (docs/platform.md, Performance). The
        semantics are ``grant``'s and ``revoke``'s, op by op: a grant already stored changes
        nothing, a revocation of an authorisation this holder never had or already revoked
        changes nothing. Returns ``(n, problem)``: the first ``n`` ops are applied and
        committed; ``problem`` (None when all were) says why op ``n`` was refused - malformed,
        a bad signature, or other content under an existing id - and nothing after it is
        applied."""
        n_ok, problem = len(ops), None
        for i, (kind, item, _reason) in enumerate(ops):  # form and signature, before any write
            if kind == "grant":
                problem = self._grant_problem(item)
            elif kind != "revoke" or not isinstance(item, str) or not _reason.strip():
                problem = f"unknown or incomplete feed operation {kind!r}"
            if problem is not None:
                n_ok = i
                break
        ops = ops[:n_ok]
        grants = [op[1] for op in ops if op[0] == "grant"]
        now = time.time()
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                existing: dict[str, tuple[str, bytes]] = {}
                ids = [g.auth.auth_id for g in grants]
                for start in range(0, len(ids), 500):
                    for row in conn.execute(
                        select(_consent.c.auth_id, _consent.c.record, _consent.c.signature).where(
                            _consent.c.auth_id.in_(ids[start : start + 500])
                        )
                    ):
                        existing[row.auth_id] = (row.record, bytes(row.signature))
                pending: list[dict[str, Any]] = []

                def flush() -> None:
                    if pending:
                        conn.execute(insert(_consent), pending)
                        pending.clear()

                for i, (kind, item, reason) in enumerate(ops):
                    if kind == "revoke":
                        flush()
                        conn.execute(
                            update(_consent)
                            .where(_consent.c.auth_id == item, _consent.c.revoked_at.is_(None))
                            .values(revoked_at=now, revoke_reason=reason.strip())
                        )
                        continue
                    auth = item.auth
                    record = auth.canonical_bytes().decode("utf-8")
                    signature = bytes(item.signature)
                    known = existing.get(auth.auth_id)
                    if known is not None:
                        if known != (record, signature):
                            problem = (
                                f"authorisation {auth.auth_id} is already stored with different "
                                "content; refusing to replace it"
                            )
                            n_ok = i
                            break
                        continue
                    existing[auth.auth_id] = (record, signature)
                    pending.append(
                        {
                            "auth_id": auth.auth_id,
                            "uscc": auth.uscc,
                            "bank_id": auth.bank_id,
                            "purpose": auth.purpose,
                            "categories": ",".join(auth.categories),
                            "valid_from": auth.valid_from,
                            "valid_until": auth.valid_until,
                            "issued_at": auth.issued_at,
                            "record": record,
                            "signature": signature,
                            "granted_at": now,
                            "revoked_at": None,
                            "revoke_reason": None,
                        }
                    )
                flush()
        return n_ok, problem

    def _grant_problem(self, signed: Any) -> str | None:
        """Why ``grant`` would refuse ``signed`` before touching the store (None: it would not)."""
        if not isinstance(signed, SignedAuthorisation):
            return f"grant needs a SignedAuthorisation, got {type(signed).__name__}"
        problems = signed.auth.problems()
        if problems:
            return f"authorisation {signed.auth.auth_id!r} malformed: {'; '.join(problems)}"
        if not signed.verifies(self._public_key):
            return (
                f"authorisation {signed.auth.auth_id}: signature invalid — not signed by the "
                f"platform key node '{self.node_id}' trusts"
            )
        return None

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
        auth_ids: Sequence[str] = (),
    ) -> ConsentDecision:
        """Allowed only if one authorisation for this enterprise and bank covers the purpose and
        *all* categories, is within its validity window, not revoked, and still verifies.
        ``at`` (default now) moves the validity window only: a revocation applies whatever
        ``at`` is, since it is permanent from the moment it is recorded. ``auth_ids``
        (``ScoreRequest.auth_ids``): only those authorisations count; none of them stored for
        this enterprise and bank is the refusal ``auth-id``.

        When several authorisations exist and none allows, the reason given is that of the one
        that came closest (then the most recently issued), which is the one a person would look
        at first.
        """
        now = time.time() if at is None else float(at)
        code = uscc_codes.normalise(uscc) if isinstance(uscc, str) else uscc
        bad = uscc_codes.problem(code)
        if bad is not None:
            return ConsentDecision(
                False,
                f"{uscc!r} is not a valid unified social credit code: {bad}",
                status="invalid",
            )
        wanted = (categories,) if isinstance(categories, str) else tuple(categories)
        if not wanted:
            return ConsentDecision(
                False, "no data categories requested; consent covers named data", status="category"
            )
        with self._engine.connect() as conn:
            single_read(conn)
            rows = conn.execute(_LOOKUP, {"uscc": code, "bank_id": bank_id}).all()
        if auth_ids:
            named = set(auth_ids)
            rows = [row for row in rows if row.auth_id in named]
            if not rows:
                return ConsentDecision(
                    False,
                    f"none of the {len(named)} authorisation id(s) given is an authorisation "
                    f"from enterprise {code} for bank {bank_id} at {self.node_id}",
                    status="auth-id",
                )
        if not rows:
            return ConsentDecision(
                False,
                f"no authorisation from enterprise {code} for bank {bank_id}",
                status="no-consent",
            )
        best: tuple[int, float, str, str] | None = None  # (stage, issued_at, reason, auth_id)
        for row in rows:
            stage, reason, auth = self._judge(row, now, purpose, wanted)
            if stage == _ALLOWED:
                return ConsentDecision(True, reason, auth.auth_id, auth.valid_until)
            issued = auth.issued_at if is_time(auth.issued_at) else 0.0
            candidate = (stage, issued, reason, auth.auth_id)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        if best is None:  # unreachable: rows is not empty
            return ConsentDecision(
                False,
                f"no authorisation from enterprise {code} for bank {bank_id}",
                status="no-consent",
            )
        return ConsentDecision(False, best[2], best[3], status=_STAGE_STATUS[best[0]])

    def _judge(
        self, row: Any, now: float, purpose: str, wanted: Sequence[str]
    ) -> tuple[int, str, Authorisation]:
        """How far one stored authorisation gets (0: signature .. ``_ALLOWED``) and why it stops
        there: the stage orders refusals by how close they came."""
        signed, problem = self._decode(row)
        auth = signed.auth
        aid = auth.auth_id
        if problem is not None:
            return 0, f"authorisation {aid}: signature invalid — {problem}", auth
        if row.revoked_at is not None:
            reason = (
                f"authorisation {aid} revoked at {utc_text(row.revoked_at)} ({row.revoke_reason})"
            )
            return 1, reason, auth
        if now < auth.valid_from:
            return 2, f"authorisation {aid} is not valid until {utc_text(auth.valid_from)}", auth
        if now >= auth.valid_until:
            return 3, f"authorisation {aid} expired at {utc_text(auth.valid_until)}", auth
        if purpose != auth.purpose:
            reason = (
                f"authorisation {aid}: purpose {purpose!r} not authorised "
                f"(authorised: {auth.purpose})"
            )
            return 4, reason, auth
        uncovered = [c for c in wanted if c not in auth.categories]
        if uncovered:
            reason = (
                f"authorisation {aid} does not cover category {uncovered[0]!r} "
                f"(covers: {', '.join(auth.categories)})"
            )
            return 5, reason, auth
        return _ALLOWED, f"authorised by {aid} until {utc_text(auth.valid_until)}", auth

    def statuses(
        self, codes: Sequence[str], *, bank_id: str, purpose: str, categories: Sequence[str]
    ) -> builtins.list[str]:
        """One status per code (see :meth:`decisions`), without the authorisation ids."""
        return [
            status
            for status, _ in self.decisions(
                codes, bank_id=bank_id, purpose=purpose, categories=categories
            )
        ]

    def decisions(
        self,
        codes: Sequence[str],
        *,
        bank_id: str,
        purpose: str,
        categories: Sequence[str],
        auth_ids: Sequence[str] = (),
    ) -> builtins.list[tuple[str, str]]:
        """(status, auth id) per code from one read of the bank's authorisations: what a batch
        question (scoring many enterprises) needs without one query per enterprise.

        ``ok`` as ``check`` would allow (an active authorisation covering purpose and
        categories), with the id of the authorisation that covers it; otherwise the closest
        miss: ``category``, ``purpose``, ``expired``, ``not-yet-valid``, ``revoked``,
        ``invalid``, ``no-consent`` — or ``auth-id`` when ``auth_ids`` are given and none of
        them is stored for the code (only those count then) — with the id of that miss.
        """
        rank = {"invalid": 0, "revoked": 1, "not-yet-valid": 2, "expired": 3}
        found: dict[str, builtins.list[ConsentRecord]] = defaultdict(builtins.list)
        wanted = set(codes)
        named = set(auth_ids)
        seen: set[str] = set()
        for record in self.list(bank_id=bank_id):
            if record.auth.uscc in wanted:
                seen.add(record.auth.uscc)
                if not named or record.auth.auth_id in named:
                    found[record.auth.uscc].append(record)
        out: builtins.list[tuple[str, str]] = []
        for code in codes:
            best, best_rank, best_id = "no-consent", -1, ""
            if named and code in seen and code not in found:
                best = "auth-id"
            elif named and code not in seen:
                best = "auth-id"
            for record in found.get(code, ()):
                auth = record.auth
                if record.status != "active":
                    status, r = record.status, rank.get(record.status, 0)
                elif auth.purpose != purpose:
                    status, r = "purpose", 4
                elif not categories or not set(categories) <= set(auth.categories):
                    status, r = "category", 5
                else:
                    status, r = "ok", 6
                if r > best_rank:
                    best, best_rank, best_id = status, r, auth.auth_id
            out.append((best, best_id))
        return out

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
