"""Which purposes a node answers for at all, before any consent is looked at.

Why in the runtime: the dispatch core (``ServiceRuntime``) checks every request's
``RequestMeta.purpose`` against it before a handler runs, at every node and in the in-process
twin alike; the node applications only choose the allowed list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from federation.errors import ConfigError, Refused

PURPOSE_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
"""A purpose is a lowercase word of at most 64 characters (``financing``)."""


@dataclass(frozen=True)
class PurposePolicy:
    """Which purposes a node answers for at all, before any consent is looked at.

    Why separate from consent: 52号文 limits shared credit data to financing; a node refuses any
    other purpose even if some authorisation were (wrongly) issued for it.
    """

    allowed: Sequence[str] = field(default=("financing",))

    def __post_init__(self) -> None:
        if isinstance(self.allowed, str):
            object.__setattr__(self, "allowed", (self.allowed,))
        allowed = tuple(self.allowed)
        bad = [p for p in allowed if not isinstance(p, str) or not PURPOSE_PATTERN.fullmatch(p)]
        if not allowed or bad:
            raise ConfigError(
                f"allowed purposes must be non-empty lowercase words, got {list(allowed)}"
            )
        object.__setattr__(self, "allowed", allowed)

    def check(self, purpose: str) -> None:
        """Return if ``purpose`` is allowed; otherwise raise ``Refused('purpose', ...)``."""
        allowed = ", ".join(self.allowed)
        if not isinstance(purpose, str) or not purpose.strip():
            raise Refused(
                "purpose", f"no purpose given; every request must state one (allowed: {allowed})"
            )
        if purpose not in self.allowed:
            raise Refused(
                "purpose", f"purpose {purpose!r} is not allowed at this node (allowed: {allowed})"
            )
