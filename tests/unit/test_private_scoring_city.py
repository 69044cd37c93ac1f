"""Private SecureBoost scoring equals the ``fast`` path for every enterprise of the demo city
(``xinyidai demo``'s city: 2,000 enterprises, seed 7), with chains of 1, 2 and 3 holders.

Why at the protocol level: the demo federation has two holders; chains of one and three need
other party layouts, which the plaintext reference trainer gives in a second (the tax and
utility columns as one holder; the utility columns split in two for three). What runs is
the serving code: ``path_credits``, ``Layout``, ``BankKeys`` and ``holder_step`` through a
sealed chain, against the fast path's AND of per-party reach masks (``parties.bank.scoring``'s
``combine`` over a ``ServedModel``-like view). Real CKKS, the serving parameters.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from models.binning import QuantileBinner
from models.secureboost.private_scoring import (
    BankKeys,
    HolderChainKey,
    Layout,
    chain_info,
    codes_aad,
    holder_step,
    load_public_context,
    path_credits,
)
from models.secureboost.reference import (
    BoostParams,
    PartyBins,
    PlaintextSecureBoost,
    goes_left,
    sigmoid,
)
from models.secureboost.tree import leaf_reachability
from parties.data.encoding import encode_table
from parties.data.schema import schema_for
from parties.data.synth import synthesize_city

MAX_BIN = 16
PARAMS = dict(n_trees=8, max_depth=3, learning_rate=0.3, max_bin=MAX_BIN, random_state=0)


@pytest.fixture(scope="module")
def city():
    """Every enterprise the three demo tables share, each party's encoded columns."""
    tables = synthesize_city(n_enterprises=2000, seed=7)
    frames = {}
    for role, table in tables.items():
        schema = schema_for(role)
        indexed = table.set_index("uscc")
        frames[role] = (indexed, schema)
    common = sorted(
        set(frames["bank"][0].index) & set(frames["tax"][0].index) & set(frames["utility"][0].index)
    )
    out = {}
    for role, (indexed, schema) in frames.items():
        values, names = encode_table(indexed.loc[common], schema)
        out[role] = (values, names)
    y = frames["bank"][0].loc[common, frames["bank"][1].label_column].to_numpy(dtype=float)
    keep = ~np.isnan(y)
    return SimpleNamespace(
        codes=[c for c, k in zip(common, keep, strict=True) if k],
        parts={r: (v[keep], n) for r, (v, n) in out.items()},
        y=y[keep],
    )


def _parties(city, n_holders: int) -> list[PartyBins]:
    """The bank, then ``n_holders`` holders made of the demo's tax and utility columns."""
    bank = city.parts["bank"][0]
    tax, util = city.parts["tax"][0], city.parts["utility"][0]
    half = util.shape[1] // 2
    holders = {
        1: [("holders", np.hstack([tax, util]))],
        2: [("tax", tax), ("utility", util)],
        3: [("tax", tax), ("utility-a", util[:, :half]), ("utility-b", util[:, half:])],
    }[n_holders]
    out = []
    for name, values in [("bank", bank), *holders]:
        binner = QuantileBinner(max_bin=MAX_BIN)
        out.append(PartyBins(name, binner.fit_transform(values), binner.n_bins_))
    return out


@pytest.mark.parametrize("n_holders", [1, 2, 3])
def test_private_equals_fast_for_every_enterprise_of_the_demo_city(city, n_holders):
    from parties.bank.scoring import combine, private_scores

    parties = _parties(city, n_holders)
    ref = PlaintextSecureBoost(BoostParams(**PARAMS)).fit(parties, city.y)
    names = [p.name for p in parties]
    holders = names[1:]
    used = {node.owner for t in ref.trees_ for node in t.nodes.values() if not node.is_leaf}
    assert set(holders) <= used, f"every holder must own a split here ({used})"
    n = len(city.codes)
    by_name = {p.name: p for p in parties}
    # each party's reach over every leaf (global order), as its ScoreReach would answer
    reach = {p: [] for p in names}
    for tree in ref.trees_:
        for p in names:
            go_left = {
                i: goes_left(by_name[p].bins[:, node.feature], node.threshold)
                for i, node in tree.nodes.items()
                if not node.is_leaf and node.owner == p
            }
            reach[p].append(leaf_reachability(tree.leaves(), go_left, n))
    reach_all = {p: np.hstack(r) for p, r in reach.items()}
    weights = np.concatenate([t.leaf_weights() for t in ref.trees_])
    samples = np.concatenate(
        [[float(max(t.nodes[leaf].n_samples, 1)) for leaf in t.leaves()] for t in ref.trees_]
    )
    starts = np.cumsum([0] + [len(t.leaves()) for t in ref.trees_[:-1]])
    served = SimpleNamespace(
        model_id="city/1",
        weights=weights,
        samples=samples,
        tree_starts=starts,
        base_score=ref.base_score_,
        owners=holders,
    )
    fast = combine(served, reach_all)
    assert np.allclose(fast.margin, ref.decision_function(parties), atol=1e-12)

    # the private chain, as the bank node and the holders run it
    credits, root_total = path_credits(ref.trees_, names)
    values_per_leaf = np.stack([weights, *(credits[h] for h in holders)])
    keys = BankKeys(n_holders)
    layout = Layout(n_leaves=weights.size, n_blocks=1 + n_holders, slots=keys.slots)
    values = values_per_leaf[None, :, :] * reach_all["bank"][:, None, :]
    payload = keys.encrypt(layout, values)
    ctx = load_public_context(keys.public)
    chain = [HolderChainKey() for _ in holders]
    aad = codes_aad(city.codes, layout, "city-req")
    for k, h in enumerate(holders):
        if k:
            payload = chain[k].open(
                chain[k - 1].public, chain_info("city/1", holders[k - 1], h), aad, payload
            )
        payload = holder_step(ctx, layout, payload, reach_all[h], last=k == n_holders - 1)
        if k + 1 < n_holders:
            payload = chain[k].seal(
                chain[k + 1].public, chain_info("city/1", h, holders[k + 1]), aad, payload
            )
    totals = keys.totals(layout, payload, n)
    private = private_scores(served, np.column_stack([totals, np.full(n, root_total)]))
    assert n > 600  # the demo city's enterprises all three parties hold
    assert np.abs(private.margin - fast.margin).max() < 1e-6
    assert np.abs(private.probability - sigmoid(fast.margin)).max() < 1e-6
    # reasons: the path credits telescope to the weight reached, per enterprise
    own = private.contributions["bank"]
    summed = own + sum(private.contributions[h] for h in holders) + root_total
    assert np.abs(summed - (fast.margin - ref.base_score_)).max() < 1e-6
