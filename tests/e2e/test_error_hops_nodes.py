"""End to end (issue 16, errors across hops): a holder's status reaches the bank's client with
its class kept and the holder named once; a retried request leaves one logical record (the
retries marked) and asks the holder once; the bank's address is named only when the bank itself
could not be reached. Real node processes, mutual TLS on loopback, no model needed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from federation.audit import AuditLog, sqlite_url
from federation.errors import PeerError
from federation.transport.base import PeerRefused, new_meta
from protos import bank_pb2

pytestmark = pytest.mark.e2e

BAD_PREDICATE = '{"kind": "bogus"}'
GOOD_PREDICATE = '{"kind": "normal_taxpayer"}'


@pytest.fixture(scope="module")
def fed(local_federation):
    from parties.config import load_node_config

    federation, examples = local_federation
    return federation, examples, load_node_config(federation.configs["bank"])


def _records(federation, node: str, request_id: str) -> list:
    """Every record of ``node`` whose request id is ``request_id`` or derived from it."""
    log = AuditLog(sqlite_url(federation.node_dir(node) / "audit.db"), node)
    try:
        return [r for r in log.query() if r.request_id.split(".")[0] == request_id]
    finally:
        log.close()


def _verify_request(code: str, predicate: str, holder: str = "tax") -> bank_pb2.BankVerifyRequest:
    return bank_pb2.BankVerifyRequest(
        meta=new_meta("financing"), holder=holder, uscc=code, predicate_json=predicate
    )


def _cli(bank_config, *args: str):
    from xinyidai.cli.score import app

    return CliRunner().invoke(app, [*args, "--config", str(bank_config)])


def test_a_bad_predicate_is_invalid_argument_once_with_one_record_per_node(fed):
    from parties.node import operator_client

    federation, examples, bank = fed
    code = examples["tax"]["authorised"]
    request = _verify_request(code, BAD_PREDICATE)
    rid = request.meta.request_id
    with operator_client(bank) as client:
        with pytest.raises(PeerError) as failed:
            client.call("Verify", request)
    assert failed.value.code == "INVALID_ARGUMENT", failed.value
    assert failed.value.detail.startswith("holder 'tax': invalid predicate"), failed.value.detail
    assert "(at " not in failed.value.detail and "no score" not in failed.value.detail
    at_bank = _records(federation, "bank", rid)
    served = [r for r in at_bank if r.direction == "served"]
    made = [r for r in at_bank if r.direction == "made" and r.peer == "tax"]
    assert [(r.operation, r.request_id, r.decision) for r in served] == [("Verify", rid, "error")]
    assert [(r.operation, r.request_id) for r in made] == [("Verify", f"{rid}.tax")]
    at_tax = _records(federation, "tax", rid)
    assert [(r.direction, r.operation, r.request_id) for r in at_tax] == [
        ("served", "Verify", f"{rid}.tax")
    ]


def test_the_cli_names_the_holder_once_and_not_the_bank_address(fed):
    federation, examples, _ = fed
    code = examples["tax"]["authorised"]
    bad = _cli(
        federation.configs["bank"], "verify", code, "--holder", "tax", "--predicate", BAD_PREDICATE
    )
    assert bad.exit_code == 2
    text = " ".join(bad.output.split())
    assert "error: INVALID_ARGUMENT: holder 'tax': invalid predicate" in text, text
    assert "(at 127.0.0.1" not in text and "UNAVAILABLE" not in text
    refused = _cli(
        federation.configs["bank"], "verify", examples["tax"]["unauthorised"], "--holder", "tax",
        "--predicate", GOOD_PREDICATE,
    )  # fmt: skip
    assert refused.exit_code == 2
    text = " ".join(refused.output.split())
    unauthorised = examples["tax"]["unauthorised"]
    assert (
        f"error: refused (consent): holder 'tax': no authorisation from enterprise "
        f"{unauthorised} for this bank" in text
    ), text
    for stutter in ("tax: tax", "bank: holder", "for bank bank", "(at 127.0.0.1"):
        assert stutter not in text, (stutter, text)


def test_a_refusal_by_the_bank_itself_names_the_bank(fed):
    federation, examples, _ = fed
    code = examples["tax"]["authorised"]
    result = _cli(
        federation.configs["bank"], "verify", code, "--holder", "tax", "--predicate",
        GOOD_PREDICATE, "--purpose", "marketing",
    )  # fmt: skip
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "error: refused (purpose): bank 'bank': " in text, text
    assert "bank: " not in text.replace("bank 'bank': ", "")


def test_a_retried_verify_is_answered_once_and_recorded_as_a_retry(fed):
    from parties.node import operator_client

    federation, examples, bank = fed
    code = examples["tax"]["authorised"]
    for predicate, status in ((GOOD_PREDICATE, None), (BAD_PREDICATE, "INVALID_ARGUMENT")):
        request = _verify_request(code, predicate)
        rid = request.meta.request_id
        raw = request.SerializeToString()
        outcomes = []
        with operator_client(bank) as client:
            for _ in range(3):  # what gRPC's retry policy does: the same bytes again
                try:
                    outcomes.append(client._unary("Verify", raw, 10.0))
                except Exception as exc:  # CallFailed from the carrier
                    outcomes.append((exc.status, exc.detail))
        assert outcomes[0] == outcomes[1] == outcomes[2], outcomes
        if status is not None:
            assert outcomes[0][0] == status
        else:
            assert bank_pb2.BankVerifyReply.FromString(outcomes[0]).answer in ("yes", "no")
        served = [r for r in _records(federation, "bank", rid) if r.direction == "served"]
        assert [r.counts.get("retry", 0) for r in served] == [0, 1, 1]
        assert [r.subject for r in served] == [code, "", ""]  # one entry about the enterprise
        assert all("retry of request" in r.reason for r in served[1:])
        made = [
            r
            for r in _records(federation, "bank", rid)
            if r.direction == "made" and r.peer == "tax"
        ]
        at_tax = [r for r in _records(federation, "tax", rid) if r.direction == "served"]
        assert len(made) == 1 and len(at_tax) == 1, (made, at_tax)  # the holder asked once
        assert at_tax[0].subject == code


def test_a_batch_row_that_was_not_scored_carries_no_number_over_the_wire(start_bank_world):
    import math

    from parties.bank.scoring import score_codes
    from parties.node import operator_client

    world = start_bank_world(
        "hops-batch", enterprises=400, seed=5, salt=b"hops-salt", align_job="hops-align"
    )
    trained = world.train(
        "hops-sbt",
        params=dict(n_trees=2, max_depth=2, learning_rate=0.3, max_bin=8, random_state=0),
    )
    examples = world.examples
    codes = [examples["tax"]["authorised"], examples["tax"]["unauthorised"]]
    with operator_client(world.bank) as client:
        reply = client.call(
            "ScoreBatch",
            bank_pb2.ScoreBatchRequest(
                meta=new_meta("financing"),
                model_name="hops-sbt",
                model_ref=str(trained.version),
                usccs=codes,
            ),
        )
    unscored = [e for e in reply.enterprises if e.status != "ok"]
    assert unscored, [e.status for e in reply.enterprises]
    for e in unscored:
        assert not e.HasField("points") and not e.HasField("probability_default"), e
    for e in reply.enterprises:
        assert e.HasField("points") == (e.status == "ok")
    frame = score_codes(
        {"node_config": str(world.fed.configs["bank"])}, "hops-sbt", str(trained.version), codes
    )
    for row in frame.itertuples():
        assert math.isnan(row.points) == (row.status != "ok"), row


def test_a_holder_that_is_down_is_unavailable_naming_it_not_the_bank(fed):
    """Last in the module: stops the utility node."""
    from parties.node import operator_client

    federation, examples, bank = fed
    utility = next(p for p in bank.holders if p.node_id == "utility")
    proc = federation.processes["utility"]
    proc.terminate()
    proc.wait(timeout=20)
    request = _verify_request(examples["utility"]["authorised"], GOOD_PREDICATE, "utility")
    with operator_client(bank) as client:
        with pytest.raises(PeerError) as failed:
            client.call("Verify", request)
    assert not isinstance(failed.value, PeerRefused)
    assert failed.value.code == "UNAVAILABLE"
    detail = failed.value.detail
    assert detail.startswith("holder 'utility' did not answer"), detail
    assert utility.address in detail and bank.address not in detail
    served = [
        r for r in _records(federation, "bank", request.meta.request_id) if r.direction == "served"
    ]
    # gRPC retried the bank's UNAVAILABLE: the bank answered the retries from the first answer.
    assert served and served[0].counts.get("retry", 0) == 0
    assert all(r.counts.get("retry", 0) == 1 for r in served[1:])
    made = [
        r
        for r in _records(federation, "bank", request.meta.request_id)
        if r.direction == "made" and r.peer == "utility"
    ]
    assert len(made) == 1, made  # the bank asked the holder once for the one logical request
