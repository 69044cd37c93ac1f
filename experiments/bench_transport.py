"""Transport baseline: unary round trips and chunked streaming over mutual TLS between node processes.

    python experiments/bench_transport.py --calls 500 --blob-mb 256 --out experiments/results/bench_transport.json

Starts the demo's three-node federation (separate OS processes on loopback), then measures from the
bank's side: ``Hello`` latency to a holder (each call audited on both sides), ``CheckAuthorisation``
latency (consent lookup + signature check + audit), and ``PutBlob``/``GetBlob`` throughput.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from federation.transport.base import new_meta
from parties.config import load_node_config
from parties.node import connect
from protos import common_pb2, holder_pb2
from xinyidai.demo import build_federation
from xinyidai.launcher import start_nodes, stop_nodes


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.array(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--blob-mb", type=int, default=256)
    parser.add_argument(
        "--out", type=Path, default=Path("experiments/results/bench_transport.json")
    )
    opts = parser.parse_args()
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fed, examples = build_federation(Path(tmp), enterprises=2000, seed=7)
        t1 = time.perf_counter()
        start_nodes(fed)
        rows.append({"what": "build federation (PKI, city, consent)", "seconds": t1 - t0})
        rows.append(
            {"what": "start 3 node processes until SERVING", "seconds": time.perf_counter() - t1}
        )
        try:
            bank = load_node_config(fed.configs["bank"])
            peer_cfg = next(p for p in bank.peers if p.node_id == "tax")
            with connect(bank, peer_cfg, audit=None, deadline_s=600) as tax:
                for name, method, make in [
                    ("Hello", "Hello", lambda: common_pb2.HelloRequest(meta=new_meta())),
                    (
                        "CheckAuthorisation",
                        "CheckAuthorisation",
                        lambda: holder_pb2.AuthorisationQuery(
                            meta=new_meta(), uscc=examples["tax"]["authorised"]
                        ),
                    ),
                ]:
                    for _ in range(20):  # warm up the channel
                        tax.call(method, make())
                    lat = []
                    for _ in range(opts.calls):
                        t = time.perf_counter()
                        tax.call(method, make())
                        lat.append(time.perf_counter() - t)
                    p50, p99 = percentiles(lat)
                    rows.append(
                        {
                            "what": f"{name} round trip",
                            "n": opts.calls,
                            "p50_ms": p50,
                            "p99_ms": p99,
                        }
                    )
                size = opts.blob_mb << 20
                piece = hashlib.sha256(b"x").digest() * (1 << 15)  # 1 MiB
                meta = new_meta(job_id="bench")
                t = time.perf_counter()
                tax.put_blob(
                    "bench", (piece for _ in range(size >> 20)), meta=meta, total_size=size
                )
                put = time.perf_counter() - t
                t = time.perf_counter()
                got = sum(len(c) for c in tax.get_blob("bench", meta=meta))
                get = time.perf_counter() - t
                assert got == size
                rows.append(
                    {
                        "what": f"PutBlob {opts.blob_mb} MiB",
                        "seconds": put,
                        "MiB_per_s": opts.blob_mb / put,
                    }
                )
                rows.append(
                    {
                        "what": f"GetBlob {opts.blob_mb} MiB",
                        "seconds": get,
                        "MiB_per_s": opts.blob_mb / get,
                    }
                )
        finally:
            stop_nodes(fed)
    for row in rows:
        print(
            "  ".join(
                f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
            )
        )
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(rows, indent=2))
    print(f"saved {opts.out}")


if __name__ == "__main__":
    main()
