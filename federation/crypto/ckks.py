"""CKKS (TenSEAL) primitives: contexts, vectors on the wire, and packed masked products.

The key holder makes a context and sends its *public* part (public key and galois keys, no
secret key, no relinearisation keys); the other side checks that nothing secret came with it
and that the parameters leave room for one plaintext product and a mask. Everything that
parses bytes from a peer turns SEAL's errors into :class:`CkksError`.

``packed_masked_products`` computes every ``Σ_i v_i x_ij`` of a matrix in one ciphertext
(Halevi–Shoup diagonals, baby-step giant-step): about 2·√d + log2(rows/d) rotations for d
columns instead of d·log2(slots), and one ciphertext back instead of d. It works on SEAL's
objects (``tenseal.sealapi``) because TenSEAL's vectors expose no rotation.

``security_bits`` reads the HomomorphicEncryption.org standard's table, so results can state
what a parameter set gives instead of a Paillier-style key size.

TenSEAL is imported lazily: only CKKS jobs need it.
"""

from __future__ import annotations

import math
import secrets
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federation.crypto.errors import CryptoError

_MAGIC = b"XYCK"

__all__ = [
    "HE_STANDARD_MAX_LOG_Q",
    "PLAINTEXT_CACHE_MAX",
    "CkksError",
    "PublicContext",
    "block_rows",
    "decrypt_slots",
    "describe_parameters",
    "encrypt_blocks",
    "load_public_context",
    "load_vectors",
    "make_context",
    "pack_vectors",
    "packed_masked_products",
    "public_bytes",
    "security_bits",
    "unpack_vectors",
]


class CkksError(CryptoError):
    """CKKS parameters, a context or serialised vectors are refused or malformed."""


def tenseal() -> Any:
    """The ``tenseal`` module (untyped, hence ``Any``), imported on first use."""
    import tenseal as ts

    return ts


def sealapi() -> Any:
    """SEAL's own objects as TenSEAL ships them (evaluator, encoder, ciphertexts)."""
    import tenseal.sealapi as sa

    return sa


# --------------------------------------------------------------------------------------------
# security of a parameter set

HE_STANDARD_MAX_LOG_Q: dict[int, dict[int, int]] = {
    1024: {128: 27, 192: 19, 256: 14},
    2048: {128: 54, 192: 37, 256: 29},
    4096: {128: 109, 192: 75, 256: 58},
    8192: {128: 218, 192: 152, 256: 118},
    16384: {128: 438, 192: 305, 256: 237},
    32768: {128: 881, 192: 611, 256: 476},
}
"""Largest total coefficient-modulus bits (log q, special prime included) per ring dimension N
for 128/192/256-bit classical security with a ternary secret: HomomorphicEncryption.org
security standard (Albrecht et al., 2018), Table 1 - the table SEAL enforces."""


def security_bits(poly_modulus_degree: int, coeff_mod_bit_sizes: Sequence[int]) -> int:
    """Estimated classical security (128, 192 or 256) of a CKKS parameter set per the HE
    standard's table; 0 when the modulus is too large for 128 bits or N is not in it."""
    table = HE_STANDARD_MAX_LOG_Q.get(int(poly_modulus_degree), {})
    log_q = sum(int(b) for b in coeff_mod_bit_sizes)
    return max((level for level, bound in table.items() if log_q <= bound), default=0)


def describe_parameters(
    poly_modulus_degree: int, coeff_mod_bit_sizes: Sequence[int], scale_bits: int
) -> dict[str, Any]:
    """What a result, a tracking record or a lineage report should say about CKKS keys: the
    ring, the modulus chain, the scale and the standard's security estimate (a CKKS key has no
    single "key size")."""
    bits = [int(b) for b in coeff_mod_bit_sizes]
    return {
        "scheme": "ckks",
        "poly_modulus_degree": int(poly_modulus_degree),
        "coeff_mod_bit_sizes": bits,
        "coeff_modulus_bits": sum(bits),
        "scale_bits": int(scale_bits),
        "slots": int(poly_modulus_degree) // 2,
        "security_bits": security_bits(poly_modulus_degree, bits),
        "security_basis": "HomomorphicEncryption.org standard, classical, ternary secret",
    }


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


def block_rows(n_rows: int, slots: int) -> int:
    """Rows of one block of the packed layout: the next power of two ≥ ``n_rows``, at most
    ``slots`` (both sides derive it from the batch size; nothing else is agreed)."""
    if n_rows < 1:
        raise CkksError("a batch needs at least one row")
    return min(int(slots), 1 << (int(n_rows) - 1).bit_length())


def encrypt_blocks(ctx: Any, values: np.ndarray, slots: int) -> list[bytes]:
    """``values`` in the layout ``packed_masked_products`` reads: chunks of ``slots`` rows;
    a batch of at most half the slots is zero-padded to its block (a power of two) and the
    block repeated across the slots, so that a rotation within the block is a rotation of
    the whole vector."""
    ts = tenseal()
    block = block_rows(values.size, slots)
    n_chunks = max(1, -(-values.size // slots))
    padded = np.zeros(n_chunks * slots if block == slots else block)
    padded[: values.size] = values
    if block < slots:  # one chunk: its block, repeated
        padded = np.tile(padded, slots // block)
    return [
        ts.ckks_vector(ctx, padded[c * slots : (c + 1) * slots].tolist()).serialize()
        for c in range(n_chunks)
    ]


def _ciphertext_to_bytes(ct: Any) -> bytes:
    """SEAL's own serialisation (sealapi writes only to a path)."""
    with tempfile.TemporaryDirectory(prefix="xy-ckks-") as tmp:
        path = Path(tmp) / "ct"
        ct.save(str(path))
        return path.read_bytes()


def _ciphertext_from_bytes(seal_context: Any, data: bytes) -> Any:
    """Parse a peer's SEAL ciphertext; SEAL checks it against the context's parameters."""
    sa = sealapi()
    ct = sa.Ciphertext()
    with tempfile.TemporaryDirectory(prefix="xy-ckks-") as tmp:
        path = Path(tmp) / "ct"
        path.write_bytes(data)
        try:
            ct.load(seal_context, str(path))
        except Exception as exc:  # SEAL's checks of untrusted bytes
            raise CkksError(f"not a ciphertext for these parameters: {exc}") from None
    return ct


def decrypt_slots(ctx: Any, item: bytes, count: int) -> np.ndarray:
    """Key holder: the first ``count`` slots of a ciphertext made by ``packed_masked_products``
    (the other slots hold masked by-products and are never released)."""
    sa = sealapi()
    seal_context = ctx.data.seal_context()
    ct = _ciphertext_from_bytes(seal_context, item)
    if ct.size() != 2:
        raise CkksError(f"a ciphertext of size {ct.size()} (expected 2)")
    if not 0 < ct.scale < 2.0**80:
        raise CkksError("a ciphertext with an implausible scale")
    plain = sa.Plaintext()
    try:
        sa.Decryptor(seal_context, ctx.data.secret_key()).decrypt(ct, plain)
        values = sa.CKKSEncoder(seal_context).decode_double(plain)
    except Exception as exc:
        raise CkksError(f"decryption failed: {exc}") from None
    if count > len(values):
        raise CkksError(f"{count} values asked from a ciphertext of {len(values)} slots")
    return np.asarray(values[:count], dtype=np.float64)


# --------------------------------------------------------------------------------------------
# the other side: public context only


@dataclass(frozen=True)
class PublicContext:
    """A peer's public CKKS context, checked, with what its parameters allow."""

    ctx: Any
    slots: int
    capacity_bits: float
    """Bits left above the scale after one plaintext product (room for values and masks)."""
    scale: float = 2.0**40


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
    return PublicContext(ctx=ctx, slots=slots, capacity_bits=capacity, scale=ctx.global_scale)


def load_vectors(ctx: Any, items: Sequence[bytes], what: str) -> list[Any]:
    """Parse serialised vectors from a peer; ``what`` names the payload in errors."""
    ts = tenseal()
    try:
        return [ts.ckks_vector_from(ctx, item) for item in items]
    except Exception as exc:
        raise CkksError(f"{what}: {exc}") from None


PLAINTEXT_CACHE_MAX = 128
"""Encoded diagonals a holder keeps between gradients on the same rows (~200 kB each at
N = 8192: at most ~25 MB)."""


def _diagonals(X: np.ndarray, block: int, width: int, slots: int) -> np.ndarray:
    """Row ``t`` holds the plaintext of diagonal t: slot s < block carries x[(s+t) mod block,
    s mod width] (zero beyond the block)."""
    s = np.arange(slots)
    inside = s < block
    out = np.zeros((width, slots))
    cols = s[inside] % width
    for t in range(width):
        out[t, inside] = X[(s[inside] + t) % block, cols]
    return out


def packed_masked_products(
    context: PublicContext,
    items: Sequence[bytes],
    X: np.ndarray,
    *,
    mask_bits: int,
    cache: dict[tuple[int, int], Any] | None = None,
) -> tuple[bytes, np.ndarray]:
    """``[[X[:, j]ᵀ v + m_j]]`` for every column j, in the first d slots of ONE ciphertext.

    ``items``: the key holder's vectors in ``encrypt_blocks``' layout for ``X.shape[0]`` rows
    (chunks of ``slots`` rows; a short batch tiled in blocks of ``block_rows``). With the
    columns padded to a power of two W ≤ block, diagonal t of the (block × W) matrix times the
    vector rotated by t, summed over t, leaves in slot s a sum whose terms, added over the
    slots s, s+W, s+2W, ... of the block, are exactly Σ_i v_i x_i,s (Halevi–Shoup's hybrid
    method). The t = a + b·√W terms are grouped baby-step giant-step: √W rotations of each
    input chunk, √W of the products (shared by all chunks), log2(block/W) for the final sums
    - every rotation a power of two, so the standard galois keys suffice.

    Then a fresh public-key encryption of an independent uniform mask in ±2^mask_bits is added
    to EVERY slot (the other slots hold partial sums that must not reach the key holder);
    it also re-randomises the ciphertext. Returns (SEAL ciphertext bytes, the d masks).

    ``cache``: encoded diagonals of THIS ``X`` (the caller empties it when the rows change),
    filled up to ``PLAINTEXT_CACHE_MAX`` plaintexts: a full-batch job encodes them once.
    """
    sa = sealapi()
    ctx = context.ctx.data
    slots = context.slots
    rows, d = X.shape
    block = block_rows(rows, slots)
    n_chunks = max(1, -(-rows // slots))
    if len(items) != n_chunks:
        raise CkksError(f"{len(items)} CKKS vectors for a batch of {rows} rows")
    width = 1 << (max(1, d) - 1).bit_length()
    if width > block:
        raise CkksError(
            f"{d} features do not fit a batch of {rows} rows padded to {block}: one ciphertext "
            "packs at most as many features as the padded batch has rows"
        )
    seal_context = ctx.seal_context()
    evaluator = sa.Evaluator(seal_context)
    encoder = sa.CKKSEncoder(seal_context)
    galois = ctx.galois_keys()
    baby = 1 << ((width.bit_length() - 1 + 1) // 2)  # ⌈√W⌉ as a power of two
    giant = width // baby

    def rotated(ct: Any, steps: int) -> Any:
        out = sa.Ciphertext()
        evaluator.rotate_vector(ct, steps, galois, out)
        return out

    try:
        inners: list[Any] = [None] * giant
        for c, item in enumerate(items):
            ct = load_vectors(context.ctx, [item], "encrypted residuals")[0]
            if ct.size() != slots:
                raise CkksError(f"every residual vector must fill the {slots} slots")
            start = ct.ciphertext()[0]
            babies = [start]
            for _ in range(1, baby):
                babies.append(rotated(babies[-1], 1))
            diagonals: np.ndarray | None = None
            for g in range(giant):
                for a in range(baby):
                    plain = None if cache is None else cache.get((c, a + g * baby))
                    if plain is None:
                        if diagonals is None:
                            chunk = np.zeros((block, width))
                            part = X[c * slots : (c + 1) * slots]
                            chunk[: part.shape[0], :d] = part
                            diagonals = _diagonals(chunk, block, width, slots)
                        # diagonal a + g·baby, rotated right by g·baby (the giant step undoes it)
                        plain = sa.Plaintext()
                        values = np.roll(diagonals[a + g * baby], g * baby)
                        encoder.encode(values.tolist(), start.parms_id(), context.scale, plain)
                        if cache is not None and len(cache) < PLAINTEXT_CACHE_MAX:
                            cache[(c, a + g * baby)] = plain
                    product = sa.Ciphertext()
                    evaluator.multiply_plain(babies[a], plain, product)
                    if inners[g] is None:
                        inners[g] = product
                    else:
                        evaluator.add_inplace(inners[g], product)
        for g in range(giant):
            evaluator.rescale_to_next_inplace(inners[g])
        acc = inners[giant - 1]
        for g in range(giant - 2, -1, -1):
            acc = rotated(acc, baby)
            evaluator.add_inplace(acc, inners[g])
        step = width
        while step < block:
            evaluator.add_inplace(acc, rotated(acc, step))
            step *= 2
        bound = 2.0**mask_bits
        masks = np.array(
            [(secrets.randbits(53) / 2.0**53 * 2.0 - 1.0) * bound for _ in range(slots)]
        )
        plain = sa.Plaintext()
        encoder.encode(masks.tolist(), acc.parms_id(), acc.scale, plain)
        fresh = sa.Ciphertext()
        ctx.encryptor().encrypt(plain, fresh)
        evaluator.add_inplace(acc, fresh)
    except CkksError:
        raise
    except Exception as exc:  # SEAL: missing galois keys, exhausted modulus chain, ...
        raise CkksError(f"packed product failed: {exc}") from None
    return _ciphertext_to_bytes(acc), masks[:d].copy()
