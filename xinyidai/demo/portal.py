"""The demo's walk through the platform's portal, as one enterprise with a browser would do it
(plain HTTP: cookies, forms, CSRF tokens): sign in, authorise the bank, be scored, dispute the
tax data, the tax holder's operator resolves it (credit repair), the enterprise sees it.

Why over HTTP and not by calling the portal's functions: the demo shows the product as a person
meets it; every step goes through the same pages, checks and audit records as a browser's.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from federation.audit import AuditLog
from federation.errors import XinyidaiError
from federation.transport.base import PeerRefused, new_meta
from parties.config import NodeConfig, load_node_config
from xinyidai.launcher import Federation

__all__ = ["pick_enterprise", "walk_portal"]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_FLASH = re.compile(r'class="flash">([^<]+)<')


def pick_enterprise(workdir: Path) -> str:
    """A bank applicant both holders hold and that never authorised the bank (the walk's
    enterprise: its authorisation is given in the portal)."""
    import sqlite3

    import pandas as pd

    held = [
        set(pd.read_csv(workdir / n / "data" / f"{n}.csv", usecols=["uscc"])["uscc"])
        for n in ("bank", "tax", "utility")
    ]
    authorised: set[str] = set()
    for holder in ("tax", "utility"):
        db = sqlite3.connect(workdir / holder / "consent.db")
        authorised |= {row[0] for row in db.execute("SELECT uscc FROM consent")}
        db.close()
    return sorted((held[0] & held[1] & held[2]) - authorised)[0]


class _Browser:
    def __init__(self, url: str):
        self.http = httpx.Client(base_url=url, follow_redirects=True, timeout=20.0)
        self.csrf = ""

    def get(self, path: str) -> httpx.Response:
        return self._read(self.http.get(path))

    def post(self, path: str, data: dict[str, Any]) -> httpx.Response:
        return self._read(self.http.post(path, data={**data, "csrf": self.csrf}))

    def _read(self, response: httpx.Response) -> httpx.Response:
        found = _CSRF.search(response.text)
        if found:
            self.csrf = found.group(1)
        if response.status_code >= 400:
            raise XinyidaiError(f"portal {response.url.path}: HTTP {response.status_code}")
        return response


def _score(bank_cfg: NodeConfig, uscc: str, model: str) -> Any:
    from parties.node import operator_client
    from protos import bank_pb2

    with operator_client(bank_cfg, deadline_s=30) as ops:
        return ops.call(
            "Score",
            bank_pb2.ScoreRequest(
                meta=new_meta(job_id="demo-portal"),
                uscc=uscc,
                model_name=model,
                model_ref="champion",
            ),
        )


def walk_portal(
    console: Console,
    fed: Federation,
    bank_cfg: NodeConfig,
    *,
    uscc: str,
    password: str,
    model: str,
    timings: dict[str, float],
) -> bool:
    """The enterprise's walk; True if every step did what it should."""
    url = (fed.node_dir("platform") / "portal.url").read_text().strip()
    console.print(f"\n[bold]The platform's portal[/] at {url} (enterprise {uscc})")
    t0 = time.perf_counter()
    try:
        ok = _walk(console, fed, bank_cfg, url, uscc, password, model)
    except (XinyidaiError, httpx.HTTPError) as exc:
        console.print(f"  [red]failed:[/] {exc}", highlight=False)
        ok = False
    timings["portal: grant, score, dispute, repair"] = time.perf_counter() - t0
    return ok


def _walk(
    console: Console,
    fed: Federation,
    bank_cfg: NodeConfig,
    url: str,
    uscc: str,
    password: str,
    model: str,
) -> bool:
    from parties.disputes import DisputeRegistry

    def say(text: str) -> None:
        console.print(f"  {text}", highlight=False)

    browser = _Browser(url)
    browser.get("/login?lang=en")
    page = browser.post("/login", {"login": uscc, "password": password})
    say(f"signed in (session cookie HttpOnly, SameSite=Lax): {page.url.path}")
    try:
        _score(bank_cfg, uscc, model)
        say("[red]the bank scored it before any authorisation[/]")
        return False
    except PeerRefused as exc:
        say(f"bank scores it before the grant: refused ({exc.refusal})")
    page = browser.post(
        "/me/grant",
        {"bank": "bank", "categories": ["tax", "electricity", "water", "gas"], "days": "90"},
    )
    say(f"authorised the bank in the portal: {' '.join(_FLASH.findall(page.text))}")
    deadline = time.monotonic() + 10.0
    while True:  # the holders apply the platform's signed feed within their poll interval
        try:
            scored = _score(bank_cfg, uscc, model)
            break
        except PeerRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    say(f"the bank scores it: PD {scored.probability_default:.3f}, {scored.points:.0f} points")
    page = browser.get("/me/access")
    say(f"its access list shows {page.text.count('access-row')} request(s) on record")
    page = browser.post(
        "/me/disputes",
        {"holder": "tax", "categories": ["tax"], "text": "VAT paid last year is understated"},
    )
    dispute_id = _FLASH.findall(page.text)[-1].split(":")[-1].strip()
    say(f"filed a dispute at tax: {dispute_id}")
    # the tax holder's operator: `xinyidai subject resolve ID --note ... --node-dir tax/`
    tax_cfg = load_node_config(fed.configs["tax"])
    audit = AuditLog(tax_cfg.resolved_audit_url, tax_cfg.node_id)
    registry = DisputeRegistry.for_config(tax_cfg, audit=audit, categories=["tax"])
    with audit, registry:
        registry.resolve(
            dispute_id, note="VAT record corrected", by="tax-operator", outcome="repaired"
        )
    say("the tax operator resolved it: repaired (VAT record corrected)")
    page = browser.get("/me/disputes?lang=en")
    repaired = "VAT record corrected" in page.text and "repaired" in page.text
    say(
        f"the enterprise sees it: {'repaired (credit repair done)' if repaired else 'NOT resolved'}"
    )
    return repaired
