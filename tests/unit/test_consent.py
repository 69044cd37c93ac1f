"""Consent: platform-signed authorisations, the holder's registry and its check, the purpose
policy, and the ``xinyidai consent`` commands (which also write the audit log)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from federation.audit import AuditLog, sqlite_url
from federation.errors import Refused
from federation.pki import PkiLayout, init_pki, load_platform_public_key
from federation.transport.policy import PurposePolicy
from parties.authorisation import (
    Authorisation,
    ConsentError,
    InvalidAuthorisation,
    PlatformSigner,
    SignedAuthorisation,
)
from parties.consent import ConsentRegistry
from parties.data import uscc
from xinyidai.cli.main import app

CODES = list(uscc.generate(np.random.default_rng(7), 300, uscc.CHENGDU_REGIONS))
A, B = CODES[0], CODES[1]
DAY = 86400.0
NOW = time.time()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiLayout:
    return init_pki(tmp_path_factory.mktemp("pki"), ["bank", "tax"])


@pytest.fixture(scope="module")
def signer(pki: PkiLayout) -> PlatformSigner:
    return PlatformSigner.from_file(pki.platform_signing_key)


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tax"
    d.mkdir()
    return d


@pytest.fixture
def registry(node_dir: Path, pki: PkiLayout):
    reg = ConsentRegistry(
        sqlite_url(node_dir / "consent.db"),
        load_platform_public_key(pki.platform_signing_pub),
        node_id="tax",
    )
    yield reg
    reg.close()


def issue(signer: PlatformSigner, **overrides) -> SignedAuthorisation:
    kwargs = dict(
        uscc=A,
        bank_id="bank",
        purpose="financing",
        categories=["tax", "electricity"],
        valid_from=NOW - DAY,
        valid_until=NOW + 30 * DAY,
    )
    return signer.issue(**{**kwargs, **overrides})


def check(registry: ConsentRegistry, **overrides):
    kwargs = dict(uscc=A, bank_id="bank", purpose="financing", categories=["tax"])
    return registry.check(**{**kwargs, **overrides})


def _edit(node_dir: Path, sql: str, params: tuple = ()) -> None:
    con = sqlite3.connect(node_dir / "consent.db")
    with con:
        con.execute(sql, params)
    con.close()


# ------------------------------------------------------------------------------------------------
# Issuing and signing


def test_issue_signs_canonical_bytes(signer: PlatformSigner, pki: PkiLayout) -> None:
    signed = issue(signer, categories=["tax", "electricity", "tax"])
    auth = signed.auth
    assert len(auth.auth_id) == 32 and int(auth.auth_id, 16) >= 0
    assert auth.categories == ("electricity", "tax")  # sorted, no duplicates
    assert abs(auth.issued_at - time.time()) < 5
    expected = json.dumps(
        {
            "auth_id": auth.auth_id,
            "bank_id": "bank",
            "categories": ["electricity", "tax"],
            "issued_at": auth.issued_at,
            "purpose": "financing",
            "uscc": A,
            "valid_from": NOW - DAY,
            "valid_until": NOW + 30 * DAY,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert auth.canonical_bytes() == expected
    public = load_platform_public_key(pki.platform_signing_pub)
    public.verify(signed.signature, expected)  # raises if not the platform's signature
    assert signed.verifies(public)
    again = SignedAuthorisation.from_dict(json.loads(json.dumps(signed.to_dict())))
    assert again == signed and again.verifies(public)
    assert "PRIVATE" not in repr(signer) and "Ed25519" in repr(signer)


def test_issue_normalises_the_uscc_and_rejects_invalid_ones(signer: PlatformSigner) -> None:
    typed = " " + A.lower().replace(A[0], chr(ord(A[0]) + 0xFEE0)) + " "  # full-width first digit
    assert issue(signer, uscc=typed).auth.uscc == A
    broken = A[:-1] + ("0" if A[-1] != "0" else "1")
    with pytest.raises(InvalidAuthorisation, match="check character"):
        issue(signer, uscc=broken)
    with pytest.raises(InvalidAuthorisation, match="unknown categories"):
        issue(signer, categories=["tax", "bank_statements"])
    with pytest.raises(InvalidAuthorisation, match="categories is empty"):
        issue(signer, categories=[])
    with pytest.raises(InvalidAuthorisation, match="not after valid_from"):
        issue(signer, valid_until=NOW - 2 * DAY)
    with pytest.raises(InvalidAuthorisation, match="bank_id"):
        issue(signer, bank_id="Bank of X")
    with pytest.raises(InvalidAuthorisation, match="purpose"):
        issue(signer, purpose="")


# ------------------------------------------------------------------------------------------------
# Granting


def test_grant_then_check_allows(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    signed = issue(signer)
    registry.grant(signed)
    decision = check(registry, categories=["tax", "electricity"])
    assert decision.allowed and decision.auth_id == signed.auth.auth_id
    assert decision.valid_until == signed.auth.valid_until
    assert signed.auth.auth_id in decision.reason
    decision.raise_if_denied()
    # The USCC as a person types it is the same enterprise.
    assert check(registry, uscc=A.lower()).allowed


def test_grant_is_idempotent_and_refuses_conflicts(
    registry: ConsentRegistry, signer: PlatformSigner
) -> None:
    signed = issue(signer)
    registry.grant(signed)
    registry.grant(signed)
    assert len(registry.list()) == 1
    other = issue(signer, categories=["gas"])
    conflicting = SignedAuthorisation(
        Authorisation(**{**other.auth.__dict__, "auth_id": signed.auth.auth_id}),
        signer._key.sign(
            Authorisation(
                **{**other.auth.__dict__, "auth_id": signed.auth.auth_id}
            ).canonical_bytes()
        ),
    )
    with pytest.raises(ConsentError, match="already stored with different content"):
        registry.grant(conflicting)
    assert [r.auth.categories for r in registry.list()] == [("electricity", "tax")]


def test_grant_refuses_a_signature_from_another_key(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    rogue = PlatformSigner(Ed25519PrivateKey.generate())
    with pytest.raises(InvalidAuthorisation, match="signature invalid"):
        registry.grant(issue(rogue))
    assert registry.list() == []


def test_grant_refuses_altered_records(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    signed = issue(signer, categories=["tax"])
    wider = Authorisation(**{**signed.auth.__dict__, "categories": ("gas", "tax")})
    with pytest.raises(InvalidAuthorisation, match="signature invalid"):
        registry.grant(SignedAuthorisation(wider, signed.signature))
    flipped = bytes([signed.signature[0] ^ 1]) + signed.signature[1:]
    with pytest.raises(InvalidAuthorisation, match="signature invalid"):
        registry.grant(SignedAuthorisation(signed.auth, flipped))
    assert registry.list() == []


def test_grant_refuses_malformed_records_even_if_signed(
    registry: ConsentRegistry, signer: PlatformSigner
) -> None:
    good = issue(signer).auth
    bad = Authorisation(**{**good.__dict__, "uscc": "91510104MA6XXXXX0X"})
    signed = SignedAuthorisation(bad, signer._key.sign(bad.canonical_bytes()))
    with pytest.raises(InvalidAuthorisation, match=r"malformed.*uscc '91510104MA6XXXXX0X'"):
        registry.grant(signed)
    with pytest.raises(InvalidAuthorisation, match="missing field 'bank_id'"):
        Authorisation.from_dict({k: v for k, v in good.to_dict().items() if k != "bank_id"})
    with pytest.raises(InvalidAuthorisation, match="valid_until"):
        Authorisation.from_dict({**good.to_dict(), "valid_until": "next year"})
    assert registry.list() == []


# ------------------------------------------------------------------------------------------------
# Checking: every way to be refused, each with its own reason


def test_no_authorisation(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    registry.grant(issue(signer))
    d = check(registry, uscc=B)
    assert not d.allowed and d.auth_id is None
    assert d.reason == f"no authorisation from enterprise {B} for bank bank"
    d = check(registry, bank_id="bank2")
    assert d.reason == f"no authorisation from enterprise {A} for bank bank2"
    with pytest.raises(Refused, match="no authorisation from enterprise"):
        d.raise_if_denied()
    assert "not a valid unified social credit code" in check(registry, uscc="12345").reason


def test_category_and_purpose(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    signed = issue(signer)
    registry.grant(signed)
    aid = signed.auth.auth_id
    d = check(registry, categories=["tax", "gas"])  # all categories must be covered
    assert not d.allowed and d.auth_id == aid
    assert f"authorisation {aid} does not cover category 'gas'" in d.reason
    d = check(registry, purpose="marketing")
    assert not d.allowed and "purpose 'marketing' not authorised" in d.reason
    assert not check(registry, categories=[]).allowed


def test_validity_window(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    signed = issue(signer, valid_from=NOW + DAY, valid_until=NOW + 2 * DAY)
    registry.grant(signed)
    d = check(registry)
    assert not d.allowed and "is not valid until" in d.reason
    assert check(registry, at=NOW + 1.5 * DAY).allowed
    d = check(registry, at=NOW + 2 * DAY)
    assert not d.allowed and f"authorisation {signed.auth.auth_id} expired at" in d.reason
    assert time.strftime("%Y-%m-%d", time.gmtime(NOW + 2 * DAY)) in d.reason


def test_revocation(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    signed = issue(signer)
    registry.grant(signed)
    aid = signed.auth.auth_id
    registry.revoke(aid, reason="enterprise withdrew consent by phone")
    d = check(registry)
    assert not d.allowed
    assert d.reason.startswith(f"authorisation {aid} revoked at ")
    assert d.reason.endswith("(enterprise withdrew consent by phone)")
    first = registry.get(aid).revoked_at
    registry.revoke(aid, reason="again")  # idempotent: keeps the first revocation
    assert registry.get(aid).revoked_at == first and registry.get(aid).revoke_reason.startswith(
        "enterprise"
    )
    registry.grant(signed)  # re-delivering the grant does not undo the revocation
    assert not check(registry).allowed
    with pytest.raises(ConsentError, match="no authorisation 'deadbeef'"):
        registry.revoke("deadbeef", reason="x")
    with pytest.raises(ConsentError, match="needs a reason"):
        registry.revoke(aid, reason=" ")


def test_a_later_authorisation_can_allow_what_an_earlier_one_does_not(
    registry: ConsentRegistry, signer: PlatformSigner
) -> None:
    old = issue(signer, categories=["tax"])
    new = issue(signer, categories=["gas", "tax"])
    registry.grant(old)
    registry.grant(new)
    d = check(registry, categories=["gas"])
    assert d.allowed and d.auth_id == new.auth.auth_id
    registry.revoke(new.auth.auth_id, reason="withdrawn")
    d = check(registry, categories=["gas"])
    # The closest miss is reported: the live one that lacks gas, not the revoked one.
    assert not d.allowed and d.auth_id == old.auth.auth_id and "'gas'" in d.reason


@pytest.mark.parametrize(
    ("sql", "params", "ask"),
    [
        ("UPDATE consent SET categories = 'electricity,gas,tax'", (), {"categories": ["gas"]}),
        ("UPDATE consent SET valid_until = valid_until + 3e7", (), {"at": NOW + 40 * DAY}),
        ("UPDATE consent SET bank_id = 'bank2'", (), {"bank_id": "bank2"}),
        ("UPDATE consent SET record = replace(record, '\"tax\"', '\"gas\"')", (), {}),
        ("UPDATE consent SET purpose = 'marketing'", (), {"purpose": "marketing"}),
        ("UPDATE consent SET record = '{not json'", (), {}),
    ],
)
def test_a_row_edited_in_the_database_stops_authorising(
    registry: ConsentRegistry, signer: PlatformSigner, node_dir: Path, sql, params, ask
) -> None:
    registry.grant(issue(signer))
    _edit(node_dir, sql, params)
    d = check(registry, **ask)
    assert not d.allowed
    assert "signature invalid" in d.reason, d.reason
    [record] = registry.list()
    assert record.status == "invalid" and record.problem


def test_list_statuses_and_stats(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    active = issue(signer)
    expired = issue(signer, uscc=B, valid_from=NOW - 10 * DAY, valid_until=NOW - DAY)
    future = issue(signer, uscc=B, valid_from=NOW + DAY, valid_until=NOW + 9 * DAY)
    revoked = issue(signer, uscc=CODES[2])
    other_bank = issue(signer, uscc=CODES[3], bank_id="bank2")
    for s in (active, expired, future, revoked, other_bank):
        registry.grant(s)
    registry.revoke(revoked.auth.auth_id, reason="closed")
    status = {r.auth.auth_id: r.status for r in registry.list()}
    assert status == {
        active.auth.auth_id: "active",
        expired.auth.auth_id: "expired",
        future.auth.auth_id: "not-yet-valid",
        revoked.auth.auth_id: "revoked",
        other_bank.auth.auth_id: "active",
    }
    assert {r.auth.auth_id for r in registry.list(uscc=B)} == {
        expired.auth.auth_id,
        future.auth.auth_id,
    }
    assert [r.auth.auth_id for r in registry.list(bank_id="bank2")] == [other_bank.auth.auth_id]
    live = registry.list(include_inactive=False)
    assert {r.auth.auth_id for r in live} == {active.auth.auth_id, other_bank.auth.auth_id}
    stats = registry.stats()
    assert (stats.active, stats.revoked, stats.expired, stats.enterprises) == (2, 1, 1, 2)
    assert stats.not_yet_valid == 1
    later = registry.stats(at=NOW + 2 * DAY)
    assert (later.active, later.enterprises, later.not_yet_valid) == (3, 3, 0)
    for_bank2 = registry.stats(bank_id="bank2")
    assert (for_bank2.active, for_bank2.revoked, for_bank2.expired) == (1, 0, 0)
    for_bank = registry.stats(bank_id="bank")
    assert (for_bank.active, for_bank.revoked, for_bank.enterprises) == (1, 1, 1)


def test_check_with_many_authorisations(registry: ConsentRegistry, signer: PlatformSigner) -> None:
    for code in CODES[:200]:
        registry.grant(issue(signer, uscc=code))
    for code in CODES[:200]:
        assert check(registry, uscc=code).allowed
    for code in CODES[200:300]:
        assert not check(registry, uscc=code).allowed


def test_purpose_policy() -> None:
    policy = PurposePolicy()
    policy.check("financing")
    with pytest.raises(Refused) as refused:
        policy.check("marketing")
    assert refused.value.code == "purpose"
    assert refused.value.reason == (
        "purpose 'marketing' is not allowed at this node (allowed: financing)"
    )
    with pytest.raises(Refused, match="no purpose given"):
        policy.check("")
    PurposePolicy(["financing", "risk-review"]).check("risk-review")
    with pytest.raises(Exception, match="allowed purposes"):
        PurposePolicy([])


# ------------------------------------------------------------------------------------------------
# CLI


def test_cli_grant_list_revoke_are_audited(pki: PkiLayout, node_dir: Path) -> None:
    runner = CliRunner()
    (node_dir / "platform_signing.pub").write_bytes(pki.platform_signing_pub.read_bytes())
    result = runner.invoke(
        app,
        [
            "consent", "grant", "--node-dir", str(node_dir),
            "--signing-key", str(pki.platform_signing_key),
            "--uscc", A, "--bank", "bank", "--categories", "tax,electricity", "--days", "30",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    auth_id = result.output.split()[1]
    assert len(auth_id) == 32

    listed = runner.invoke(app, ["consent", "list", "--node-dir", str(node_dir), "--json"])
    [record] = [json.loads(line) for line in listed.output.splitlines()]
    assert record["auth_id"] == auth_id and record["status"] == "active"
    assert record["categories"] == ["electricity", "tax"]
    assert record["valid_until"] - record["valid_from"] == pytest.approx(30 * DAY)

    table = runner.invoke(app, ["consent", "list", "--node-dir", str(node_dir), "--uscc", A])
    assert table.exit_code == 0 and auth_id in table.output

    result = runner.invoke(
        app,
        ["consent", "revoke", "--node-dir", str(node_dir), auth_id, "--reason", "loan repaid"],
    )
    assert result.exit_code == 0, result.output
    listed = runner.invoke(app, ["consent", "list", "--node-dir", str(node_dir), "--json"])
    assert json.loads(listed.output)["status"] == "revoked"

    with AuditLog.for_node_dir(node_dir) as log:
        entries = log.query()
        assert log.verify().ok
    assert [(e.operation, e.direction, e.peer) for e in entries] == [
        ("consent.grant", "local", "bank"),
        ("consent.revoke", "local", "bank"),
    ]
    assert auth_id in entries[0].reason and "loan repaid" in entries[1].reason

    unknown = runner.invoke(
        app, ["consent", "revoke", "--node-dir", str(node_dir), "0" * 32, "--reason", "x"]
    )
    assert isinstance(unknown.exception, ConsentError)


def test_cli_grant_with_the_wrong_signing_key_stores_nothing(
    pki: PkiLayout, node_dir: Path, tmp_path: Path
) -> None:
    (node_dir / "platform_signing.pub").write_bytes(pki.platform_signing_pub.read_bytes())
    other = init_pki(tmp_path / "other-pki", ["bank"])
    result = CliRunner().invoke(
        app,
        [
            "consent", "grant", "--node-dir", str(node_dir),
            "--signing-key", str(other.platform_signing_key),
            "--uscc", A, "--bank", "bank", "--categories", "tax",
        ],
    )  # fmt: skip
    assert isinstance(result.exception, InvalidAuthorisation)
    assert "signature invalid" in str(result.exception)
    with ConsentRegistry.for_node_dir(
        node_dir, load_platform_public_key(pki.platform_signing_pub)
    ) as reg:
        assert reg.list() == []
    with AuditLog(sqlite_url(node_dir / "audit.db"), "tax") as log:  # the refusal is on record
        [entry] = log.query()
    assert (entry.operation, entry.decision, entry.subject) == ("consent.grant", "deny", A)
    assert "signature invalid" in entry.reason


def test_cli_list_needs_the_platform_key(node_dir: Path, pki: PkiLayout, signer) -> None:
    with ConsentRegistry.for_node_dir(
        node_dir, load_platform_public_key(pki.platform_signing_pub)
    ) as reg:
        reg.grant(issue(signer))
    runner = CliRunner()
    result = runner.invoke(app, ["consent", "list", "--node-dir", str(node_dir)])
    assert "platform_signing.pub" in str(result.exception)
    result = runner.invoke(
        app,
        ["consent", "list", "--node-dir", str(node_dir), "--json",
         "--platform-key", str(pki.platform_signing_pub)],
    )  # fmt: skip
    assert json.loads(result.output)["status"] == "active"
