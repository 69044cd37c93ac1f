"""All Paillier arithmetic for one key in one process: the engine's own and each worker's.

CRT decryption with p and q when this process holds them; encryption and re-randomisation with
DJN (fixed-base table) or textbook obfuscators. Plain ``mpz`` in and out, no validation: the
engine checks inputs before they get here.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import gmpy2
from gmpy2 import mpz

from federation.crypto.errors import MissingPrivateKeyError
from federation.crypto.keys import byte_len
from federation.crypto.tables import CrtFixedBase, FixedBaseTable

_f_mod = gmpy2.f_mod
_powmod = gmpy2.powmod


class CrtKey:
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


class Core:
    """All arithmetic for one key in one process: the engine's own and each pool worker's."""

    def __init__(
        self,
        n: mpz,
        hs: mpz,
        *,
        exponent_bits: int,
        window_bits: int,
        crt: CrtKey | None,
    ):
        self.n = mpz(n)
        self.nsq = self.n * self.n
        self.n_int = int(self.n)
        self.hs = mpz(hs)
        self.exponent_bits = exponent_bits
        self.window_bits = window_bits
        self.crt = crt
        self.plaintext_bytes = byte_len(self.n)
        self.ciphertext_bytes = byte_len(self.nsq)
        self._table: FixedBaseTable | CrtFixedBase | None = None

    def table(self) -> FixedBaseTable | CrtFixedBase:
        """The fixed-base table of h_s (split by CRT when this process holds p and q)."""
        if self._table is None:
            if self.crt is not None:
                self._table = CrtFixedBase(
                    self.hs,
                    self.crt,
                    exponent_bits=self.exponent_bits,
                    window_bits=self.window_bits,
                )
            else:
                self._table = FixedBaseTable(
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
        powers: list[mpz] = gmpy2.powmod_base_list(rs, n, nsq)
        return powers

    def encrypt(self, plaintexts: Sequence[mpz], mode: str) -> list[mpz]:
        return self.encrypt_with(plaintexts, self.obfuscators(len(plaintexts), mode))

    def encrypt_with(self, plaintexts: Sequence[mpz], obfuscators: Sequence[mpz]) -> list[mpz]:
        """Encrypt with given obfuscators (precomputed ones from an ObfuscatorPool)."""
        # (1 + m·n)·r mod n^2 == r + n·(m·r mod n) mod n^2; the sum is < 2n^2.
        n, nsq = self.n, self.nsq
        out = []
        for m, r in zip(plaintexts, obfuscators, strict=True):
            if m:
                c = r + n * _f_mod(m * _f_mod(r, n), n)
                if c >= nsq:
                    c -= nsq
                out.append(c)
            else:
                out.append(r)
        return out

    def rerandomise(self, ciphertexts: Sequence[mpz], mode: str) -> list[mpz]:
        return self.rerandomise_with(ciphertexts, self.obfuscators(len(ciphertexts), mode))

    def rerandomise_with(self, ciphertexts: Sequence[mpz], obfs: Sequence[mpz]) -> list[mpz]:
        nsq = self.nsq
        return [_f_mod(c * r, nsq) for c, r in zip(ciphertexts, obfs, strict=True)]

    def decrypt(self, ciphertexts: Sequence[mpz]) -> list[mpz]:
        if self.crt is None:
            raise MissingPrivateKeyError("decryption needs the private key")
        return self.crt.decrypt(ciphertexts)
