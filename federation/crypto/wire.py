"""Ciphertexts on the wire: each one big-endian in the byte length of n^2, concatenated.

Fixed width means a receiver can check the length before parsing anything, and a worker
process gets its chunk as plain bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gmpy2 import mpz
from phe.paillier import PaillierPublicKey

from federation.crypto.errors import CiphertextFormatError, CryptoError
from federation.crypto.keys import PublicParams, byte_len


def nsquare_of(key: PaillierPublicKey | PublicParams) -> mpz:
    if isinstance(key, PublicParams):
        key = key.public_key
    if not isinstance(key, PaillierPublicKey):
        raise CryptoError(f"expected a phe PaillierPublicKey, got {type(key).__name__}")
    return mpz(key.nsquare)


def to_fixed(values: Iterable[Any], width: int) -> bytes:
    """Concatenate fixed-width big-endian encodings; values must already be in range."""
    return b"".join([mpz(v).to_bytes(width, "big") for v in values])


def from_fixed(buf: bytes, width: int) -> list[mpz]:
    view = memoryview(buf)
    from_bytes = mpz.from_bytes
    return [from_bytes(view[i : i + width], "big") for i in range(0, len(view), width)]


def ciphertexts_to_bytes(
    ciphertexts: Iterable[int], public_key: PaillierPublicKey | PublicParams
) -> bytes:
    """Wire form: each ciphertext big-endian in the byte length of n^2, concatenated."""
    nsq = nsquare_of(public_key)
    width = byte_len(nsq)
    out = []
    for i, c in enumerate(ciphertexts):
        c = mpz(c)
        if not 0 < c < nsq:
            raise CiphertextFormatError(
                f"item {i} of the ciphertexts (0-based) is not in [1, n^2); nothing serialised"
            )
        out.append(c.to_bytes(width, "big"))
    return b"".join(out)


def ciphertexts_from_bytes(
    buf: bytes | bytearray | memoryview, public_key: PaillierPublicKey | PublicParams
) -> list[mpz]:
    """Inverse of :func:`ciphertexts_to_bytes`; refuses a length that is not a multiple of the
    width and any value outside [1, n^2), naming the first bad index."""
    nsq = nsquare_of(public_key)
    width = byte_len(nsq)
    if len(buf) % width:
        raise CiphertextFormatError(
            f"{len(buf)} bytes is not a whole number of {width}-byte ciphertexts "
            f"({len(buf) // width} and {len(buf) % width} bytes left over)"
        )
    cts = from_fixed(bytes(buf) if not isinstance(buf, bytes) else buf, width)
    for i, c in enumerate(cts):
        if not 0 < c < nsq:
            raise CiphertextFormatError(f"item {i} of the ciphertexts (0-based) is not in [1, n^2)")
    return cts
