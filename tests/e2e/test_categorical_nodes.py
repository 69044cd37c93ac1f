"""Categorical features across real node processes (issue 13, part 1): ``experiment run`` on
files with text categories — one declared under ``categorical:``, one inferred — trains
SecureBoost with native set splits at the holder, with no hand encoding.

Real processes, mTLS gRPC, 2048-bit Paillier; a small synthetic set whose risk by region is
non-monotone in any order of the names (so only set splits catch it in one cut).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xinyidai.experiment import load_experiment, run_experiment

pytestmark = pytest.mark.e2e

REGIONS = [f"Region {c}" for c in "ABCDEFGHIJ"]
REGION_RISK = np.array([1.3, -1.2, 1.0, -0.9, 1.4, -1.3, 0.2, 1.1, -1.0, -0.2])
CHANNELS = ["branch", "online", "broker"]
CHANNEL_RISK = np.array([-0.5, 0.4, 0.9])


def _config(directory: Path, n: int = 1200, seed: int = 5, **model: object) -> Path:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    region = rng.integers(0, len(REGIONS), n)
    channel = rng.integers(0, len(CHANNELS), n)
    x = rng.normal(size=n)
    logit = REGION_RISK[region] + CHANNEL_RISK[channel] + 0.5 * x - 0.2
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    region_text = np.array([f" {REGIONS[r]}  " for r in region], dtype=object)  # padded
    region_text[rng.random(n) < 0.04] = ""  # missing: a bin of its own
    pd.DataFrame({"id": ids, "y": y, "x": x, "channel": [CHANNELS[c] for c in channel]}).to_csv(
        directory / "bank.csv", index=False
    )
    pd.DataFrame({"id": ids[::-1], "region": region_text[::-1]}).to_csv(
        directory / "tax.csv", index=False
    )
    config = {
        "name": "categorical",
        # the bank's text column "channel" is inferred categorical (with a note)
        "bank": {"path": "bank.csv", "id_column": "id", "id_kind": "plain", "label_column": "y"},
        "holders": {
            "tax": {
                "path": "tax.csv",
                "id_column": "id",
                "id_kind": "plain",
                "categorical": ["region"],
            }
        },
        "split": {"kind": "id_mod", "modulus": 4, "remainder": 0},
        "model": model or {"type": "secureboost", "n_trees": 4, "max_depth": 3},
        "crypto": {"key_bits": 2048, "workers": 1},
        "run": {"deadline_s": 60},
    }
    path = directory / f"categorical-{config['model']['type']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    directory = tmp_path_factory.mktemp("categorical")
    config, digest = load_experiment(_config(directory))
    result = run_experiment(
        config, config_sha256=digest, workdir=directory / "work", track=False
    ).data
    return directory, result


def test_secureboost_splits_text_categories_natively_across_nodes(run):
    directory, result = run
    # the holder's only feature is the region: the federation beats the bank alone clearly,
    # and is close to LightGBM with native categoricals on the joined data
    assert result["test_auc"] > result["bank_only_auc"] + 0.05, result
    assert result["test_auc"] > result["centralised_auc"] - 0.03, result
    # the holder keeps set splits (negative thresholds: a bitmask of its category bins)
    parts = list((directory / "work" / "tax" / "models").glob("**/*.json"))
    splits = [
        ft
        for part in parts
        for tree in json.loads(part.read_text()).get("splits", {}).values()
        for ft in tree.values()
    ]
    assert splits and all(threshold < 0 for _, threshold in splits)
    # the region names never reached the bank's node directory
    bank_files = [p for p in (directory / "work" / "bank").rglob("*") if p.is_file()]
    for path in bank_files:
        if path.suffix in (".json", ".log", ".yaml", ".txt"):
            text = path.read_text(errors="ignore")
            assert "Region A" not in text and "Region B" not in text, path


@pytest.mark.parametrize(
    "model",
    [
        {"type": "logistic", "max_iter": 8, "learning_rate": 1.0},
        {"type": "scorecard", "max_iter": 8},
    ],
    ids=["logistic-one-hot", "scorecard-woe"],
)
def test_linear_models_read_categories_as_one_hot_or_woe(tmp_path, model):
    config, digest = load_experiment(_config(tmp_path, **model))
    result = run_experiment(
        config, config_sha256=digest, workdir=tmp_path / "work", track=False
    ).data
    # the region (the holder's only column) carries the signal only as categories: an LR on
    # its codes as a number would add nothing over the bank alone
    assert result["test_auc"] > result["bank_only_auc"] + 0.05, result
    assert result["test_auc"] > result["centralised_auc"] - 0.03, result
