"""Pairwise additive masks: values each holder sends look uniformly random, yet their sum is exact.

Every pair of holders agrees on a key by X25519 (public keys relayed by the aggregator, which
therefore cannot compute it); each mask comes from ChaCha20 keyed by HKDF of that key and the
call's tag, and the earlier holder of the pair adds what the later one subtracts. Arithmetic
mod 2^64 makes the cancellation exact, so the aggregator's sum over all holders is the sum of
the unmasked values while each holder's part alone is uniformly random.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any, Self

import numpy as np
from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from federation.crypto.errors import CryptoError

# The domains name the protocol that first used these masks (vertical logistic regression);
# they are part of every key ever derived, so they stay as they are.
_PAIR_DOMAIN = b"xinyidai/linear/pair/v1"
_MASK_DOMAIN = b"xinyidai/linear/mask/v1|"

__all__ = ["MaskError", "PairwiseMasks", "new_x25519"]


class MaskError(CryptoError):
    """The holder list or a partner's public key cannot give pairwise masks."""


def _hkdf(key: bytes, info: bytes, salt: bytes | None = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def _keystream(key: bytes, n_bytes: int) -> bytes:
    """ChaCha20 keystream (nonce 0: every key is used once, derived per tag and row set)."""
    encryptor = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()
    return encryptor.update(b"\x00" * n_bytes)


class PairwiseMasks:
    """One holder's pairwise masks: Σ over its partners j of ±ChaCha20(HKDF(key_kj, tag)).

    ``pairs`` holds (sign, key) per partner: +1 if this holder comes first in the aggregator's
    order, −1 otherwise, so the masks of a pair cancel in the sum over all holders. Keys are
    secret (shared by two holders only); they never go to the aggregator.
    """

    def __init__(self, pairs: Sequence[tuple[int, bytes]]):
        self.pairs = [(int(s), bytes(k)) for s, k in pairs]

    @classmethod
    def agree(
        cls,
        private: X25519PrivateKey,
        publics: Sequence[bytes],
        *,
        context: bytes,
    ) -> Self:
        """X25519 with every other holder's public key in ``publics`` (all holders, in the
        aggregator's order, this one included exactly once); keys bound to ``context``."""
        own = private.public_key().public_bytes_raw()
        positions = [i for i, pk in enumerate(publics) if pk == own]
        if len(positions) != 1:
            raise MaskError("the holder list must contain this holder's public key once")
        if len(set(publics)) != len(publics):
            raise MaskError("the holder list repeats a public key")
        me = positions[0]
        pairs = []
        for j, pk in enumerate(publics):
            if j == me:
                continue
            if len(pk) != 32:
                raise MaskError(f"public key {j} has {len(pk)} bytes, expected 32")
            try:
                shared = private.exchange(X25519PublicKey.from_public_bytes(pk))
            except (ValueError, InvalidKey) as exc:
                raise MaskError(f"public key {j} is not usable for X25519: {exc}") from None
            salt = hashlib.sha256(context + b"|" + b"".join(sorted((own, pk)))).digest()
            pairs.append((1 if me < j else -1, _hkdf(shared, _PAIR_DOMAIN, salt)))
        return cls(pairs)

    def derive(self, purpose: bytes) -> Self:
        """Independent keys for another purpose (training vs scoring) from the same pairs."""
        return type(self)([(s, _hkdf(k, _PAIR_DOMAIN + b"|" + purpose)) for s, k in self.pairs])

    def mask(self, tag: bytes, count: int) -> np.ndarray:
        """The uint64 mask vector for one call; ``tag`` must include the call's row set."""
        total = np.zeros(count, dtype=np.uint64)
        for sign, key in self.pairs:
            stream = _keystream(_hkdf(key, _MASK_DOMAIN + tag), 8 * count)
            values = np.frombuffer(stream, dtype="<u8").astype(np.uint64)
            if sign > 0:
                total += values
            else:
                total -= values
        return total

    def to_list(self) -> list[list[Any]]:
        return [[s, k.hex()] for s, k in self.pairs]

    @classmethod
    def from_list(cls, data: Iterable[Sequence[Any]]) -> Self:
        return cls([(int(s), bytes.fromhex(str(k))) for s, k in data])


def new_x25519() -> tuple[X25519PrivateKey, bytes]:
    """A fresh key pair for :meth:`PairwiseMasks.agree`: the private key and its raw public bytes."""
    private = X25519PrivateKey.generate()
    return private, private.public_key().public_bytes_raw()
