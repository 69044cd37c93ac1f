"""Paillier keys and the public parameters a data holder gets from the key holder.

Key-size policy (2048 bits minimum outside tests), key generation, the DJN parameter ``hs``
derived from a public seed (so a holder can check it is an n-th power), its wire format, and
the explicitly named export of a private key. Keys stay ``phe`` objects throughout.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import secrets
import struct
from dataclasses import dataclass

import gmpy2
from gmpy2 import mpz
from phe.paillier import PaillierPrivateKey, PaillierPublicKey, generate_paillier_keypair

from federation.crypto import testing as _testing
from federation.crypto.errors import CryptoError, InsecureKeyError, PublicParamsError

logger = logging.getLogger("federation.crypto")

MIN_KEY_BITS = 2048
"""Smallest Paillier modulus accepted outside tests (≈112-bit security)."""


_PARAMS_MAGIC = b"XYDJ"
_PARAMS_VERSION = 1
_SEED_BYTES = 32
_H_DOMAIN = b"xinyidai/paillier/djn-h/v1\x00"

_f_mod = gmpy2.f_mod
_powmod = gmpy2.powmod


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
    keys: tuple[PaillierPublicKey, PaillierPrivateKey] = generate_paillier_keypair(n_length=n_bits)
    return keys


def security_bits(key_bits: int) -> int:
    """κ used for the short exponent: 128 up to 3072-bit keys, 192 above (NIST SP 800-57)."""
    return 128 if key_bits <= 3072 else 192


def default_exponent_bits(key_bits: int) -> int:
    """Length of the DJN short exponent ``a``: 2κ bits, so that generic (baby-step giant-step or
    kangaroo) search for ``a`` costs 2^κ group operations."""
    return 2 * security_bits(key_bits)


def byte_len(x: int) -> int:
    return (int(x).bit_length() + 7) // 8


def _derive_h(n: mpz, seed: bytes) -> mpz:
    """h = −x² mod n with x hashed from (n, seed): random, yet checkable by every holder."""
    n_bytes = byte_len(n)
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
        return byte_len(self.public_key.nsquare)

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
    n_bytes = byte_len(n)
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
    if n_bytes == 0 or byte_len(n) != n_bytes or n % 2 == 0:
        raise PublicParamsError("modulus n is malformed (zero, padded or even)")
    check_key_size(int(n).bit_length(), "received in public parameters")
    if len(buf) < pos + 1:
        raise PublicParamsError("public parameters truncated before the seed")
    seed_len = buf[pos]
    pos += 1
    seed = buf[pos : pos + seed_len]
    pos += seed_len
    nsq = n * n
    width = byte_len(nsq)
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


def export_private_key_insecurely(private_key: PaillierPrivateKey) -> bytes:
    """Raw (p, q) as bytes — for an encrypted key store the caller provides, never for the wire.

    Named loudly on purpose: nothing in the platform serialises a secret key by default.
    """
    p, q = int(private_key.p), int(private_key.q)
    width = max(byte_len(p), byte_len(q))
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
