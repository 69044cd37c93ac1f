"""End to end: the bank's scoring service over three node processes (mTLS on loopback).

Trains a small SecureBoost model (2048-bit keys), registers it in a temporary MLflow store,
promotes it to champion, then scores through the bank node: by gRPC, by the CLI, by the pyfunc,
by batch - and checks every refusal a holder makes itself.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from federation.audit import AuditLog, sqlite_url
from federation.errors import PeerError
from federation.transport.base import PeerRefused, new_meta
from protos import bank_pb2, holder_pb2

pytestmark = pytest.mark.e2e

SALT = b"e2e-scoring-salt"
PARAMS = dict(n_trees=3, max_depth=3, learning_rate=0.3, max_bin=16, random_state=0)
MODEL = "credit-sbt"


@pytest.fixture(scope="module")
def world(start_bank_world):
    from xinyidai.tracking import promote

    base = start_bank_world("scoring", enterprises=700, seed=11, salt=SALT, align_job="score-align")
    trained = base.train(MODEL, params=PARAMS, scoring_endpoint=True)
    promote(MODEL, trained.version, by="alice", reason="e2e", tracking=base.tracking)
    return SimpleNamespace(**vars(base), **vars(trained))


# -- helpers ------------------------------------------------------------------------------------
def _bank_call(world, method: str, request):
    from parties.node import operator_client

    with operator_client(world.bank) as client:
        return client.call(method, request)


def _score(world, code: str, *, ref: str = "champion", purpose: str = "financing"):
    return _bank_call(
        world,
        "Score",
        bank_pb2.ScoreRequest(meta=new_meta(purpose), uscc=code, model_name=MODEL, model_ref=ref),
    )


def _registry(world, holder: str):
    from federation.pki import load_platform_public_key
    from parties.consent import ConsentRegistry

    key = load_platform_public_key(world.fed.node_dir(holder) / "platform_signing.pub")
    return ConsentRegistry.for_node_dir(world.fed.node_dir(holder), key, node_id=holder)


def _active(world, holder: str) -> set[str]:
    with _registry(world, holder) as reg:
        return {r.auth.uscc for r in reg.list(bank_id="bank") if r.status == "active"}


def _codes_with(world, holder: str, status: str) -> set[str]:
    with _registry(world, holder) as reg:
        return {r.auth.uscc for r in reg.list(bank_id="bank") if r.status == status}


def _aligned_codes(world) -> list[str]:
    from parties.bank.table import BankTable

    table = BankTable.load(world.bank)
    return [table.codes[i] for i in world.alignment.bank_rows]


def _owners(world) -> list[str]:
    return sorted(world.clf.model_.split_owners() - {"bank"})


def _authorised(world) -> list[str]:
    """Aligned enterprises with an active authorisation at both holders."""
    both = _active(world, "tax") & _active(world, "utility")
    return [c for c in _aligned_codes(world) if c in both]


def _refusal(excinfo) -> tuple[str, str]:
    exc = excinfo.value
    assert isinstance(exc, PeerRefused), exc
    return exc.refusal, exc.detail


# -- scoring ------------------------------------------------------------------------------------
def test_score_equals_predict_proba_computed_through_the_alignment_rows(world):
    from parties.bank.table import BankTable
    from parties.node import holder_peers

    assert _owners(world), "no holder won a split: nothing federated to score"
    codes = _authorised(world)[:3]
    aligned = _aligned_codes(world)
    table = BankTable.load(world.bank)
    positions = [aligned.index(c) for c in codes]
    bank_rows = [int(world.alignment.bank_rows[p]) for p in positions]
    with holder_peers(world.bank, audit=None, service="SecureBoostHolder") as peers:
        expected = world.clf.predict_proba(
            table.features.iloc[bank_rows].reset_index(drop=True), holders=peers, rows=positions
        )[:, 1]
    for code, want in zip(codes, expected, strict=True):
        reply = _score(world, code)
        assert reply.scored and not reply.missing_sources
        assert reply.model_name == MODEL and reply.model_version == world.version
        assert abs(reply.probability_default - want) <= 1e-9
        log_odds = np.log(want / (1 - want))
        assert abs(reply.points - (600 + 50 / np.log(2) * (np.log(1 / 19) - log_odds))) < 1e-6
        assert {s.node_id: s.status for s in reply.sources} == {
            "bank": "ok",
            **{h: "ok" for h in _owners(world)},
        }
        assert {r.source for r in reply.reasons} == {"bank", *_owners(world)}
        allowed = {"bank", "tax", "electricity", "water", "gas"}
        assert set(reply.reason_categories) <= allowed


def test_score_by_cli_and_by_version_number(world):
    from xinyidai.cli.score import app

    code = _authorised(world)[0]
    by_alias = _score(world, code)
    result = CliRunner().invoke(
        app, ["one", code, "--model", f"{MODEL}:{world.version}", "--config",
              str(world.fed.configs["bank"]), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["scored"] is True and data["model_version"] == world.version
    assert abs(data["points"] - by_alias.points) < 1e-9
    human = CliRunner().invoke(
        app, ["one", code, "--model", MODEL, "--config", str(world.fed.configs["bank"])]
    )
    assert human.exit_code == 0 and f"{by_alias.points:.1f}" in human.output


def test_score_by_pyfunc_reports_each_code(world, monkeypatch):
    import mlflow
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    code = _authorised(world)[0]
    revoked = world.examples["tax"]["revoked"]
    unknown = world.examples["tax"]["unauthorised"]
    # A user points MLflow at the store as below; set_*_uri also writes MLFLOW_TRACKING_URI and
    # MLFLOW_REGISTRY_URI into os.environ, which node processes started by a later module would
    # inherit. monkeypatch records the variables and MLflow's globals and restores them all.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", world.tracking.tracking_uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", world.tracking.registry_uri)
    monkeypatch.setattr(tracking_utils, "_tracking_uri", tracking_utils._tracking_uri)
    monkeypatch.setattr(registry_utils, "_registry_uri", registry_utils._registry_uri)
    mlflow.set_tracking_uri(world.tracking.tracking_uri)
    mlflow.set_registry_uri(world.tracking.registry_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    out = model.predict(pd.DataFrame({"uscc": [code, revoked, unknown]}))
    assert list(out["uscc"]) == [code, revoked, unknown]
    assert out["status"].iloc[0] == "ok"
    assert abs(out["points"].iloc[0] - _score(world, code).points) < 1e-9
    for i in (1, 2):
        assert out["status"].iloc[i] != "ok" and np.isnan(out["points"].iloc[i])
    if "tax" in _owners(world):
        assert out["status"].iloc[1] == "tax:revoked"
    assert set(out["model_version"]) == {world.version}


def test_batch_by_region_and_industry_ranks_only_authorised_enterprises(world):
    from parties.bank.table import BankTable

    code = _authorised(world)[0]
    single = _score(world, code)
    region = code[2:8]
    reply = _bank_call(
        world,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta("financing"), model_name=MODEL, model_ref="champion",
            region=region, threshold=-1e9,
        ),
    )  # fmt: skip
    listed = {e.uscc: e for e in reply.enterprises}
    assert code in listed and abs(listed[code].points - single.points) < 1e-9
    points = [e.points for e in reply.enterprises]
    assert points == sorted(points, reverse=True)
    assert all(c[2:8] == region for c in listed)
    authorised = set(_authorised(world))
    assert set(listed) <= authorised
    assert reply.scored == len(listed) and reply.scored + sum(reply.excluded.values()) == (
        reply.candidates
    )
    assert any("revoked" in k or "expired" in k or "no-consent" in k for k in reply.excluded)
    # a threshold and a limit
    cut = sorted(points, reverse=True)[min(4, len(points) - 1)]
    top = _bank_call(
        world,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta("financing"), model_name=MODEL, model_ref="champion",
            region=region, threshold=cut, limit=3,
        ),
    )  # fmt: skip
    assert [e.uscc for e in top.enterprises] == [e.uscc for e in reply.enterprises][:3]
    assert all(e.points >= cut for e in top.enterprises)
    # by industry (the bank's table)
    table = BankTable.load(world.bank)
    from parties.data.loader import load_table

    raw = load_table(world.bank.data.path, world.bank.data.table_schema("bank"))
    section = str(raw.loc[code, "industry"])
    by_industry = _bank_call(
        world,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta("financing"), model_name=MODEL, model_ref="champion",
            industry=section, threshold=-1e9,
        ),
    )  # fmt: skip
    assert code in {e.uscc for e in by_industry.enterprises}
    assert all(str(raw.loc[e.uscc, "industry"]) == section for e in by_industry.enterprises)
    assert by_industry.candidates == int((raw["industry"] == section).sum()) <= len(table.codes)


# -- refusals -----------------------------------------------------------------------------------
def test_missing_expired_and_revoked_authorisations_are_refused_by_the_holder(world):
    aligned = set(_aligned_codes(world))
    owner = _owners(world)[0]
    active = _active(world, owner)
    cases = {
        "missing": next(
            c for c in sorted(aligned) if c not in active and c not in
            _codes_with(world, owner, "revoked") | _codes_with(world, owner, "expired")
        ),
        "expired": sorted((_codes_with(world, owner, "expired") & aligned) - active)[0],
        "revoked": sorted((_codes_with(world, owner, "revoked") & aligned) - active)[0],
    }  # fmt: skip
    words = {"missing": "no authorisation", "expired": "expired", "revoked": "revoked"}
    for case, code in cases.items():
        with pytest.raises(PeerError) as refused:
            _score(world, code)
        refusal, detail = _refusal(refused)
        assert refusal == "consent" and words[case] in detail, (case, detail)
        assert "holder '" in detail


def test_wrong_purpose_is_refused_by_the_bank_and_by_each_holder(world):
    from parties.node import connect

    code = _authorised(world)[0]
    with pytest.raises(PeerError) as refused:
        _score(world, code, purpose="marketing")
    assert _refusal(refused)[0] == "purpose"
    # The holder's own check, asked directly with the bank's identity.
    for holder in _owners(world):
        peer = next(p for p in world.bank.holders if p.node_id == holder)
        with connect(world.bank, peer, audit=None) as client:
            with pytest.raises(PeerError) as at_holder:
                client.call(
                    "ScoreReach",
                    holder_pb2.ScoreReachRequest(
                        meta=new_meta("marketing", job_id=world.report.job_id, model_id="x/1"),
                        uscc=code,
                        part_sha256=world.parts[holder],
                    ),
                )
        assert _refusal(at_holder)[0] == "purpose"


def test_disputed_enterprise_is_refused_until_the_dispute_is_resolved(world):
    from parties.disputes import DisputeRegistry

    code = _authorised(world)[1]
    holder = _owners(world)[0]
    categories = ["tax"] if holder == "tax" else None
    node_dir = world.fed.node_dir(holder)
    log = AuditLog(sqlite_url(node_dir / "audit.db"), holder)
    disputes = DisputeRegistry.for_node_dir(node_dir, audit=log, node_id=holder)
    try:
        record = disputes.dispute(
            code, reason="wrong arrears", by="enterprise", categories=categories
        )
        with pytest.raises(PeerError) as refused:
            _score(world, code)
        refusal, detail = _refusal(refused)
        assert refusal == "disputed" and code in detail and f"holder '{holder}'" in detail
        batch = _bank_call(
            world,
            "ScoreBatch",
            bank_pb2.ScoreBatchRequest(
                meta=new_meta("financing"), model_name=MODEL, model_ref="champion",
                usccs=[code],
            ),
        )  # fmt: skip
        assert batch.enterprises[0].status == f"{holder}:disputed"
        disputes.resolve(record.dispute_id, note="repaired", by="platform")
        assert _score(world, code).scored
    finally:
        disputes.close()
        log.close()


def test_wrong_or_missing_model_version_and_mismatched_part_digest_are_refused(world):
    from parties.node import connect
    from xinyidai.tracking import log_training, secureboost_record

    code = _authorised(world)[0]
    with pytest.raises(PeerError) as unknown:
        _score(world, code, ref="99")
    assert unknown.value.code == "FAILED_PRECONDITION" and "99" in unknown.value.detail
    with pytest.raises(PeerError) as no_alias:
        _score(world, code, ref="retired")
    assert "retired" in no_alias.value.detail
    # A version whose recorded holder digest is not what the holder holds.
    owner = _owners(world)[0]
    forged = {**world.parts, owner: "0" * 64}
    record = secureboost_record(
        world.clf, world.report, parties=["bank", "tax", "utility"], model_name=MODEL,
        holder_parts=forged,
    )  # fmt: skip
    bad = log_training(record, tracking=world.tracking)
    with pytest.raises(PeerError) as mismatch:
        _score(world, code, ref=bad.version)
    refusal, detail = _refusal(mismatch)
    assert refusal == "model-part" and f"holder '{owner}'" in detail and "sha256" in detail
    # A part the holder does not hold at all.
    peer = next(p for p in world.bank.holders if p.node_id == owner)
    with connect(world.bank, peer, audit=None) as client:
        with pytest.raises(PeerError) as missing:
            client.call(
                "ScoreReach",
                holder_pb2.ScoreReachRequest(
                    meta=new_meta("financing", job_id="never-trained", model_id=f"{MODEL}/7"),
                    uscc=code,
                ),
            )
    assert _refusal(missing)[0] == "model-part"


def test_a_holder_without_data_is_named_and_no_score_is_given(world):
    from parties.authorisation import PlatformSigner
    from parties.data.loader import load_table
    from parties.data.schema import schema_for

    owners = _owners(world)
    lacking = owners[-1]
    held = set(load_table(world.fed.node_dir(lacking) / "data" / f"{lacking}.csv",
                          schema_for(lacking)).index)  # fmt: skip
    others = [h for h in owners if h != lacking]
    ok_elsewhere = set.intersection(*[_active(world, h) for h in others]) if others else None
    from parties.bank.table import BankTable

    bank_codes = BankTable.load(world.bank).codes
    code = next(
        c for c in bank_codes if c not in held and (ok_elsewhere is None or c in ok_elsewhere)
    )
    signer = PlatformSigner.from_file(world.fed.pki.platform_signing_key)
    from xinyidai.demo import HOLDERS

    now = time.time()
    with _registry(world, lacking) as reg:
        reg.grant(
            signer.issue(
                uscc=code, bank_id="bank", purpose="financing", categories=HOLDERS[lacking],
                valid_from=now - 60, valid_until=now + 86_400,
            )
        )  # fmt: skip
    reply = _score(world, code)
    assert not reply.scored and list(reply.missing_sources) == [lacking]
    assert {s.node_id: s.status for s in reply.sources}[lacking] == "no-data"
    assert reply.points == 0 and reply.probability_default == 0


# -- verification and audit ---------------------------------------------------------------------
def test_verify_answers_yes_or_no_only_for_authorised_enterprises(world):
    from parties.data.loader import load_table
    from parties.data.schema import schema_for
    from xinyidai.cli.score import app

    code = _authorised(world)[0]
    tax = load_table(world.fed.node_dir("tax") / "data" / "tax.csv", schema_for("tax"))
    expected = "no" if bool(tax.loc[code, "abnormal_taxpayer"]) else "yes"
    reply = _bank_call(
        world,
        "Verify",
        bank_pb2.BankVerifyRequest(
            meta=new_meta("financing"), holder="tax", uscc=code,
            predicate_json='{"kind": "normal_taxpayer"}',
        ),
    )  # fmt: skip
    assert reply.answer == expected and reply.holder == "tax"
    result = CliRunner().invoke(
        app, ["verify", world.examples["tax"]["unauthorised"], "--holder", "tax", "--predicate",
              '{"kind": "normal_taxpayer"}', "--config", str(world.fed.configs["bank"])],
    )  # fmt: skip
    assert result.exit_code == 2 and "refused (consent)" in result.output


def test_score_requests_are_audited_at_both_ends_with_the_version(world):
    code = _authorised(world)[0]
    _score(world, code)
    model_id = f"{MODEL}/{world.version}"
    bank = AuditLog(sqlite_url(world.fed.node_dir("bank") / "audit.db"), "bank")
    try:
        records = [r for r in bank.query() if r.model_id == model_id]
    finally:
        bank.close()
    assert any(r.direction == "served" and r.operation == "Score" and r.subject == code
               for r in records)  # fmt: skip
    assert any(r.direction == "made" and r.operation == "ScoreReach" and r.subject == code
               for r in records)  # fmt: skip
    assert any(r.operation == "ScoreBatch" for r in records)
    for holder in _owners(world):
        log = AuditLog(sqlite_url(world.fed.node_dir(holder) / "audit.db"), holder)
        try:
            served = [r for r in log.query() if r.model_id == model_id and r.direction == "served"]
            assert log.verify().ok
        finally:
            log.close()
        assert any(r.operation == "ScoreReach" and r.subject == code for r in served)
        assert any(r.decision == "deny" for r in served)  # the refusals above are on record


def test_cli_batch_prints_a_whitelist(world):
    from xinyidai.cli.score import app

    code = _authorised(world)[0]
    result = CliRunner().invoke(
        app, ["batch", "--region", code[2:6], "--threshold", "0", "--limit", "5", "--model",
              f"{MODEL}@champion", "--config", str(world.fed.configs["bank"]), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert 0 < len(data["enterprises"]) <= 5
    assert all(e["uscc"][2:6] == code[2:6] for e in data["enterprises"])
