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
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from federation.audit import canonical_json
from federation.errors import XinyidaiError
from federation.pki import node_id_problem
from parties.data import uscc as uscc_codes

__all__ = [
    "GENESIS",
    "KINDS",
    "MAX_WHITELIST",
    "FeedError",
    "FeedEvent",
    "authenticated_prefix",
    "sign_event",
    "whitelist_body",
]

GENESIS = "0" * 64
"""The ``prev`` of the first event."""

KINDS = ("grant", "revoke", "admit", "suspend", "reinstate", "whitelist")
"""grant: a signed authorisation; revoke: an authorisation withdrawn; admit / suspend /
reinstate: a bank's status in the institution registry; whitelist: a list of enterprises pushed
to one bank by region and industry (推送白名单; the bank keeps it, holders apply nothing)."""

MAX_WHITELIST = 500
"""Most USCCs one whitelist event carries (policy: a push fits one event body; split bigger
lists)."""

_REGION = re.compile(r"[0-9]{2}(?:[0-9]{2}){0,2}")
_INDUSTRY = re.compile(r"[A-T](?:[0-9]{2,4})?")

BAD_SIGNATURE = "signature does not verify with this node's platform_public_key"

MAX_BODY = 16 * 1024
"""Largest event body (bytes): an authorisation is about 400."""


class FeedError(XinyidaiError):
    """A feed event is malformed, out of order, off the chain, or not signed by the platform."""


def _signed_bytes(seq: int, kind: str, body_sha256: str, prev: str, at: float) -> bytes:
    """What the platform signs: the body by its digest, so an event can travel without its
    body (``FeedEvent.redacted``) and still chain and verify."""
    return canonical_json(
        {"seq": seq, "kind": kind, "body_sha256": body_sha256, "prev": prev, "at": at}
    )


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


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
    body_sha256: str = ""
    """The body's digest; given alone (``body`` empty) for a redacted event."""

    @property
    def digest(self) -> str:
        """The body's SHA-256: computed from the body when there is one."""
        return body_digest(self.body) if self.body else self.body_sha256

    @property
    def is_redacted(self) -> bool:
        """Sent without its body: another bank's grant, revocation or whitelist, as a bank
        follower receives it (``PlatformServicer.Feed``)."""
        return not self.body and bool(self.body_sha256)

    def redacted(self) -> FeedEvent:
        """This event without its body (its digest kept, so the chain still verifies)."""
        return FeedEvent(
            self.seq, self.kind, b"", self.prev, self.at, self.hash, self.signature, self.digest
        )

    def content(self) -> dict[str, Any]:
        """The decoded body (a ``FeedError`` if it is not a JSON object)."""
        try:
            data = json.loads(self.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise FeedError(f"feed event {self.seq}: body is not JSON") from None
        if not isinstance(data, dict):
            raise FeedError(f"feed event {self.seq}: body is not a JSON object")
        return data

    def problem(
        self,
        public_key: Ed25519PublicKey,
        *,
        expected_seq: int,
        prev: str,
        signature: bool = True,
    ) -> str | None:
        """Why this event must not be applied after the event with hash ``prev`` (None: it may).

        Checked in order of cost: form, sequence, chain, hash, signature. ``signature=False``
        leaves the signature out: a follower checking a page verifies the signature of its
        last event only (``signed_by``), which covers every event before it through the
        chain of hashes (``authenticated_prefix``)."""
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
        if self.body and self.body_sha256 and body_digest(self.body) != self.body_sha256:
            return "body does not match its digest"
        signed = _signed_bytes(self.seq, self.kind, self.digest, self.prev, self.at)
        if hashlib.sha256(signed).hexdigest() != self.hash:
            return "hash does not match its content"
        if signature and not self.signed_by(public_key):
            return BAD_SIGNATURE
        return None

    def signed_by(self, public_key: Ed25519PublicKey) -> bool:
        """Whether the event's signature verifies with ``public_key``."""
        signed = _signed_bytes(self.seq, self.kind, self.digest, self.prev, self.at)
        try:
            public_key.verify(self.signature, signed)
        except (InvalidSignature, TypeError, ValueError):
            return False
        return True


def authenticated_prefix(
    events: Sequence[FeedEvent], public_key: Ed25519PublicKey, *, seq: int, prev: str
) -> tuple[list[FeedEvent], tuple[FeedEvent, str] | None]:
    """The events after ``seq`` (whose hash is ``prev``) that may be applied, in order, and the
    first that may not with its problem (None if all may).

    Why one signature per page: each event's signed bytes name the previous event's hash, and
    each hash is checked against its event's content, so the platform's signature on the last
    event of an unbroken run covers every event in it - one Ed25519 verification per page
    instead of one per event. Only when that signature fails are the earlier events' own
    checked, to apply what a genuine signature covers and refuse the first event none does."""
    run: list[FeedEvent] = []
    bad: tuple[FeedEvent, str] | None = None
    for event in events:
        if event.seq <= seq:
            continue  # applied already
        problem = event.problem(public_key, expected_seq=seq + 1, prev=prev, signature=False)
        if problem is not None:
            bad = (event, problem)
            break
        run.append(event)
        seq, prev = event.seq, event.hash
    if run and not run[-1].signed_by(public_key):
        # the longest prefix a signature covers; the event after it is not the platform's
        for i in range(len(run) - 2, -1, -1):
            if run[i].signed_by(public_key):
                return run[: i + 1], (run[i + 1], BAD_SIGNATURE)
        return [], (run[0], BAD_SIGNATURE)
    return run, bad


def sign_event(
    key: Ed25519PrivateKey, *, seq: int, kind: str, body: Mapping[str, Any], prev: str, at: float
) -> FeedEvent:
    """Build and sign event ``seq`` (the platform side)."""
    if kind not in KINDS:
        raise FeedError(f"unknown feed event kind {kind!r} (known: {', '.join(KINDS)})")
    raw = canonical_json(dict(body))
    if len(raw) > MAX_BODY:
        raise FeedError(f"feed event body of {len(raw)} bytes exceeds {MAX_BODY}")
    digest = body_digest(raw)
    signed = _signed_bytes(seq, kind, digest, prev, at)
    return FeedEvent(
        seq=seq,
        kind=kind,
        body=raw,
        prev=prev,
        at=at,
        hash=hashlib.sha256(signed).hexdigest(),
        signature=key.sign(signed),
        body_sha256=digest,
    )


def whitelist_body(
    *, bank: str, region: str, industry: str, usccs: Sequence[str], note: str
) -> dict[str, Any]:
    """A ``whitelist`` event's body, checked: the bank's node id, a region code (2, 4 or 6
    digits of the administrative division code, e.g. 5101 Chengdu), an industry (a GB/T 4754
    section letter, optionally with its division digits, e.g. C or C13), 1..``MAX_WHITELIST``
    distinct USCCs each with a valid check digit, and a note. ``FeedError`` naming the first
    problem (a bad USCC by its position in the list)."""
    problem = node_id_problem(bank)
    if problem is not None:
        raise FeedError(f"whitelist bank: {problem}")
    if not isinstance(region, str) or not _REGION.fullmatch(region):
        raise FeedError(
            f"whitelist region {str(region)[:16]!r}: must be 2, 4 or 6 digits of an "
            "administrative division code (e.g. 5101)"
        )
    if not isinstance(industry, str) or not _INDUSTRY.fullmatch(industry):
        raise FeedError(
            f"whitelist industry {str(industry)[:16]!r}: must be a GB/T 4754 section letter "
            "A-T, optionally with its division digits (e.g. C or C13)"
        )
    codes: list[str] = []
    for i, raw in enumerate(usccs, start=1):
        code = uscc_codes.normalise(str(raw))
        why = uscc_codes.problem(code)
        if why is not None:
            raise FeedError(f"whitelist entry {i} ({str(raw)[:20]!r}): {why}")
        if code not in codes:
            codes.append(code)
    if not codes:
        raise FeedError("a whitelist push needs at least one USCC")
    if len(codes) > MAX_WHITELIST:
        raise FeedError(
            f"whitelist of {len(codes)} USCCs exceeds the limit of {MAX_WHITELIST} per push; "
            "split it into several pushes"
        )
    text = note.strip() if isinstance(note, str) else ""
    if len(text) > 500:
        raise FeedError(f"whitelist note is {len(text)} characters (limit 500)")
    return {"bank": bank, "region": region, "industry": industry, "usccs": codes, "note": text}
