"""What the portal shows from the platform's feed: one enterprise's authorisations, the
enterprises that authorised one bank, and counts per bank.

Why reads of the feed's own tables: the feed store keeps, next to the signed events, which
authorisation is for whom and whether it was revoked (``parties.platform.feed``); a page needs
those rows filtered by enterprise or bank, with the details from the grant event's body (counts
per bank are ``parties.platform.stats``). Nothing here writes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from parties.platform.feed import FeedStore, _auths, _events

__all__ = ["AuthorisationView", "authorisations_for_bank", "authorisations_of"]


@dataclass(frozen=True)
class AuthorisationView:
    """One authorisation as the register has it (no signature)."""

    auth_id: str
    uscc: str
    bank_id: str
    purpose: str
    categories: tuple[str, ...]
    valid_from: float
    valid_until: float
    granted_seq: int
    revoked_seq: int | None

    def state(self, now: float | None = None) -> str:
        clock = time.time() if now is None else now
        if self.revoked_seq is not None:
            return "revoked"
        if clock >= self.valid_until:
            return "expired"
        if clock < self.valid_from:
            return "pending"
        return "active"


def _views(feed: FeedStore, where: Any) -> list[AuthorisationView]:
    stmt = (
        select(_auths, _events.c.body)
        .join(_events, _events.c.seq == _auths.c.granted_seq)
        .where(where)
        .order_by(_auths.c.granted_seq.desc())
    )
    out = []
    with feed._engine.connect() as conn:
        for row in conn.execute(stmt):
            auth = json.loads(bytes(row.body).decode("utf-8")).get("auth", {})
            out.append(
                AuthorisationView(
                    auth_id=row.auth_id,
                    uscc=row.uscc,
                    bank_id=row.bank_id,
                    purpose=str(auth.get("purpose", "")),
                    categories=tuple(auth.get("categories", ())),
                    valid_from=float(auth.get("valid_from", 0.0)),
                    valid_until=float(auth.get("valid_until", 0.0)),
                    granted_seq=int(row.granted_seq),
                    revoked_seq=None if row.revoked_seq is None else int(row.revoked_seq),
                )
            )
    return out


def authorisations_of(feed: FeedStore, uscc: str) -> list[AuthorisationView]:
    """Every authorisation the enterprise gave through the platform, newest first."""
    return _views(feed, _auths.c.uscc == uscc)


def authorisations_for_bank(feed: FeedStore, bank_id: str) -> list[AuthorisationView]:
    """Every authorisation given to ``bank_id``, newest first (its operator's page)."""
    return _views(feed, _auths.c.bank_id == bank_id)
