"""Quantile binning: the conventions both SecureBoost implementations rely on."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.binning import MISSING_BIN, BinningError, ConstantFeatureError, QuantileBinner


@pytest.fixture()
def mixed() -> np.ndarray:
    rng = np.random.default_rng(3)
    n = 5000
    cont = rng.lognormal(8, 1.5, n)  # skewed amounts
    heavy_ties = np.where(rng.random(n) < 0.9, 0.0, rng.normal(100, 10, n))  # mostly zero
    three = rng.choice([1.0, 2.0, 5.0], n)  # a grade with 3 levels
    with_missing = rng.normal(0, 1, n)
    with_missing[rng.random(n) < 0.3] = np.nan
    return np.column_stack([cont, heavy_ties, three, with_missing])


def test_no_empty_bin_and_bins_respect_the_order_of_values(mixed):
    binner = QuantileBinner(max_bin=16).fit(mixed)
    bins = binner.transform(mixed)
    assert bins.dtype.kind == "i" and bins.shape == mixed.shape
    for j in range(mixed.shape[1]):
        col, b = mixed[:, j], bins[:, j]
        present = ~np.isnan(col)
        n_bins = binner.n_bins_[j]
        assert 3 <= n_bins <= 16 + 1  # missing bin + at most max_bin value bins
        counts = np.bincount(b[present], minlength=n_bins)
        assert counts[MISSING_BIN] == 0
        assert (counts[1:] > 0).all(), f"feature {j} has an empty bin: {counts}"
        # bins are monotone in the value: a larger value never gets a smaller bin
        order = np.argsort(col[present], kind="mergesort")
        assert (np.diff(b[present][order]) >= 0).all()
        # every edge is a training value (so the owner's edges are data: they stay local)
        assert np.isin(binner.edges_[j], col[present]).all()


def test_missing_values_get_bin_zero_and_values_never_do(mixed):
    binner = QuantileBinner(max_bin=8).fit(mixed)
    bins = binner.transform(mixed)
    missing = np.isnan(mixed)
    assert (bins[missing] == 0).all()
    assert (bins[~missing] >= 1).all()


def test_bins_are_balanced_for_a_continuous_feature():
    x = np.random.default_rng(1).normal(size=(32_000, 1))
    counts = np.bincount(QuantileBinner(max_bin=32).fit_transform(x)[:, 0])[1:]
    assert counts.size == 32
    assert counts.min() > 0.9 * 1000 and counts.max() < 1.1 * 1000


def test_few_distinct_values_get_one_bin_each():
    x = np.array([[5.0], [1.0], [2.0], [2.0], [5.0], [1.0]])
    binner = QuantileBinner(max_bin=32).fit(x)
    assert binner.n_bins_[0] == 4  # missing + 3 values
    assert binner.transform(x)[:, 0].tolist() == [3, 1, 2, 2, 3, 1]


def test_unseen_values_fall_into_the_extreme_bins():
    x = np.arange(100, dtype=float).reshape(-1, 1)
    binner = QuantileBinner(max_bin=4).fit(x)
    out = binner.transform(np.array([[-1e9], [1e9], [np.nan]]))[:, 0]
    assert out.tolist() == [1, binner.n_bins_[0] - 1, 0]


@pytest.mark.parametrize(
    ("column", "message"),
    [
        (np.full(50, 3.0), "is constant"),
        (np.full(50, np.nan), "missing in every row"),
    ],
)
def test_features_that_cannot_split_are_refused_by_name(column, message):
    x = np.column_stack([np.arange(50.0), column])
    with pytest.raises(ConstantFeatureError) as err:
        QuantileBinner().fit(x, feature_names=["income", "tax_grade"])
    assert "tax_grade" in str(err.value) and message in str(err.value)
    assert err.value.feature == "tax_grade" and err.value.index == 1


def test_one_value_plus_missing_is_a_real_split():
    x = np.array([[1.0], [np.nan], [1.0], [np.nan]])
    binner = QuantileBinner().fit(x)
    assert binner.n_bins_[0] == 2
    assert binner.transform(x)[:, 0].tolist() == [1, 0, 1, 0]


def test_bad_input_is_refused_clearly():
    with pytest.raises(BinningError, match="infinite"):
        QuantileBinner().fit(np.array([[1.0], [np.inf], [2.0]]), feature_names=["a"])
    with pytest.raises(BinningError, match="max_bin"):
        QuantileBinner(max_bin=1)
    with pytest.raises(BinningError, match="2-D"):
        QuantileBinner().fit(np.arange(5.0))
    binner = QuantileBinner().fit(np.arange(10.0).reshape(5, 2))
    with pytest.raises(BinningError, match="3 features"):
        binner.transform(np.zeros((2, 3)))
    with pytest.raises(BinningError, match="not fitted"):
        QuantileBinner().transform(np.zeros((2, 2)))


def test_round_trips_through_json(mixed):
    binner = QuantileBinner(max_bin=12).fit(mixed, feature_names=["a", "b", "c", "d"])
    again = QuantileBinner.from_dict(json.loads(json.dumps(binner.to_dict())))
    assert again.feature_names_ == ["a", "b", "c", "d"]
    assert np.array_equal(again.transform(mixed), binner.transform(mixed))
