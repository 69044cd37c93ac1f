"""Benchmark the platform's authorisation feed: grants per second end-to-end and revocation
propagation.

One platform node (``PlatformNode``: the real gRPC server with mutual TLS and its audit log) and
two holder followers (``parties.holder.feed.FeedFollower``: each its own consent registry,
follow state and mTLS client), in one process on loopback. What is timed:

- ``grants/s``: N authorisations signed at the platform (``PlatformSigner.issue``), published
  in the feed (one transaction per ``--batch`` grants), pulled over gRPC by both holders (the
  chain and hashes of every event checked, the platform's signature once per page, every
  authorisation's own signature verified), and stored in both consent registries (one
  transaction per page) - from the first signature until both holders have applied the last
  event. "end-to-end" adds the publishing time to the slowest holder's pull (the phases one
  after the other); "live" publishes N more while both followers long-poll, until both have
  the last one (the deployed shape, but here all three share one process and its GIL).
- revocation propagation: with both followers long-polling (``FeedRequest.wait_ms``;
  ``--poll-s`` paces them only when the platform does not wait), a revocation is published at
  a random moment and the time until *both* holders' ``ConsentRegistry.check`` refuse is
  measured; p50 / p99 over ``--revocations``.

- portal pages (``--portal-sessions``, 20 by default): a real federation (platform with its
  portal, bank, tax and utility as OS processes over mutual TLS, built as the demo builds it);
  that many enterprises sign in at once (argon2, timed apart), then each session walks the
  enterprise pages ``--portal-rounds`` times concurrently: authorisations (a feed read), what is
  held (``Subject.Report`` at both holders), the access list (the same) and disputes
  (``Subject.Disputes``). p50 / p95 per page and over all; target p95 <= 200 ms.

    python experiments/bench_platform.py --out experiments/results/bench_platform.md
    python experiments/bench_platform.py --portal-only --out experiments/results/bench_platform_portal.md
"""

from __future__ import annotations

import argparse
import os
import platform as host
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_GRANTS_PER_S = 1000.0
TARGET_REVOKE_P99_S = 2.0
TARGET_PAGE_P95_MS = 200.0
PAGES = ("/me/authorisations", "/me/held", "/me/access", "/me/disputes")


def _world(tmp: Path, poll_s: float):  # type: ignore[no-untyped-def]
    from federation.audit import AuditLog, sqlite_url
    from federation.pki import init_pki
    from parties.config import NodeConfig, PeerConfig, PlatformLink, TlsConfig
    from parties.consent import ConsentRegistry
    from parties.holder.feed import FeedFollower
    from parties.platform.service import PlatformNode

    pki = init_pki(tmp / "pki", ["platform", "tax", "utility", "bank"])

    def folder(node: str) -> Path:
        d = tmp / node
        d.mkdir(mode=0o700)
        shutil.copyfile(pki.node_cert(node), d / "node.pem")
        shutil.copyfile(pki.node_key(node), d / "node.key")
        shutil.copyfile(pki.ca_cert, d / "ca.pem")
        return d

    pdir = folder("platform")
    shutil.copyfile(pki.platform_signing_key, pdir / "platform_signing.key")
    os.chmod(pdir / "platform_signing.key", 0o600)
    tls = {"ca": Path("ca.pem"), "cert": Path("node.pem"), "key": Path("node.key")}
    pconf = NodeConfig(
        node_id="platform",
        role="platform",
        tls=TlsConfig(**{k: pdir / v for k, v in tls.items()}),
        node_dir=pdir,
        platform_signing_key=pdir / "platform_signing.key",
        peers=[PeerConfig(node_id=h, role="holder") for h in ("tax", "utility")],
    )
    node = PlatformNode(pconf)
    node.start()
    from federation.pki import load_platform_public_key

    public = load_platform_public_key(pki.platform_signing_pub)
    followers = []
    for holder in ("tax", "utility"):
        d = folder(holder)
        conf = NodeConfig(
            node_id=holder,
            role="holder",
            tls=TlsConfig(**{k: d / v for k, v in tls.items()}),
            node_dir=d,
            platform=PlatformLink(address=node.address, poll_s=poll_s),
        )
        consent = ConsentRegistry(sqlite_url(d / "consent.db"), public, node_id=holder)
        audit = AuditLog(sqlite_url(d / "audit.db"), holder)
        followers.append(FeedFollower(config=conf, consent=consent, public_key=public, audit=audit))
    return node, followers, pki


def run(*, grants: int, batch: int, revocations: int, poll_s: float) -> dict[str, float]:
    from parties.authorisation import PlatformSigner
    from parties.data import uscc

    codes = list(uscc.generate(np.random.default_rng(1), 2 * grants, uscc.CHENGDU_REGIONS))
    live_codes, codes = codes[grants:], codes[:grants]
    with tempfile.TemporaryDirectory() as tmp:
        node, followers, pki = _world(Path(tmp), poll_s)
        signer = PlatformSigner.from_file(pki.platform_signing_key)
        try:
            now = time.time()
            start = time.perf_counter()
            for i in range(0, grants, batch):
                node.feed.grant(
                    [
                        signer.issue(
                            uscc=c,
                            bank_id="bank",
                            purpose="financing",
                            categories=["electricity", "tax"],
                            valid_from=now - 10,
                            valid_until=now + 86400,
                        )
                        for c in codes[i : i + batch]
                    ]
                )
            published = time.perf_counter() - start
            # Each holder is its own process on its own host in a deployment: time each pull
            # alone (one after the other here, so they do not share this process's GIL).
            per_holder = []
            for f in followers:
                t0 = time.perf_counter()
                f.poll_once()
                per_holder.append(time.perf_counter() - t0)
            head, _ = node.feed.head()
            assert all(f.seq == head for f in followers), "a holder did not catch up"
            # live: the same again with both followers long-polling while grants are published
            # (as deployed; here publisher and followers share this process's GIL)
            for f in followers:
                f.start()
            time.sleep(0.5)
            start = time.perf_counter()
            for i in range(0, grants, batch):
                node.feed.grant(
                    [
                        signer.issue(
                            uscc=c,
                            bank_id="bank",
                            purpose="financing",
                            categories=["electricity", "tax"],
                            valid_from=now - 10,
                            valid_until=now + 86400,
                        )
                        for c in live_codes[i : i + batch]
                    ]
                )
            head, _ = node.feed.head()
            while any(f.seq < head for f in followers):
                time.sleep(0.005)
            live = time.perf_counter() - start
            # revocation propagation under the followers' own (long) polling
            rng = random.Random(2)  # noqa: S311 (when to revoke, not a secret)
            auths = [e.content()["auth"]["auth_id"] for e in node.feed.since(0, 0)[0]]
            delays = []
            for i in range(revocations):
                time.sleep(rng.uniform(0, poll_s))
                auth_id = auths[i]
                code = codes[i]
                t0 = time.perf_counter()
                node.feed.revoke(auth_id, reason="bench")
                pending = list(followers)
                while pending:
                    pending = [
                        f
                        for f in pending
                        if f.consent.check(
                            uscc=code, bank_id="bank", purpose="financing", categories=["tax"]
                        ).allowed
                    ]
                    if pending:
                        time.sleep(0.005)
                delays.append(time.perf_counter() - t0)
            for f in followers:
                f.stop()
        finally:
            node.stop()
    d = np.asarray(delays)
    return {
        "grants": grants,
        "batch": batch,
        "published_per_s": grants / published,
        "end_to_end_per_s": grants / (published + max(per_holder)),
        "one_holder_apply_per_s": grants / max(per_holder),
        "live_per_s": grants / live,
        "revocations": revocations,
        "poll_s": poll_s,
        "revoke_p50_s": float(np.percentile(d, 50)),
        "revoke_p99_s": float(np.percentile(d, 99)),
        "revoke_max_s": float(d.max()),
    }


def table(rows: list[dict[str, float]]) -> str:
    out = [
        "| grants | batch | signed+published /s | slowest holder: pulled+verified+stored /s | "
        "end-to-end (2 holders) /s | live: published while 2 holders follow /s | poll s | "
        "revocations | revoke p50 s | revoke p99 s | max s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['grants']:.0f} | {r['batch']:.0f} | {r['published_per_s']:.0f} | "
            f"{r['one_holder_apply_per_s']:.0f} | {r['end_to_end_per_s']:.0f} | "
            f"{r['live_per_s']:.0f} | {r['poll_s']:.1f} | {r['revocations']:.0f} | "
            f"{r['revoke_p50_s']:.2f} | {r['revoke_p99_s']:.2f} | {r['revoke_max_s']:.2f} |"
        )
    return "\n".join(out)


def run_portal(*, sessions: int, rounds: int) -> list[dict[str, float]]:
    """Page latencies (ms) of ``sessions`` concurrent signed-in enterprises over real nodes."""
    import re
    import secrets
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import pandas as pd

    from xinyidai.demo import add_platform, build_federation, enrol_enterprise
    from xinyidai.launcher import start_nodes, stop_nodes

    csrf = re.compile(r'name="csrf" value="([^"]+)"')
    password = secrets.token_urlsafe(16)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp) / "fed"
        fed, _ = build_federation(workdir, enterprises=400, seed=3, workers=1)
        pdir = add_platform(fed, poll_s=1.0)
        codes = sorted(
            set(pd.read_csv(workdir / "tax" / "data" / "tax.csv", usecols=["uscc"])["uscc"])
        )[:sessions]
        for code in codes:
            enrol_enterprise(pdir, code, password)
        try:
            start_nodes(fed)
            url = (pdir / "portal.url").read_text().strip()

            def sign_in(code: str) -> tuple[httpx.Client, float]:
                client = httpx.Client(base_url=url, follow_redirects=True, timeout=30.0)
                token = csrf.search(client.get("/login").text)
                t0 = time.perf_counter()
                page = client.post(
                    "/login",
                    data={"login": code, "password": password, "csrf": token.group(1)}
                    if token
                    else {},
                )
                if page.status_code != 200:
                    raise SystemExit(f"sign-in of {code} failed: HTTP {page.status_code}")
                return client, time.perf_counter() - t0

            with ThreadPoolExecutor(sessions) as pool:
                signed = list(pool.map(sign_in, codes))

            def walk(client: httpx.Client) -> list[tuple[str, float]]:
                out = []
                for _ in range(rounds):
                    for path in PAGES:
                        t0 = time.perf_counter()
                        page = client.get(path)
                        elapsed = time.perf_counter() - t0
                        if page.status_code != 200 or "did not answer" in page.text:
                            raise SystemExit(f"{path}: HTTP {page.status_code} or a holder down")
                        out.append((path, elapsed))
                return out

            with ThreadPoolExecutor(sessions) as pool:
                timed = [x for walked in pool.map(walk, [c for c, _ in signed]) for x in walked]
            for client, _ in signed:
                client.close()
        finally:
            stop_nodes(fed)
    rows = []
    for name in (*PAGES, "all pages"):
        ms = np.asarray([s * 1000 for p, s in timed if name in (p, "all pages")])
        rows.append(
            {"page": name, "n": len(ms), "p50": float(np.percentile(ms, 50)),
             "p95": float(np.percentile(ms, 95)), "max": float(ms.max())}
        )  # fmt: skip
    sign = np.asarray([s * 1000 for _, s in signed])
    rows.append(
        {"page": "sign-in (argon2)", "n": len(sign), "p50": float(np.percentile(sign, 50)),
         "p95": float(np.percentile(sign, 95)), "max": float(sign.max())}
    )  # fmt: skip
    return rows


def portal_table(rows: list[dict[str, float]], sessions: int) -> str:
    out = [
        f"| page ({sessions} concurrent sessions) | requests | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['page']} | {r['n']:.0f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['max']:.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grants", type=int, default=5000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--revocations", type=int, default=50)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--portal-sessions", type=int, default=20)
    parser.add_argument("--portal-rounds", type=int, default=5)
    parser.add_argument("--portal-only", action="store_true", help="only the portal pages")
    parser.add_argument("--out", type=Path, default=None)
    opts = parser.parse_args()
    text = ""
    if not opts.portal_only:
        rows = [
            run(grants=opts.grants, batch=b, revocations=opts.revocations, poll_s=opts.poll_s)
            for b in opts.batch
        ]
        text = (
            "# Platform feed benchmark\n\n"
            f"`python experiments/bench_platform.py --grants {opts.grants} --batch "
            f"{' '.join(map(str, opts.batch))} --revocations {opts.revocations} --poll-s "
            f"{opts.poll_s}` on {host.machine()} ({os.cpu_count()} cores, shared), Python "
            f"{host.python_version()}, SQLite stores. Targets: {TARGET_GRANTS_PER_S:.0f} "
            f"grants/s end to end, revocation p99 <= {TARGET_REVOKE_P99_S:.0f} s.\n\n"
            + table(rows)
            + "\n"
        )
    if opts.portal_sessions > 0:
        prow = run_portal(sessions=opts.portal_sessions, rounds=opts.portal_rounds)
        text += (
            ("\n" if text else "")
            + "# Portal pages\n\n"
            + f"`python experiments/bench_platform.py{' --portal-only' if opts.portal_only else ''}"
            + f" --portal-sessions {opts.portal_sessions} --portal-rounds {opts.portal_rounds}` "
            + f"on {host.machine()} ({os.cpu_count()} cores, shared with the four node processes "
            + "and the HTTP clients), real nodes over mutual TLS. Target: page p95 <= "
            + f"{TARGET_PAGE_P95_MS:.0f} ms.\n\n"
            + portal_table(prow, opts.portal_sessions)
            + "\n"
        )
    print(text)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(text)


if __name__ == "__main__":
    main()
