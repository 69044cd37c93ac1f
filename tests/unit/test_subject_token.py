"""Subject tokens (parties.platform.tokens): the holder accepts only a token the platform
signed for that enterprise, at that holder, within its validity."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.audit import canonical_json
from federation.errors import Refused
from parties.platform.tokens import (
    MAX_TTL_S,
    SKEW_S,
    issue_subject_token,
    session_hash,
    verify_subject_token,
)

USCC = "91350100M000100Y43"
OTHER = "91510104MA00000071"
KEY = Ed25519PrivateKey.generate()
NOW = 1_800_000_000.0


def _verify(body: bytes, signature: bytes, *, uscc: str = USCC, holder: str = "tax",
            now: float = NOW, key: Ed25519PrivateKey = KEY) -> object:  # fmt: skip
    return verify_subject_token(
        key.public_key(), body, signature, uscc=uscc, holder=holder, now=now
    )


def _refusal(**kwargs: object) -> str:
    token = issue_subject_token(KEY, uscc=USCC, session="s" * 32, holder="tax", now=NOW)
    body, signature = kwargs.pop("body", token.body), kwargs.pop("signature", token.signature)
    with pytest.raises(Refused) as caught:
        _verify(body, signature, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == "subject-token"
    return caught.value.reason


def test_a_fresh_token_for_this_enterprise_and_holder_verifies() -> None:
    token = issue_subject_token(KEY, uscc=USCC, session=session_hash("sid"), holder="tax", now=NOW)
    claims = _verify(token.body, token.signature, now=NOW + 60)
    assert claims.uscc == USCC and claims.holder == "tax"  # type: ignore[attr-defined]
    assert b"sid" not in token.body  # only a hash of the session travels


def test_an_expired_token_is_refused() -> None:
    assert "expired" in _refusal(now=NOW + 120 + SKEW_S + 1)


def test_a_token_for_another_enterprise_is_refused() -> None:
    assert "another enterprise" in _refusal(uscc=OTHER)


def test_a_token_for_another_holder_is_refused() -> None:
    assert "holder 'tax'" in _refusal(holder="utility")


def test_a_bad_signature_is_refused() -> None:
    token = issue_subject_token(KEY, uscc=USCC, session="s" * 32, holder="tax", now=NOW)
    forged = Ed25519PrivateKey.generate().sign(token.body)
    assert "not signed" in _refusal(signature=forged)
    tampered = token.body.replace(b'"tax"', b'"utility"')
    assert "not signed" in _refusal(body=tampered, holder="utility")


def test_a_token_valid_too_long_or_issued_in_the_future_is_refused() -> None:
    long = issue_subject_token(
        KEY, uscc=USCC, session="s" * 32, holder="tax", now=NOW, ttl_s=MAX_TTL_S + 1
    )
    assert "at most" in _refusal(body=long.body, signature=long.signature)
    assert "future" in _refusal(now=NOW - SKEW_S - 10)


def test_a_signed_body_of_the_wrong_shape_is_refused() -> None:
    body = canonical_json({"uscc": USCC, "holder": "tax"})
    assert "exactly" in _refusal(body=body, signature=KEY.sign(body))
    body = canonical_json(
        {"uscc": USCC, "holder": "tax", "session": "s", "issued": "now", "expires": NOW}
    )
    assert "types" in _refusal(body=body, signature=KEY.sign(body))
