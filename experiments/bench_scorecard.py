"""Benchmark the federated scorecard end to end: every party a node process, mTLS gRPC on loopback.

Runs scorecard experiment configs through ``xinyidai.experiment.run_experiment`` (the code
behind ``xinyidai experiment run``) and reports, per experiment: KS, AUC and Gini on the test
rows of the federated scorecard, of a centralised scorecard on the same bins (every party's
columns in one place, same WOE recipe and optimiser) and of a bank-only scorecard; the points
agreement (max |federated − centralised points| per test enterprise); training time (WOE, LR,
points; median LR epoch); bytes sent and received per node.

    python experiments/bench_scorecard.py --out experiments/results/bench_scorecard.json

Default configs: ``experiments/default_credit_scorecard.yaml`` (FATE's 2-party split),
``uci_credit_3party_scorecard.yaml`` (Paillier) and ``..._ckks.yaml`` (CKKS LR) on
``../shared/data/default_credit``, ``give_credit_scorecard.yaml`` on ``../shared/data/give_credit``
(each skipped with a message when its data is absent). Writes the JSON and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xinyidai.experiment import load_experiment, missing_data, run_experiment  # noqa: E402

SUITE = [
    ROOT / "experiments" / "default_credit_scorecard.yaml",
    ROOT / "experiments" / "uci_credit_3party_scorecard.yaml",
    ROOT / "experiments" / "uci_credit_3party_scorecard_ckks.yaml",
    ROOT / "experiments" / "give_credit_scorecard.yaml",
]


def run_one(path: Path, workdir: Path) -> dict[str, Any] | None:
    config, digest = load_experiment(path)
    absent = missing_data(config)
    if absent:
        print(f"skip {config.name}: data not found ({'; '.join(absent)})", file=sys.stderr)
        return None
    print(f"running {config.name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    r = run_experiment(
        config,
        config_sha256=digest,
        workdir=workdir / config.name,
        track=False,
        progress=lambda m: print(f"  {m}", file=sys.stderr, flush=True),
    ).data
    nodes = r["nodes"]
    return {
        "experiment": r["experiment"],
        "backend": r["backend"],
        "key_bits": r["key_bits"],
        "n_aligned": r["n_aligned"],
        "n_train": r["n_train"],
        "n_test": r["n_test"],
        "features_kept": r["features_kept"],
        "federated": {"ks": r["test_ks"], "auc": r["test_auc"], "gini": r["test_gini"]},
        "centralised": {
            "ks": r["centralised_ks"],
            "auc": r["centralised_auc"],
            "gini": r["centralised_gini"],
        },
        "bank_only": {
            "ks": r["bank_only_ks"],
            "auc": r["bank_only_auc"],
            "gini": r["bank_only_gini"],
        },
        "points_auc": r["points_auc"],
        "centralised_points_auc": r["centralised_points_auc"],
        "points_max_abs_diff": r["points_max_abs_diff"],
        "points_equal_share": r["points_equal_share"],
        "base_points": r["base_points"],
        "n_iter": r["n_iter"],
        "train_seconds": r["train_seconds"],
        "woe_seconds": r.get("woe_seconds"),
        "lr_seconds": r.get("lr_seconds"),
        "points_seconds": r.get("points_seconds"),
        "epoch_seconds_median": statistics.median(r["epoch_seconds"])
        if r["epoch_seconds"]
        else None,
        "align_seconds": r["align_seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "mb_sent": {k: round((v["bytes_sent"] or 0) / 1e6, 2) for k, v in nodes.items()},
        "mb_received": {k: round((v["bytes_received"] or 0) / 1e6, 2) for k, v in nodes.items()},
        "cpu_seconds": {k: v["cpu_seconds"] for k, v in nodes.items()},
    }


def _fmt(d: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:g}" for k, v in d.items())


def _m(d: dict[str, float]) -> str:
    return f"{d['ks']:.4f} / {d['auc']:.4f} / {d['gini']:.4f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| experiment | LR | train/test | kept (bank, holders) | KS / AUC / Gini federated | "
        "centralised (same bins) | bank-only | max abs Δpoints | equal points | train s | "
        "WOE s | LR s (epochs) | s/epoch | MB sent per node | MB received per node |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in rows:
        lr = "CKKS" if r["backend"] == "ckks" else f"Paillier {r['key_bits']}"
        lines.append(
            f"| {r['experiment']} | {lr} | {r['n_train']}/{r['n_test']} | "
            f"{_fmt(r['features_kept'])} | {_m(r['federated'])} | {_m(r['centralised'])} | "
            f"{_m(r['bank_only'])} | {r['points_max_abs_diff']:g} | "
            f"{100 * r['points_equal_share']:.2f} % | {r['train_seconds']:.1f} | "
            f"{r['woe_seconds']:.1f} | {r['lr_seconds']:.1f} ({r['n_iter']}) | "
            f"{r['epoch_seconds_median'] or float('nan'):.2f} | {_fmt(r['mb_sent'])} | "
            f"{_fmt(r['mb_received'])} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("configs", nargs="*", type=Path, help="scorecard configs (default suite)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "experiments/results/bench_scorecard.json"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="node folders (default temp)")
    args = parser.parse_args()
    configs = args.configs or SUITE
    with tempfile.TemporaryDirectory(prefix="bench-scorecard-") as tmp:
        workdir = args.workdir or Path(tmp)
        rows = [row for path in configs if (row := run_one(path, workdir)) is not None]
    if not rows:
        print("no experiment ran (data absent)")
        return
    rel = [os.path.relpath(p, ROOT) for p in [*args.configs, args.out]]
    command = "python experiments/bench_scorecard.py " + " ".join([*rel[:-1], "--out", rel[-1]])
    md = table(rows)
    print(md)
    note = (
        "KS / AUC / Gini on the test rows (id % 5 == 0) of the probability of default; the "
        "points ranking gives the same AUC up to whole-point ties. 'centralised (same bins)': "
        "every party's columns in one place, the same WOE recipe, IV selection, optimiser and "
        "points. 'max abs Δpoints': largest |federated − centralised| points of one test "
        "enterprise. s/epoch: median LR epoch (epochs 2..n). MB per node: bytes on the wire "
        "(the bank's include its operator process)."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "command": command,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "results": rows,
    }
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(f"Command: `{command}`\n\n{md}\n\n{note}\n")
    print(f"saved {args.out} and {args.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
