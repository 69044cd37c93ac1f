"""The crypto under vertical logistic regression: masked contributions and two HE backends.

Two jobs need cryptography:

* **Linear predictors** go from holders to the bank as fixed-point integers mod 2^64 with
  pairwise masks (``federation.crypto.masks``: X25519 between holders, ChaCha20 keystreams,
  bound to the job, the call's tag and its row set), so the bank's sum is exactly
  Σ_k round(u_k · 2^32) while each holder's part alone is uniformly random.
* **Holder gradients** ``X_kᵀ r`` need the bank's residuals ``r`` (label information) under
  encryption: a backend turns r into ciphertexts at the bank, into a masked encrypted gradient
  at the holder, into masked plaintexts at the bank again, and into the gradient at the holder.

``BACKENDS = {"paillier": ..., "ckks": ...}`` (Opacus-style registry) maps a name to a
``Backend``: the bank half (``BankCrypto``: keys, encrypt residuals, decrypt masked values) and
the holder half (``HolderCrypto``: prepare features, masked encrypted gradient, unmask). This
module is the protocol glue; the primitives are ``federation.crypto`` (Paillier engine,
``ckks``, ``masks``). Details and the security argument: docs/linear.md.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import gmpy2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from gmpy2 import mpz

from federation.crypto import (
    CryptoError,
    FixedPointCodec,
    PaillierEngine,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    ckks,
    encrypted_bin_sums,
    generate_keypair,
    make_public_params,
    public_params_from_bytes,
    public_params_to_bytes,
)
from federation.crypto.masks import MaskError, new_x25519
from federation.crypto.masks import PairwiseMasks as _PairwiseMasks
from models.linear.reference import U_MAX, LinearError, OutOfRange

CONTRIBUTION_SCALE_BITS = 32
"""Fixed point of linear-predictor contributions: round(u · 2^32) mod 2^64 (|u| ≤ 2^24)."""

RESIDUAL_SCALE_BITS = 32
"""Paillier: residuals r ∈ (−1, 1) are encrypted as round(r · 2^32) mod n."""

FEATURE_SCALE_BITS = 20
"""Paillier: a holder multiplies ciphertexts by round(x · 2^20) (|x| < 2^40 accepted)."""

MAX_ABS_FEATURE = float(2**40)

CKKS_MASK_BITS = 36
"""CKKS: a holder hides each gradient sum behind a uniform real mask in ±2^36."""

CKKS_RELEASE_BITS = 12
"""CKKS: the bank releases masked decryptions rounded to multiples of 2^-12 (coarser than the
decryption error, ~2e-5 at the default parameters), never the raw decrypted vector."""


class BackendError(LinearError):
    """Key material, ciphertexts or masked values are malformed or do not fit together."""


@contextmanager
def _as_backend_error(prefix: str = "") -> Iterator[None]:
    """The runtime's crypto errors, as this protocol reports them (same message)."""
    try:
        yield
    except (ckks.CkksError, MaskError) as exc:
        raise BackendError(f"{prefix}{exc}") from None


# --------------------------------------------------------------------------------------------
# linear-predictor contributions: fixed point mod 2^64 and pairwise masks


def encode_contribution(u: np.ndarray, what: str) -> np.ndarray:
    """round(u · 2^32) as two's-complement uint64; refuses |u| > U_MAX (divergence)."""
    u = np.asarray(u, dtype=np.float64)
    if not np.all(np.isfinite(u)) or (u.size and float(np.max(np.abs(u))) > U_MAX):
        raise OutOfRange(f"{what}: the linear predictor left ±{U_MAX:.0f} (training diverged)")
    return np.rint(u * 2.0**CONTRIBUTION_SCALE_BITS).astype(np.int64).view(np.uint64)


def sum_contributions(parts: Sequence[bytes], n: int, what: str) -> np.ndarray:
    """Σ of the holders' (masked) contributions mod 2^64 → the real sum of their predictors."""
    total = np.zeros(n, dtype=np.uint64)
    for k, part in enumerate(parts):
        if len(part) != 8 * n:
            raise BackendError(f"{what}: contribution {k} has {len(part)} bytes for {n} rows")
        total += np.frombuffer(part, dtype="<u8").astype(np.uint64)
    return total.view(np.int64).astype(np.float64) / 2.0**CONTRIBUTION_SCALE_BITS


def rows_digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class PairwiseMasks(_PairwiseMasks):
    """The runtime's pairwise masks (``federation.crypto.masks``); a holder list that cannot
    give masks is a ``BackendError`` here, like every other malformed key material."""

    @classmethod
    def agree(
        cls,
        private: X25519PrivateKey,
        publics: Sequence[bytes],
        *,
        context: bytes,
    ) -> Self:
        with _as_backend_error():
            return super().agree(private, publics, context=context)


# --------------------------------------------------------------------------------------------
# the backend interface


@dataclass(frozen=True)
class CryptoOptions:
    """What the bank's half of a backend may need (each backend reads its own fields)."""

    key_bits: int = 2048
    workers: int | None = None
    chunk_size: int = 4096
    ckks_poly_modulus_degree: int = 8192
    ckks_coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    ckks_scale_bits: int = 40


class BankCrypto(ABC):
    """The bank's half: holds the secret key; never sees a holder's unmasked value."""

    name: ClassVar[str]
    residual_scale_bits: int = 0

    @abstractmethod
    def public_bytes(self) -> bytes:
        """Public key material for the holders (sent once per job as a blob)."""

    @abstractmethod
    def encrypt_residuals(self, r: np.ndarray) -> tuple[Iterator[bytes], int | None]:
        """Wire pieces of [[r]] (streamed while encrypting) and their total size if known."""

    @abstractmethod
    def decrypt_masked(self, payload: bytes, n_values: int) -> bytes:
        """Decrypt a holder's masked gradient; the result is still masked by the holder."""

    def close(self) -> None:  # noqa: B027 - optional hook: only Paillier has a pool
        """Release worker processes."""

    def __enter__(self) -> BankCrypto:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class HolderCrypto(ABC):
    """A holder's half: public key material only; keeps its masks until the bank answers."""

    name: ClassVar[str]
    inline: ClassVar[bool]  # masked gradients fit a message (else they travel as a blob)

    @abstractmethod
    def prepare(self, features: np.ndarray, batch_rows: int) -> None:
        """Take the job's (imputed, standardised) features; ``batch_rows`` sizes the plan."""

    @abstractmethod
    def masked_gradient(self, payload: bytes, rows: np.ndarray) -> tuple[bytes, Any]:
        """[[X_rowsᵀ r + mask]] from the encrypted residuals; returns (wire bytes, masks)."""

    @abstractmethod
    def unmask(self, masks: Any, decrypted: bytes) -> np.ndarray:
        """Σ_i r_i x_ij per feature from the bank's decryption of the masked values."""

    def close(self) -> None:  # noqa: B027 - optional hook: only Paillier has a pool
        """Release worker processes."""


@dataclass(frozen=True)
class Backend:
    name: str
    bank: Callable[[CryptoOptions], BankCrypto]
    holder: Callable[..., HolderCrypto]


# --------------------------------------------------------------------------------------------
# Paillier


class PaillierBank(BankCrypto):
    """DJN-encrypted fixed-point residuals; CRT decryption of the holders' masked sums."""

    name = "paillier"
    residual_scale_bits = RESIDUAL_SCALE_BITS

    def __init__(self, options: CryptoOptions):
        public, private = generate_keypair(options.key_bits)
        self.params = make_public_params(public)
        self.engine = PaillierEngine(self.params, private_key=private, workers=options.workers)
        self.codec = FixedPointCodec(scale_bits=RESIDUAL_SCALE_BITS)
        self.chunk_size = options.chunk_size

    def public_bytes(self) -> bytes:
        return public_params_to_bytes(self.params)

    def encrypt_residuals(self, r: np.ndarray) -> tuple[Iterator[bytes], int | None]:
        plain = self.codec.encode(np.asarray(r, dtype=np.float64), self.params)
        total = len(plain) * self.engine.ciphertext_bytes
        return self.engine.encrypt_stream(plain, chunk_size=self.chunk_size), total

    def decrypt_masked(self, payload: bytes, n_values: int) -> bytes:
        try:
            cts = ciphertexts_from_bytes(payload, self.params)
        except CryptoError as exc:
            raise BackendError(f"masked gradient: {exc}") from None
        if len(cts) != n_values:
            raise BackendError(f"masked gradient has {len(cts)} ciphertexts for {n_values}")
        width = self.engine.plaintext_bytes
        return b"".join(int(m).to_bytes(width, "big") for m in self.engine.decrypt(cts))

    def close(self) -> None:
        self.engine.close()


@dataclass
class _PaillierFeature:
    kind: str  # "table": few distinct values; "digits": bucket method over w-bit digits
    column: int  # first column of the feature in the bins matrix
    lo: int  # smallest fixed-point value: x_q = lo + (what the columns encode)
    exponents: list[int]  # table: value − lo per bin; digits: unused
    windows: int  # digits: number of w-bit windows


class PaillierHolder(HolderCrypto):
    """Encrypted ``Σ_i [[r_i]]·x_ij`` with ciphertext additions and few exponentiations.

    Features become fixed-point integers ``x_q = round(x · 2^20)`` and ``x_q − lo ≥ 0`` is
    written per feature in one of two ways, both turned into per-bucket encrypted sums by one
    call to ``encrypted_bin_sums`` (the engine's process pool spreads it over cores):

    * **table** (binned, WOE-valued, categorical: few distinct values): bucket = the value;
      ``Σ_i r_i x_ij = Σ_b (v_b − lo)·(Σ_{i in b} r_i) + lo·Σ_i r_i``: one exponentiation per
      distinct value with a short exponent;
    * **digits** (continuous): Pippenger's bucket method — the w-bit digits of ``x_q − lo`` are
      the buckets of w-bit windows; per window ``Π_d S_d^d`` by running products (2·2^w
      multiplications), windows joined by Horner (w squarings each).

    ``w`` and the choice per feature minimise the estimated multiplications for the job's batch
    size. The result is exact integer arithmetic: Σ_i round(r_i·2^32)·round(x_ij·2^20).
    """

    name = "paillier"
    inline = True

    def __init__(self, public: bytes, *, residual_scale_bits: int, workers: int | None = 1):
        try:
            self.params = public_params_from_bytes(public)
        except CryptoError as exc:
            raise BackendError(f"Paillier public parameters: {exc}") from None
        if not 8 <= residual_scale_bits <= 60:
            raise BackendError(f"residual_scale_bits must be in [8, 60], got {residual_scale_bits}")
        self.residual_scale_bits = int(residual_scale_bits)
        self.engine = PaillierEngine(self.params, workers=workers)  # textbook re-randomisation
        self.n = mpz(self.params.n)
        self.nsq = mpz(self.params.nsquare)
        self.codec = FixedPointCodec(scale_bits=FEATURE_SCALE_BITS)
        self.features: list[_PaillierFeature] = []
        self.bins = np.zeros((0, 0), dtype=np.int64)
        self.n_bins = 1
        self.window = 8

    # -- plan ------------------------------------------------------------------------------
    def prepare(self, features: np.ndarray, batch_rows: int) -> None:
        X = np.asarray(features, dtype=np.float64)
        if X.size and not (np.all(np.isfinite(X)) and float(np.max(np.abs(X))) < MAX_ABS_FEATURE):
            raise BackendError(f"feature values must be finite and below {MAX_ABS_FEATURE:.0e}")
        xq = np.rint(X * 2.0**FEATURE_SCALE_BITS).astype(np.int64)
        m = max(1, int(batch_rows))
        stats = []
        for j in range(xq.shape[1]):
            uniq, inverse = np.unique(xq[:, j], return_inverse=True)
            lo = int(uniq[0])
            bits = max(1, (int(uniq[-1]) - lo).bit_length())
            stats.append((uniq, inverse.reshape(-1), lo, bits))

        def table_cost(uniq: np.ndarray, bits: int) -> float:
            return m + 1.5 * bits * uniq.size

        def digit_cost(bits: int, w: int) -> float:
            return math.ceil(bits / w) * (m + (1 << (w + 1)))

        best_w, best_total = 8, math.inf
        for w in range(2, 13):
            total = sum(min(table_cost(u, b), digit_cost(b, w)) for u, _, _, b in stats)
            if total < best_total:
                best_w, best_total = w, total
        w = best_w
        columns: list[np.ndarray] = []
        self.features = []
        n_bins = 1
        for j, (uniq, inverse, lo, bits) in enumerate(stats):
            first = len(columns)
            if table_cost(uniq, bits) <= digit_cost(bits, w):
                columns.append(inverse)
                exps = [int(v) - lo for v in uniq.tolist()]
                self.features.append(_PaillierFeature("table", first, lo, exps, 1))
                n_bins = max(n_bins, uniq.size)
            else:
                windows = math.ceil(bits / w)
                shifted = xq[:, j] - lo
                for k in range(windows):
                    columns.append((shifted >> (w * k)) & ((1 << w) - 1))
                self.features.append(_PaillierFeature("digits", first, lo, [], windows))
                n_bins = max(n_bins, 1 << w)
        columns.append(np.zeros(xq.shape[0], dtype=np.int64))  # Σ_i [[r_i]]
        self.bins = np.column_stack(columns).astype(np.int64)
        self.n_bins = n_bins
        self.window = w

    # -- gradient --------------------------------------------------------------------------
    def _combine(self, feature: _PaillierFeature, sums: list[list[mpz]], total: mpz) -> mpz:
        nsq = self.nsq
        f_mod, powmod = gmpy2.f_mod, gmpy2.powmod
        acc = mpz(1)
        if feature.kind == "table":
            bucket = sums[feature.column]
            for b, e in enumerate(feature.exponents):
                if e and bucket[b] != 1:
                    acc = f_mod(acc * powmod(bucket[b], e, nsq), nsq)
        else:
            w = self.window
            shift = mpz(1) << w
            for k in reversed(range(feature.windows)):
                bucket = sums[feature.column + k]
                run, part = mpz(1), mpz(1)
                for d in range((1 << w) - 1, 0, -1):
                    if bucket[d] != 1:
                        run = f_mod(run * bucket[d], nsq)
                    if run != 1:
                        part = f_mod(part * run, nsq)
                acc = f_mod(powmod(acc, shift, nsq) * part, nsq) if acc != 1 else part
        if feature.lo > 0:
            acc = f_mod(acc * powmod(total, feature.lo, nsq), nsq)
        elif feature.lo < 0:
            acc = f_mod(acc * powmod(gmpy2.invert(total, nsq), -feature.lo, nsq), nsq)
        return acc

    def masked_gradient(self, payload: bytes, rows: np.ndarray) -> tuple[bytes, Any]:
        try:
            cts = ciphertexts_from_bytes(payload, self.params)
        except CryptoError as exc:
            raise BackendError(f"encrypted residuals: {exc}") from None
        if len(cts) != rows.size:
            raise BackendError(f"{len(cts)} encrypted residuals for a batch of {rows.size} rows")
        sums = encrypted_bin_sums(
            cts,
            self.bins[rows],
            np.arange(rows.size),
            self.n_bins,
            self.params,
            engine=self.engine,
        )
        total = sums[-1][0]
        grads = [self._combine(f, sums, total) for f in self.features]
        masks = [mpz(secrets.randbelow(int(self.n))) for _ in grads]
        n, nsq = self.n, self.nsq
        # + mask: multiply by the trivial encryption 1 + M·n, then re-randomise (textbook).
        masked = [gmpy2.f_mod(c * (1 + m * n), nsq) for c, m in zip(grads, masks, strict=True)]
        fresh = self.engine.rerandomise(masked)
        return ciphertexts_to_bytes(fresh, self.params), masks

    def unmask(self, masks: Any, decrypted: bytes) -> np.ndarray:
        width = (int(self.n).bit_length() + 7) // 8
        if len(decrypted) != width * len(masks):
            raise BackendError(
                f"decrypted gradient has {len(decrypted)} bytes, expected {width * len(masks)}"
            )
        values = []
        for i, m in enumerate(masks):
            v = mpz(int.from_bytes(decrypted[i * width : (i + 1) * width], "big"))
            if v >= self.n:
                raise BackendError(f"decrypted value {i} is not below n")
            values.append(int(gmpy2.f_mod(v - m, self.n)))
        scale = self.residual_scale_bits + FEATURE_SCALE_BITS
        try:
            return self.codec.decode(values, self.params, scale_bits=scale)
        except CryptoError as exc:
            raise BackendError(f"decrypted gradient: {exc}") from None

    def close(self) -> None:
        self.engine.close()


# --------------------------------------------------------------------------------------------
# CKKS (TenSEAL; primitives in federation.crypto.ckks)


class CkksBank(BankCrypto):
    """Residuals as CKKS vectors in the packed layout (``ckks.encrypt_blocks``: chunks of
    slot-count rows; a shorter batch padded to a power-of-two block repeated across the
    slots); the public context (galois keys for the holders' rotations, no secret key, no
    relinearisation keys) goes to the holders once per job. A holder answers ONE ciphertext
    per batch whose first slots are its masked gradient; only those slots are released."""

    name = "ckks"

    def __init__(self, options: CryptoOptions):
        with _as_backend_error():
            self.ctx = ckks.make_context(
                options.ckks_poly_modulus_degree,
                options.ckks_coeff_mod_bit_sizes,
                options.ckks_scale_bits,
            )
        self.slots = int(options.ckks_poly_modulus_degree) // 2

    def public_bytes(self) -> bytes:
        return ckks.public_bytes(self.ctx)

    def encrypt_residuals(self, r: np.ndarray) -> tuple[Iterator[bytes], int | None]:
        with _as_backend_error():
            items = ckks.encrypt_blocks(self.ctx, np.asarray(r, dtype=np.float64), self.slots)
        payload = ckks.pack_vectors(items)
        return iter([payload]), len(payload)

    def decrypt_masked(self, payload: bytes, n_values: int) -> bytes:
        with _as_backend_error():
            items = ckks.unpack_vectors(payload, "masked gradient")
        if len(items) != 1:
            raise BackendError(f"masked gradient has {len(items)} ciphertexts, expected 1")
        with _as_backend_error("masked gradient: "):
            values = ckks.decrypt_slots(self.ctx, items[0], n_values)
        if not np.all(np.isfinite(values)):
            raise BackendError("masked gradient has non-finite values")
        grid = 2.0**CKKS_RELEASE_BITS
        return (np.round(values * grid) / grid).astype("<f8").tobytes()


class CkksHolder(HolderCrypto):
    """All features at once: ``ckks.packed_masked_products`` turns the batch's residual
    vectors and the holder's (batch × d) features into ONE ciphertext of Σ_i r_i x_ij + m_j
    in slots 0..d-1 (independent uniform masks in ±2^36 on every slot, added as a fresh
    encryption, which also re-randomises it). The bank decrypts it and releases d values."""

    name = "ckks"
    inline = False

    def __init__(self, public: bytes, *, residual_scale_bits: int = 0, workers: int | None = 1):
        with _as_backend_error():
            self.context = ckks.load_public_context(public)
        capacity = self.context.capacity_bits
        self.slots = self.context.slots
        self.mask_bits = min(CKKS_MASK_BITS, int(capacity) - 16)
        if self.mask_bits < 16:
            raise BackendError(
                f"CKKS parameters leave {capacity:.0f} bits after a product: too few to mask"
            )
        self.X = np.zeros((0, 0))
        self._rows = b""
        self._plaintexts: dict[tuple[int, int], Any] = {}

    def prepare(self, features: np.ndarray, batch_rows: int) -> None:
        self.X = np.asarray(features, dtype=np.float64)
        self._rows, self._plaintexts = b"", {}

    def masked_gradient(self, payload: bytes, rows: np.ndarray) -> tuple[bytes, Any]:
        with _as_backend_error():
            items = ckks.unpack_vectors(payload, "encrypted residuals")
        key = hashlib.sha256(np.asarray(rows, dtype=np.int64).tobytes()).digest()
        if key != self._rows:  # full batch: the same rows every epoch, encoded once
            self._rows, self._plaintexts = key, {}
        with _as_backend_error():
            out, masks = ckks.packed_masked_products(
                self.context,
                items,
                self.X[rows],
                mask_bits=self.mask_bits,
                cache=self._plaintexts,
            )
        return ckks.pack_vectors([out]), masks

    def unmask(self, masks: Any, decrypted: bytes) -> np.ndarray:
        if len(decrypted) != 8 * len(masks):
            raise BackendError(
                f"decrypted gradient has {len(decrypted)} bytes for {len(masks)} values"
            )
        values = np.frombuffer(decrypted, dtype="<f8").astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise BackendError("decrypted gradient has non-finite values")
        return np.asarray(values - masks, dtype=np.float64)


BACKENDS: dict[str, Backend] = {
    "paillier": Backend("paillier", PaillierBank, PaillierHolder),
    "ckks": Backend("ckks", CkksBank, CkksHolder),
}
"""Registry: the backend's name (``LinearStart.backend``, the estimator's ``backend=``)."""


def crypto_parameters(backend: str, options: CryptoOptions) -> dict[str, Any]:
    """The public description of a job's keys, for results, tracking and lineage: Paillier's
    modulus size, or CKKS's ring dimension, modulus chain, scale and HE-standard security
    estimate (a CKKS key has no "key size")."""
    if get_backend(backend).name == "ckks":
        return ckks.describe_parameters(
            options.ckks_poly_modulus_degree,
            options.ckks_coeff_mod_bit_sizes,
            options.ckks_scale_bits,
        )
    return {"scheme": "paillier-djn", "key_bits": int(options.key_bits)}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}: choose one of {sorted(BACKENDS)}") from None


__all__ = [
    "BACKENDS",
    "CKKS_MASK_BITS",
    "CKKS_RELEASE_BITS",
    "CONTRIBUTION_SCALE_BITS",
    "FEATURE_SCALE_BITS",
    "RESIDUAL_SCALE_BITS",
    "Backend",
    "BackendError",
    "BankCrypto",
    "CkksBank",
    "CkksHolder",
    "CryptoOptions",
    "HolderCrypto",
    "PaillierBank",
    "PaillierHolder",
    "PairwiseMasks",
    "crypto_parameters",
    "encode_contribution",
    "get_backend",
    "new_x25519",
    "rows_digest",
    "sum_contributions",
]
