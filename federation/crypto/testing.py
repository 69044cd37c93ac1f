"""The one explicit switch that lets tests use Paillier keys shorter than 2048 bits.

Small keys make unit tests fast, but a small key in production breaks every guarantee the
platform gives, so nothing turns this on by default and every small key made or accepted while
it is on is announced with both a ``warnings.warn`` and a ``logging.WARNING`` record. Production
code never imports this module's switch; ``federation.crypto.paillier`` only asks whether it is on.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("federation.crypto")

_lock = threading.Lock()
_depth = 0


class InsecureKeyWarning(UserWarning):
    """A Paillier key below the production minimum was made or accepted (tests only)."""


@contextmanager
def allow_insecure_key_sizes() -> Iterator[None]:
    """Within this block, keys below 2048 bits are accepted, each time with a loud warning.

    Process-wide (not per thread) because the crypto engine's worker processes inherit nothing
    from it: the check happens once, in the process that makes or loads the key. Nests safely.
    """
    global _depth
    with _lock:
        _depth += 1
    logger.warning("INSECURE: small Paillier keys are allowed (test-only switch is ON)")
    try:
        yield
    finally:
        with _lock:
            _depth -= 1


def insecure_key_sizes_allowed() -> bool:
    """True only inside :func:`allow_insecure_key_sizes`."""
    return _depth > 0


def warn_insecure_key(n_bits: int, what: str) -> None:
    """Announce that a small key was made or accepted under the test-only switch."""
    message = (
        f"INSECURE {n_bits}-bit Paillier key {what} under the test-only switch "
        "allow_insecure_key_sizes(); never do this outside tests"
    )
    warnings.warn(message, InsecureKeyWarning, stacklevel=3)
    logger.warning(message)
