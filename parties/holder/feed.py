"""A holder following the platform's feed, and the institution check its gate calls.

The follower itself (checking, applying, long-polling) is ``parties.platform.follower``, shared
with the bank; a holder's follower applies grants and revocations to its consent registry, a page
per transaction.

``InstitutionCheck`` is the hook the holder gate calls for every request from a bank: with a
platform configured, only banks the platform admitted and has not suspended are served, and only
over the certificate the platform admitted; without one (dev mode) every bank the holder's
``peers`` list is served, as before.
"""

from __future__ import annotations

import logging
from typing import Any

from federation.audit import AuditLog
from federation.errors import Refused
from parties.authorisation import utc_text
from parties.config import NodeConfig
from parties.consent import ConsentRegistry
from parties.platform.follower import PAGE, BankStatus, FeedFollower, FollowState

__all__ = [
    "PAGE",
    "BankStatus",
    "FeedFollower",
    "FollowState",
    "InstitutionCheck",
    "attach_follower",
]

log = logging.getLogger(__name__)


class InstitutionCheck:
    """The holder gate's bank check: admitted and not suspended, per the platform's feed.

    Without a follower (no ``platform:`` in ``node.yaml``) it admits every bank (dev mode)."""

    def __init__(self, follower: FeedFollower | None = None):
        self.follower = follower

    @property
    def follows_platform(self) -> bool:
        return self.follower is not None

    def check(self, bank: str) -> None:
        follower = self.follower
        if follower is None:
            return
        status = follower.bank_status(bank)
        if status is None:
            raise Refused(
                "institution",
                f"bank '{bank}' is not admitted by the platform (not in this holder's "
                f"institution registry, feed seq {follower.seq})",
            )
        if status.status != "admitted":
            raise Refused(
                "institution",
                f"bank '{bank}' is suspended by the platform since {utc_text(status.at)}: "
                f"{status.reason}",
            )

    def check_certificate(self, caller: str, cert_sha256: str) -> None:
        """Refuse a registered bank whose presented certificate is not the one the platform
        admitted (a key or certificate the CA issued again for the same node id, stolen or
        re-issued). Callers not in the registry (the platform itself) pass here; whether a
        bank may be served at all is ``check``'s question.

        A bank that re-issues its certificate needs a new ``xinyidai platform admit`` with the
        new certificate before holders serve it again."""
        follower = self.follower
        if follower is None:
            return
        status = follower.bank_status(caller)
        if status is None or cert_sha256 == status.cert_sha256:
            return
        shown = f"sha256 {cert_sha256[:12]}..." if cert_sha256 else "none"
        raise Refused(
            "institution",
            f"bank '{caller}' presented a certificate ({shown}) that is not the one the platform "
            f"admitted (sha256 {status.cert_sha256[:12]}...); a re-issued certificate needs a "
            "new admission at the platform",
        )

    def unknown_auth(self) -> str:
        """What to add to an ``auth-id`` refusal when following a platform."""
        follower = self.follower
        if follower is None:
            return ""
        return f"; not yet known at this holder (platform feed applied up to seq {follower.seq})"


def attach_follower(
    config: NodeConfig, *, consent: ConsentRegistry, gate: Any, public_key: Any, audit: AuditLog
) -> FeedFollower | None:
    """The holder node's follower (started with the node), wired into its gate; None and a
    log line saying so when ``node.yaml`` names no platform (dev mode)."""
    if config.platform is None:
        log.warning(
            "node %s: no platform configured (dev mode): authorisations come only from "
            "`xinyidai consent grant`, and every bank listed under peers is served",
            config.node_id,
        )
        return None
    follower = FeedFollower(config=config, consent=consent, public_key=public_key, audit=audit)
    gate.institutions = InstitutionCheck(follower)
    log.info(
        "node %s: following platform %s at %s (long poll, applied up to seq %d)",
        config.node_id,
        config.platform.node_id,
        config.platform.address,
        follower.seq,
    )
    return follower
