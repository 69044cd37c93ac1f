"""Scorecards and vertical LR across real node processes: ``xinyidai experiment run`` with model
types ``scorecard`` and ``logistic``.

Real processes, real mTLS gRPC, 2048-bit Paillier (nodes run without the test switch), a small
synthetic three-party table keyed by plain ids (bank + tax + utility) so each run stays short.
Needs the holder node to host ``LinearHolder`` (features from ``parties.holder.views``) and
``ScorecardHolder`` (see docs/scorecard.md, "Wiring the holder service into a node").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xinyidai.experiment import load_experiment, run_experiment

pytestmark = pytest.mark.e2e


def _tables(directory: Path, n: int = 1000, seed: int = 7) -> dict[str, Path]:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    bank_x = np.column_stack([rng.normal(size=n), rng.integers(20, 65, n)])
    tax_x = np.column_stack([rng.normal(size=n), rng.lognormal(1.0, 0.7, n)])
    util_x = np.column_stack([rng.integers(0, 6, n), rng.normal(size=n)])
    logit = (
        0.6 * bank_x[:, 0]
        + 1.1 * tax_x[:, 0]
        - 0.4 * np.log(tax_x[:, 1])
        + 0.5 * util_x[:, 0]
        - 0.8 * util_x[:, 1]
        - 2.0
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frames = {
        "bank": pd.DataFrame({"id": ids, "y": y, "b0": bank_x[:, 0], "age": bank_x[:, 1]}),
        "tax": pd.DataFrame({"id": ids[::-1], "vat": tax_x[::-1, 0], "income": tax_x[::-1, 1]}),
        "utility": pd.DataFrame({"id": ids, "late": util_x[:, 0], "trend": util_x[:, 1]}),
    }
    frames["tax"].loc[7, "income"] = np.nan  # a missing value travels as its own bin
    paths = {}
    for name, frame in frames.items():
        paths[name] = directory / f"{name}.csv"
        frame.to_csv(paths[name], index=False)
    return paths


def _config(directory: Path, model: dict) -> Path:
    paths = _tables(directory)
    plain = {"id_column": "id", "id_kind": "plain"}
    config = {
        "name": f"tiny-{model['type']}",
        "bank": {"path": paths["bank"].name, **plain, "label_column": "y"},
        "holders": {
            "tax": {"path": paths["tax"].name, **plain, "category": "tax"},
            "utility": {"path": paths["utility"].name, **plain, "category": "electricity"},
        },
        "split": {"kind": "id_mod", "modulus": 5, "remainder": 0},
        "model": model,
        "crypto": {"key_bits": 2048, "workers": 1},
        "run": {"deadline_s": 60},
    }
    path = directory / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_scorecard_experiment_matches_the_centralised_scorecard(tmp_path):
    config = _config(tmp_path, {"type": "scorecard", "max_iter": 5, "min_iv": 0.02})
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "xinyidai.cli.main",
            "experiment",
            "run",
            str(config),
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
            "--mlflow-dir",
            str(tmp_path / "mlflow"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["model"] == "scorecard" and r["backend"] == "paillier" and r["key_bits"] == 2048
    assert r["crypto"] == {"scheme": "paillier-djn", "key_bits": 2048}
    assert len(r["epoch_seconds"]) == r["n_iter"]  # one per epoch of the scorecard's LR
    assert (r["n_train"], r["n_test"]) == (800, 200)
    for key in ("test_auc", "test_ks", "test_gini", "bank_only_auc", "centralised_auc"):
        assert 0 <= abs(r[key]) <= 1, key
    assert r["points_max_abs_diff"] <= 1.0  # federated points = centralised points, same bins
    assert abs(r["test_auc"] - r["centralised_auc"]) < 1e-3
    assert abs(r["test_ks"] - r["centralised_ks"]) < 1e-3
    assert r["test_auc"] > r["bank_only_auc"] + 0.05  # the holders' features matter
    assert r["features_kept"]["tax"] >= 1 and r["features_kept"]["utility"] >= 1
    for node in ("bank", "tax", "utility"):
        usage = r["nodes"][node]
        assert usage["bytes_sent"] > 0 and usage["exit_code"] == 0
    # each holder kept its own points table; the bank's part has no holder column names
    job = f"{r['job_id']}-lr"
    for holder in ("tax", "utility"):
        assert (tmp_path / "work" / holder / "models" / "bank" / f"{job}.points.json").exists()
    bank_part = (tmp_path / "work" / "bank" / "models" / f"{r['job_id']}.json").read_text()
    for column in ("vat", "income", "late", "trend"):
        assert f'"{column}"' not in bank_part
    assert "5/5 epochs" in proc.stderr or r["n_iter"] < 5
    # registered under the experiment's own model name
    from xinyidai.tracking import TrackingConfig, resolve

    tracking = TrackingConfig.resolve(tmp_path / "mlflow")
    found = resolve(r["mlflow"]["model_name"], "challenger", tracking=tracking)
    assert r["mlflow"]["model_name"] == config.stem  # named by its config file (issue 13)
    assert found.run_id == r["mlflow"]["run_id"]


def test_logistic_experiment_on_ckks_matches_the_plaintext_twin(tmp_path):
    from mlflow.tracking import MlflowClient

    from xinyidai.tracking import TrackingConfig

    path = _config(tmp_path, {"type": "logistic", "backend": "ckks", "max_iter": 6})
    config, digest = load_experiment(path)
    tracking = TrackingConfig.resolve(tmp_path / "mlflow")
    r = run_experiment(
        config, config_sha256=digest, workdir=tmp_path / "work", tracking=tracking
    ).data
    assert r["model"] == "logistic" and r["backend"] == "ckks"
    assert len(r["epoch_seconds"]) == r["n_iter"]  # one per epoch (was n_iter - 1)
    # CKKS's parameters, not a Paillier key size, in the result and the MLflow run
    assert r["key_bits"] is None
    assert r["crypto"]["scheme"] == "ckks" and r["crypto"]["poly_modulus_degree"] == 8192
    assert r["crypto"]["coeff_mod_bit_sizes"] == [60, 40, 40, 60]
    assert r["crypto"]["security_bits"] == 128
    run = MlflowClient(tracking.tracking_uri).get_run(r["mlflow"]["run_id"])
    assert run.data.tags["xinyidai.crypto.poly_modulus_degree"] == "8192"
    assert run.data.tags["xinyidai.crypto.security_bits"] == "128"
    assert run.data.tags.get("xinyidai.crypto.key_bits", "") == ""
    assert "key_bits" not in run.data.params
    assert run.data.params["ckks_coeff_mod_bit_sizes"] == "60,40,40,60"
    assert abs(r["test_auc"] - r["centralised_auc"]) < 5e-3
    assert r["test_auc"] > r["bank_only_auc"] + 0.05
    assert "test_gini" in r and abs(r["test_gini"] - (2 * r["test_auc"] - 1)) < 1e-9
