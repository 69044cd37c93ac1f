"""The holder gate (issue 10): nothing about an enterprise leaves a holder without its
authorisation, and every answer names the authorisation that covered each enterprise.

Real stores (a platform-signed consent registry, a dispute registry, a stored PSI alignment),
real servicer skeleton (``models.base.HolderModule``) and the holder node's gate
(``parties.holder.service.HolderGate``); no mocks. Over real node processes:
``tests/e2e/test_holder_gate.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federation.audit import AuditLog, sqlite_url
from federation.errors import Refused
from federation.pki import PkiLayout, init_pki, load_platform_public_key
from federation.transport.base import CallFailed, CallInfo
from models.base import UNGATED, HolderJob, HolderModule
from models.psi.store import AlignmentStore
from parties.authorisation import PlatformSigner
from parties.consent import ConsentRegistry, check_auth_ids
from parties.data import uscc
from parties.disputes import DisputeRegistry
from parties.holder.service import HolderGate
from protos import common_pb2

CODES = list(uscc.generate(np.random.default_rng(3), 8, uscc.CHENGDU_REGIONS))
# alignment "psi-1": positions 0..5 are table rows 3, 0, 5, 1, 2, 4
ALIGNED = np.array([3, 0, 5, 1, 2, 4], dtype=np.int64)
OK, REVOKED, NEVER, DISPUTED, OTHER_BANK, WRONG_CAT = (CODES[int(r)] for r in ALIGNED)
DAY = 86400.0


class Part:
    def __init__(self, alignment_id: str):
        self.alignment_id = alignment_id

    def to_dict(self) -> dict[str, Any]:
        return {"alignment_id": self.alignment_id}


class Toy(HolderModule[HolderJob, Part]):
    """A protocol servicer reduced to the base's rows: what Predict / ScorePoints use."""

    protocol = "toy"
    model_file = "{job}.toy.json"

    def __init__(self, **kwargs: Any):
        table = np.arange(16.0).reshape(8, 2)
        self.reads = 0

        def features_for(bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
            self.reads += 1
            return table[ALIGNED], ["vat", "kwh"]

        super().__init__(features_for=features_for, **kwargs)

    def _decode_model(self, data: dict[str, Any]) -> Part:
        return Part(str(data["alignment_id"]))


def call(job_id: str = "j1", *, purpose: str = "financing", method: str = "Predict") -> CallInfo:
    meta = common_pb2.RequestMeta(purpose=purpose, job_id=job_id, request_id="r1")
    return CallInfo(caller="bank", method=method, meta=meta)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"), ["bank", "tax"])


@pytest.fixture
def world(tmp_path: Path, pki: PkiLayout):
    """A holder's stores: authorisations (one per case), a dispute, an alignment."""
    signer = PlatformSigner.from_file(pki.platform_signing_key)
    consent = ConsentRegistry(
        sqlite_url(tmp_path / "consent.db"),
        load_platform_public_key(pki.platform_signing_pub),
        node_id="tax",
    )
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "tax")
    disputes = DisputeRegistry(
        sqlite_url(tmp_path / "consent.db"), node_id="tax", audit=audit, categories=["tax"]
    )
    now = time.time()
    ids = {}
    for code, bank, cats in (
        (OK, "bank", ["tax"]),
        (REVOKED, "bank", ["tax"]),
        (DISPUTED, "bank", ["tax"]),
        (OTHER_BANK, "bank2", ["tax"]),
        (WRONG_CAT, "bank", ["electricity"]),
    ):
        signed = signer.issue(
            uscc=code,
            bank_id=bank,
            purpose="financing",
            categories=cats,
            valid_from=now - DAY,
            valid_until=now + 30 * DAY,
        )
        consent.grant(signed)
        ids[code] = signed.auth.auth_id
    consent.revoke(ids[REVOKED], reason="the enterprise withdrew")
    disputes.dispute(DISPUTED, reason="wrong VAT figure", by="enterprise")
    alignments = AlignmentStore(tmp_path / "alignments", node_id="tax", table_codes=CODES)
    alignments.save("bank", "psi-1", ALIGNED)
    gate = HolderGate(
        node_id="tax",
        table_codes=CODES,
        consent=consent,
        alignments=alignments,
        categories=["tax"],
        column_categories={"vat": "tax", "kwh": "tax"},
        disputes=disputes,
    )
    yield gate, ids, tmp_path
    consent.close()
    disputes.close()
    audit.close()


def _toy(tmp_path: Path, gate: Any = None) -> Toy:
    toy = Toy(node_id="tax", banks=["bank"], models_dir=tmp_path / "models")
    if gate is not None:
        toy.use_gate(gate)
    return toy


# -- secure by default --------------------------------------------------------------------------
def test_without_a_gate_a_servicer_refuses_every_answer_about_named_rows(tmp_path):
    toy = Toy(node_id="tax", banks=["bank"])
    with pytest.raises(Refused, match="consent gate") as info:
        toy.rows_for(call(), alignment_id="psi-1", rows=[0])
    assert info.value.code == "consent" and toy.reads == 0
    # a training job's own rows are not an answer about named enterprises
    start = toy.training_rows(call(method="Start"), alignment_id="psi-1", rows=b"")
    assert start.positions.size == len(ALIGNED)


def test_in_process_holders_answer_through_the_named_open_gate(tmp_path):
    from models.secureboost.passive import local_holders

    features = np.zeros((4, 1))
    _, servicers = local_holders({"tax": (features, ["x"])}, tmp_path)
    assert servicers["tax"].enterprise_gate is UNGATED
    toy = Toy(node_id="tax", banks=["bank"]).use_gate(UNGATED)
    info = call()
    assert toy.rows_for(info, alignment_id="psi-1", rows=[1, 2]).positions.tolist() == [1, 2]
    assert info.subjects == []  # the caller's own data: no enterprise to record


# -- the consent gate per enterprise ------------------------------------------------------------
def test_an_authorised_enterprise_is_answered_and_the_record_names_its_authorisation(world):
    gate, ids, tmp_path = world
    toy = _toy(tmp_path, gate)
    info = call()
    rows = toy.rows_for(info, alignment_id="psi-1", rows=[0])
    assert rows.positions.tolist() == [0]
    ((code, auth_id, status),) = [(s.uscc, s.auth_id, s.status) for s in info.subjects]
    assert (code, auth_id, status) == (OK, ids[OK], "allow")


@pytest.mark.parametrize(
    ("position", "why", "refusal"),
    [
        (1, "revoked", "consent"),
        (2, "no-consent", "consent"),
        (3, "disputed", "disputed"),
        (4, "no-consent", "consent"),  # authorised for another bank only
        (5, "category", "consent"),  # authorised, but not for the category the answer reads
    ],
)
def test_a_refused_enterprise_gets_a_refusal_and_nothing_else(world, position, why, refusal):
    gate, _, tmp_path = world
    toy = _toy(tmp_path, gate)
    info = call()
    with pytest.raises(Refused) as raised:
        toy.rows_for(info, alignment_id="psi-1", rows=[0, position])  # with an authorised one
    assert raised.value.code == refusal
    assert f"({why})" in raised.value.reason and "nothing is answered" in raised.value.reason
    assert toy.reads == 0  # refused before the holder's table was read
    statuses = {s.uscc: s.status for s in info.subjects}
    assert statuses[CODES[int(ALIGNED[position])]] == f"refused:{why}"
    assert statuses[OK] == "allow"


def test_the_purpose_is_part_of_the_consent(world):
    gate, _, tmp_path = world
    with pytest.raises(Refused, match=r"\(purpose\)"):
        _toy(tmp_path, gate).rows_for(call(purpose="marketing"), alignment_id="psi-1", rows=[0])


def test_rows_outside_the_alignment_are_the_callers_error_before_any_work(world):
    gate, _, tmp_path = world
    toy = _toy(tmp_path, gate)
    with pytest.raises(CallFailed, match=r"rows must be in \[0, 6\)"):
        toy.rows_for(call(), alignment_id="psi-1", rows=[6])
    with pytest.raises(CallFailed, match="7 rows asked, the alignment has 6"):
        toy.rows_for(call(), alignment_id="psi-1", rows=[0] * 7)
    with pytest.raises(CallFailed, match="alignment_id"):
        toy.rows_for(call(), alignment_id="../x", rows=[0])
    with pytest.raises(CallFailed, match="does not exist"):
        toy.rows_for(call(), alignment_id="psi-9", rows=[0])
    assert toy.reads == 0


# -- post-training evaluation: once per (job, alignment) ----------------------------------------
def test_a_finished_job_is_evaluated_once_without_consent_then_gated(world):
    gate, _, tmp_path = world
    toy = _toy(tmp_path, gate)
    toy.keep_model(call(method="Finish"), Part("psi-1"))
    every = list(range(len(ALIGNED)))
    first = call()
    rows = toy.rows_for(first, alignment_id="psi-1", rows=every)
    assert rows.positions.tolist() == every
    assert [s.status for s in first.subjects] == ["evaluation"] * len(every)
    assert {s.uscc for s in first.subjects} == set(CODES[int(r)] for r in ALIGNED)
    assert first.counts["evaluation_rows"] == len(every)
    # the second evaluation is an ordinary request: each enterprise must be authorised
    with pytest.raises(Refused, match=r"5 of 6 enterprises"):
        toy.rows_for(call(), alignment_id="psi-1", rows=every)
    toy.rows_for(call(), alignment_id="psi-1", rows=[0])  # the authorised one still is
    # ... and a restart does not reopen it (the slot's state is a file next to the part)
    restarted = _toy(tmp_path, gate)
    with pytest.raises(Refused):
        restarted.rows_for(call(), alignment_id="psi-1", rows=[1])
    # rebuilding the part (Points again) does not reopen it either
    toy.keep_model(call(method="Finish"), Part("psi-1"))
    with pytest.raises(Refused):
        toy.rows_for(call(), alignment_id="psi-1", rows=[1])


def test_an_evaluation_is_bounded_to_each_row_of_the_jobs_own_alignment_once(world):
    gate, _, tmp_path = world
    AlignmentStore(tmp_path / "alignments", node_id="tax", table_codes=CODES).save(
        "bank", "psi-2", ALIGNED[::-1].copy()
    )
    toy = _toy(tmp_path, gate)
    toy.keep_model(call(method="Finish"), Part("psi-1"))
    with pytest.raises(Refused):  # another alignment: not this job's evaluation
        toy.rows_for(call(), alignment_id="psi-2", rows=[0, 1])
    with pytest.raises(Refused):  # a row twice: not an evaluation
        toy.rows_for(call(), alignment_id="psi-1", rows=[1, 1])
    with pytest.raises(Refused):  # another job: no slot
        toy.rows_for(call("j2"), alignment_id="psi-1", rows=[1])
    # none of those used the slot
    assert toy.rows_for(call(), alignment_id="psi-1", rows=[1, 2]).positions.size == 2


def test_an_evaluation_slot_nobody_used_closes_after_its_window(world, monkeypatch):
    import models.base

    gate, _, tmp_path = world
    toy = _toy(tmp_path, gate)
    toy.keep_model(call(method="Finish"), Part("psi-1"))
    monkeypatch.setattr(models.base, "EVALUATION_WINDOW_S", -1.0)
    with pytest.raises(Refused):
        toy.rows_for(call(), alignment_id="psi-1", rows=[1])


# -- auth ids ----------------------------------------------------------------------------------
def test_given_auth_ids_a_holder_answers_only_under_one_of_them(world):
    gate, ids, _ = world
    made_up = "0" * 32

    def admit(codes: list[str], auth_ids: list[str], *, single: bool):
        return gate.admit_codes(
            bank="bank",
            purpose="financing",
            codes=codes,
            categories=["tax"],
            auth_ids=auth_ids,
            single=single,
        )

    one = admit([OK], [made_up], single=True)
    assert one.statuses == ["auth-id"] and one.decision is not None
    assert "none of the 1 authorisation id(s)" in one.decision.reason
    assert admit([OK], [made_up, ids[OK]], single=True).auth_ids == [ids[OK]]
    batch = admit([OK, NEVER, REVOKED], [ids[OK]], single=False)
    assert batch.statuses == ["ok", "auth-id", "auth-id"]
    assert batch.auth_ids[0] == ids[OK]
    plain = admit([OK, REVOKED], [], single=False)
    assert plain.statuses == ["ok", "revoked"] and plain.auth_ids == [ids[OK], ids[REVOKED]]


def test_auth_ids_are_checked_for_count_and_form_without_echoing_them():
    assert check_auth_ids(["a" * 32]) == ["a" * 32]
    with pytest.raises(CallFailed, match="at most 16"):
        check_auth_ids(["a"] * 17)
    with pytest.raises(CallFailed, match=r"is not an authorisation id") as info:
        check_auth_ids(["x" * 10_000])
    assert len(info.value.detail) < 200
