"""Fast Paillier engine on ``phe`` key objects: DJN fixed-base encryption, CRT decryption,
re-randomisation, fixed-width wire format and an all-cores process pool.

Why not plain ``phe``: ``pk.encrypt`` spends one full ``r^n mod n^2`` (2048-bit exponent) per
value, ~100 encryptions/s per core at 2048 bits, and wraps every value in a Python object. The
bank encrypts one packed (gradient, hessian) per sample per tree, so this engine is the platform's
training speed. Keys stay ``phe`` objects, and ciphertexts are plain residues mod n^2 with g = n+1,
so both libraries decrypt each other's ciphertexts.

Obfuscation modes (see docs/crypto.md for the security argument):

* ``"djn"`` (default): ``r = hs^a mod n^2`` with ``hs = h^n mod n^2`` public and ``a`` a short
  uniformly random exponent (2κ bits), computed from a precomputed fixed-base table with a
  handful of multiplications. Damgård–Jurik–Nielsen's short-exponent variant.
* ``"textbook"``: ``r^n mod n^2`` with r uniform in Z*_n, exactly as phe does.

``h`` is derived from a public random seed by hashing, so a data holder can check that ``hs``
really is an n-th power before it relies on it to re-randomise what it returns.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import multiprocessing
import os
import secrets
import struct
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe.paillier import PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair

from federation.crypto import testing as _testing
from federation.errors import XinyidaiError

logger = logging.getLogger("federation.crypto")

MIN_KEY_BITS = 2048
"""Smallest Paillier modulus accepted outside tests (≈112-bit security)."""

Obfuscation = Literal["djn", "textbook"]
OBFUSCATIONS: tuple[str, ...] = ("djn", "textbook")

_PARAMS_MAGIC = b"XYDJ"
_PARAMS_VERSION = 1
_SEED_BYTES = 32
_H_DOMAIN = b"xinyidai/paillier/djn-h/v1\x00"

# Relative cost of one item of each operation, in DJN encryptions; decides when to use the pool.
_COST = {"djn": 1, "textbook": 50, "decrypt": 15}

_f_mod = gmpy2.f_mod
_powmod = gmpy2.powmod

T = TypeVar("T")


class CryptoError(XinyidaiError):
    """Base of every error raised by ``federation.crypto``."""


class InsecureKeyError(CryptoError):
    """A Paillier key below 2048 bits was made or accepted outside the test-only switch."""


class CiphertextFormatError(CryptoError):
    """Serialised ciphertexts have the wrong length or a value outside [1, n^2)."""


class PublicParamsError(CryptoError):
    """Serialised public parameters are malformed or fail verification."""


class PlaintextRangeError(CryptoError):
    """A plaintext is not an integer in [0, n); encode signed or real values first."""


class MissingPrivateKeyError(CryptoError):
    """An operation that needs the private key was called on an engine without one."""


# --------------------------------------------------------------------------------------------
# keys and parameters


def check_key_size(n_bits: int, what: str) -> None:
    """Refuse keys below :data:`MIN_KEY_BITS` unless the test-only switch is on (then warn)."""
    if n_bits >= MIN_KEY_BITS:
        return
    if _testing.insecure_key_sizes_allowed():
        _testing.warn_insecure_key(n_bits, what)
        return
    raise InsecureKeyError(
        f"{n_bits}-bit Paillier key {what}: refused, the minimum is {MIN_KEY_BITS} bits "
        "(tests may use federation.crypto.testing.allow_insecure_key_sizes())"
    )


def generate_keypair(n_bits: int = 2048) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """A fresh ``phe`` key pair with an ``n_bits`` modulus (2048 or 3072 in production)."""
    if not isinstance(n_bits, int) or n_bits < 16 or n_bits % 2:
        raise CryptoError(f"n_bits must be an even integer, got {n_bits!r}")
    check_key_size(n_bits, "generated")
    return generate_paillier_keypair(n_length=n_bits)


def security_bits(key_bits: int) -> int:
    """κ used for the short exponent: 128 up to 3072-bit keys, 192 above (NIST SP 800-57)."""
    return 128 if key_bits <= 3072 else 192


def default_exponent_bits(key_bits: int) -> int:
    """Length of the DJN short exponent ``a``: 2κ bits, so that generic (baby-step giant-step or
    kangaroo) search for ``a`` costs 2^κ group operations."""
    return 2 * security_bits(key_bits)


def _byte_len(x: int) -> int:
    return (int(x).bit_length() + 7) // 8


def _derive_h(n: mpz, seed: bytes) -> mpz:
    """h = −x² mod n with x hashed from (n, seed): random, yet checkable by every holder."""
    n_bytes = _byte_len(n)
    for counter in itertools.count():
        digest = hashlib.shake_256(
            _H_DOMAIN
            + n_bytes.to_bytes(2, "big")
            + int(n).to_bytes(n_bytes, "big")
            + seed
            + counter.to_bytes(4, "big")
        ).digest(n_bytes + 16)
        x = mpz(int.from_bytes(digest, "big")) % n
        if x > 1 and gmpy2.gcd(x, n) == 1:
            return _f_mod(-(x * x), n)
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, eq=False)
class PublicParams:
    """What a data holder needs to encrypt and re-randomise: the public key and ``hs``.

    ``hs = h^n mod n^2`` with ``h`` derived from ``seed``; nothing here is secret.
    """

    public_key: PaillierPublicKey
    seed: bytes
    hs: mpz

    @property
    def n(self) -> mpz:
        return mpz(self.public_key.n)

    @property
    def nsquare(self) -> mpz:
        return mpz(self.public_key.nsquare)

    @property
    def key_bits(self) -> int:
        return int(self.public_key.n).bit_length()

    @property
    def ciphertext_bytes(self) -> int:
        """Fixed width of one serialised ciphertext: the byte length of n^2."""
        return _byte_len(self.public_key.nsquare)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicParams):
            return NotImplemented
        return (
            self.public_key.n == other.public_key.n
            and self.seed == other.seed
            and self.hs == other.hs
        )

    def __hash__(self) -> int:
        return hash((self.public_key.n, self.seed))


def make_public_params(public_key: PaillierPublicKey, *, seed: bytes | None = None) -> PublicParams:
    """Made once by the key holder (the bank) and sent to every data holder."""
    n = mpz(public_key.n)
    check_key_size(int(n).bit_length(), "used for public parameters")
    seed = secrets.token_bytes(_SEED_BYTES) if seed is None else bytes(seed)
    if len(seed) != _SEED_BYTES:
        raise PublicParamsError(f"seed must be {_SEED_BYTES} bytes, got {len(seed)}")
    hs = _powmod(_derive_h(n, seed), n, n * n)
    return PublicParams(public_key=public_key, seed=seed, hs=hs)


def public_params_to_bytes(params: PublicParams) -> bytes:
    """Layout: b"XYDJ" | u8 version | u16 len(n) | n | u8 len(seed) | seed | hs (width of n^2)."""
    n = int(params.public_key.n)
    n_bytes = _byte_len(n)
    return b"".join(
        (
            _PARAMS_MAGIC,
            struct.pack(">BH", _PARAMS_VERSION, n_bytes),
            n.to_bytes(n_bytes, "big"),
            struct.pack(">B", len(params.seed)),
            params.seed,
            int(params.hs).to_bytes(params.ciphertext_bytes, "big"),
        )
    )


def public_params_from_bytes(buf: bytes, *, verify: bool = True) -> PublicParams:
    """Parse and (by default) verify that ``hs`` is the n-th power of the seed-derived ``h``.

    Verification costs one modular exponentiation (~10 ms at 2048 bits) and stops a key holder
    from handing out an ``hs`` that would make holders' re-randomisation ineffective.
    """
    buf = bytes(buf)
    head = len(_PARAMS_MAGIC) + 3
    if len(buf) < head or buf[: len(_PARAMS_MAGIC)] != _PARAMS_MAGIC:
        raise PublicParamsError("not xinyidai Paillier public parameters (bad magic)")
    version, n_bytes = struct.unpack(">BH", buf[len(_PARAMS_MAGIC) : head])
    if version != _PARAMS_VERSION:
        raise PublicParamsError(f"unsupported public-parameter version {version}")
    pos = head
    n = mpz(int.from_bytes(buf[pos : pos + n_bytes], "big"))
    pos += n_bytes
    if n_bytes == 0 or _byte_len(n) != n_bytes or n % 2 == 0:
        raise PublicParamsError("modulus n is malformed (zero, padded or even)")
    check_key_size(int(n).bit_length(), "received in public parameters")
    if len(buf) < pos + 1:
        raise PublicParamsError("public parameters truncated before the seed")
    seed_len = buf[pos]
    pos += 1
    seed = buf[pos : pos + seed_len]
    pos += seed_len
    nsq = n * n
    width = _byte_len(nsq)
    if seed_len != _SEED_BYTES or len(buf) != pos + width:
        raise PublicParamsError(
            f"public parameters have {len(buf)} bytes, expected {pos + width} "
            f"with a {_SEED_BYTES}-byte seed"
        )
    hs = mpz(int.from_bytes(buf[pos:], "big"))
    if not 1 < hs < nsq:
        raise PublicParamsError("hs is not in (1, n^2)")
    if verify and hs != _powmod(_derive_h(n, seed), n, nsq):
        raise PublicParamsError("hs does not match h^n mod n^2 for the published seed")
    return PublicParams(public_key=PaillierPublicKey(int(n)), seed=seed, hs=hs)


# --------------------------------------------------------------------------------------------
# wire format


def _nsquare_of(key: PaillierPublicKey | PublicParams) -> mpz:
    if isinstance(key, PublicParams):
        key = key.public_key
    if not isinstance(key, PaillierPublicKey):
        raise CryptoError(f"expected a phe PaillierPublicKey, got {type(key).__name__}")
    return mpz(key.nsquare)


def _to_fixed(values: Iterable[Any], width: int) -> bytes:
    """Concatenate fixed-width big-endian encodings; values must already be in range."""
    return b"".join([mpz(v).to_bytes(width, "big") for v in values])


def _from_fixed(buf: bytes, width: int) -> list[mpz]:
    view = memoryview(buf)
    from_bytes = mpz.from_bytes
    return [from_bytes(view[i : i + width], "big") for i in range(0, len(view), width)]


def ciphertexts_to_bytes(
    ciphertexts: Iterable[int], public_key: PaillierPublicKey | PublicParams
) -> bytes:
    """Wire form: each ciphertext big-endian in the byte length of n^2, concatenated."""
    nsq = _nsquare_of(public_key)
    width = _byte_len(nsq)
    out = []
    for i, c in enumerate(ciphertexts):
        c = mpz(c)
        if not 0 < c < nsq:
            raise CiphertextFormatError(f"ciphertext {i} is not in [1, n^2); nothing serialised")
        out.append(c.to_bytes(width, "big"))
    return b"".join(out)


def ciphertexts_from_bytes(
    buf: bytes | bytearray | memoryview, public_key: PaillierPublicKey | PublicParams
) -> list[mpz]:
    """Inverse of :func:`ciphertexts_to_bytes`; refuses a length that is not a multiple of the
    width and any value outside [1, n^2), naming the first bad index."""
    nsq = _nsquare_of(public_key)
    width = _byte_len(nsq)
    if len(buf) % width:
        raise CiphertextFormatError(
            f"{len(buf)} bytes is not a whole number of {width}-byte ciphertexts "
            f"({len(buf) // width} and {len(buf) % width} bytes left over)"
        )
    cts = _from_fixed(bytes(buf) if not isinstance(buf, bytes) else buf, width)
    for i, c in enumerate(cts):
        if not 0 < c < nsq:
            raise CiphertextFormatError(f"ciphertext {i} is not in [1, n^2)")
    return cts


# --------------------------------------------------------------------------------------------
# arithmetic cores (one per process)


class _FixedBaseTable:
    """table[r][d] = base^(d·2^(r·w)) mod m, so base^a is one product per w-bit digit of a."""

    def __init__(self, base: mpz, modulus: mpz, *, exponent_bits: int, window_bits: int):
        self.modulus = modulus
        self.window_bits = window_bits
        self.rows = -(-exponent_bits // window_bits)
        self.exponent_bits = self.rows * window_bits  # rounded up to whole digits
        size = 1 << window_bits
        table: list[list[mpz]] = []
        row_base = mpz(base)
        for _ in range(self.rows):
            row = [mpz(1), row_base]
            for _d in range(2, size):
                row.append(_f_mod(row[-1] * row_base, modulus))
            table.append(row)
            row_base = _f_mod(row[-1] * row_base, modulus)
        self.table = table

    def random_digits(self, count: int) -> list[list[int]]:
        """Uniform exponents in [0, 2^exponent_bits) from the OS CSPRNG, as w-bit digits."""
        w = self.window_bits
        n_bytes = (self.exponent_bits + 7) // 8
        raw = np.frombuffer(secrets.token_bytes(count * n_bytes), dtype=np.uint8)
        raw = raw.reshape(count, n_bytes)
        if w == 8:
            return raw.tolist()
        bits = np.unpackbits(raw, axis=1)[:, : self.exponent_bits].reshape(count, self.rows, w)
        weights = (1 << np.arange(w - 1, -1, -1)).astype(np.int64)
        return (bits.astype(np.int64) @ weights).tolist()

    def random_powers(self, count: int) -> list[mpz]:
        return self.powers(self.random_digits(count))

    def powers(self, exponents: Iterable[Sequence[int]]) -> list[mpz]:
        """base^a for each exponent given by its digits."""
        m = self.modulus
        table = self.table
        out = []
        for digits in exponents:
            acc = None
            for row, d in zip(table, digits, strict=True):
                if d:
                    acc = row[d] if acc is None else _f_mod(acc * row[d], m)
            out.append(mpz(1) if acc is None else acc)
        return out

    def power(self, digits: Sequence[int]) -> mpz:
        """base^a for the exponent given by its digits (least significant first); for tests."""
        acc = mpz(1)
        for row, d in zip(self.table, digits, strict=True):
            acc = _f_mod(acc * row[d], self.modulus)
        return acc


class _CrtFixedBase:
    """The key holder's DJN obfuscators: h_s^a mod p^2 and mod q^2 with one random a, joined
    by CRT. The same values as working mod n^2 for well under half the cost (half-size
    products; `experiments/bench_paillier.py` measures it); only the holder of p and q can."""

    def __init__(self, base: mpz, crt: _CrtKey, *, exponent_bits: int, window_bits: int):
        self.psq, self.qsq = crt.psq, crt.qsq
        self.inv = gmpy2.invert(self.psq, self.qsq)
        self.tp = _FixedBaseTable(
            _f_mod(base, self.psq), self.psq, exponent_bits=exponent_bits, window_bits=window_bits
        )
        self.tq = _FixedBaseTable(
            _f_mod(base, self.qsq), self.qsq, exponent_bits=exponent_bits, window_bits=window_bits
        )

    @property
    def rows(self) -> int:
        return self.tp.rows

    @property
    def window_bits(self) -> int:
        return self.tp.window_bits

    def power(self, digits: Sequence[int]) -> mpz:
        """base^a mod n^2 for the exponent given by its digits; for tests."""
        rp, rq = self.tp.power(digits), self.tq.power(digits)
        return rp + self.psq * _f_mod((rq - rp) * self.inv, self.qsq)

    def random_powers(self, count: int) -> list[mpz]:
        digits = self.tp.random_digits(count)
        psq, qsq, inv = self.psq, self.qsq, self.inv
        return [
            rp + psq * _f_mod((rq - rp) * inv, qsq)
            for rp, rq in zip(self.tp.powers(digits), self.tq.powers(digits), strict=True)
        ]


class _CrtKey:
    """Decryption mod p^2 and q^2 separately, then CRT: ~4x cheaper than working mod n^2."""

    def __init__(self, p: int, q: int):
        self.p, self.q = mpz(p), mpz(q)
        self.psq, self.qsq = self.p * self.p, self.q * self.q
        g = self.p * self.q + 1
        self.hp = gmpy2.invert((_powmod(g, self.p - 1, self.psq) - 1) // self.p, self.p)
        self.hq = gmpy2.invert((_powmod(g, self.q - 1, self.qsq) - 1) // self.q, self.q)
        self.p_inv = gmpy2.invert(self.p, self.q)

    def decrypt(self, ciphertexts: Sequence[mpz]) -> list[mpz]:
        p, q, hp, hq, p_inv = self.p, self.q, self.hp, self.hq, self.p_inv
        xps = gmpy2.powmod_base_list(list(ciphertexts), p - 1, self.psq)
        xqs = gmpy2.powmod_base_list(list(ciphertexts), q - 1, self.qsq)
        out = []
        for xp, xq in zip(xps, xqs, strict=True):
            mp = _f_mod(((xp - 1) // p) * hp, p)
            mq = _f_mod(((xq - 1) // q) * hq, q)
            out.append(mp + _f_mod((mq - mp) * p_inv, q) * p)
        return out


class _Core:
    """All arithmetic for one key in one process: the engine's own and each pool worker's."""

    def __init__(
        self,
        n: mpz,
        hs: mpz,
        *,
        exponent_bits: int,
        window_bits: int,
        crt: _CrtKey | None,
    ):
        self.n = mpz(n)
        self.nsq = self.n * self.n
        self.n_int = int(self.n)
        self.hs = mpz(hs)
        self.exponent_bits = exponent_bits
        self.window_bits = window_bits
        self.crt = crt
        self.plaintext_bytes = _byte_len(self.n)
        self.ciphertext_bytes = _byte_len(self.nsq)
        self._table: _FixedBaseTable | _CrtFixedBase | None = None

    def table(self) -> _FixedBaseTable | _CrtFixedBase:
        """The fixed-base table of h_s (split by CRT when this process holds p and q)."""
        if self._table is None:
            if self.crt is not None:
                self._table = _CrtFixedBase(
                    self.hs,
                    self.crt,
                    exponent_bits=self.exponent_bits,
                    window_bits=self.window_bits,
                )
            else:
                self._table = _FixedBaseTable(
                    self.hs,
                    self.nsq,
                    exponent_bits=self.exponent_bits,
                    window_bits=self.window_bits,
                )
        return self._table

    def obfuscators(self, count: int, mode: str) -> list[mpz]:
        if count == 0:
            return []
        if mode == "djn":
            return self.table().random_powers(count)
        n, nsq, n_int = self.n, self.nsq, self.n_int
        rs: list[mpz] = []
        while len(rs) < count:
            r = mpz(secrets.randbelow(n_int - 1) + 1)
            if gmpy2.gcd(r, n) == 1:
                rs.append(r)
        return gmpy2.powmod_base_list(rs, n, nsq)

    def encrypt(self, plaintexts: Sequence[mpz], mode: str) -> list[mpz]:
        # (1 + m·n)·r mod n^2 == r + n·(m·r mod n) mod n^2; the sum is < 2n^2.
        n, nsq = self.n, self.nsq
        out = []
        for m, r in zip(plaintexts, self.obfuscators(len(plaintexts), mode), strict=True):
            if m:
                c = r + n * _f_mod(m * _f_mod(r, n), n)
                if c >= nsq:
                    c -= nsq
                out.append(c)
            else:
                out.append(r)
        return out

    def rerandomise(self, ciphertexts: Sequence[mpz], mode: str) -> list[mpz]:
        nsq = self.nsq
        obfs = self.obfuscators(len(ciphertexts), mode)
        return [_f_mod(c * r, nsq) for c, r in zip(ciphertexts, obfs, strict=True)]

    def decrypt(self, ciphertexts: Sequence[mpz]) -> list[mpz]:
        if self.crt is None:
            raise MissingPrivateKeyError("decryption needs the private key")
        return self.crt.decrypt(ciphertexts)


# --------------------------------------------------------------------------------------------
# pool workers (state per worker process, set once by the initializer)

_WORKER: _Core | None = None


def _init_worker(config: tuple[bytes, bytes, int, int, bool, bytes | None, bytes | None]) -> None:
    """Pool initializer: rebuild the core and precompute the fixed-base table once per worker.

    ``config`` travels over the pool's local pipe inside this party's own machine; it carries
    p and q only for the key holder's engine, so its workers can decrypt.
    """
    global _WORKER
    n_b, hs_b, exponent_bits, window_bits, build_table, p_b, q_b = config
    crt = None
    if p_b is not None and q_b is not None:
        crt = _CrtKey(int.from_bytes(p_b, "big"), int.from_bytes(q_b, "big"))
    _WORKER = _Core(
        mpz.from_bytes(n_b, "big"),
        mpz.from_bytes(hs_b, "big"),
        exponent_bits=exponent_bits,
        window_bits=window_bits,
        crt=crt,
    )
    if build_table:
        _WORKER.table()


def _worker_task(op: str, buf: bytes, mode: str) -> bytes:
    """One chunk of work in a worker; inputs and outputs are fixed-width bytes."""
    core = _WORKER
    if core is None:  # pragma: no cover - only if the initializer failed
        raise CryptoError("crypto worker was not initialised")
    if op == "encrypt":
        out = core.encrypt(_from_fixed(buf, core.plaintext_bytes), mode)
        return _to_fixed(out, core.ciphertext_bytes)
    if op == "rerandomise":
        out = core.rerandomise(_from_fixed(buf, core.ciphertext_bytes), mode)
        return _to_fixed(out, core.ciphertext_bytes)
    if op == "decrypt":
        out = core.decrypt(_from_fixed(buf, core.ciphertext_bytes))
        return _to_fixed(out, core.plaintext_bytes)
    raise CryptoError(f"unknown worker operation {op!r}")  # pragma: no cover


def _noop() -> None:
    """A task that only makes a worker start (and run its initializer)."""


_PRELOAD = ["gmpy2", "numpy", "federation.crypto.encoding", "federation.crypto.histogram"]


def _default_start_method() -> str:
    # Never fork: the parent may run gRPC threads, and forking a threaded process is unsafe.
    methods = multiprocessing.get_all_start_methods()
    return "forkserver" if "forkserver" in methods else "spawn"


def prestart_workers() -> None:
    """Start this process's forkserver now (it imports the crypto modules once), so the first
    job's worker pool does not wait for it; nodes call this when they start serving."""
    if _default_start_method() == "forkserver":
        from multiprocessing import forkserver

        _context("forkserver")
        forkserver.ensure_running()


def _context(method: str) -> multiprocessing.context.BaseContext:
    """The pool's context; a forkserver imports the crypto modules once, so each later worker
    (every job's pool) starts in milliseconds instead of re-importing numpy and gmpy2."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(_PRELOAD)  # type: ignore[attr-defined]
    return ctx


def _shutdown_pool(pool: ProcessPoolExecutor) -> None:
    pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# engine


class PaillierEngine:
    """Encrypt, re-randomise and (with the private key) decrypt vectors, on all cores.

    Use as a context manager (or call :meth:`close`) so the worker pool shuts down cleanly.
    Small inputs stay in-process; the pool starts lazily on the first large one.

    ``obfuscation`` defaults by role: ``"djn"`` for the key holder (its adversaries, the data
    holders, do not know the factorisation — the setting DJN's assumption covers) and
    ``"textbook"`` without a private key (a data holder's re-randomisation must hide its data
    from the key holder, who knows p and q and may even have chosen them; uniform r hides
    perfectly whatever the key). Either can be chosen explicitly; see docs/crypto.md.
    """

    def __init__(
        self,
        params: PublicParams,
        *,
        private_key: PaillierPrivateKey | None = None,
        obfuscation: Obfuscation | None = None,
        workers: int | None = None,
        parallel_threshold: int = 4096,
        exponent_bits: int | None = None,
        window_bits: int = 10,
        start_method: str | None = None,
    ):
        """
        ``parallel_threshold`` is in DJN-encryption equivalents (one decryption ≈ 15, one
        textbook encryption ≈ 50): below it the pool's start and transfer cost is not worth it.
        ``exponent_bits`` (DJN short exponent) defaults to 2κ and may only be raised.
        """
        if not isinstance(params, PublicParams):
            raise CryptoError(f"params must be PublicParams, got {type(params).__name__}")
        key_bits = params.key_bits
        check_key_size(key_bits, "used by a PaillierEngine")
        if obfuscation is None:
            obfuscation = "djn" if private_key is not None else "textbook"
        self._check_mode(obfuscation)
        min_e = default_exponent_bits(key_bits)
        e_bits = min_e if exponent_bits is None else int(exponent_bits)
        if not min_e <= e_bits <= key_bits:
            raise CryptoError(
                f"exponent_bits must be in [{min_e}, {key_bits}] for a {key_bits}-bit key "
                f"(2κ with κ={security_bits(key_bits)}), got {exponent_bits}"
            )
        if not 1 <= window_bits <= 12:
            raise CryptoError(f"window_bits must be in [1, 12], got {window_bits}")
        n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
        if n_workers < 1:
            raise CryptoError(f"workers must be at least 1, got {workers}")
        if parallel_threshold < 0:
            raise CryptoError(f"parallel_threshold must be >= 0, got {parallel_threshold}")
        crt = None
        if private_key is not None:
            if not isinstance(private_key, PaillierPrivateKey):
                raise CryptoError("private_key must be a phe PaillierPrivateKey")
            if private_key.public_key.n != params.public_key.n:
                raise CryptoError("private_key does not belong to the public parameters' key")
            crt = _CrtKey(private_key.p, private_key.q)
        self.params = params
        self.obfuscation: str = obfuscation
        self.workers = n_workers
        self.parallel_threshold = int(parallel_threshold)
        self.exponent_bits = e_bits
        self.window_bits = int(window_bits)
        self._private_key = private_key
        self._start_method = start_method or _default_start_method()
        self._core = _Core(
            params.n, params.hs, exponent_bits=e_bits, window_bits=self.window_bits, crt=crt
        )
        self._pool: ProcessPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._finalizer: weakref.finalize | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def public_key(self) -> PaillierPublicKey:
        return self.params.public_key

    @property
    def n(self) -> mpz:
        return self._core.n

    @property
    def nsquare(self) -> mpz:
        return self._core.nsq

    @property
    def ciphertext_bytes(self) -> int:
        return self._core.ciphertext_bytes

    @property
    def plaintext_bytes(self) -> int:
        return self._core.plaintext_bytes

    @property
    def can_decrypt(self) -> bool:
        return self._core.crt is not None

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> PaillierEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Shut the worker pool down (waits for running chunks; queued ones are cancelled)."""
        with self._pool_lock:
            if self._finalizer is not None:
                self._finalizer()  # calls _shutdown_pool once
                self._finalizer = None
            self._pool = None

    def _get_pool(self) -> ProcessPoolExecutor | None:
        if self.workers <= 1:
            return None
        with self._pool_lock:
            return self._pool or self._start_pool()

    def _start_pool(self) -> ProcessPoolExecutor:
        """Workers get n, hs (and p, q for the key holder) once, via the initializer."""
        core = self._core
        crt = core.crt
        config = (
            core.n.to_bytes(core.plaintext_bytes, "big"),
            core.hs.to_bytes(core.ciphertext_bytes, "big"),
            self.exponent_bits,
            self.window_bits,
            self.obfuscation == "djn",
            None if crt is None else int(crt.p).to_bytes(_byte_len(crt.p), "big"),
            None if crt is None else int(crt.q).to_bytes(_byte_len(crt.q), "big"),
        )
        pool = self._pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=_context(self._start_method),
            initializer=_init_worker,
            initargs=(config,),
        )
        self._finalizer = weakref.finalize(self, _shutdown_pool, pool)
        return pool

    def warm(self) -> None:
        """Start the worker pool now, in the background (workers import and build their tables
        while the caller does other work), so the first large operation does not wait."""
        pool = self._get_pool()
        if pool is not None:
            for _ in range(self.workers):
                pool.submit(_noop)

    def run_tasks(self, fn: Callable[..., T], tasks: Sequence[tuple[Any, ...]]) -> list[T]:
        """Run module-level ``fn(*args)`` for each args tuple on the pool, results in order.

        For other crypto primitives (histograms, ciphertext packing) that want this engine's
        workers; runs in-process when the engine has a single worker or there is one task.
        """
        pool = self._get_pool() if len(tasks) > 1 else None
        if pool is None:
            return [fn(*args) for args in tasks]
        futures = [pool.submit(fn, *args) for args in tasks]
        return self._collect(futures)

    @staticmethod
    def _collect(futures: Sequence[Future[T]]) -> list[T]:
        try:
            return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            raise CryptoError(
                f"a crypto worker process died: {exc}. Workers are started without fork, so "
                "the main program must be an importable file guarded by "
                "`if __name__ == '__main__':` (not stdin)"
            ) from exc
        finally:
            for f in futures:
                f.cancel()

    def _parallel(self, op: str, items: Sequence[mpz], cost: int, mode: str) -> list[mpz] | None:
        """Split ``items`` into chunks for the pool, or None when in-process is cheaper."""
        if self.workers <= 1 or len(items) < 2 or len(items) * cost < self.parallel_threshold:
            return None
        pool = self._get_pool()
        assert pool is not None
        core = self._core
        in_w, out_w = {
            "encrypt": (core.plaintext_bytes, core.ciphertext_bytes),
            "rerandomise": (core.ciphertext_bytes, core.ciphertext_bytes),
            "decrypt": (core.ciphertext_bytes, core.plaintext_bytes),
        }[op]
        n_chunks = min(len(items), self.workers * 4)
        bounds = np.linspace(0, len(items), n_chunks + 1).astype(int)
        futures = [
            pool.submit(_worker_task, op, _to_fixed(items[a:b], in_w), mode)
            for a, b in itertools.pairwise(bounds)
            if b > a
        ]
        out: list[mpz] = []
        for buf in self._collect(futures):
            out.extend(_from_fixed(buf, out_w))
        return out

    # -- validation -------------------------------------------------------------------------

    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in OBFUSCATIONS:
            raise CryptoError(f"obfuscation must be one of {OBFUSCATIONS}, got {mode!r}")

    def _check_plaintexts(self, values: Iterable[Any], offset: int = 0) -> list[mpz]:
        n = self._core.n
        out = []
        for i, v in enumerate(values):
            if not isinstance(v, int | np.integer | mpz):
                raise PlaintextRangeError(
                    f"plaintext {offset + i} is {type(v).__name__}, not an integer; "
                    "encode real values with FixedPointCodec or GradHessPacker first"
                )
            m = mpz(v)
            if not 0 <= m < n:
                raise PlaintextRangeError(
                    f"plaintext {offset + i} is outside [0, n); encode signed values with "
                    "FixedPointCodec (negative x becomes n - |x|)"
                )
            out.append(m)
        return out

    def _check_ciphertexts(self, values: Iterable[Any]) -> list[mpz]:
        nsq = self._core.nsq
        out = []
        for i, v in enumerate(values):
            c = mpz(v)
            if not 0 < c < nsq:
                raise CiphertextFormatError(f"ciphertext {i} is not in [1, n^2)")
            out.append(c)
        return out

    # -- operations -------------------------------------------------------------------------

    def encrypt(self, plaintexts: Iterable[int]) -> list[mpz]:
        """Encrypt integers in [0, n) (already encoded); returns raw residues mod n^2."""
        ms = self._check_plaintexts(plaintexts)
        mode = self.obfuscation
        out = self._parallel("encrypt", ms, _COST[mode], mode)
        return self._core.encrypt(ms, mode) if out is None else out

    def encrypt_stream(self, plaintexts: Iterable[int], chunk_size: int = 1024) -> Iterator[bytes]:
        """Yield wire-ready chunks (``ciphertexts_to_bytes`` of ≤ ``chunk_size`` values) in order,
        so the caller can send chunk k while the pool still encrypts chunks k+1…

        At most 2 × workers chunks are in flight, so memory stays bounded for any input length.
        A bad plaintext raises (naming its index) when its chunk is read, which may be up to
        2 × workers chunks ahead of the last one yielded; the stream is over after that.
        """
        if chunk_size < 1:
            raise CryptoError(f"chunk_size must be >= 1, got {chunk_size}")
        mode = self.obfuscation
        it = iter(plaintexts)
        core = self._core
        pool = self._get_pool()
        offset = 0
        if pool is None:
            while chunk := list(itertools.islice(it, chunk_size)):
                ms = self._check_plaintexts(chunk, offset)
                offset += len(ms)
                yield _to_fixed(core.encrypt(ms, mode), core.ciphertext_bytes)
            return
        pending: deque[Future[bytes]] = deque()
        try:
            while True:
                while len(pending) < 2 * self.workers:
                    chunk = list(itertools.islice(it, chunk_size))
                    if not chunk:
                        break
                    ms = self._check_plaintexts(chunk, offset)
                    offset += len(ms)
                    buf = _to_fixed(ms, core.plaintext_bytes)
                    pending.append(pool.submit(_worker_task, "encrypt", buf, mode))
                if not pending:
                    return
                yield self._collect([pending.popleft()])[0]
        finally:
            for f in pending:
                f.cancel()

    def obfuscators(self, count: int, *, obfuscation: Obfuscation | None = None) -> list[mpz]:
        """Fresh random n-th residues (encryptions of zero without the ``1 + m·n`` factor)."""
        mode = obfuscation or self.obfuscation
        self._check_mode(mode)
        return self._core.obfuscators(int(count), mode)

    def rerandomise(
        self, ciphertexts: Iterable[int], *, obfuscation: Obfuscation | None = None
    ) -> list[mpz]:
        """Multiply each ciphertext by a fresh obfuscator: same plaintext, unlinkable ciphertext.

        ``obfuscation`` overrides the engine's mode for this call (see docs/crypto.md on when a
        data holder should prefer ``"textbook"`` here).
        """
        mode = obfuscation or self.obfuscation
        self._check_mode(mode)
        cts = self._check_ciphertexts(ciphertexts)
        out = self._parallel("rerandomise", cts, _COST[mode], mode)
        return self._core.rerandomise(cts, mode) if out is None else out

    def decrypt(self, ciphertexts: Iterable[int]) -> list[int]:
        """CRT decryption of raw ciphertexts (ours or phe's) to integers in [0, n)."""
        if not self.can_decrypt:
            raise MissingPrivateKeyError(
                "this engine has no private key; only the key holder can decrypt"
            )
        cts = self._check_ciphertexts(ciphertexts)
        out = self._parallel("decrypt", cts, _COST["decrypt"], "djn")
        ms = self._core.decrypt(cts) if out is None else out
        return [int(m) for m in ms]

    def add(self, a: int, b: int) -> mpz:
        """Homomorphic addition: Dec(a·b mod n^2) = Dec(a) + Dec(b) mod n."""
        return _f_mod(mpz(a) * mpz(b), self._core.nsq)

    def sum(self, ciphertexts: Iterable[int]) -> mpz:
        """Homomorphic sum of many ciphertexts (the trivial encryption 1 for none)."""
        nsq = self._core.nsq
        acc = mpz(1)
        for c in ciphertexts:
            acc = _f_mod(acc * c, nsq)
        return acc


def crt_decrypt(ciphertexts: Iterable[int], private_key: PaillierPrivateKey) -> list[int]:
    """Single-process CRT decryption with a ``phe`` private key (vectorised over the list)."""
    nsq = mpz(private_key.public_key.nsquare)
    cts = []
    for i, c in enumerate(ciphertexts):
        c = mpz(c)
        if not 0 < c < nsq:
            raise CiphertextFormatError(f"ciphertext {i} is not in [1, n^2)")
        cts.append(c)
    return [int(m) for m in _CrtKey(private_key.p, private_key.q).decrypt(cts)]


def export_private_key_insecurely(private_key: PaillierPrivateKey) -> bytes:
    """Raw (p, q) as bytes — for an encrypted key store the caller provides, never for the wire.

    Named loudly on purpose: nothing in the platform serialises a secret key by default.
    """
    p, q = int(private_key.p), int(private_key.q)
    width = max(_byte_len(p), _byte_len(q))
    logger.warning("exporting a Paillier private key (%d-bit p, q)", p.bit_length())
    return struct.pack(">H", width) + p.to_bytes(width, "big") + q.to_bytes(width, "big")


def import_private_key(buf: bytes) -> tuple[PaillierPublicKey, PaillierPrivateKey]:
    """Inverse of :func:`export_private_key_insecurely`."""
    if len(buf) < 2:
        raise CryptoError("private key bytes truncated")
    (width,) = struct.unpack(">H", buf[:2])
    if len(buf) != 2 + 2 * width:
        raise CryptoError(f"private key bytes have {len(buf)} bytes, expected {2 + 2 * width}")
    p = int.from_bytes(buf[2 : 2 + width], "big")
    q = int.from_bytes(buf[2 + width :], "big")
    if p < 3 or q < 3 or not gmpy2.is_prime(p) or not gmpy2.is_prime(q):
        raise CryptoError("private key bytes do not hold two primes")
    check_key_size((p * q).bit_length(), "imported")
    public_key = PaillierPublicKey(p * q)
    return public_key, PaillierPrivateKey(public_key, p, q)


__all__ = [
    "MIN_KEY_BITS",
    "OBFUSCATIONS",
    "CiphertextFormatError",
    "CryptoError",
    "InsecureKeyError",
    "MissingPrivateKeyError",
    "Obfuscation",
    "PaillierEngine",
    "PlaintextRangeError",
    "PublicParams",
    "PublicParamsError",
    "check_key_size",
    "ciphertexts_from_bytes",
    "ciphertexts_to_bytes",
    "crt_decrypt",
    "default_exponent_bits",
    "export_private_key_insecurely",
    "generate_keypair",
    "import_private_key",
    "make_public_params",
    "public_params_from_bytes",
    "public_params_to_bytes",
    "security_bits",
]
