"""The group work of the PSI: codes hashed to Curve25519 points, points blinded by X25519.

All scalar multiplication, scalar inversion and small-order checking is libsodium's, through
PyNaCl's public ``nacl.bindings``; the only arithmetic here is the curve equation (one GMP
Legendre symbol), used to hash to the curve and to check points from peers. The chunk
functions are module-level so the worker processes (see ``workers``) can run them.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import gmpy2
from nacl import bindings as _nb
from nacl.exceptions import CryptoError as _SodiumError

from federation.errors import ConfigError
from federation.psi.codes import CODE_LEN, normalise_codes
from federation.psi.errors import PsiError

DOMAIN = b"xinyidai-psi-v1|"
POINT_BYTES = 32

# Curve25519 (RFC 7748): y^2 = x^3 + A x^2 + x over GF(p).
_P = (1 << 255) - 19
_PM = gmpy2.mpz(_P)
_A = gmpy2.mpz(486662)
_MASK255 = (1 << 255) - 1
# x-coordinates of the small-order points that lie on the curve (libsodium rejects them too).
SMALL_ORDER_U = frozenset(
    {
        0,
        1,
        325606250916557431795983626356110631294008115727848805560023387167927233504,
        39382357235489614581723060781553021112529911719440698176882885853963445705823,
    }
)

mpz_le = gmpy2.mpz.from_bytes  # gmpy2 >= 2.2: 30x faster than int.from_bytes + mpz()
_kronecker = gmpy2.kronecker  # = Legendre symbol for the odd prime p; GMP's binary algorithm
_CTR = [bytes((i,)) for i in range(256)]
_x25519 = _nb.crypto_scalarmult


def check_salt(salt: bytes) -> bytes:
    if not isinstance(salt, (bytes, bytearray)) or not 1 <= len(salt) <= 255:
        raise ConfigError("PSI salt must be 1 to 255 bytes, agreed by both parties")
    return bytes(salt)


def hash_prefix(salt: bytes) -> bytes:
    # Length-prefixing the salt keeps (salt, code) pairs unambiguous for any salt bytes.
    return DOMAIN + bytes((len(salt),)) + salt


def on_curve(m: Any) -> bool:
    """True when ``m`` (< p) is the x-coordinate of a Curve25519 point, not of its twist.

    x is on the curve iff x^3 + A x^2 + x is a nonzero square mod p (RFC 7748's equation).
    """
    return bool(_kronecker(m * (m * (m + _A) + 1), _PM) == 1)


def hash_to_u(prefix: bytes, code: bytes) -> bytes:
    """Hash one normalised code to a Curve25519 x-coordinate (try-and-increment).

    Each sha512 gives two 255-bit candidates; about half of all x-coordinates lie on the
    curve, so ~1.3 hashes are needed on average. Twist points are rejected because the
    curve/twist bit of a blinded point is visible and would leak one bit about the code.
    """
    for ctr in _CTR:
        digest = hashlib.sha512(prefix + code + ctr).digest()
        for half in (digest[:32], digest[32:]):
            m = mpz_le(half, "little") & _MASK255
            if m < _PM and on_curve(m) and m not in SMALL_ORDER_U:
                return half[:31] + bytes((half[31] & 0x7F,))
    raise PsiError("hash-to-curve found no point in 512 candidates")  # probability 2^-512


def hash_code_point(code: str, *, salt: bytes) -> bytes:
    """The unblinded point H(code) as 32 bytes: for tests and audits, never sent by the protocol."""
    norm = normalise_codes([code])
    return hash_to_u(hash_prefix(check_salt(salt)), norm[0].tobytes())


def check_point(p: bytes) -> str | None:
    """Why a peer's 32-byte point is unacceptable, or None: canonical, on the curve, not tiny."""
    m = mpz_le(p, "little")
    if m >= _PM:
        return "not a canonical Curve25519 x-coordinate"
    if not on_curve(m):
        return "not a point on Curve25519"
    if m in SMALL_ORDER_U:
        return "a small-order point"
    return None


def hash_blind_chunk(codes: bytes, prefix: bytes, scalar: bytes) -> bytes:
    """H(c)^scalar for each 18-byte code in ``codes``, as concatenated 32-byte points."""
    out = []
    smult = _x25519
    for i in range(len(codes) // CODE_LEN):
        u = hash_to_u(prefix, codes[i * CODE_LEN : (i + 1) * CODE_LEN])
        try:
            out.append(smult(scalar, u))
        except _SodiumError:  # unreachable: tiny points excluded
            raise RuntimeError("X25519 rejected a hashed point") from None
    return b"".join(out)


def mult_chunk(points: bytes, scalar: bytes, keep: int) -> tuple[bytes, int, str]:
    """Validate and raise each peer point to ``scalar``, keeping the first ``keep`` bytes.

    Returns ``(output, -1, "")`` or, at the first bad point, ``(b"", index, reason)`` so the
    caller can name the element; exceptions are avoided because they cross processes.
    """
    out = []
    smult = _x25519
    whole = keep == POINT_BYTES
    for i in range(len(points) // POINT_BYTES):
        p = points[i * POINT_BYTES : (i + 1) * POINT_BYTES]
        m = mpz_le(p, "little")
        if m >= _PM or not on_curve(m) or m in SMALL_ORDER_U:
            return b"", i, check_point(p) or "invalid point"
        try:
            q = smult(scalar, p)
        except _SodiumError:
            return b"", i, "a small-order point"
        out.append(q if whole else q[:keep])
    return b"".join(out), -1, ""


def _clamp(raw: bytes) -> bytes:
    k = bytearray(raw)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    return bytes(k)


def holder_scalar() -> bytes:
    return _clamp(secrets.token_bytes(32))


_INV8 = _nb.crypto_core_ed25519_scalar_invert((8).to_bytes(32, "little"))


def bank_scalars() -> tuple[bytes, bytes]:
    """A random X25519 scalar ``a`` and a scalar ``c`` with ``X25519(c, X25519(a, P)) == P``.

    X25519 clamps scalars (multiple of 8, bit 254 set), so the unblinding scalar must itself be
    clamped: ``c = 8 t`` with ``t = (8 a)^-1 mod l`` satisfies ``c a = 1 mod l``; about half of
    all ``a`` give a ``c`` in the clamped range and the others are redrawn. The inversion is
    libsodium's (constant time), not Python's ``pow``.
    """
    for _ in range(512):
        a = holder_scalar()
        a_mod_l = _nb.crypto_core_ed25519_scalar_reduce(a + bytes(32))
        t = _nb.crypto_core_ed25519_scalar_mul(
            _nb.crypto_core_ed25519_scalar_invert(a_mod_l), _INV8
        )
        c = int.from_bytes(t, "little") << 3
        if c >> 254 == 1:
            return a, c.to_bytes(32, "little")
    raise PsiError("could not draw an invertible X25519 scalar")  # probability 2^-512


class NoPickle:
    """Party objects hold secret scalars: refuse pickling so they cannot leak by accident."""

    def __reduce__(self) -> Any:
        raise TypeError(f"{type(self).__name__} holds a secret scalar and cannot be pickled")
