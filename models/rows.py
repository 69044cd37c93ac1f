"""Row sets on the wire: one bitmask format for every protocol.

Why one module: SecureBoost's sample sets, a WOE or LR job's rows and LR's batches are all "which
rows of the alignment", sent as ``numpy.packbits`` of a bool vector. Two copies of the codec with
two error types had grown apart; the format is the same, so is the check.
"""

from __future__ import annotations

import numpy as np

from federation.errors import XinyidaiError

__all__ = ["MaskError", "mask_from_bytes", "mask_to_bytes"]


class MaskError(XinyidaiError):
    """A packed row bitmask has the wrong length or stray padding bits."""


def mask_to_bytes(mask: np.ndarray) -> bytes:
    """A row set as the wire's bitmask: ``numpy.packbits`` of a bool vector."""
    return np.packbits(np.asarray(mask, dtype=bool)).tobytes()


def mask_from_bytes(buf: bytes, n_rows: int, what: str = "bitmask") -> np.ndarray:
    """Inverse of :func:`mask_to_bytes`; refuses a wrong length or bits set past ``n_rows``."""
    expected = (n_rows + 7) // 8
    if len(buf) != expected:
        raise MaskError(f"{what} has {len(buf)} bytes, expected {expected} for {n_rows} rows")
    bits = np.unpackbits(np.frombuffer(buf, dtype=np.uint8))
    if bits[n_rows:].any():
        raise MaskError(f"{what} has bits set beyond row {n_rows}")
    return np.asarray(bits[:n_rows].astype(bool))
