"""Subject tokens: the platform's short-lived, signed word that an enterprise is signed in.

Why a token on every ``Subject`` call: mutual TLS proves the *platform* is calling, not on whose
behalf. The holder answers an enterprise's report, or files its dispute, only under a token the
platform signed with its Ed25519 key (the key holders already trust for authorisations) for
that USCC, that portal session and that holder, valid for minutes. A leaked token is therefore
useless at another holder, for another enterprise, or after it expires; the session field is a
hash, so the token never carries the portal's session id.

Who learns what: the holder learns that the platform vouches for a signed-in session of this
enterprise (and a hash identifying the session, for its audit log); nothing about the
enterprise's password, other sessions, or other holders.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.audit import canonical_json
from federation.errors import Refused
from parties.data import uscc as uscc_codes

__all__ = [
    "MAX_TTL_S",
    "SKEW_S",
    "TOKEN_TTL_S",
    "SubjectClaims",
    "SubjectToken",
    "issue_subject_token",
    "session_hash",
    "verify_subject_token",
]

TOKEN_TTL_S = 120.0
"""How long a token the portal issues is valid: one page's calls, with room for a slow holder."""
MAX_TTL_S = 600.0
"""The longest validity a holder accepts, whatever the token says (a bound on a leaked token)."""
SKEW_S = 30.0
"""Clock difference tolerated between the platform and a holder."""
MAX_BODY = 1024
_FIELDS = ("expires", "holder", "issued", "session", "uscc")


@dataclass(frozen=True)
class SubjectToken:
    """The signed bytes and the signature (``protos/subject.proto`` ``SubjectToken``)."""

    body: bytes
    signature: bytes


@dataclass(frozen=True)
class SubjectClaims:
    """What a verified token says."""

    uscc: str
    session: str
    issued: float
    expires: float
    holder: str


def session_hash(session_id: str) -> str:
    """The session as a token names it: 32 hex digits of SHA-256, never the id itself."""
    return hashlib.sha256(f"xinyidai-portal-session:{session_id}".encode()).hexdigest()[:32]


def issue_subject_token(
    key: Ed25519PrivateKey,
    *,
    uscc: str,
    session: str,
    holder: str,
    now: float | None = None,
    ttl_s: float = TOKEN_TTL_S,
) -> SubjectToken:
    """Sign a token for one enterprise (its normalised USCC), one session hash, one holder."""
    issued = time.time() if now is None else now
    body = canonical_json(
        {
            "uscc": uscc,
            "session": session,
            "issued": round(issued, 3),
            "expires": round(issued + ttl_s, 3),
            "holder": holder,
        }
    )
    return SubjectToken(body=body, signature=key.sign(body))


def _refuse(reason: str) -> Refused:
    return Refused("subject-token", reason)


def verify_subject_token(
    public_key: Ed25519PublicKey,
    body: bytes,
    signature: bytes,
    *,
    uscc: str,
    holder: str,
    now: float | None = None,
) -> SubjectClaims:
    """The token's claims if the platform signed it for ``uscc`` at ``holder`` and it is valid
    now; ``Refused('subject-token', why)`` otherwise. Checked in order: size, signature, form,
    holder, enterprise, time (a forged token learns nothing about which check it would fail
    next)."""
    if len(body) > MAX_BODY or len(signature) != 64:
        raise _refuse("malformed subject token")
    try:
        public_key.verify(signature, body)
    except (InvalidSignature, TypeError, ValueError):
        raise _refuse("subject token not signed by this holder's platform") from None
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise _refuse("subject token body is not JSON") from None
    if not isinstance(data, dict) or tuple(sorted(data)) != _FIELDS:
        raise _refuse(f"subject token must hold exactly {', '.join(_FIELDS)}")
    texts = (data["uscc"], data["session"], data["holder"])
    times = (data["issued"], data["expires"])
    if not all(isinstance(t, str) for t in texts) or not all(
        isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t) for t in times
    ):
        raise _refuse("subject token fields have the wrong types")
    claims = SubjectClaims(
        uscc=data["uscc"],
        session=data["session"],
        issued=float(data["issued"]),
        expires=float(data["expires"]),
        holder=data["holder"],
    )
    if claims.holder != holder:
        raise _refuse(f"subject token is for holder '{claims.holder[:63]}', not this one")
    if claims.uscc != uscc_codes.normalise(uscc):
        raise _refuse("subject token is for another enterprise")
    clock = time.time() if now is None else now
    if claims.expires - claims.issued > MAX_TTL_S or claims.expires <= claims.issued:
        raise _refuse(f"subject token validity must be positive and at most {MAX_TTL_S:.0f} s")
    if claims.issued > clock + SKEW_S:
        raise _refuse("subject token issued in the future (clocks differ?)")
    if claims.expires < clock - SKEW_S:
        raise _refuse("subject token has expired; sign in to the portal again")
    return claims
