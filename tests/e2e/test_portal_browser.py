"""An enterprise uses the platform's portal in a real browser (headless Chromium, driven by
Playwright) over real node processes: signs in, authorises the bank, sees the bank's score in
its access list, revokes, files a dispute at a holder and sees it resolved by the holder's
operator. Screenshots are kept under the test's tmp dir (and copied to ``$XINYIDAI_ARTEFACTS``).

CI installs Debian's chromium and sets ``XINYIDAI_REQUIRE_BROWSER=1`` so this cannot silently
skip there; elsewhere it skips with a message when no chromium is installed. Playwright's own
browser downloads are never used (``executable_path`` is Debian's chromium).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from federation.transport.calls import PeerRefused, new_meta
from parties.config import NodeConfig, load_node_config
from xinyidai.cli.main import app
from xinyidai.demo import add_platform, build_federation, enrol_enterprise
from xinyidai.launcher import Federation, start_nodes, stop_nodes

pytestmark = pytest.mark.e2e
HOLDERS = ("tax", "utility")
PASSWORD = "browser test secret"
MODEL = "portal-sbt"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


def _browser() -> str:
    if BROWSER is None:
        if os.environ.get("XINYIDAI_REQUIRE_BROWSER") == "1":
            pytest.fail("XINYIDAI_REQUIRE_BROWSER=1 but no chromium is installed")
        pytest.skip("no chromium on this machine (apt-get install chromium to run this test)")
    return BROWSER


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.1)


@dataclass
class World:
    fed: Federation
    bank: NodeConfig
    url: str
    uscc: str


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A federation with the platform and its portal; a small SecureBoost model trained,
    registered and promoted, so the bank can score; one enterprise enrolled at the portal
    that the bank could score but that has not authorised it yet."""
    _browser()
    from federation.audit import AuditLog
    from parties.bank.alignment import align
    from parties.bank.secureboost import train_secureboost
    from parties.node import holder_peers
    from xinyidai.tracking import TrackingConfig, log_training, promote, secureboost_record

    workdir = tmp_path_factory.mktemp("portal-browser")
    fed, _ = build_federation(workdir, enterprises=400, seed=21, deadline_s=60.0, workers=1)
    pdir = add_platform(fed, poll_s=0.2)
    tables = {
        n: set(pd.read_csv(fed.node_dir(n) / "data" / f"{n}.csv", usecols=["uscc"])["uscc"])
        for n in ("bank", *HOLDERS)
    }
    authorised: set[str] = set()
    for holder in HOLDERS:
        db = sqlite3.connect(fed.node_dir(holder) / "consent.db")
        authorised |= {row[0] for row in db.execute("SELECT uscc FROM consent")}
        db.close()
    uscc = sorted((tables["bank"] & tables["tax"] & tables["utility"]) - authorised)[0]
    enrol_enterprise(pdir, uscc, PASSWORD)
    tracking = TrackingConfig.resolve(directory=workdir / "mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", tracking.tracking_uri)  # the bank node's registry
        try:
            start_nodes(fed)
            bank = load_node_config(fed.configs["bank"])
            audit = AuditLog(bank.resolved_audit_url, "bank")
            with holder_peers(bank, audit=audit) as peers:
                alignment = align(
                    bank, peers, job_id="portal-align", salt=b"portal", min_overlap=0.2,
                    audit=audit,
                )  # fmt: skip
            with holder_peers(bank, audit=audit, service="SecureBoostHolder") as peers:
                clf, report = train_secureboost(
                    bank, alignment, holders=peers, audit=audit,
                    params={"n_trees": 2, "max_depth": 2, "learning_rate": 0.3, "max_bin": 8,
                            "random_state": 0, "key_bits": 2048, "workers": 1},
                )  # fmt: skip
            parts = {
                h: hashlib.sha256(
                    (fed.node_dir(h) / "models" / "bank" / f"{report.job_id}.json").read_bytes()
                ).hexdigest()
                for h in HOLDERS
            }
            record = secureboost_record(
                clf, report, parties=["bank", *HOLDERS], model_name=MODEL, holder_parts=parts
            )
            tracked = log_training(record, tracking=tracking)
            promote(MODEL, tracked.version, by="e2e", reason="portal test", tracking=tracking)
            audit.close()
            yield World(fed, bank, (pdir / "portal.url").read_text().strip(), uscc)
        finally:
            stop_nodes(fed)


def _score(world: World) -> Any:
    from parties.node import operator_client
    from protos import bank_pb2

    with operator_client(world.bank, deadline_s=30) as client:
        return client.call(
            "Score",
            bank_pb2.ScoreRequest(
                meta=new_meta(), uscc=world.uscc, model_name=MODEL, model_ref="champion"
            ),
        )


def _scorable(world: World) -> bool:
    try:
        _score(world)
    except PeerRefused:
        return False
    return True


def test_an_enterprise_uses_the_portal_in_a_real_browser(world: World, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shots: list[Path] = []

    def shot(page: Any, name: str) -> None:
        path = tmp_path / f"{len(shots):02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=_browser(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(20_000)
            # sign in (English labels), land on the authorisations page
            page.goto(world.url + "login?lang=en")
            page.fill("#login", world.uscc)
            page.fill("#password", PASSWORD)
            page.click("#sign-in")
            page.wait_for_url("**/me/authorisations")
            assert page.inner_text("#who") == world.uscc
            shot(page, "signed-in")
            assert not _scorable(world)  # not authorised yet: every holder refuses

            # grant the bank every category; the holders apply it from the feed
            page.select_option("#bank", "bank")
            page.click("#grant")
            page.wait_for_selector(".flash")
            assert "Authorisation granted" in page.inner_text(".flash")
            assert page.inner_text("#auths .state-active") == "active"
            shot(page, "granted")
            wait_for(lambda: _scorable(world), timeout=10.0)

            # the score appears in the access list, at each holder, as the bank's request
            page.click("text=Access list")
            page.wait_for_url("**/me/access")
            ops = [op.inner_text() for op in page.query_selector_all("#access .op")]
            assert "ScoreReach" in ops, ops
            shot(page, "access-list")

            # revoke: the bank can no longer score it
            page.click("text=Authorisations")
            page.click("#auths button.danger")
            page.wait_for_selector(".flash")
            assert page.inner_text("#auths .state-revoked") == "revoked"
            shot(page, "revoked")
            wait_for(lambda: not _scorable(world), timeout=5.0)

            # dispute the tax data; the holder's operator resolves it; the enterprise sees it
            page.click("text=Disputes")
            page.select_option("#holder", "tax")
            page.check("input[name=categories][value=tax]")
            page.fill("#text", "VAT paid in 2025 is understated")
            page.click("#file-dispute")
            page.wait_for_selector(".flash")
            row = page.query_selector('[data-holder="tax"] .dispute')
            assert row is not None and "open" in row.inner_text()
            dispute_id = row.get_attribute("data-dispute")
            shot(page, "dispute-open")
            result = CliRunner().invoke(
                app,
                ["subject", "resolve", str(dispute_id), "--node-dir",
                 str(world.fed.node_dir("tax")), "--note", "VAT record corrected",
                 "--by", "tax-operator"],
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            page.reload()
            text = page.inner_text('[data-holder="tax"] .dispute')
            assert "repaired" in text and "VAT record corrected" in text
            shot(page, "dispute-resolved")

            # the same page on a phone, in Chinese (the default)
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.context.add_cookies(page.context.cookies())
            phone.goto(world.url + "me/disputes?lang=zh")
            assert "异议申诉" in phone.inner_text("header")
            shot(phone, "phone-zh")
        finally:
            browser.close()
    assert all(p.stat().st_size > 5000 for p in shots)
    target = os.environ.get("XINYIDAI_ARTEFACTS")
    if target:
        out = Path(target) / "portal"
        out.mkdir(parents=True, exist_ok=True)
        for p in shots:
            shutil.copyfile(p, out / p.name)
