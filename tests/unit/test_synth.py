"""The synthetic city: valid, partial, realistic, deterministic, and informative."""

from __future__ import annotations

import json

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from parties.data import uscc
from parties.data.loader import load_table, table_digest
from parties.data.schema import schema_for
from parties.data.synth import synthesize_city, write_city

ROLES = ("bank", "tax", "utility")


@pytest.fixture(scope="module")
def city():
    return synthesize_city(n_enterprises=20_000, seed=2024)


def test_codes_valid_unique_and_in_chengdu(city):
    for role in ROLES:
        codes = city[role]["uscc"].to_numpy()
        assert pd.Series(codes).is_unique
        assert all(p is None for p in uscc.problems(codes))
        assert set(pd.Series(codes).str[2:8]) <= set(uscc.CHENGDU_REGIONS)
    all_codes = set().union(*(set(city[r]["uscc"]) for r in ROLES))
    assert len({c[2:8] for c in all_codes}) == len(uscc.CHENGDU_REGIONS)


def test_overlaps_are_partial(city):
    keys = {r: set(city[r]["uscc"]) for r in ROLES}
    shares = {r: len(keys[r]) / 20_000 for r in ROLES}
    assert 0.66 < shares["bank"] < 0.74
    assert 0.93 < shares["tax"] < 0.97
    assert 0.82 < shares["utility"] < 0.88
    for a in ROLES:
        for b in ROLES:
            if a < b:
                both = keys[a] & keys[b]
                assert 0 < len(both) < min(len(keys[a]), len(keys[b])), (a, b)


def test_missing_values_where_real_systems_have_them(city):
    tax, util = city["tax"], city["utility"]
    assert tax["last_normal_payment_date"].isna().any()
    assert tax["cit_payable_12m"].isna().any()
    gas_missing = util["gas_avg_volume_3m"].isna().mean()
    assert 0.5 < gas_missing < 0.9
    assert util["water_avg_volume_3m"].isna().any() and util["elec_avg_amount_12m"].isna().any()
    for role in ROLES:
        schema = schema_for(role)
        for c in schema.columns:
            if c.required:
                assert city[role][c.name].notna().all(), (role, c.name)


def test_realistic_mix(city):
    bank, tax = city["bank"], city["tax"]
    assert 0.05 <= bank["default_12m"].mean() <= 0.10
    shares = tax["industry"].value_counts(normalize=True)
    assert shares.index[0] == "C" and shares["C"] > 0.2 and shares["F"] > 0.15
    grades = tax["tax_credit_grade"].value_counts(normalize=True)
    assert grades["B"] > grades["A"] > grades["D"] > 0


def test_tables_pass_their_schema(city, tmp_path):
    for fmt in ("csv", "parquet"):
        paths = write_city(city, tmp_path / fmt, fmt=fmt)
        meta = json.loads(paths["meta"].read_text("utf-8"))
        assert meta["seed"] == 2024 and meta["rows"]["bank"] == len(city["bank"])
        assert set(meta) >= {"overlaps", "default_rate", "n_enterprises"}
        for role in ROLES:
            df = load_table(paths[role], schema_for(role))
            assert len(df) == len(city[role])
        assert not list((tmp_path / fmt).glob("*.tmp"))


def test_deterministic_per_seed():
    a = synthesize_city(n_enterprises=500, seed=9)
    b = synthesize_city(n_enterprises=500, seed=9)
    c = synthesize_city(n_enterprises=500, seed=10)
    for role in ROLES:
        pd.testing.assert_frame_equal(a[role], b[role])
        digest = table_digest(a[role].set_index("uscc"))
        assert digest == table_digest(b[role].set_index("uscc"))
        assert digest != table_digest(c[role].set_index("uscc"))
    assert not set(a["bank"]["uscc"]) & set(c["bank"]["uscc"])


def test_hundred_thousand_enterprises_generate():
    tables = synthesize_city(n_enterprises=100_000, seed=1)
    assert len(tables["tax"]) > 90_000


def _model_matrix(city: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, np.ndarray, list[str]]:
    """Bank rows, left-joined with tax and utility features (missing stays NaN)."""
    bank = city["bank"].set_index("uscc")
    tax = city["tax"].set_index("uscc").drop(columns="industry").add_prefix("tax.")
    util = city["utility"].set_index("uscc").add_prefix("utility.")
    df = bank.join(tax, how="left").join(util, how="left")
    y = df.pop("default_12m").to_numpy()
    as_of = pd.Timestamp("2024-06-30")
    for col in df.columns:
        s = df[col]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            df[col] = (as_of - s).dt.days.astype(float)
        elif pd.api.types.is_string_dtype(s.dtype) or s.dtype == object:
            df[col] = s.astype("category")
        else:
            df[col] = s.astype(float)
    bank_cols = [c for c in bank.columns if c != "default_12m"]
    return df, y, bank_cols


def test_other_parties_add_real_signal(city):
    X, y, bank_cols = _model_matrix(city)
    train, test = train_test_split(np.arange(len(y)), test_size=0.3, stratify=y, random_state=0)

    def auc(cols: list[str]) -> float:
        model = lgb.LGBMClassifier(
            n_estimators=120,
            learning_rate=0.08,
            num_leaves=15,
            min_child_samples=40,
            random_state=0,
            n_jobs=1,
            verbose=-1,
        )
        model.fit(X.iloc[train][cols], y[train])
        return roc_auc_score(y[test], model.predict_proba(X.iloc[test][cols])[:, 1])

    bank_auc = auc(bank_cols)
    all_auc = auc(list(X.columns))
    print(f"test AUC: bank only {bank_auc:.4f}, all parties {all_auc:.4f}")
    assert bank_auc > 0.55  # the bank's own data is informative, just weakly
    assert all_auc >= bank_auc + 0.05
