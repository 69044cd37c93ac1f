"""Enterprise authorisations as the platform signs them: the record, its signature, the signer.

Why signatures: a holder (tax bureau, utility) must not take a bank's word that an enterprise
agreed to share its data. The 信易贷 platform, where the enterprise applies for a loan, records
the enterprise's authorisation and signs it with its Ed25519 key; the holder stores the signed
record (``parties.consent.ConsentRegistry``) and re-verifies the signature on every check. The
canonical bytes are what is signed, so the same permission always has the same signature input.
"""

from __future__ import annotations

import base64
import datetime as dt
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

from federation.audit import canonical_json
from federation.errors import ConfigError, XinyidaiError
from federation.pki import load_platform_signing_key, node_id_problem
from federation.transport.policy import PURPOSE_PATTERN
from parties.data import uscc as uscc_codes

__all__ = [
    "KNOWN_CATEGORIES",
    "Authorisation",
    "ConsentError",
    "InvalidAuthorisation",
    "PlatformSigner",
    "SignedAuthorisation",
    "is_time",
    "utc_text",
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


def utc_text(ts: float) -> str:
    """A time as people read it in refusals and listings (UTC)."""
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def is_time(value: object) -> bool:
    """A finite number of seconds (``bool`` is not a time, though Python says it is an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


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
            if not is_time(data[name]):
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
        if not all(is_time(t) for t in times):
            out.append(f"times must be finite numbers, got {times}")
        elif self.valid_until <= self.valid_from:
            out.append(
                f"valid_until ({utc_text(self.valid_until)}) is not after valid_from "
                f"({utc_text(self.valid_from)})"
            )
        return out

    @property
    def expires_at(self) -> str:
        return utc_text(self.valid_until)


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
            valid_from=float(valid_from) if is_time(valid_from) else valid_from,
            valid_until=float(valid_until) if is_time(valid_until) else valid_until,
            issued_at=time.time(),
        )
        problems = auth.problems()
        if problems:
            raise InvalidAuthorisation(f"cannot issue authorisation: {'; '.join(problems)}")
        return SignedAuthorisation(auth, self._key.sign(auth.canonical_bytes()))
