"""The platform node over real processes and mutual TLS: grants and revocations issued at the
platform reach every holder through the signed feed; suspended banks are refused; a forged
event is refused; holders keep serving while the platform is down (docs/platform.md)."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from federation.audit import AuditLog
from federation.pki import issue_node_certificate
from federation.transport.calls import PeerRefused, new_meta
from parties.config import NodeConfig, PeerConfig, TlsConfig, load_node_config
from parties.node import connect
from parties.platform.events import sign_event
from protos import holder_pb2
from xinyidai.cli.main import app
from xinyidai.launcher import Federation, free_ports, start_nodes, stop_nodes

pytestmark = pytest.mark.e2e
HOLDERS = ("tax", "utility")
CATEGORIES = "electricity,tax"  # one authorisation covers the enterprise at both holders
CATEGORY = {"tax": "tax", "utility": "electricity"}


def cli(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@dataclass
class World:
    fed: Federation
    platform: Path
    fresh: list[str]  # enterprises both holders hold that the demo never authorised

    def grant(self, code: str) -> str:
        out = cli(
            "platform", "grant", "--node-dir", str(self.platform), "--uscc", code,
            "--bank", "bank", "--categories", CATEGORIES,
        )  # fmt: skip
        return out.split()[1].rstrip(":")

    def check(self, holder: str, code: str) -> str:
        """The bank asks ``holder`` whether it would serve ``code``: the auth id, or the
        refusal's text."""
        bank = load_node_config(self.fed.configs["bank"])
        peer = PeerConfig(
            node_id=holder,
            address=load_node_config(self.fed.configs[holder]).address,
            role="holder",
        )
        with connect(bank, peer, audit=None, deadline_s=5.0) as client:
            try:
                answer = client.call(
                    "CheckAuthorisation",
                    holder_pb2.AuthorisationQuery(
                        meta=new_meta(), uscc=code, categories=[CATEGORY[holder]]
                    ),
                )
            except PeerRefused as exc:
                return f"refused: {exc}"
        return str(answer.auth_id)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> float:
    """Seconds until ``predicate`` holds (fails the test after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - start


def stop_one(fed: Federation, node_id: str) -> None:
    proc = fed.processes[node_id]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A demo federation plus a platform node the holders follow (poll 0.2 s), the bank
    admitted at the platform before anything starts."""
    from xinyidai.demo import build_federation

    workdir = tmp_path_factory.mktemp("platform")
    fed, _ = build_federation(workdir, enterprises=300, seed=5, deadline_s=10.0, workers=1)
    issue_node_certificate(fed.pki.directory, "platform")
    pdir = workdir / "platform"
    pdir.mkdir(mode=0o700)
    for src, dst in (
        (fed.pki.node_cert("platform"), "node.pem"),
        (fed.pki.ca_cert, "ca.pem"),
        (fed.pki.node_key("platform"), "node.key"),
        (fed.pki.platform_signing_key, "platform_signing.key"),
    ):
        shutil.copyfile(src, pdir / dst)
        os.chmod(pdir / dst, 0o600)
    (port,) = free_ports(1)
    config = NodeConfig(
        node_id="platform",
        role="platform",
        address=f"127.0.0.1:{port}",
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
        platform_signing_key=Path("platform_signing.key"),
        peers=[PeerConfig(node_id=n, role="holder") for n in HOLDERS]
        + [PeerConfig(node_id="bank", role="bank")],
    )
    (pdir / "node.yaml").write_text(config.to_yaml())
    for node in (*HOLDERS, "bank"):  # the bank follows too: its operator's view
        path = fed.configs[node]
        raw = yaml.safe_load(path.read_text())
        raw["platform"] = {"address": f"127.0.0.1:{port}", "poll_s": 0.2}
        if node == "bank":
            shutil.copyfile(fed.pki.platform_signing_pub, path.parent / "platform_signing.pub")
            raw["platform_public_key"] = "platform_signing.pub"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    fed.configs = {"platform": pdir / "node.yaml", **fed.configs}
    cli("platform", "admit", "bank", "--node-dir", str(pdir), "--cert", str(workdir / "bank" / "node.pem"))  # fmt: skip
    held = [
        set(pd.read_csv(fed.node_dir(h) / "data" / f"{h}.csv", usecols=["uscc"])["uscc"])
        for h in HOLDERS
    ]
    authorised: set[str] = set()
    for holder in HOLDERS:
        db = sqlite3.connect(fed.node_dir(holder) / "consent.db")
        authorised |= {row[0] for row in db.execute("SELECT uscc FROM consent")}
        db.close()
    fresh = sorted((held[0] & held[1]) - authorised)
    assert len(fresh) >= 8
    try:
        start_nodes(fed)
        yield World(fed, pdir, fresh)
    finally:
        stop_nodes(fed)


def test_a_grant_at_the_platform_reaches_the_holders(world: World) -> None:
    code = world.fresh[0]
    assert "no authorisation" in world.check("tax", code)
    auth_id = world.grant(code)
    for holder in HOLDERS:
        wait_for(lambda h=holder: world.check(h, code) == auth_id, timeout=5.0)


def test_a_revocation_stops_every_holder_within_5_s(world: World) -> None:
    code = world.fresh[1]
    auth_id = world.grant(code)
    for holder in HOLDERS:
        wait_for(lambda h=holder: world.check(h, code) == auth_id, timeout=5.0)
    cli("platform", "revoke", auth_id, "--node-dir", str(world.platform), "--reason", "withdrew")
    start = time.monotonic()
    for holder in HOLDERS:
        wait_for(lambda h=holder: "revoked" in world.check(h, code), timeout=5.0)
    elapsed = time.monotonic() - start
    assert elapsed <= 5.0, f"revocation took {elapsed:.2f} s to reach every holder"
    assert "platform: withdrew" in world.check("utility", code)


def test_a_holder_down_during_a_grant_catches_up(world: World) -> None:
    code = world.fresh[2]
    stop_one(world.fed, "utility")
    auth_id = world.grant(code)
    wait_for(lambda: world.check("tax", code) == auth_id, timeout=5.0)
    start_nodes(world.fed, only=["utility"])
    wait_for(lambda: world.check("utility", code) == auth_id, timeout=10.0)


def test_a_forged_event_is_refused_and_recorded(world: World) -> None:
    """Someone writes an event into the platform's feed with another key: every holder
    refuses it, records it, and applies nothing after it until the feed is genuine again."""
    code = world.fresh[3]
    db = sqlite3.connect(world.platform / "platform_feed.db")
    seq, prev = db.execute("SELECT seq, hash FROM feed_events ORDER BY seq DESC LIMIT 1").fetchone()
    forged = sign_event(
        Ed25519PrivateKey.generate(), seq=seq + 1, kind="suspend",
        body={"node_id": "bank", "cert_sha256": "00" * 32, "status": "suspended",
              "reason": "forged"},
        prev=prev, at=time.time(),
    )  # fmt: skip
    with db:
        db.execute(
            "INSERT INTO feed_events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (forged.seq, forged.kind, forged.body, forged.prev, forged.at, forged.hash,
             forged.signature),
        )  # fmt: skip

    def recorded(holder: str) -> bool:
        log = AuditLog.for_node_dir(world.fed.node_dir(holder), holder)
        try:
            return any(
                "signature does not verify" in r.reason
                for r in log.query(operation="platform.feed", decision="deny")
            )
        finally:
            log.close()

    for holder in HOLDERS:
        wait_for(lambda h=holder: recorded(h), timeout=5.0)
    assert world.check("tax", world.fresh[0]) != ""  # the forged suspension did not apply
    assert not world.check("tax", world.fresh[0]).startswith("refused")
    with db:  # the platform's operator removes it; the genuine feed continues
        db.execute("DELETE FROM feed_events WHERE seq = ?", (forged.seq,))
    db.close()
    auth_id = world.grant(code)
    for holder in HOLDERS:
        wait_for(lambda h=holder: world.check(h, code) == auth_id, timeout=5.0)


def test_the_platform_witnesses_every_holders_audit_head(world: World) -> None:
    for holder in (*HOLDERS, "bank"):  # the bank follows the feed too
        out = cli(
            "audit", "verify", str(world.fed.node_dir(holder)), "--witness", str(world.platform)
        )
        assert "witnessed by platform: all present" in out
        count = int(out.split("head(s) witnessed by platform")[0].split()[-1])
        assert count >= 3  # every poll carries the holder's head


def test_a_suspended_bank_is_refused_naming_the_reason(world: World) -> None:
    code = world.fresh[0]
    cli("platform", "suspend", "bank", "--node-dir", str(world.platform), "--reason", "licence under review")  # fmt: skip
    for holder in HOLDERS:
        wait_for(lambda h=holder: "suspended" in world.check(h, code), timeout=5.0)
    text = world.check("tax", code)
    assert "bank 'bank' is suspended by the platform" in text and "licence under review" in text
    cli("platform", "reinstate", "bank", "--node-dir", str(world.platform), "--reason", "review passed")  # fmt: skip
    for holder in HOLDERS:
        wait_for(lambda h=holder: not world.check(h, code).startswith("refused"), timeout=5.0)


def test_platform_down_holders_serve_with_what_they_have(world: World) -> None:
    cached, code = world.fresh[0], world.fresh[4]
    expected = world.check("tax", cached)
    node_log = world.fed.node_dir("tax") / "node.log"
    before = node_log.read_text().count("platform unreachable")
    stop_one(world.fed, "platform")
    world.grant(code)  # issued while no holder can hear of it
    start = time.monotonic()
    assert world.check("tax", cached) == expected  # cached authorisations keep serving
    refusal = world.check("tax", code)
    assert time.monotonic() - start < 5.0  # a clear answer, no hang
    assert "no authorisation from enterprise" in refusal
    wait_for(lambda: node_log.read_text().count("platform unreachable") == before + 1)
    time.sleep(1.0)  # several polls fail meanwhile: said once, not every poll
    assert node_log.read_text().count("platform unreachable") == before + 1
    start_nodes(world.fed, only=["platform"])
    wait_for(lambda: not world.check("tax", code).startswith("refused"), timeout=10.0)


def test_a_bank_presenting_another_certificate_is_refused(world: World, tmp_path: Path) -> None:
    """The CA issues a second certificate for node id 'bank' (a stolen CA key, a re-issue the
    platform was not told of): holders refuse it as not the admitted certificate until the
    platform admits it; re-admitting the original restores the original."""
    code = world.fresh[5]
    auth_id = world.grant(code)
    for holder in HOLDERS:
        wait_for(lambda h=holder: world.check(h, code) == auth_id, timeout=5.0)
    pki = tmp_path / "pki"
    shutil.copytree(world.fed.pki.directory, pki)
    issue_node_certificate(pki, "bank", overwrite=True)
    bank = load_node_config(world.fed.configs["bank"])
    other = bank.model_copy(
        update={"tls": TlsConfig(ca=bank.tls.ca, cert=pki / "bank.pem", key=pki / "bank.key")}
    )

    def check_as(config: NodeConfig, holder: str) -> str:
        peer = PeerConfig(
            node_id=holder,
            address=load_node_config(world.fed.configs[holder]).address,
            role="holder",
        )
        with connect(config, peer, audit=None, deadline_s=5.0) as client:
            try:
                answer = client.call(
                    "CheckAuthorisation",
                    holder_pb2.AuthorisationQuery(
                        meta=new_meta(), uscc=code, categories=[CATEGORY[holder]]
                    ),
                )
            except PeerRefused as exc:
                return f"refused ({exc.refusal}): {exc}"
        return str(answer.auth_id)

    for holder in HOLDERS:
        text = check_as(other, holder)
        assert text.startswith("refused (institution)"), text
        assert "not the one the platform admitted" in text
        assert check_as(bank, holder) == auth_id  # the admitted certificate still served

    def admit(cert: Path) -> None:
        cli("platform", "admit", "bank", "--node-dir", str(world.platform), "--cert", str(cert), "--reason", "re-issued")  # fmt: skip

    admit(pki / "bank.pem")  # the re-issue needs a new admission
    for holder in HOLDERS:
        wait_for(lambda h=holder: check_as(other, h) == auth_id, timeout=5.0)
        assert "not the one the platform admitted" in check_as(bank, holder)
    admit(world.fed.node_dir("bank") / "node.pem")
    for holder in HOLDERS:
        wait_for(lambda h=holder: check_as(bank, h) == auth_id, timeout=5.0)


def applied_seq(node_dir: Path) -> int:
    out = cli("platform", "status", "--node-dir", str(node_dir))
    return int(out.split("applied up to seq ")[1].split()[0])


def feed_calls(world: World, node: str) -> int:
    log = AuditLog.for_node_dir(world.platform, "platform")
    try:
        return len(log.query(peer=node, operation="Feed"))
    finally:
        log.close()


def test_the_bank_keeps_its_status_authorisations_and_whitelists(
    world: World, tmp_path: Path
) -> None:
    """The bank follows the feed for its operator: its admitted status, the authorisations
    granted to it (revoked ones marked), the whitelists pushed to it; holders apply nothing of
    a whitelist but move past it."""
    bank_dir = world.fed.node_dir("bank")
    code = world.fresh[6]
    auth_id = world.grant(code)
    listed = tmp_path / "list.csv"
    listed.write_text(f"uscc,name\n{world.fresh[6]},a\n{world.fresh[7]},b\n")
    out = cli(
        "platform", "whitelist", "--node-dir", str(world.platform), "--bank", "bank",
        "--region", "5101", "--industry", "C", "--file", str(listed), "--note", "manufacturing",
    )  # fmt: skip
    assert "whitelist of 2 enterprise(s)" in out
    seq = int(out.rsplit("feed seq ", 1)[1].rstrip(")\n"))
    wait_for(lambda: auth_id in cli("platform", "status", "--node-dir", str(bank_dir)))
    wait_for(
        lambda: "whitelist pushes: 1" in cli("platform", "status", "--node-dir", str(bank_dir))
    )
    shown = cli("platform", "status", "--node-dir", str(bank_dir))
    assert "status: admitted" in shown and code in shown and "live" in shown
    assert "5101" in shown and "manufacturing" in shown
    for holder in HOLDERS:  # holders move past the whitelist; it changes nothing they serve
        wait_for(lambda h=holder: applied_seq(world.fed.node_dir(h)) >= seq)
    assert world.check("tax", code) == auth_id
    cli("platform", "revoke", auth_id, "--node-dir", str(world.platform), "--reason", "withdrew")
    wait_for(lambda: "revoked" in cli("platform", "status", "--node-dir", str(bank_dir)))


def test_a_bad_whitelist_is_refused_naming_the_entry(world: World, tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    good = world.fresh[6]
    wrong = good[:-1] + ("0" if good[-1] != "0" else "1")  # check digit off
    bad.write_text(f"uscc\n{good}\n{wrong}\n")
    result = CliRunner().invoke(
        app,
        ["platform", "whitelist", "--node-dir", str(world.platform), "--bank", "bank",
         "--region", "5101", "--industry", "C", "--file", str(bad)],
    )  # fmt: skip
    assert result.exit_code != 0
    assert "bad.csv, row 3: uscc" in str(result.exception)
    result = CliRunner().invoke(
        app,
        ["platform", "whitelist", "--node-dir", str(world.platform), "--bank", "bank",
         "--region", "51x", "--industry", "C", "--uscc", good],
    )  # fmt: skip
    assert result.exit_code != 0 and "whitelist region '51x'" in str(result.exception)


def test_statistics_count_per_bank_and_name_witnessed_heads(world: World) -> None:
    out = cli("platform", "stats", "--node-dir", str(world.platform))
    row = next(line for line in out.splitlines() if line.strip("│ ").startswith("bank "))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[0] == "bank" and cells[1] == "admitted"
    assert int(cells[2]) >= 6 and int(cells[4]) >= 1  # grants, revoked
    for node in (*HOLDERS, "bank"):
        assert any(
            line.strip("│ ").startswith(node) and "never" not in line for line in out.splitlines()
        ), out
    for code in world.fresh:
        assert code not in out  # counts, never enterprise data


def test_an_idle_follower_polls_rarely(world: World) -> None:
    """Long poll: an idle holder's Feed calls (one audit record each at the platform) come
    once per wait, not once per poll_s (0.2 s here: ~10 in 2 s before)."""
    before = feed_calls(world, "tax")
    time.sleep(2.0)
    assert feed_calls(world, "tax") - before <= 2


def access_totals(world: World, holder: str, operation: str) -> tuple[int, int, int]:
    """(allowed, refused, enterprises) the platform holds for bank 'bank' at ``holder``."""
    from parties.platform.stats import AccessStore

    with AccessStore.for_node_dir(world.platform) as store:
        for a in store.statistics(time.time()):
            if (a.bank, a.holder, a.operation) == ("bank", holder, operation):
                return a.total.allowed, a.total.refused, a.total.enterprises
    return 0, 0, 0


def test_holders_report_each_banks_requests_as_counts(world: World) -> None:
    """The bank asks a holder about enterprises (answered and refused); the holder's next feed
    poll carries the counts; the platform's statistics show them per bank and holder - and
    no USCC anywhere in them."""
    code, unauthorised = world.fresh[0], world.fresh[7]  # fresh[7] is never authorised
    world.grant(code)
    wait_for(lambda: not world.check("tax", code).startswith("refused"), timeout=5.0)
    allowed, refused, enterprises = access_totals(world, "tax", "CheckAuthorisation")
    for _ in range(3):
        assert not world.check("tax", code).startswith("refused")
    assert world.check("tax", unauthorised).startswith("refused")
    world.grant(world.fresh[5])  # a feed event: the waiting long polls return and poll again
    wait_for(
        lambda: (
            access_totals(world, "tax", "CheckAuthorisation")[0] >= allowed + 3
            and access_totals(world, "tax", "CheckAuthorisation")[1] >= refused + 1
        ),
        timeout=10.0,
    )
    now_allowed, _, now_enterprises = access_totals(world, "tax", "CheckAuthorisation")
    assert now_enterprises - enterprises >= now_allowed - allowed  # one enterprise each
    result = CliRunner().invoke(
        app, ["platform", "stats", "--node-dir", str(world.platform)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    rows = [
        [c.strip() for c in line.strip("│ ").split("│")]
        for line in result.output.splitlines()
        if "CheckAuthorisation" in line
    ]
    tax = next(r for r in rows if r[:3] == ["bank", "tax", "CheckAuthorisation"])
    assert int(tax[3].split("/")[2]) == now_allowed  # allowed all time, as the store has it
    for c in world.fresh:
        assert c not in result.output  # counts, never enterprise data
    db = sqlite3.connect(world.platform / "platform_access.db")
    stored = " ".join(str(v) for row in db.execute("SELECT * FROM access_counts") for v in row)
    db.close()
    assert "CheckAuthorisation" in stored
    assert not any(c in stored for c in world.fresh)
    assert os.stat(world.platform / "platform_access.db").st_mode & 0o077 == 0
