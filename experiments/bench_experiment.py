"""Benchmark federated SecureBoost end to end: every party a node process, mTLS gRPC on loopback.

Runs experiment configs through ``xinyidai.experiment.run_experiment`` (the code behind
``xinyidai experiment run``) and reports, per experiment: test AUC of the federated model, a
bank-only LightGBM and a centralised LightGBM; training wall time in total and per tree; CPU
seconds, bytes sent and peak RSS per node; plus, measured in the same run, the engine's DJN
encryptions per second next to the raw ``gmpy2.powmod`` r^n rate (textbook Paillier's cost).

    python experiments/bench_experiment.py --suite issue3 \\
        --out experiments/results/bench_experiment.json

``--suite categorical`` (issue 13): a synthetic 3-party set with text categories (declared and
inferred) and, when ``../shared/data`` has it, the UCI 3-party split with its coded columns
(SEX, EDUCATION, MARRIAGE, PAY_*) declared categorical; each also against a centralised
LightGBM with native categoricals (pandas categories) on the same rows.

    python experiments/bench_experiment.py --suite categorical \\
        --out experiments/results/bench_categorical.json

``--modes cold,warm`` (issue 14): each experiment **cold** (fresh nodes, this process's crypto
pools stopped, nothing made ahead; as ``xinyidai experiment run`` does, the bank's ready key
starts with the nodes and fills at low priority while they start and align — the row states
how many obfuscators were ready when training began) and **warm** (the bank's ready key — a
key pair and ``--pool`` obfuscators, ``federation.crypto.reserve`` — made while idle before the
run; the row states the pool size, how long filling took and its CPU, which is not in the
job's CPU), with the trees of both compared (the bank's saved model part). ``bare``: no ready
key at all (the job generates its key at the start: the cold row before the run started one).

Each row also states ``others' CPU s``: what other programs used of the machine's cores during
the row (``psutil.cpu_times`` minus the nodes' own CPU), since a shared machine inflates walls.

``--suite city --city 100000 --modes cold``: only the synthetic city (``--city-trees``,
``--city-depth``), per-tree time at that size.

    python experiments/bench_experiment.py --config experiments/default_credit_2party.yaml \
        --modes cold,warm --out experiments/results/bench_warm.json

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


def machine_busy_seconds() -> float:
    """CPU seconds every process on the machine has used (to tell how much others took)."""
    import psutil

    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


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


def city_config(directory: Path, enterprises: int, depth: int, trees: int = 3) -> Path:
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
        "model": {"type": "secureboost", "n_trees": trees, "max_depth": depth, "max_bin": 32},
        "crypto": {"key_bits": 2048, "workers": 2},
        "psi": {"min_overlap": 0.2},
        "run": {"deadline_s": 600},
    }
    path = directory / "city.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


CATEGORICAL_MODEL = {"type": "secureboost", "n_trees": 5, "max_depth": 3, "max_bin": 32}


def categorical_city(directory: Path, n: int = 6000, seed: int = 13) -> tuple[Path, dict[str, Any]]:
    """A synthetic 3-party set with text categories (issue 13): the bank's sales channel
    (inferred: a text column), the tax holder's region (30 names, padded, some missing, a few
    rare — declared) and the utility holder's meter type (declared), each with a numeric
    column. Risk by region is non-monotone in any order of the names. Returns the config and
    the joined raw frame with the test mask (for the native-categorical LightGBM baseline)."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ids = np.arange(1, n + 1)
    regions = [f"region-{i:02d}" for i in range(30)]
    region_risk = rng.normal(0, 0.9, len(regions))
    meters = ["single-phase", "three-phase", "industrial", "shared", "prepaid"]
    meter_risk = np.array([0.0, -0.4, -0.7, 0.5, 0.9])
    channels = ["branch", "online", "broker", "partner"]
    channel_risk = np.array([-0.5, 0.3, 0.8, -0.2])
    region = rng.integers(0, len(regions), n)
    meter = rng.integers(0, len(meters), n)
    channel = rng.integers(0, len(channels), n)
    x_bank, x_tax, x_util = rng.normal(size=(3, n))
    logit = (
        region_risk[region]
        + meter_risk[meter]
        + channel_risk[channel]
        + 0.5 * x_bank
        + 0.3 * x_tax
        + 0.3 * x_util
        - 1.0
    )
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    region_text = np.array([f" {regions[r]} " for r in region], dtype=object)
    region_text[rng.random(n) < 0.03] = ""
    region_text[rng.choice(n, 8, replace=False)] = "offshore"  # rare: merged into "other"
    bank = pd.DataFrame(
        {"id": ids, "y": y, "x_bank": x_bank, "channel": [channels[c] for c in channel]}
    )
    tax = pd.DataFrame({"id": ids, "region": region_text, "x_tax": x_tax})
    utility = pd.DataFrame({"id": ids, "meter": [meters[m] for m in meter], "x_util": x_util})
    for name, frame in (("bank", bank), ("tax", tax), ("utility", utility)):
        frame.to_csv(directory / f"{name}.csv", index=False)
    plain = {"id_column": "id", "id_kind": "plain"}
    config = {
        "name": "categorical-city",
        "description": f"synthetic text categories, {n} rows, bank + tax + utility",
        "bank": {"path": "bank.csv", **plain, "label_column": "y"},
        "holders": {
            "tax": {"path": "tax.csv", **plain, "category": "tax", "categorical": ["region"]},
            "utility": {
                "path": "utility.csv",
                **plain,
                "category": "electricity",
                "categorical": ["meter"],
            },
        },
        "split": {"kind": "id_mod", "modulus": 5, "remainder": 0},
        "model": CATEGORICAL_MODEL,
        "crypto": {"key_bits": 2048, "workers": 2},
        "run": {"deadline_s": 600},
    }
    path = directory / "categorical-city.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    joined = bank.merge(tax, on="id").merge(utility, on="id")
    joined["region"] = joined["region"].str.strip().replace("", None)
    frame = joined[["x_bank", "channel", "region", "x_tax", "meter", "x_util"]]
    return path, {
        "frame": frame,
        "y": joined["y"].to_numpy(),
        "test": ids % 5 == 0,
        "categorical": ["channel", "region", "meter"],
    }


def uci_categorical(directory: Path) -> tuple[Path, dict[str, Any]] | None:
    """``uci_credit_3party.yaml`` with its coded columns declared categorical: the bank's SEX,
    EDUCATION, MARRIAGE and the utility's repayment statuses PAY_0..PAY_6 (codes -2..8)."""
    import pandas as pd

    source = ROOT / "experiments" / "uci_credit_3party.yaml"
    config = yaml.safe_load(source.read_text())
    data = (source.parent / config["bank"]["path"]).resolve()
    if not data.exists():
        print(f"SKIP uci-credit-3party-categorical: {data} not found")
        return None
    for party in [config["bank"], *config["holders"].values()]:
        party["path"] = str(data)
    config["name"] = "uci-credit-3party-categorical"
    config["bank"]["categorical"] = ["SEX", "EDUCATION", "MARRIAGE"]
    pays = ["PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"]
    config["holders"]["utility"]["categorical"] = pays
    path = directory / "uci-categorical.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    raw = pd.read_csv(data)
    features = [
        *config["bank"]["features"],
        *config["holders"]["tax"]["features"],
        *config["holders"]["utility"]["features"],
    ]
    return path, {
        "frame": raw[features],
        "y": raw[config["bank"]["label_column"]].to_numpy(),
        "test": raw["ID"].to_numpy() % 5 == 0,
        "categorical": ["SEX", "EDUCATION", "MARRIAGE", *pays],
    }


def native_lightgbm_auc(baseline: dict[str, Any], model: dict[str, Any]) -> float:
    """Centralised LightGBM on every party's columns, categories as pandas categories
    (LightGBM's native many-vs-many splits), same train/test rows and tree settings."""
    import lightgbm as lgb

    from models.metrics import roc_auc
    from parties.data.encoding import lightgbm_frame

    frame = baseline["frame"].copy()
    for name in baseline["categorical"]:
        frame[name] = frame[name].astype(str).where(frame[name].notna())
    X = lightgbm_frame(frame, baseline["categorical"])
    y, test = baseline["y"], baseline["test"]
    depth = int(model["max_depth"])
    clf = lgb.LGBMClassifier(
        n_estimators=int(model["n_trees"]),
        max_depth=depth,
        num_leaves=2**depth,
        learning_rate=0.3,
        max_bin=int(model.get("max_bin", 32)),
        min_child_samples=20,
        reg_lambda=1.0,
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    clf.fit(X[~test], y[~test])
    return roc_auc(y[test], clf.predict_proba(X[test])[:, 1])


def run_one(
    path: Path, workdir: Path, *, mode: str = "cold", pool: int = 100_000, batch: int = 1024
) -> dict[str, Any] | None:
    from federation.crypto.pool import shutdown_pools
    from federation.crypto.reserve import key_reserve
    from federation.usage import process_usage

    config, digest = load_experiment(path)
    absent = missing_data(config)
    if absent:
        print(f"SKIP {config.name}: data not found ({'; '.join(absent)})")
        return None
    shutdown_pools()  # no warm workers, no ready key, from an earlier row
    warm: dict[str, Any] | None = None
    if mode == "warm":
        before = process_usage(reaped_children=False)
        t0 = time.perf_counter()
        reserve = key_reserve(
            key_bits=config.crypto.key_bits,
            capacity=pool,
            batch=batch,
            workers=config.crypto.workers,
        )
        if not reserve.wait_filled(1800):
            raise SystemExit("the ready key's pool did not fill in 30 minutes")
        after = process_usage(reaped_children=False)
        warm = {
            "pool_size": pool,
            "pool_batch": batch,
            "fill_seconds": round(time.perf_counter() - t0, 2),
            "fill_cpu_seconds": round(after["cpu_seconds"] - before["cpu_seconds"], 2),
        }
        print(f"  ready key: {pool} obfuscators in {warm['fill_seconds']} s", flush=True)
    print(f"running {config.name} ({mode}) ...", flush=True)
    home = workdir / f"{config.name}-{mode}"
    busy0 = machine_busy_seconds()
    result = run_experiment(
        config,
        config_sha256=digest,
        workdir=home,
        progress=lambda m: print(f"  {m}", flush=True),
        track=False,
        ready_key=mode != "bare",
    )
    data = dict(result.data)
    ours = sum(float(v.get("cpu_seconds") or 0.0) for v in data["nodes"].values())
    # CPU the rest of the machine used during the run: well above zero, the cores were shared.
    data["others_cpu_s"] = round(max(0.0, machine_busy_seconds() - busy0 - ours), 1)
    data["load_average_after"] = round(os.getloadavg()[0], 2)
    data["mode"] = mode
    data["bank_ready_key"] = data.get("ready_key")  # result.json's: how warm the job started
    data["ready_key"] = warm
    model = home / "bank" / "models" / f"{data['job_id']}.json"
    if model.exists():
        data["trees"] = json.loads(model.read_text()).get("trees")
    shutdown_pools()
    return data


def table(rows: list[dict[str, Any]], rates: dict[str, float]) -> str:
    out = [
        "| experiment | aligned | train/test | AUC fed | AUC bank-only | AUC centralised | "
        "train s | s/tree (holder trees) | CPU s per node | MB sent per node | peak RSS MB per node "
        "| others' CPU s | load after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mode = r.get("mode", "cold")
        ready = r.get("ready_key")
        at_start = (r.get("bank_ready_key") or {}).get("obfuscators_at_start", 0)
        label = {
            "bare": "bare: no ready key, the job makes its key",
            "cold": f"cold: ready key started with the nodes, {at_start:,} obfuscators at start",
        }.get(mode, mode)
        if ready:
            label = (
                f"warm: {ready['pool_size']:,} obfuscators filled in {ready['fill_seconds']} s, "
                f"{ready['fill_cpu_seconds']} CPU s before the run"
            )
        holder_trees = (
            r["tree_seconds"][1:] if r["params"]["first_tree_bank_only"] else r["tree_seconds"]
        )
        per_tree = sum(holder_trees) / max(1, len(holder_trees))
        nodes = r["nodes"]
        cpu = ", ".join(f"{k} {v['cpu_seconds']:.1f}" for k, v in nodes.items())
        sent = ", ".join(f"{k} {v['bytes_sent'] / 1e6:.1f}" for k, v in nodes.items())
        rss = ", ".join(f"{k} {v['peak_rss_mb']:.0f}" for k, v in nodes.items())
        native = r.get("centralised_native_auc")
        central = f"{r['centralised_auc']:.4f}" + (
            f" (native categoricals {native:.4f})" if native is not None else ""
        )
        out.append(
            f"| {r['experiment']} (depth {r['params']['max_depth']}, {r['params']['n_trees']} trees; "
            f"{label}) "
            f"| {r['n_aligned']} | {r['n_train']}/{r['n_test']} | {r['test_auc']:.4f} "
            f"| {r['bank_only_auc']:.4f} | {central} | {r['train_seconds']:.1f} "
            f"| {per_tree:.1f} | {cpu} | {sent} | {rss} | {r.get('others_cpu_s', '—')} "
            f"| {r.get('load_average_after', '—')} |"
        )
    out.append("")
    out.append(
        "`others' CPU s`: CPU time other programs used on the machine during the row's run "
        "(the machine has 2 cores; well above zero, wall times are inflated)."
    )
    out.append(
        f"Engine in the same run: DJN encryption {rates['djn_encrypt_per_s']:.0f}/s "
        f"({rates['djn_encrypt_per_s_per_core']:.0f}/s per core) vs raw gmpy2.powmod r^n "
        f"{rates['raw_powmod_rn_per_s_one_core']:.0f}/s on one core."
    )
    return "\n".join(out)


def _same_trees(rows: list[dict[str, Any]]) -> str:
    """Whether each experiment's warm trees equal its cold ones (the bank's model part)."""
    lines = []
    by_name: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_name.setdefault(r["experiment"], {})[r.get("mode", "cold")] = r.get("trees")
    for name, trees in by_name.items():
        if "cold" in trees and "warm" in trees:
            verdict = "identical" if trees["cold"] == trees["warm"] else "DIFFERENT"
            lines.append(f"{name}: warm trees {verdict} to cold (bank's model part).")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--config", type=Path, action="append", default=[], help="experiment YAML")
    ap.add_argument(
        "--suite",
        choices=["issue3", "categorical", "city"],
        help="the issue-3 benchmark set, the issue-13 categorical workloads, or only the "
        "synthetic city (--city enterprises, --city-depth, --city-trees; each --modes)",
    )
    ap.add_argument("--no-uci", action="store_true", help="categorical suite: synthetic only")
    ap.add_argument("--city", type=int, default=100_000, help="synthetic city size (0: skip)")
    ap.add_argument("--city-depth", type=int, default=4)
    ap.add_argument("--city-trees", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--modes",
        default="cold",
        help="comma-separated: bare (no ready key), cold (fresh nodes; the ready key starts "
        "with them, as `xinyidai experiment run` does), warm (ready key filled before the run)",
    )
    ap.add_argument("--pool", type=int, default=100_000, help="warm: obfuscators made ahead")
    ap.add_argument("--pool-batch", type=int, default=1024, help="warm: fill step")
    args = ap.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or any(m not in ("bare", "cold", "warm") for m in modes):
        ap.error(f"--modes takes bare, cold and/or warm, got {args.modes!r}")
    configs = list(args.config) + (SUITE if args.suite == "issue3" else [])
    rates = engine_rates(2048, workers=2)
    print(json.dumps(rates))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="xinyidai-bench-") as tmp:
        work = Path(tmp)
        for path in configs:
            for mode in modes:
                data = run_one(path, work, mode=mode, pool=args.pool, batch=args.pool_batch)
                if data is not None:
                    rows.append(data)
        if args.suite == "categorical":
            for make in (categorical_city, None if args.no_uci else uci_categorical):
                if make is None:
                    continue
                folder = work / make.__name__
                folder.mkdir()
                made = make(folder)
                if made is None:
                    continue
                path, baseline = made
                data = run_one(path, work)
                if data is not None:
                    data["centralised_native_auc"] = native_lightgbm_auc(
                        baseline, yaml.safe_load(path.read_text())["model"]
                    )
                    rows.append(data)
        if args.suite in ("issue3", "city") and args.city:
            city_dir = work / "city"
            city_dir.mkdir()
            city = city_config(city_dir, args.city, args.city_depth, args.city_trees)
            for mode in modes if args.suite == "city" else ["cold"]:
                data = run_one(city, work, mode=mode, pool=args.pool, batch=args.pool_batch)
                if data is not None:
                    rows.append(data)
    text = table(rows, rates)
    same = _same_trees(rows)
    if same:
        text += "\n\n" + same
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
