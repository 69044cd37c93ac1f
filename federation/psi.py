"""Private set intersection (PSI) of enterprise codes (USCC) between the bank and data holders.

Vertical federated learning must first agree which enterprises both sides hold, without either
side learning the other's non-shared enterprises. This is the Diffie-Hellman (ECDH) PSI of
Meadows/Huberman-Franklin-Hogg, one oblivious PRF per bank code, over Curve25519 (X25519):

    H(c)   = hash of a code to a Curve25519 point (sha512, try-and-increment; see ``docs/psi.md``)
    holder : T = sorted(trunc16(X25519(b, H(y))) for y in holder codes)   -> bank   (cacheable)
    bank   : Q = [X25519(a, H(x)) for x in bank codes]                     -> holder
    holder : D = [X25519(b, q) for q in Q]                                  -> bank
    bank   : t_x = trunc16(X25519(a^-1, D_x)) = trunc16(X25519(b, H(x)));  match t_x in T
    bank   : positions in T of the matches, in ascending-code order         -> holder

Each party's half is a class whose steps take and return raw ``bytes`` (fixed-width records:
32-byte points, 16-byte tags, 4-byte little-endian positions), so any transport can carry them
and nothing crossing between parties is ever pickled. The group work runs on all cores in
chunks; the secret scalars stay inside the party object (and the holder's cache file).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import multiprocessing
import os
import secrets
import stat
import struct
import threading
import time
import unicodedata
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from nacl import bindings as _nb

# The raw libsodium entry points behind ``nacl.bindings.crypto_scalarmult``: calling them
# directly writes into one preallocated output buffer instead of allocating and copying per
# point, which is ~5% of the whole protocol's time at 1M codes. Same library, same function.
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from federation.errors import ConfigError, Refused, XinyidaiError
from federation.files import write_atomic

__all__ = [
    "CODE_LEN",
    "DOMAIN",
    "PARALLEL_MIN",
    "POINT_BYTES",
    "POSITION_BYTES",
    "TAG_BYTES",
    "USCC_CHARSET",
    "LocalAlignment",
    "LocalPsi",
    "PsiAlignment",
    "PsiBank",
    "PsiCacheError",
    "PsiError",
    "PsiHolder",
    "PsiInputError",
    "PsiOverlapError",
    "PsiProtocolError",
    "PsiResult",
    "PsiStats",
    "align_local",
    "hash_code_point",
    "normalise_codes",
    "run_psi_local",
    "shutdown_workers",
]

DOMAIN = b"xinyidai-psi-v1|"
CODE_LEN = 18
POINT_BYTES = 32
TAG_BYTES = 16
POSITION_BYTES = 4
USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
#: Below this many points per step the work runs in-process: starting chunks on the pool
#: costs more than it saves for a few thousand 40 µs scalar multiplications.
PARALLEL_MIN = 16_384
DEFAULT_MAX_QUERIES = 10_000_000
DEFAULT_MAX_HOLDER_SET = 20_000_000
DEFAULT_CACHE_MAX_AGE = 30 * 86_400.0

_CACHE_MAGIC = b"XYDPSIC1"
_CACHE_HEADER = struct.Struct("<8sQQ32s32s")  # magic, created (unix s), n, key, scalar
_MAX_SET = 2**32 - 1  # positions travel as uint32

# Curve25519 (RFC 7748): y^2 = x^3 + A x^2 + x over GF(p).
_P = (1 << 255) - 19
_PM = gmpy2.mpz(_P)
_A = gmpy2.mpz(486662)
_MASK255 = (1 << 255) - 1
# x-coordinates of the small-order points that lie on the curve (libsodium rejects them too).
_SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)


# ---------------------------------------------------------------------------------------------
# Errors


class PsiError(XinyidaiError):
    """Base of the PSI errors."""


class PsiInputError(PsiError):
    """This party's own code list is unusable (bad code, duplicate). Nothing was sent.

    Messages name rows (0-based positions in the list given), never code values, because
    codes are the very thing PSI protects and error texts may travel to a peer or a log.
    """


class PsiProtocolError(PsiError):
    """A message from the peer is malformed; ``step`` names the protocol step that refused it."""

    def __init__(self, step: str, detail: str):
        self.step = step
        self.detail = detail
        super().__init__(f"PSI step '{step}': malformed peer message: {detail}")


class PsiOverlapError(Refused, PsiError):
    """The intersection is empty or below the configured ``min_overlap``."""

    def __init__(self, size: int, required: int, detail: str):
        self.size = size
        self.required = required
        code = "no_overlap" if size == 0 else "min_overlap"
        super().__init__(code, detail)


class PsiCacheError(PsiError):
    """The holder's blinded-set cache file is unsafe or damaged; delete it to rebuild."""

    def __init__(self, path: Path, detail: str):
        self.path = path
        super().__init__(f"PSI cache {path}: {detail}")


# ---------------------------------------------------------------------------------------------
# Codes, hashing and the per-chunk group work (module level so worker processes can run it)


_VALID_BYTE = np.zeros(256, dtype=bool)
_VALID_BYTE[np.frombuffer(USCC_CHARSET.encode(), dtype=np.uint8)] = True


def normalise_codes(codes: Sequence[str], *, who: str = "input") -> np.ndarray:
    """Return the codes as a fixed-width ``S18`` array after NFKC, strip and upper-casing.

    Registry exports often carry full-width characters or padding; both sides must hash the
    same bytes, so normalisation is part of the protocol. The check digit is not verified (a
    code's validity is the data loader's concern; PSI only needs equal codes to be equal).
    Raises :class:`PsiInputError` naming rows for bad or duplicate codes.
    """
    if isinstance(codes, (str, bytes)):
        raise PsiInputError(f"{who} codes: expected a sequence of strings, got one {type(codes)}")
    n = len(codes)
    if n == 0:
        raise PsiInputError(f"{who} codes: the list is empty")
    if n > _MAX_SET:
        raise PsiInputError(f"{who} codes: {n} codes exceed the limit of {_MAX_SET}")
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


_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a") : ord("z") + 1] -= 32


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


def _hash_prefix(salt: bytes) -> bytes:
    # Length-prefixing the salt keeps (salt, code) pairs unambiguous for any salt bytes.
    return DOMAIN + bytes((len(salt),)) + salt


_mpz_le = gmpy2.mpz.from_bytes  # gmpy2 >= 2.2: 30x faster than int.from_bytes + mpz()
_kronecker = gmpy2.kronecker  # = Legendre symbol for the odd prime p; GMP's binary algorithm
_CTR = [bytes((i,)) for i in range(256)]


def _on_curve(m: Any) -> bool:
    """True when ``m`` (< p) is the x-coordinate of a Curve25519 point, not of its twist.

    x is on the curve iff x^3 + A x^2 + x is a nonzero square mod p (RFC 7748's equation).
    """
    return bool(_kronecker(m * (m * (m + _A) + 1), _PM) == 1)


def _hash_to_u(prefix: bytes, code: bytes) -> bytes:
    """Hash one normalised code to a Curve25519 x-coordinate (try-and-increment).

    Each sha512 gives two 255-bit candidates; about half of all x-coordinates lie on the
    curve, so ~1.3 hashes are needed on average. Twist points are rejected because the
    curve/twist bit of a blinded point is visible and would leak one bit about the code.
    """
    for ctr in _CTR:
        digest = hashlib.sha512(prefix + code + ctr).digest()
        for half in (digest[:32], digest[32:]):
            m = _mpz_le(half, "little") & _MASK255
            if m < _PM and _on_curve(m) and m not in _SMALL_ORDER_U:
                return half[:31] + bytes((half[31] & 0x7F,))
    raise PsiError("hash-to-curve found no point in 512 candidates")  # probability 2^-512


def hash_code_point(code: str, *, salt: bytes) -> bytes:
    """The unblinded point H(code) as 32 bytes: for tests and audits, never sent by the protocol."""
    norm = normalise_codes([code])
    return _hash_to_u(_hash_prefix(_check_salt(salt)), norm[0].tobytes())


def _check_point(p: bytes) -> str | None:
    """Why a peer's 32-byte point is unacceptable, or None: canonical, on the curve, not tiny."""
    m = _mpz_le(p, "little")
    if m >= _PM:
        return "not a canonical Curve25519 x-coordinate"
    if not _on_curve(m):
        return "not a point on Curve25519"
    if m in _SMALL_ORDER_U:
        return "a small-order point"
    return None


def _hash_blind_chunk(codes: bytes, prefix: bytes, scalar: bytes) -> bytes:
    """H(c)^scalar for each 18-byte code in ``codes``, as concatenated 32-byte points."""
    n = len(codes) // CODE_LEN
    out = bytearray(POINT_BYTES * n)
    optr = _ffi.from_buffer("unsigned char[]", out)
    smult = _lib.crypto_scalarmult
    for i in range(n):
        u = _hash_to_u(prefix, codes[i * CODE_LEN : (i + 1) * CODE_LEN])
        if smult(optr + POINT_BYTES * i, scalar, u) != 0:  # unreachable: tiny points excluded
            raise RuntimeError("X25519 rejected a hashed point")
    return bytes(out)


def _mult_chunk(points: bytes, scalar: bytes, keep: int) -> tuple[bytes, int, str]:
    """Validate and raise each peer point to ``scalar``, keeping the first ``keep`` bytes.

    Returns ``(output, -1, "")`` or, at the first bad point, ``(b"", index, reason)`` so the
    caller can name the element; exceptions are avoided because they cross processes.
    """
    n = len(points) // POINT_BYTES
    out = bytearray(keep * n)
    optr = _ffi.from_buffer("unsigned char[]", out)
    tmp = _ffi.new("unsigned char[32]")
    smult = _lib.crypto_scalarmult
    memmove = _ffi.memmove
    direct = keep == POINT_BYTES
    for i in range(n):
        p = points[i * POINT_BYTES : (i + 1) * POINT_BYTES]
        m = _mpz_le(p, "little")
        if m >= _PM or not _on_curve(m) or m in _SMALL_ORDER_U:
            return b"", i, _check_point(p) or "invalid point"
        if direct:
            rc = smult(optr + POINT_BYTES * i, scalar, p)
        else:
            rc = smult(tmp, scalar, p)
            memmove(optr + keep * i, tmp, keep)
        if rc != 0:
            return b"", i, "a small-order point"
    return bytes(out), -1, ""


def _clamp(raw: bytes) -> bytes:
    k = bytearray(raw)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return bytes(k)


def _holder_scalar() -> bytes:
    return _clamp(secrets.token_bytes(32))


_INV8 = _nb.crypto_core_ed25519_scalar_invert((8).to_bytes(32, "little"))


def _bank_scalars() -> tuple[bytes, bytes]:
    """A random X25519 scalar ``a`` and a scalar ``c`` with ``X25519(c, X25519(a, P)) == P``.

    X25519 clamps scalars (multiple of 8, bit 254 set), so the unblinding scalar must itself be
    clamped: ``c = 8 t`` with ``t = (8 a)^-1 mod l`` satisfies ``c a = 1 mod l``; about half of
    all ``a`` give a ``c`` in the clamped range and the others are redrawn. The inversion is
    libsodium's (constant time), not Python's ``pow``.
    """
    for _ in range(512):
        a = _holder_scalar()
        a_mod_l = _nb.crypto_core_ed25519_scalar_reduce(a + bytes(32))
        t = _nb.crypto_core_ed25519_scalar_mul(
            _nb.crypto_core_ed25519_scalar_invert(a_mod_l), _INV8
        )
        c = int.from_bytes(t, "little") << 3
        if c >> 254 == 1:
            return a, c.to_bytes(32, "little")
    raise PsiError("could not draw an invertible X25519 scalar")  # probability 2^-512


# ---------------------------------------------------------------------------------------------
# Parallel execution


_POOLS: dict[int, ProcessPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def _resolve_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # pragma: no cover - not Linux
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"PSI workers must be a positive integer or None, got {workers!r}")
    return workers


def _pool(workers: int) -> ProcessPoolExecutor:
    # "spawn": a node also runs gRPC threads, and forking a threaded process can deadlock.
    # Pools are kept for the life of the process so each job does not pay start-up again.
    with _POOLS_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            ctx = multiprocessing.get_context("spawn")
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
            _POOLS[workers] = pool
        return pool


def shutdown_workers() -> None:
    """Stop the PSI worker processes (they are otherwise kept for the next job)."""
    with _POOLS_LOCK:
        pools = list(_POOLS.values())
        _POOLS.clear()
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


def _run_chunked(
    func: Callable[..., Any],
    data: bytes,
    record: int,
    args: tuple[Any, ...],
    *,
    workers: int,
    parallel_min: int,
) -> list[Any]:
    """Apply ``func(chunk, *args)`` over record-aligned chunks of ``data``, in order.

    Chunks cross to the worker processes as plain bytes; ~8 chunks per worker keep both cores
    busy to the end without paying per-task overhead on tiny tasks.
    """
    n = len(data) // record
    if workers <= 1 or n < parallel_min:
        return [func(data, *args)]
    per = max(1024, min(65_536, -(-n // (workers * 8))))
    chunks = [data[i * record : (i + per) * record] for i in range(0, n, per)]
    try:
        pool = _pool(workers)
        return list(pool.map(func, chunks, *(itertools.repeat(a) for a in args)))
    except BrokenProcessPool as exc:
        with _POOLS_LOCK:
            _POOLS.pop(workers, None)
        raise PsiError(
            "a PSI worker process died (out of memory?); retry, or use fewer workers"
        ) from exc


def _mult_all(
    points: bytes, scalar: bytes, keep: int, *, step: str, what: str, workers: int, par: int
) -> bytes:
    results = _run_chunked(
        _mult_chunk, points, POINT_BYTES, (scalar, keep), workers=workers, parallel_min=par
    )
    base = 0
    for out, bad, why in results:
        if bad >= 0:
            raise PsiProtocolError(step, f"{what} {base + bad}: {why}")
        base += len(out) // keep
    return b"".join(r[0] for r in results)


# ---------------------------------------------------------------------------------------------
# Option checks


def _check_salt(salt: bytes) -> bytes:
    if not isinstance(salt, (bytes, bytearray)) or not 1 <= len(salt) <= 255:
        raise ConfigError("PSI salt must be 1 to 255 bytes, agreed by both parties")
    return bytes(salt)


def _check_min_overlap(min_overlap: int | float) -> int | float:
    if isinstance(min_overlap, bool) or not isinstance(min_overlap, (int, float)):
        raise ConfigError(f"min_overlap must be a count or a fraction, got {min_overlap!r}")
    if isinstance(min_overlap, int):
        if min_overlap < 1:
            raise ConfigError(f"min_overlap count must be >= 1, got {min_overlap}")
    elif not 0.0 < min_overlap <= 1.0:
        raise ConfigError(f"min_overlap fraction must be in (0, 1], got {min_overlap}")
    return min_overlap


def _required(min_overlap: int | float, base: int) -> int:
    if isinstance(min_overlap, int):
        return min_overlap
    # round() first: 0.07 * 100 is 7.000000000000001 in binary floating point, not 8 needed.
    return max(1, math.ceil(round(min_overlap * base, 6)))


def _as_bytes(msg: object, step: str, what: str) -> bytes:
    if not isinstance(msg, (bytes, bytearray, memoryview)):
        raise PsiProtocolError(step, f"{what}: expected bytes, got {type(msg).__name__}")
    return bytes(msg)


def _overlap_error(size: int, required: int, spec: int | float, who: str) -> PsiOverlapError:
    if size == 0:
        return PsiOverlapError(0, required, f"no overlap: the {who} found no enterprise in common")
    return PsiOverlapError(
        size,
        required,
        f"overlap too small: {size} enterprises in common, the {who} requires at least "
        f"{required} (min_overlap={spec})",
    )


class _NoPickle:
    """Party objects hold secret scalars: refuse pickling so they cannot leak by accident."""

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds a secret scalar and cannot be pickled")


# ---------------------------------------------------------------------------------------------
# Results


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


# ---------------------------------------------------------------------------------------------
# Holder


class PsiHolder(_NoPickle):
    """The data holder's half: blinds its own codes once (cacheable) and the bank's queries.

    ``cache_dir`` keeps the blinded set and the scalar ``b`` in a 0600 file keyed by a digest
    of the salt and the code list, so later jobs with the same list skip all hashing and
    blinding of the holder's set. The cached ``b`` is rotated after ``cache_max_age`` seconds
    (see docs/psi.md for what reuse across jobs reveals). ``max_queries`` caps how many bank
    codes one job may test, bounding dictionary attacks on the holder's list.
    """

    def __init__(
        self,
        codes: Sequence[str],
        *,
        salt: bytes,
        cache_dir: Path | str | None = None,
        workers: int | None = None,
        min_overlap: int | float = 1,
        max_queries: int | None = DEFAULT_MAX_QUERIES,
        cache_max_age: float | None = DEFAULT_CACHE_MAX_AGE,
        parallel_min: int = PARALLEL_MIN,
    ):
        self._prefix = _hash_prefix(_check_salt(salt))
        self._codes = normalise_codes(codes, who="holder")
        self._workers = _resolve_workers(workers)
        self._min_overlap = _check_min_overlap(min_overlap)
        if max_queries is not None and (isinstance(max_queries, bool) or max_queries < 1):
            raise ConfigError(f"max_queries must be a positive integer or None, not {max_queries}")
        self._max_queries = max_queries
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._cache_max_age = cache_max_age
        self._par = parallel_min
        self._scalar: bytes | None = None
        self._tags: bytes | None = None
        self._rows: np.ndarray | None = None  # sent position -> holder row
        # Messages 1 and 2 may arrive on two gRPC threads at once: build b and the set once.
        self._lock = threading.Lock()
        self.stats = PsiStats()
        self.rows: np.ndarray | None = None  # set by accept_intersection

    @property
    def size(self) -> int:
        return len(self._codes)

    def blinded_set(self) -> bytes:
        """Message to the bank: trunc16(H(y)^b) for every holder code, sorted by value.

        Sorting by the blinded tag is the shuffle: the order is a pseudorandom permutation
        unrelated to the holder's row order, and it lets the bank check and search it cheaply.
        """
        return self._ensure()[1]

    def blind_queries(self, queries: bytes) -> bytes:
        """Message to the bank: each 32-byte query point raised to ``b``, same order."""
        step = "blind_queries"
        q = _as_bytes(queries, step, "queries")
        if not q or len(q) % POINT_BYTES:
            raise PsiProtocolError(
                step, f"queries are {len(q)} bytes, not a positive multiple of {POINT_BYTES}"
            )
        n = len(q) // POINT_BYTES
        if self._max_queries is not None and n > self._max_queries:
            raise Refused("size", f"{n} PSI queries exceed this holder's limit {self._max_queries}")
        scalar = self._ensure()[0]
        out = _mult_all(
            q, scalar, POINT_BYTES, step=step, what="query", workers=self._workers,
            par=self._par,
        )  # fmt: skip
        self.stats.queries_blinded += n
        return out

    def accept_intersection(self, positions: bytes | np.ndarray) -> np.ndarray:
        """Map the bank's positions (into the sent set) to this holder's rows, common order.

        The positions must name distinct elements whose codes ascend: that is the agreed order,
        so a reordered, repeated or out-of-range list is refused rather than silently used.
        """
        step = "accept_intersection"
        if self._tags is None or self._rows is None:
            raise PsiProtocolError(step, "positions arrived before this holder sent its set")
        if isinstance(positions, np.ndarray):
            if positions.ndim != 1 or not np.issubdtype(positions.dtype, np.integer):
                raise PsiProtocolError(step, "positions must be a 1-D integer array")
            pos = positions.astype(np.int64)
        else:
            raw = _as_bytes(positions, step, "positions")
            if len(raw) % POSITION_BYTES:
                raise PsiProtocolError(
                    step, f"positions are {len(raw)} bytes, not a multiple of {POSITION_BYTES}"
                )
            pos = np.frombuffer(raw, dtype="<u4").astype(np.int64)
        m = len(self._rows)
        if pos.size and (pos.min() < 0 or pos.max() >= m):
            bad = int(np.flatnonzero((pos < 0) | (pos >= m))[0])
            raise PsiProtocolError(
                step, f"position {bad} is {int(pos[bad])}, outside the sent set of {m}"
            )
        rows = self._rows[pos].astype(np.int64)
        codes = self._codes[rows]
        if rows.size > 1 and not bool(np.all(codes[1:] > codes[:-1])):
            raise PsiProtocolError(
                step, "positions repeat or are not in the agreed ascending-code order"
            )
        need = _required(self._min_overlap, m)
        if rows.size < need:
            raise _overlap_error(int(rows.size), need, self._min_overlap, "holder")
        self.rows = rows
        return rows

    # -- blinded set and its cache -------------------------------------------------------------

    def _ensure(self) -> tuple[bytes, bytes, np.ndarray]:
        """Load or build (scalar b, sorted tags, sent position -> row); once per object."""
        with self._lock:
            if self._scalar is not None and self._tags is not None and self._rows is not None:
                return self._scalar, self._tags, self._rows
            return self._load_or_build()

    def _load_or_build(self) -> tuple[bytes, bytes, np.ndarray]:
        codes = self._codes.tobytes()
        path = key = None
        if self._cache_dir is not None:
            key = hashlib.sha256(
                DOMAIN + b"cache|" + self._prefix + struct.pack("<Q", self.size) + codes
            ).digest()
            path = self._cache_dir / f"psi-holder-{key.hex()[:32]}.bin"
            loaded = _read_cache(path, key, self.size, self._cache_max_age)
            if loaded is not None:
                self._scalar, self._tags, self._rows = loaded
                self.stats.cache_hit = True
                return loaded
        scalar = _holder_scalar()
        chunks = _run_chunked(
            _hash_blind_chunk, codes, CODE_LEN, (self._prefix, scalar),
            workers=self._workers, parallel_min=self._par,
        )  # fmt: skip
        self.stats.hashed += self.size
        self.stats.own_blinded += self.size
        blinded = np.frombuffer(b"".join(chunks), dtype=np.uint8).reshape(self.size, POINT_BYTES)
        tags = np.ascontiguousarray(blinded[:, :TAG_BYTES]).view(f"S{TAG_BYTES}").reshape(-1)
        order = np.argsort(tags, kind="stable")
        tags = tags[order]
        if np.any(tags[1:] == tags[:-1]):  # probability < M^2 / 2^129
            raise PsiError("two holder codes gave the same 128-bit tag; rerun to redraw b")
        built = (scalar, tags.tobytes(), order.astype(np.uint32))
        if path is not None and key is not None:
            _write_cache(path, key, *built)
        self._scalar, self._tags, self._rows = built
        return built


def _read_cache(
    path: Path, key: bytes, n: int, max_age: float | None
) -> tuple[bytes, bytes, np.ndarray] | None:
    """Load a cache file, or None if absent or expired; refuse unsafe or damaged files."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PsiCacheError(path, f"cannot open ({exc.strerror}); delete it to rebuild") from exc
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise PsiCacheError(path, "is not a regular file")
        if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
            raise PsiCacheError(path, "is owned by another user; delete it to rebuild")
        if st.st_mode & 0o077:
            raise PsiCacheError(
                path,
                f"mode {stat.S_IMODE(st.st_mode):04o} lets others read the secret scalar; "
                "delete it (the key may have leaked) to rebuild",
            )
        data = fh.read()
    expected = _CACHE_HEADER.size + n * (TAG_BYTES + 4) + 32
    if len(data) != expected or hashlib.sha256(data[:-32]).digest() != data[-32:]:
        raise PsiCacheError(path, "is truncated or damaged; delete it to rebuild")
    magic, created, n_file, key_file, scalar = _CACHE_HEADER.unpack_from(data)
    if magic != _CACHE_MAGIC or n_file != n or key_file != key:
        raise PsiCacheError(path, "belongs to a different code list or version; delete it")
    if max_age is not None and not 0 <= time.time() - created <= max_age:
        return None  # rotate b: rebuilt and overwritten by the caller
    off = _CACHE_HEADER.size
    tags = data[off : off + n * TAG_BYTES]
    rows = np.frombuffer(data, dtype="<u4", count=n, offset=off + n * TAG_BYTES).astype(np.uint32)
    return scalar, tags, rows


def _write_cache(path: Path, key: bytes, scalar: bytes, tags: bytes, rows: np.ndarray) -> None:
    """Write atomically (temp file + rename) with mode 0600 from the first byte."""
    header = _CACHE_HEADER.pack(_CACHE_MAGIC, int(time.time()), len(rows), key, scalar)
    body = header + tags + rows.astype("<u4").tobytes()
    write_atomic(path, body + hashlib.sha256(body).digest())


# ---------------------------------------------------------------------------------------------
# Bank


class PsiBank(_NoPickle):
    """The bank's half: sends blinded queries, unblinds the holder's answer, finds the matches.

    One ``queries()`` message serves every holder; :meth:`finish` is called once per holder and
    :meth:`align` combines several holders into one common set. ``min_overlap`` is a count, or
    a fraction of the bank's codes; smaller intersections raise :class:`PsiOverlapError`.
    ``max_holder_set`` caps the holder's set: a holder padding its set with a public registry
    of codes would otherwise learn the bank's whole customer list.
    """

    def __init__(
        self,
        codes: Sequence[str],
        *,
        salt: bytes,
        min_overlap: int | float = 1,
        workers: int | None = None,
        max_holder_set: int | None = DEFAULT_MAX_HOLDER_SET,
        parallel_min: int = PARALLEL_MIN,
    ):
        self._prefix = _hash_prefix(_check_salt(salt))
        self._codes = normalise_codes(codes, who="bank")
        if max_holder_set is not None and (isinstance(max_holder_set, bool) or max_holder_set < 1):
            raise ConfigError(
                f"max_holder_set must be a positive integer or None, not {max_holder_set}"
            )
        self._max_holder_set = max_holder_set
        self._min_overlap = _check_min_overlap(min_overlap)
        if isinstance(self._min_overlap, int) and self._min_overlap > self.size:
            raise ConfigError(
                f"min_overlap={self._min_overlap} exceeds the bank's {self.size} codes"
            )
        self._workers = _resolve_workers(workers)
        self._par = parallel_min
        self._a, self._a_inv = _bank_scalars()
        self._queries: bytes | None = None
        self._lock = threading.Lock()
        self.stats = PsiStats()

    @property
    def size(self) -> int:
        return len(self._codes)

    @property
    def required_overlap(self) -> int:
        return _required(self._min_overlap, self.size)

    def queries(self) -> bytes:
        """Message to each holder: H(x)^a for every bank code, in the bank's row order."""
        with self._lock:
            if self._queries is not None:
                return self._queries
            chunks = _run_chunked(
                _hash_blind_chunk, self._codes.tobytes(), CODE_LEN, (self._prefix, self._a),
                workers=self._workers, parallel_min=self._par,
            )  # fmt: skip
            self.stats.hashed += self.size
            self.stats.own_blinded += self.size
            self._queries = queries = b"".join(chunks)
            return queries

    def finish(self, double_blinded: bytes, holder_set: bytes) -> PsiResult:
        """Unblind the holder's answer, match it against the holder's set, order the result."""
        step = "finish"
        if self._queries is None:
            raise PsiError("PsiBank.finish called before queries() was sent")
        dbl = _as_bytes(double_blinded, step, "double-blinded queries")
        if len(dbl) != POINT_BYTES * self.size:
            raise PsiProtocolError(
                step,
                f"double-blinded queries are {len(dbl)} bytes; {self.size} queries of "
                f"{POINT_BYTES} bytes = {POINT_BYTES * self.size} expected",
            )
        hs = _as_bytes(holder_set, step, "holder set")
        if not hs or len(hs) % TAG_BYTES or len(hs) // TAG_BYTES > _MAX_SET:
            raise PsiProtocolError(
                step, f"holder set is {len(hs)} bytes, not a positive multiple of {TAG_BYTES}"
            )
        if self._max_holder_set is not None and len(hs) // TAG_BYTES > self._max_holder_set:
            raise Refused(
                "size",
                f"holder set of {len(hs) // TAG_BYTES} codes exceeds this bank's limit "
                f"{self._max_holder_set}",
            )
        tags = np.frombuffer(hs, dtype=f"S{TAG_BYTES}")
        if tags.size > 1 and not bool(np.all(tags[1:] > tags[:-1])):
            raise PsiProtocolError(step, "holder set is not strictly ascending (sorted, unique)")
        mine = np.frombuffer(
            _mult_all(
                dbl, self._a_inv, TAG_BYTES, step=step, what="double-blinded query",
                workers=self._workers, par=self._par,
            ),
            dtype=f"S{TAG_BYTES}",
        )  # fmt: skip
        self.stats.unblinded += self.size
        m = tags.size
        # Searching in sorted order touches the holder set sequentially: ~3x faster at 1M.
        by_tag = np.argsort(mine, kind="stable")
        idx = np.searchsorted(tags, mine[by_tag])
        hit = idx < m
        hit[hit] = tags[idx[hit]] == mine[by_tag][hit]
        rows, pos = by_tag[hit], idx[hit]
        order = np.argsort(self._codes[rows], kind="stable")
        rows, pos = rows[order].astype(np.int64), pos[order].astype(np.uint32)
        need = self.required_overlap
        if rows.size < need:
            raise _overlap_error(int(rows.size), need, self._min_overlap, "bank")
        return PsiResult(
            bank_rows=rows, holder_positions=pos, size=int(rows.size), holder_set_size=m
        )

    def align(self, results: Sequence[PsiResult]) -> PsiAlignment:
        """Keep the bank rows matched at every holder (bank ∩ tax ∩ utility ...), common order.

        Each holder is then sent only its positions for the common set, so it learns the
        final aligned set, not its pairwise overlap with the bank.
        """
        if not results:
            raise ConfigError("align needs at least one PsiResult")
        for r in results:
            if r.bank_rows.size and int(r.bank_rows.max()) >= self.size:
                raise ConfigError("a PsiResult given to align belongs to a different bank list")
        common = results[0].bank_rows
        for r in results[1:]:
            common = common[np.isin(common, r.bank_rows)]
        positions = []
        for r in results:
            by_row = np.argsort(r.bank_rows, kind="stable")
            at = np.searchsorted(r.bank_rows[by_row], common)
            positions.append(r.holder_positions[by_row[at]].astype(np.uint32))
        need = self.required_overlap
        if common.size < need:
            raise _overlap_error(int(common.size), need, self._min_overlap, "bank (all holders)")
        return PsiAlignment(
            bank_rows=common.astype(np.int64), holder_positions=tuple(positions), size=common.size
        )


# ---------------------------------------------------------------------------------------------
# Local helpers (both halves in one process: tests, benchmarks, notebooks)


def run_psi_local(
    bank_codes: Sequence[str],
    holder_codes: Sequence[str],
    *,
    salt: bytes,
    min_overlap: int | float = 1,
    workers: int | None = None,
    cache_dir: Path | str | None = None,
    parallel_min: int = PARALLEL_MIN,
) -> LocalPsi:
    """Run the whole protocol between a bank and one holder in this process."""
    bank = PsiBank(
        bank_codes, salt=salt, min_overlap=min_overlap, workers=workers, parallel_min=parallel_min
    )
    holder = PsiHolder(
        holder_codes, salt=salt, cache_dir=cache_dir, workers=workers, parallel_min=parallel_min
    )
    result = bank.finish(holder.blind_queries(bank.queries()), holder.blinded_set())
    holder_rows = holder.accept_intersection(result.positions_bytes())
    return LocalPsi(bank_rows=result.bank_rows, holder_rows=holder_rows, size=result.size)


def align_local(
    bank_codes: Sequence[str],
    holder_code_lists: Sequence[Sequence[str]],
    *,
    salt: bytes,
    min_overlap: int | float = 1,
    workers: int | None = None,
    parallel_min: int = PARALLEL_MIN,
) -> LocalAlignment:
    """Align the bank with several holders in this process: one common order for all."""
    bank = PsiBank(
        bank_codes, salt=salt, min_overlap=min_overlap, workers=workers, parallel_min=parallel_min
    )
    queries = bank.queries()
    holders = [
        PsiHolder(codes, salt=salt, workers=workers, parallel_min=parallel_min)
        for codes in holder_code_lists
    ]
    results = [bank.finish(h.blind_queries(queries), h.blinded_set()) for h in holders]
    aligned = bank.align(results)
    rows = tuple(h.accept_intersection(aligned.positions_bytes(i)) for i, h in enumerate(holders))
    return LocalAlignment(bank_rows=aligned.bank_rows, holder_rows=rows, size=aligned.size)
