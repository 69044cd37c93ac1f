"""The holder's answer quota (``parties.holder.quota``): per (bank, enterprise) per rolling 24 h,
counted again from the node's own audit log at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from federation.audit import AuditLog, sqlite_url
from federation.transport.calls import SubjectAccess
from parties.holder.quota import QUOTA_OPERATIONS, AnswerQuota


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_past_the_limit_an_enterprise_is_refused_until_the_window_moves_on() -> None:
    clock = Clock()
    quota = AnswerQuota(2, window_s=100.0, clock=clock)
    assert quota.take("bank", ["A", "B"], ["ok", "ok"]) == ["ok", "ok"]
    clock.now += 10
    # refused enterprises are not counted; another bank has its own count
    assert quota.take("bank", ["A", "B", "C"], ["ok", "no-consent", "ok"]) == [
        "ok",
        "no-consent",
        "ok",
    ]
    assert quota.take("bank", ["A"], ["ok"]) == ["quota"]
    assert quota.take("other-bank", ["A"], ["ok"]) == ["ok"]
    assert quota.used("bank", "A") == 2 and quota.used("bank", "B") == 1
    clock.now += 91  # the first answer about A left the window
    assert quota.take("bank", ["A"], ["ok"]) == ["ok"]
    assert quota.take("bank", ["A"], ["ok"]) == ["quota"]
    with pytest.raises(ValueError, match="at least 1"):
        AnswerQuota(0)


def test_a_restarted_holder_counts_the_answers_its_audit_log_recorded(tmp_path: Path) -> None:
    clock = Clock()
    with AuditLog(sqlite_url(tmp_path / "audit.db"), "tax") as log:
        old = clock.now - 90_000  # more than a day ago: not counted
        for ts, operation, status in [
            (old, "ScoreReach", "allow"),
            (clock.now - 600, "ScoreReach", "allow"),
            (clock.now - 500, "PrivateScore", "allow"),
            (clock.now - 400, "ScoreReach", "refused:revoked"),  # refused: not counted
            (clock.now - 300, "Verify", "allow"),  # verification has its own budget
        ]:
            log.append(
                direction="served",
                peer="bank",
                operation=operation,
                ts=ts,
                subjects=[SubjectAccess("91510104MA00000071", "a" * 32, status)],
            )
        uses = log.admitted_since(clock.now - 86_400, QUOTA_OPERATIONS)
    assert sorted(u[2] for u in uses) == [clock.now - 600, clock.now - 500]
    quota = AnswerQuota(3, clock=clock)
    assert quota.seed(uses) == 2
    code = "91510104MA00000071"
    assert quota.take("bank", [code, code], ["ok", "ok"]) == ["ok", "quota"]
