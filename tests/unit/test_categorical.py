"""Categorical features (issue 13, part 1): encoding, category bins, SecureBoost's native
set splits at the bank and at a holder (real Paillier, in-process twin), and AUC against
LightGBM's native categorical handling on the same data.

The synthetic set has a known signal that an ordered split cannot catch in one cut: risk by
region is non-monotone in any code order, so a model must group regions as sets.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from carriers import RecordingPeer, small_keys

from models.binning import MISSING_BIN, ConstantFeatureError, QuantileBinner
from models.metrics import roc_auc
from models.secureboost import PartyBins, PlaintextSecureBoost, SecureBoostClassifier
from models.secureboost.passive import local_holders
from models.secureboost.reference import BoostParams, goes_left
from parties.data.encoding import CategoryError, category_code, encode, encode_categories
from parties.data.schema import generic_schema
from protos import secureboost_pb2 as pb

KEY_BITS = 1024
REGIONS = [f"region-{i:02d}" for i in range(12)]
# Risk per region, shuffled so that no order of the names (or of their codes) is monotone.
REGION_RISK = np.array([1.2, -1.0, 0.9, -0.8, 1.4, -1.3, 0.1, 1.0, -1.1, 0.6, -0.4, 1.1])
CHANNELS = ["branch", "online", "broker", "partner"]
CHANNEL_RISK = np.array([-0.6, 0.5, 0.9, -0.4])


def synthetic(n: int = 2400, seed: int = 11) -> dict[str, pd.DataFrame]:
    """Bank: a numeric and a categorical column and the label; tax holder: a 12-region text
    column (padded, a few missing, two rare regions) and a numeric one."""
    rng = np.random.default_rng(seed)
    region = rng.integers(0, len(REGIONS), n)
    channel = rng.integers(0, len(CHANNELS), n)
    x_bank = rng.normal(size=n)
    x_tax = rng.normal(size=n)
    logit = REGION_RISK[region] + CHANNEL_RISK[channel] + 0.4 * x_bank + 0.3 * x_tax - 0.3
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    region_text = np.array([f"  {REGIONS[r]} " for r in region], dtype=object)
    region_text[rng.random(n) < 0.03] = None
    rare = rng.choice(n, 6, replace=False)
    region_text[rare[:3]] = "island-a"
    region_text[rare[3:]] = "island-b"
    bank = pd.DataFrame({"x_bank": x_bank, "channel": [CHANNELS[c] for c in channel], "y": y})
    tax = pd.DataFrame({"region": region_text, "x_tax": x_tax})
    return {"bank": bank, "tax": tax}


@pytest.fixture(scope="module")
def data() -> dict[str, object]:
    frames = synthetic()
    bank = encode_categories(frames["bank"], ["channel"], features=["x_bank", "channel"])
    tax = encode_categories(frames["tax"], ["region"])
    y = frames["bank"]["y"].to_numpy()
    n = y.size
    test = np.zeros(n, dtype=bool)
    test[np.random.default_rng(3).choice(n, n // 4, replace=False)] = True
    return {"frames": frames, "bank": bank, "tax": tax, "y": y, "test": test}


# --------------------------------------------------------------------------------------------
# encoding


def test_encode_categories_trims_codes_stably_and_keeps_missing_apart():
    df = pd.DataFrame({"housing": [" own", "rent ", None, "own", "  "], "n": [1, 2, 3, 4, 5]})
    out = encode_categories(df, ["housing"])
    assert out.kinds == ["categorical", "numeric"]
    codes = out.values[:, 0]
    assert codes[0] == codes[3] == category_code("own")
    assert codes[1] == category_code("rent") != codes[0]
    assert np.isnan(codes[2]) and np.isnan(codes[4])  # None and blank are missing
    assert out.categories == {"housing": {"own": category_code("own"), "rent": codes[1]}}
    # the same text gets the same code in another table (scoring a new file needs no mapping)
    again = encode_categories(pd.DataFrame({"housing": ["rent"]}), ["housing"])
    assert again.values[0, 0] == codes[1]
    assert 0 <= category_code("x" * 500) < 2**31  # a valid LightGBM category value


def test_text_in_an_undeclared_column_names_it_and_says_what_to_do():
    df = pd.DataFrame({"housing": ["own", "rent"], "age": [30, 40]})
    with pytest.raises(CategoryError, match=r"column 'housing' holds text: declare it under"):
        encode_categories(df, [])
    with pytest.raises(CategoryError, match="'purpose'"):
        encode_categories(df, ["purpose"])


def test_schema_declares_categorical_columns_and_encode_reports_kinds():
    schema = generic_schema(
        "bank",
        id_column="id",
        id_kind="plain",
        features=["age", "housing"],
        label_column="y",
        categorical=["housing"],
    )
    assert schema.categorical_features == ("housing",)
    table = pd.DataFrame({"age": [30.0, 40.0], "housing": ["own", "rent"], "y": [0.0, 1.0]})
    out = encode(table, schema)
    assert out.names == ["age", "housing"] and out.categorical == ["housing"]
    assert out.values[1, 1] == category_code("rent")
    with pytest.raises(Exception, match="not features"):
        generic_schema("bank", id_column="id", id_kind="plain", features=["a"], categorical=["b"])


# --------------------------------------------------------------------------------------------
# category bins


def test_category_bins_missing_rare_other_and_unseen():
    codes = np.array([5.0] * 20 + [9.0] * 15 + [7.0] * 3 + [np.nan] * 2)[:, None]
    binner = QuantileBinner(max_bin=8, min_category_count=10).fit(codes, categorical=[0])
    assert binner.categorical_ == [True]
    assert binner.n_bins_.tolist() == [4]  # missing, 5, 9, other
    bins = binner.transform(np.array([[5.0], [9.0], [7.0], [np.nan], [123.0]]))[:, 0]
    other = binner.other_bin(0)
    assert bins.tolist() == [1, 2, other, MISSING_BIN, other]  # rare 7 and unseen 123 → other
    back = QuantileBinner.from_dict(binner.to_dict())
    assert back.transform(np.array([[9.0], [123.0]]))[:, 0].tolist() == [2, other]
    with pytest.raises(ConstantFeatureError, match="one category group"):
        QuantileBinner().fit(np.full((30, 1), 4.0), categorical=[0])


def test_category_bins_keep_the_most_frequent_within_max_bin():
    codes = np.repeat(np.arange(10.0), np.arange(10, 20))[:, None]  # code 9 most frequent
    binner = QuantileBinner(max_bin=4, min_category_count=1).fit(codes, categorical=[0])
    assert binner.categories_[0].tolist() == [7.0, 8.0, 9.0]
    assert binner.n_bins_.tolist() == [5]


def test_goes_left_reads_a_bitmask_for_categorical_splits():
    bins = np.array([0, 1, 2, 3, 4])
    assert goes_left(bins, 2).tolist() == [True, True, True, False, False]
    assert goes_left(bins, -((1 << 0) | (1 << 3))).tolist() == [True, False, False, True, False]


# --------------------------------------------------------------------------------------------
# SecureBoost: federated = reference, and AUC against LightGBM


PARAMS = {
    "n_trees": 8,
    "max_depth": 3,
    "learning_rate": 0.3,
    "max_bin": 16,
    "min_holder_node_samples": 20,
    "first_tree_bank_only": False,
    "random_state": 0,
}


def _binned(values: np.ndarray, categorical: list[int]) -> tuple[QuantileBinner, np.ndarray]:
    binner = QuantileBinner(max_bin=PARAMS["max_bin"])
    return binner, binner.fit_transform(values, categorical=categorical)


@pytest.fixture(scope="module")
def federated(data, tmp_path_factory):
    """One federated job on the training rows (the holder keeps every row; the job names the
    training ones): the bank's channel and the tax holder's region are categorical; every
    message recorded at the carrier."""
    train = ~data["test"]
    bank, tax = data["bank"], data["tax"]
    X_bank = pd.DataFrame(bank.values[train], columns=bank.names)
    with small_keys():
        peers, servicers = local_holders(
            {"tax": (tax.values, tax.names)},
            tmp_path_factory.mktemp("cat"),
            peer_class=RecordingPeer,
            categorical={"tax": tax.categorical},
        )
        clf = SecureBoostClassifier(**PARAMS, key_bits=KEY_BITS, workers=1)
        clf.fit(
            X_bank,
            data["y"][train],
            holders=peers,
            alignment_rows=train,
            categorical=bank.categorical,
        )
    return clf, peers, servicers


def test_federated_trees_equal_the_plaintext_reference(data, federated):
    clf, _, servicers = federated
    train = ~data["test"]
    bank, tax = data["bank"], data["tax"]
    _, bank_bins = _binned(bank.values[train], bank.categorical_indices)
    tax_binner, tax_bins = _binned(tax.values[train], tax.categorical_indices)
    ref = PlaintextSecureBoost(BoostParams(**PARAMS)).fit(
        [
            PartyBins("bank", bank_bins, clf.binner_.n_bins_, bank.categorical_indices),
            PartyBins("tax", tax_bins, tax_binner.n_bins_, tax.categorical_indices),
        ],
        data["y"][train],
    )
    holder_model = servicers["tax"].model("bank", clf.job_id_)
    categorical_splits = {"bank": 0, "tax": 0}
    for t, (fed, plain) in enumerate(zip(clf.trees_, ref.trees_, strict=True)):
        assert sorted(fed.nodes) == sorted(plain.nodes), f"tree {t} shape"
        for i, node in plain.nodes.items():
            got = fed.nodes[i]
            assert got.is_leaf == node.is_leaf and got.owner == node.owner, (t, i)
            if node.is_leaf:
                assert got.weight == pytest.approx(node.weight, rel=1e-9, abs=1e-12)
            elif node.owner == "bank":
                assert (got.feature, got.threshold) == (node.feature, node.threshold)
            else:  # the bank does not know it; the holder keeps the same split
                assert (got.feature, got.threshold) == (-1, -1)
                assert holder_model.splits[t][i] == (node.feature, node.threshold)
            if not node.is_leaf and node.threshold < 0:
                categorical_splits[node.owner] += 1
    # both parties made set splits: the test exercises the native path, not ordinal bins
    assert categorical_splits["bank"] > 0 and categorical_splits["tax"] > 0


def test_auc_within_tolerance_of_lightgbm_native_categoricals(data, federated):
    lgb = pytest.importorskip("lightgbm")
    clf, peers, _ = federated
    frames, test = data["frames"], data["test"]
    bank = data["bank"]
    X_test = pd.DataFrame(bank.values[test], columns=bank.names)
    fed = clf.predict_proba(X_test, holders=peers, rows=np.flatnonzero(test))[:, 1]
    y = data["y"]
    frame = pd.DataFrame(
        {
            "x_bank": frames["bank"]["x_bank"],
            "channel": frames["bank"]["channel"].astype("category"),
            "region": frames["tax"]["region"].str.strip().astype("category"),
            "x_tax": frames["tax"]["x_tax"],
        }
    )
    model = lgb.LGBMClassifier(
        n_estimators=PARAMS["n_trees"],
        max_depth=PARAMS["max_depth"],
        num_leaves=2 ** PARAMS["max_depth"],
        learning_rate=PARAMS["learning_rate"],
        reg_lambda=1.0,
        min_child_samples=20,
        max_bin=PARAMS["max_bin"],
        verbose=-1,
    )
    model.fit(frame[~test], y[~test])
    lgb_auc = roc_auc(y[test], model.predict_proba(frame[test])[:, 1])
    fed_auc = roc_auc(y[test], fed)
    ordinal_auc = _ordinal_auc(data)
    # federated native splits: as good as LightGBM's (within 0.02) and better than splitting
    # the same categories as ordered codes (the signal is non-monotone in any code order)
    print(f"AUC federated {fed_auc:.4f} lightgbm {lgb_auc:.4f} ordinal codes {ordinal_auc:.4f}")
    assert fed_auc >= lgb_auc - 0.02, (fed_auc, lgb_auc)
    assert fed_auc > ordinal_auc + 0.01, (fed_auc, ordinal_auc)


def _ordinal_auc(data) -> float:
    """The same trees on the same bins with categories split as ordered codes (reference)."""
    train, test = ~data["test"], data["test"]
    bank, tax = data["bank"], data["tax"]
    parties_train, parties_test = [], []
    for name, enc in (("bank", bank), ("tax", tax)):
        binner, bins = _binned(enc.values[train], enc.categorical_indices)
        parties_train.append(PartyBins(name, bins, binner.n_bins_))
        parties_test.append(PartyBins(name, binner.transform(enc.values[test]), binner.n_bins_))
    ref = PlaintextSecureBoost(BoostParams(**PARAMS)).fit(parties_train, data["y"][train])
    return roc_auc(data["y"][test], ref.decision_function(parties_test))


# --------------------------------------------------------------------------------------------
# what the bank sees, and a holder's checks


def test_the_wire_carries_shuffled_category_ids_never_codes(data, federated):
    _clf, peers, _ = federated
    wire = peers["tax"].wire
    sent = b"".join(raw for _, _, raw in wire)
    for text, code in data["tax"].categories["region"].items():
        assert text.encode() not in sent
        for fmt in ("<d", ">d"):  # the holder's values are float64 codes
            assert struct.pack(fmt, float(code)) not in sent
    sizes = []
    for method, kind, raw in wire:
        if method.endswith("Histograms") and kind == "response":
            for node in pb.SecureBoostHistogramReply.FromString(raw).nodes:
                sizes += [len(g.category_ids) for g in node.groups]
    # the root's group: 12 regions + missing + "other" (the two rare islands merged)
    assert sizes and max(sizes) == 14


def test_holder_refuses_category_ids_it_did_not_give(data, tmp_path):
    tax = data["tax"]
    with small_keys():
        peers, servicers = local_holders(
            {"tax": (tax.values, tax.names)}, tmp_path, categorical={"tax": tax.categorical}
        )
        from models.secureboost.holder_state import TreeState

        state = TreeState(
            tree=0,
            rows=np.arange(3),
            position=np.arange(3),
            ciphertexts=[],
            bins=np.zeros((3, 1), dtype=np.int32),
            subsample=np.ones(3, dtype=bool),
        )
        state.categories[0] = {11: (0, 1), 12: (0, 2), 13: (1, 3)}
        chosen = servicers["tax"]._chosen
        request = pb.SecureBoostApplySplit(node=0, category_ids=[11])
        assert chosen(state, request, {}) == (0, -(1 << 1))
        for bad, why in (
            ([11, 13], "more than one group"),
            ([99], "unknown"),
            ([11, 12], "leave a category on the right"),
        ):
            with pytest.raises(Exception, match=why):
                chosen(state, pb.SecureBoostApplySplit(node=0, category_ids=bad), {})
    del peers


# --------------------------------------------------------------------------------------------
# WOE: each category (or merged group) is a bin, never merged for monotonicity


def test_federated_woe_gives_each_category_its_own_bin(data, tmp_path):
    from models.woe import FederatedWoe, WoeEncoder
    from models.woe.passive import local_woe_holders

    bank, tax, y = data["bank"], data["tax"], data["y"]
    with small_keys():
        peers, servicers = local_woe_holders(
            {"tax": (tax.values, tax.names)}, tmp_path, categorical={"tax": tax.categorical}
        )
        fw = FederatedWoe(key_bits=KEY_BITS, workers=1, max_bin=16, job_id="woe-cat").fit(
            y,
            holders=peers,
            X_bank=bank.values,
            bank_feature_names=bank.names,
            bank_categorical=bank.categorical_indices,
        )
    region = fw.tables_["tax"][0]
    # 12 regions (≈200 rows each) + missing (≈70) + "other" (the 6 island rows, < 20, go to
    # "other", which is then too small and joins the smallest region): 13 bins, no order merge
    assert region.direction == "unconstrained"
    assert region.n_bins == 13
    ref = WoeEncoder(max_bin=16).fit(tax.values, y, categorical=tax.categorical_indices)
    np.testing.assert_allclose(region.woe, ref.tables_[0].woe, rtol=1e-9)
    channel = fw.tables_["bank"][bank.names.index("channel")]
    assert channel.direction == "unconstrained" and channel.n_bins == 5  # 4 + empty missing
    # the holder's own WOE values: a region's value is its table's, an unseen region "other"'s
    model = servicers["tax"].woe_model("bank", "woe-cat")
    risky, safe = REGIONS[int(np.argmax(REGION_RISK))], REGIONS[int(np.argmin(REGION_RISK))]
    probe = np.array(
        [[category_code(risky), 0.0], [category_code(safe), 0.0], [category_code("new"), 0.0]]
    )
    woe = model.transform(probe)[:, 0]
    assert woe[0] > 0.5 > -0.5 > woe[1]  # WOE > 0 = riskier than average
    assert np.isfinite(woe[2])


def test_unseen_and_rare_categories_take_the_same_path_at_the_holder(data, federated):
    clf, _, servicers = federated
    tax = data["tax"]
    rows = np.array(
        [
            [category_code("island-a"), 0.0],  # rare in training: "other"
            [category_code("never-seen"), 0.0],  # unseen: "other" too
            [category_code("region-00"), 0.0],
        ]
    )
    reach, n_leaves = servicers["tax"].score_reach("bank", clf.job_id_, rows, tax.names, [0, 1, 2])
    assert n_leaves > 0
    assert np.array_equal(reach[0], reach[1])


def test_one_hot_for_linear_models():
    from parties.data.encoding import one_hot, one_hot_frame

    codes = np.array([1.0] * 12 + [2.0] * 10 + [3.0] * 2 + [np.nan] * 3)
    values = np.column_stack([codes, np.arange(codes.size, dtype=float)])
    out, names = one_hot(values, ["housing", "age"], ["housing"])
    assert names == ["housing=1", "housing=2", "housing=other", "age"]
    assert out[:, :3].sum(axis=1).tolist() == [1.0] * 24 + [0.0] * 3  # missing: all zero
    assert out[22:24, 2].tolist() == [1.0, 1.0]  # the rare category → other
    np.testing.assert_array_equal(out[:, 3], values[:, 1])
    frame = pd.DataFrame(values, columns=["housing", "age"])
    assert list(one_hot_frame(frame).columns) == ["housing", "age"]  # no attrs: unchanged
    frame.attrs["categorical"] = ["housing"]
    assert list(one_hot_frame(frame).columns) == names


UCI = Path(__file__).resolve().parents[3] / "shared" / "data" / "default_credit"


def test_public_credit_set_coded_columns_as_categories_match_lightgbm():
    """UCI default-of-credit-card (../shared/data): SEX, EDUCATION, MARRIAGE and the repayment
    statuses PAY_* as categories, the rest numeric, through the reference (equal to the
    federation by the test above), against LightGBM with the same columns as pandas
    categories; test rows ID % 5 == 0."""
    lgb = pytest.importorskip("lightgbm")
    path = UCI / "UCI_Credit_Card.csv"
    if not path.exists():
        pytest.skip(f"public data not found: {path} (../shared/data is not in the repository)")
    raw = pd.read_csv(path)
    categorical = ["SEX", "EDUCATION", "MARRIAGE", "PAY_0", "PAY_2", "PAY_3"]
    numeric = ["LIMIT_BAL", "AGE", "BILL_AMT1", "PAY_AMT1", "PAY_AMT2"]
    features = [*numeric, *categorical]
    enc = encode_categories(raw, categorical, features=features)
    y = raw["default.payment.next.month"].to_numpy()
    test = raw["ID"].to_numpy() % 5 == 0
    params = {**PARAMS, "n_trees": 10, "max_bin": 32, "first_tree_bank_only": True}
    binner = QuantileBinner(max_bin=32).fit(enc.values[~test], categorical=enc.categorical_indices)
    party = lambda rows: PartyBins(  # noqa: E731
        "bank", binner.transform(enc.values[rows]), binner.n_bins_, enc.categorical_indices
    )
    ref = PlaintextSecureBoost(BoostParams(**params)).fit([party(~test)], y[~test])
    ours = roc_auc(y[test], ref.decision_function([party(test)]))
    frame = raw[features].copy()
    for c in categorical:
        frame[c] = pd.Categorical(frame[c].astype(str))
    model = lgb.LGBMClassifier(
        n_estimators=10,
        max_depth=3,
        num_leaves=8,
        learning_rate=0.3,
        max_bin=32,
        reg_lambda=1.0,
        min_child_samples=20,
        verbose=-1,
    ).fit(frame[~test], y[~test])
    theirs = roc_auc(y[test], model.predict_proba(frame[test])[:, 1])
    print(f"UCI AUC categorical secureboost {ours:.4f} lightgbm native {theirs:.4f}")
    assert ours >= theirs - 0.01, (ours, theirs)
