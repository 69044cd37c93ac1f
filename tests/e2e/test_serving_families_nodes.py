"""Scorecard and LR versions served by the bank node (issue 12, part 3), over real node processes.

One small federation (mTLS on loopback, 2048-bit Paillier): a vertical LR and a federated
scorecard are trained on one alignment, registered in a temporary MLflow store and served by
``Bank.Score`` / ``Bank.ScoreBatch``. A served score must equal the model's own prediction for
that row at training (the report's test scores), a refusing holder names the enterprise's
status, and a batch lists the refused as excluded instead of failing.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from federation.transport.base import PeerRefused, new_meta
from protos import bank_pb2

pytestmark = pytest.mark.e2e

SALT = b"e2e-serving-families"
LR_MODEL = "credit-lr"
CARD_MODEL = "credit-scorecard"


@pytest.fixture(scope="module")
def world(start_bank_world):
    from parties.bank.linear import train_logistic
    from parties.bank.scorecard import train_scorecard
    from parties.node import holder_peers
    from xinyidai.tracking.register import register_scorecard

    base = start_bank_world("families", enterprises=1500, seed=5, salt=SALT, align_job="fam-align")
    with (
        holder_peers(base.bank, audit=base.audit, service="WoeHolder") as woe,
        holder_peers(base.bank, audit=base.audit, service="LinearHolder") as linear,
        holder_peers(base.bank, audit=base.audit, service="ScorecardHolder") as points,
    ):
        lr, lr_report = train_logistic(
            base.bank,
            base.alignment,
            holders=linear,
            params={"key_bits": 2048, "workers": 1, "max_iter": 2, "standardize": True},
            job_id="fam-lr",
        )
        card, card_report = train_scorecard(
            base.bank,
            base.alignment,
            woe_holders=woe,
            linear_holders=linear,
            points_holders=points,
            params={"key_bits": 2048, "workers": 1, "max_iter": 2, "min_iv": 0.0},
            job_id="fam-sc",
        )
    versions = {}
    for name, model, report in ((LR_MODEL, lr, lr_report), (CARD_MODEL, card, card_report)):
        run = register_scorecard(
            base.bank,
            model,
            report,
            datasets=[],
            consent={},
            model_name=name,
            tracking=base.tracking,
        )
        versions[name] = run.version
    return SimpleNamespace(
        **vars(base),
        lr=lr,
        lr_report=lr_report,
        card=card,
        card_report=card_report,
        versions=versions,
    )


def _call(world, method: str, request):
    from parties.node import operator_client

    with operator_client(world.bank) as client:
        return client.call(method, request)


def _score(world, model: str, code: str):
    request = bank_pb2.ScoreRequest(
        meta=new_meta("financing"), uscc=code, model_name=model, model_ref=world.versions[model]
    )
    return _call(world, "Score", request)


def _aligned_codes(world) -> list[str]:
    from parties.bank.table import BankTable

    table = BankTable.load(world.bank)
    return [table.codes[i] for i in world.alignment.bank_rows]


def _active(world, holder: str) -> set[str]:
    from federation.pki import load_platform_public_key
    from parties.consent import ConsentRegistry

    node = world.fed.node_dir(holder)
    key = load_platform_public_key(node / "platform_signing.pub")
    with ConsentRegistry.for_node_dir(node, key, node_id=holder) as reg:
        return {r.auth.uscc for r in reg.list(bank_id="bank") if r.status == "active"}


def _authorised_test_rows(world, report) -> list[tuple[str, int]]:
    """(code, index into the report's test arrays) of authorised test enterprises."""
    both = _active(world, "tax") & _active(world, "utility")
    aligned = _aligned_codes(world)
    return [
        (aligned[int(p)], k) for k, p in enumerate(report.test_positions) if aligned[int(p)] in both
    ]


def test_lr_score_equals_the_models_own_prediction(world):
    rows = _authorised_test_rows(world, world.lr_report)[:3]
    assert rows, "no authorised enterprise among the test rows"
    for code, k in rows:
        reply = _score(world, LR_MODEL, code)
        assert reply.scored and not reply.missing_sources
        assert reply.model_family == "logistic"
        assert reply.model_version == world.versions[LR_MODEL]
        assert abs(reply.probability_default - world.lr_report.test_scores[k]) <= 1e-9
        log_odds = np.log(reply.probability_default / (1 - reply.probability_default))
        assert abs(reply.points - (600 + 50 / np.log(2) * (np.log(1 / 19) - log_odds))) < 1e-6
        assert {s.node_id for s in reply.sources} == {"bank", "tax", "utility"}
        # below the base (the points of the intercept alone): a reason is always given
        base = 600 + 50 / np.log(2) * (np.log(1 / 19) - float(world.lr.intercept_[0]))
        if reply.points < base - 1e-9:
            assert list(reply.reason_categories)
        assert {r.source for r in reply.reasons} == {"bank", "tax+utility"}
        if "serving_mode" in reply.DESCRIPTOR.fields_by_name:
            assert reply.serving_mode == "private"


def test_scorecard_points_and_pd_equal_the_models_own(world):
    rows = _authorised_test_rows(world, world.card_report)[:3]
    assert rows
    for code, k in rows:
        reply = _score(world, CARD_MODEL, code)
        assert reply.scored and reply.model_family == "scorecard"
        assert abs(reply.points - world.card_report.test_points[k]) <= 1e-9
        assert abs(reply.probability_default - world.card_report.test_scores[k]) <= 1e-9
        assert list(reply.reason_categories), "a scorecard below its maximum names categories"
        assert all(r.contribution <= 0 for r in reply.reasons)


def _records_about(world, holder: str, code: str) -> list[tuple[str, str, str]]:
    """(operation, status, authorisation id) of every record about ``code`` at ``holder``."""
    from federation.audit import AuditLog, sqlite_url

    with AuditLog(sqlite_url(world.fed.node_dir(holder) / "audit.db"), holder) as log:
        return [(e.operation, s.status, s.auth_id) for e, s in log.subjects_of(code)]


def test_a_scorecard_score_asks_each_holder_once_and_records_it(world):
    """One score: one ``ScorePoints`` per holder (linear predictor, total and category points
    together), passing the gate and leaving one record naming the enterprise and the
    authorisation that covered it (the scorer used to make three calls per holder)."""
    code, _ = _authorised_test_rows(world, world.card_report)[1]
    holders = sorted(world.card.lr_.model_.holders)
    before = {h: _records_about(world, h, code) for h in holders}
    assert _score(world, CARD_MODEL, code).scored
    for h in holders:
        new = _records_about(world, h, code)[len(before[h]) :]
        assert [op for op, _, _ in new] == ["ScorePoints"], (h, new)
        assert all(status == "allow" and auth_id for _, status, auth_id in new), (h, new)


def test_a_refusing_holder_names_the_enterprise_and_reason(world):
    revoked = world.examples["tax"]["revoked"]
    if revoked not in set(_aligned_codes(world)):
        pytest.skip("the revoked example is not in the alignment")
    with pytest.raises(PeerRefused) as excinfo:
        _score(world, LR_MODEL, revoked)
    assert "tax" in excinfo.value.detail
    assert revoked in excinfo.value.detail


def test_batch_excludes_the_refused_ranks_and_marks_ties(world):
    rows = _authorised_test_rows(world, world.card_report)[:6]
    codes = [c for c, _ in rows]
    revoked = world.examples["tax"]["revoked"]
    listed = [*codes, revoked, "91510104MA0000000X"]
    reply = _call(
        world,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta("financing"),
            model_name=CARD_MODEL,
            model_ref=world.versions[CARD_MODEL],
            usccs=listed,
        ),
    )
    assert reply.model_family == "scorecard"
    assert [e.uscc for e in reply.enterprises][: len(codes)] == codes
    by_code = {e.uscc: e for e in reply.enterprises}
    for code, k in rows:
        assert by_code[code].status == "ok"
        assert abs(by_code[code].points - world.card_report.test_points[k]) <= 1e-9
    assert by_code[revoked].status != "ok" and not by_code[revoked].HasField("points")
    assert sum(reply.excluded.values()) == 2
    points = [by_code[c].points for c in codes]
    for code in codes:
        assert by_code[code].tie == (points.count(by_code[code].points) > 1)
    # the ranked whitelist: highest first, only scored enterprises
    region = codes[0][2:4]
    ranked = _call(
        world,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta("financing"),
            model_name=LR_MODEL,
            model_ref=world.versions[LR_MODEL],
            region=region,
            threshold=float("-inf"),
        ),
    )
    got = [e.points for e in ranked.enterprises]
    assert ranked.scored == len(got) > 0
    # highest first on the tie grid; scores equal on it are ties, shown and ordered by code
    from parties.bank.scoring import tie_key

    keys = tie_key(np.asarray(got))
    assert np.all(np.diff(keys) <= 0)
    for a, b in zip(ranked.enterprises, ranked.enterprises[1:], strict=False):
        if tie_key(np.asarray([a.points]))[0] == tie_key(np.asarray([b.points]))[0]:
            assert a.tie and b.tie and a.uscc < b.uscc
    assert all(e.status == "ok" for e in ranked.enterprises)
    assert ranked.candidates > ranked.scored  # refused and not-aligned ones are excluded


def test_the_pyfunc_serves_a_scorecard_version_like_grpc(world, monkeypatch):
    import mlflow
    import pandas as pd
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    code, _ = _authorised_test_rows(world, world.card_report)[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.tracking.tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", world.tracking.registry_uri)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    mlflow.set_tracking_uri(world.tracking.tracking_uri)
    mlflow.set_registry_uri(world.tracking.registry_uri)
    model = mlflow.pyfunc.load_model(f"models:/{CARD_MODEL}/{world.versions[CARD_MODEL]}")
    out = model.predict(pd.DataFrame({"uscc": [code]}))
    reply = _score(world, CARD_MODEL, code)
    assert out["status"].iloc[0] == "ok" and out["model_family"].iloc[0] == "scorecard"
    assert out["points"].iloc[0] == reply.points
    assert out["probability_default"].iloc[0] == reply.probability_default
    assert out["reason_categories"].iloc[0] == ",".join(reply.reason_categories)
