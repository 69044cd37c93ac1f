"""End to end: a SecureBoost version registered for ``private`` serving, over three node
processes (mTLS on loopback): scores equal the ``fast`` path's for every authorised enterprise,
every holder answer passes the holder gate and is audited, the holders' products travel sealed.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from federation.audit import AuditLog, sqlite_url
from federation.errors import PeerError
from federation.transport.base import PeerRefused, new_meta
from protos import bank_pb2

pytestmark = pytest.mark.e2e

SALT = b"e2e-private-scoring"
PARAMS = dict(n_trees=3, max_depth=3, learning_rate=0.3, max_bin=16, random_state=0)
MODEL = "credit-sbt-private"


@pytest.fixture(scope="module")
def world(start_bank_world):
    from parties.bank.registry import mlflow_client
    from parties.bank.served import TAG_SERVING_MODE

    base = start_bank_world("private", enterprises=500, seed=5, salt=SALT, align_job="prv-align")
    trained = base.train(MODEL, params=PARAMS)
    mlflow_client(base.tracking).set_model_version_tag(
        MODEL, str(trained.version), TAG_SERVING_MODE, "private"
    )
    return SimpleNamespace(**vars(base), **vars(trained))


def _call(world, method: str, request):
    from parties.node import operator_client

    with operator_client(world.bank) as client:
        return client.call(method, request)


def _active(world, holder: str) -> set[str]:
    from federation.pki import load_platform_public_key
    from parties.consent import ConsentRegistry

    node_dir = world.fed.node_dir(holder)
    key = load_platform_public_key(node_dir / "platform_signing.pub")
    with ConsentRegistry.for_node_dir(node_dir, key, node_id=holder) as reg:
        return {r.auth.uscc for r in reg.list(bank_id="bank") if r.status == "active"}


def _aligned(world) -> list[str]:
    from parties.bank.table import BankTable

    table = BankTable.load(world.bank)
    return [table.codes[i] for i in world.alignment.bank_rows]


def _owners(world) -> list[str]:
    return sorted(world.clf.model_.split_owners() - {"bank"})


def _batch(world, codes, *, name: str, ref: str):
    return _call(
        world,
        "ScoreBatch",
        bank_pb2.ScoreBatchRequest(
            meta=new_meta("financing"), model_name=name, model_ref=ref, usccs=codes
        ),
    )


def test_private_scores_equal_fast_scores_for_every_aligned_enterprise(world):
    assert _owners(world), "no holder won a split: nothing private to score"
    codes = _aligned(world)
    private = _batch(world, codes, name=MODEL, ref=str(world.version))
    fast = _batch(world, codes, name=world.report.job_id, ref="")  # the local part: fast
    assert private.serving_mode == "private" and fast.serving_mode == "fast"
    assert [e.status for e in private.enterprises] == [e.status for e in fast.enterprises]
    scored = [(p, f) for p, f in zip(private.enterprises, fast.enterprises, strict=True)
              if p.status == "ok"]  # fmt: skip
    assert len(scored) >= 50
    for p, f in scored:
        assert abs(p.probability_default - f.probability_default) <= 1e-6
        assert abs(p.points - f.points) <= 1e-4
    # an enterprise some holder refused is not scored, and carries no number
    refused = [p for p in private.enterprises if p.status != "ok"]
    assert refused and not any(p.HasField("points") for p in refused)


def test_one_private_score_names_its_mode_and_has_reasons(world):
    both = _active(world, "tax") & _active(world, "utility")
    code = next(c for c in _aligned(world) if c in both)
    reply = _call(
        world,
        "Score",
        bank_pb2.ScoreRequest(
            meta=new_meta("financing"), uscc=code, model_name=MODEL, model_ref=str(world.version)
        ),
    )
    assert reply.scored and reply.serving_mode == "private"
    assert {r.source for r in reply.reasons} == {"bank", *_owners(world)}
    total = sum(r.contribution for r in reply.reasons)
    assert np.isfinite(total)
    fast = _call(
        world,
        "Score",
        bank_pb2.ScoreRequest(
            meta=new_meta("financing"), uscc=code, model_name=world.report.job_id
        ),
    )
    assert abs(reply.probability_default - fast.probability_default) <= 1e-6


def test_a_refused_enterprise_is_refused_by_the_holder_in_private_mode_and_audited(world):
    owner = _owners(world)[0]
    active = _active(world, owner)
    code = next(c for c in sorted(_aligned(world)) if c not in active)
    with pytest.raises(PeerError) as refused:
        _call(
            world,
            "Score",
            bank_pb2.ScoreRequest(
                meta=new_meta("financing"),
                uscc=code,
                model_name=MODEL,
                model_ref=str(world.version),
            ),
        )
    assert isinstance(refused.value, PeerRefused) and refused.value.refusal == "consent"
    model_id = f"{MODEL}/{world.version}"
    for holder in _owners(world):
        log = AuditLog(sqlite_url(world.fed.node_dir(holder) / "audit.db"), holder)
        try:
            served = [r for r in log.query() if r.model_id == model_id and r.direction == "served"]
            assert log.verify().ok
        finally:
            log.close()
        ops = {r.operation for r in served}
        assert "PrivateScore" in ops and "PrivateScoreSetup" in ops
        assert "ScoreReach" not in ops  # a private version never asks for reach masks
