"""Cost of the per-call bookkeeping: audit append, chain verification, consent check.

    python experiments/bench_audit.py --n 2000 --out experiments/results/bench_audit.json

Every RPC a node serves appends one audit record, and every per-enterprise request checks consent,
so both sit on the scoring path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from federation.audit import AuditLog, sqlite_url
from federation.pki import init_pki
from parties.authorisation import PlatformSigner
from parties.consent import ConsentRegistry
from parties.data import uscc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/bench_audit.json"))
    opts = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        with AuditLog(sqlite_url(tmpdir / "audit.db"), "tax") as log:
            lat = []
            for i in range(opts.n):
                t = time.perf_counter()
                log.append(direction="served", peer="bank", operation="Score", counts={"rows": i})
                lat.append(time.perf_counter() - t)
            rows.append(("audit append", opts.n, statistics.median(lat), np.percentile(lat, 99)))
            t = time.perf_counter()
            assert log.verify().ok
            rows.append(
                ("audit verify (whole chain)", opts.n, time.perf_counter() - t, float("nan"))
            )
        pki = init_pki(tmpdir / "pki", ["bank"])
        signer = PlatformSigner.from_file(pki.platform_signing_key)
        registry = ConsentRegistry(
            sqlite_url(tmpdir / "consent.db"), signer.public_key, node_id="tax"
        )
        codes = uscc.generate(np.random.default_rng(1), opts.n, uscc.CHENGDU_REGIONS)
        now = time.time()
        for code in codes:
            registry.grant(
                signer.issue(
                    uscc=code,
                    bank_id="bank",
                    purpose="financing",
                    categories=["tax"],
                    valid_from=now - 1,
                    valid_until=now + 3600,
                )
            )
        lat = []
        for code in codes:
            t = time.perf_counter()
            registry.check(uscc=code, bank_id="bank", purpose="financing", categories=["tax"])
            lat.append(time.perf_counter() - t)
        rows.append(("consent check", opts.n, statistics.median(lat), np.percentile(lat, 99)))
    print(f"{'operation':28} {'n':>7} {'median ms':>10} {'p99 ms':>8}")
    for name, n, med, p99 in rows:
        print(f"{name:28} {n:>7} {med * 1000:10.3f} {p99 * 1000:8.3f}")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(
        json.dumps(
            [{"operation": r[0], "n": r[1], "median_s": r[2], "p99_s": r[3]} for r in rows],
            indent=2,
        )
    )
    print(f"saved {opts.out}")


if __name__ == "__main__":
    main()
