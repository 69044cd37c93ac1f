"""Errors that keep their meaning across hops (issue 16): a holder's status keeps its class at
the bank, naming the holder once; a retried request is recognised by the callee (one logical
request, one record plus the retries marked); a row that was not scored carries no number."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from federation.audit import AuditLog
from federation.errors import PeerError, Refused
from federation.transport.base import (
    CallFailed,
    CallInfo,
    PeerRefused,
    ServiceRuntime,
    new_meta,
)
from federation.transport.calls import child_request_id, relay_failure
from federation.transport.inproc import InProcessPeer
from federation.transport.policy import PurposePolicy
from protos import bank_pb2, holder_pb2

CODE = "91510100MA61RFWC8B"  # the enterprise the toy holder is asked about


# -- a holder's status, relayed by the bank ------------------------------------------------------
@pytest.mark.parametrize(
    "status",
    ["INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND", "RESOURCE_EXHAUSTED", "INTERNAL"],
)
def test_a_holder_status_keeps_its_class_at_the_bank_and_names_the_holder_once(status):
    from parties.bank.scoring import BankScorer

    exc = PeerError("tax", "Verify", "invalid predicate: field 'kind' is unknown", code=status)
    with pytest.raises(CallFailed) as relayed:
        BankScorer._raise_for("tax", exc)
    assert relayed.value.status == status
    assert relayed.value.detail == "holder 'tax': invalid predicate: field 'kind' is unknown"
    assert "no score" not in relayed.value.detail and "did not answer" not in relayed.value.detail


@pytest.mark.parametrize("status", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"])
def test_only_a_holder_transport_failure_becomes_unavailable(status):
    from parties.bank.scoring import BankScorer

    exc = PeerError("tax", "ScoreReach", "connection reset (at 10.0.0.2:50061)", code=status)
    with pytest.raises(CallFailed) as relayed:
        BankScorer._raise_for("tax", exc)
    assert relayed.value.status == "UNAVAILABLE"
    assert relayed.value.detail.startswith(f"holder 'tax' did not answer ({status})")
    assert "10.0.0.2:50061" in relayed.value.detail  # the holder's address, not the bank's


def test_a_holder_refusal_stays_a_refusal_with_its_code_naming_the_holder_once():
    from parties.bank.scoring import BankScorer

    exc = PeerRefused("tax", "Verify", "no authorisation from enterprise X", refusal="consent")
    with pytest.raises(CallFailed) as relayed:
        BankScorer._raise_for("tax", exc)
    assert relayed.value.status == "PERMISSION_DENIED" and relayed.value.refusal == "consent"
    assert relayed.value.detail == "holder 'tax': no authorisation from enterprise X"
    # Relayed as it is: the bank's runtime does not prefix its own id to a relayed status.
    assert relay_failure(exc, role="holder").decision == "deny"


def test_a_peer_error_does_not_repeat_the_peer_that_names_itself():
    exc = PeerRefused("tax", "Verify", "tax: no authorisation", refusal="consent")
    assert "tax: tax" not in str(exc)


def test_child_request_ids_are_valid_distinct_and_traceable():
    parent = "a" * 32
    assert child_request_id(parent, "tax") == f"{parent}.tax"
    assert child_request_id(parent, "tax", 2) == f"{parent}.tax.2"
    long = "b" * 64
    child = child_request_id(long, "utility")
    assert len(child) <= 64 and child.endswith(".utility") and child.startswith("b")
    assert child_request_id("", "tax") != child_request_id("", "tax")  # fresh when no parent


# -- retries recognised by the callee ------------------------------------------------------------
class _ToyHolder:
    """Counts the Verify calls that reached it; answers, or fails, as the test says."""

    service = holder_pb2.DESCRIPTOR.services_by_name["DataHolder"]
    replayable = frozenset({"Verify"})

    def __init__(self) -> None:
        self.calls = 0
        self.fail: BaseException | None = None

    def authorise_caller(self, caller: str, method: str) -> None:
        if caller != "bank":
            raise Refused("caller", f"'{caller}' is not a bank this holder serves")

    def Verify(self, request: holder_pb2.VerifyRequest, call: CallInfo) -> holder_pb2.VerifyAnswer:
        self.calls += 1
        if self.fail is not None:
            raise self.fail
        return holder_pb2.VerifyAnswer(answer=f"yes #{self.calls}")


@pytest.fixture()
def toy(tmp_path: Path):
    served = AuditLog(f"sqlite:///{tmp_path / 'tax.db'}", "tax")
    servicer = _ToyHolder()
    runtime = ServiceRuntime(servicer, node_id="tax", audit=served, purposes=PurposePolicy())
    yield servicer, runtime, served
    served.close()


def _request(predicate: str = '{"kind": "normal_taxpayer"}') -> bytes:
    return holder_pb2.VerifyRequest(
        meta=new_meta("financing"), uscc=CODE, predicate_json=predicate
    ).SerializeToString()


def test_a_retried_request_is_answered_once_and_recorded_as_a_retry(toy):
    servicer, runtime, served = toy
    raw = _request()
    first = runtime.unary("Verify", raw, caller="bank")
    again = runtime.unary("Verify", raw, caller="bank")  # gRPC resends the very same bytes
    assert servicer.calls == 1 and again == first
    assert holder_pb2.VerifyAnswer.FromString(again).answer == "yes #1"
    records = [r for r in served.query() if r.operation == "Verify"]
    assert [r.counts.get("retry", 0) for r in records] == [0, 1]
    assert len({r.request_id for r in records}) == 1
    assert records[0].subject == CODE and records[1].subject == ""  # one entry per enterprise
    assert "retry" in records[1].reason
    # The same request id with other bytes is another request, not a retry.
    other = holder_pb2.VerifyRequest.FromString(raw)
    other.predicate_json = '{"kind": "no_arrears"}'
    runtime.unary("Verify", other.SerializeToString(), caller="bank")
    assert servicer.calls == 2
    # A request from another caller never replays the bank's answer.
    with pytest.raises(CallFailed) as refused:
        runtime.unary("Verify", raw, caller="utility")
    assert refused.value.status == "PERMISSION_DENIED" and servicer.calls == 2


def test_a_retried_failure_is_replayed_with_its_status_not_run_again(toy):
    servicer, runtime, served = toy
    servicer.fail = CallFailed("INVALID_ARGUMENT", "invalid predicate: field 'kind'")
    raw = _request('{"kind": "bogus"}')
    for _ in range(3):
        with pytest.raises(CallFailed) as failed:
            runtime.unary("Verify", raw, caller="bank")
        assert failed.value.status == "INVALID_ARGUMENT"
        assert failed.value.detail == "invalid predicate: field 'kind'"
    assert servicer.calls == 1
    records = [r for r in served.query() if r.operation == "Verify"]
    assert [r.counts.get("retry", 0) for r in records] == [0, 1, 1]
    assert all(r.decision == "error" for r in records)


def test_a_refusal_is_replayed_as_the_same_refusal(toy):
    servicer, runtime, _ = toy
    servicer.fail = Refused("consent", "no authorisation from enterprise X for this bank")
    peer = InProcessPeer(runtime, self_id="bank", audit=None, deadline_s=5.0)
    raw = _request()
    outcomes = []
    for _ in range(2):
        with pytest.raises(CallFailed) as refused:
            runtime.unary("Verify", raw, caller="bank")
        outcomes.append((refused.value.status, refused.value.refusal, refused.value.detail))
    assert (
        outcomes[0]
        == outcomes[1]
        == (
            "PERMISSION_DENIED",
            "consent",
            "tax: no authorisation from enterprise X for this bank",
        )
    )
    assert servicer.calls == 1
    # Through the client half, the holder is named once, by the error, not again by its detail.
    with pytest.raises(PeerRefused) as via_peer:
        peer.call("Verify", holder_pb2.VerifyRequest(meta=new_meta(), uscc=CODE))
    assert via_peer.value.detail == "no authorisation from enterprise X for this bank"


# -- rows that were not scored -------------------------------------------------------------------
def test_a_batch_row_that_was_not_scored_carries_no_number():
    from parties.bank.scoring import Scores, _Batch, _list_every_code, scored_rows

    codes = ["A", "B"]
    batch = _Batch(
        status=np.array(["tax:no-consent", "ok"], dtype=object),
        rows=np.array([0, 1]),
        reach={},
        categories={},
        auth_ids=["", ""],
    )
    scores = Scores(
        margin=np.array([0.0]),
        probability=np.array([0.5]),
        points=np.array([0.0]),  # a real score of exactly 0 points stays a number
        contributions={},
    )
    reply = bank_pb2.ScoreBatchReply(model_name="m", model_version="1")
    _list_every_code(reply, codes, batch, np.array([1]), scores)
    missing, scored = reply.enterprises
    assert not missing.HasField("points") and not missing.HasField("probability_default")
    assert scored.HasField("points") and scored.points == 0.0
    rows = scored_rows(reply)
    assert math.isnan(rows[0]["points"]) and math.isnan(rows[0]["probability_default"])
    assert rows[1]["points"] == 0.0 and rows[1]["probability_default"] == 0.5


def test_the_cli_shows_a_missing_number_as_missing():
    from xinyidai.cli.score import _number

    unscored = bank_pb2.ScoredEnterprise(uscc="A", status="tax:no-consent")
    scored = bank_pb2.ScoredEnterprise(uscc="B", status="ok", points=0.0, probability_default=0.5)
    assert _number(unscored, "points", ".1f") == "-"
    assert _number(scored, "points", ".1f") == "0.0"
    assert _number(scored, "probability_default", ".4f") == "0.5000"


def test_the_cli_names_the_node_that_decided_once():
    from xinyidai.cli.errors import peer_error_text

    relayed = PeerRefused("bank", "Verify", "holder 'tax': no authorisation", refusal="consent")
    own = PeerRefused("bank", "Verify", "bank: purpose 'x' is not allowed", refusal="purpose")
    down = PeerError("bank", "Verify", "failed to connect (at 127.0.0.1:1)", code="UNAVAILABLE")
    assert peer_error_text(relayed, role="bank") == (
        "refused (consent): holder 'tax': no authorisation"
    )
    assert peer_error_text(own, role="bank") == (
        "refused (purpose): bank 'bank': purpose 'x' is not allowed"
    )
    assert peer_error_text(down, role="bank") == (
        "UNAVAILABLE: bank 'bank': failed to connect (at 127.0.0.1:1)"
    )


def test_grpc_retries_only_transport_failures():
    import json

    from federation.transport.calls import TRANSPORT_FAILURES
    from federation.transport.grpc_transport import RETRY_SERVICE_CONFIG

    for method in json.loads(RETRY_SERVICE_CONFIG)["methodConfig"]:
        codes = set(method["retryPolicy"]["retryableStatusCodes"])
        assert codes and codes <= TRANSPORT_FAILURES, codes
