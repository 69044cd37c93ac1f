"""The sorted-by-bin histogram kernel must give exactly the ciphertexts the per-row scan gave.

The old kernel is kept here as the reference: bit-identical sums mean identical trees.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from typing import Any

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from phe import paillier

from federation.crypto import make_public_params
from federation.crypto.histogram import _accumulate, encrypted_bin_sums
from federation.crypto.paillier import PaillierEngine
from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes


def _old_accumulate(cts: Sequence[mpz], cols: np.ndarray, n_bins: int, nsq: mpz) -> list[list[mpz]]:
    """The per-row kernel as it was before issue 14 (reference)."""
    one = mpz(1)
    out = []
    for j in range(cols.shape[1]):
        acc: list[Any] = [None] * n_bins
        for c, b in zip(cts, cols[:, j].tolist(), strict=True):
            a = acc[b]
            acc[b] = c if a is None else gmpy2.f_mod(a * c, nsq)
        out.append([one if a is None else a for a in acc])
    return out


@pytest.fixture(scope="module")
def key() -> paillier.PaillierPublicKey:
    pub, _ = paillier.generate_paillier_keypair(n_length=256)
    return pub


def _data(seed: int, n: int, f: int, n_bins: int, nsq: int) -> tuple[list[mpz], np.ndarray]:
    rng = random.Random(seed)
    cts = [mpz(rng.randrange(1, nsq)) for _ in range(n)]
    np_rng = np.random.default_rng(seed)
    bins = np_rng.integers(0, n_bins, size=(n, f), dtype=np.int64)
    # Feature 0 leaves bins empty; the last bin stands for "missing" in feature 1.
    if f > 1:
        bins[:, 0] = np_rng.choice([0, 3], size=n)
        bins[np_rng.random(n) < 0.3, 1] = n_bins - 1
    return cts, bins


@pytest.mark.parametrize(
    ("seed", "n", "f", "n_bins"), [(1, 200, 4, 8), (2, 57, 3, 32), (3, 1, 2, 5)]
)
def test_new_kernel_equals_old(key: Any, seed: int, n: int, f: int, n_bins: int) -> None:
    nsq = mpz(key.nsquare)
    cts, bins = _data(seed, n, f, n_bins, int(nsq))
    new = _accumulate(cts, bins, n_bins, nsq)
    assert new == _old_accumulate(cts, bins, n_bins, nsq)
    if f > 1:
        assert new[0][1] == 1 and new[0][0] != 1  # empty bin is the trivial encryption of 0


def test_no_rows_gives_all_ones(key: Any) -> None:
    nsq = mpz(key.nsquare)
    out = _accumulate([], np.zeros((0, 3), dtype=np.int64), 4, nsq)
    assert out == [[1] * 4 for _ in range(3)]


def test_subset_and_parallel_match_reference(key: Any) -> None:
    nsq = mpz(key.nsquare)
    cts, bins = _data(7, 300, 5, 16, int(nsq))
    idx = np.random.default_rng(7).permutation(300)[:180]
    ref = _old_accumulate([cts[i] for i in idx.tolist()], bins[idx], 16, nsq)
    assert encrypted_bin_sums(cts, bins, idx, 16, key) == ref
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            engine = PaillierEngine(make_public_params(key), workers=2)
    with engine:
        got = encrypted_bin_sums(cts, bins, idx, 16, key, engine=engine, parallel_threshold=1)
    assert got == ref


def test_sums_decrypt_to_bin_totals() -> None:
    pub, priv = paillier.generate_paillier_keypair(n_length=256)
    values = [3, -1, 4, 1, -5, 9, 2, 6]
    cts = [pub.raw_encrypt(v % pub.n) for v in values]
    bins = np.array([[0], [2], [0], [2], [2], [0], [1], [0]], dtype=np.int64)
    out = encrypted_bin_sums(cts, bins, np.arange(8), 4, pub)
    got = [priv.raw_decrypt(int(c)) for c in out[0]]
    got = [g - pub.n if g > pub.max_int else g for g in got]
    assert got == [3 + 4 + 9 + 6, 2, -1 + 1 - 5, 0]


def _skewed(n: int, nsq: int, seed: int = 11) -> tuple[list[mpz], np.ndarray]:
    """Credit-like columns: a flag (95 % in one bin), a zero-inflated amount (80 % in bin 0),
    a grade (5 bins, one common) and one uniform column (the trick must leave it alone)."""
    rng = np.random.default_rng(seed)
    draw = random.Random(seed)
    cts = [mpz(draw.randrange(1, nsq)) for _ in range(n)]
    bins = np.column_stack(
        [
            (rng.random(n) < 0.05).astype(np.int64),
            np.where(rng.random(n) < 0.8, 0, rng.integers(1, 32, size=n)),
            rng.choice(5, size=n, p=[0.1, 0.6, 0.2, 0.05, 0.05]),
            rng.integers(0, 32, size=n),
        ]
    ).astype(np.int64)
    return cts, bins


def count_products(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Count the kernel's multiply-reduce steps (``calls["n"]``) from now on."""
    import federation.crypto.histogram as histogram

    calls = {"n": 0}
    real = gmpy2.f_mod

    def counting(a: Any, b: Any) -> Any:
        calls["n"] += 1
        return real(a, b)

    monkeypatch.setattr(histogram, "_f_mod", counting)
    return calls


def test_the_heaviest_bin_by_division_gives_the_same_ciphertexts_for_fewer_products(
    key: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    nsq = mpz(key.nsquare)
    cts, bins = _skewed(2000, int(nsq))
    reference = _old_accumulate(cts, bins, 32, nsq)
    calls = count_products(monkeypatch)
    assert _accumulate(cts, bins, 32, nsq) == reference
    direct = 2000 * 4  # about one product per row and column, as the reference makes
    assert calls["n"] < 0.7 * direct, calls["n"]  # 8,000 → ~5,200 here


def test_uniform_bins_keep_the_plain_scan(key: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    nsq = mpz(key.nsquare)
    cts, bins = _data(5, 3000, 3, 32, int(nsq))
    bins[:, 0] = np.random.default_rng(5).integers(0, 32, size=3000)
    calls = count_products(monkeypatch)
    assert _accumulate(cts, bins, 32, nsq) == _old_accumulate(cts, bins, 32, nsq)
    assert calls["n"] <= 3000 * 3  # no total computed when it would not pay


def test_a_ciphertext_that_is_not_a_unit_falls_back_to_the_scan() -> None:
    pub, priv = paillier.generate_paillier_keypair(n_length=256)
    nsq = mpz(pub.nsquare)
    cts, bins = _skewed(600, int(nsq), seed=3)
    rare = int(np.flatnonzero(bins[:, 0] == 1)[0])
    cts[rare] = mpz(priv.p)  # shares a factor with n^2: the other bins' product has no inverse
    assert _accumulate(cts, bins, 32, nsq) == _old_accumulate(cts, bins, 32, nsq)
