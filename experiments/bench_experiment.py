"""Benchmark federated SecureBoost end to end: every party a node process, mTLS gRPC on loopback.

Runs experiment configs through ``xinyidai.experiment.run_experiment`` (the code behind
``xinyidai experiment run``) and reports, per experiment: test AUC of the federated model, a
bank-only LightGBM and a centralised LightGBM; training wall time in total and per tree; CPU
seconds, bytes sent and peak RSS per node; plus, measured in the same run, the engine's DJN
encryptions per second next to the raw ``gmpy2.powmod`` r^n rate (textbook Paillier's cost).

    python experiments/bench_experiment.py --suite issue3 \\
        --out experiments/results/bench_experiment.json

The issue-3 suite: (a) ``experiments/default_credit_2party.yaml``, (b)
``experiments/uci_credit_3party.yaml`` (both read ``../shared/data/default_credit``; skipped with
a message when it is absent) and (c) a synthetic city of ``--city`` enterprises (default 100,000)
at depth 4, generated into a temporary folder. Writes the JSON and a Markdown table beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gmpy2
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation.crypto import PaillierEngine, generate_keypair, make_public_params  # noqa: E402
from xinyidai.experiment import load_experiment, missing_data, run_experiment  # noqa: E402

SUITE = [
    ROOT / "experiments" / "default_credit_2party.yaml",
    ROOT / "experiments" / "uci_credit_3party.yaml",
]


def engine_rates(key_bits: int, workers: int, n: int = 20000) -> dict[str, float]:
    """DJN encryptions/s (the bank's engine: CRT fixed-base, all workers) vs raw r^n powmods/s."""
    public, private = generate_keypair(key_bits)
    params = make_public_params(public)
    with PaillierEngine(params, private_key=private, workers=workers) as engine:
        engine.encrypt(list(range(1, 2 * workers * 64)))  # pool up, tables built
        t0 = time.perf_counter()
        engine.encrypt(list(range(1, n + 1)))
        djn = n / (time.perf_counter() - t0)
    nn, nsq = gmpy2.mpz(public.n), gmpy2.mpz(public.nsquare)
    rs = [gmpy2.mpz(secrets.randbelow(int(nn) - 1) + 1) for _ in range(200)]
    t0 = time.perf_counter()
    for r in rs:
        gmpy2.powmod(r, nn, nsq)
    raw = len(rs) / (time.perf_counter() - t0)
    return {
        "djn_encrypt_per_s": round(djn, 1),
        "djn_encrypt_per_s_per_core": round(djn / workers, 1),
        "raw_powmod_rn_per_s_one_core": round(raw, 1),
    }


def city_config(directory: Path, enterprises: int, depth: int) -> Path:
    """A synthetic city on disk and an experiment config for it (USCC keys, platform schemas)."""
    from parties.data.synth import synthesize_city

    tables = synthesize_city(n_enterprises=enterprises, seed=5)
    for role, frame in tables.items():
        frame.to_csv(directory / f"{role}.csv", index=False)
    config = {
        "name": f"city-{enterprises // 1000}k",
        "description": f"synthetic city, {enterprises} enterprises, bank + tax + utility",
        "bank": {"path": "bank.csv", "schema_role": "bank"},
        "holders": {
            "tax": {"path": "tax.csv", "schema_role": "tax"},
            "utility": {"path": "utility.csv", "schema_role": "utility"},
        },
        "split": {"kind": "stratified", "test_fraction": 0.2, "seed": 0},
        "model": {"type": "secureboost", "n_trees": 3, "max_depth": depth, "max_bin": 32},
        "crypto": {"key_bits": 2048, "workers": 2},
        "psi": {"min_overlap": 0.2},
        "run": {"deadline_s": 600},
    }
    path = directory / "city.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_one(path: Path, workdir: Path) -> dict[str, Any] | None:
    config, digest = load_experiment(path)
    absent = missing_data(config)
    if absent:
        print(f"SKIP {config.name}: data not found ({'; '.join(absent)})")
        return None
    print(f"running {config.name} ...", flush=True)
    result = run_experiment(
        config,
        config_sha256=digest,
        workdir=workdir / config.name,
        progress=lambda m: print(f"  {m}", flush=True),
    )
    return result.data


def table(rows: list[dict[str, Any]], rates: dict[str, float]) -> str:
    out = [
        "| experiment | aligned | train/test | AUC fed | AUC bank-only | AUC centralised | "
        "train s | s/tree (holder trees) | CPU s per node | MB sent per node | peak RSS MB per node |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        holder_trees = (
            r["tree_seconds"][1:] if r["params"]["first_tree_bank_only"] else r["tree_seconds"]
        )
        per_tree = sum(holder_trees) / max(1, len(holder_trees))
        nodes = r["nodes"]
        cpu = ", ".join(f"{k} {v['cpu_seconds']:.1f}" for k, v in nodes.items())
        sent = ", ".join(f"{k} {v['bytes_sent'] / 1e6:.1f}" for k, v in nodes.items())
        rss = ", ".join(f"{k} {v['peak_rss_mb']:.0f}" for k, v in nodes.items())
        out.append(
            f"| {r['experiment']} (depth {r['params']['max_depth']}, {r['params']['n_trees']} trees) "
            f"| {r['n_aligned']} | {r['n_train']}/{r['n_test']} | {r['test_auc']:.4f} "
            f"| {r['bank_only_auc']:.4f} | {r['centralised_auc']:.4f} | {r['train_seconds']:.1f} "
            f"| {per_tree:.1f} | {cpu} | {sent} | {rss} |"
        )
    out.append("")
    out.append(
        f"Engine in the same run: DJN encryption {rates['djn_encrypt_per_s']:.0f}/s "
        f"({rates['djn_encrypt_per_s_per_core']:.0f}/s per core) vs raw gmpy2.powmod r^n "
        f"{rates['raw_powmod_rn_per_s_one_core']:.0f}/s on one core."
    )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, action="append", default=[], help="experiment YAML")
    ap.add_argument("--suite", choices=["issue3"], help="the issue-3 benchmark set")
    ap.add_argument("--city", type=int, default=100_000, help="synthetic city size (0: skip)")
    ap.add_argument("--city-depth", type=int, default=4)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    configs = list(args.config) + (SUITE if args.suite else [])
    rates = engine_rates(2048, workers=2)
    print(json.dumps(rates))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="xinyidai-bench-") as tmp:
        work = Path(tmp)
        for path in configs:
            data = run_one(path, work)
            if data is not None:
                rows.append(data)
        if args.suite and args.city:
            city_dir = work / "city"
            city_dir.mkdir()
            data = run_one(city_config(city_dir, args.city, args.city_depth), work)
            if data is not None:
                rows.append(data)
    text = table(rows, rates)
    print(text)
    if args.out:
        report = {
            "command": "python experiments/bench_experiment.py " + " ".join(sys.argv[1:]),
            "machine": {
                "python": platform.python_version(),
                "cpus": len(os.sched_getaffinity(0)),
                "load_average_at_end": os.getloadavg()[0],
            },
            "engine": rates,
            "experiments": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
