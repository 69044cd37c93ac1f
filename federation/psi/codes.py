"""Enterprise codes (USCC) as both sides must hash them: normalised, checked, fixed-width.

Registry exports often carry full-width characters or padding; both sides must hash the same
bytes, so normalisation is part of the protocol.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

import numpy as np

from federation.psi.errors import PsiInputError

CODE_LEN = 18
USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
MAX_SET = 2**32 - 1  # positions travel as uint32

_VALID_BYTE = np.zeros(256, dtype=bool)
_VALID_BYTE[np.frombuffer(USCC_CHARSET.encode(), dtype=np.uint8)] = True
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a") : ord("z") + 1] -= 32


def normalise_codes(codes: Sequence[str], *, who: str = "input") -> np.ndarray:
    """Return the codes as a fixed-width ``S18`` array after NFKC, strip and upper-casing.

    The check digit is not verified (a code's validity is the data loader's concern; PSI only
    needs equal codes to be equal). Raises :class:`PsiInputError` naming rows for bad or
    duplicate codes.
    """
    if isinstance(codes, (str, bytes)):
        raise PsiInputError(f"{who} codes: expected a sequence of strings, got one {type(codes)}")
    n = len(codes)
    if n == 0:
        raise PsiInputError(f"{who} codes: the list is empty")
    if n > MAX_SET:
        raise PsiInputError(f"{who} codes: {n} codes exceed the limit of {MAX_SET}")
    arr = _clean_codes(codes, n)
    if arr is None:
        arr = _normalise_slowly(codes, n, who)
    out = np.ascontiguousarray(arr).view(f"S{CODE_LEN}").reshape(n)
    order = np.argsort(out, kind="stable")
    dup = np.flatnonzero(out[order][1:] == out[order][:-1])
    if dup.size:
        pairs = [f"rows {order[j]} and {order[j + 1]}: same code" for j in dup[:20]]
        raise PsiInputError(_summarise(f"{who} codes ({dup.size} duplicate(s))", pairs))
    return out


def _clean_codes(codes: Sequence[str], n: int) -> np.ndarray | None:
    """Fast path for the usual input, ASCII codes of 18 characters: (n, 18) bytes, or None.

    NFKC and strip are identities on such codes, so only upper-casing is left; anything else
    goes the slow way, which also names the offending rows.
    """
    try:
        joined = "".join(codes)
    except TypeError:
        return None
    if len(joined) != n * CODE_LEN or not joined.isascii():
        return None
    if np.any(np.fromiter(map(len, codes), dtype=np.int64, count=n) != CODE_LEN):
        return None
    arr = _UPPER[np.frombuffer(joined.encode("ascii"), dtype=np.uint8)].reshape(n, CODE_LEN)
    return arr if bool(_VALID_BYTE[arr].all()) else None


def _normalise_slowly(codes: Sequence[str], n: int, who: str) -> np.ndarray:
    problems: list[str] = []
    norm: list[str] = []
    for i, c in enumerate(codes):
        if not isinstance(c, str):
            problems.append(f"row {i}: not a string ({type(c).__name__})")
            norm.append("0" * CODE_LEN)
            continue
        s = unicodedata.normalize("NFKC", c).strip().upper()
        if len(s) != CODE_LEN or not s.isascii():
            problems.append(f"row {i}: not {CODE_LEN} ASCII characters after normalisation")
            s = "0" * CODE_LEN
        norm.append(s)
    arr = np.frombuffer("".join(norm).encode("ascii"), dtype=np.uint8).reshape(n, CODE_LEN)
    bad = np.flatnonzero(~_VALID_BYTE[arr].all(axis=1))
    problems.extend(f"row {i}: character outside the USCC charset" for i in bad[:20])
    if problems:
        raise PsiInputError(_summarise(f"{who} codes", problems))
    return arr


def _summarise(what: str, problems: list[str]) -> str:
    shown = "; ".join(problems[:5])
    more = f"; and {len(problems) - 5} more" if len(problems) > 5 else ""
    return f"{what}: {shown}{more}"
