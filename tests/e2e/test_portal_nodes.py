"""The platform's portal over real node processes: an HTTP client signs in as an enterprise
would (cookies, forms, CSRF tokens) at the platform node's portal, which grants and revokes
through the signed feed and asks every holder over mutual TLS (``Subject``) on the enterprise's
behalf (docs/platform.md)."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from federation.audit import AuditLog
from federation.pki import load_platform_signing_key
from federation.transport.calls import PeerRefused, new_meta
from federation.transport.grpc_transport import GrpcPeer, TlsIdentity
from parties.config import PeerConfig, load_node_config
from parties.holder.subject_service import SUBJECT_PURPOSE, SUBJECT_SERVICE
from parties.node import connect
from parties.platform.feed import FeedStore
from parties.platform.register import authorisations_of
from parties.platform.tokens import issue_subject_token
from protos import holder_pb2, subject_pb2
from xinyidai.cli.main import app
from xinyidai.demo import add_platform, build_federation, enrol_enterprise
from xinyidai.launcher import Federation, start_nodes, stop_nodes

pytestmark = pytest.mark.e2e
HOLDERS = ("tax", "utility")
CATEGORY = {"tax": "tax", "utility": "electricity"}
PASSWORD = "a long enough secret"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.05)


class Browser:
    """An HTTP client that behaves as a browser does: keeps cookies, reads each form's CSRF."""

    def __init__(self, url: str, *, source: str = "127.0.0.1"):
        transport = httpx.HTTPTransport(local_address=source)
        self.http = httpx.Client(
            base_url=url, transport=transport, follow_redirects=True, timeout=20.0
        )
        self.csrf = ""

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        self._read(response)
        return response

    def post(self, path: str, data: dict[str, object], *, csrf: bool = True) -> httpx.Response:
        body = {**data, **({"csrf": self.csrf} if csrf else {})}
        response = self.http.post(path, data=body)  # type: ignore[arg-type]
        self._read(response)
        return response

    def _read(self, response: httpx.Response) -> None:
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)

    def sign_in(self, login: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/login")
        return self.post("/login", {"login": login, "password": password})

    @property
    def sid(self) -> str | None:
        return self.http.cookies.get("xyd_session")


@dataclass
class World:
    fed: Federation
    platform: Path
    url: str
    a: str  # two enterprises both holders hold, never authorised before
    b: str

    def feed(self) -> FeedStore:
        return FeedStore.for_node_dir(self.platform)

    def auths(self, code: str) -> list[str]:
        feed = self.feed()
        try:
            return [v.auth_id for v in authorisations_of(feed, code)]
        finally:
            feed.close()

    def check(self, holder: str, code: str) -> str:
        """The bank asks ``holder`` whether it would serve ``code``: auth id or refusal."""
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


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    workdir = tmp_path_factory.mktemp("portal")
    fed, _ = build_federation(workdir, enterprises=300, seed=5, deadline_s=10.0, workers=1)
    pdir = add_platform(fed, poll_s=0.2, holder_timeout_s=2.0)
    held = [
        set(pd.read_csv(fed.node_dir(h) / "data" / f"{h}.csv", usecols=["uscc"])["uscc"])
        for h in HOLDERS
    ]
    import sqlite3

    authorised: set[str] = set()
    for holder in HOLDERS:
        db = sqlite3.connect(fed.node_dir(holder) / "consent.db")
        authorised |= {row[0] for row in db.execute("SELECT uscc FROM consent")}
        db.close()
    a, b = sorted((held[0] & held[1]) - authorised)[:2]
    for code in (a, b):
        enrol_enterprise(pdir, code, PASSWORD)
    runner = CliRunner()
    for args, secret in (
        (["--name", "auditor1", "--kind", "auditor"], PASSWORD),
        (["--name", "bankops", "--kind", "operator", "--bank", "bank"], PASSWORD),
    ):
        result = runner.invoke(
            app,
            ["platform", "account", "create", "--node-dir", str(pdir), *args],
            input=secret + "\n",
        )
        assert result.exit_code == 0, result.output
    try:
        start_nodes(fed)
        url = (pdir / "portal.url").read_text().strip()
        yield World(fed, pdir, url, a, b)
    finally:
        stop_nodes(fed)


def test_a_revocation_in_the_portal_stops_every_holder_within_5_s(world: World) -> None:
    browser = Browser(world.url)
    page = browser.sign_in(world.a)
    assert page.status_code == 200 and world.a in page.text
    page = browser.post(
        "/me/grant", {"bank": "bank", "categories": ["tax", "electricity"], "days": "30"}
    )
    assert page.status_code == 200
    (auth_id,) = world.auths(world.a)
    assert auth_id in page.text
    for holder in HOLDERS:
        wait_for(lambda h=holder: world.check(h, world.a) == auth_id, timeout=5.0)
    page = browser.post("/me/revoke", {"auth_id": auth_id})
    assert page.status_code == 200 and "revoked" in page.text
    for holder in HOLDERS:  # within the 5 s deadline at every holder, or the test fails
        wait_for(lambda h=holder: "revoked" in world.check(h, world.a), timeout=5.0)


def test_an_enterprise_cannot_see_or_act_for_another_uscc(world: World) -> None:
    owner = Browser(world.url)
    owner.sign_in(world.a)
    owner.post("/me/grant", {"bank": "bank", "categories": ["tax"], "days": "30"})
    theirs = world.auths(world.a)[0]

    other = Browser(world.url)
    other.sign_in(world.b)
    # the URL: a USCC in the query is ignored; every page is the session's own enterprise
    for path in ("/me/authorisations", "/me/held", "/me/disputes"):
        page = other.get(f"{path}?uscc={world.a}")
        assert page.status_code == 200
        assert world.b in page.text and theirs not in page.text
    # the form: revoking someone else's authorisation is refused, and nothing is revoked
    page = other.post("/me/revoke", {"auth_id": theirs})
    assert page.status_code == 403
    assert "revoked" not in world.check("tax", world.a)
    # a USCC slipped into the grant and dispute forms is ignored: both are the session's own
    before = set(world.auths(world.a))
    page = other.post(
        "/me/grant", {"bank": "bank", "categories": ["tax"], "days": "30", "uscc": world.a}
    )
    assert page.status_code == 200
    assert set(world.auths(world.a)) == before and len(world.auths(world.b)) == 1
    page = other.post(
        "/me/disputes", {"holder": "tax", "text": "not mine to dispute", "uscc": world.a}
    )
    assert page.status_code == 200
    rows = CliRunner().invoke(
        app, ["subject", "list", "--node-dir", str(world.fed.node_dir("tax")), "--json"]
    )
    disputed = [line for line in rows.output.splitlines() if "not mine to dispute" in line]
    assert len(disputed) == 1 and world.b in disputed[0] and world.a not in disputed[0]


def test_csrf_missing_or_wrong_is_refused(world: World) -> None:
    browser = Browser(world.url)
    browser.sign_in(world.a)
    before = world.auths(world.a)
    page = browser.post("/me/grant", {"bank": "bank", "categories": ["tax"]}, csrf=False)
    assert page.status_code == 403
    stranger = Browser(world.url)
    stranger.get("/login")  # another session's token
    page = browser.post(
        "/me/grant", {"bank": "bank", "categories": ["tax"], "csrf": stranger.csrf}, csrf=False
    )
    assert page.status_code == 403
    assert world.auths(world.a) == before
    log = AuditLog.for_node_dir(world.platform, "platform")
    try:
        assert len(log.query(operation="portal.csrf", decision="deny")) >= 2
    finally:
        log.close()


def test_session_fixation_is_refused(world: World) -> None:
    victim = Browser(world.url)
    victim.get("/login")
    planted = victim.sid
    assert planted
    victim.post("/login", {"login": world.a, "password": PASSWORD})
    assert victim.sid and victim.sid != planted  # a fresh id at sign-in
    # the attacker who planted (or read) the pre-sign-in id holds a session that is not signed in
    page = httpx.get(world.url + "me/authorisations", headers={"Cookie": f"xyd_session={planted}"})
    assert page.status_code == 303 and page.headers["location"] == "/login"
    # an id the server never issued is not adopted either: it answers with one of its own
    page = httpx.get(world.url + "login", headers={"Cookie": "xyd_session=chosen-by-attacker"})
    assert page.status_code == 200
    assert "xyd_session=" in page.headers["set-cookie"]
    assert "chosen-by-attacker" not in page.headers["set-cookie"]


def test_wrong_passwords_are_rate_limited_per_login_and_per_address(world: World) -> None:
    guesser = Browser(world.url, source="127.0.0.2")
    for _ in range(5):
        assert guesser.sign_in(world.b, "wrong password!").status_code == 401
    # the sixth try is refused even with the right password, from anywhere, for that login
    assert guesser.sign_in(world.b).status_code == 429
    assert Browser(world.url, source="127.0.0.3").sign_in(world.b).status_code == 429
    # per address: five failures on other logins block this address for everyone
    sprayer = Browser(world.url, source="127.0.0.4")
    for n in range(5):
        assert sprayer.sign_in(f"nobody{n}", "wrong password!").status_code == 401
    assert sprayer.sign_in(world.a).status_code == 429
    assert Browser(world.url, source="127.0.0.5").sign_in(world.a).status_code == 200


def test_auditor_and_bank_operator_pages(world: World) -> None:
    auditor = Browser(world.url)
    page = auditor.sign_in("auditor1")
    assert page.url.path == "/auditor"
    assert "tax" in page.text and "utility" in page.text and "intact" in page.text
    assert world.a not in page.text and world.b not in page.text  # counts, no enterprises
    assert auditor.get("/me/authorisations").status_code == 403  # not an enterprise
    operator = Browser(world.url)
    page = operator.sign_in("bankops")
    assert page.url.path == "/bank" and "admitted" in page.text and world.a in page.text


def test_only_the_platform_may_call_subject_and_only_with_a_token_for_that_holder(
    world: World,
) -> None:
    platform = load_node_config(world.platform / "node.yaml")
    key = load_platform_signing_key(world.platform / "platform_signing.key")
    tax = load_node_config(world.fed.configs["tax"])

    def ask(as_config: object, token_holder: str) -> str:
        cfg = load_node_config(as_config)  # type: ignore[arg-type]
        peer = GrpcPeer(
            node_id="tax",
            address=tax.address,
            identity=TlsIdentity.from_files(cfg.tls.ca, cfg.tls.cert, cfg.tls.key),
            service=SUBJECT_SERVICE,
            self_id=cfg.node_id,
            audit=None,
            deadline_s=5.0,
        )
        token = issue_subject_token(key, uscc=world.a, session="s" * 32, holder=token_holder)
        try:
            reply = peer.call(
                "Disputes",
                subject_pb2.DisputesRequest(
                    meta=new_meta(SUBJECT_PURPOSE),
                    uscc=world.a,
                    token=subject_pb2.SubjectToken(body=token.body, signature=token.signature),
                ),
            )
            return f"ok {reply.node_id}"
        except PeerRefused as exc:
            return f"refused {exc.refusal}: {exc.detail}"
        finally:
            peer.close()

    assert ask(world.platform / "node.yaml", "tax") == "ok tax"
    assert ask(world.fed.configs["bank"], "tax").startswith("refused caller")
    wrong = ask(world.platform / "node.yaml", "utility")
    assert wrong.startswith("refused subject-token") and "holder 'utility'" in wrong
    log = AuditLog.for_node_dir(world.fed.node_dir("tax"), "tax")
    try:
        records = log.query(operation="Disputes", subject=world.a)
    finally:
        log.close()
    assert {r.decision for r in records} >= {"allow", "deny"}
    assert platform.node_id in {r.peer for r in records}


def test_a_holder_down_is_named_and_the_rest_of_the_page_renders(world: World) -> None:
    browser = Browser(world.url)
    browser.sign_in(world.a)
    proc = world.fed.processes["utility"]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=20)
    try:
        page = browser.get("/me/held")  # the client's 20 s timeout: a hang fails the test
        assert page.status_code == 200
        assert "holder &#39;utility&#39; did not answer" in page.text
        tax_section = page.text.split('data-holder="tax"')[1].split("</section>")[0]
        assert "did not answer" not in tax_section and "<td>" in tax_section  # its rows show
        page = browser.get("/me/disputes")
        assert "did not answer" in page.text and page.status_code == 200
    finally:
        start_nodes(world.fed, only=["utility"])


def test_the_auditor_opens_lineage_reports_and_nothing_else(world: World) -> None:
    """``portal.lineage_dir`` (the demo's WORKDIR/lineage): reports ``xinyidai lineage``
    renders are listed and served (HTML under a CSP allowing inline style only); a name not
    listed - another file of the folder, a ``../`` path, a symlink - is 404."""
    from xinyidai.lineage.model import Lineage
    from xinyidai.lineage.render import write_report

    folder = load_node_config(world.platform / "node.yaml").portal.lineage_dir  # type: ignore[union-attr]
    assert folder == (world.fed.workdir / "lineage").resolve()
    folder.mkdir(exist_ok=True)
    md, html = write_report(
        Lineage(
            name="credit", version="3", generated_at=time.time(), aliases=["champion"],
            status="READY", created="2026-01-01", source="runs:/r1/model", run_id="r1",
        ),
        folder,
    )  # fmt: skip
    (folder / "notes.txt").write_text("not a report")
    (folder / "stolen-lineage.html").symlink_to(world.platform / "node.yaml")
    auditor = Browser(world.url)
    page = auditor.sign_in("auditor1")
    assert html.name in page.text and md.name in page.text
    assert 'id="access"' in page.text  # the holders' per-bank access counts table
    assert "notes.txt" not in page.text and "stolen-lineage" not in page.text
    opened = auditor.get(f"/auditor/lineage/{html.name}")
    assert opened.status_code == 200 and "credit" in opened.text
    assert opened.headers["content-type"] == "text/html; charset=utf-8"
    assert (
        opened.headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    )
    assert opened.headers["x-content-type-options"] == "nosniff"
    text = auditor.get(f"/auditor/lineage/{md.name}")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/markdown")
    for name in (
        "notes.txt",
        "stolen-lineage.html",
        "..%2Fplatform%2Fnode.yaml",
        "..%2F..%2Fetc%2Fpasswd",
    ):
        assert auditor.get(f"/auditor/lineage/{name}").status_code == 404, name
    raw = httpx.get(f"{world.url}/auditor/lineage/../node.yaml", cookies=auditor.http.cookies)
    assert "platform_signing_key" not in raw.text
    assert Browser(world.url).get(f"/auditor/lineage/{html.name}").url.path == "/login"
