"""CKKS (TenSEAL) primitives: contexts, vectors on the wire, and masked inner products.

The key holder makes a context and sends its *public* part (public key and galois keys, no
secret key, no relinearisation keys); the other side checks that nothing secret came with it
and that the parameters leave room for one plaintext product and a mask. Everything that
parses bytes from a peer turns SEAL's errors into :class:`CkksError`.

TenSEAL is imported lazily: only CKKS jobs need it.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from federation.crypto.errors import CryptoError

_MAGIC = b"XYCK"

__all__ = [
    "CkksError",
    "PublicContext",
    "decrypt_vector",
    "encrypt_chunks",
    "load_public_context",
    "load_vectors",
    "make_context",
    "masked_inner_product",
    "pack_vectors",
    "public_bytes",
    "unpack_vectors",
]


class CkksError(CryptoError):
    """CKKS parameters, a context or serialised vectors are refused or malformed."""


def tenseal() -> Any:
    """The ``tenseal`` module (untyped, hence ``Any``), imported on first use."""
    import tenseal as ts

    return ts


# --------------------------------------------------------------------------------------------
# vectors on the wire


def pack_vectors(items: Sequence[bytes]) -> bytes:
    """b"XYCK" | u32 count | (u64 length | bytes) per item: serialised CKKS vectors."""
    out = [_MAGIC, struct.pack("<I", len(items))]
    for item in items:
        out.append(struct.pack("<Q", len(item)))
        out.append(item)
    return b"".join(out)


def unpack_vectors(buf: bytes, what: str) -> list[bytes]:
    """Inverse of :func:`pack_vectors`; ``what`` names the payload in errors."""
    view = memoryview(buf)
    if len(view) < 8 or bytes(view[:4]) != _MAGIC:
        raise CkksError(f"{what}: not a list of CKKS vectors (bad magic)")
    (count,) = struct.unpack("<I", view[4:8])
    pos, items = 8, []
    for i in range(count):
        if pos + 8 > len(view):
            raise CkksError(f"{what}: truncated before item {i}")
        (size,) = struct.unpack("<Q", view[pos : pos + 8])
        pos += 8
        if pos + size > len(view):
            raise CkksError(f"{what}: item {i} is truncated")
        items.append(bytes(view[pos : pos + size]))
        pos += size
    if pos != len(view):
        raise CkksError(f"{what}: {len(view) - pos} bytes after the last item")
    return items


# --------------------------------------------------------------------------------------------
# the key holder's side


def make_context(
    poly_modulus_degree: int, coeff_mod_bit_sizes: Sequence[int], scale_bits: int
) -> Any:
    """A fresh CKKS context with its secret key and the galois keys slot sums need."""
    ts = tenseal()
    try:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=int(poly_modulus_degree),
            coeff_mod_bit_sizes=list(coeff_mod_bit_sizes),
        )
    except ValueError as exc:  # SEAL refuses parameters below 128-bit security
        raise CkksError(
            f"CKKS parameters {poly_modulus_degree}/{list(coeff_mod_bit_sizes)} refused by "
            f"SEAL: {exc}"
        ) from None
    ctx.global_scale = 2.0**scale_bits
    ctx.generate_galois_keys()
    return ctx


def public_bytes(ctx: Any) -> bytes:
    """The context without its secret key (and without relinearisation keys: none needed)."""
    return bytes(
        ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=True,
            save_relin_keys=False,
        )
    )


def encrypt_chunks(ctx: Any, values: np.ndarray, slots: int) -> list[bytes]:
    """``values`` as serialised vectors of ``slots`` each, the last one zero-padded."""
    ts = tenseal()
    n_chunks = max(1, -(-values.size // slots))
    padded = np.zeros(n_chunks * slots)
    padded[: values.size] = values
    return [
        ts.ckks_vector(ctx, padded[c * slots : (c + 1) * slots].tolist()).serialize()
        for c in range(n_chunks)
    ]


def decrypt_vector(ctx: Any, item: bytes) -> list[float]:
    """Parse and decrypt one serialised vector from a peer."""
    ts = tenseal()
    try:
        return list(ts.ckks_vector_from(ctx, item).decrypt())
    except Exception as exc:  # SEAL/TenSEAL parse errors of untrusted bytes
        raise CkksError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# the other side: public context only


@dataclass(frozen=True)
class PublicContext:
    """A peer's public CKKS context, checked, with what its parameters allow."""

    ctx: Any
    slots: int
    capacity_bits: float
    """Bits left above the scale after one plaintext product (room for values and masks)."""


def load_public_context(public: bytes) -> PublicContext:
    """Load a peer's context; refuse one that carries a secret key, lacks galois keys (slot
    sums need rotations) or allows no multiplication."""
    ts = tenseal()
    try:
        ctx = ts.context_from(public)
    except Exception as exc:
        raise CkksError(f"CKKS context: {exc}") from None
    if ctx.has_secret_key() or not ctx.is_public():
        raise CkksError("the CKKS context carries a secret key: refused")
    if not ctx.has_galois_keys():
        raise CkksError("the CKKS context has no galois keys (slot sums need rotations)")
    seal = ctx.seal_context().data
    first = seal.first_context_data()
    after_product = first.next_context_data()
    if after_product is None:
        raise CkksError("the CKKS parameters allow no multiplication")
    slots = int(first.parms().poly_modulus_degree()) // 2
    scale_bits = math.log2(ctx.global_scale)
    capacity = after_product.total_coeff_modulus_bit_count() - scale_bits - 1
    return PublicContext(ctx=ctx, slots=slots, capacity_bits=capacity)


def load_vectors(ctx: Any, items: Sequence[bytes], what: str) -> list[Any]:
    """Parse serialised vectors from a peer; ``what`` names the payload in errors."""
    ts = tenseal()
    try:
        return [ts.ckks_vector_from(ctx, item) for item in items]
    except Exception as exc:
        raise CkksError(f"{what}: {exc}") from None


def masked_inner_product(
    ctx: Any, vectors: Sequence[Any], column: np.ndarray, slots: int, mask: float
) -> bytes:
    """[[Σ_i v_i x_i + mask]], serialised: plaintext products per chunk, one slot sum
    (rotations), plus a fresh encryption of ``mask`` - which re-randomises the result and
    masks every slot, so the key holder learns nothing but the masked sum.

    ``column`` holds one plaintext per slot of every vector (zero-padded to fill them).
    """
    ts = tenseal()
    acc = vectors[0] * column[:slots].tolist()
    for c in range(1, len(vectors)):
        acc = acc + vectors[c] * column[c * slots : (c + 1) * slots].tolist()
    total = acc.sum()
    total.add_(ts.ckks_vector(ctx, [mask]))  # fresh: re-randomised, all slots
    return bytes(total.serialize())
