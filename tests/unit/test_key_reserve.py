"""The bank's ready key (issue 14 part 2): a key pair and its obfuscators made while idle,
used by exactly one job, the next one prepared only after the job; a job with a ready key grows
the same trees as one without, and its encryption draws from the pool."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from carriers import small_keys

from federation.crypto import PaillierEngine
from federation.crypto.errors import CryptoError
from federation.crypto.reserve import KeyReserve, key_reserve, running_reserve, stop_reserves
from models.secureboost import SecureBoostClassifier
from models.secureboost.passive import local_holders

KEY_BITS = 1024


@pytest.fixture(scope="module")
def reserve():
    with small_keys():
        r = KeyReserve(key_bits=KEY_BITS, capacity=48, batch=16, workers=1).start()
        assert r.wait_filled(60), "the reserve never filled"
        yield r
        r.stop()


def _values(pool) -> set[int]:
    return {int(v) for v in list(pool._values)}


def test_a_ready_key_serves_one_job_and_the_next_is_made_after_it(reserve):
    with small_keys():
        assert reserve.fill_seconds is not None and reserve.fill_seconds > 0
        made = reserve.keys_made
        with reserve.lease(KEY_BITS) as first:
            assert first is not None and len(first.pool) == 48
            first_values = _values(first.pool)
            secret = str(first.private_key.p)
            assert secret not in repr(first) and secret not in repr(reserve)
            # A second job at the same time gets no key (never a shared one) ...
            with reserve.lease(KEY_BITS) as second:
                assert second is None
            # ... and no next key is made while a job runs.
            time.sleep(1.5)
            assert reserve.keys_made == made and reserve.ready_size() == 0
            engine = PaillierEngine(first.params, private_key=first.private_key, workers=1)
            with engine:
                reserve.attach(engine, first, need=20)
                ms = list(range(1, 21))
                cts = [int(c) for c in engine.encrypt(ms)]
                assert engine.decrypt(cts) == ms
                assert first.pool.served == 20 and first.pool.fallback == 0
                assert set(cts).isdisjoint(first_values)  # encryptions, not bare obfuscators
        # The job is over: its key's obfuscators are gone, the filler stopped.
        assert len(first.pool) == 0 and first.pool._thread is None
        assert reserve.wait_filled(60)
        assert reserve.keys_made == made + 1
        with reserve.lease(KEY_BITS) as third:
            assert third is not None
            assert third.params.n != first.params.n
            assert _values(third.pool).isdisjoint(first_values)


def test_a_reserve_of_another_key_size_gives_nothing(reserve):
    assert reserve.wait_filled(60)
    with reserve.lease(2048) as other:
        assert other is None
    assert reserve.ready_size() > 0  # still there for a job of its size


def test_bad_settings_are_refused():
    with pytest.raises(CryptoError, match="capacity"):
        KeyReserve(key_bits=2048, capacity=0)
    with pytest.raises(CryptoError, match="nice"):
        KeyReserve(key_bits=2048, capacity=10, nice=30)


def test_process_reserves_are_kept_and_stopped():
    with small_keys():
        settings = {"key_bits": KEY_BITS, "capacity": 8, "batch": 8, "workers": 1}
        assert running_reserve(KEY_BITS) is None
        started = key_reserve(**settings)
        assert key_reserve(**settings) is started and running_reserve(KEY_BITS) is started
        assert running_reserve(2048) is None
        assert started.wait_filled(60)
        stop_reserves()
        assert running_reserve(KEY_BITS) is None and started.ready_size() == 0


def _data(n: int = 600, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    logit = x[:, 0] - 0.8 * x[:, 2] + 0.6 * x[:, 3]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame(x[:, :2], columns=["a", "b"]), y, x[:, 2:]


def test_a_job_with_a_ready_key_grows_the_same_trees_and_uses_its_obfuscators(
    tree_shape, reserve, tmp_path: Path
):
    X, y, holder = _data()
    params = {"n_trees": 3, "max_depth": 2, "random_state": 0, "key_bits": KEY_BITS}
    runs = []
    with small_keys():
        assert reserve.wait_filled(60)
        for name, with_reserve in (("cold", None), ("warm", reserve)):
            peers, _ = local_holders({"tax": (holder, ["c", "d"])}, tmp_path / name)
            clf = SecureBoostClassifier(**params, workers=1)
            clf.fit(X, y, holders=peers, key_reserve=with_reserve)
            runs.append(clf)
    cold, warm = runs
    assert cold.model_.stats["ready_key"] is False
    assert warm.model_.stats["ready_key"] is True
    assert tree_shape(warm) == tree_shape(cold)
    assert any(n.owner == "tax" for t in warm.trees_ for n in t.nodes.values() if not n.is_leaf)
    # Tree 0 is the bank's alone; trees 1 and 2 sent 600 encrypted gradients each: at least
    # the 48 made ahead were used (more, if the filler kept up as the job ran).
    assert "obfuscators_ahead" not in cold.model_.stats
    assert 48 <= warm.model_.stats["obfuscators_ahead"] <= 1200


def test_a_holder_rerandomises_with_obfuscators_made_while_it_waited(tree_shape, tmp_path: Path):
    """A holder with ``rerandomise_pool`` fills a per-job pool of textbook obfuscators from
    Start on; its answers use them, the trees stay the same, and the job takes them along."""
    X, y, holder = _data(seed=5)
    params = {"n_trees": 2, "max_depth": 2, "random_state": 1, "key_bits": KEY_BITS}
    runs, pools = [], []
    with small_keys():
        for size in (0, 24):
            peers, servicers = local_holders(
                {"tax": (holder, ["c", "d"])}, tmp_path / str(size), obfuscator_pool=size
            )
            seen: list = []
            servicer = servicers["tax"]
            original = servicer.open_job

            def spy(call, job, _original=original, _seen=seen):
                start = job.engine.start_obfuscator_pool

                def record(**kw):
                    pool = start(**kw)
                    _seen.append(pool)
                    deadline = time.monotonic() + 30  # as if the bank took a while to encrypt
                    while len(pool) < pool.capacity and time.monotonic() < deadline:
                        time.sleep(0.02)
                    return pool

                job.engine.start_obfuscator_pool = record
                _seen.append(job.engine)
                return _original(call, job)

            servicer.open_job = spy
            clf = SecureBoostClassifier(**params, workers=1)
            clf.fit(X, y, holders=peers)
            runs.append(clf)
            pools.append(seen)
    assert tree_shape(runs[0]) == tree_shape(runs[1])
    assert len(pools[0]) == 1  # no pool without the setting
    engine, pool = pools[1]
    assert pool.mode == "textbook" and pool.capacity == 24
    assert pool.served > 0  # the holder's re-randomisation drew from it
    # The finished job closed its engine: the pool was dropped with it.
    assert engine._obfuscator_pools == {} and len(pool) == 0 and pool._thread is None


def test_a_bank_keeps_a_ready_key_only_when_asked(tmp_path: Path):
    from parties.bank.secureboost import bank_key_reserve

    class Limits:
        obfuscator_pool = 0
        obfuscator_batch = 8
        compute_workers = 1

    class Config:
        limits = Limits()

    with small_keys():
        assert bank_key_reserve(Config(), key_bits=KEY_BITS, start=False) is None
        assert bank_key_reserve(Config(), key_bits=KEY_BITS) is None  # pool off
        Limits.obfuscator_pool = 8
        started = bank_key_reserve(Config(), key_bits=KEY_BITS)
        try:
            assert started is not None and started.capacity == 8
            assert bank_key_reserve(Config(), key_bits=KEY_BITS, start=False) is started
        finally:
            stop_reserves()


def test_a_run_sizes_its_reserve_to_the_job_and_stops_only_its_own(tmp_path: Path):
    """``need`` caps the pool at what the job will encrypt (0: no reserve at all), and
    ``stop_reserve`` stops and forgets one reserve, leaving the process's others running."""
    from federation.crypto.reserve import stop_reserve
    from parties.bank.secureboost import bank_key_reserve

    class Limits:
        obfuscator_pool = 100
        obfuscator_batch = 8
        compute_workers = 1

    class Config:
        limits = Limits()

    with small_keys():
        assert bank_key_reserve(Config(), key_bits=KEY_BITS, need=0) is None
        mine = bank_key_reserve(Config(), key_bits=KEY_BITS, need=24)
        other = key_reserve(key_bits=768, capacity=1, batch=1, workers=1)
        try:
            assert mine is not None and mine.capacity == 24
            assert bank_key_reserve(Config(), key_bits=KEY_BITS, need=10_000).capacity == 100
            stop_reserve(mine)
            assert running_reserve(KEY_BITS) is not mine and mine.ready_size() == 0
            assert running_reserve(768) is other
        finally:
            stop_reserves()


def test_a_job_waits_for_the_key_being_generated_instead_of_making_another():
    """A reserve started just before the job (``xinyidai experiment run`` starts it with the
    nodes) hands the job the key it is generating, if the job may wait for it."""
    with small_keys():
        for _ in range(3):  # the key is taken whenever the job starts during generation
            r = KeyReserve(key_bits=KEY_BITS, capacity=4, batch=4, workers=1).start()
            try:
                with r.lease(KEY_BITS, wait_s=60) as ready:
                    assert ready is not None
                    assert r.keys_served == 1
            finally:
                r.stop()
        idle = KeyReserve(key_bits=KEY_BITS, capacity=4, batch=4, workers=1)  # never started
        t0 = time.monotonic()
        with idle.lease(KEY_BITS, wait_s=60) as ready:
            assert ready is None  # nothing is being generated: no wait
        assert time.monotonic() - t0 < 5
