"""Obfuscators made ahead of time (issue 14 part 2): used once each, same r^n form, decrypt
correctly, fall back when empty, dropped with the job, never shown."""

from __future__ import annotations

import secrets
import threading
import time
import warnings

import gmpy2
import pytest

from federation.crypto import PaillierEngine, generate_keypair, make_public_params
from federation.crypto.errors import CryptoError
from federation.crypto.randomness import ObfuscatorPool
from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes


@pytest.fixture(scope="module")
def keys():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            pk, sk = generate_keypair(1024)
            params = make_public_params(pk)
    return sk, params


def _engine(keys, **kw):
    sk, params = keys
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        with allow_insecure_key_sizes():
            return PaillierEngine(params, private_key=sk, **kw)


def _is_nth_residue(eng: PaillierEngine, r) -> bool:
    # Decrypting an obfuscator gives 0 exactly when it has the r^n (mod n^2) form.
    return eng.decrypt([r]) == [0]


def test_pool_values_are_distinct_nth_residues_and_consumed_by_encrypt(keys):
    eng = _engine(keys, workers=1)
    with eng:
        pool = eng.start_obfuscator_pool(capacity=40, batch=16, prefill=40, background=False)
        assert len(pool) == 40
        stored = list(pool._values)
        assert len({int(r) for r in stored}) == 40
        assert all(_is_nth_residue(eng, r) for r in stored)
        # Encrypting zero returns the obfuscator itself: the pool's values, in order, once.
        cts = eng.encrypt([0] * 10)
        assert [int(c) for c in cts] == [int(r) for r in stored[:10]]
        assert len(pool) == 30 and pool.served == 10
        n = int(eng.n)
        ms = [secrets.randbelow(n) for _ in range(25)]
        assert eng.decrypt(eng.encrypt(ms)) == ms
        assert len(pool) == 5
        # The rest comes from the on-the-fly path: correct, and nothing reused.
        ms2 = [secrets.randbelow(n) for _ in range(12)]
        cts2 = eng.encrypt(ms2)
        assert eng.decrypt(cts2) == ms2
        assert len(pool) == 0 and pool.fallback == 7
        all_cts = {int(c) for c in (*cts, *eng.encrypt([0] * 5))}
        assert len(all_cts) == 15


def test_rerandomise_uses_pool_and_keeps_plaintext(keys):
    eng = _engine(keys, workers=1)
    with eng:
        pool = eng.start_obfuscator_pool(capacity=8, prefill=8, background=False)
        n = int(eng.n)
        ms = [secrets.randbelow(n) for _ in range(6)]
        cts = eng.encrypt(ms)  # takes 6
        fresh = eng.rerandomise(cts)  # 2 from the pool, 4 on the fly
        assert eng.decrypt(fresh) == ms
        assert {int(c) for c in fresh}.isdisjoint({int(c) for c in cts})
        assert len(pool) == 0 and pool.served == 8 and pool.fallback == 4


def test_no_value_is_handed_out_twice_across_threads():
    pool = ObfuscatorPool(mode="djn", capacity=5000, batch=5000)
    pool.put([gmpy2.mpz(i) for i in range(5000)])
    got: list[list[int]] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine: list[int] = []
        while chunk := pool.take(7):
            mine.extend(int(v) for v in chunk)
        with lock:
            got.append(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [v for mine in got for v in mine]
    assert len(flat) == 5000 and len(set(flat)) == 5000


def test_background_fill_with_workers_then_close_drops_everything(keys):
    eng = _engine(keys, workers=2, parallel_threshold=1)
    with eng:
        pool = eng.start_obfuscator_pool(capacity=64, batch=32)
        deadline = time.monotonic() + 20
        while len(pool) < 64 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pool) == 64
        assert all(_is_nth_residue(eng, r) for r in list(pool._values)[:8])
        n = int(eng.n)
        ms = [secrets.randbelow(n) for _ in range(16)]
        assert eng.decrypt(eng.encrypt(ms)) == ms
        assert pool.served == 16
        # Refilled in the background after use.
        deadline = time.monotonic() + 20
        while len(pool) < 64 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(pool) == 64
        assert str(int(next(iter(pool._values)))) not in repr(pool)
    assert len(pool) == 0 and pool._thread is None
    assert eng._obfuscator_pools == {}


def test_bad_configuration_is_refused():
    with pytest.raises(CryptoError, match="capacity"):
        ObfuscatorPool(mode="djn", capacity=-1)
    with pytest.raises(CryptoError, match="batch"):
        ObfuscatorPool(mode="djn", capacity=1, batch=0)


def test_node_limits_configure_the_pools():
    from pydantic import ValidationError

    from parties.config import LimitsConfig

    # The defaults measured in docs/crypto.md: a ready key's 100,000 (bank, used only where a
    # process keeps a ready key), 64 per job at a holder.
    assert LimitsConfig().obfuscator_pool == 100_000
    assert LimitsConfig().rerandomise_pool == 64
    assert LimitsConfig(obfuscator_pool=5000, obfuscator_batch=64).obfuscator_batch == 64
    with pytest.raises(ValidationError, match="obfuscator_pool"):
        LimitsConfig(obfuscator_pool=-1)
    with pytest.raises(ValidationError, match="rerandomise_pool"):
        LimitsConfig(rerandomise_pool=-1)


def test_encrypt_stream_draws_from_the_pool_then_falls_back(keys):
    """The bank streams its gradients with ``encrypt_stream``: made-ahead obfuscators must serve
    it (one multiply each), and a short pool must fall back to the workers, order kept."""
    from federation.crypto import ciphertexts_from_bytes

    _sk, params = keys
    eng = _engine(keys, workers=2, parallel_threshold=1)
    with eng:
        pool = eng.start_obfuscator_pool(capacity=30, batch=30, prefill=30, background=False)
        stored = [int(r) for r in pool._values]
        ms = [secrets.randbelow(int(eng.n)) for _ in range(70)]
        ms[:3] = [0, 0, 0]  # Enc(0) with a pooled obfuscator is the obfuscator itself
        chunks = list(eng.encrypt_stream(ms, chunk_size=16))
        assert len(chunks) == 5
        cts = [c for chunk in chunks for c in ciphertexts_from_bytes(chunk, params)]
        assert [int(c) for c in cts[:3]] == stored[:3]
        assert eng.decrypt(cts) == ms
        assert pool.served == 30 and pool.fallback == 40


def test_a_pool_makes_no_more_than_its_job_will_take(keys):
    """Values beyond a job's need would only be dropped with it: ``expect`` caps the filler."""
    eng = _engine(keys, workers=1)
    with eng:
        pool = eng.start_obfuscator_pool(capacity=40, batch=8, background=False)
        pool.expect(12)
        assert pool.fill(eng._produce_obfuscators) == 12 and pool.goal() == 12
        eng.encrypt([1] * 5)
        assert pool.goal() == 7 and len(pool) == 7  # 5 taken, none to make
        assert pool.fill(eng._produce_obfuscators) == 0
        eng.encrypt([1] * 9)  # 7 from the pool, 2 computed; the job expects nothing more
        assert pool.goal() == 0 and pool.fallback == 2
