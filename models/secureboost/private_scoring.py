"""Private SecureBoost scoring: the bank decrypts an enterprise's total, never which leaves a
holder's splits ruled out (docs/scoring.md, "Serving modes").

Why CKKS and this layout (EINI-style, Fed-EINI / FATE 1.7): the bank holds the key and the leaf
weights. Per enterprise it encrypts ``w_l · R_bank(l)`` for every leaf l of every tree (block 0)
and the leaf's path credit per holder (blocks 1..H, for reason codes), blocks side by side and
unpadded (nothing rotates), as many enterprises per ciphertext as fit its slots (a batch packs
``slots // ((1 + H) · leaves)`` enterprises per ciphertext). Each holder in turn multiplies the
vector by its 0/1 reach mask (a plaintext, tiled over the blocks: one multiplication, one
level); the product over the parties leaves exactly one non-zero leaf per tree. Nothing needs
rotations: the last holder adds, in every block, random shares that sum to zero (so each slot
the bank decrypts is uniformly masked, yet a block's slots still add up to the block's total)
plus a small flooding noise, and every holder re-randomises with a fresh public-key encryption
of zero. The bank decrypts and sums each block: the enterprise's margin minus the base score,
and each holder's summed path credit.

Between holders the bank relays the vector sealed (ChaCha20-Poly1305) under a key the two
holders agree by X25519 (public keys relayed by the bank at setup, as for the linear models'
pairwise masks): the bank, which holds the CKKS secret key, never sees a partial product.

Who learns what (one score; H holders):

- the bank: per enterprise and block, slot values each masked by a uniform share in
  ±``SHARE_BOUND`` (statistical distance ~2^-17 per slot from uniform), whose sum is the block
  total ± ``FLOOD``; so: the margin and each holder's path-credit total, nothing per tree or per
  leaf, no holder's mask. Not prevented: a bank that crafts leaf weights encoding leaf ids (e.g.
  weight 2^-k per leaf) can read the path from the total - bounded only by the holders' gate
  (which enterprises are answered; no per-enterprise score count limit today) and by
  precision (~26 bits per total), detected by the holders' audit; see docs/scoring.md.
- a holder: fresh CKKS ciphertexts under the bank's key (semantically secure, 128-bit
  parameters) and the bank's public context; never a weight, a credit, a score or another
  holder's mask. It learns that the bank scores these enterprises with this version (it
  authorises each one at its gate anyway).
- the re-randomisers (``ZeroReserve``): encryptions of zero made ahead of time by a niced
  worker process, each used once; they change the cost, not the view.

CKKS parameters by chain length (HomomorphicEncryption.org standard, 128-bit, ternary secret):
one level per holder; scale 2^50, so scores equal the ``fast`` path's to ~1e-7.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from federation.crypto.ckks import (
    CkksError,
    pack_vectors,
    security_bits,
    tenseal,
    unpack_vectors,
)
from models.secureboost.tree import Tree, left_child, parent_of, right_child

__all__ = [
    "FLOOD",
    "MAX_BLOCKS",
    "SHARE_BOUND",
    "BankKeys",
    "HolderChainKey",
    "Layout",
    "PrivateScoringError",
    "ZeroReserve",
    "ckks_parameters",
    "holder_step",
    "path_credits",
]

SCALE_BITS = 50
SHARE_BOUND = 2.0**20
"""Zero-sum shares are uniform in ±SHARE_BOUND: a slot the bank decrypts is a leaf value
(|v| < 8) plus this, within statistical distance ~2^-17 of uniform per slot. Larger shares cost
precision (the error of a block sum grows with them: 2^20 keeps it below 1e-7)."""
FLOOD = 2.0**-26
"""Flooding noise added to each block's total (uniform ±FLOOD, ~1.5e-8): drowns the low bits of
the CKKS noise, which depend on the holders' masks, while scores stay within 1e-6."""
MAX_BLOCKS = 8
MAX_VALUE = 8.0
_SEAL_DOMAIN = b"xinyidai/secureboost/private-scoring/v1|"


class PrivateScoringError(CkksError):
    """A private-scoring payload, layout or key does not fit (named in the message)."""


def ckks_parameters(n_holders: int) -> tuple[int, list[int], int]:
    """(poly_modulus_degree, coeff_mod_bit_sizes, scale_bits) for a chain of ``n_holders``:
    one 50-bit level per holder above [60, 40] (room for the shares) and a 60-bit special
    prime; N = 8192 while that stays within the standard's 218 bits for 128-bit security
    (1 holder), else 16384 (up to 5 holders)."""
    if n_holders < 1:
        raise PrivateScoringError("private scoring needs at least one holder")
    coeffs = [60, 40] + [SCALE_BITS] * n_holders + [60]
    for n in (8192, 16384, 32768):
        if security_bits(n, coeffs) >= 128:
            return n, coeffs, SCALE_BITS
    raise PrivateScoringError(f"{n_holders} holders need more levels than CKKS here allows")


@dataclass(frozen=True)
class Layout:
    """Slots of the scoring vectors: per enterprise ``n_blocks`` blocks of ``block`` slots
    (block 0: leaf weights; block 1+j: holder j's path credits); ``per_vector`` enterprises
    side by side in one ciphertext of ``slots`` slots. Blocks are not padded to a power of
    two: nothing rotates, so a lane is exactly ``n_blocks · n_leaves`` slots (at 570 leaves
    and 2 holders: 4 enterprises per N = 16384 ciphertext instead of 2)."""

    n_leaves: int
    n_blocks: int
    slots: int

    @property
    def block(self) -> int:
        return self.n_leaves

    @property
    def lane(self) -> int:
        return self.block * self.n_blocks

    @property
    def per_vector(self) -> int:
        return max(1, self.slots // self.lane)

    def n_vectors(self, n: int) -> int:
        return -(-n // self.per_vector)

    def check(self) -> None:
        if not 1 <= self.n_blocks <= MAX_BLOCKS:
            raise PrivateScoringError(f"{self.n_blocks} blocks per enterprise (1..{MAX_BLOCKS})")
        if self.n_leaves < 1 or self.lane > self.slots:
            raise PrivateScoringError(
                f"{self.n_leaves} leaves x {self.n_blocks} blocks do not fit {self.slots} slots"
            )

    def pack(self, values: np.ndarray) -> list[np.ndarray]:
        """(n, n_blocks, n_leaves) -> one flat slot array per ciphertext (zero padded)."""
        n = values.shape[0]
        padded = np.zeros((self.n_vectors(n) * self.per_vector, self.n_blocks, self.block))
        padded[:n, :, : self.n_leaves] = values
        flat = padded.reshape(self.n_vectors(n), self.per_vector * self.lane)
        return [row for row in flat]

    def unpack_totals(self, vectors: Sequence[np.ndarray], n: int) -> np.ndarray:
        """Decrypted slots -> (n, n_blocks) block sums."""
        width = self.per_vector * self.lane
        flat = np.stack([np.asarray(v[:width], dtype=np.float64) for v in vectors])
        sums = flat.reshape(-1, self.n_blocks, self.block).sum(axis=2)
        return np.asarray(sums[:n], dtype=np.float64)


# -- re-randomisers made ahead of time ---------------------------------------------------------
_WORKER_CONTEXTS: dict[str, Any] = {}


def encrypt_zeros(public: bytes, width: int, count: int) -> list[bytes]:
    """Worker-process task: ``count`` fresh public-key encryptions of a zero vector of
    ``width`` slots under the public context ``public`` (loaded once per worker and digest)."""
    ts = tenseal()
    digest = hashlib.sha256(public).hexdigest()
    ctx = _WORKER_CONTEXTS.get(digest)
    if ctx is None:
        _WORKER_CONTEXTS.clear()  # one served version at a time per worker is plenty
        ctx = _WORKER_CONTEXTS[digest] = ts.context_from(public)
    return [ts.ckks_vector(ctx, [0.0] * width).serialize() for _ in range(count)]


class ZeroReserve:
    """Up to ``capacity`` fresh encryptions of zero per vector width (the widths callers ask
    for: one enterprise's lane, a batch's full vector) under one public context, made by a
    niced worker process (``federation.crypto.pool.shared_pool(nice=19)``) while the node has
    CPU to spare, so a score's re-randomisation (holders) or encryption (bank: zero +
    plaintext) does not wait for a public-key encryption (~10 ms at N = 16384).

    Why a process: TenSEAL holds the GIL, so a filler thread would take turns with the node's
    request threads. Each encryption is handed out once (``take``) and never reused; an empty
    reserve returns None and the caller encrypts as before. Zeros carry no secret (anyone with
    the public key can make them); the only requirement is freshness, hence never twice."""

    MAX_WIDTHS = 2
    """Widths kept at once (a new one drops the oldest): what a peer's requests can make this
    node hold stays bounded by ``MAX_WIDTHS × capacity`` ciphertexts."""

    def __init__(self, public: bytes, *, capacity: int = 8, batch: int = 2, nice: int = 19):
        self._public = public
        self._capacity = max(0, capacity)
        self._batch = max(1, batch)
        self._nice = nice
        self._ready: dict[int, deque[bytes]] = {}
        self._lock = threading.Lock()
        self._pending = False
        self._closed = False
        self.taken = 0
        self.missed = 0

    def __len__(self) -> int:
        return sum(len(q) for q in self._ready.values())

    def __repr__(self) -> str:  # sizes only
        return f"ZeroReserve(ready={len(self)}, widths={self.widths})"

    @property
    def widths(self) -> list[int]:
        """The vector widths kept ready, oldest first."""
        return list(self._ready)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._ready.clear()

    def _queue(self, width: int) -> deque[bytes]:
        """The queue of ``width`` (lock held), made if new, the oldest width dropped if over."""
        queue = self._ready.get(width)
        if queue is None:
            queue = self._ready[width] = deque()
            while len(self._ready) > self.MAX_WIDTHS:
                del self._ready[next(iter(self._ready))]
        return queue

    def prepare(self, width: int) -> None:
        """Start keeping zeros of ``width`` slots ready (also done by the first ``take``)."""
        with self._lock:
            self._queue(int(width))
        self._refill()

    def _refill(self) -> None:
        with self._lock:
            if self._closed or self._pending or not self._capacity:
                return
            width, queue = min(self._ready.items(), key=lambda kv: len(kv[1]), default=(0, None))
            if queue is None or len(queue) >= self._capacity:
                return
            self._pending = True
        try:
            from federation.crypto.pool import default_start_method, shared_pool

            pool = shared_pool(1, default_start_method(), nice=self._nice)
            future = pool.submit(encrypt_zeros, self._public, width, self._batch)
        except Exception:  # the node is stopping (pools shut down): encrypt inline from now on
            with self._lock:
                self._pending = False
                self._closed = True
            return
        future.add_done_callback(lambda f: self._filled(width, f))

    def _filled(self, width: int, future: Any) -> None:
        try:
            items = list(future.result())
        except BaseException:  # a stopped or broken pool: stop refilling, callers encrypt
            with self._lock:
                self._pending = False
                self._closed = True
            return
        with self._lock:
            self._pending = False
            queue = self._ready.get(width)
            if queue is not None and not self._closed:
                queue.extend(items[: max(0, self._capacity - len(queue))])
        # not from this callback (the pool's own manager thread): submit from a short thread
        threading.Thread(target=self._refill, name="zero-reserve", daemon=True).start()

    def take(self, ctx: Any, width: int) -> Any | None:
        """A fresh encryption of zero of ``width`` slots (a CKKSVector under ``ctx``), or None
        when none is ready (then one is made for next time)."""
        with self._lock:
            queue = self._queue(int(width))
            item = queue.popleft() if queue else None
            if item is None:
                self.missed += 1
            else:
                self.taken += 1
        self._refill()
        if item is None:
            return None
        return tenseal().ckks_vector_from(ctx, item)


# -- the bank: the key holder -------------------------------------------------------------------
class BankKeys:
    """The bank's CKKS key for one served version (secret key kept here; the public context,
    public key only - no galois or relinearisation keys, nothing needs them - goes to holders)."""

    def __init__(self, n_holders: int):
        ts = tenseal()
        n, coeffs, scale_bits = ckks_parameters(n_holders)
        self.ctx = ts.context(
            ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=coeffs
        )
        self.ctx.global_scale = 2.0**scale_bits
        self.slots = n // 2
        self.vector_bytes = 2 * n * (len(coeffs) - 1) * 8
        """Upper bound of one fresh ciphertext's serialised size (2 polynomials, data primes)."""
        self.parameters = {"poly_modulus_degree": n, "coeff_mod_bit_sizes": coeffs}
        self.public = bytes(
            self.ctx.serialize(
                save_public_key=True,
                save_secret_key=False,
                save_galois_keys=False,
                save_relin_keys=False,
            )
        )
        self.digest = hashlib.sha256(self.public).hexdigest()
        self.zeros: ZeroReserve | None = None

    def keep_zeros_ready(self, capacity: int = 8) -> None:
        """Encrypt through a ``ZeroReserve`` from now on (the serving bank; tests encrypt inline)."""
        if self.zeros is None:
            self.zeros = ZeroReserve(self.public, capacity=capacity)

    def encrypt(self, layout: Layout, values: np.ndarray) -> bytes:
        """(n, n_blocks, n_leaves) -> the packed ciphertexts the first holder reads: each a
        ready encryption of zero plus the plaintext (the same distribution as a fresh
        encryption), or a fresh encryption when the reserve is empty."""
        if values.size and float(np.abs(values).max()) >= MAX_VALUE:
            raise PrivateScoringError(
                f"leaf values must stay below {MAX_VALUE} in magnitude for private scoring"
            )
        ts = tenseal()
        items = []
        for v in layout.pack(values):
            zero = self.zeros.take(self.ctx, v.size) if self.zeros is not None else None
            if zero is None:
                items.append(ts.ckks_vector(self.ctx, v.tolist()).serialize())
            else:
                items.append((zero + v.tolist()).serialize())
        return pack_vectors(items)

    def totals(self, layout: Layout, payload: bytes, n: int) -> np.ndarray:
        """The last holder's answer -> (n, n_blocks): per enterprise the block sums."""
        ts = tenseal()
        items = unpack_vectors(payload, "private scores")
        if len(items) != layout.n_vectors(n):
            raise PrivateScoringError(
                f"{len(items)} ciphertexts answered for {n} enterprises "
                f"({layout.n_vectors(n)} expected)"
            )
        try:
            vectors = [np.asarray(ts.ckks_vector_from(self.ctx, it).decrypt()) for it in items]
        except Exception as exc:  # SEAL refuses a malformed ciphertext
            raise PrivateScoringError(f"private scores: {exc}") from None
        return layout.unpack_totals(vectors, n)


# -- sealing between holders -----------------------------------------------------------------
class HolderChainKey:
    """A holder's X25519 key for one (bank, served version): seals its partial product for the
    next holder and opens the previous one's (the bank relays the bytes, unable to open them)."""

    def __init__(self) -> None:
        self._private = X25519PrivateKey.generate()
        self.public = self._private.public_key().public_bytes_raw()

    def _aead(self, peer_public: bytes, info: bytes) -> ChaCha20Poly1305:
        if len(peer_public) != 32 or peer_public == self.public:
            raise PrivateScoringError("the other holder's X25519 public key is not usable")
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(peer_public))
        except ValueError:
            raise PrivateScoringError("the other holder's X25519 public key is invalid") from None
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_SEAL_DOMAIN + info
        ).derive(shared)
        return ChaCha20Poly1305(key)

    def seal(self, peer_public: bytes, info: bytes, aad: bytes, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead(peer_public, info).encrypt(nonce, data, aad)

    def open(self, peer_public: bytes, info: bytes, aad: bytes, data: bytes) -> bytes:
        if len(data) < 28:
            raise PrivateScoringError("the sealed partial product is truncated")
        try:
            return self._aead(peer_public, info).decrypt(data[:12], data[12:], aad)
        except InvalidTag:
            raise PrivateScoringError(
                "the sealed partial product does not open (not from the previous holder, "
                "or for other enterprises)"
            ) from None


def load_public_context(public: bytes) -> Any:
    """A bank's public context: refused if it carries a secret key."""
    ts = tenseal()
    try:
        ctx = ts.context_from(public)
    except Exception as exc:
        raise PrivateScoringError(f"CKKS context: {exc}") from None
    if ctx.has_secret_key() or not ctx.is_public():
        raise PrivateScoringError("the CKKS context carries a secret key: refused")
    return ctx


def _uniform(shape: tuple[int, ...], bound: float) -> np.ndarray:
    """Uniform in ±bound from the OS's CSPRNG (53-bit resolution)."""
    words = np.frombuffer(secrets.token_bytes(8 * int(np.prod(shape))), dtype=np.uint64)
    unit = (words >> np.uint64(11)).astype(np.float64) / 2.0**53
    return ((unit * 2.0 - 1.0) * bound).reshape(shape)


def zero_sum_shares(layout: Layout, n_vectors: int) -> np.ndarray:
    """Per ciphertext, per enterprise lane and block: uniform values summing to 0 (exactly up to
    float rounding, ~1e-12), plus ±FLOOD on each block's total."""
    shape = (n_vectors * layout.per_vector, layout.n_blocks, layout.block)
    shares = _uniform(shape, SHARE_BOUND)
    shares -= shares.mean(axis=2, keepdims=True)
    shares[:, :, 0] += _uniform(shape[:2], FLOOD)
    return shares.reshape(n_vectors, layout.per_vector * layout.lane)


def holder_step(
    ctx: Any,
    layout: Layout,
    payload: bytes,
    reach: np.ndarray,
    *,
    last: bool,
    zeros: ZeroReserve | None = None,
) -> bytes:
    """One holder's turn: every vector times this holder's reach (bool (n, n_leaves), zero rows
    for enterprises it does not answer for), then - the last holder - zero-sum shares and
    flooding; always a fresh public-key encryption of zero added (re-randomised: from
    ``zeros`` when one is ready, else made here). Returns the packed ciphertexts (the caller
    seals them for the next holder, or answers the bank)."""
    layout.check()
    ts = tenseal()
    items = unpack_vectors(payload, "scoring vectors")
    n = reach.shape[0]
    if len(items) != layout.n_vectors(n) or reach.shape[1] != layout.n_leaves:
        raise PrivateScoringError(
            f"{len(items)} scoring vectors for {n} enterprises and {layout.n_leaves} leaves "
            f"({layout.n_vectors(n)} expected)"
        )
    masks = layout.pack(np.repeat(reach[:, None, :].astype(np.float64), layout.n_blocks, axis=1))
    extra = zero_sum_shares(layout, len(items)) if last else None
    out = []
    width = layout.per_vector * layout.lane
    for k, (item, mask) in enumerate(zip(items, masks, strict=True)):
        try:
            vec = ts.ckks_vector_from(ctx, item)
        except Exception as exc:
            raise PrivateScoringError(f"scoring vector {k}: {exc}") from None
        if vec.size() != width:
            raise PrivateScoringError(f"scoring vector {k} has {vec.size()} slots, not {width}")
        try:
            vec = vec * mask.tolist()
            zero = zeros.take(ctx, width) if zeros is not None else None
            if zero is None:
                fresh = np.zeros(width) if extra is None else extra[k]
                vec = vec + ts.ckks_vector(ctx, fresh.tolist())
            else:
                if extra is not None:
                    vec = vec + extra[k].tolist()
                vec = vec + zero
        except Exception as exc:  # SEAL: modulus chain exhausted, scale mismatch
            raise PrivateScoringError(f"scoring vector {k}: {exc}") from None
        out.append(vec.serialize())
    return pack_vectors(out)


# -- reason credits ------------------------------------------------------------------------
def path_credits(
    trees: Sequence[Tree], parties: Sequence[str]
) -> tuple[dict[str, np.ndarray], float]:
    """Per party, per leaf (global order): the sum over the splits it owns on the leaf's root
    path of (mean weight under the child taken - mean weight under the split), means weighted
    by training samples (a path attribution, as treeinterpreter's). Linear in the leaf reached,
    so the holders' chain can sum it without revealing the path. Also Σ_t (mean weight of tree
    t): weight reached = that + Σ_parties credit, exactly."""
    credits: dict[str, list[float]] = {p: [] for p in parties}
    root_total = 0.0
    for tree in trees:
        leaves = tree.leaves()
        mean: dict[int, tuple[float, float]] = {}

        def subtree(
            node: int, tree: Tree = tree, mean: dict[int, tuple[float, float]] = mean
        ) -> tuple[float, float]:
            found = tree.nodes[node]
            if found.is_leaf:
                n = float(max(found.n_samples, 1))
                mean[node] = (n * found.weight, n)
            else:
                a, b = subtree(left_child(node)), subtree(right_child(node))
                mean[node] = (a[0] + b[0], a[1] + b[1])
            return mean[node]

        subtree(0)
        root_total += mean[0][0] / mean[0][1]
        for leaf in leaves:
            per = dict.fromkeys(parties, 0.0)
            child = leaf
            while child > 0:
                par = parent_of(child)
                owner = tree.nodes[par].owner
                if owner in per:
                    per[owner] += mean[child][0] / mean[child][1] - mean[par][0] / mean[par][1]
                child = par
            for p in parties:
                credits[p].append(per[p])
    return {p: np.asarray(v, dtype=np.float64) for p, v in credits.items()}, root_total


def chain_info(model_id: str, sender: str, receiver: str) -> bytes:
    """HKDF info binding a sealed product to the version and the ordered holder pair."""
    return f"{model_id}|{sender}->{receiver}".encode()


def codes_aad(codes: Sequence[str], layout: Layout, request_id: str) -> bytes:
    """AEAD associated data: the enterprises, layout and request the product belongs to."""
    text = "\n".join([request_id, f"{layout.n_leaves}:{layout.n_blocks}", *codes])
    return hashlib.sha256(text.encode()).digest()


def credits_matrix(credits: Mapping[str, np.ndarray], holders: Sequence[str]) -> np.ndarray:
    """(H, n_leaves) in chain order."""
    return np.stack([credits[h] for h in holders]) if holders else np.zeros((0, 0))
