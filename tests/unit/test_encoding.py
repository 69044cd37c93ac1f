"""Fixed-point codec, per-sample (g, h) packing with its bit budget, ciphertext-level packing,
and the whole holder→bank histogram path checked against numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from federation.crypto import (
    CiphertextPacker,
    EncodingError,
    FixedPointCodec,
    GradHessPacker,
    PackingOverflowError,
    PaillierEngine,
    encrypted_bin_sums,
    generate_keypair,
    make_public_params,
    subtract,
)
from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes

KEY_BITS = 1024


@pytest.fixture(scope="module")
def keys():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            pk, sk = generate_keypair(KEY_BITS)
            params = make_public_params(pk)
    return pk, sk, params


@pytest.fixture
def engine(keys):
    _pk, sk, params = keys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            eng = PaillierEngine(params, private_key=sk, workers=1)
    with eng:
        yield eng


# ---------------------------------------------------------------- FixedPointCodec


def test_codec_round_trip_and_sums(keys):
    pk, _, _ = keys
    n = int(pk.n)
    rng = np.random.default_rng(1)
    x = rng.normal(0, 100, 500)
    codec = FixedPointCodec(scale_bits=40)
    enc = codec.encode(x, pk)
    assert all(0 <= v < n for v in enc)
    assert all((v > n // 2) == (xv < 0) for v, xv in zip(enc, x, strict=True))
    np.testing.assert_allclose(codec.decode(enc, pk), x, rtol=0, atol=2**-41)
    total = sum(enc) % n  # what a homomorphic sum decrypts to
    assert codec.decode([total], n)[0] == pytest.approx(x.sum(), abs=500 * 2**-41)
    # a product with another encoding doubles the scale
    prod = enc[0] * codec.encode([2.5], n)[0] % n
    assert codec.decode([prod], n, scale_bits=80)[0] == pytest.approx(2.5 * x[0], rel=1e-9)


def test_codec_encrypted_sum(keys, engine):
    pk, _, _ = keys
    x = np.array([-1.25, 3.5, -7.0, 0.001])
    codec = FixedPointCodec(scale_bits=32)
    total = engine.sum(engine.encrypt(codec.encode(x, pk)))
    assert codec.decode(engine.decrypt([total]), pk)[0] == pytest.approx(x.sum(), abs=1e-8)


def test_codec_refusals(keys):
    pk, _, _ = keys
    codec = FixedPointCodec(scale_bits=40)
    with pytest.raises(EncodingError, match=r"values\[1\]"):
        codec.encode([1.0, np.nan], pk)
    with pytest.raises(EncodingError, match="one-dimensional"):
        codec.encode(np.zeros((2, 2)), pk)
    with pytest.raises(EncodingError, match="too large"):
        codec.encode([2.0**983], pk)  # 2^1023 > n / 3
    with pytest.raises(EncodingError, match="float64"):
        codec.encode([2.0**1000], pk)
    n = int(pk.n)
    with pytest.raises(EncodingError, match="overflow"):
        codec.decode([n // 2], n)
    assert codec.phe_exponent == -10
    with pytest.raises(EncodingError, match="multiple of 4"):
        _ = FixedPointCodec(scale_bits=42).phe_exponent
    with pytest.raises(EncodingError):
        FixedPointCodec(scale_bits=-1)


# ---------------------------------------------------------------- GradHessPacker


def test_bit_budget_is_computed_and_refused_when_too_big():
    p = GradHessPacker(n_samples_max=1_000_000, precision_bits=40, key_bits=2048)
    assert p.count_bits == 20
    assert p.h_bits == (1_000_000 * 2**40).bit_length()
    assert p.g_bits == (1_000_000 * 2**41).bit_length()
    assert p.slot_bits == p.g_bits + p.h_bits + p.count_bits <= 2047
    assert p.ciphertext_packer().slots_per_ciphertext == 2047 // p.slot_bits
    with pytest.raises(PackingOverflowError, match="bits"):
        GradHessPacker(n_samples_max=2**40, precision_bits=60, key_bits=240)  # needs 244
    with pytest.raises(PackingOverflowError):
        CiphertextPacker(slot_bits=2048, key_bits=2048)
    with pytest.raises(EncodingError):
        GradHessPacker(n_samples_max=0, key_bits=2048)
    with pytest.raises(EncodingError):
        GradHessPacker(n_samples_max=10, key_bits=2048, precision_bits=61)


def test_extreme_sums_do_not_overflow():
    n_max = 1000
    p = GradHessPacker(n_samples_max=n_max, precision_bits=40, key_bits=512)
    for g_val, h_val in ((1.0, 1.0), (-1.0, 0.0), (-1.0, 1.0)):
        packed = p.pack(np.full(n_max, g_val), np.full(n_max, h_val))
        assert all(v.bit_length() <= p.slot_bits for v in packed)
        total = sum(packed)
        assert total.bit_length() <= p.slot_bits
        sg, sh, cnt = p.unpack([total])
        assert (sg[0], sh[0], cnt[0]) == (g_val * n_max, h_val * n_max, n_max)


def test_pack_unpack_matches_numpy_within_precision():
    rng = np.random.default_rng(5)
    n = 5000
    p = GradHessPacker(n_samples_max=n, precision_bits=36, key_bits=1024)
    prob = rng.random(n)
    y = rng.integers(0, 2, n)
    g, h = prob - y, prob * (1 - prob)  # logloss gradient and hessian
    packed = p.pack(g, h)
    groups = rng.integers(0, 17, n)
    sums = [sum(v for v, k in zip(packed, groups, strict=True) if k == b) for b in range(17)]
    sg, sh, cnt = p.unpack(sums)
    ref_g = np.array([g[groups == b].sum() for b in range(17)])
    ref_h = np.array([h[groups == b].sum() for b in range(17)])
    assert cnt.tolist() == np.bincount(groups, minlength=17).tolist()
    tol = 1e-9 * n
    assert np.abs(sg - ref_g).max() <= tol
    assert np.abs(sh - ref_h).max() <= tol
    assert np.abs(sg - ref_g).max() <= p.max_abs_error + 1e-12


def test_pack_refusals_and_corruption_detection():
    p = GradHessPacker(n_samples_max=100, key_bits=512)
    with pytest.raises(EncodingError, match=r"g\[1\]"):
        p.pack([0.5, 1.5], [0.1, 0.1])
    with pytest.raises(EncodingError, match=r"h\[0\]"):
        p.pack([0.5], [-0.1])
    with pytest.raises(EncodingError, match="finite"):
        p.pack([np.inf], [0.1])
    with pytest.raises(EncodingError, match="values"):
        p.pack([0.1, 0.2], [0.1])
    too_many = sum(p.pack(np.zeros(101), np.zeros(101)))
    with pytest.raises(PackingOverflowError, match="inconsistent"):
        p.unpack([too_many])
    with pytest.raises(PackingOverflowError, match="inconsistent"):
        p.unpack([(1 << (p.slot_bits - 1)) | 1])  # huge g with count 1


# ---------------------------------------------------------------- CiphertextPacker


def test_ciphertext_packing_round_trip(keys, engine):
    pk, _, _params = keys
    packer = CiphertextPacker(slot_bits=100, key_bits=KEY_BITS)
    assert packer.slots_per_ciphertext == 10
    rng = np.random.default_rng(9)
    values = [int.from_bytes(rng.bytes(13), "big") >> 4 for _ in range(23)]  # < 2^100
    values[0], values[1] = 0, (1 << 100) - 1
    cts = engine.encrypt(values)
    packed = packer.pack(cts, pk)
    assert len(packed) == packer.n_packed(23) == 3
    packed = engine.rerandomise(packed)
    assert packer.unpack(engine.decrypt(packed), 23) == values
    with pytest.raises(PackingOverflowError, match="requested"):
        packer.unpack(engine.decrypt(packed), 31)
    with pytest.raises(PackingOverflowError, match="bits"):
        packer.unpack([1 << 1001], 1)
    with pytest.raises(PackingOverflowError, match="512-bit"):
        CiphertextPacker(slot_bits=100, key_bits=512).pack(cts, pk)


def test_ciphertext_packing_on_pool_equals_in_process(keys):
    pk, sk, params = keys
    packer = CiphertextPacker(slot_bits=60, key_bits=KEY_BITS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            eng = PaillierEngine(params, private_key=sk, workers=2, parallel_threshold=1)
    with eng:
        values = list(range(1000, 1000 + 170))
        cts = eng.encrypt(values)
        pooled = packer.pack(cts, pk, engine=eng)
        assert pooled == packer.pack(cts, pk)  # packing is deterministic
        assert packer.unpack(eng.decrypt(pooled), len(values)) == values


# ---------------------------------------------------------------- the full histogram path


def test_secureboost_histogram_path_matches_numpy(keys, engine):
    """Bank packs and encrypts (g, h); holder sums per bin, derives the sibling, packs bins into
    few ciphertexts and re-randomises; bank decrypts and unpacks: equals numpy sums."""
    pk, _, params = keys
    rng = np.random.default_rng(11)
    n, n_features, n_bins = 300, 3, 6
    prob = rng.random(n)
    g = prob - rng.integers(0, 2, n)
    h = prob * (1 - prob)
    gh = GradHessPacker(n_samples_max=n, key_bits=KEY_BITS, precision_bits=40)
    cts = engine.encrypt(gh.pack(g, h))
    bins = rng.integers(0, n_bins, size=(n, n_features))
    node = np.sort(rng.choice(n, 200, replace=False))
    left = node[prob[node] < 0.35]
    right = np.setdiff1d(node, left)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            holder = PaillierEngine(params, workers=1)  # public parameters only
    parent = encrypted_bin_sums(cts, bins, node, n_bins, pk)
    left_hist = encrypted_bin_sums(cts, bins, left, n_bins, pk)
    right_hist = subtract(parent, left_hist, pk)
    cp = gh.ciphertext_packer()
    flat = [c for row in right_hist for c in row]
    packed = holder.rerandomise(cp.pack(flat, pk))
    assert len(packed) == cp.n_packed(len(flat)) < len(flat)

    sg, sh, cnt = gh.unpack(cp.unpack(engine.decrypt(packed), len(flat)))
    sg, sh, cnt = (a.reshape(n_features, n_bins) for a in (sg, sh, cnt))
    for f in range(n_features):
        col = bins[right, f]
        ref_g = np.bincount(col, weights=g[right], minlength=n_bins)
        ref_h = np.bincount(col, weights=h[right], minlength=n_bins)
        np.testing.assert_allclose(sg[f], ref_g, rtol=0, atol=1e-9 * n)
        np.testing.assert_allclose(sh[f], ref_h, rtol=0, atol=1e-9 * n)
        assert cnt[f].tolist() == np.bincount(col, minlength=n_bins).tolist()
