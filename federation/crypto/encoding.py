"""Fixed-point encoding and packing: real numbers to Paillier plaintexts and back.

Three layers, all exact integer arithmetic so that homomorphic sums decode without drift:

* :class:`FixedPointCodec` — signed reals ↔ integers mod n (negative x is n − |x|), compatible
  with ``phe``'s encoding when the scale is a power of 16.
* :class:`GradHessPacker` — one plaintext per sample holding (gradient, hessian, count) in
  non-negative slots wide enough that sums over ``n_samples_max`` samples never carry into the
  next slot: one encryption per sample instead of two, and half the ciphertext traffic.
* :class:`CiphertextPacker` — the data holder folds many encrypted bin sums into one ciphertext
  (``Π c_i^(2^(i·w)) mod n^2``), so the bank decrypts 10–20× fewer ciphertexts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe.paillier import PaillierPublicKey

from federation.crypto.errors import CryptoError
from federation.crypto.keys import PublicParams, byte_len
from federation.crypto.paillier import PaillierEngine

_f_mod = gmpy2.f_mod


class EncodingError(CryptoError):
    """A value cannot be encoded (not finite, out of range) or a decoded value is inconsistent."""


class PackingOverflowError(EncodingError):
    """Slots do not fit the key, or a decrypted slot shows an overflow or corruption."""


def _as_float_array(values: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EncodingError(f"{name} must be numeric: {exc}") from exc
    if arr.ndim != 1:
        raise EncodingError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise EncodingError(f"{name}[{bad[0]}] is {arr[bad[0]]}: only finite values encode")
    return arr


def _modulus(key: int | PaillierPublicKey | PublicParams) -> int:
    if isinstance(key, PublicParams):
        return int(key.public_key.n)
    if isinstance(key, PaillierPublicKey):
        return int(key.n)
    return int(key)


def _rint_to_ints(scaled: np.ndarray) -> list[int]:
    """Round to nearest and convert exactly (float64 → Python int, no int64 wrap-around)."""
    q = np.rint(scaled)
    if q.size and float(np.max(np.abs(q))) < 2.0**62:
        ints: list[int] = q.astype(np.int64).tolist()
        return ints
    return [int(v) for v in q.tolist()]


class FixedPointCodec:
    """Signed reals as ``round(x · 2^scale_bits)`` mod n; sums of encodings decode to sums.

    Decoding follows ``phe``: values up to n // 3 − 1 are positive, from n − (n // 3 − 1) on
    negative, anything between is reported as an overflow instead of silently wrapping.
    """

    def __init__(self, *, scale_bits: int = 40):
        if not isinstance(scale_bits, int) or not 0 <= scale_bits <= 1000:
            raise EncodingError(f"scale_bits must be an integer in [0, 1000], got {scale_bits!r}")
        self.scale_bits = scale_bits

    @property
    def phe_exponent(self) -> int:
        """The ``exponent`` of ``phe.EncryptedNumber`` for this scale (phe uses base 16)."""
        if self.scale_bits % 4:
            raise EncodingError(
                f"scale_bits={self.scale_bits} is not a multiple of 4: no phe exponent matches"
            )
        return -(self.scale_bits // 4)

    def encode(self, values: Any, modulus: int | PaillierPublicKey | PublicParams) -> list[int]:
        """Vectorised encode of a 1-D float array to integers in [0, n)."""
        n = _modulus(modulus)
        arr = _as_float_array(values, "values")
        with np.errstate(over="ignore"):
            scaled = arr * float(2**self.scale_bits)  # exact: scaling by a power of two
        if not np.all(np.isfinite(scaled)):
            raise EncodingError(f"a value overflows float64 at scale 2^{self.scale_bits}")
        ints = _rint_to_ints(scaled)
        max_int = n // 3 - 1
        out = []
        for i, v in enumerate(ints):
            if abs(v) > max_int:
                raise EncodingError(
                    f"values[{i}]={arr[i]!r} is too large for this key at scale 2^{self.scale_bits}"
                )
            out.append(v if v >= 0 else n + v)
        return out

    def decode(
        self,
        encoded: Iterable[int],
        modulus: int | PaillierPublicKey | PublicParams,
        *,
        scale_bits: int | None = None,
    ) -> np.ndarray:
        """Decode (sums of) encodings. ``scale_bits`` overrides the scale, e.g. 2·scale_bits after
        multiplying by an encoded plaintext. Exactly rounded: the integer is divided once."""
        n = _modulus(modulus)
        s = self.scale_bits if scale_bits is None else int(scale_bits)
        max_int = n // 3 - 1
        denom = 1 << s
        out = []
        for i, e in enumerate(encoded):
            v = int(e) % n
            if v <= max_int:
                out.append(v / denom)
            elif v >= n - max_int:
                out.append((v - n) / denom)
            else:
                raise EncodingError(
                    f"encoded[{i}] is in the overflow band (|x| ≥ n/3): the sum overflowed"
                )
        return np.asarray(out, dtype=np.float64)


class GradHessPacker:
    """Per-sample (g, h, 1) in one non-negative plaintext: ``g_q ‖ h_q ‖ count``.

    ``g ∈ [−g_bound, g_bound]`` is shifted by ``g_bound`` to be non-negative; the count slot
    (each sample contributes 1) lets the bank remove ``count · g_bound`` after summing.
    Slot widths are sized for sums over ``n_samples_max`` samples; the constructor refuses a
    layout that does not fit in ``key_bits − 1`` bits (every such value is < n).
    """

    def __init__(
        self,
        *,
        n_samples_max: int,
        key_bits: int,
        precision_bits: int = 40,
        g_bound: float = 1.0,
        h_bound: float = 1.0,
    ):
        if not isinstance(n_samples_max, int) or n_samples_max < 1:
            raise EncodingError(f"n_samples_max must be a positive integer, got {n_samples_max!r}")
        if not isinstance(precision_bits, int) or not 1 <= precision_bits <= 60:
            raise EncodingError(f"precision_bits must be in [1, 60], got {precision_bits!r}")
        for name, bound in (("g_bound", g_bound), ("h_bound", h_bound)):
            if not (np.isfinite(bound) and bound > 0 and bound * 2.0**precision_bits < 2.0**61):
                raise EncodingError(f"{name} must be positive and < 2^(61-precision_bits)")
        self.n_samples_max = n_samples_max
        self.key_bits = int(key_bits)
        self.precision_bits = precision_bits
        self.g_bound = float(g_bound)
        self.h_bound = float(h_bound)
        scale = 2**precision_bits
        self.g_offset = round(self.g_bound * scale)  # per-sample shift making g_q ≥ 0
        self.g_q_max = 2 * self.g_offset
        self.h_q_max = round(self.h_bound * scale)
        self.count_bits = n_samples_max.bit_length()
        self.h_bits = (n_samples_max * self.h_q_max).bit_length()
        self.g_bits = (n_samples_max * self.g_q_max).bit_length()
        self.slot_bits = self.g_bits + self.h_bits + self.count_bits
        budget = self.key_bits - 1
        if self.slot_bits > budget:
            raise PackingOverflowError(
                f"packing needs {self.slot_bits} bits (g {self.g_bits} + h {self.h_bits} + "
                f"count {self.count_bits}) for sums over {n_samples_max} samples at "
                f"{precision_bits}-bit precision, but a {self.key_bits}-bit key holds "
                f"{budget}: lower precision_bits or n_samples_max, or use a larger key"
            )
        self._h_shift = self.count_bits
        self._g_shift = self.count_bits + self.h_bits

    @property
    def max_abs_error(self) -> float:
        """Worst-case rounding error of a decoded sum over ``n_samples_max`` samples."""
        return self.n_samples_max * 2.0 ** -(self.precision_bits + 1)

    def ciphertext_packer(self) -> CiphertextPacker:
        """The matching ciphertext-level packer: one slot per packed bin sum."""
        return CiphertextPacker(slot_bits=self.slot_bits, key_bits=self.key_bits)

    def pack(self, g: Any, h: Any) -> list[int]:
        """Vectorised: one plaintext per sample; refuses out-of-range or non-finite values."""
        g_arr = _as_float_array(g, "g")
        h_arr = _as_float_array(h, "h")
        if g_arr.shape != h_arr.shape:
            raise EncodingError(f"g has {g_arr.size} values but h has {h_arr.size}")
        bad = np.flatnonzero(np.abs(g_arr) > self.g_bound)
        if bad.size:
            raise EncodingError(f"g[{bad[0]}]={g_arr[bad[0]]} is outside ±{self.g_bound}")
        bad = np.flatnonzero((h_arr < 0) | (h_arr > self.h_bound))
        if bad.size:
            raise EncodingError(f"h[{bad[0]}]={h_arr[bad[0]]} is outside [0, {self.h_bound}]")
        scale = float(2**self.precision_bits)
        g_q = np.rint(g_arr * scale).astype(np.int64) + self.g_offset
        h_q = np.rint(h_arr * scale).astype(np.int64)
        # Clamp guards the last ulp of rounding at the bounds; values are already validated.
        g_q = np.clip(g_q, 0, self.g_q_max).astype(object)
        h_q = np.clip(h_q, 0, self.h_q_max).astype(object)
        packed = (g_q << self._g_shift) + (h_q << self._h_shift) + 1
        plaintexts: list[int] = packed.tolist()
        return plaintexts

    def unpack(self, sums: Iterable[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Decrypted (sums of) packed plaintexts → (sum_g, sum_h, count) as numpy arrays.

        Each slot is checked against what ``count`` samples can produce, so a wrong key, a
        corrupted ciphertext or an overflow is reported instead of decoded as garbage.
        """
        c_mask = (1 << self.count_bits) - 1
        h_mask = (1 << self.h_bits) - 1
        offset, scale = self.g_offset, 1 << self.precision_bits
        sum_g, sum_h, counts = [], [], []
        for i, v in enumerate(sums):
            v = int(v)
            count = v & c_mask
            h_sum = (v >> self._h_shift) & h_mask
            g_sum = v >> self._g_shift
            if (
                v < 0
                or count > self.n_samples_max
                or h_sum > count * self.h_q_max
                or g_sum > count * self.g_q_max
            ):
                raise PackingOverflowError(
                    f"item {i} of the packed sums (0-based) is inconsistent (count {count}): wrong key, corrupted "
                    f"ciphertext, or more than {self.n_samples_max} samples summed"
                )
            sum_g.append((g_sum - count * offset) / scale)
            sum_h.append(h_sum / scale)
            counts.append(count)
        return (
            np.asarray(sum_g, dtype=np.float64),
            np.asarray(sum_h, dtype=np.float64),
            np.asarray(counts, dtype=np.int64),
        )


def _pack_groups(ciphertexts: Sequence[Any], slots: int, slot_bits: int, nsq: int) -> list[mpz]:
    """Horner in the exponent: ((c_{k-1})^(2^w) · c_{k-2})^(2^w) ··· c_0 = Π c_i^(2^(i·w))."""
    nsq_m = mpz(nsq)
    shift = mpz(1) << slot_bits
    out = []
    for start in range(0, len(ciphertexts), slots):
        group = ciphertexts[start : start + slots]
        acc = mpz(group[-1])
        for c in reversed(group[:-1]):
            acc = _f_mod(gmpy2.powmod(acc, shift, nsq_m) * c, nsq_m)
        out.append(acc)
    return out


def _pack_task(buf: bytes, width: int, slots: int, slot_bits: int, nsq: int) -> bytes:
    """Pool task: fixed-width ciphertext bytes in, packed fixed-width ciphertext bytes out."""
    view = memoryview(buf)
    cts = [mpz.from_bytes(view[i : i + width], "big") for i in range(0, len(view), width)]
    return b"".join(c.to_bytes(width, "big") for c in _pack_groups(cts, slots, slot_bits, nsq))


class CiphertextPacker:
    """Many encrypted non-negative values (< 2^slot_bits each) in one ciphertext.

    Slot i of the packed plaintext holds value i, so the packed plaintext is
    ``Σ v_i · 2^(i·slot_bits) < 2^(key_bits-1) ≤ n``: no wrap-around mod n as long as every
    value is below ``2^slot_bits`` (``GradHessPacker`` guarantees that for its bin sums).
    """

    def __init__(self, *, slot_bits: int, key_bits: int):
        if not isinstance(slot_bits, int) or slot_bits < 1:
            raise PackingOverflowError(f"slot_bits must be a positive integer, got {slot_bits!r}")
        self.slot_bits = slot_bits
        self.key_bits = int(key_bits)
        self.slots_per_ciphertext = (self.key_bits - 1) // slot_bits
        if self.slots_per_ciphertext < 1:
            raise PackingOverflowError(
                f"a {slot_bits}-bit slot does not fit a {self.key_bits}-bit key"
            )

    def n_packed(self, n_values: int) -> int:
        """How many packed ciphertexts ``n_values`` values need."""
        return -(-n_values // self.slots_per_ciphertext)

    def pack(
        self,
        ciphertexts: Sequence[int],
        public_key: PaillierPublicKey | PublicParams,
        *,
        engine: PaillierEngine | None = None,
    ) -> list[mpz]:
        """Holder side. About ``key_bits`` modular squarings per packed ciphertext; with an
        ``engine`` the groups are spread over its worker pool. Re-randomise the result before
        it leaves the holder (packing is deterministic)."""
        key = public_key.public_key if isinstance(public_key, PublicParams) else public_key
        if key.n.bit_length() != self.key_bits:
            raise PackingOverflowError(
                f"packer was built for {self.key_bits}-bit keys, got {key.n.bit_length()}-bit"
            )
        nsq = int(key.nsquare)
        cts = [mpz(c) for c in ciphertexts]
        for i, c in enumerate(cts):
            if not 0 < c < nsq:
                raise CryptoError(f"item {i} of the ciphertexts (0-based) is not in [1, n^2)")
        k, w = self.slots_per_ciphertext, self.slot_bits
        n_groups = self.n_packed(len(cts))
        if engine is None or engine.workers <= 1 or n_groups < 2 * engine.workers:
            return _pack_groups(cts, k, w, nsq)
        width = byte_len(nsq)
        per_task = -(-n_groups // (engine.workers * 2)) * k
        tasks = [
            (b"".join(c.to_bytes(width, "big") for c in cts[a : a + per_task]), width, k, w, nsq)
            for a in range(0, len(cts), per_task)
        ]
        out: list[mpz] = []
        for buf in engine.run_tasks(_pack_task, tasks):
            view = memoryview(buf)
            out.extend(
                mpz.from_bytes(view[i : i + width], "big") for i in range(0, len(buf), width)
            )
        return out

    def unpack(self, plaintexts: Iterable[int], n_values: int) -> list[int]:
        """Bank side: decrypted packed plaintexts → the first ``n_values`` slot values."""
        k, w = self.slots_per_ciphertext, self.slot_bits
        mask = (1 << w) - 1
        out: list[int] = []
        for i, v in enumerate(plaintexts):
            v = int(v)
            if v < 0 or v.bit_length() > k * w:
                raise PackingOverflowError(
                    f"item {i} of the packed plaintexts (0-based) has {v.bit_length()} bits, "
                    f"more than {k} slots of {w}"
                )
            for _ in range(k):
                out.append(v & mask)
                v >>= w
        if len(out) < n_values:
            raise PackingOverflowError(
                f"{n_values} values requested but the plaintexts hold only {len(out)} slots"
            )
        return out[:n_values]


__all__ = [
    "CiphertextPacker",
    "EncodingError",
    "FixedPointCodec",
    "GradHessPacker",
    "PackingOverflowError",
]
