"""Fixed-base exponentiation tables for DJN obfuscators: base^a as one product per digit.

The key holder, who knows p and q, keeps one table mod p^2 and one mod q^2 and joins them by
CRT: the same values as mod n^2 for well under half the cost.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import gmpy2
import numpy as np
from gmpy2 import mpz

if TYPE_CHECKING:
    from federation.crypto.core import CrtKey

_f_mod = gmpy2.f_mod


class FixedBaseTable:
    """table[r][d] = base^(d·2^(r·w)) mod m, so base^a is one product per w-bit digit of a."""

    def __init__(self, base: mpz, modulus: mpz, *, exponent_bits: int, window_bits: int):
        self.modulus = modulus
        self.window_bits = window_bits
        self.rows = -(-exponent_bits // window_bits)
        self.exponent_bits = self.rows * window_bits  # rounded up to whole digits
        size = 1 << window_bits
        table: list[list[mpz]] = []
        row_base = mpz(base)
        for _ in range(self.rows):
            row = [mpz(1), row_base]
            for _d in range(2, size):
                row.append(_f_mod(row[-1] * row_base, modulus))
            table.append(row)
            row_base = _f_mod(row[-1] * row_base, modulus)
        self.table = table

    def random_digits(self, count: int) -> list[list[int]]:
        """Uniform exponents in [0, 2^exponent_bits) from the OS CSPRNG, as w-bit digits."""
        w = self.window_bits
        n_bytes = (self.exponent_bits + 7) // 8
        raw = np.frombuffer(secrets.token_bytes(count * n_bytes), dtype=np.uint8)
        raw = raw.reshape(count, n_bytes)
        digits: list[list[int]]
        if w == 8:
            digits = raw.tolist()
            return digits
        bits = np.unpackbits(raw, axis=1)[:, : self.exponent_bits].reshape(count, self.rows, w)
        weights = (1 << np.arange(w - 1, -1, -1)).astype(np.int64)
        digits = (bits.astype(np.int64) @ weights).tolist()
        return digits

    def random_powers(self, count: int) -> list[mpz]:
        return self.powers(self.random_digits(count))

    def powers(self, exponents: Iterable[Sequence[int]]) -> list[mpz]:
        """base^a for each exponent given by its digits."""
        m = self.modulus
        table = self.table
        out = []
        for digits in exponents:
            acc = None
            for row, d in zip(table, digits, strict=True):
                if d:
                    acc = row[d] if acc is None else _f_mod(acc * row[d], m)
            out.append(mpz(1) if acc is None else acc)
        return out

    def power(self, digits: Sequence[int]) -> mpz:
        """base^a for the exponent given by its digits (least significant first); for tests."""
        acc = mpz(1)
        for row, d in zip(self.table, digits, strict=True):
            acc = _f_mod(acc * row[d], self.modulus)
        return acc


class CrtFixedBase:
    """The key holder's DJN obfuscators: h_s^a mod p^2 and mod q^2 with one random a, joined
    by CRT. The same values as working mod n^2 for well under half the cost (half-size
    products; `experiments/bench_paillier.py` measures it); only the holder of p and q can."""

    def __init__(self, base: mpz, crt: CrtKey, *, exponent_bits: int, window_bits: int):
        self.psq, self.qsq = crt.psq, crt.qsq
        self.inv = gmpy2.invert(self.psq, self.qsq)
        self.tp = FixedBaseTable(
            _f_mod(base, self.psq), self.psq, exponent_bits=exponent_bits, window_bits=window_bits
        )
        self.tq = FixedBaseTable(
            _f_mod(base, self.qsq), self.qsq, exponent_bits=exponent_bits, window_bits=window_bits
        )

    @property
    def rows(self) -> int:
        return self.tp.rows

    @property
    def window_bits(self) -> int:
        return self.tp.window_bits

    def power(self, digits: Sequence[int]) -> mpz:
        """base^a mod n^2 for the exponent given by its digits; for tests."""
        rp, rq = self.tp.power(digits), self.tq.power(digits)
        return rp + self.psq * _f_mod((rq - rp) * self.inv, self.qsq)

    def random_powers(self, count: int) -> list[mpz]:
        digits = self.tp.random_digits(count)
        psq, qsq, inv = self.psq, self.qsq, self.inv
        return [
            rp + psq * _f_mod((rq - rp) * inv, qsq)
            for rp, rq in zip(self.tp.powers(digits), self.tq.powers(digits), strict=True)
        ]
