"""Names across real node processes (issue 13, parts 3 and 4): messy plain keys join, the rows
that do not are counted; the registered model is named by the config (or its file) and the
MLflow experiment by the experiment; the bank's report names holder features by the aliases the
holder publishes, the same in two runs with fresh node directories (fresh column secrets).

Real processes, real mTLS gRPC, 2048-bit Paillier (the nodes run without the test switch); a
400-row scorecard with a text column, run twice (about 10 s each on two cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from xinyidai.experiment import load_experiment, run_experiment
from xinyidai.tracking import TrackingConfig, mlflow_client

pytestmark = pytest.mark.e2e

N, HOLDER_ROWS = 400, 380


def _files(directory: Path) -> None:
    rng = np.random.default_rng(5)
    b, t = rng.normal(size=N), rng.normal(size=N)
    housing = rng.choice(["own", "rent", "free"], N)
    logit = 0.8 * b + 1.2 * t + np.where(housing == "rent", 0.9, 0.0) - 0.5
    y = (rng.random(N) < 1 / (1 + np.exp(-logit))).astype(int)
    bank = pd.DataFrame({"id": [f"C{i:04d}" for i in range(N)], "y": y, "b0": b})
    # the holder types the same ids padded, lower case or full-width, and lacks 20 of them
    typed = [f" c{i:04d} " if i % 2 else f"Ｃ{i:04d}" for i in range(N)]
    tax = pd.DataFrame({"id": typed, "t0": t, "housing": housing}).iloc[:HOLDER_ROWS]
    bank.to_csv(directory / "bank.csv", index=False)
    tax.iloc[::-1].to_csv(directory / "tax.csv", index=False)


def _config(directory: Path, file: str, **changes: object) -> Path:
    config: dict[str, object] = {
        "name": "names-e2e",
        "bank": {"path": "bank.csv", "id_column": "id", "id_kind": "plain", "label_column": "y"},
        "holders": {"tax": {"path": "tax.csv", "id_column": "id", "id_kind": "plain"}},
        "model": {"type": "scorecard", "max_iter": 3, "min_iv": 0.0},
        "crypto": {"key_bits": 2048, "workers": 1},
        "run": {"deadline_s": 60, "resume_wait_s": 0},
        **changes,
    }
    path = directory / file
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("names")
    _files(directory)
    tracking = TrackingConfig.resolve(directory / "mlflow")
    first = _config(directory, "sme_housing.yaml")
    holders = {
        "tax": {
            "path": "tax.csv",
            "id_column": "id",
            "id_kind": "plain",
            "categorical": ["housing"],
            "labels": {"t0": "VAT paid [12m]"},
        }
    }
    second = _config(
        directory,
        "second.yaml",
        holders=holders,
        model={"type": "scorecard", "max_iter": 3, "min_iv": 0.0, "name": "sme-card"},
    )
    results, messages, hellos = [], [], []
    for i, path in enumerate((first, second)):
        config, digest = load_experiment(path)
        said: list[str] = []
        results.append(
            run_experiment(
                config,
                config_sha256=digest,
                workdir=directory / f"work{i}",
                progress=said.append,
                tracking=tracking,
                on_started=lambda fed: hellos.append(_greet(fed)),
            ).data
        )
        messages.append(said)
    return results, messages, tracking, hellos


def _greet(fed) -> dict[str, tuple[str, str]]:
    """The tax node's Hello as the bank sees it over mTLS: alias -> (name hash, dtype)."""
    from federation.transport.base import new_meta
    from parties.config import load_node_config
    from parties.node import operator_client
    from protos import bank_pb2

    with operator_client(load_node_config(fed.configs["bank"])) as ops:
        reply = ops.call("Greet", bank_pb2.GreetRequest(meta=new_meta(job_id="names-greet")))
    (tax,) = [g for g in reply.peers if g.node_id == "tax"]
    columns = tax.hello.tables[0].columns
    return {c.alias: (c.name_hash, c.dtype) for c in columns if c.alias}


def test_messy_plain_keys_join_and_the_rest_are_counted(two_runs):
    results, messages, _, _ = two_runs
    first = results[0]
    assert (first["n_bank_rows"], first["n_aligned"], first["n_not_joined"]) == (N, 380, 20)
    assert any(m.startswith("not joined: 20 of 400 bank rows (20 not at tax)") for m in messages[0])


def test_models_and_mlflow_experiments_are_named_by_the_config(two_runs):
    results, _, tracking, _ = two_runs
    assert [r["mlflow"]["model_name"] for r in results] == ["sme_housing", "sme-card"]
    assert all(r["mlflow"]["version"] == "1" for r in results)  # two models, not two versions
    client = mlflow_client(tracking)
    run = client.get_run(results[0]["mlflow"]["run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "names-e2e"


def test_holder_features_keep_their_aliases_across_runs(two_runs):
    results, _, _, hellos = two_runs
    # in Hello: the same alias for the same column in two federations with fresh secrets
    assert set(hellos[0]) == {"tax:f01", "tax:f02"}
    assert set(hellos[1]) == {"VAT paid [12m]", "tax:f02"}
    assert hellos[0]["tax:f02"][1] == hellos[1]["tax:f02"][1] == "category"
    assert hellos[0]["tax:f02"][0] != hellos[1]["tax:f02"][0]  # the keyed hash moved
    names = [{f["feature"] for f in r["iv"] if f["party"] == "tax"} for r in results]
    assert names[0] == {"tax:f01", "tax:f02"}  # t0, housing: by position, no hash, no name
    assert names[1] == {"VAT paid [12m]", "tax:f02"}  # a label the holder chose to publish
    iv = [{f["feature"]: f["iv"] for f in r["iv"]} for r in results]
    assert iv[0]["tax:f02"] == pytest.approx(iv[1]["tax:f02"])  # the same column, both runs
    assert iv[0]["tax:f02"] > 0.02  # the text column took part, encoded as categories
