"""End to end (issue 14): a bank that keeps a ready key (a 2048-bit pair and its obfuscators made
before the job) trains, against real holder nodes over mutual TLS, exactly the trees of a job
that generated its key at the start; holders make their re-randomisation obfuscators per job
(node.yaml ``limits.rerandomise_pool``, on by default) and drop them with the job."""

from __future__ import annotations

import numpy as np
import pytest

from federation.audit import AuditLog
from federation.crypto.reserve import stop_reserves
from parties.bank.alignment import align
from parties.bank.secureboost import bank_key_reserve, train_secureboost
from parties.config import load_node_config
from parties.node import holder_peers

pytestmark = pytest.mark.e2e

PARAMS = {"n_trees": 3, "max_depth": 3, "random_state": 0, "key_bits": 2048, "workers": 1}


def test_a_ready_key_trains_the_same_trees_as_a_key_made_at_the_start(
    tree_shape, start_federation, tmp_path_factory: pytest.TempPathFactory
):
    workdir = tmp_path_factory.mktemp("ready-key")
    fed, _ = start_federation(workdir, enterprises=800, seed=4, deadline_s=60.0, workers=1)
    bank = load_node_config(fed.configs["bank"])
    assert bank.limits.rerandomise_pool > 0  # holders' default: obfuscators made per job
    audit = AuditLog(bank.resolved_audit_url, "bank")
    try:
        with holder_peers(bank, audit=audit) as peers:
            alignment = align(bank, peers, job_id="rk-align", salt=b"rk", min_overlap=0.2)
        runs = {}
        for name in ("cold", "warm"):
            if name == "warm":
                small = bank.limits.model_copy(update={"obfuscator_pool": 1500})
                reserve = bank_key_reserve(bank.model_copy(update={"limits": small}))
                assert reserve is not None and reserve.wait_filled(120)
            with holder_peers(bank, audit=audit, service="SecureBoostHolder") as peers:
                runs[name] = train_secureboost(
                    bank, alignment, holders=peers, params=PARAMS, job_id=f"rk-{name}"
                )
        cold, warm = runs["cold"][0], runs["warm"][0]
        assert cold.model_.stats["ready_key"] is False
        assert warm.model_.stats["ready_key"] is True
        assert warm.model_.stats["obfuscators_ahead"] > 0
        assert tree_shape(warm) == tree_shape(cold)
        assert any(
            n.owner != "bank" for t in warm.trees_ for n in t.nodes.values() if not n.is_leaf
        )
        assert np.array_equal(runs["warm"][1].test_scores, runs["cold"][1].test_scores)
    finally:
        stop_reserves()
        audit.close()


def test_an_experiment_run_starts_the_ready_key_with_its_nodes(tmp_path):
    """``xinyidai experiment run``'s code path makes the bank's key (and obfuscators, as idle
    time allows) while the nodes start and align, sized to the job; the job takes that key,
    result.json says how warm it started, and no reserve is left running afterwards."""
    import pandas as pd
    import yaml

    from federation.crypto.reserve import running_reserve
    from xinyidai.experiment import load_experiment, run_experiment

    rng = np.random.default_rng(8)
    n = 900
    ids = np.arange(1, n + 1)
    x = rng.normal(size=(n, 4))
    y = (rng.random(n) < 1 / (1 + np.exp(-(x[:, 0] + 1.2 * x[:, 2] - 0.8)))).astype(int)
    pd.DataFrame({"id": ids, "y": y, "b0": x[:, 0], "b1": x[:, 1]}).to_csv(
        tmp_path / "bank.csv", index=False
    )
    pd.DataFrame({"id": ids, "t0": x[:, 2], "t1": x[:, 3]}).to_csv(
        tmp_path / "tax.csv", index=False
    )
    plain = {"id_column": "id", "id_kind": "plain"}
    config = {
        "name": "ready-key-run",
        "bank": {"path": "bank.csv", **plain, "label_column": "y"},
        "holders": {"tax": {"path": "tax.csv", **plain}},
        "split": {"kind": "id_mod", "modulus": 5, "remainder": 0},
        "model": {"type": "secureboost", "n_trees": 3, "max_depth": 2},
        "crypto": {"key_bits": 2048, "workers": 1},
        "run": {"deadline_s": 60},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded, digest = load_experiment(path)
    result = run_experiment(loaded, config_sha256=digest, workdir=tmp_path / "work", track=False)
    ready = result.data["ready_key"]
    assert ready["started_with_nodes"] is True
    assert ready["pool_capacity"] == 900 * 2  # every aligned row, in the two holder trees
    assert ready["key_used"] is True  # made while the nodes started, not at the job's start
    assert 0 <= ready["obfuscators_at_start"] <= ready["pool_capacity"]
    made = ready["obfuscators_at_start"]
    expected = "warm" if made == ready["pool_capacity"] else "partly warm" if made else "cold"
    assert ready["mode"] == expected
    assert result.data["test_auc"] > 0.6
    assert running_reserve(2048) is None  # the run's reserve stopped with its job
