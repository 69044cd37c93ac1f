"""End to end: post-loan monitoring (贷后监测) over three node processes (mTLS on loopback).

Trains two small SecureBoost versions of one model (different hyperparameters), registers both
in a temporary MLflow store, serves version 1 as champion, and checks: every served score lands
in the bank's score log; PSI against the saved training population is stable for a population
like the training one and flags a shift for a high-risk subset; after promoting version 2, a
watch list re-scored through the bank raises exactly the drops an independent computation
predicts, and reports an enterprise whose consent was revoked in between as not scorable.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from federation.audit import AuditLog
from federation.transport.base import new_meta
from models.metrics import psi
from models.scorecard import PdoScaling
from protos import bank_pb2

pytestmark = pytest.mark.e2e

SALT = b"e2e-monitoring-salt"
MODEL = "credit-monitor"
V1 = dict(n_trees=2, max_depth=3, learning_rate=0.3, max_bin=16, random_state=0)
V2 = dict(n_trees=3, max_depth=2, learning_rate=0.8, max_bin=8, random_state=1)


@pytest.fixture(scope="module")
def world(start_bank_world):
    from xinyidai.tracking import promote

    base = start_bank_world(
        "monitoring", enterprises=600, seed=23, salt=SALT, align_job="mon-align"
    )
    models = {}
    for version, (job, params) in enumerate((("mon-v1", V1), ("mon-v2", V2)), 1):
        trained = base.train(MODEL, params=params, job_id=job)
        assert trained.version == str(version)
        models[str(version)] = SimpleNamespace(clf=trained.clf, report=trained.report, job=job)
    promote(MODEL, "1", by="alice", reason="e2e", tracking=base.tracking)
    return SimpleNamespace(**vars(base), models=models)


# -- helpers ------------------------------------------------------------------------------------
def _batch(world, codes: list[str], ref: str):
    from parties.node import operator_client

    with operator_client(world.bank) as client:
        return client.call(
            "ScoreBatch",
            bank_pb2.ScoreBatchRequest(
                meta=new_meta("financing"), model_name=MODEL, model_ref=ref, usccs=codes
            ),
        )


def _registry(world, holder: str):
    from federation.pki import load_platform_public_key
    from parties.consent import ConsentRegistry

    key = load_platform_public_key(world.fed.node_dir(holder) / "platform_signing.pub")
    return ConsentRegistry.for_node_dir(world.fed.node_dir(holder), key, node_id=holder)


def _active(world, holder: str) -> set[str]:
    with _registry(world, holder) as reg:
        return {r.auth.uscc for r in reg.list(bank_id="bank") if r.status == "active"}


def _aligned_codes(world) -> list[str]:
    from parties.bank.table import BankTable

    table = BankTable.load(world.bank)
    return [table.codes[i] for i in world.alignment.bank_rows]


def _authorised(world) -> list[str]:
    both = _active(world, "tax") & _active(world, "utility")
    return [c for c in _aligned_codes(world) if c in both]


def _score_log(world):
    from parties.bank.score_log import ScoreLog

    return ScoreLog.for_config(world.bank)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat()


def _independent_points(world, version: str, codes: list[str]) -> dict[str, float]:
    """Points by the training-time prediction path (no scoring service, no score log)."""
    from parties.bank.table import BankTable
    from parties.node import holder_peers

    aligned = _aligned_codes(world)
    table = BankTable.load(world.bank)
    positions = np.array([aligned.index(c) for c in codes])
    rows = world.alignment.bank_rows[positions]
    with holder_peers(world.bank, audit=None, service="SecureBoostHolder") as peers:
        margin = world.models[version].clf.decision_function(
            table.features.iloc[rows].reset_index(drop=True), holders=peers, rows=positions
        )
    return dict(zip(codes, PdoScaling().score(margin).tolist(), strict=True))


# -- tests --------------------------------------------------------------------------------------
def test_training_saves_its_population_and_served_scores_are_logged(world):
    from parties.bank.monitoring import read_training_population
    from parties.node import operator_client

    for version, m in world.models.items():
        points = read_training_population(world.bank.node_dir / "models", m.job)
        assert points.size == m.report.n_train + m.report.n_test, version
    codes = _authorised(world)[:5]
    started = time.time()
    with operator_client(world.bank) as client:
        one = client.call(
            "Score",
            bank_pb2.ScoreRequest(
                meta=new_meta("financing"), uscc=codes[0], model_name=MODEL, model_ref="champion"
            ),
        )
    batch = _batch(world, codes, "1")
    with _score_log(world) as log:
        rows = log.query(MODEL, "1", since=started)
    assert one.scored and one.model_version == "1"
    singles = rows[rows["kind"] == "one"]
    assert list(singles["uscc"]) == [codes[0]]
    assert abs(float(singles["points"].iloc[0]) - one.points) < 1e-9
    batched = rows[rows["kind"] == "batch"]
    served = {e.uscc: e.points for e in batch.enterprises if e.status == "ok"}
    assert set(batched["uscc"]) == set(served) and len(batched) == len(served) > 0
    for code, points in zip(batched["uscc"], batched["points"], strict=True):
        assert abs(points - served[code]) < 1e-9


def test_psi_is_stable_for_a_training_like_population_and_flags_a_high_risk_subset(world):
    from parties.bank.monitoring import population_stability, read_training_population
    from xinyidai.cli.monitor import app

    expected = read_training_population(world.bank.node_dir / "models", world.models["1"].job)
    codes = _authorised(world)
    t0 = time.time()
    reply = _batch(world, codes, "1")
    t1 = time.time()
    stable = population_stability(world.bank, MODEL, "1", since=t0, until=t1)
    served = np.array([e.points for e in reply.enterprises if e.status == "ok"])
    assert stable.n_actual == served.size > 100
    assert abs(stable.psi - psi(expected, served)) < 1e-12
    assert stable.psi < 0.1 and stable.label == "stable", stable.as_dict()

    # Only the riskiest third of those enterprises (lowest points) is served next.
    cut = np.quantile(served, 1 / 3)
    risky = [e.uscc for e in reply.enterprises if e.status == "ok" and e.points <= cut]
    t2 = time.time()
    second = _batch(world, risky, "champion")  # champion is version 1
    shifted = population_stability(world.bank, MODEL, "champion", since=t2)
    risky_points = np.array([e.points for e in second.enterprises if e.status == "ok"])
    assert shifted.model_version == "1" and shifted.n_actual == risky_points.size
    assert abs(shifted.psi - psi(expected, risky_points)) < 1e-12
    assert shifted.psi > 0.25 and shifted.label == "shift", shifted.as_dict()

    result = CliRunner().invoke(
        app, ["psi", MODEL, "1", "--since", _iso(t2), "--config", str(world.fed.configs["bank"]),
              "--json"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # 1: shift
    data = json.loads(result.output)
    assert data["label"] == "shift" and abs(data["psi"] - shifted.psi) < 1e-12
    human = CliRunner().invoke(
        app, ["psi", MODEL, "1", "--since", _iso(t0), "--until", _iso(t1), "--config",
              str(world.fed.configs["bank"])],
    )  # fmt: skip
    assert human.exit_code == 0 and "stable" in human.output and f"{stable.psi:.4f}" in human.output
    missing = CliRunner().invoke(
        app, ["psi", MODEL, "7", "--config", str(world.fed.configs["bank"])]
    )
    assert missing.exit_code == 2 and "7" in missing.output


def test_watch_list_alerts_on_drops_and_on_revoked_consent(world, tmp_path):
    from xinyidai.cli.monitor import app
    from xinyidai.tracking import promote

    v2_owners = sorted(world.models["2"].clf.model_.split_owners() - {"bank"})
    assert v2_owners, "version 2 uses no holder's split: nothing federated to watch"
    codes = _authorised(world)[:60]
    revoked, watched = codes[0], codes[1:]
    # Version 1's scores through the real scoring path: the "previous" served scores.
    before = _batch(world, codes, "1")
    v1 = {e.uscc: e.points for e in before.enterprises if e.status == "ok"}
    assert set(v1) == set(codes)
    # Version 2's points, computed independently (training-time prediction, no score log).
    v2 = _independent_points(world, "2", watched)
    drops = {c: v1[c] - v2[c] for c in watched}
    positive = sorted({round(d, 6) for d in drops.values() if d > 0})
    assert len(positive) >= 2, "version 2 lowers no two enterprises' points differently"
    mid = len(positive) // 2
    threshold = (positive[mid - 1] + positive[mid]) / 2 if mid else positive[0] / 2
    expected_drops = {c for c, d in drops.items() if d > threshold}
    assert expected_drops and expected_drops != set(watched)

    holder = v2_owners[0]
    with _registry(world, holder) as reg:
        for record in reg.list(uscc=revoked, bank_id="bank"):
            if record.status == "active":
                reg.revoke(record.auth.auth_id, reason="enterprise withdrew (e2e)")
    promote(MODEL, "2", by="alice", reason="e2e challenger", tracking=world.tracking)

    listing = tmp_path / "watch.txt"
    listing.write_text("# watch list\n" + "\n".join(codes) + "\n\n", encoding="utf-8")
    started = time.time()
    result = CliRunner().invoke(
        # The version just promoted, by number: the bank re-resolves aliases only every 10 s.
        app, ["watch", "--list", str(listing), "--model", f"{MODEL}:2", "--drop",
              repr(threshold), "--config", str(world.fed.configs["bank"]), "--json"],
    )  # fmt: skip
    assert result.exit_code == 1, result.output  # 1: alerts
    data = json.loads(result.output)
    assert data["model_version"] == "2"
    items = {i["uscc"]: i for i in data["items"]}
    assert list(items) == codes
    for code in watched:
        assert items[code]["status"] == "ok"
        assert abs(items[code]["points"] - v2[code]) < 1e-6
        assert items[code]["previous_version"] == "1"
        assert abs(items[code]["previous_points"] - v1[code]) < 1e-9
    alerts = {a["uscc"]: a for a in data["alerts"]}
    assert {c for c, a in alerts.items() if a["alert"] == "drop"} == expected_drops
    assert alerts[revoked]["alert"] == "unscorable"
    assert alerts[revoked]["status"] == f"{holder}:revoked"
    assert set(alerts) == expected_drops | {revoked}

    # Every alert is on the bank's audit record, subject = the enterprise.
    log = AuditLog(world.bank.resolved_audit_url, "bank")
    try:
        records = [r for r in log.query() if r.operation == "monitor.alert" and r.ts >= started]
        assert log.verify().ok
    finally:
        log.close()
    assert {r.subject for r in records} == set(alerts)
    assert all(r.model_id == f"{MODEL}/2" for r in records)
    assert {r.decision for r in records if r.subject == revoked} == {"unscorable"}


def test_a_failing_score_log_does_not_fail_the_score():
    from sqlalchemy.exc import OperationalError

    from parties.bank.score_log import log_served

    class Broken:
        url = "sqlite:///broken"

        def record_reply(self, reply, *, kind):
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    counts: dict[str, int] = {}
    reply = bank_pb2.ScoreReply(uscc="x", model_name=MODEL, model_version="1", scored=True)
    log_served(Broken(), reply, kind="one", counts=counts)  # type: ignore[arg-type]
    assert counts == {"score_log_failed": 1}
