"""Benchmark the bank's scoring service: ``Score`` latency and ``ScoreBatch`` throughput.

Three node processes (bank, tax, utility) on loopback with mutual TLS, built as ``xinyidai
demo`` builds them. The model is trained over the running nodes exactly as in production
(PSI alignment, then ``train_secureboost`` with 2048-bit Paillier keys: 50 trees of depth 4 by
default), registered in a temporary MLflow store and served by version number - so what is
timed is the full path: operator → bank (model cache, own reach) → every holder concurrently
(purpose, consent, disputes, model-part digest, reach) → bank (intersect, score, reasons) →
operator, with every call audited at both ends.

- ``Score``: sequential single-enterprise requests (authorised enterprises, cycled) from one
  client with a persistent connection; p50/p99 in milliseconds, after a warm-up.
- ``ScoreBatch``: the whole city as one region prefix; ``batch_per_second`` = candidates
  evaluated per second (each one checked by every holder; most are scored, the rest are
  excluded with a reason), ``batch_scored_per_second`` = enterprises actually scored.
- ``bytes_per_score``: every byte the bank node sent or received for one ``Score`` (the
  operator's request and reply, and each call to a holder), from the bank's own audit records
  (``request_bytes``/``response_bytes`` of each call); ``batch_bytes_per_enterprise`` the same
  for a batch.
- ``cpu_s``: CPU seconds (user + system) each node's process tree (the node and its crypto
  workers, psutil) spent during the Score loop and during the batches; ``cpu_ms_per_score``
  and ``cpu_ms_per_batch_enterprise`` per node.

    python experiments/bench_scoring.py --out experiments/results/bench_scoring.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_P99_MS = 50.0
TARGET_BATCH_PER_S = 5000.0
TARGET_PRIVATE_BATCH_PER_S = 2000.0


def _time_mode(
    client: Any,
    name: str,
    ref: str,
    codes: list[str],
    requests: int,
    batches: int,
    batch_codes: list[str] | None,
    progress: Any,
    meter: Any = None,
) -> dict[str, Any]:
    """Score p50/p99 over ``requests`` sequential calls, and ``batches`` ScoreBatch calls (the
    whole region, or ``batch_codes``); with the CPU seconds each node spent meanwhile."""
    from federation.transport.base import new_meta
    from protos import bank_pb2

    def batch() -> Any:
        request = bank_pb2.ScoreBatchRequest(
            meta=new_meta("financing"), model_name=name, model_ref=ref, threshold=-1e308
        )
        if batch_codes is None:
            request.region = "5"
        else:
            request.usccs.extend(batch_codes)
        return client.call("ScoreBatch", request)

    def score(code: str) -> Any:
        return client.call(
            "Score",
            bank_pb2.ScoreRequest(
                meta=new_meta("financing"), uscc=code, model_name=name, model_ref=ref
            ),
        )

    for code in codes[:5]:  # warm-up: model load, private setup, caches
        score(code)
    time.sleep(2.0)  # let the nodes' niced workers fill their reserves after the setup
    latencies, sizes = [], []
    cpu0, t0 = (meter.cpu(), time.time()) if meter else ({}, 0.0)
    for i in range(requests):
        started = time.perf_counter()
        reply = score(codes[i % len(codes)])
        latencies.append((time.perf_counter() - started) * 1000)
        sizes.append(reply.ByteSize())
        if not reply.scored:
            raise RuntimeError(f"{reply.uscc} was not scored: {reply.missing_sources}")
    if meter:
        cpu1, t1 = meter.cpu(), time.time()
    batch_times = []
    for _ in range(batches):
        started = time.perf_counter()
        last = batch()
        batch_times.append(time.perf_counter() - started)
    lat = np.asarray(latencies)
    per_batch = float(np.median(batch_times))
    measured: dict[str, Any] = {}
    if meter:
        cpu2, t2 = meter.cpu(), time.time()
        n_batch = max(1, int(last.candidates) * batches)
        measured = {
            "bytes_per_score": meter.wire_bytes(t0, t1) / max(1, requests),
            "batch_bytes_per_enterprise": meter.wire_bytes(t1, t2) / n_batch,
            "cpu_s": {
                "score_loop": {k: cpu1[k] - cpu0[k] for k in cpu0},
                "batches": {k: cpu2[k] - cpu1[k] for k in cpu1},
            },
            "cpu_ms_per_score": {k: 1000 * (cpu1[k] - cpu0[k]) / max(1, requests) for k in cpu0},
            "cpu_ms_per_batch_enterprise": {k: 1000 * (cpu2[k] - cpu1[k]) / n_batch for k in cpu1},
        }
    out = {
        "serving_mode": last.serving_mode,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
        "requests": requests,
        "batch_per_second": last.candidates / per_batch,
        "batch_scored_per_second": last.scored / per_batch,
        "batch_candidates": int(last.candidates),
        "batch_scored": int(last.scored),
        **measured,
    }
    progress(f"{name}@{ref or 'local'}: {out}")
    return out


class _Meter:
    """CPU seconds per node (its process tree, psutil) and the bank's bytes on the wire (its
    audit records' request/response byte counts) between two instants."""

    def __init__(self, fed: Any, audit: Any):
        self.fed = fed
        self.audit = audit

    def cpu(self) -> dict[str, float]:
        import psutil

        out: dict[str, float] = {}
        for node, proc in self.fed.processes.items():
            total = 0.0
            try:
                root = psutil.Process(proc.pid)
                for p in [root, *root.children(recursive=True)]:
                    try:
                        t = p.cpu_times()
                        total += t.user + t.system
                    except psutil.Error:
                        continue
            except psutil.Error:
                pass
            out[node] = total
        return out

    def wire_bytes(self, since: float, until: float) -> int:
        rows = self.audit.query(since=since, until=until)
        return sum(
            int(r.counts.get("request_bytes", 0)) + int(r.counts.get("response_bytes", 0))
            for r in rows
        )


def run(
    *,
    enterprises: int = 4000,
    trees: int = 50,
    depth: int = 4,
    requests: int = 500,
    batches: int = 5,
    private_requests: int = 100,
    private_batch: int = 512,
    seed: int = 7,
    workdir: Path | None = None,
    progress: Any = print,
) -> dict[str, Any]:
    """Build, train, register, then time; returns the result dict (see module docstring)."""
    from federation.audit import AuditLog
    from federation.transport.base import new_meta
    from parties.bank.alignment import align
    from parties.bank.registry import mlflow_client
    from parties.bank.secureboost import train_secureboost
    from parties.bank.served import TAG_SERVING_MODE
    from parties.config import load_node_config
    from parties.node import holder_peers, operator_client
    from protos import bank_pb2
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes
    from xinyidai.tracking import TrackingConfig, log_training, secureboost_record

    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="xinyidai-bench-scoring-")
        workdir = Path(tmp.name)
    workdir = Path(workdir).resolve()
    tracking = TrackingConfig.resolve(directory=workdir / "mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri  # the bank node's registry
    fed, _ = build_federation(
        workdir / "federation", enterprises=enterprises, seed=seed, deadline_s=120.0, workers=2
    )
    result: dict[str, Any] = {}
    try:
        start_nodes(fed)
        bank = load_node_config(fed.configs["bank"])
        audit = AuditLog(bank.resolved_audit_url, "bank")
        t0 = time.perf_counter()
        with holder_peers(bank, audit=audit) as peers:
            alignment = align(bank, peers, job_id="bench-align", salt=b"bench", min_overlap=0.2)
        params = dict(n_trees=trees, max_depth=depth, learning_rate=0.1, max_bin=32)
        with holder_peers(bank, audit=audit, service="SecureBoostHolder") as peers:
            clf, report = train_secureboost(
                bank,
                alignment,
                holders=peers,
                params={**params, "random_state": 0, "key_bits": 2048, "workers": 2},
                audit=audit,
                progress=lambda m: None,
            )
        train_s = time.perf_counter() - t0
        progress(f"trained {trees} trees x depth {depth} in {train_s:.0f} s (AUC {report.auc:.3f})")
        parts = {
            h: hashlib.sha256(
                (fed.node_dir(h) / "models" / "bank" / f"{report.job_id}.json").read_bytes()
            ).hexdigest()
            for h in ("tax", "utility")
        }
        record = secureboost_record(
            clf,
            report,
            parties=["bank", "tax", "utility"],
            model_name="credit-sbt-bench",
            holder_parts=parts,
            scoring_endpoint={"node_config": str(fed.configs["bank"])},
        )
        version = log_training(record, tracking=tracking).version or ""
        # The same trained model two ways: the registered version tagged private, and the
        # bank's local part of the job (served fast, as every untagged version).
        mlflow_client(tracking).set_model_version_tag(
            "credit-sbt-bench", version, TAG_SERVING_MODE, "private"
        )
        served = {"fast": (report.job_id, ""), "private": ("credit-sbt-bench", version)}
        meter = _Meter(fed, audit)
        modes: dict[str, Any] = {}
        with operator_client(bank, deadline_s=600.0) as client:
            whole = client.call(
                "ScoreBatch",
                bank_pb2.ScoreBatchRequest(
                    meta=new_meta("financing"),
                    model_name=report.job_id,
                    region="5",
                    threshold=-1e308,
                ),
            )
            codes = [e.uscc for e in whole.enterprises]
            if not codes:
                raise RuntimeError(f"no enterprise could be scored: {dict(whole.excluded)}")
            for mode, (name, ref) in served.items():
                n_req = requests if mode == "fast" else private_requests
                batch_codes = None if mode == "fast" else codes[:private_batch]
                modes[mode] = _time_mode(
                    client, name, ref, codes, n_req, batches, batch_codes, progress, meter
                )
        result = {
            "modes": modes,
            "requests": requests,
            "batches": batches,
            "model": {
                "trees": trees,
                "max_depth": depth,
                "leaves": int(sum(len(t.leaves()) for t in clf.trees_)),
                "split_owners": report.split_owners,
                "test_auc": report.auc,
                "train_seconds": train_s,
            },
            "enterprises": enterprises,
            "nodes": 3,
            "transport": "gRPC, mutual TLS, loopback",
            "targets": {
                "p99_ms": TARGET_P99_MS,
                "batch_per_second": TARGET_BATCH_PER_S,
                "private_batch_per_second": TARGET_PRIVATE_BATCH_PER_S,
            },
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "loadavg_at_end": list(os.getloadavg()),
            },
        }
    finally:
        stop_nodes(fed)
        if tmp is not None:
            tmp.cleanup()
    return result


def markdown(result: dict[str, Any]) -> str:
    m = result["model"]
    fast, private = result["modes"]["fast"], result["modes"]["private"]
    rows = [
        ("Score p50 (ms)", "p50_ms", "{:.1f}", "", ""),
        ("Score p99 (ms)", "p99_ms", "{:.1f}", f"≤ {TARGET_P99_MS:.0f}", f"≤ {TARGET_P99_MS:.0f}"),
        (
            "ScoreBatch candidates/s",
            "batch_per_second",
            "{:,.0f}",
            f"≥ {TARGET_BATCH_PER_S:,.0f}",
            f"≥ {TARGET_PRIVATE_BATCH_PER_S:,.0f}",
        ),
        ("ScoreBatch scored/s", "batch_scored_per_second", "{:,.0f}", "", ""),
        ("batch candidates", "batch_candidates", "{}", "", ""),
        ("bytes per Score (bank, all calls)", "bytes_per_score", "{:,.0f}", "", ""),
        ("bytes per batch enterprise", "batch_bytes_per_enterprise", "{:,.0f}", "", ""),
    ]
    lines = [
        "# Scoring service benchmark: fast and private",
        "",
        f"{result['nodes']} nodes ({result['transport']}), demo city of "
        f"{result['enterprises']} enterprises, SecureBoost {m['trees']} trees x depth "
        f"{m['max_depth']} ({m['leaves']} leaves), {result['machine']['cpus']} CPUs, load "
        f"average at the end {result['machine'].get('loadavg_at_end')}.",
        "",
        "| measure | fast | target | private | target |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key, fmt, t_fast, t_private in rows:
        lines.append(
            f"| {label} | {_fmt(fmt, fast.get(key))} | {t_fast} | "
            f"{_fmt(fmt, private.get(key))} | {t_private} |"
        )
    for key, label in (
        ("cpu_ms_per_score", "CPU ms per Score"),
        ("cpu_ms_per_batch_enterprise", "CPU ms per batch enterprise"),
    ):
        for node in sorted(fast.get(key, {})):
            lines.append(
                f"| {label}: {node} | {fast[key][node]:.2f} |  | "
                f"{private.get(key, {}).get(node, float('nan')):.2f} |  |"
            )
    return "\n".join([*lines, ""])


def _fmt(fmt: str, value: Any) -> str:
    return "n/a" if value is None else fmt.format(value)


def save(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("experiments/results/bench_scoring.json"))
    ap.add_argument("--enterprises", type=int, default=4000)
    ap.add_argument("--trees", type=int, default=50)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--private-requests", type=int, default=100)
    ap.add_argument("--private-batch", type=int, default=512, help="codes per private batch")
    args = ap.parse_args(argv)
    result = run(
        enterprises=args.enterprises,
        trees=args.trees,
        depth=args.depth,
        requests=args.requests,
        batches=args.batches,
        private_requests=args.private_requests,
        private_batch=args.private_batch,
    )
    save(result, args.out)
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
