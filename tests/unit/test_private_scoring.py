"""Private SecureBoost scoring's crypto core (models/secureboost/private_scoring.py), real CKKS.

Checks: the bank's decrypted block sums equal the plaintext (``fast``) totals to 1e-6 through
chains of 1, 2 and 3 holders; path credits add up to the leaf weight; sealed partial products
open only at the next holder, for the same enterprises; and the attack check - the bank's whole
decrypted view is the same for two holder masks that give the same total.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import tenseal as ts

from models.secureboost.private_scoring import (
    BankKeys,
    HolderChainKey,
    Layout,
    PrivateScoringError,
    chain_info,
    codes_aad,
    holder_step,
    load_public_context,
    path_credits,
)
from models.secureboost.tree import Tree, TreeNode


def _world(rng, n: int, n_trees: int, leaves_per_tree: int, n_holders: int):
    """Leaf values and per-holder masks whose AND keeps exactly one leaf per tree."""
    n_leaves = n_trees * leaves_per_tree
    reached = rng.integers(0, leaves_per_tree, size=(n, n_trees))
    truth = np.zeros((n, n_leaves), dtype=bool)
    for t in range(n_trees):
        truth[np.arange(n), t * leaves_per_tree + reached[:, t]] = True
    masks = []
    for _ in range(n_holders):
        masks.append(truth | (rng.random((n, n_leaves)) < 0.5))
    # make the AND exact: every wrong leaf is ruled out by at least one holder
    wrong = ~truth & np.logical_and.reduce(masks)
    masks[0] &= ~wrong
    return truth, masks


def _run_chain(keys: BankKeys, layout: Layout, values: np.ndarray, masks, *, seal: bool) -> bytes:
    ctx = load_public_context(keys.public)
    payload = keys.encrypt(layout, values)
    chain = [HolderChainKey() for _ in masks]
    codes = [f"e{i}" for i in range(values.shape[0])]
    aad = codes_aad(codes, layout, "req-1")
    for k, mask in enumerate(masks):
        if k and seal:
            payload = chain[k].open(
                chain[k - 1].public, chain_info("m/1", f"h{k - 1}", f"h{k}"), aad, payload
            )
        payload = holder_step(ctx, layout, payload, mask, last=k == len(masks) - 1)
        if k < len(masks) - 1 and seal:
            payload = chain[k].seal(
                chain[k + 1].public, chain_info("m/1", f"h{k}", f"h{k + 1}"), aad, payload
            )
    return payload


@pytest.mark.parametrize("n_holders", [1, 2, 3])
def test_private_totals_equal_the_fast_totals_through_a_chain_of_holders(n_holders):
    rng = np.random.default_rng(n_holders)
    n, n_trees, per_tree = 9, 50, 16  # 800 leaves: the benchmark's model shape
    truth, masks = _world(rng, n, n_trees, per_tree, n_holders)
    keys = BankKeys(n_holders)
    layout = Layout(n_leaves=n_trees * per_tree, n_blocks=1 + n_holders, slots=keys.slots)
    values = rng.uniform(-0.6, 0.6, size=(n, layout.n_blocks, layout.n_leaves))
    payload = _run_chain(keys, layout, values, masks, seal=True)
    got = keys.totals(layout, payload, n)
    fast = (values * truth[:, None, :]).sum(axis=2)  # the fast path: AND of plaintext masks
    assert got.shape == (n, layout.n_blocks)
    assert np.abs(got - fast).max() < 1e-6


def test_path_credits_add_up_to_the_leaf_weight():
    nodes = {
        0: TreeNode(0, False, owner="tax"),
        1: TreeNode(1, False, owner="bank"),
        2: TreeNode(2, True, weight=0.3, n_samples=10),
        3: TreeNode(3, True, weight=-0.2, n_samples=30),
        4: TreeNode(4, True, weight=0.5, n_samples=5),
    }
    tree = Tree(nodes=nodes)
    credits, root = path_credits([tree], ["bank", "tax"])
    weights = tree.leaf_weights()
    assert np.allclose(root + credits["bank"] + credits["tax"], weights)
    assert credits["bank"][tree.leaves().index(2)] == 0.0  # leaf 2 hangs off the tax split only
    assert credits["tax"].any() and credits["bank"].any()


def test_a_sealed_product_opens_only_at_the_next_holder_for_the_same_enterprises():
    a, b, bank = HolderChainKey(), HolderChainKey(), HolderChainKey()
    info = chain_info("m/1", "tax", "utility")
    layout = Layout(n_leaves=8, n_blocks=2, slots=4096)
    aad = codes_aad(["e1"], layout, "r")
    sealed = a.seal(b.public, info, aad, b"partial product")
    assert b.open(a.public, info, aad, sealed) == b"partial product"
    with pytest.raises(PrivateScoringError, match="does not open"):
        bank.open(a.public, info, aad, sealed)  # the relaying bank cannot
    with pytest.raises(PrivateScoringError, match="does not open"):
        b.open(a.public, info, codes_aad(["e2"], layout, "r"), sealed)


def test_a_holder_refuses_vectors_that_do_not_fit_the_layout():
    keys = BankKeys(1)
    layout = Layout(n_leaves=8, n_blocks=2, slots=keys.slots)
    payload = keys.encrypt(layout, np.zeros((1, 2, 8)))
    ctx = load_public_context(keys.public)
    with pytest.raises(PrivateScoringError, match="scoring vectors"):
        holder_step(ctx, layout, payload, np.ones((1, 9), dtype=bool), last=True)
    with pytest.raises(PrivateScoringError, match="below"):
        keys.encrypt(layout, np.full((1, 2, 8), 100.0))
    with pytest.raises(PrivateScoringError, match="secret key"):
        load_public_context(bytes(keys.ctx.serialize(save_secret_key=True, save_galois_keys=False)))


def test_attack_check_the_banks_whole_view_is_the_same_for_masks_with_equal_totals():
    """Two holder masks of one tree reaching leaves of equal weight give the same total; the
    bank decrypts EVERY slot of the answer and tries to tell the masks apart from the slot of
    leaf 0. Fast mode (the mask itself) tells them apart every time; private mode's slots must
    carry nothing: the mean of the slot differs between the masks by no more than chance."""
    keys = BankKeys(1)
    layout = Layout(n_leaves=4, n_blocks=1, slots=keys.slots)
    ctx = load_public_context(keys.public)
    values = np.array([[[0.25, 0.25, -0.4, 0.7]]])  # leaves 0 and 1 weigh the same
    mask_a = np.array([[True, False, False, False]])
    mask_b = np.array([[False, True, False, False]])

    def view(mask):
        out = holder_step(ctx, layout, keys.encrypt(layout, values), mask, last=True)
        from federation.crypto.ckks import unpack_vectors

        (item,) = unpack_vectors(out, "answer")
        slots = np.asarray(ts.ckks_vector_from(keys.ctx, item).decrypt())
        return slots[0], slots[: layout.block].sum()

    runs = 40
    a = np.array([view(mask_a) for _ in range(runs)])
    b = np.array([view(mask_b) for _ in range(runs)])
    assert np.allclose(a[:, 1], 0.25, atol=1e-6) and np.allclose(b[:, 1], 0.25, atol=1e-6)
    # fast mode's view: the mask bit of leaf 0, a perfect distinguisher
    assert mask_a[0, 0] != mask_b[0, 0]
    # private mode: leaf 0's slot is 0.25 + share (a) or 0 + share (b); shares are uniform in
    # ±2^20, so a threshold between the two can do no better than chance
    threshold = 0.125
    accuracy = ((a[:, 0] > threshold).sum() + (b[:, 0] <= threshold).sum()) / (2 * runs)
    assert 0.2 < accuracy < 0.8
    spread = np.concatenate([a[:, 0], b[:, 0]]).std()
    assert spread > 2.0**18  # the slots are masked, not the values


def test_a_versions_serving_mode_comes_from_its_registration_tag():
    from parties.bank.served import TAG_SERVING_MODE, ScoringError, serving_mode_of

    assert serving_mode_of({}, "m/1") == "fast"  # registered before serving modes existed
    assert serving_mode_of({TAG_SERVING_MODE: "fast"}, "m/1") == "fast"
    assert serving_mode_of({TAG_SERVING_MODE: "private"}, "m/2") == "private"
    with pytest.raises(ScoringError, match="unknown serving mode 'turbo'"):
        serving_mode_of({TAG_SERVING_MODE: "turbo"}, "m/3")


def test_registration_refuses_an_unknown_serving_mode_before_logging_anything():
    from types import SimpleNamespace

    from federation.errors import ConfigError
    from xinyidai.tracking.register import log_registration

    with pytest.raises(ConfigError, match="serving_mode 'turbo'"):
        log_registration(SimpleNamespace(), SimpleNamespace(), serving_mode="turbo")


def test_scores_stay_exact_when_the_encryptions_of_zero_come_from_a_reserve():
    """The serving path: the bank encrypts as (ready zero + plaintext), holders re-randomise
    with ready zeros made by a niced worker process; totals still equal the plaintext ones,
    and no zero is handed out twice."""
    from federation.crypto.ckks import unpack_vectors
    from models.secureboost.private_scoring import ZeroReserve

    rng = np.random.default_rng(5)
    n, n_trees, per_tree = 6, 20, 8
    truth, masks = _world(rng, n, n_trees, per_tree, 2)
    keys = BankKeys(2)
    layout = Layout(n_leaves=n_trees * per_tree, n_blocks=3, slots=keys.slots)
    width = layout.per_vector * layout.lane
    # nice=0 here (the nodes use 19): a loaded test machine must not starve the worker
    keys.zeros = ZeroReserve(keys.public, capacity=4, nice=0)
    holders = [ZeroReserve(keys.public, capacity=4, nice=0) for _ in masks]
    for reserve in [keys.zeros, *holders]:
        reserve.prepare(width)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and min(len(r) for r in [keys.zeros, *holders]) < 2:
        time.sleep(0.2)
    assert min(len(r) for r in [keys.zeros, *holders]) >= 2, "the worker made no zeros"
    ctx = load_public_context(keys.public)
    values = rng.uniform(-0.6, 0.6, size=(n, layout.n_blocks, layout.n_leaves))
    payload = keys.encrypt(layout, values)
    first = [bytes(x) for x in unpack_vectors(payload, "first")]
    for k, mask in enumerate(masks):
        payload = holder_step(ctx, layout, payload, mask, last=k == 1, zeros=holders[k])
    got = keys.totals(layout, payload, n)
    assert np.abs(got - (values * truth[:, None, :]).sum(axis=2)).max() < 1e-6
    assert keys.zeros.taken >= 1 and all(r.taken >= 1 for r in holders)
    # a second encryption of the same values is another ciphertext (fresh zero each time)
    again = [bytes(x) for x in unpack_vectors(keys.encrypt(layout, values), "again")]
    assert first != again
    zero = holders[0].take(ctx, width)
    if zero is not None:  # what the reserve hands out decrypts to zero
        assert (
            np.abs(np.asarray(ts.ckks_vector_from(keys.ctx, zero.serialize()).decrypt())).max()
            < 1e-6
        )
    for reserve in [keys.zeros, *holders]:
        reserve.close()


def test_a_reserve_keeps_at_most_two_widths_whatever_the_requests_ask():
    """A bank chooses the vector width (its layout) per request; the holder's reserve must not
    grow with the number of widths asked (memory a peer could make it hold)."""
    from models.secureboost.private_scoring import ZeroReserve

    reserve = ZeroReserve(b"not used: capacity 0 makes nothing", capacity=0)
    for width in (100, 200, 300, 400, 200):
        reserve.prepare(width)
        assert reserve.take(None, width) is None  # nothing made: the caller encrypts inline
    assert reserve.widths == [400, 200]
    assert reserve.missed == 5 and reserve.taken == 0


def test_attack_check_1000_private_scores_do_not_narrow_a_holder_feature_interval():
    """Attack check (docs/scoring.md, "who learns what"): one enterprise, a holder feature x
    (value 0.37, unknown to the bank; prior: uniform on [0, 1]), scored under 1,000 different
    honest models. Model k is a tree whose root is the holder's split ``x < θ_k`` (θ_k uniform)
    over two leaves of equal weight a_k (the bank's own splits below are folded into a_k), so
    the score itself says nothing about the side and whatever narrows x must come from the
    protocol. The 1,000 scores run as 1,000 lanes of one CKKS vector (the batch layout).

    Method: for each model the bank guesses the side from everything it decrypts (the best
    single-slot test: left if the left leaf's slot exceeds a_k / 2), then takes as its interval
    the x in a grid of [0, 1] whose implied sides agree with its guesses at least as well as
    the best x, minus 0.15 (a slack far above chance at 1,000 models). With the ``fast`` path's
    view (the holder's reach bits) the interval closes around 0.37 (width < 0.35); with the
    private view it must stay the prior (width > 0.8) and the guesses must be at chance."""
    rng = np.random.default_rng(1000)
    x_true, n_models = 0.37, 1000
    theta = rng.uniform(0.0, 1.0, n_models)
    weight = rng.uniform(-0.5, 0.5, n_models)
    left = x_true < theta
    keys = BankKeys(1)
    layout = Layout(n_leaves=2, n_blocks=1, slots=keys.slots)
    assert layout.per_vector >= n_models
    values = np.stack([weight, weight], axis=1)[:, None, :]  # (models, 1 block, 2 leaves)
    reach = np.stack([left, ~left], axis=1)  # the holder's mask, one lane per model
    out = holder_step(
        load_public_context(keys.public), layout, keys.encrypt(layout, values), reach, last=True
    )
    from federation.crypto.ckks import unpack_vectors

    slots = np.concatenate(
        [np.asarray(ts.ckks_vector_from(keys.ctx, it).decrypt()) for it in unpack_vectors(out, "a")]
    )
    lanes = slots[: n_models * layout.lane].reshape(n_models, 2)
    assert np.abs(lanes.sum(axis=1) - weight).max() < 1e-6  # each score is right

    grid = np.linspace(0.0, 1.0, 2001)
    implied = grid[:, None] < theta[None, :]  # (grid, models): left for this x?

    def interval(guess_left: np.ndarray) -> float:
        agree = (implied == guess_left[None, :]).mean(axis=1)
        kept = grid[agree >= agree.max() - 0.15]
        return float(kept.max() - kept.min())

    fast_guess = reach[:, 0]  # fast mode: the reach bit itself
    assert interval(fast_guess) < 0.35
    private_guess = np.where(weight > 0, lanes[:, 0] > weight / 2, lanes[:, 0] < weight / 2)
    accuracy = float((private_guess == left).mean())
    assert 0.44 < accuracy < 0.56  # chance, within ~4 standard deviations
    assert interval(private_guess) > 0.8
