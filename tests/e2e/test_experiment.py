"""``xinyidai experiment run``: a config in, node processes up, a result JSON out — and a holder
killed mid-training is restarted and the job goes on from the tree it was on.

Real processes, real mTLS gRPC, 2048-bit Paillier (the nodes run without the test switch), a
small synthetic two-party table keyed by plain ids so the run stays short.
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

from federation.errors import ConfigError
from xinyidai.experiment import load_experiment, run_experiment

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _tables(directory: Path, n: int = 1500, seed: int = 3) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    bank_x = rng.normal(size=(n, 3))
    tax_x = rng.normal(size=(n, 3))
    logit = 0.8 * bank_x[:, 0] - 0.5 * bank_x[:, 1] + 1.2 * tax_x[:, 0] + 0.7 * tax_x[:, 2] - 1
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    bank = pd.DataFrame({"id": ids, "y": y, **{f"b{i}": bank_x[:, i] for i in range(3)}})
    tax = pd.DataFrame({"id": ids[::-1], **{f"t{i}": tax_x[::-1, i] for i in range(3)}})
    tax.loc[5, "t1"] = np.nan  # a missing value travels as its own bin
    bank_path, tax_path = directory / "bank.csv", directory / "tax.csv"
    bank.to_csv(bank_path, index=False)
    tax.to_csv(tax_path, index=False)
    return bank_path, tax_path


def _config(directory: Path, **model: object) -> Path:
    bank_path, tax_path = _tables(directory)
    config = {
        "name": "tiny",
        "bank": {
            "path": bank_path.name,
            "id_column": "id",
            "id_kind": "plain",
            "label_column": "y",
        },
        "holders": {"tax": {"path": tax_path.name, "id_column": "id", "id_kind": "plain"}},
        "split": {"kind": "id_mod", "modulus": 5, "remainder": 0},
        "model": {"type": "secureboost", "n_trees": 4, "max_depth": 2, **model},
        "crypto": {"key_bits": 2048, "workers": 1},
        "run": {"resume_wait_s": 60, "deadline_s": 30},
    }
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_experiment_run_cli_writes_the_result_contract(tmp_path):
    config = _config(tmp_path)
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
    result = json.loads(out.read_text())
    for key in ("test_auc", "bank_only_auc", "centralised_auc", "train_seconds", "key_bits"):
        assert key in result
    assert (result["n_train"], result["n_test"]) == (1200, 300)  # ids % 5 == 0 are the test rows
    assert result["key_bits"] == 2048
    assert result["test_auc"] > result["bank_only_auc"] + 0.05  # the holder's features matter
    assert abs(result["test_auc"] - result["centralised_auc"]) < 0.05
    assert len(result["tree_seconds"]) == 4
    for node in ("bank", "tax"):
        usage = result["nodes"][node]
        assert usage["cpu_seconds"] > 0 and usage["peak_rss_mb"] > 50
        assert usage["bytes_sent"] > 0 and usage["exit_code"] == 0
    # the bank streams one 512-byte ciphertext per training row per holder tree (trees 1-3)
    assert result["nodes"]["bank"]["bytes_sent"] > 3 * 1200 * 512
    assert "4/4 trees" in proc.stderr  # the progress bar reached the end
    # tracked and registered: one dataset input per party with the digest that party computed
    from parties.config import TableConfig
    from parties.data.loader import load_table, table_digest
    from xinyidai.tracking import TrackingConfig, mlflow_client, resolve

    tracking = TrackingConfig.resolve(tmp_path / "mlflow")
    registered = result["mlflow"]
    assert registered["model_name"] == "tiny"  # named by the config file, not "credit-sbt"
    assert registered["experiment"] == "tiny"  # the MLflow experiment: the experiment's name
    found = resolve(registered["model_name"], "challenger", tracking=tracking)
    assert found.version == registered["version"] and found.run_id == registered["run_id"]
    run = mlflow_client(tracking).get_run(registered["run_id"])
    inputs = {d.dataset.name: d.dataset for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"bank-bank", "tax-tax"}
    tax_table = TableConfig(path=tmp_path / "tax.csv", id_column="id", id_kind="plain")
    tax_digest = table_digest(load_table(tax_table.path, tax_table.table_schema("tax")))
    assert tax_digest.startswith(inputs["tax-tax"].digest)
    assert "t0" not in inputs["tax-tax"].schema  # plain column names stay at the holder
    assert run.data.tags["xinyidai.crypto.key_bits"] == "2048"
    assert run.data.tags["xinyidai.config_sha256"] == result["config_sha256"]
    assert run.data.metrics["test_auc"] == pytest.approx(result["test_auc"])
    # opened as training started (not at registration): MLflow's duration covers the training
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny-sb"
    assert run.info.end_time - run.info.start_time >= 1000 * result["train_seconds"] - 50


def test_a_holder_killed_mid_training_costs_at_most_a_tree(tmp_path):
    from xinyidai.launcher import start_nodes

    config, digest = load_experiment(_config(tmp_path))
    fed_box: list = []
    done: list[int] = []

    def on_tree(t: int) -> None:
        done.append(t)
        if t == 1:  # kill the tax node with SIGKILL (no clean stop) and start it again
            fed = fed_box[0]
            fed.processes["tax"].kill()
            fed.processes["tax"].wait()
            start_nodes(fed, only=["tax"])

    result = run_experiment(
        config,
        config_sha256=digest,
        workdir=tmp_path / "work",
        on_tree=on_tree,
        on_started=fed_box.append,
        track=False,
    ).data
    assert done == [0, 1, 2, 3]  # no finished tree was grown twice
    assert result["resumes"] == 1
    assert result["test_auc"] > result["bank_only_auc"] + 0.05
    node_log = (tmp_path / "work" / "tax" / "node.log").read_text()
    assert "resumes at tree 2" in node_log
    # a finished job leaves no checkpoints behind, at the bank or the holder
    assert not list((tmp_path / "work").glob("**/*.checkpoint.json"))


def test_bad_experiment_configs_are_named(tmp_path):
    good = yaml.safe_load(_config(tmp_path).read_text())

    def load(change: dict) -> str:
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump({**good, **change}))
        with pytest.raises(ConfigError) as err:
            config, _ = load_experiment(path)
            run_experiment(config, config_sha256="x", workdir=tmp_path / "never", track=False)
        return str(err.value)

    assert "model.secureboost.max_depth" in load({"model": {"type": "secureboost", "max_depth": 0}})
    assert "holders" in load({"holders": {}})
    uscc_bank = {**good["bank"], "id_kind": "uscc"}
    assert "id_mod needs integer (plain) ids" in load({"bank": uscc_bank})
    missing = {"tax": {**good["holders"]["tax"], "path": "nowhere.csv"}}
    assert "nowhere.csv" in load({"holders": missing})
    assert not (tmp_path / "never").exists()  # nothing was built for a refused config
