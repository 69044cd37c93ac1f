"""Paillier engine: key-size policy, phe interop, DJN/textbook encryption, CRT decryption,
re-randomisation, wire format, the process pool and encrypted histograms."""

from __future__ import annotations

import logging
import secrets
import warnings

import gmpy2
import numpy as np
import pytest
from phe import paillier as phe

from federation.crypto import (
    CiphertextFormatError,
    CryptoError,
    FixedPointCodec,
    HistogramInputError,
    InsecureKeyError,
    MissingPrivateKeyError,
    PaillierEngine,
    PlaintextRangeError,
    PublicParamsError,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    crt_decrypt,
    encrypted_bin_sums,
    export_private_key_insecurely,
    generate_keypair,
    import_private_key,
    make_public_params,
    public_params_from_bytes,
    public_params_to_bytes,
    subtract,
)
from federation.crypto.testing import (
    InsecureKeyWarning,
    allow_insecure_key_sizes,
    insecure_key_sizes_allowed,
)


@pytest.fixture(scope="module")
def keys():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            pk, sk = generate_keypair(1024)
            params = make_public_params(pk)
    return pk, sk, params


@pytest.fixture
def insecure():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            yield


@pytest.fixture
def engine(keys, insecure):
    _pk, sk, params = keys
    with PaillierEngine(params, private_key=sk, workers=1) as eng:
        yield eng


@pytest.fixture(scope="module")
def pool_engine(keys):
    """Two real worker processes; parallel_threshold=1 forces every call through the pool."""
    _pk, sk, params = keys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            eng = PaillierEngine(params, private_key=sk, workers=2, parallel_threshold=1)
    with eng:
        yield eng


def random_plaintexts(n, count, rng_bits=None):
    bits = int(n).bit_length() - 1 if rng_bits is None else rng_bits
    return [secrets.randbits(bits) for _ in range(count)] + [0, 1, int(n) - 1]


# ---------------------------------------------------------------- key-size policy


def test_small_keys_refused_without_switch(keys):
    pk, sk, params = keys
    assert not insecure_key_sizes_allowed()
    with pytest.raises(InsecureKeyError, match="minimum is 2048"):
        generate_keypair(1024)
    with pytest.raises(InsecureKeyError):
        make_public_params(pk)
    with pytest.raises(InsecureKeyError):
        PaillierEngine(params, private_key=sk)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            buf = public_params_to_bytes(params)
    with pytest.raises(InsecureKeyError):
        public_params_from_bytes(buf)


def test_switch_warns_loudly_and_turns_off(caplog):
    caplog.set_level(logging.WARNING, logger="federation.crypto")
    with allow_insecure_key_sizes():
        assert insecure_key_sizes_allowed()
        with pytest.warns(InsecureKeyWarning, match="INSECURE 512-bit"):
            pk, _ = generate_keypair(512)
    assert pk.n.bit_length() == 512
    assert any("INSECURE 512-bit" in r.getMessage() for r in caplog.records)
    assert not insecure_key_sizes_allowed()


def test_real_2048_bit_key_round_trip():
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureKeyWarning)  # no warning at production size
        pk, sk = generate_keypair()
        params = make_public_params(pk)
        params = public_params_from_bytes(public_params_to_bytes(params))
        with PaillierEngine(params, private_key=sk, workers=1) as eng:
            assert eng.exponent_bits == 256
            ms = random_plaintexts(pk.n, 20)
            cts = eng.encrypt(ms)
            assert eng.decrypt(cts) == ms
            assert sk.raw_decrypt(int(cts[0])) == ms[0]
    assert pk.n.bit_length() == 2048
    assert len(ciphertexts_to_bytes(cts, pk)) == len(cts) * 512


def test_default_obfuscation_depends_on_role(keys, insecure):
    _, sk, params = keys
    assert PaillierEngine(params, private_key=sk).obfuscation == "djn"  # key holder: fast
    assert PaillierEngine(params).obfuscation == "textbook"  # data holder: hides from bank
    assert PaillierEngine(params, obfuscation="djn").obfuscation == "djn"


def test_exponent_below_2kappa_refused(keys, insecure):
    _, _, params = keys
    with pytest.raises(CryptoError, match="exponent_bits"):
        PaillierEngine(params, exponent_bits=128)
    with pytest.raises(CryptoError, match="obfuscation"):
        PaillierEngine(params, obfuscation="none")


# ---------------------------------------------------------------- encryption / decryption


@pytest.mark.parametrize("mode", ["djn", "textbook"])
def test_round_trip_both_modes(keys, insecure, mode):
    pk, sk, params = keys
    with PaillierEngine(params, private_key=sk, workers=1, obfuscation=mode) as eng:
        ms = random_plaintexts(pk.n, 30)
        cts = eng.encrypt(ms)
        assert eng.decrypt(cts) == ms
        assert [sk.raw_decrypt(int(c)) for c in cts] == ms
        assert len(set(cts)) == len(cts)  # probabilistic: equal plaintexts differ too
        again = eng.encrypt(ms)
        assert all(a != b for a, b in zip(cts, again, strict=True))


def test_djn_table_computes_hs_to_the_exponent(keys, engine, insecure):
    _, _, params = keys
    public_only = PaillierEngine(params, workers=1, obfuscation="djn")
    # the key holder's table works mod p^2 and q^2 (CRT); the public one mod n^2
    for eng in (engine, public_only):
        table = eng._core.table()
        digits = [secrets.randbelow(1 << table.window_bits) for _ in range(table.rows)]
        a = sum(d << (i * table.window_bits) for i, d in enumerate(digits))
        assert table.power(digits) == gmpy2.powmod(params.hs, a, params.nsquare)
        # obfuscators are encryptions of zero, and all distinct
        obf = eng.obfuscators(20)
        assert engine.decrypt(obf) == [0] * 20
        assert len(set(obf)) == 20
    assert type(engine._core.table()) is not type(public_only._core.table())
    public_only.close()


def test_window_sizes_agree(keys, insecure):
    pk, sk, params = keys
    ms = random_plaintexts(pk.n, 10)
    for w in (5, 11):
        with PaillierEngine(params, private_key=sk, workers=1, window_bits=w) as eng:
            assert eng.decrypt(eng.encrypt(ms)) == ms


def test_public_params_hs_is_nth_power_of_seeded_h(keys):
    pk, sk, params = keys
    # An n-th residue decrypts to 0 and is unchanged in distribution by re-randomising.
    assert sk.raw_decrypt(int(params.hs)) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            again = make_public_params(pk, seed=params.seed)
            other = make_public_params(pk)
    assert again == params
    assert other.hs != params.hs


def test_phe_interoperates_both_ways(keys, engine):
    pk, sk, _ = keys
    codec = FixedPointCodec(scale_bits=40)
    x = np.array([0.0, 1.5, -2.25, 1234.0625, -1e-6, 3.3])
    # engine -> phe
    cts = engine.encrypt(codec.encode(x, pk))
    back = [sk.decrypt(phe.EncryptedNumber(pk, int(c), codec.phe_exponent)) for c in cts]
    np.testing.assert_allclose(back, x, rtol=0, atol=2**-40)
    # homomorphic sum made by the engine, decrypted by phe
    total = phe.EncryptedNumber(pk, int(engine.sum(cts)), codec.phe_exponent)
    assert sk.decrypt(total) == pytest.approx(x.sum(), abs=1e-9)
    # phe -> engine: raw ciphertexts without phe's extra obfuscation
    ints = [0, 7, 123456789, -42]
    raw = [pk.encrypt(v).ciphertext(be_secure=False) for v in ints]
    assert [int(v) for v in codec.decode(engine.decrypt(raw), pk, scale_bits=0)] == ints
    encs = [pk.encrypt(float(v), precision=2**-40) for v in x]
    assert {e.exponent for e in encs} == {codec.phe_exponent}
    dec = codec.decode(engine.decrypt([e.ciphertext(be_secure=False) for e in encs]), pk)
    np.testing.assert_allclose(dec, x, rtol=0, atol=2**-40)
    # phe's own be_secure ciphertexts too
    e = pk.encrypt(99)
    assert engine.decrypt([e.ciphertext(be_secure=True)]) == [99]


def test_crt_decrypt_function_matches_phe(keys, engine):
    pk, sk, _ = keys
    ms = random_plaintexts(pk.n, 10)
    cts = [pk.raw_encrypt(m) for m in ms]
    assert crt_decrypt(cts, sk) == [sk.raw_decrypt(c) for c in cts] == ms
    with pytest.raises(CiphertextFormatError):
        crt_decrypt([pk.nsquare], sk)


def test_plaintext_and_ciphertext_validation(keys, engine):
    pk, _, params = keys
    with pytest.raises(PlaintextRangeError, match="item 1 of the plaintexts"):
        engine.encrypt([1, -1])
    with pytest.raises(PlaintextRangeError, match="outside"):
        engine.encrypt([pk.n])
    with pytest.raises(PlaintextRangeError, match="float"):
        engine.encrypt([0.5])
    with pytest.raises(CiphertextFormatError):
        engine.decrypt([0])
    with pytest.raises(CiphertextFormatError):
        engine.rerandomise([pk.nsquare])
    holder = PaillierEngine(params, workers=1)
    with pytest.raises(MissingPrivateKeyError):
        holder.decrypt(engine.encrypt([1]))


def test_homomorphic_addition(keys, engine):
    pk, _, _ = keys
    a, b = secrets.randbits(500), secrets.randbits(500)
    ca, cb = engine.encrypt([a, b])
    assert engine.decrypt([engine.add(ca, cb)]) == [(a + b) % pk.n]
    assert engine.decrypt([engine.sum([ca, cb, ca])]) == [(2 * a + b) % pk.n]
    assert engine.decrypt([engine.sum([])]) == [0]


@pytest.mark.parametrize("mode", ["djn", "textbook"])
def test_rerandomise_differs_but_decrypts_same(keys, engine, mode):
    pk, _, _ = keys
    ms = random_plaintexts(pk.n, 10)
    cts = engine.encrypt(ms)
    fresh = engine.rerandomise(cts, obfuscation=mode)
    assert all(a != b for a, b in zip(cts, fresh, strict=True))
    assert engine.decrypt(fresh) == ms
    # also works on phe's ciphertexts
    raw = pk.raw_encrypt(5)
    assert engine.decrypt(engine.rerandomise([raw])) == [5]


# ---------------------------------------------------------------- serialisation


def test_ciphertext_bytes_round_trip_and_refusals(keys, engine):
    pk, _, params = keys
    cts = engine.encrypt(random_plaintexts(pk.n, 5))
    buf = ciphertexts_to_bytes(cts, pk)
    width = params.ciphertext_bytes
    assert width == (pk.nsquare.bit_length() + 7) // 8
    assert len(buf) == len(cts) * width
    assert ciphertexts_from_bytes(buf, pk) == cts
    assert ciphertexts_from_bytes(buf, params) == cts
    with pytest.raises(CiphertextFormatError, match="whole number"):
        ciphertexts_from_bytes(buf[:-1], pk)
    with pytest.raises(CiphertextFormatError, match="whole number"):
        ciphertexts_from_bytes(buf + b"\x00", pk)
    too_big = buf[:width] + b"\xff" * width
    with pytest.raises(CiphertextFormatError, match="item 1 of the ciphertexts"):
        ciphertexts_from_bytes(too_big, pk)
    with pytest.raises(CiphertextFormatError, match="item 0 of the ciphertexts"):
        ciphertexts_from_bytes(b"\x00" * width, pk)
    with pytest.raises(CiphertextFormatError):
        ciphertexts_to_bytes([pk.nsquare + 1], pk)
    assert ciphertexts_from_bytes(b"", pk) == []


def test_public_params_bytes_round_trip_and_tampering(keys, insecure):
    pk, _, params = keys
    buf = public_params_to_bytes(params)
    assert int(pk.n).to_bytes(128, "big") in buf
    loaded = public_params_from_bytes(buf)
    assert loaded == params and loaded.public_key == pk
    tampered = bytearray(buf)
    tampered[-1] ^= 1
    with pytest.raises(PublicParamsError, match="does not match"):
        public_params_from_bytes(bytes(tampered))
    assert public_params_from_bytes(bytes(tampered), verify=False).hs != params.hs
    with pytest.raises(PublicParamsError, match="magic"):
        public_params_from_bytes(b"XXXX" + buf[4:])
    with pytest.raises(PublicParamsError, match="expected"):
        public_params_from_bytes(buf[:-3])
    with pytest.raises(PublicParamsError):
        public_params_from_bytes(buf[:10])


def test_private_key_export_is_explicit(keys, insecure):
    pk, sk, _ = keys
    buf = export_private_key_insecurely(sk)
    pk2, sk2 = import_private_key(buf)
    assert pk2 == pk and sk2 == sk
    with pytest.raises(CryptoError):
        import_private_key(buf[:-1])


# ---------------------------------------------------------------- process pool and streaming


def test_pool_matches_in_process(keys, pool_engine):
    pk, sk, _ = keys
    ms = random_plaintexts(pk.n, 40)
    cts = pool_engine.encrypt(ms)
    assert pool_engine._pool is not None  # really went through the workers
    assert [sk.raw_decrypt(int(c)) for c in cts] == ms
    assert pool_engine.decrypt(cts) == ms
    fresh = pool_engine.rerandomise(cts)
    assert all(a != b for a, b in zip(cts, fresh, strict=True))
    assert pool_engine.decrypt(fresh) == ms
    tb = pool_engine.rerandomise(cts, obfuscation="textbook")
    assert pool_engine.decrypt(tb) == ms


def test_encrypt_stream_yields_wire_chunks_in_order(keys, pool_engine, engine):
    pk, _, _ = keys
    ms = random_plaintexts(pk.n, 50)
    for eng in (pool_engine, engine):
        chunks = list(eng.encrypt_stream(iter(ms), chunk_size=7))
        assert [len(c) // eng.ciphertext_bytes for c in chunks] == [7] * 7 + [53 - 49]
        cts = ciphertexts_from_bytes(b"".join(chunks), pk)
        assert eng.decrypt(cts) == ms
    bad = [*ms[:10], -5]
    with pytest.raises(PlaintextRangeError, match="item 10 of the plaintexts"):
        list(pool_engine.encrypt_stream(bad, chunk_size=4))
    with pytest.raises(CryptoError):
        list(engine.encrypt_stream(ms, chunk_size=0))


def test_pool_stays_warm_across_engines_and_stops_with_the_node(keys, insecure):
    """An engine lets go of the process's warm pool on close; the next engine reuses it, and
    ``shutdown_pools`` (node stop) stops it for good."""
    from federation.crypto.pool import shutdown_pools

    _, sk, params = keys
    eng = PaillierEngine(params, private_key=sk, workers=2, parallel_threshold=1)
    with eng:
        assert eng.decrypt(eng.encrypt([3, 4, 5])) == [3, 4, 5]
        pool = eng._pool
        assert pool is not None
    assert eng._pool is None
    eng.close()  # idempotent
    again = PaillierEngine(params, private_key=sk, workers=2, parallel_threshold=1)
    with again:
        assert again.decrypt(again.encrypt([6, 7])) == [6, 7]
        assert again._pool is pool  # warm: no new worker processes for the next job
    shutdown_pools()
    with pytest.raises(RuntimeError):
        pool.submit(int, 1)


# ---------------------------------------------------------------- histograms


def _plain_hist(values, bins, idx, n_bins, modulus):
    out = np.zeros((bins.shape[1], n_bins), dtype=object)
    for i in idx:
        for f in range(bins.shape[1]):
            out[f, bins[i, f]] += values[i]
    return [[int(v) % modulus for v in row] for row in out]


def test_encrypted_bin_sums_match_plaintext_sums(keys, engine, pool_engine):
    pk, _, _ = keys
    rng = np.random.default_rng(7)
    n, n_features, n_bins = 120, 3, 5
    values = [int(v) for v in rng.integers(0, 2**40, n)]
    cts = engine.encrypt(values)
    bins = rng.integers(0, n_bins - 1, size=(n, n_features))
    bins[rng.random((n, n_features)) < 0.1] = n_bins - 1  # the "missing" bin
    bins[:, 2] = np.minimum(bins[:, 2], 2)  # bins 3 and 4 of feature 2 stay empty
    idx = np.sort(rng.choice(n, 80, replace=False))
    expected = _plain_hist(values, bins, idx, n_bins, int(pk.n))
    local = encrypted_bin_sums(cts, bins, idx, n_bins, pk)
    assert len(local) == n_features and all(len(row) == n_bins for row in local)
    assert [engine.decrypt(row) for row in local] == expected
    assert local[2][3] == 1 and local[2][4] == 1  # empty bins: trivial encryption of 0
    pooled = encrypted_bin_sums(
        cts, bins, idx, n_bins, pk, engine=pool_engine, parallel_threshold=1
    )
    assert [engine.decrypt(row) for row in pooled] == expected
    # fewer features than workers: split over samples and multiply the partial products
    one = encrypted_bin_sums(
        cts, bins[:, :1], idx, n_bins, pk, engine=pool_engine, parallel_threshold=1
    )
    assert [engine.decrypt(row) for row in one] == expected[:1]


def test_subtract_gives_sibling_histogram(keys, engine):
    pk, _, _ = keys
    rng = np.random.default_rng(3)
    n, n_bins = 60, 4
    values = [int(v) for v in rng.integers(0, 2**30, n)]
    cts = engine.encrypt(values)
    bins = rng.integers(0, n_bins, size=(n, 2))
    parent_idx = np.arange(n)
    left = np.flatnonzero(rng.random(n) < 0.4)
    right = np.setdiff1d(parent_idx, left)
    parent = encrypted_bin_sums(cts, bins, parent_idx, n_bins, pk)
    child = encrypted_bin_sums(cts, bins, left, n_bins, pk)
    sibling = subtract(parent, child, pk)
    expected = _plain_hist(values, bins, right, n_bins, int(pk.n))
    assert [engine.decrypt(row) for row in sibling] == expected
    assert engine.decrypt(subtract(parent[0], child[0], pk)) == expected[0]
    with pytest.raises(HistogramInputError, match="shape"):
        subtract(parent, child[:1], pk)


def test_histogram_input_errors(keys, engine):
    pk, _, _ = keys
    cts = engine.encrypt([1, 2, 3])
    bins = np.array([[0, 1], [1, 1], [2, 0]])
    with pytest.raises(HistogramInputError, match="outside"):
        encrypted_bin_sums(cts, bins, np.array([0, 2]), 2, pk)
    with pytest.raises(HistogramInputError, match="rows"):
        encrypted_bin_sums(cts[:2], bins, np.array([0]), 3, pk)
    with pytest.raises(HistogramInputError, match="twice"):
        encrypted_bin_sums(cts, bins, np.array([0, 0]), 3, pk)
    with pytest.raises(HistogramInputError, match="sample_index"):
        encrypted_bin_sums(cts, bins, np.array([5]), 3, pk)
    with pytest.raises(HistogramInputError, match="integers"):
        encrypted_bin_sums(cts, bins.astype(float), np.array([0]), 3, pk)
    empty = encrypted_bin_sums(cts, bins, np.array([], dtype=int), 3, pk)
    assert engine.decrypt([c for row in empty for c in row]) == [0] * 6
