"""Feed events: what the platform signs, and how a follower checks one before applying it.

Why each event is signed *and* chained: the signature says the platform issued it; the chain
(each event names its predecessor's hash) and the sequence say nothing was dropped, reordered or
inserted between the platform and the holder, so a holder that applied event N has applied
exactly the platform's events 1..N.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.audit import canonical_json
from federation.errors import XinyidaiError

__all__ = [
    "GENESIS",
    "KINDS",
    "FeedError",
    "FeedEvent",
    "sign_event",
]

GENESIS = "0" * 64
"""The ``prev`` of the first event."""

KINDS = ("grant", "revoke", "admit", "suspend", "reinstate")
"""grant: a signed authorisation; revoke: an authorisation withdrawn; admit / suspend /
reinstate: a bank's status in the institution registry."""

MAX_BODY = 16 * 1024
"""Largest event body (bytes): an authorisation is about 400."""


class FeedError(XinyidaiError):
    """A feed event is malformed, out of order, off the chain, or not signed by the platform."""


def _signed_bytes(seq: int, kind: str, body: bytes, prev: str, at: float) -> bytes:
    return canonical_json(
        {"seq": seq, "kind": kind, "body": body.decode("utf-8"), "prev": prev, "at": at}
    )


@dataclass(frozen=True)
class FeedEvent:
    """One event as stored at the platform and sent on the wire (``platform.proto``)."""

    seq: int
    kind: str
    body: bytes
    prev: str
    at: float
    hash: str
    signature: bytes

    def content(self) -> dict[str, Any]:
        """The decoded body (a ``FeedError`` if it is not a JSON object)."""
        try:
            data = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise FeedError(f"feed event {self.seq}: body is not JSON") from None
        if not isinstance(data, dict):
            raise FeedError(f"feed event {self.seq}: body is not a JSON object")
        return data

    def problem(self, public_key: Ed25519PublicKey, *, expected_seq: int, prev: str) -> str | None:
        """Why this event must not be applied after the event with hash ``prev`` (None: it may).

        Checked in order of cost: form, sequence, chain, hash, signature."""
        if self.kind not in KINDS:
            return f"unknown kind {self.kind[:32]!r}"
        if len(self.body) > MAX_BODY:
            return f"body of {len(self.body)} bytes exceeds {MAX_BODY}"
        if not math.isfinite(self.at):
            return "time is not a finite number"
        if self.seq != expected_seq:
            return f"seq {self.seq} where {expected_seq} was expected (a gap or a replay)"
        if self.prev != prev:
            return "does not chain to the previous event (prev hash differs)"
        signed = _signed_bytes(self.seq, self.kind, self.body, self.prev, self.at)
        if hashlib.sha256(signed).hexdigest() != self.hash:
            return "hash does not match its content"
        try:
            public_key.verify(self.signature, signed)
        except (InvalidSignature, TypeError, ValueError):
            return "signature does not verify with this node's platform_public_key"
        return None


def sign_event(
    key: Ed25519PrivateKey, *, seq: int, kind: str, body: Mapping[str, Any], prev: str, at: float
) -> FeedEvent:
    """Build and sign event ``seq`` (the platform side)."""
    if kind not in KINDS:
        raise FeedError(f"unknown feed event kind {kind!r} (known: {', '.join(KINDS)})")
    raw = canonical_json(dict(body))
    if len(raw) > MAX_BODY:
        raise FeedError(f"feed event body of {len(raw)} bytes exceeds {MAX_BODY}")
    signed = _signed_bytes(seq, kind, raw, prev, at)
    return FeedEvent(
        seq=seq,
        kind=kind,
        body=raw,
        prev=prev,
        at=at,
        hash=hashlib.sha256(signed).hexdigest(),
        signature=key.sign(signed),
    )
