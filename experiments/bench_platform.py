"""Benchmark the platform's authorisation feed: grants per second end-to-end and revocation
propagation.

One platform node (``PlatformNode``: the real gRPC server with mutual TLS and its audit log) and
two holder followers (``parties.holder.feed.FeedFollower``: each its own consent registry,
follow state and mTLS client), in one process on loopback. What is timed:

- ``grants/s``: N authorisations signed at the platform (``PlatformSigner.issue``), published
  in the feed (one transaction per ``--batch`` grants), pulled over gRPC by both holders, every
  event's and every authorisation's Ed25519 signature verified, and stored in both consent
  registries - from the first signature until both holders have applied the last event.
- revocation propagation: with both followers polling every ``--poll-s`` (default 1 s, the
  node default), a revocation is published at a random moment and the time until *both*
  holders' ``ConsentRegistry.check`` refuse is measured; p50 / p99 over ``--revocations``.

    python experiments/bench_platform.py --out experiments/results/bench_platform.md
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

    codes = list(uscc.generate(np.random.default_rng(1), grants, uscc.CHENGDU_REGIONS))
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
            # revocation propagation under the followers' own polling
            for f in followers:
                f.start()
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
        "revocations": revocations,
        "poll_s": poll_s,
        "revoke_p50_s": float(np.percentile(d, 50)),
        "revoke_p99_s": float(np.percentile(d, 99)),
        "revoke_max_s": float(d.max()),
    }


def table(rows: list[dict[str, float]]) -> str:
    out = [
        "| grants | batch | signed+published /s | slowest holder: pulled+verified+stored /s | "
        "end-to-end (2 holders) /s | poll s | revocations | revoke p50 s | revoke p99 s | "
        "max s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['grants']:.0f} | {r['batch']:.0f} | {r['published_per_s']:.0f} | "
            f"{r['one_holder_apply_per_s']:.0f} | {r['end_to_end_per_s']:.0f} | {r['poll_s']:.1f} | {r['revocations']:.0f} | "
            f"{r['revoke_p50_s']:.2f} | {r['revoke_p99_s']:.2f} | {r['revoke_max_s']:.2f} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--grants", type=int, default=5000)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--revocations", type=int, default=50)
    parser.add_argument("--poll-s", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=None)
    opts = parser.parse_args()
    rows = [
        run(grants=opts.grants, batch=b, revocations=opts.revocations, poll_s=opts.poll_s)
        for b in opts.batch
    ]
    text = (
        "# Platform feed benchmark\n\n"
        f"`python experiments/bench_platform.py --grants {opts.grants} --batch "
        f"{' '.join(map(str, opts.batch))} --revocations {opts.revocations} --poll-s "
        f"{opts.poll_s}` on {host.machine()} ({os.cpu_count()} cores, shared), Python "
        f"{host.python_version()}, SQLite stores. Targets: {TARGET_GRANTS_PER_S:.0f} grants/s "
        f"end to end, revocation p99 <= {TARGET_REVOKE_P99_S:.0f} s.\n\n" + table(rows) + "\n"
    )
    print(text)
    if opts.out is not None:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(text)


if __name__ == "__main__":
    main()
