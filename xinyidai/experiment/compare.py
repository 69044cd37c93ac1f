"""The comparison models, outside the federation: every party's columns joined in one place.

Why this exists at all: a federated model is judged against what a data lake would have given
(LightGBM, or the same linear model, on the same rows). Only a benchmark on public data may read
every party's file like this; in production no one can.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from federation.errors import ConfigError
from xinyidai.experiment.build import table_config
from xinyidai.experiment.config import (
    ExperimentConfig,
    LogisticModelConfig,
    ScorecardModelConfig,
    SecureBoostModelConfig,
)


def party_frames(config: ExperimentConfig) -> tuple[dict[str, pd.DataFrame], pd.Series]:
    """Every party's encoded features (as its node encodes them: categorical columns as
    category codes) indexed by the code its node keys rows by, and the bank's labels — read in
    one place, for the centralised comparison. ``frames[name].attrs["categorical"]`` names the
    categorical columns."""
    from parties.data.encoding import encode
    from parties.data.loader import load_table

    frames: dict[str, pd.DataFrame] = {}
    labels = pd.Series(dtype=np.float64)
    for name, party in config.parties().items():
        label = config.bank.label_column if name == "bank" else None
        table = table_config(party, label=label)
        schema = table.table_schema(name)
        loaded = load_table(table.path, schema)
        encoded = encode(loaded, schema)
        frame = pd.DataFrame(encoded.values, columns=encoded.names, index=loaded.index)
        frame.attrs["categorical"] = list(encoded.categorical)
        frames[name] = frame
        if name == "bank":
            column = schema.label_column or config.bank.label_column
            labels = pd.Series(loaded[column].to_numpy(dtype=np.float64), index=loaded.index)
    return frames, labels


def _joined(config: ExperimentConfig) -> tuple[pd.DataFrame, dict[str, list[str]], list[str]]:
    """(every party's columns and the label on the common rows, columns per party, the
    categorical columns)."""
    frames, labels = party_frames(config)
    joined = pd.concat(
        [f.add_prefix(f"{name}.") for name, f in frames.items()] + [labels.rename("label")],
        axis=1,
        join="inner",
    )
    joined = joined[joined["label"].notna()]
    columns = {name: [f"{name}.{c}" for c in f.columns] for name, f in frames.items()}
    categorical = [f"{name}.{c}" for name, f in frames.items() for c in f.attrs["categorical"]]
    return joined, columns, categorical


def _one_hot(frame: pd.DataFrame, categorical: list[str]) -> pd.DataFrame:
    """Categorical code columns as 0/1 indicator columns (missing: all zero), for the
    centralised linear model; categories seen only in the test rows are all zero too."""
    if not categorical:
        return frame
    return pd.get_dummies(
        frame, columns=categorical, prefix=categorical, dummy_na=False, dtype=np.float64
    )


def centralised_auc(
    config: ExperimentConfig, train_codes: list[str], test_codes: list[str]
) -> float:
    """LightGBM on every party's columns joined in one place, depth-wise like the federated
    model, on the same train/test rows: the accuracy a data lake would have had."""
    import lightgbm as lgb

    from models.metrics import roc_auc
    from parties.data.encoding import lightgbm_frame

    joined, _, categorical = _joined(config)
    # Categorical columns as pandas categories: LightGBM renumbers them densely (raw 31-bit
    # category codes as numbers would make it size its tables by the largest code and stall).
    # The categories come from the whole joined frame, so train and test share one numbering.
    features = lightgbm_frame(joined.drop(columns=["label"]), categorical)
    y = joined["label"].to_numpy()
    m = config.model
    if not isinstance(m, SecureBoostModelConfig):
        raise ConfigError(f"centralised_auc compares SecureBoost models, not {m.type}")
    depth = m.max_depth
    model = lgb.LGBMClassifier(
        n_estimators=m.n_trees,
        max_depth=depth,
        num_leaves=2**depth,
        learning_rate=m.learning_rate,
        max_bin=m.max_bin,
        min_child_samples=20,
        min_child_weight=m.min_child_weight,
        reg_lambda=m.reg_lambda,
        subsample=m.subsample,
        subsample_freq=1 if m.subsample < 1 else 0,
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    train = joined.index.get_indexer(train_codes)
    test = joined.index.get_indexer(test_codes)
    model.fit(features.iloc[train], y[train], categorical_feature=categorical or "auto")
    scores = np.asarray(model.predict_proba(features.iloc[test]))[:, 1]
    return roc_auc(y[test], scores)


def centralised_linear(
    config: ExperimentConfig,
    train_codes: list[str],
    test_codes: list[str],
    *,
    federated_points: np.ndarray | None = None,
) -> dict[str, Any]:
    """The same model type on every party's columns joined in one place (same rows, same
    optimiser): a scorecard on the same bins (``parties.bank.scorecard_reference.centralised_scorecard``)
    or the plaintext LR twin. Returns its test AUC/KS/Gini and, for a scorecard, the largest
    per-enterprise |points difference| to ``federated_points`` (test rows, same order)."""
    from models.linear import PlaintextLogisticRegression, VerticalLogisticRegression
    from models.metrics import gini, ks_statistic, roc_auc
    from parties.bank.scorecard_model import ScorecardParams
    from parties.bank.scorecard_reference import centralised_scorecard

    joined, columns, categorical = _joined(config)
    if categorical and not isinstance(config.model, ScorecardModelConfig):
        features = _one_hot(joined.drop(columns=["label"]), categorical)
        columns = {
            name: [c for c in features.columns if c.startswith(f"{name}.")] for name in columns
        }
        joined = pd.concat([features, joined["label"]], axis=1)
    train = joined.loc[train_codes]
    test = joined.loc[test_codes]
    y_train = train["label"].to_numpy(dtype=np.float64)
    y_test = test["label"].to_numpy(dtype=np.float64)
    m = config.model
    out: dict[str, Any] = {}
    if isinstance(m, ScorecardModelConfig):
        params = ScorecardParams.from_mapping(
            {k: v for k, v in m.classifier_params().items() if k != "backend"}
        )
        categories = {name: p.category for name, p in config.holders.items()}
        card = centralised_scorecard(
            {
                name: (train[cols].to_numpy(dtype=np.float64), cols)
                for name, cols in columns.items()
            },
            y_train,
            params,
            categories={"bank": "bank", **categories},
        )
        feats = {name: test[cols].to_numpy(dtype=np.float64) for name, cols in columns.items()}
        scores = card.predict_proba(feats)[:, 1]
        points = card.score(feats)
        out["centralised_points_auc"] = roc_auc(y_test, -points)
        if federated_points is not None:
            diff = np.abs(np.asarray(federated_points, dtype=np.float64) - points)
            out["points_max_abs_diff"] = float(diff.max())
            out["points_equal_share"] = float(np.mean(diff == 0))
    else:
        if not isinstance(m, LogisticModelConfig):
            raise ConfigError(f"centralised_linear compares linear models, not {m.type}")
        kwargs = {k: v for k, v in m.classifier_params().items() if k != "backend"}
        lr_params = VerticalLogisticRegression(**kwargs).linear_params(len(train))
        cols = [c for name in columns for c in columns[name]]
        ref = PlaintextLogisticRegression(lr_params).fit(
            train[cols].to_numpy(dtype=np.float64), y_train
        )
        scores = ref.predict_proba(test[cols].to_numpy(dtype=np.float64))[:, 1]
    out["centralised_auc"] = roc_auc(y_test, scores)
    out["centralised_ks"] = ks_statistic(y_test, scores)
    out["centralised_gini"] = gini(y_test, scores)
    return out
