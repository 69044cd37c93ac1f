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


def _shape(clf) -> list[list[tuple]]:
    return [
        sorted(
            (i, n.is_leaf, n.owner, n.feature, n.threshold, round(n.weight, 12))
            for i, n in t.nodes.items()
        )
        for t in clf.trees_
    ]


def test_a_ready_key_trains_the_same_trees_as_a_key_made_at_the_start(
    start_federation, tmp_path_factory: pytest.TempPathFactory
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
        assert _shape(warm) == _shape(cold)
        assert any(
            n.owner != "bank" for t in warm.trees_ for n in t.nodes.values() if not n.is_leaf
        )
        assert np.array_equal(runs["warm"][1].test_scores, runs["cold"][1].test_scores)
    finally:
        stop_reserves()
        audit.close()
