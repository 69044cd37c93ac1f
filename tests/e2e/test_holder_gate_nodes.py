"""End to end: the holder gate over three node processes (mTLS on loopback, 2048-bit keys).

Issue 10, findings 1, 2 and 6: ``SecureBoostHolder.Predict``, ``LinearHolder.Predict`` and
``ScorecardHolder.ScorePoints`` (also ``by_category``) used to answer for any row of any
alignment — a revoked, never authorised or disputed enterprise was scored through them, and
their records named no enterprise; ``ScoreRequest.auth_ids`` was never read; a batch score left
no per-enterprise record at the holder. Here the bank trains a SecureBoost model and a
scorecard exactly as the demo does (each job evaluated once, inside its training), then asks
the holders directly, as a hostile bank would.
"""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from federation.audit import AuditLog, sqlite_url
from federation.errors import PeerError
from federation.transport.base import PeerRefused, new_meta
from parties.config import load_node_config
from protos import bank_pb2, linear_pb2, scorecard_pb2, secureboost_pb2

pytestmark = pytest.mark.e2e

SALT = b"e2e-holder-gate-salt"
SB_PARAMS = dict(n_trees=3, max_depth=3, learning_rate=0.3, max_bin=16, random_state=0)
CARD_PARAMS = dict(key_bits=2048, workers=1, max_iter=3, max_bin=8)
HOLDERS = ("tax", "utility")


@pytest.fixture(scope="module")
def world(start_federation, tmp_path_factory: pytest.TempPathFactory):
    from parties.bank.alignment import align
    from parties.bank.scorecard import scorecard_over_nodes
    from parties.bank.secureboost import train_secureboost
    from parties.node import holder_peers

    workdir = tmp_path_factory.mktemp("gate")
    fed, _ = start_federation(workdir, enterprises=600, seed=11, deadline_s=60.0, workers=1)
    bank = load_node_config(fed.configs["bank"])
    audit = AuditLog(bank.resolved_audit_url, "bank")
    with holder_peers(bank, audit=audit) as peers:
        alignment = align(bank, peers, job_id="gate-align", salt=SALT, min_overlap=0.2, audit=audit)
    with holder_peers(bank, audit=audit, service="SecureBoostHolder") as peers:
        clf, report = train_secureboost(
            bank,
            alignment,
            holders=peers,
            params={**SB_PARAMS, "key_bits": 2048, "workers": 1},
            job_id="gate-sb",
            audit=audit,
        )
    card, card_report = scorecard_over_nodes(
        bank, alignment, params=CARD_PARAMS, job_id="gate-sc", audit=audit
    )
    yield SimpleNamespace(
        fed=fed,
        bank=bank,
        alignment=alignment,
        clf=clf,
        report=report,
        card=card,
        card_report=card_report,
    )
    audit.close()


# -- helpers ------------------------------------------------------------------------------------
def _aligned(world) -> list[str]:
    from parties.bank.table import BankTable

    table = BankTable.load(world.bank)
    return [table.codes[i] for i in world.alignment.bank_rows]


def _registry(world, holder: str):
    from federation.pki import load_platform_public_key
    from parties.consent import ConsentRegistry

    key = load_platform_public_key(world.fed.node_dir(holder) / "platform_signing.pub")
    return ConsentRegistry.for_node_dir(world.fed.node_dir(holder), key, node_id=holder)


def _status(world, holder: str) -> dict[str, tuple[str, str]]:
    """code -> (status, auth id) of the bank's authorisations at ``holder`` (active wins)."""
    out: dict[str, tuple[str, str]] = {}
    with _registry(world, holder) as reg:
        for r in reg.list(bank_id="bank"):
            if out.get(r.auth.uscc, ("",))[0] != "active":
                out[r.auth.uscc] = (r.status, r.auth.auth_id)
    return out


def _cases(world, holder: str) -> dict[str, tuple[str, int]]:
    """One aligned enterprise per case at ``holder``: (code, position in the alignment)."""
    aligned = _aligned(world)
    status = _status(world, holder)
    want = {
        "authorised": lambda c: status.get(c, ("",))[0] == "active",
        "revoked": lambda c: status.get(c, ("",))[0] == "revoked",
        "never": lambda c: c not in status,
    }
    out = {}
    for case, test in want.items():
        pos = next(i for i, c in enumerate(aligned) if test(c))
        out[case] = (aligned[pos], pos)
    return out


def _peer(world, holder: str, service: str):
    from parties.node import connect

    (peer,) = [p for p in world.bank.holders if p.node_id == holder]
    return connect(world.bank, peer, audit=None, service=service)


def _holder_audit(world, holder: str) -> AuditLog:
    return AuditLog(sqlite_url(world.fed.node_dir(holder) / "audit.db"), holder)


def _about(world, holder: str, code: str, operation: str):
    with _holder_audit(world, holder) as log:
        return [(e, s) for e, s in log.subjects_of(code) if e.operation == operation]


def _sb_predict(world, holder: str, rows: list[int]):
    with _peer(world, holder, "SecureBoostHolder") as peer:
        return peer.call(
            "Predict",
            secureboost_pb2.SecureBoostPredictRequest(
                meta=new_meta(job_id=world.report.job_id),
                rows=rows,
                alignment_id=world.alignment.job_id,
            ),
        )


def _card_holder(world) -> str:
    holders = sorted(world.card.lr_.model_.holders)
    assert holders, "no holder feature survived the IV selection: nothing federated"
    return holders[0]


def _lr_predict(world, holder: str, rows: list[int]):
    with _peer(world, holder, "LinearHolder") as peer:
        return peer.call(
            "Predict",
            linear_pb2.LinearPredictRequest(
                meta=new_meta(job_id=world.card.lr_.model_.job_id),
                rows=rows,
                alignment_id=world.alignment.job_id,
                nonce=os.urandom(16),
            ),
        )


def _points(world, holder: str, rows: list[int], *, by_category: bool):
    with _peer(world, holder, "ScorecardHolder") as peer:
        return peer.call(
            "ScorePoints",
            scorecard_pb2.ScorePointsRequest(
                meta=new_meta(job_id=world.card.lr_.model_.job_id),
                rows=rows,
                alignment_id=world.alignment.job_id,
                nonce=os.urandom(16),
                by_category=by_category,
            ),
        )


def _bank_call(world, method: str, request):
    from parties.node import operator_client

    with operator_client(world.bank) as client:
        return client.call(method, request)


# -- Predict / ScorePoints: consent per enterprise ----------------------------------------------
def _sb_owners(world) -> list[str]:
    """Holders whose splits the SecureBoost model uses (the ones its evaluation asked)."""
    owners = sorted(world.clf.model_.split_owners() - {"bank"})
    assert owners, "no holder won a split: nothing federated to score"
    return owners


def test_secureboost_predict_refuses_a_revoked_or_never_authorised_enterprise(world):
    for holder in _sb_owners(world):
        _predict_cases(world, holder)


def _predict_cases(world, holder: str) -> None:
    cases = _cases(world, holder)
    for case in ("revoked", "never"):
        code, pos = cases[case]
        with pytest.raises(PeerRefused) as refused:
            _sb_predict(world, holder, [pos])
        assert refused.value.refusal == "consent", case
        assert code in refused.value.detail and "nothing is answered" in refused.value.detail
        # the refusal is on record at the holder, naming the enterprise
        ((entry, subject),) = _about(world, holder, code, "Predict")[-1:]
        assert entry.decision == "deny" and subject.status.startswith("refused:")
    # an authorised enterprise is answered, and the record names the authorisation
    code, pos = cases["authorised"]
    reply = _sb_predict(world, holder, [pos])
    assert len(reply.trees) == len(world.clf.model_.trees)
    ((entry, subject),) = _about(world, holder, code, "Predict")[-1:]
    assert entry.decision == "allow" and subject.status == "allow"
    assert subject.auth_id == _status(world, holder)[code][1]


def test_a_disputed_enterprise_is_refused_by_predict_and_scorepoints(world):
    from parties.disputes import DisputeRegistry

    holder = _card_holder(world)
    code, pos = _cases(world, holder)["authorised"]
    node_dir = world.fed.node_dir(holder)
    asks = [
        lambda: _lr_predict(world, holder, [pos]),
        lambda: _points(world, holder, [pos], by_category=False),
        lambda: _points(world, holder, [pos], by_category=True),
    ]
    if holder in _sb_owners(world):
        asks.append(lambda: _sb_predict(world, holder, [pos]))
    for ask in asks:
        ask()  # answered before the dispute
    with _holder_audit(world, holder) as log:
        registry = DisputeRegistry.for_node_dir(node_dir, audit=log, node_id=holder)
        dispute = registry.dispute(code, reason="the figures are wrong", by="enterprise")
        try:
            for ask in asks:
                with pytest.raises(PeerRefused) as refused:
                    ask()
                assert refused.value.refusal == "disputed"
        finally:
            registry.resolve(dispute.dispute_id, note="checked", by="tax-officer")
            registry.close()
    for ask in asks:
        ask()  # resolved: answered again


@pytest.mark.parametrize("case", ["revoked", "never"])
def test_linear_predict_and_scorepoints_refuse_an_unauthorised_enterprise(world, case):
    holder = _card_holder(world)
    code, pos = _cases(world, holder)[case]
    for ask, operation in (
        (lambda: _lr_predict(world, holder, [pos]), "Predict"),
        (lambda: _points(world, holder, [pos], by_category=False), "ScorePoints"),
        (lambda: _points(world, holder, [pos], by_category=True), "ScorePoints"),
    ):
        with pytest.raises(PeerRefused) as refused:
            ask()
        assert refused.value.refusal == "consent"
        assert _about(world, holder, code, operation)[-1][1].status.startswith("refused:")
    # the authorised enterprise next to it is answered (by category too)
    _, ok = _cases(world, holder)["authorised"]
    assert len(_lr_predict(world, holder, [ok]).values) == 8
    reply = _points(world, holder, [ok], by_category=True)
    assert reply.categories and all(len(c.points) == 1 for c in reply.categories)


# -- post-training evaluation: once, inside the job, recorded per enterprise ----------------------
def test_the_training_evaluation_is_recorded_per_enterprise_and_a_second_one_is_refused(world):
    population = np.sort(np.r_[world.report.train_positions, world.report.test_positions])
    aligned = _aligned(world)
    for holder in _sb_owners(world):
        status = _status(world, holder)
        unauthorised = [
            aligned[p] for p in population if status.get(aligned[p], ("",))[0] != "active"
        ]
        assert unauthorised, "the fixture needs an unauthorised enterprise in the population"
        # the one evaluation (training's) covered it, on record as such
        evaluations = [
            (e, s)
            for e, s in _about(world, holder, unauthorised[0], "Predict")
            if s.status == "evaluation" and e.job_id == world.report.job_id
        ]
        assert len(evaluations) == 1  # (the scorecard's LR has its own, under its job id)
        # a second "evaluation" of the same rows is an ordinary request: refused
        with pytest.raises(PeerRefused) as refused:
            _sb_predict(world, holder, population.tolist())
        assert refused.value.refusal in ("consent", "disputed")


def test_scorecard_evaluation_was_answered_once_and_is_not_reopened(world):
    holder = _card_holder(world)
    test_rows = np.asarray(world.card_report.test_positions).tolist()
    for ask in (
        lambda: _lr_predict(world, holder, test_rows),
        lambda: _points(world, holder, test_rows, by_category=False),
    ):
        with pytest.raises(PeerRefused):
            ask()


# -- auth ids and per-enterprise records of scoring -----------------------------------------------
def _both_active(world) -> list[str]:
    statuses = [_status(world, h) for h in HOLDERS]
    return [c for c in _aligned(world) if all(s.get(c, ("",))[0] == "active" for s in statuses)]


def test_a_made_up_auth_id_is_refused_and_a_real_one_is_named_in_the_record(world):
    code = _both_active(world)[0]
    request = bank_pb2.ScoreRequest(
        meta=new_meta(), uscc=code, model_name=world.report.job_id, auth_ids=["0" * 32]
    )
    with pytest.raises(PeerRefused) as refused:
        _bank_call(world, "Score", request)
    assert refused.value.refusal == "auth-id"
    ids = {h: _status(world, h)[code][1] for h in HOLDERS}
    del request.auth_ids[:]
    request.auth_ids.extend(["0" * 32, *ids.values()])
    reply = _bank_call(world, "Score", request)
    assert reply.scored
    owners = _sb_owners(world)
    assert {s.node_id: s.auth_id for s in reply.sources if s.node_id in owners} == {
        h: ids[h] for h in owners
    }
    for holder in owners:
        entry, subject = _about(world, holder, code, "ScoreReach")[-1]
        assert (entry.decision, subject.status, subject.auth_id) == ("allow", "allow", ids[holder])
    with pytest.raises(PeerError, match="auth_ids") as malformed:  # before any work
        _bank_call(
            world,
            "Score",
            bank_pb2.ScoreRequest(
                meta=new_meta(), uscc=code, model_name=world.report.job_id, auth_ids=["x" * 999]
            ),
        )
    assert malformed.value.code == "INVALID_ARGUMENT" and "(999 chars)" in malformed.value.detail
    assert "x" * 40 not in malformed.value.detail  # the value is not echoed


def test_a_batch_score_appears_in_the_enterprises_subject_report_at_the_holder(world):
    from xinyidai.cli.main import app

    owners = _sb_owners(world)
    codes = _both_active(world)[:3]
    revoked = _cases(world, owners[0])["revoked"][0]
    reply = _bank_call(
        world,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta(), model_name=world.report.job_id, usccs=[*codes, revoked]
        ),
    )
    assert [e.status for e in reply.enterprises][:3] == ["ok"] * 3
    holder = owners[0]
    auth_id = _status(world, holder)[codes[1]][1]
    result = CliRunner().invoke(
        app,
        ["subject", "report", codes[1], "--node-dir", str(world.fed.node_dir(holder)), "--json"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    batch = [
        a
        for a in report["accesses"]
        if a["operation"] == "ScoreReach" and a["job_id"] == world.report.job_id
    ]
    assert batch and batch[-1]["status"] == "allow" and batch[-1]["auth_id"] == auth_id
    uses = [u for u in report["uses"] if u["kind"] == "request" and "ScoreReach" in u["detail"]]
    assert uses and auth_id in uses[0]["detail"]
    # the revoked enterprise's report shows the refused batch access too
    with _holder_audit(world, holder) as log:
        refused = [s for e, s in log.subjects_of(revoked) if e.operation == "ScoreReach"]
    assert refused and refused[-1].status.startswith("refused:")
