"""Per-bank access statistics: a holder counts its audit log, the platform checks and stores
the counts (bounded, known banks and RPC names only, each range once), the auditor's figures
aggregate them by day, week and all time - and no USCC gets through anywhere (the wire with
real nodes is tests/e2e/test_platform_nodes.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.audit import AuditLog, SubjectAccess, sqlite_url
from federation.transport.calls import CallFailed, CallInfo, new_meta
from parties.config import NodeConfig, PeerConfig, PlatformLink, TlsConfig
from parties.consent import ConsentRegistry
from parties.data import uscc
from parties.platform.feed import FeedStore
from parties.platform.follower import FeedFollower, count_access
from parties.platform.service import PlatformServicer
from parties.platform.stats import (
    MAX_ACCESS_ROWS,
    AccessCount,
    AccessError,
    AccessStore,
    check_access,
    platform_statistics,
)
from protos import platform_pb2

CODES = list(uscc.generate(np.random.default_rng(11), 6, uscc.CHENGDU_REGIONS))
KEY = Ed25519PrivateKey.generate()
TLS = TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key"))


def _served(log: AuditLog, bank: str, operation: str, decision: str = "allow", **kw: object) -> int:
    return log.append(
        direction="served",
        peer=bank,
        operation=operation,
        decision=decision,
        **kw,  # type: ignore[arg-type]
    ).seq


@pytest.fixture
def audit(tmp_path: Path) -> AuditLog:
    log = AuditLog(sqlite_url(tmp_path / "audit.db"), "tax")
    _served(log, "bank", "Score", subject=CODES[0])
    _served(log, "bank", "Score", subject=CODES[1])
    _served(log, "bank", "Score", "deny", subject=CODES[2])
    _served(
        log,
        "bank",
        "ScoreBatch",
        subjects=[SubjectAccess(c, "", "allow") for c in CODES[:4]],
    )
    _served(log, "other", "Verify", subject=CODES[3])  # a bank the platform never admitted
    log.append(direction="local", peer="tax", operation="node.start")  # not a request
    _served(log, "bank", "Verify")
    return log


def test_a_holder_counts_requests_and_enterprise_rows_per_bank(audit: AuditLog) -> None:
    rows = count_access(audit, after=0, upto=audit.head().seq, banks=["bank"])  # type: ignore[union-attr]
    assert rows == [
        AccessCount("bank", "Score", "allow", 2, 2),
        AccessCount("bank", "Score", "deny", 1, 1),
        AccessCount("bank", "ScoreBatch", "allow", 1, 4),
        AccessCount("bank", "Verify", "allow", 1, 0),
    ]
    # after: only what follows; an empty range counts nothing
    assert count_access(audit, after=4, upto=7, banks=["bank"]) == [
        AccessCount("bank", "Verify", "allow", 1, 0)
    ]
    assert count_access(audit, after=7, upto=7, banks=["bank"]) == []
    for row in rows:
        assert not any(code in repr(row) for code in CODES)


def test_the_platform_refuses_reports_it_will_not_store() -> None:
    good = [AccessCount("bank", "Score", "allow", 3, 3)]
    check_access(good, node="tax", banks=["bank"], from_seq=0, upto_seq=5, head_seq=5)

    def refused(rows: list[AccessCount], **kw: object) -> str:
        args: dict[str, object] = dict(banks=["bank"], from_seq=0, upto_seq=5, head_seq=5)
        args.update(kw)
        with pytest.raises(AccessError) as exc:
            check_access(rows, node="tax", **args)  # type: ignore[arg-type]
        return str(exc.value)

    # a USCC can be put in no field: banks must be admitted, operations must be RPC names
    assert "row 1: bank is not an institution" in refused(
        [AccessCount(CODES[0], "Score", "allow", 1, 1)]
    )
    assert "row 1: operation is not an RPC" in refused(
        [AccessCount("bank", CODES[0], "allow", 1, 1)]
    )
    assert "row 1: decision must be" in refused([AccessCount("bank", "Score", CODES[0], 1, 1)])
    numeric = "9" * 18  # an all-digit code looks like a node id: still not an admitted bank
    assert "bank is not an institution" in refused([AccessCount(numeric, "Score", "allow", 1, 1)])
    assert "row 2:" in refused([*good, AccessCount("bank", "Score", "allow", 1, 1)])  # repeated
    assert "records -1 out of range" in refused([AccessCount("bank", "Score", "allow", -1, 0)])
    too_many = [AccessCount("bank", "Score", "allow", 1, 0)] * (MAX_ACCESS_ROWS + 1)
    assert f"more than {MAX_ACCESS_ROWS}" in refused(too_many)
    assert "past the audit head" in refused(good, upto_seq=6)
    assert "past the audit head" in refused(good, head_seq=None)
    assert "must be past access_from_seq 5" in refused(good, from_seq=5)  # counts, no range


def test_the_store_keeps_each_range_once_and_aggregates_by_period(tmp_path: Path) -> None:
    store = AccessStore(sqlite_url(tmp_path / "access.db"))
    now = 1_800_000_000.0 + 12 * 3600  # noon UTC
    day = 86_400.0
    row = [AccessCount("bank", "Score", "allow", 2, 2), AccessCount("bank", "Score", "deny", 1, 1)]
    assert store.record("tax", row, from_seq=0, upto_seq=10, head="10:aa", at=now - 10 * day)
    assert store.record("tax", row, from_seq=10, upto_seq=20, head="20:bb", at=now - 3 * day)
    assert store.record("tax", row, from_seq=20, upto_seq=30, head="30:cc", at=now - 60)
    # a holder resending a range after a crash, or one overlapping, changes nothing
    assert not store.record("tax", row, from_seq=20, upto_seq=30, head="30:cc", at=now)
    assert not store.record("tax", row, from_seq=25, upto_seq=40, head="40:dd", at=now)
    assert store.record(
        "utility",
        [AccessCount("bank", "Verify", "allow", 5, 0)],
        from_seq=0,
        upto_seq=9,
        head="9:ee",
        at=now,
    )
    assert store.reported_upto("tax") == 30
    stats = {(s.holder, s.operation): s for s in store.statistics(now)}
    tax = stats[("tax", "Score")]
    assert (tax.today.allowed, tax.today.refused, tax.today.enterprises) == (2, 1, 2)
    assert (tax.week.allowed, tax.week.refused) == (4, 2)
    assert (tax.total.allowed, tax.total.refused, tax.total.enterprises) == (6, 3, 6)
    assert stats[("utility", "Verify")].total.allowed == 5


def _follower(tmp_path: Path, audit: AuditLog) -> FeedFollower:
    node_dir = tmp_path / "tax"
    node_dir.mkdir(exist_ok=True)
    config = NodeConfig(
        node_id="tax",
        role="holder",
        node_dir=node_dir,
        tls=TLS,
        platform=PlatformLink(address="127.0.0.1:1"),
    )
    consent = ConsentRegistry(sqlite_url(node_dir / "consent.db"), KEY.public_key(), node_id="tax")
    return FeedFollower(config=config, consent=consent, public_key=KEY.public_key(), audit=audit)


def test_a_report_goes_from_the_holder_to_the_auditors_figures(
    tmp_path: Path, audit: AuditLog
) -> None:
    """The holder's report, as the follower builds it, through the platform's Feed handler
    into the statistics; resending the pending range (a crash before the answer) counts once."""
    feed = FeedStore(sqlite_url(tmp_path / "feed.db"), KEY)
    feed.set_institution("bank", status="admitted", reason="ok", cert_sha256="ab" * 32)
    follower = _follower(tmp_path, audit)
    follower.apply(feed.since(0)[0])  # the holder learns the admitted banks from the feed
    head = audit.head()
    report = follower._access_report(head)
    assert report is not None
    rows, from_seq, upto_seq = report
    assert (from_seq, upto_seq) == (0, head.seq)  # type: ignore[union-attr]
    assert follower.state.access_range() == (0, upto_seq)  # pending before it is sent
    assert {r.bank for r in rows} == {"bank"}  # 'other' was never admitted: not reported
    again = follower._access_report(audit.head())  # not confirmed: the same range again
    assert again is not None and again[1:] == (0, upto_seq) and again[0] == rows

    platform_dir = tmp_path / "platform"
    platform_dir.mkdir()
    config = NodeConfig(node_id="platform", role="platform", node_dir=platform_dir, tls=TLS)
    access = AccessStore.for_node_dir(platform_dir)
    servicer = PlatformServicer(config=config, feed=feed, access=access)

    def send(report_rows: list[AccessCount], upto: int) -> None:
        request = platform_pb2.FeedRequest(
            meta=new_meta(), since_seq=feed.head()[0], access_from_seq=0, access_upto_seq=upto
        )
        request.access.extend(
            platform_pb2.AccessCount(
                bank=r.bank, operation=r.operation, decision=r.decision,
                records=r.records, enterprises=r.enterprises,
            )
            for r in report_rows
        )  # fmt: skip
        servicer.Feed(request, CallInfo(caller="tax", method="Feed", peer_head=str(head)))

    send(rows, upto_seq)
    send(rows, upto_seq)  # the retry
    stats = platform_statistics(feed, access=access)
    score = next(a for a in stats.access if a.operation == "ScoreBatch")
    assert (score.bank, score.holder, score.total.allowed, score.total.enterprises) == (
        "bank", "tax", 1, 4,
    )  # fmt: skip
    assert sum(a.total.allowed for a in stats.access) == 4  # counted once
    assert not any(code in repr(stats) for code in CODES)
    with pytest.raises(CallFailed) as exc:  # a USCC where a bank goes: INVALID_ARGUMENT
        send([AccessCount(CODES[0], "Score", "allow", 1, 1)], upto_seq)
    assert exc.value.status == "INVALID_ARGUMENT" and "not an institution" in exc.value.detail
    assert CODES[0] not in exc.value.detail
    assert (platform_dir / "platform_access.db").stat().st_mode & 0o077 == 0
    follower.state.set_access_range(upto_seq, upto_seq)  # confirmed
    assert follower._access_report(audit.head()) is None  # nothing new since
    _served(audit, "bank", "Score", subject=CODES[5])
    rows2, from2, _ = follower._access_report(audit.head()) or ([], 0, 0)
    assert (from2, rows2) == (upto_seq, [AccessCount("bank", "Score", "allow", 1, 1)])


def test_a_refused_report_never_stops_the_feed(tmp_path: Path, audit: AuditLog) -> None:
    """Over the in-process twin of the wire (same runtime, protobuf bytes): a poll carries the
    holder's counts and the platform stores them; a report over the platform's own row limit
    is INVALID_ARGUMENT, which the holder records and skips - the events still apply."""
    from federation.transport.inproc import InProcessPeer
    from federation.transport.policy import PurposePolicy
    from federation.transport.server import ServiceRuntime
    from parties.authorisation import PlatformSigner

    feed = FeedStore(sqlite_url(tmp_path / "feed.db"), KEY)
    feed.set_institution("bank", status="admitted", reason="ok", cert_sha256="ab" * 32)
    platform_dir = tmp_path / "platform"
    platform_dir.mkdir()
    config = NodeConfig(
        node_id="platform",
        role="platform",
        node_dir=platform_dir,
        tls=TLS,
        peers=[PeerConfig(node_id="tax", role="holder")],
    )
    access = AccessStore.for_node_dir(platform_dir)
    servicer = PlatformServicer(config=config, feed=feed, access=access)
    runtime = ServiceRuntime(
        servicer,
        node_id="platform",
        audit=AuditLog(sqlite_url(platform_dir / "audit.db"), "platform"),
        purposes=PurposePolicy(config.allowed_purposes),
    )
    follower = _follower(tmp_path, audit)
    follower._peer = InProcessPeer(runtime, self_id="tax", audit=None, deadline_s=5.0)
    # The first poll counts before it applies the admission: no bank is known yet, so the
    # fixture's records (served before this holder followed the platform) are not reported.
    assert follower.poll_once() == 1
    assert access.statistics(time.time()) == []
    _served(audit, "bank", "Score", subject=CODES[4])
    follower.poll_once()
    reported = follower.state.access_range()
    assert reported[0] == reported[1] == audit.head().seq  # type: ignore[union-attr]
    totals = {a.operation: a.total.allowed for a in access.statistics(time.time())}
    assert totals == {"Score": 1}

    servicer.max_access_rows = 1
    _served(audit, "bank", "Score", subject=CODES[5])
    _served(audit, "bank", "Verify")
    feed.grant(
        [
            PlatformSigner(KEY).issue(
                uscc=CODES[5], bank_id="bank", purpose="financing", categories=["tax"],
                valid_from=time.time() - 10, valid_until=time.time() + 3600,
            )
        ]
    )  # fmt: skip
    assert follower.poll_once() == 1  # the grant applied although the report was refused
    refused = audit.query(operation="platform.access", decision="error")
    assert len(refused) == 1 and "more than 1" in refused[0].reason
    assert follower.state.access_range()[0] == follower.state.access_range()[1] > reported[0]
    assert {a.operation: a.total.allowed for a in access.statistics(time.time())} == totals
