"""What the PSI hands back, and how big an intersection must be before anyone gets it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from federation.errors import ConfigError
from federation.psi.errors import PsiOverlapError

TAG_BYTES = 16
POSITION_BYTES = 4


@dataclass
class PsiStats:
    """Counts of the expensive operations a party did; lets tests and operators see cache use."""

    hashed: int = 0
    own_blinded: int = 0
    queries_blinded: int = 0
    unblinded: int = 0
    cache_hit: bool = False


@dataclass(frozen=True, eq=False)
class PsiResult:
    """The bank's view of one bank-holder intersection, in the common (ascending-code) order.

    ``bank_rows[i]`` is a row of the bank's list and ``holder_positions[i]`` the index of the
    same enterprise in the holder's *sent* (sorted) blinded set; only the latter is sent.
    """

    bank_rows: np.ndarray
    holder_positions: np.ndarray
    size: int
    holder_set_size: int

    def positions_bytes(self) -> bytes:
        """The message for the holder: little-endian uint32 positions, common order."""
        return self.holder_positions.astype("<u4").tobytes()


@dataclass(frozen=True, eq=False)
class PsiAlignment:
    """Bank rows present at *every* holder, with each holder's positions, in the common order."""

    bank_rows: np.ndarray
    holder_positions: tuple[np.ndarray, ...]
    size: int

    def positions_bytes(self, holder: int) -> bytes:
        """The message for holder number ``holder`` (index into the results given to align)."""
        return self.holder_positions[holder].astype("<u4").tobytes()


@dataclass(frozen=True, eq=False)
class LocalPsi:
    """Both halves' answers from :func:`run_psi_local`."""

    bank_rows: np.ndarray
    holder_rows: np.ndarray
    size: int


@dataclass(frozen=True, eq=False)
class LocalAlignment:
    """All parties' answers from :func:`align_local`: row ``i`` is one enterprise everywhere."""

    bank_rows: np.ndarray
    holder_rows: tuple[np.ndarray, ...]
    size: int


def check_min_overlap(min_overlap: int | float) -> int | float:
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float)):
        raise ConfigError(f"min_overlap must be a count or a fraction, got {min_overlap!r}")
    if isinstance(min_overlap, int):
        if min_overlap < 1:
            raise ConfigError(f"min_overlap count must be >= 1, got {min_overlap}")
    elif not 0.0 < min_overlap <= 1.0:
        raise ConfigError(f"min_overlap fraction must be in (0, 1], got {min_overlap}")
    return min_overlap


def required(min_overlap: int | float, base: int) -> int:
    if isinstance(min_overlap, int):
        return min_overlap
    # round() first: 0.07 * 100 is 7.000000000000001 in binary floating point, not 8 needed.
    return max(1, math.ceil(round(min_overlap * base, 6)))


def overlap_error(size: int, required: int, spec: int | float, who: str) -> PsiOverlapError:
    if size == 0:
        return PsiOverlapError(0, required, f"no overlap: the {who} found no enterprise in common")
    return PsiOverlapError(
        size,
        required,
        f"overlap too small: {size} enterprises in common, the {who} requires at least "
        f"{required} (min_overlap={spec})",
    )
