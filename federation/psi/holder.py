"""The data holder's half of the PSI (messages 1 and 3, and accepting message 4)."""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from federation.errors import ConfigError, Refused
from federation.psi.cache import read_cache, write_cache
from federation.psi.codes import CODE_LEN, normalise_codes
from federation.psi.curve import (
    DOMAIN,
    POINT_BYTES,
    NoPickle,
    check_salt,
    hash_blind_chunk,
    hash_prefix,
    holder_scalar,
)
from federation.psi.errors import PsiError, PsiProtocolError, as_bytes
from federation.psi.results import (
    POSITION_BYTES,
    TAG_BYTES,
    PsiStats,
    check_min_overlap,
    overlap_error,
    required,
)
from federation.psi.workers import PARALLEL_MIN, mult_all, resolve_workers, run_chunked

DEFAULT_MAX_QUERIES = 10_000_000
DEFAULT_CACHE_MAX_AGE = 30 * 86_400.0


class PsiHolder(NoPickle):
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
        self._prefix = hash_prefix(check_salt(salt))
        self._codes = normalise_codes(codes, who="holder")
        self._workers = resolve_workers(workers)
        self._min_overlap = check_min_overlap(min_overlap)
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
        q = as_bytes(queries, step, "queries")
        if not q or len(q) % POINT_BYTES:
            raise PsiProtocolError(
                step, f"queries are {len(q)} bytes, not a positive multiple of {POINT_BYTES}"
            )
        n = len(q) // POINT_BYTES
        if self._max_queries is not None and n > self._max_queries:
            raise Refused("size", f"{n} PSI queries exceed this holder's limit {self._max_queries}")
        scalar = self._ensure()[0]
        out = mult_all(
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
        pos = _positions(positions, step)
        m = len(self._rows)
        if pos.size and (pos.min() < 0 or pos.max() >= m):
            bad = int(np.flatnonzero((pos < 0) | (pos >= m))[0])
            raise PsiProtocolError(
                step, f"position {bad} is {int(pos[bad])}, outside the sent set of {m}"
            )
        rows: np.ndarray = self._rows[pos].astype(np.int64)
        codes = self._codes[rows]
        if rows.size > 1 and not bool(np.all(codes[1:] > codes[:-1])):
            raise PsiProtocolError(
                step, "positions repeat or are not in the agreed ascending-code order"
            )
        need = required(self._min_overlap, m)
        if rows.size < need:
            raise overlap_error(int(rows.size), need, self._min_overlap, "holder")
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
            loaded = read_cache(path, key, self.size, self._cache_max_age)
            if loaded is not None:
                self._scalar, self._tags, self._rows = loaded
                self.stats.cache_hit = True
                return loaded
        scalar = holder_scalar()
        chunks = run_chunked(
            hash_blind_chunk, codes, CODE_LEN, (self._prefix, scalar),
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
            write_cache(path, key, *built)
        self._scalar, self._tags, self._rows = built
        return built


def _positions(positions: bytes | np.ndarray, step: str) -> np.ndarray:
    """Message 4 as int64 positions: raw little-endian uint32 records, or an integer array."""
    if isinstance(positions, np.ndarray):
        if positions.ndim != 1 or not np.issubdtype(positions.dtype, np.integer):
            raise PsiProtocolError(step, "positions must be a 1-D integer array")
        return positions.astype(np.int64)
    raw = as_bytes(positions, step, "positions")
    if len(raw) % POSITION_BYTES:
        raise PsiProtocolError(
            step, f"positions are {len(raw)} bytes, not a multiple of {POSITION_BYTES}"
        )
    return np.frombuffer(raw, dtype="<u4").astype(np.int64)
