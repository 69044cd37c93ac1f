"""Past one machine (issue 15): the Ray engine's rates by worker count, its overhead against the
local pool, and the synthetic city at scale. Prints a Markdown table and saves it.

    python experiments/bench_scale.py                      # everything (city 100k and 1M)
    python experiments/bench_scale.py --cities 100000      # one city size
    python experiments/bench_scale.py --cities 0           # rates only

**Simulated hosts.** On one machine "N workers" is a real Ray cluster of N node processes
(``ray start``), each limited to one CPU (``--num-cpus 1``): the scheduling, serialisation and
retries are Ray's, but every "host" shares this machine's cores, so nothing scales past the
machine's core count (2 on the CI class). The table says so next to every such row.

Rows:

1. bank: DJN encryptions/s (2048-bit, CRT fixed-base) on the local pool and on Ray, by workers;
2. holder: encrypted histogram sums of 20,000 ciphertexts × 10 features × 32 bins, seconds;
3. Ray's overhead against the local pool at equal CPUs (target ≤ 10 %);
4. the synthetic city (bank + tax + utility, depth 4), local engine and every party on its own
   Ray cluster: seconds per holder tree and the peak RSS of every process (node processes,
   pool workers, Ray workers, raylets), sampled twice a second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation import compute  # noqa: E402
from federation.crypto.histogram import encrypted_bin_sums  # noqa: E402
from federation.crypto.paillier import (  # noqa: E402
    PaillierEngine,
    generate_keypair,
    make_public_params,
)
from federation.crypto.pool import shutdown_pools  # noqa: E402
from xinyidai.raycluster import LocalRayCluster, process_title  # noqa: E402

RESULTS = ROOT / "experiments" / "results"


# -- 1-3: rates by worker count ------------------------------------------------------------------
def _rates(params: Any, private: Any, workers: int, n_enc: int, n_hist: int) -> dict[str, float]:
    """Best of three timed rounds after a warm-up round (workers up, tables built, kernels
    imported) and a settle pause (a fresh cluster's agents start up for a few seconds)."""
    rng = np.random.default_rng(0)
    bins = rng.integers(0, 32, size=(n_hist, 10)).astype(np.int64)
    enc, hist = [], []
    with (
        PaillierEngine(params, private_key=private, workers=workers, parallel_threshold=1) as bank,
        PaillierEngine(params, workers=workers) as holder,
    ):
        for attempt in range(4):
            t0 = time.perf_counter()
            cts = bank.encrypt(list(range(1, n_enc + 1)))
            enc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            encrypted_bin_sums(
                cts[:n_hist],
                bins,
                np.arange(n_hist),
                32,
                params,
                engine=holder,
                parallel_threshold=1,
            )
            hist.append(time.perf_counter() - t0)
            if attempt == 0:
                time.sleep(5)
    enc_s, hist_s = min(enc[1:]), min(hist[1:])
    return {"encrypt_per_s": n_enc / enc_s, "encrypt_s": enc_s, "histogram_s": hist_s}


def rate_rows(worker_counts: list[int], n_enc: int, n_hist: int) -> list[dict[str, Any]]:
    """Per worker count W: the local pool of W processes; one Ray node with W CPUs (Ray's own
    cost at equal CPUs); W Ray nodes with 1 CPU each (simulated hosts: cross-node transfers)."""
    public, private = generate_keypair(2048)
    params = make_public_params(public)
    rows = []
    for w in worker_counts:
        compute.use(None)
        shutdown_pools()
        row: dict[str, Any] = {"workers": w, "local": _rates(params, private, w, n_enc, n_hist)}
        shutdown_pools()
        print(f"  local pool, {w} worker(s): {row['local']}", flush=True)
        for shape, cpus in (("ray_one_node", [w]), ("ray_hosts", [1] * w)):
            if shape == "ray_one_node" and w == 1:
                continue  # the same cluster as one simulated host
            cluster = LocalRayCluster.start(cpus)
            try:
                compute.use(compute.ComputeSpec(engine="ray", address=cluster.address))
                row[shape] = _rates(params, private, w, n_enc, n_hist)
            finally:
                compute.shutdown()
                cluster.stop()
            print(f"  Ray {shape} {cpus}: {row[shape]}", flush=True)
        row.setdefault("ray_one_node", row["ray_hosts"])
        rows.append(row)
    return rows


# -- 4: the city ---------------------------------------------------------------------------------
class RssSampler:
    """Peak RSS of every process under this one (nodes, pools, Ray clusters), by role."""

    def __init__(self) -> None:
        self.peak: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _role(pid: int) -> str:
        title = process_title(pid)
        if pid == os.getpid():
            return "runner (the bank's driver: alignment, training)"
        if "node serve" in title:
            config = title.split("--config", 1)[-1].strip()
            return f"node {Path(config).parent.name}"
        if title.startswith("ray::"):
            return "Ray worker" if "Agent" not in title else "Ray agent"
        for name in ("raylet", "gcs_server", "plasma", "log_monitor", "monitor.py"):
            if name in title:
                return f"Ray {name.replace('.py', '')}"
        if "ray_agent" in title or "multiprocessing" in title or "forkserver" in title:
            return "pool worker / Ray driver"
        if " ray start" in f" {title}" or "/ray start" in title:
            return "ray start"
        return "other"

    def _sample(self) -> None:
        from federation.usage import descendants

        for pid in [os.getpid(), *descendants(os.getpid())]:
            try:
                with open(f"/proc/{pid}/status", encoding="ascii") as fh:
                    rss = next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:")) / 1024
            except (OSError, StopIteration, ValueError):
                continue
            # The role is read again each time: a Ray worker sets its title once it is up.
            _, best = self.peak.get(pid, ("", 0.0))
            self.peak[pid] = (self._role(pid), max(best, rss))

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def by_role(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for role, mb in self.peak.values():
            r = out.setdefault(role, {"processes": 0, "max_mb": 0.0, "sum_mb": 0.0})
            r["processes"] += 1
            r["max_mb"] = max(r["max_mb"], round(mb, 1))
            r["sum_mb"] = round(r["sum_mb"] + mb, 1)
        return out


def city_row(work: Path, enterprises: int, engine: str, trees: int) -> dict[str, Any]:
    from bench_experiment import city_config, run_one

    directory = work / f"city-{enterprises}-{engine}"
    directory.mkdir(parents=True)
    path = city_config(directory, enterprises, depth=4, trees=trees)
    clusters: dict[str, LocalRayCluster] = {}
    try:
        if engine == "ray":  # every party its own cluster: Ray never spans two parties
            raw = yaml.safe_load(path.read_text())
            for party in ("bank", "tax", "utility"):
                clusters[party] = LocalRayCluster.start([2])
                section = raw["bank"] if party == "bank" else raw["holders"][party]
                section["compute"] = {"engine": "ray", "address": clusters[party].address}
            path.write_text(yaml.safe_dump(raw, sort_keys=False))
        with RssSampler() as rss:
            data = run_one(path, directory, mode="cold")
        if data is None:
            raise SystemExit("the city's files were not written")
    finally:
        compute.shutdown()
        for c in clusters.values():
            c.stop()
    holder = (
        data["tree_seconds"][1:] if data["params"]["first_tree_bank_only"] else data["tree_seconds"]
    )
    return {
        "enterprises": enterprises,
        "engine": engine,
        "aligned": data["n_aligned"],
        "trees": data["params"]["n_trees"],
        "seconds_per_holder_tree": round(sum(holder) / max(1, len(holder)), 2),
        "tree_seconds": data["tree_seconds"],
        "align_seconds": data.get("align_seconds"),
        "train_seconds": data["train_seconds"],
        "test_auc": data["test_auc"],
        "node_cpu_s": {k: v["cpu_seconds"] for k, v in data["nodes"].items()},
        "peak_rss_by_role": rss.by_role(),
        "others_cpu_s": data.get("others_cpu_s"),
    }


# -- report --------------------------------------------------------------------------------------
def markdown(
    rates: list[dict[str, Any]], cities: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    out = [
        "# bench_scale — the Ray engine (issue 15)",
        "",
        f"Machine: {meta['cpus']} CPUs, Python {meta['python']}, Ray {meta['ray']}; "
        f"{meta['when']}; command: `{meta['command']}`.",
        "",
        "## Rates by worker count — SIMULATED HOSTS on one machine",
        "",
        f"Each Ray row is a real cluster of N node processes with 1 CPU each, all on this "
        f"{meta['cpus']}-core machine: past {meta['cpus']} workers nothing can get faster. "
        f"Encryption: {meta['n_enc']:,} DJN encryptions (2048-bit). Histogram: "
        f"{meta['n_hist']:,} ciphertexts × 10 features × 32 bins.",
        "",
        "| workers | bank enc/s: local pool | Ray, 1 node × W CPUs | Ray, W hosts × 1 CPU "
        "(simulated) | holder histogram s: local pool | Ray 1 node | Ray W hosts (simulated) "
        "| Ray overhead at equal CPUs, 1 node (enc / hist) | same, W simulated hosts |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def over(lo: dict[str, float], ra: dict[str, float]) -> str:
        enc = lo["encrypt_per_s"] / ra["encrypt_per_s"] - 1
        hist = ra["histogram_s"] / lo["histogram_s"] - 1
        return f"{enc:+.1%} / {hist:+.1%}"

    for r in rates:
        lo, one, hosts = r["local"], r["ray_one_node"], r["ray_hosts"]
        note = " (local: in-process)" if r["workers"] == 1 else ""
        out.append(
            f"| {r['workers']}{note} | {lo['encrypt_per_s']:,.0f} | {one['encrypt_per_s']:,.0f} "
            f"| {hosts['encrypt_per_s']:,.0f} | {lo['histogram_s']:.2f} | {one['histogram_s']:.2f} "
            f"| {hosts['histogram_s']:.2f} | {over(lo, one)} | {over(lo, hosts)} |"
        )
    out += [
        "",
        "Overhead: positive means Ray is slower than the local pool with the same number of "
        "CPUs (target ≤ 10 %). Past the machine's cores every column stops growing.",
    ]
    if cities:
        out += [
            "",
            "## Synthetic city, depth 4 (bank + tax + utility, each its own node process)",
            "",
            "`ray`: every party on its own 2-CPU Ray cluster (three clusters on this machine). "
            "Peak RSS: the largest single process of each role, sampled every 0.5 s (and the "
            "number of such processes).",
            "",
            "| enterprises | engine | aligned | s per holder tree | tree seconds | align s | "
            "AUC | CPU s per node | peak RSS MB per process (role: max, count) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in cities:
            rss = "; ".join(
                f"{role}: {v['max_mb']:.0f} (×{v['processes']})"
                for role, v in sorted(c["peak_rss_by_role"].items())
            )
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in c["node_cpu_s"].items())
            out.append(
                f"| {c['enterprises']:,} | {c['engine']} | {c['aligned']:,} "
                f"| {c['seconds_per_holder_tree']:.1f} | {c['tree_seconds']} "
                f"| {c['align_seconds']} | {c['test_auc']:.4f} | {cpu} | {rss} |"
            )
    return "\n".join(out) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4", help="simulated worker counts")
    ap.add_argument("--encryptions", type=int, default=20_000)
    ap.add_argument("--hist-rows", type=int, default=20_000)
    ap.add_argument("--cities", default="100000,1000000", help="city sizes (0: none)")
    ap.add_argument("--city-engines", default="local,ray")
    ap.add_argument("--trees", type=int, default=3, help="trees per city run (first: bank only)")
    ap.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "xinyidai-bench-scale"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_scale.json")
    args = ap.parse_args()
    import shutil

    import ray

    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    meta = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python experiments/bench_scale.py " + " ".join(sys.argv[1:]),
        "n_enc": args.encryptions,
        "n_hist": args.hist_rows,
    }
    counts = [int(w) for w in args.workers.split(",") if w.strip()]
    rates = rate_rows(counts, args.encryptions, args.hist_rows) if counts else []
    cities = []
    for size in [int(s) for s in args.cities.split(",") if s.strip() and int(s) > 0]:
        for engine in [e.strip() for e in args.city_engines.split(",") if e.strip()]:
            print(f"city {size:,} on {engine} ...", flush=True)
            cities.append(city_row(args.work, size, engine, args.trees))
            print(json.dumps(cities[-1]), flush=True)
    text = markdown(rates, cities, meta)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rates": rates, "cities": cities}, indent=1))
    args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
