"""The platform's feed store and a holder applying it (in-process; the wire is tested in
tests/e2e/test_platform_nodes.py)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from federation.audit import AuditLog, sqlite_url
from federation.errors import Refused
from parties.authorisation import PlatformSigner, SignedAuthorisation
from parties.config import NodeConfig, PlatformLink, TlsConfig
from parties.consent import ConsentRegistry
from parties.data import uscc
from parties.holder.feed import FeedFollower, FollowState, InstitutionCheck
from parties.platform.events import GENESIS, MAX_WHITELIST, FeedError, sign_event
from parties.platform.events import FeedEvent as FeedEventType
from parties.platform.feed import MAX_PAGE, FeedStore

CODES = list(uscc.generate(np.random.default_rng(3), 20, uscc.CHENGDU_REGIONS))
KEY = Ed25519PrivateKey.generate()
FINGERPRINT = "ab" * 32


def _grant(signer: PlatformSigner, code: str, bank: str = "bank") -> object:
    now = time.time()
    return signer.issue(
        uscc=code,
        bank_id=bank,
        purpose="financing",
        categories=["tax"],
        valid_from=now - 10,
        valid_until=now + 3600,
    )


@pytest.fixture
def feed(tmp_path: Path) -> FeedStore:
    return FeedStore(sqlite_url(tmp_path / "feed.db"), KEY)


@pytest.fixture
def holder(tmp_path: Path) -> FeedFollower:
    node_dir = tmp_path / "tax"
    node_dir.mkdir()
    config = NodeConfig(
        node_id="tax",
        role="holder",
        node_dir=node_dir,
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
        platform=PlatformLink(address="127.0.0.1:1"),
    )
    consent = ConsentRegistry(sqlite_url(node_dir / "consent.db"), KEY.public_key(), node_id="tax")
    audit = AuditLog(sqlite_url(node_dir / "audit.db"), "tax")
    return FeedFollower(config=config, consent=consent, public_key=KEY.public_key(), audit=audit)


def test_sequence_and_chain(feed: FeedStore) -> None:
    signer = PlatformSigner(KEY)
    events = feed.grant([_grant(signer, c) for c in CODES[:3]])
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].prev == GENESIS
    assert [e.prev for e in events[1:]] == [e.hash for e in events[:-1]]
    revoke = feed.revoke(events[0].content()["auth"]["auth_id"], reason="enterprise withdrew")
    assert revoke is not None and revoke.seq == 4 and revoke.prev == events[-1].hash
    assert feed.head() == (4, revoke.hash)
    assert feed.verify(KEY.public_key()) == 4


def test_grant_is_idempotent_and_revoke_keeps_the_first(feed: FeedStore) -> None:
    signed = _grant(PlatformSigner(KEY), CODES[0])
    assert len(feed.grant(signed)) == 1
    assert feed.grant(signed) == []  # already published: not twice
    auth_id = signed.auth.auth_id  # type: ignore[attr-defined]
    assert feed.revoke(auth_id, reason="asked") is not None
    assert feed.revoke(auth_id, reason="asked again") is None
    assert feed.count() == 2
    with pytest.raises(FeedError, match="no authorisation"):
        feed.revoke("f" * 32, reason="x")
    with pytest.raises(FeedError, match="needs a reason"):
        feed.revoke(auth_id, reason="  ")


def test_grant_signed_by_another_key_is_refused(feed: FeedStore) -> None:
    other = PlatformSigner(Ed25519PrivateKey.generate())
    with pytest.raises(FeedError, match="not signed by this platform"):
        feed.grant(_grant(other, CODES[0]))
    assert feed.count() == 0


def test_bounds_on_since_and_max_events(feed: FeedStore) -> None:
    signer = PlatformSigner(KEY)
    feed.grant([_grant(signer, c) for c in CODES[:5]])
    events, head, _ = feed.since(2, 2)
    assert [e.seq for e in events] == [3, 4] and head == 5
    assert [e.seq for e in feed.since(0, 0)[0]] == [1, 2, 3, 4, 5]  # 0: the platform's page
    assert feed.since(5)[0] == []
    with pytest.raises(FeedError, match="past this platform's feed head 5"):
        feed.since(6)
    with pytest.raises(FeedError, match="since_seq"):
        feed.since(-1)
    with pytest.raises(FeedError, match="max_events"):
        feed.since(0, -3)
    assert MAX_PAGE <= 1000


def test_institutions(feed: FeedStore) -> None:
    with pytest.raises(FeedError, match="fingerprint"):
        feed.set_institution("bank", status="admitted", reason="ok", cert_sha256="zz")
    feed.set_institution("bank", status="admitted", reason="approved", cert_sha256=FINGERPRINT)
    with pytest.raises(FeedError, match="already in the registry"):
        feed.set_institution("bank", status="admitted", reason="again", cert_sha256=FINGERPRINT)
    with pytest.raises(FeedError, match="never admitted"):
        feed.set_institution("other", status="suspended", reason="x")
    feed.set_institution("bank", status="suspended", reason="licence under review")
    with pytest.raises(FeedError, match="already suspended"):
        feed.set_institution("bank", status="suspended", reason="x")
    (inst,) = feed.institutions()
    assert (inst.status, inst.reason, inst.seq) == ("suspended", "licence under review", 2)


def test_holder_applies_idempotently_and_continues_after_restart(
    feed: FeedStore, holder: FeedFollower
) -> None:
    signer = PlatformSigner(KEY)
    grants = feed.grant([_grant(signer, c) for c in CODES[:4]])
    events, _, _ = feed.since(0)
    assert holder.apply(events[:2]) == 2
    assert holder.apply(events) == 2  # the first two again: skipped, not applied twice
    assert holder.apply(events) == 0
    assert len(holder.consent.list()) == 4
    auth_id = grants[1].content()["auth"]["auth_id"]
    feed.revoke(auth_id, reason="enterprise withdrew")
    # a restarted holder: a new follower on the same stores continues at seq 4
    again = FeedFollower(
        config=holder.config,
        consent=holder.consent,
        public_key=KEY.public_key(),
        audit=None,
    )
    assert again.seq == 4
    assert again.apply(feed.since(again.seq)[0]) == 1
    assert holder.consent.get(auth_id).status == "revoked"
    assert "platform: enterprise withdrew" in (holder.consent.get(auth_id).revoke_reason or "")


def test_forged_or_out_of_order_events_are_refused_and_recorded(
    feed: FeedStore, holder: FeedFollower
) -> None:
    signer = PlatformSigner(KEY)
    feed.grant([_grant(signer, c) for c in CODES[:3]])
    events, _, _ = feed.since(0)
    forger = Ed25519PrivateKey.generate()
    content = events[0].content()
    content["auth"]["categories"] = ["gas", "tax"]  # the forger's change, signed by the forger
    forged = sign_event(forger, seq=1, kind="grant", body=content, prev=GENESIS, at=time.time())
    assert holder.apply([forged, *events[1:]]) == 0
    assert holder.seq == 0 and holder.consent.list() == []
    assert holder.apply([events[1]]) == 0  # a gap: seq 2 before 1
    tampered = dataclasses.replace(events[0], body=events[0].body.replace(b"tax", b"gas"))
    assert holder.apply([tampered]) == 0
    assert holder.audit is not None
    records = holder.audit.query(operation="platform.feed")
    reasons = " | ".join(r.reason for r in records)
    assert "signature does not verify" in reasons
    assert "where 1 was expected" in reasons
    assert "hash does not match" in reasons
    assert all(r.decision == "deny" for r in records)
    assert holder.apply(events) == 3  # the genuine feed still applies


def test_one_signature_covers_a_page_through_the_chain(
    feed: FeedStore, holder: FeedFollower
) -> None:
    """A page is authenticated by its last event's signature: every event before it is bound
    by the hash chain, so a garbled signature field on a genuine middle event changes nothing,
    while a bad signature on the last event is found and named per event."""
    signer = PlatformSigner(KEY)
    feed.grant([_grant(signer, c) for c in CODES[:5]])
    events, _, _ = feed.since(0)
    garbled = dataclasses.replace(events[1], signature=b"\0" * 64)
    assert holder.apply([events[0], garbled, events[2]]) == 3
    last = dataclasses.replace(events[4], signature=b"\0" * 64)
    assert holder.apply([events[3], last]) == 1
    assert holder.audit is not None
    (denied,) = holder.audit.query(operation="platform.feed", decision="deny")
    assert "event 5" in denied.reason and "signature does not verify" in denied.reason
    assert holder.apply(events) == 1 and len(holder.consent.list()) == 5


def test_institution_check(feed: FeedStore, holder: FeedFollower) -> None:
    check = InstitutionCheck(holder)
    with pytest.raises(Refused, match="not admitted by the platform"):
        check.check("bank")
    feed.set_institution("bank", status="admitted", reason="approved", cert_sha256=FINGERPRINT)
    holder.apply(feed.since(holder.seq)[0])
    check.check("bank")
    feed.set_institution("bank", status="suspended", reason="licence under review")
    holder.apply(feed.since(holder.seq)[0])
    with pytest.raises(Refused, match=r"suspended by the platform .*licence under review"):
        check.check("bank")
    assert "not yet known at this holder" in check.unknown_auth()
    InstitutionCheck(None).check("anyone")  # dev mode: no platform, no registry
    assert FollowState(FollowState.node_dir_url(holder.config.node_dir)).banks()["bank"].status == (
        "suspended"
    )


def test_the_holder_gate_refuses_for_the_registry_and_names_unseen_auth_ids(
    tmp_path: Path, feed: FeedStore, holder: FeedFollower
) -> None:
    """Through the holder's own gate code: every DataHolder RPC (``authorise_caller``) and
    every per-enterprise answer (``admit_codes``) asks the registry; an auth id the feed has
    not brought yet is refused as "not yet known at this holder"."""
    from types import SimpleNamespace

    from federation.transport.calls import CallInfo, new_meta
    from models.psi.store import AlignmentStore
    from parties.holder.service import HolderGate, HolderServicer

    code = CODES[0]
    gate = HolderGate(
        node_id="tax",
        table_codes=[code],
        consent=holder.consent,
        alignments=AlignmentStore(tmp_path / "alignments", node_id="tax", table_codes=[code]),
        categories=["tax"],
        column_categories={},
    )
    gate.institutions = InstitutionCheck(holder)
    servicer = SimpleNamespace(gate=gate, _banks={"bank"})
    with pytest.raises(Refused, match="not admitted by the platform"):
        HolderServicer.authorise_caller(servicer, "bank", "Hello")  # type: ignore[arg-type]
    feed.set_institution("bank", status="admitted", reason="approved", cert_sha256=FINGERPRINT)
    feed.grant(_grant(PlatformSigner(KEY), code))
    holder.apply(feed.since(holder.seq)[0])
    HolderServicer.authorise_caller(servicer, "bank", "Hello")  # type: ignore[arg-type]
    call = CallInfo(caller="bank", method="ScoreReach", meta=new_meta())
    with pytest.raises(Refused, match=r"not yet known at this holder .*seq 2"):
        HolderServicer.enterprise_gate(
            servicer,  # type: ignore[arg-type]
            call,
            [code],
            ["tax"],
            auth_ids=["f" * 32],
        )
    feed.set_institution("bank", status="suspended", reason="licence under review")
    holder.apply(feed.since(holder.seq)[0])
    with pytest.raises(Refused, match="licence under review"):
        gate.admit_codes(bank="bank", purpose="financing", codes=[code], categories=["tax"])


def test_a_page_is_applied_in_one_transaction_keeping_per_event_refusals(
    feed: FeedStore, holder: FeedFollower
) -> None:
    """Batching keeps the per-event semantics: a grant and its revocation in one page both
    apply in order; an authorisation stored with other content under the same id refuses that
    event (recorded), applies the ones before it and nothing after it."""
    signer = PlatformSigner(KEY)
    feed.grant([_grant(signer, c) for c in CODES[:3]])
    first_id = feed.since(0)[0][0].content()["auth"]["auth_id"]
    feed.revoke(first_id, reason="withdrew at once")
    feed.grant([_grant(signer, c) for c in CODES[3:5]])
    events, _, _ = feed.since(0)
    # a conflicting record already at the holder under the id of event 6 (a tampered store)
    clash = events[5].content()["auth"]
    assert holder.consent is not None
    other = _grant(signer, CODES[9])
    auth = dataclasses.replace(other.auth, auth_id=clash["auth_id"])  # type: ignore[attr-defined]
    holder.consent.grant(SignedAuthorisation(auth, KEY.sign(auth.canonical_bytes())))
    assert holder.apply(events) == 5
    assert holder.seq == 5
    assert holder.consent.get(first_id).status == "revoked"
    assert len(holder.consent.list()) == 5  # 4 from the feed + the clashing one
    assert holder.audit is not None
    (denied,) = holder.audit.query(operation="platform.feed", decision="deny")
    assert "event 6" in denied.reason and "different content" in denied.reason
    assert holder.apply(events) == 0  # still refused, not recorded twice
    assert len(holder.audit.query(operation="platform.feed", decision="deny")) == 1


def test_whitelists_bound_checked_and_holders_move_past_them(
    feed: FeedStore, holder: FeedFollower
) -> None:
    with pytest.raises(FeedError, match="never admitted"):
        feed.whitelist("bank", region="5101", industry="C", usccs=CODES[:2])
    feed.set_institution("bank", status="admitted", reason="ok", cert_sha256=FINGERPRINT)
    bad = CODES[1][:-1] + ("0" if CODES[1][-1] != "0" else "1")
    with pytest.raises(FeedError, match=r"entry 2 .*check"):
        feed.whitelist("bank", region="5101", industry="C", usccs=[CODES[0], bad])
    with pytest.raises(FeedError, match="region"):
        feed.whitelist("bank", region="5", industry="C", usccs=CODES[:1])
    with pytest.raises(FeedError, match="industry"):
        feed.whitelist("bank", region="5101", industry="Z9", usccs=CODES[:1])
    many = list(uscc.generate(np.random.default_rng(4), MAX_WHITELIST + 1, uscc.CHENGDU_REGIONS))
    with pytest.raises(FeedError, match=f"limit of {MAX_WHITELIST} per push"):
        feed.whitelist("bank", region="5101", industry="C", usccs=many)
    event = feed.whitelist("bank", region="5101", industry="C13", usccs=CODES[:3], note="n")
    assert event.kind == "whitelist" and event.content()["usccs"] == CODES[:3]
    assert holder.apply(feed.since(0)[0]) == 2
    assert holder.seq == event.seq and holder.consent.list() == []  # nothing applied


def test_a_bank_keeps_only_what_concerns_it(tmp_path: Path, feed: FeedStore) -> None:
    node_dir = tmp_path / "bank"
    node_dir.mkdir()
    config = NodeConfig(
        node_id="bank",
        role="bank",
        node_dir=node_dir,
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
        platform=PlatformLink(address="127.0.0.1:1"),
    )
    bank = FeedFollower(config=config, consent=None, public_key=KEY.public_key(), audit=None)
    signer = PlatformSigner(KEY)
    feed.set_institution("bank", status="admitted", reason="ok", cert_sha256=FINGERPRINT)
    feed.set_institution("other", status="admitted", reason="ok", cert_sha256="cd" * 32)
    mine = feed.grant([_grant(signer, CODES[0]), _grant(signer, CODES[1], bank="other")])
    feed.whitelist("bank", region="5101", industry="C", usccs=CODES[2:4], note="to bank")
    feed.whitelist("other", region="5101", industry="C", usccs=CODES[4:5])
    feed.revoke(mine[0].content()["auth"]["auth_id"], reason="withdrew")
    assert bank.apply(feed.since(0)[0]) == 7
    bank.apply(feed.since(0)[0])  # again: idempotent
    state = FollowState(FollowState.node_dir_url(node_dir))
    (own,) = state.own_authorisations()
    assert own.uscc == CODES[0] and own.status() == "revoked"
    (pushed,) = state.whitelists()
    assert pushed.usccs == tuple(CODES[2:4]) and pushed.note == "to bank"
    assert state.banks()["bank"].status == "admitted"


def test_a_bank_presenting_another_certificate_is_refused(
    feed: FeedStore, holder: FeedFollower
) -> None:
    check = InstitutionCheck(holder)
    feed.set_institution("bank", status="admitted", reason="ok", cert_sha256=FINGERPRINT)
    holder.apply(feed.since(0)[0])
    check.check_certificate("bank", FINGERPRINT)
    check.check_certificate("platform", "")  # not a registered bank: not this check's question
    with pytest.raises(Refused, match="not the one the platform admitted") as info:
        check.check_certificate("bank", "cd" * 32)
    assert info.value.code == "institution" and "cd" * 32 not in str(info.value)
    with pytest.raises(Refused, match=r"certificate \(none\)"):
        check.check_certificate("bank", "")
    with pytest.raises(FeedError, match="same certificate"):
        feed.set_institution("bank", status="admitted", reason="x", cert_sha256=FINGERPRINT)
    feed.set_institution("bank", status="admitted", reason="re-issued", cert_sha256="cd" * 32)
    holder.apply(feed.since(holder.seq)[0])
    check.check_certificate("bank", "cd" * 32)  # a new admission carries the new certificate


def test_statistics_are_counts_only(feed: FeedStore) -> None:
    from parties.platform.stats import platform_statistics

    signer = PlatformSigner(KEY)
    feed.set_institution("bank", status="admitted", reason="ok", cert_sha256=FINGERPRINT)
    events = feed.grant([_grant(signer, c) for c in CODES[:4]])
    feed.revoke(events[0].content()["auth"]["auth_id"], reason="withdrew")
    feed.whitelist("bank", region="5101", industry="C", usccs=CODES[:3])
    stats = platform_statistics(feed)
    (bank,) = stats.banks
    assert (bank.bank, bank.status, bank.grants, bank.live, bank.revoked) == (
        "bank",
        "admitted",
        4,
        3,
        1,
    )
    assert (bank.whitelist_pushes, bank.whitelisted) == (1, 3)
    assert stats.events == {"admit": 1, "grant": 4, "revoke": 1, "whitelist": 1}
    assert not any(c in repr(stats) for c in CODES)
    later = platform_statistics(feed, now=time.time() + 7200)  # past valid_until
    assert later.banks[0].live == 0


def test_a_long_poll_answers_on_a_new_event_and_on_close(tmp_path: Path, feed: FeedStore) -> None:
    """``Feed`` with ``wait_ms`` holds an up-to-date follower until an event exists (written
    by another connection, as the operator's CLI does) or the node stops."""
    import threading

    from federation.transport.calls import CallInfo, new_meta
    from parties.platform.service import PlatformServicer
    from protos import platform_pb2

    config = NodeConfig(
        node_id="platform",
        role="platform",
        node_dir=tmp_path,
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
    )
    servicer = PlatformServicer(config=config, feed=FeedStore(sqlite_url(tmp_path / "feed.db")))
    pages: list[platform_pb2.FeedPage] = []

    def poll() -> None:
        request = platform_pb2.FeedRequest(meta=new_meta(), since_seq=0, wait_ms=30_000)
        pages.append(servicer.Feed(request, CallInfo(caller="tax", method="Feed")))

    waiting = threading.Thread(target=poll)
    waiting.start()
    time.sleep(0.2)
    assert waiting.is_alive()  # nothing to send yet: it waits
    feed.grant(_grant(PlatformSigner(KEY), CODES[0]))
    waiting.join(timeout=10)
    assert not waiting.is_alive() and [e.seq for e in pages[0].events] == [1]
    waiting = threading.Thread(target=lambda: pages.append(
        servicer.Feed(
            platform_pb2.FeedRequest(meta=new_meta(), since_seq=1, wait_ms=30_000),
            CallInfo(caller="tax", method="Feed"),
        )
    ))  # fmt: skip
    waiting.start()
    time.sleep(0.2)
    servicer.close()
    waiting.join(timeout=10)
    assert not waiting.is_alive() and list(pages[1].events) == [] and pages[1].head_seq == 1


def test_a_bank_never_receives_another_banks_grants_or_whitelists(
    tmp_path: Path, feed: FeedStore
) -> None:
    """Served to a bank, another bank's grant, revocation or whitelist comes without its body
    (kind, time and digest only): the chain still verifies, the bank keeps its own, and it
    never sees which enterprises authorised a competitor. A holder gets every body, and refuses
    an event that comes without one."""
    from federation.transport.calls import CallInfo, new_meta
    from parties.config import PeerConfig
    from parties.platform.service import PlatformServicer
    from protos import platform_pb2

    signer = PlatformSigner(KEY)
    feed.set_institution("bank", status="admitted", reason="ok", cert_sha256=FINGERPRINT)
    feed.set_institution("other", status="admitted", reason="ok", cert_sha256="cd" * 32)
    mine, theirs = feed.grant([_grant(signer, CODES[0]), _grant(signer, CODES[1], bank="other")])
    feed.whitelist("other", region="5101", industry="C", usccs=CODES[4:5])
    feed.revoke(theirs.content()["auth"]["auth_id"], reason="withdrew")
    platform = NodeConfig(
        node_id="platform",
        role="platform",
        node_dir=tmp_path,
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
        peers=[PeerConfig(node_id="bank", role="bank"), PeerConfig(node_id="tax", role="holder")],
    )
    servicer = PlatformServicer(config=platform, feed=feed)

    def page(caller: str) -> list[object]:
        request = platform_pb2.FeedRequest(meta=new_meta(), since_seq=0)
        return list(servicer.Feed(request, CallInfo(caller=caller, method="Feed")).events)

    to_bank = page("bank")
    secret = {CODES[1], CODES[4]}
    assert all(not any(c.encode() in e.body for c in secret) for e in to_bank)
    bodies = {e.seq: bool(e.body) for e in to_bank}
    assert bodies == {1: True, 2: True, 3: True, 4: False, 5: False, 6: False}
    assert all(len(e.body_sha256) == 64 for e in to_bank)
    assert all(e.body for e in page("tax"))  # a holder applies every grant: it gets them whole

    node_dir = tmp_path / "bank"
    node_dir.mkdir()
    config = NodeConfig(
        node_id="bank",
        role="bank",
        node_dir=node_dir,
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
        platform=PlatformLink(address="127.0.0.1:1"),
    )
    bank = FeedFollower(config=config, consent=None, public_key=KEY.public_key(), audit=None)
    events = [
        FeedEventType(e.seq, e.kind, bytes(e.body), e.prev, e.at, e.hash, bytes(e.signature),
                      e.body_sha256)
        for e in to_bank
    ]  # fmt: skip
    assert bank.apply(events) == 6 and bank.seq == 6  # the chain verifies without the bodies
    (own,) = FollowState(FollowState.node_dir_url(node_dir)).own_authorisations()
    assert own.uscc == CODES[0] and own.auth_id == mine.content()["auth"]["auth_id"]
    # a redacted event is no use to a holder: refused, nothing after it applied
    holder_events = [events[0], events[1], events[2], events[3]]
    tax_dir = tmp_path / "tax"
    tax_dir.mkdir()
    audit = AuditLog(sqlite_url(tax_dir / "audit.db"), "tax")
    consent = ConsentRegistry(sqlite_url(tax_dir / "consent.db"), KEY.public_key(), node_id="tax")
    tax = FeedFollower(
        config=config.model_copy(update={"node_id": "tax", "role": "holder", "node_dir": tax_dir}),
        consent=consent,
        public_key=KEY.public_key(),
        audit=audit,
    )
    assert tax.apply(holder_events) == 3 and tax.seq == 3
