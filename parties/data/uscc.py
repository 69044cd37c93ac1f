"""Unified social credit codes (统一社会信用代码, GB 32100-2015): the enterprise key everywhere.

Every table, consent record and audit entry names an enterprise by its USCC, so a mistyped code
must be caught where it enters the system, with a reason a clerk can act on, rather than silently
failing to join. Layout of the 18 characters::

    position  1      registration authority (e.g. '9' industry and commerce)
    position  2      entity category ('1' enterprise, '2' individual business, '3' cooperative)
    positions 3-8    administrative region code (GB/T 2260), six digits
    positions 9-17   organisation code (GB 11714): eight characters and its own check character
    position  18     check character over positions 1-17

The characters come from a 31-character set without I, O, Z, S, V (easily confused). Both check
characters are validated: the organisation-code check (mod 11, '0'-'9' or 'X') and the overall
check (mod 31).

``problem`` validates a code exactly as given; call ``normalise`` first to accept full-width
characters, spaces and lower case as typed by people. ``problems`` is the vectorised form used
for whole tables. ``normalise_plain`` does the same for the plain row ids of benchmark data
(trim, full-width to half-width, case-fold), so ``' A17'`` and ``'ａ17'`` are one row id.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from federation.errors import ConfigError

__all__ = [
    "CHARSET",
    "CHENGDU_REGIONS",
    "check_character",
    "from_plain_id",
    "generate",
    "is_valid",
    "normalise",
    "normalise_plain",
    "org_check_character",
    "problem",
    "problems",
    "region_code",
]

CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""The 31 characters of GB 32100-2015, in value order (value = index)."""

WEIGHTS = np.array([1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28], dtype=np.int64)
"""Weights of positions 1-17 for the overall check character (3**i mod 31)."""

ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
"""Weights of the eight organisation-code characters (GB 11714)."""

CHENGDU_REGIONS: tuple[str, ...] = (
    "510104",  # 锦江区
    "510105",  # 青羊区
    "510106",  # 金牛区
    "510107",  # 武侯区
    "510108",  # 成华区
    "510112",  # 龙泉驿区
    "510113",  # 青白江区
    "510114",  # 新都区
    "510115",  # 温江区
    "510116",  # 双流区
    "510117",  # 郫都区
)
"""Districts of Chengdu: the default city of the synthetic data and of ``from_plain_id``."""

_VALUE = {c: i for i, c in enumerate(CHARSET)}
_N = len(CHARSET)
_ORG_SPACE = _N**8  # 852,891,037,441 organisation-code bodies

# Lookup tables over code points 0..127 (anything above is mapped to 127, which is invalid).
_LUT_VALUE = np.full(128, -1, dtype=np.int64)  # USCC value, -1 if not in the charset
_LUT_ORG = np.full(128, -1, dtype=np.int64)  # GB 11714 value: digits 0-9, letters A=10..Z=35
for _c, _v in _VALUE.items():
    _LUT_VALUE[ord(_c)] = _v
for _i in range(10):
    _LUT_ORG[ord("0") + _i] = _i
for _i in range(26):
    _LUT_ORG[ord("A") + _i] = 10 + _i
_LUT_ORG[_LUT_VALUE < 0] = -1  # inside a USCC only charset characters may appear
_CHARSET_CODES = np.array([ord(c) for c in CHARSET], dtype=np.int64)
_ORG_CHECK_CODES = np.array([ord(c) for c in "0123456789X"], dtype=np.int64)  # index = value


def normalise(code: str) -> str:
    """Return ``code`` as it should be stored: NFKC, without any whitespace, upper case.

    NFKC turns full-width characters typed with a Chinese input method into ASCII, so
    '９１５１…' and '9151…' are the same enterprise.
    """
    text = unicodedata.normalize("NFKC", str(code))
    return "".join(text.split()).upper()


def normalise_plain(ids: Iterable[object] | np.ndarray | pd.Series) -> np.ndarray:
    """Plain row ids as they are matched: NFKC (full-width to half-width), trimmed, case-folded;
    an object array, ``""`` where an id is missing or blank.

    Why the same rules as USCCs: two parties that typed the same id differently ('  ab12',
    'AB12', 'ＡＢ１２') would otherwise map it to different codes and the row would silently
    fail to join. Inner spaces are kept: in a plain id they may be part of the id.
    """
    s = pd.Series(ids.to_numpy() if isinstance(ids, pd.Series | pd.Index) else list(ids))
    missing = s.isna().to_numpy()
    text = s.astype(object).where(~missing, "").astype(str)
    wide = text.str.contains(r"[^\x00-\x7f]", regex=True).to_numpy(dtype=bool)
    if wide.any():
        text[wide] = text[wide].map(lambda v: unicodedata.normalize("NFKC", v))
    out = text.str.strip().str.casefold().to_numpy(dtype=object)
    out[missing] = ""
    return out


def _org_check(body8: str) -> str:
    total = sum(int(_LUT_ORG[ord(c)]) * int(w) for c, w in zip(body8, ORG_WEIGHTS, strict=True))
    c = 11 - total % 11
    return "0" if c == 11 else "X" if c == 10 else str(c)


def org_check_character(first8: str) -> str:
    """The GB 11714 check character of an organisation code body (USCC positions 9-16)."""
    if len(first8) != 8 or any(c not in _VALUE for c in first8):
        raise ValueError(f"organisation code body must be 8 USCC characters, got {first8!r}")
    return _org_check(first8)


def check_character(first17: str) -> str:
    """The GB 32100-2015 check character (position 18) for the first 17 characters."""
    if len(first17) != 17 or any(c not in _VALUE for c in first17):
        raise ValueError(f"expected 17 USCC characters, got {first17!r}")
    total = sum(_VALUE[c] * int(w) for c, w in zip(first17, WEIGHTS, strict=True))
    return CHARSET[(_N - total % _N) % _N]


def problem(code: object) -> str | None:
    """Why ``code`` is not a valid USCC, as one human sentence; ``None`` if it is valid.

    The first problem found is reported, in the order a person would fix them: length,
    characters, region, organisation-code check, overall check.
    """
    if not isinstance(code, str):
        if (
            code is None
            or code is pd.NA
            or code is pd.NaT
            or (isinstance(code, float) and math.isnan(code))
        ):
            return "missing"
        return f"not text: {code!r}"
    if code == "":
        return "empty"
    if len(code) != 18:
        return f"length {len(code)}, expected 18"
    for pos, ch in enumerate(code, start=1):
        if ch not in _VALUE:
            hint = ""
            if normalise(ch) in _VALUE:
                hint = " (normalise first: upper case, half-width)"
            elif ch.isspace():
                hint = " (whitespace)"
            return f"character {ch!r} at position {pos} is not allowed{hint}"
    if not code[2:8].isdigit():
        return "region code at positions 3-8 is not 6 digits"
    org_expected = _org_check(code[8:16])
    if code[16] != org_expected:
        return (
            f"organisation code check character (position 17) is {code[16]!r}, "
            f"expected {org_expected!r}"
        )
    expected = check_character(code[:17])
    if code[17] != expected:
        return f"check character is {code[17]!r}, expected {expected!r}"
    return None


def is_valid(code: object) -> bool:
    """True when ``code`` is a valid USCC exactly as given (not normalised)."""
    return problem(code) is None


def region_code(code: str) -> str:
    """The six-digit administrative region code (positions 3-8) of a valid USCC."""
    reason = problem(code)
    if reason is not None:
        raise ValueError(f"invalid USCC {code!r}: {reason}")
    return code[2:8]


def _valid_mask_18(u18: np.ndarray) -> np.ndarray:
    """Validity of an array of exactly-18-character strings (dtype ``<U18``), vectorised."""
    cp = u18.view(np.uint32).reshape(len(u18), 18).astype(np.int64)
    cp = np.minimum(cp, 127)
    vals = _LUT_VALUE[cp]
    ok = (vals >= 0).all(axis=1)
    ok &= ((cp[:, 2:8] >= ord("0")) & (cp[:, 2:8] <= ord("9"))).all(axis=1)
    org = _LUT_ORG[cp[:, 8:16]]
    c = 11 - (org @ ORG_WEIGHTS) % 11
    c = np.where(c == 11, 0, c)  # value 10 is 'X'
    ok &= cp[:, 16] == _ORG_CHECK_CODES[c]
    s = vals[:, :17] @ WEIGHTS
    ok &= cp[:, 17] == _CHARSET_CODES[(_N - s % _N) % _N]
    return ok


def problems(codes: Iterable[object] | np.ndarray | pd.Series) -> np.ndarray:
    """Vectorised ``problem``: an object array with ``None`` where the code is valid.

    Validity is decided with numpy over the code points of all codes at once; only the
    invalid codes go through ``problem`` to get their human-readable reason, so a clean
    column of a million codes costs about a second.
    """
    if isinstance(codes, pd.Series | pd.Index):
        arr = codes.to_numpy(dtype=object)
    elif isinstance(codes, np.ndarray):
        arr = codes.reshape(-1)
    else:
        arr = np.asarray(list(codes), dtype=object)
    out = np.full(len(arr), None, dtype=object)
    if len(arr) == 0:
        return out
    if arr.dtype.kind == "U":  # a plain string array: nothing can be missing or non-text
        missing = np.zeros(len(arr), dtype=bool)
        u = arr
    else:
        arr = arr.astype(object)
        missing = pd.isna(arr)
        u = np.where(missing, "", arr).astype(str)
    ok = np.zeros(len(arr), dtype=bool)
    is18 = (np.strings.str_len(u) == 18) & ~missing
    if is18.any():
        ok[is18] = _valid_mask_18(u[is18].astype("<U18"))
    # Non-strings that merely print like a code (e.g. bytes) are still invalid.
    if arr.dtype == object and ok.any():
        idx = np.flatnonzero(ok)
        if pd.api.types.infer_dtype(arr[idx], skipna=False) != "string":
            not_str = np.fromiter((not isinstance(x, str) for x in arr[idx]), bool, len(idx))
            ok[idx[not_str]] = False
    for i in np.flatnonzero(~ok):
        out[i] = problem(arr[i])
    return out


def _check_region_codes(region_codes: Sequence[str]) -> np.ndarray:
    regions = [str(r) for r in region_codes]
    bad = [r for r in regions if len(r) != 6 or not r.isdigit()]
    if not regions or bad:
        raise ConfigError(f"region codes must be non-empty 6-digit strings, got {bad or regions}")
    return np.array(regions, dtype="<U6")


def _assemble(prefix2: str, regions: np.ndarray, org_body: np.ndarray) -> np.ndarray:
    """Build full codes from 2-char prefix, region strings and (n, 8) charset-value bodies."""
    n = len(regions)
    cp = np.empty((n, 18), dtype=np.uint32)
    cp[:, 0] = ord(prefix2[0])
    cp[:, 1] = ord(prefix2[1])
    cp[:, 2:8] = regions.astype("<U6").view(np.uint32).reshape(n, 6)
    cp[:, 8:16] = _CHARSET_CODES[org_body]
    org_vals = _LUT_ORG[cp[:, 8:16].astype(np.int64)]
    c = 11 - (org_vals @ ORG_WEIGHTS) % 11
    cp[:, 16] = _ORG_CHECK_CODES[np.where(c == 11, 0, c)]
    vals = _LUT_VALUE[cp[:, :17].astype(np.int64)]
    s = vals @ WEIGHTS
    cp[:, 17] = _CHARSET_CODES[(_N - s % _N) % _N]
    return np.ascontiguousarray(cp).view("<U18").reshape(n).astype(object)


def generate(
    rng: np.random.Generator,
    n: int,
    region_codes: Sequence[str],
    *,
    category: str = "1",
    authority: str = "9",
) -> np.ndarray:
    """``n`` distinct valid USCCs (object array) with regions drawn from ``region_codes``.

    Registration authority defaults to '9' (market regulation, i.e. industry and commerce),
    which issues the codes of almost all SMEs.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if (
        len(category) != 1
        or category not in _VALUE
        or len(authority) != 1
        or (authority not in _VALUE)
    ):
        raise ConfigError(
            f"authority and category must be single USCC characters, got "
            f"{authority!r}, {category!r}"
        )
    regions = np.unique(_check_region_codes(region_codes))
    # Draw (region, body) as one integer key so uniqueness is a cheap integer operation.
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n:
        need = n - len(keys)
        fresh = rng.integers(0, len(regions), size=need) * _ORG_SPACE + rng.integers(
            0, _ORG_SPACE, size=need
        )
        merged = np.concatenate([keys, fresh])
        _, first = np.unique(merged, return_index=True)
        keys = merged[np.sort(first)]
    keys = keys[:n]
    return _assemble(authority + category, regions[keys // _ORG_SPACE], _bodies(keys % _ORG_SPACE))


# ---------------------------------------------------------------------------------------------
# Deterministic codes for the plain row ids of public benchmark data.

_HALF_BITS = 20  # Feistel over 40 bits, cycle-walked into _ORG_SPACE
_MASK = (1 << _HALF_BITS) - 1
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fast, well-mixing keyed round function for the Feistel network."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def _round_keys(namespace: str) -> np.ndarray:
    digest = hashlib.sha256(f"xinyidai-uscc:{namespace}".encode()).digest()
    return np.frombuffer(digest[:32], dtype="<u8").astype(np.uint64)


def _feistel(x: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """A keyed permutation of [0, 2**40): injective, so distinct ids give distinct bodies."""
    left = x >> np.uint64(_HALF_BITS)
    right = x & np.uint64(_MASK)
    for k in keys:
        with np.errstate(over="ignore"):
            f = _mix64(right ^ k) & np.uint64(_MASK)
        left, right = right, left ^ f
    return (left << np.uint64(_HALF_BITS)) | right


def _permute(x: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Cycle-walk the 40-bit permutation into [0, 31**8): still a bijection on that range."""
    y = _feistel(x, keys)
    out_of_range = y >= np.uint64(_ORG_SPACE)
    while out_of_range.any():
        y[out_of_range] = _feistel(y[out_of_range], keys)
        out_of_range = y >= np.uint64(_ORG_SPACE)
    return y


def _bodies(y: np.ndarray) -> np.ndarray:
    """Base-31 digits (n, 8) of numbers in [0, 31**8)."""
    digits = np.empty((len(y), 8), dtype=np.int64)
    rest = y.astype(np.uint64)
    for j in range(7, -1, -1):
        digits[:, j] = (rest % np.uint64(_N)).astype(np.int64)
        rest = rest // np.uint64(_N)
    return digits


def _hash_ints(ids: Sequence[object], namespace: str, salt: int = 0) -> np.ndarray:
    out = np.empty(len(ids), dtype=np.uint64)
    for i, v in enumerate(ids):
        d = hashlib.blake2b(f"{namespace}\x00{salt}\x00{v}".encode(), digest_size=8).digest()
        out[i] = int.from_bytes(d, "little") % _ORG_SPACE
    return out


def _int_like(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask, values): which ids are non-negative integers below 31**8, written canonically.

    Integer ids and their decimal text ('25115', 25115, 25115.0) are treated alike, so a party
    that read the id column as text gets the same codes as one that read it as numbers.
    """
    n = len(arr)
    if arr.dtype.kind in "iu":
        vals = arr.astype(np.int64)
        mask = np.ones(n, dtype=bool)
    else:
        num = pd.to_numeric(pd.Series(arr, dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        mask = np.isfinite(num) & (num == np.round(num))
        vals = np.where(mask, num, 0).astype(np.int64)
        if arr.dtype.kind != "f":
            # Text must be the canonical decimal form ('007' and '7.0' stay text ids).
            texts = pd.Series(arr, dtype=object).astype(str).str.strip().to_numpy()
            mask &= texts == vals.astype(str)
    mask &= (vals >= 0) & (vals < _ORG_SPACE)
    return mask, np.where(mask, vals, 0)


def from_plain_id(
    ids: Iterable[object] | np.ndarray | pd.Series,
    *,
    namespace: str = "xinyidai",
    region_codes: Sequence[str] = CHENGDU_REGIONS,
) -> np.ndarray:
    """Map plain row ids (e.g. the ``id`` column of a public benchmark) to valid USCCs.

    Why: public credit benchmarks key rows by a row number, but every part of this system keys
    enterprises by USCC. Two parties that map the same ids with the same ``namespace`` get the
    same codes without talking to each other, so their tables still align.

    Integer ids in [0, 31**8) (numbers or their canonical decimal text) go through a keyed
    permutation (a Feistel network whose round keys are a hash of ``namespace``): distinct ids
    always get distinct codes and an id's code never depends on which other ids are mapped.
    Other ids are hashed; if a text id collides with another id, the text id (the later-sorting
    one if both are text) is re-hashed with a counter until free, deterministically for a given
    set of ids. The same id always maps to the same code; distinct ids map to distinct codes
    (checked before returning).
    """
    if isinstance(ids, pd.Series | pd.Index):
        arr = ids.to_numpy()
    elif isinstance(ids, np.ndarray):
        arr = ids
    else:
        arr = np.asarray(list(ids), dtype=object)
    arr = arr.reshape(-1)
    regions = _check_region_codes(region_codes)
    keys = _round_keys(namespace)
    if len(arr) == 0:
        return np.empty(0, dtype=object)
    if pd.isna(arr).any():
        raise ValueError("ids contain missing values")

    is_int, ints = _int_like(arr)
    y = np.empty(len(arr), dtype=np.uint64)
    y[is_int] = _permute(ints[is_int].astype(np.uint64), keys)
    if not is_int.all():
        text_pos = np.flatnonzero(~is_int)
        texts = np.array([str(v) for v in arr[text_pos]], dtype=object)
        uniq, inverse = np.unique(texts, return_inverse=True)
        taken = set(np.unique(y[is_int]).tolist())
        y_u = _hash_ints(list(uniq), namespace)
        # uniq is sorted: walking it in order, the earlier text keeps a contested value.
        for i in range(len(uniq)):
            salt = 0
            while int(y_u[i]) in taken:
                salt += 1
                y_u[i] = _hash_ints([uniq[i]], namespace, salt)[0]
            taken.add(int(y_u[i]))
        y[text_pos] = y_u[inverse]

    region_idx = (_mix64(y ^ keys[0]) % np.uint64(len(regions))).astype(np.int64)
    codes = _assemble("91", regions[region_idx], _bodies(y))
    canon = np.where(is_int, ints.astype(str), np.array([str(v) for v in arr], dtype=object))
    n_ids = len(pd.unique(pd.Series(canon, dtype=object)))
    n_codes = len(pd.unique(pd.Series(codes)))
    if n_ids != n_codes:  # cannot happen by construction; a loud guard all the same
        raise RuntimeError(f"from_plain_id produced {n_codes} codes for {n_ids} distinct ids")
    return codes
