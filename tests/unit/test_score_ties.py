"""Scores a person can trust (issue 12 part 4): ties ranked deterministically and marked,
reasons always given for a score below the base, the model family named."""

from __future__ import annotations

import numpy as np

from parties.bank.scoring import Scores, _Batch, _list_above, _list_every_code, reason_list
from protos import bank_pb2


def _scores(points: list[float], contributions: dict[str, list[float]]) -> Scores:
    p = np.asarray(points, dtype=np.float64)
    return Scores(
        margin=np.zeros_like(p),
        probability=np.full_like(p, 0.1),
        points=p,
        contributions={k: np.asarray(v, dtype=np.float64) for k, v in contributions.items()},
    )


def _batch(n: int) -> _Batch:
    return _Batch(
        status=np.full(n, "ok", dtype=object),
        rows=np.arange(n),
        reach={},
        categories={"bank": ["bank"], "tax": ["tax"]},
        auth_ids=[""] * n,
    )


CODES = ["91330100C", "91330100A", "91330100B", "91330100D"]


def test_whitelist_breaks_ties_by_uscc_and_marks_them() -> None:
    scores = _scores([700.0, 700.0, 650.0, 700.0], {"tax": [0.0, 0.0, 0.0, 0.0]})
    reply = bank_pb2.ScoreBatchReply()
    _list_above(reply, CODES, _batch(4), np.arange(4), scores, threshold=0.0, limit=0)
    assert [e.uscc for e in reply.enterprises] == [
        "91330100A",
        "91330100C",
        "91330100D",
        "91330100B",
    ]
    assert [e.tie for e in reply.enterprises] == [True, True, True, False]


def test_private_noise_does_not_break_a_tie_or_decide_the_order() -> None:
    """A ``private`` score carries CKKS noise (~1e-5 points): enterprises on the same leaves
    are one score to ``TIE_RESOLUTION``, marked as a tie and ranked by USCC, not by the noise."""
    scores = _scores([650.200004, 650.199998, 640.0, 650.200001], {"tax": [0.0, 0.0, 0.0, 0.0]})
    reply = bank_pb2.ScoreBatchReply()
    _list_above(reply, CODES, _batch(4), np.arange(4), scores, threshold=0.0, limit=3)
    assert [e.uscc for e in reply.enterprises] == ["91330100A", "91330100C", "91330100D"]
    assert all(e.tie for e in reply.enterprises)


def test_tie_marker_in_listed_batch() -> None:
    scores = _scores([600.0, 601.0, 600.0, 602.0], {"tax": [0.0] * 4})
    reply = bank_pb2.ScoreBatchReply()
    _list_every_code(reply, CODES, _batch(4), np.arange(4), scores)
    assert [e.uscc for e in reply.enterprises] == CODES  # listed order kept
    assert [e.tie for e in reply.enterprises] == [True, False, True, False]


def test_reasons_present_below_base_even_without_positive_contribution() -> None:
    contributions = {"bank": np.array([-0.2]), "tax": np.array([-0.1])}
    _, cats = reason_list(contributions, 0, {"bank": ["bank"], "tax": ["vat"]}, below_base=True)
    assert cats == ["vat"]  # the party that lowered it the most (least negative)
    _, none = reason_list(contributions, 0, {"bank": ["bank"], "tax": ["vat"]}, below_base=False)
    assert none == []


def test_reply_names_model_family() -> None:
    assert "model_family" in bank_pb2.ScoreReply.DESCRIPTOR.fields_by_name
    assert "model_family" in bank_pb2.ScoreBatchReply.DESCRIPTOR.fields_by_name
