"""CKKS logistic regression with many features (issue 13, part 5): packed gradients.

What is checked:
- ``ckks.packed_masked_products`` gives every Σ_i r_i x_ij of a (rows × d) matrix in the first
  d slots of ONE ciphertext, for short batches (tiled blocks), a whole-slot batch and batches
  of several chunks, with d a power of two or not; every other slot is masked too (partial
  sums never reach the key holder); a matrix wider than the padded batch is refused;
- issue 13's workload (565 rows, 60 one-hot features at one holder): the holder returns one
  ciphertext per batch (it used to return 60: 211 MB over 15 epochs), and the bank releases
  exactly one rounded value per feature; malformed answers are refused;
- results state CKKS's real parameters (ring dimension, modulus chain, HE-standard security),
  not a Paillier key size; ``epoch_seconds_`` has one entry per epoch (``n_iter_``).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from carriers import RecordingPeer, small_keys

from federation.crypto import ckks
from models.linear import (
    BackendError,
    CryptoOptions,
    DivergenceError,
    VerticalLogisticRegression,
    local_holders,
)
from models.linear.backends import CKKS_RELEASE_BITS, CkksBank, CkksHolder, crypto_parameters


@pytest.fixture(scope="module")
def bank() -> CkksBank:
    return CkksBank(CryptoOptions())


@pytest.fixture(scope="module")
def holder(bank: CkksBank) -> CkksHolder:
    return CkksHolder(bank.public_bytes())


def onehot(rows: int, variables: int, levels: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, levels, size=(rows, variables))
    codes[:levels] = np.arange(levels)[:, None]
    X = np.zeros((rows, variables * levels))
    for v in range(variables):
        X[np.arange(rows), v * levels + codes[:, v]] = 1.0
    return X


def masked_products(bank: CkksBank, holder: CkksHolder, X: np.ndarray, r: np.ndarray):
    items = ckks.encrypt_blocks(bank.ctx, r, bank.slots)
    out, masks = ckks.packed_masked_products(holder.context, items, X, mask_bits=holder.mask_bits)
    return out, masks


@pytest.mark.parametrize(
    ("rows", "d"),
    [(565, 60), (1, 1), (33, 7), (4096, 16), (5000, 12), (300, 64)],
    ids=["issue13", "one-row", "odd", "whole-slots", "two-chunks", "square-width"],
)
def test_packed_products_are_the_inner_products(bank, holder, rows, d):
    rng = np.random.default_rng(rows + d)
    X = rng.normal(size=(rows, d))
    r = rng.uniform(-1, 1, size=rows)
    out, masks = masked_products(bank, holder, X, r)
    assert masks.shape == (d,)
    got = ckks.decrypt_slots(bank.ctx, out, d) - masks
    want = X.T @ r
    assert np.abs(got - want).max() < 1e-3 * max(1.0, float(np.abs(want).max()))


def test_every_slot_is_masked_not_only_the_released_ones(bank, holder):
    """The slots past d hold partial sums over subsets of rows: each gets its own mask."""
    X = onehot(565, 10, 6)
    r = np.random.default_rng(1).uniform(-1, 1, size=565)
    out, masks = masked_products(bank, holder, X, r)
    every = ckks.decrypt_slots(bank.ctx, out, bank.slots)
    assert np.abs(every).min() > 1e-3  # no slot decrypts to a small partial sum
    assert np.mean(np.abs(every) > 2.0 ** (holder.mask_bits - 6)) > 0.95
    assert len(set(np.round(every[:64], 3))) == 64  # independent, not one repeated mask
    assert not np.allclose(every[:60], (X.T @ r) + masks[0])


def test_more_features_than_the_padded_batch_are_refused(bank, holder):
    X = np.ones((20, 40))  # 20 rows pad to 32 < 64
    items = ckks.encrypt_blocks(bank.ctx, np.zeros(20), bank.slots)
    with pytest.raises(ckks.CkksError, match="40 features do not fit a batch of 20 rows"):
        ckks.packed_masked_products(holder.context, items, X, mask_bits=holder.mask_bits)


def test_the_holder_answers_one_ciphertext_and_the_bank_releases_d_values(bank, holder):
    X = onehot(565, 10, 6)
    holder.prepare(X, 565)
    r = np.random.default_rng(2).uniform(-1, 1, size=565)
    pieces, total = bank.encrypt_residuals(r)
    payload = b"".join(pieces)
    assert total == len(payload) and len(ckks.unpack_vectors(payload, "r")) == 1
    masked, masks = holder.masked_gradient(payload, np.arange(565))
    assert len(ckks.unpack_vectors(masked, "g")) == 1
    assert len(masked) < 400_000  # one ciphertext; the per-feature layout sent 60 (~14 MB)
    released = bank.decrypt_masked(masked, 60)
    assert len(released) == 8 * 60
    grid = np.frombuffer(released, dtype="<f8") * 2.0**CKKS_RELEASE_BITS
    assert np.array_equal(grid, np.round(grid))  # rounded to the release grid
    g = holder.unmask(masks, released)
    assert np.abs(g - X.T @ r).max() < 1e-3


def test_cached_diagonals_follow_the_rows(bank):
    """A full-batch job reuses the encoded diagonals; other rows must not (mini-batches)."""
    holder = CkksHolder(bank.public_bytes())
    X = np.random.default_rng(6).normal(size=(300, 9))
    holder.prepare(X, 300)
    for rows in (np.arange(300), np.arange(300), np.arange(0, 300, 2), np.arange(300)):
        r = np.random.default_rng(rows.size).uniform(-1, 1, size=rows.size)
        payload = b"".join(bank.encrypt_residuals(r)[0])
        masked, masks = holder.masked_gradient(payload, rows)
        g = holder.unmask(masks, bank.decrypt_masked(masked, 9))
        assert np.abs(g - X[rows].T @ r).max() < 1e-3
        assert 0 < len(holder._plaintexts) <= ckks.PLAINTEXT_CACHE_MAX


def test_malformed_masked_gradients_are_refused(bank, holder):
    X = onehot(100, 4, 5)
    holder.prepare(X, 100)
    payload = b"".join(bank.encrypt_residuals(np.zeros(100))[0])
    masked, _ = holder.masked_gradient(payload, np.arange(100))
    item = ckks.unpack_vectors(masked, "g")[0]
    with pytest.raises(BackendError, match="2 ciphertexts, expected 1"):
        bank.decrypt_masked(ckks.pack_vectors([item, item]), 20)
    with pytest.raises(BackendError, match="not a ciphertext"):
        bank.decrypt_masked(ckks.pack_vectors([b"\x00" * 64]), 20)
    with pytest.raises(BackendError, match="4097 values asked"):
        bank.decrypt_masked(masked, 4097)


# --------------------------------------------------------------------------------------------
# issue 13's job end to end (in-process holders), bytes on the wire


def test_issue13_onehot_job_sends_one_ciphertext_per_gradient_round(tmp_path):
    X = onehot(565, 10, 6, seed=3)
    rng = np.random.default_rng(3)
    X_bank = pd.DataFrame(rng.normal(size=(565, 3)), columns=["b0", "b1", "b2"])
    u = X @ rng.normal(scale=0.6, size=60) + X_bank.to_numpy() @ [0.8, -0.5, 0.3] - 1.0
    y = (rng.uniform(size=565) < 1 / (1 + np.exp(-u))).astype(int)
    peers, _ = local_holders(
        {"tax": (X, [f"c{j}" for j in range(60)])}, tmp_path, peer_class=RecordingPeer
    )
    clf = VerticalLogisticRegression(backend="ckks", learning_rate=1.0, max_iter=3, tol=None)
    clf.fit(X_bank, y, holders=peers)
    wire = peers["tax"].wire
    fetched = [raw for method, way, raw in wire if method == "GetBlob" and way == "response"]
    received = sum(len(raw) for _m, way, raw in wire if way == "response")
    assert clf.n_iter_ == 3
    assert received < 3 * 400_000  # 3 rounds of one ciphertext (was 3 × ~14 MB)
    assert 0 < sum(len(raw) for raw in fetched) < 3 * 400_000
    assert len(clf.epoch_seconds_) == clf.n_iter_ == 3
    assert all(s > 0 for s in clf.epoch_seconds_) and clf.setup_seconds_ > 0


# --------------------------------------------------------------------------------------------
# what results say about the keys


@pytest.mark.parametrize(
    ("n", "bits", "level"),
    [
        (8192, [60, 40, 40, 60], 128),
        (8192, [60, 49, 49, 60], 128),  # 218: the bound itself
        (8192, [60, 50, 49, 60], 0),  # 219: below 128-bit
        (8192, [50, 50, 50], 192),
        (16384, [60, 40, 40, 40, 40, 60], 192),
        (4096, [40, 20, 40], 128),
        (4096, [30, 20, 25], 192),
        (8192, [40, 38, 40], 256),
        (12345, [60], 0),
    ],
)
def test_security_bits_follow_the_he_standard_table(n, bits, level):
    assert ckks.security_bits(n, bits) == level


def test_results_state_ckks_parameters_not_a_key_size(tmp_path):
    clf = VerticalLogisticRegression(backend="ckks")
    params = clf.crypto_params()
    assert params == {
        "scheme": "ckks",
        "poly_modulus_degree": 8192,
        "coeff_mod_bit_sizes": [60, 40, 40, 60],
        "coeff_modulus_bits": 200,
        "scale_bits": 40,
        "slots": 4096,
        "security_bits": 128,
        "security_basis": "HomomorphicEncryption.org standard, classical, ternary secret",
    }
    assert "key_bits" not in params
    options = CryptoOptions(key_bits=3072)
    assert crypto_parameters("paillier", options) == {"scheme": "paillier-djn", "key_bits": 3072}
    rng = np.random.default_rng(4)
    X = rng.normal(size=(200, 3))
    X_bank = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    y = (X[:, 0] + rng.normal(size=200) > 0).astype(int)
    peers, _ = local_holders({"tax": (X, ["x0", "x1", "x2"])}, tmp_path)
    clf = VerticalLogisticRegression(backend="ckks", max_iter=2, tol=None).fit(
        X_bank, y, holders=peers
    )
    assert clf.crypto_ == params
    saved = json.loads(clf.to_json())
    assert saved["crypto"] == params
    assert VerticalLogisticRegression.from_json(clf.to_json()).crypto_ == params


def test_epoch_seconds_has_one_entry_per_epoch_paillier_and_divergence(tmp_path):
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 2))
    X_bank = pd.DataFrame(rng.normal(size=(200, 2)), columns=["a", "b"])
    y = (X[:, 0] + X_bank["a"] + rng.normal(size=200) > 0).astype(int)
    peers, _ = local_holders({"tax": (X, ["x0", "x1"])}, tmp_path / "ok")
    with small_keys():
        clf = VerticalLogisticRegression(
            backend="paillier", key_bits=1024, max_iter=4, tol=None, workers=1
        ).fit(X_bank, y, holders=peers)
    assert clf.n_iter_ == 4 and len(clf.epoch_seconds_) == 4
    assert clf.crypto_ == {"scheme": "paillier-djn", "key_bits": 1024}
    # a schedule that grows 6x per epoch diverges: the diverged epoch is timed too
    peers, _ = local_holders({"tax": (X * 50, ["x0", "x1"])}, tmp_path / "diverge")
    clf = VerticalLogisticRegression(
        backend="ckks",
        learning_rate=5.0,
        lr_schedule="step",
        lr_step_epochs=1,
        lr_decay=6.0,
        max_iter=12,
        tol=None,
    )
    with pytest.raises(DivergenceError):
        clf.fit(X_bank * 50, y, holders=peers)
    assert len(clf.epoch_seconds_) == clf.n_iter_ >= 1


def test_lineage_states_ckks_parameters_instead_of_a_key_size():
    from xinyidai.lineage.sections import _keys_row

    tags = {
        f"xinyidai.crypto.{k}": v
        for k, v in {
            "poly_modulus_degree": "8192",
            "coeff_mod_bit_sizes": "60,40,40,60",
            "coeff_modulus_bits": "200",
            "scale_bits": "40",
            "security_bits": "128",
        }.items()
    }
    name, value = _keys_row(tags)
    assert name == "CKKS parameters"
    assert value.startswith("N = 8192, coefficient moduli 60+40+40+60 = 200 bits, scale 2^40")
    assert "~128-bit security" in value
    assert _keys_row({"xinyidai.crypto.key_bits": "2048"}) == ("key size (bits)", "2048")
