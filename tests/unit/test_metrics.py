"""Shared model metrics: AUC, KS, Gini, lift by decile, PSI.

Hand-computed tables pin the definitions; KS, AUC and PSI are cross-checked against toad (the
dev dependency) on the same data, so "our KS" means what a credit team's toolkit means.
"""

from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (
    PSI_EPS,
    MetricError,
    gini,
    ks_statistic,
    lift_table,
    psi,
    psi_edges,
    psi_table,
    roc_auc,
)


def _data(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    score = rng.random(n)
    y = (rng.random(n) < 0.05 + 0.3 * score).astype(int)
    return y, score


# --------------------------------------------------------------------------------------------
# AUC, KS, Gini


def test_auc_and_ks_keep_their_definitions_on_a_hand_example():
    y = [0, 0, 1, 1, 0, 1]
    s = [0.1, 0.4, 0.35, 0.8, 0.8, 0.9]
    # pairs (bad > good): 0.35>0.1; 0.8>0.1,0.4, tie with 0.8 (½); 0.9 > all three → 1+2.5+3
    assert roc_auc(y, s) == pytest.approx(6.5 / 9)
    # thresholds from the top: after 0.9 TPR 1/3 FPR 0; after 0.8 TPR 2/3 FPR 1/3; ...
    assert ks_statistic(y, s) == pytest.approx(1 / 3)
    assert gini(y, s) == pytest.approx(2 * 6.5 / 9 - 1)


def test_gini_is_one_for_a_perfect_score_and_minus_one_reversed():
    y = np.array([0, 0, 0, 1, 1])
    s = np.arange(5.0)
    assert gini(y, s) == 1.0
    assert gini(y, -s) == -1.0


def test_ks_and_auc_match_toad():
    toad_metrics = pytest.importorskip(
        "toad.metrics", reason="toad (dev dependency) is not installed: no cross-check"
    )
    y, s = _data()
    s = np.round(s, 2)  # many ties: both must treat them the same way
    assert ks_statistic(y, s) == pytest.approx(toad_metrics.KS(s, y), abs=1e-12)
    assert roc_auc(y, s) == pytest.approx(toad_metrics.AUC(s, y), abs=1e-12)


@pytest.mark.parametrize(
    ("y", "s", "message"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        ([0, 1, 2], [0.1, 0.2, 0.3], "0/1"),
        ([0, 1], [0.1, np.nan], "NaN"),
        ([0, 1], [0.1, 0.2, 0.3], "labels but"),
    ],
)
def test_metric_inputs_are_checked(y, s, message):
    for fn in (roc_auc, ks_statistic, gini):
        with pytest.raises(MetricError, match=message):
            fn(y, s)


# --------------------------------------------------------------------------------------------
# lift by decile


def test_lift_table_by_hand():
    # 10 rows, 5 groups of 2, riskiest (highest score) first
    s = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 1, 0, 0, 1, 0, 0, 0, 0])
    table = lift_table(y, s, n_groups=5)
    assert table["decile"].tolist() == [1, 2, 3, 4, 5]
    assert table["count"].tolist() == [2, 2, 2, 2, 2]
    assert table["bads"].tolist() == [2, 1, 1, 0, 0]
    assert table["bad_rate"].tolist() == [1.0, 0.5, 0.5, 0.0, 0.0]
    assert table["lift"].tolist() == pytest.approx([2.5, 1.25, 1.25, 0.0, 0.0])
    assert table["cum_capture"].tolist() == pytest.approx([0.5, 0.75, 1.0, 1.0, 1.0])
    assert table["min_score"].tolist() == [0.9, 0.7, 0.5, 0.3, 0.1]
    # a points score (higher = safer) gives the same table when told so
    flipped = lift_table(y, 1000 - 100 * s, n_groups=5, higher_is_riskier=False)
    assert flipped["bads"].tolist() == [2, 1, 1, 0, 0]


def test_lift_table_deciles_keep_ties_together_and_capture_all_bads():
    y, s = _data()
    s = np.round(s * 30)  # heavy ties (31 distinct scores)
    table = lift_table(y, s)
    assert table["count"].sum() == y.size
    assert table["cum_capture"].iloc[-1] == pytest.approx(1.0)
    assert (np.diff(table["cum_capture"]) >= 0).all()
    # no score value appears in two deciles
    assert (table["min_score"].to_numpy()[:-1] > table["max_score"].to_numpy()[1:]).all()
    # the riskiest decile of an informative score beats the average
    assert table["lift"].iloc[0] > 1.5
    assert lift_table(y, s, n_groups=10)["decile"].iloc[0] == 1


# --------------------------------------------------------------------------------------------
# PSI


def test_psi_by_hand_with_given_edges():
    expected = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]  # 4 | 3 | 3 rows for edges 4, 7
    actual = [1, 2, 5, 6, 7, 8, 9, 10, 10, 10]  # 2 | 3 | 5
    e = np.array([0.4, 0.3, 0.3])
    a = np.array([0.2, 0.3, 0.5])
    want = float(np.sum((a - e) * np.log(a / e)))
    table = psi_table(expected, actual, edges=[4, 7])
    assert table["expected_count"].tolist() == [4, 3, 3]
    assert table["actual_count"].tolist() == [2, 3, 5]
    assert table["upper"].tolist() == [4, 7, np.inf]
    assert psi(expected, actual, edges=[4, 7]) == pytest.approx(want, abs=1e-15)
    assert psi(expected, expected, edges=[4, 7]) == 0.0


def test_psi_quantile_bins_come_from_the_expected_population():
    rng = np.random.default_rng(1)
    base = rng.normal(size=5000)
    edges = psi_edges(base, bins=10)
    assert edges.size == 9 and np.isin(edges, base).all()
    counts = psi_table(base, base)["expected_count"].to_numpy()
    assert counts.min() >= 499 and counts.max() <= 501
    assert psi(base, rng.normal(size=5000)) < 0.02  # same population: stable
    assert psi(base, rng.normal(0.5, 1, size=5000)) > 0.1  # shifted: flagged


def test_psi_empty_bin_uses_the_documented_epsilon():
    expected = [1, 2, 3, 4, 5, 6]
    actual = [5, 6, 6, 6, 5, 6]  # nothing in the first bin
    table = psi_table(expected, actual, edges=[3])
    assert table["actual_count"].tolist() == [0, 6]
    assert table["actual_pct"].iloc[0] == PSI_EPS
    term0 = (PSI_EPS - 0.5) * np.log(PSI_EPS / 0.5)
    term1 = (1.0 - 0.5) * np.log(1.0 / 0.5)
    assert psi(expected, actual, edges=[3]) == pytest.approx(term0 + term1)
    assert np.isfinite(psi(expected, actual, edges=[3], eps=1e-9))


def test_psi_matches_toad_on_the_same_bins():
    toad_metrics = pytest.importorskip(
        "toad.metrics", reason="toad (dev dependency) is not installed: no cross-check"
    )
    rng = np.random.default_rng(2)
    base = rng.normal(size=3000)
    test = rng.normal(0.3, 1.2, size=2000)
    edges = psi_edges(base, bins=10)
    b_bins = np.searchsorted(edges, base, "left")
    t_bins = np.searchsorted(edges, test, "left")
    assert np.bincount(t_bins).min() > 0  # toad has no epsilon: compare on non-empty bins
    assert psi(base, test) == pytest.approx(float(toad_metrics.PSI(t_bins, b_bins)), abs=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"edges": [3, 2]}, "strictly increasing"),
        ({"eps": 0.0}, "eps"),
        ({"bins": 1}, "bins"),
    ],
)
def test_psi_inputs_are_checked(kwargs, message):
    with pytest.raises(MetricError, match=message):
        psi([1.0, 2.0, 3.0], [1.0, 2.0], **kwargs)
    with pytest.raises(MetricError, match="NaN"):
        psi([1.0, np.nan], [1.0])
    with pytest.raises(MetricError, match="empty"):
        psi([], [1.0])
