"""Benchmark the USCC private set intersection (federation.psi), step by step.

Both parties run in this one process, one after the other, so the total is what a single
machine would need for both sides; across two machines the holder's set blinding and the
bank's query blinding overlap. Results accumulate in a JSON file (one entry per scenario) and
are rendered as a Markdown table beside it.

    python experiments/bench_psi.py --bank 100000 --holder 100000 --workers 2 \
        --out experiments/results/bench_psi.json
    python experiments/bench_psi.py --bank 30000 --holder 1000000 --cached --workers 2 \
        --out experiments/results/bench_psi.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from federation import psi

STEPS = [
    ("setup", "normalise codes, draw scalars (both)"),
    ("holder_set", "holder: hash + blind + sort own set (or load cache)"),
    ("bank_queries", "bank: hash + blind queries"),
    ("holder_blind", "holder: check + blind queries"),
    ("bank_finish", "bank: check + unblind + match + order"),
    ("holder_accept", "holder: map positions to rows"),
]


def make_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct random 18-character codes over the USCC charset (no check digit)."""
    charset = np.frombuffer(psi.USCC_CHARSET.encode(), dtype=np.uint8)
    out = np.empty(0, dtype="S18")
    while out.size < n:
        raw = charset[rng.integers(0, len(charset), size=(n - out.size, 18))]
        out = np.unique(np.concatenate([out, np.ascontiguousarray(raw).view("S18").ravel()]))
    return rng.permutation(out)


def make_sets(bank: int, holder: int, overlap: float, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    common = round(overlap * min(bank, holder))
    pool = make_codes(bank + holder - common, rng)
    b = pool[:bank]
    h = np.concatenate([pool[:common], pool[bank:]])
    return rng.permutation(b).astype(str).tolist(), rng.permutation(h).astype(str).tolist()


def cpu_seconds() -> float:
    """CPU time of this process and its PSI workers: unlike wall time, it barely changes when
    other jobs share the machine, so per-operation costs stay comparable between runs."""
    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (to tell how much others took)."""
    t = psutil.cpu_times()
    return t.user + t.system + t.nice + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def timed(fn: Callable[[], Any], cpu: dict[str, float] | None = None, name: str = "") -> Any:
    """Run ``fn``; return ``(result, wall seconds)`` and record CPU seconds under ``name``."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    if cpu is not None:
        cpu[name] = cpu_seconds() - c0
    return out, wall


def run(args: argparse.Namespace) -> dict[str, Any]:
    bank_codes, holder_codes = make_sets(args.bank, args.holder, args.overlap, args.seed)
    salt = b"bench-psi-salt"
    kw = {"workers": args.workers}
    record: dict[str, Any] = {
        "bank": args.bank,
        "holder": args.holder,
        "workers": args.workers,
        "cached": args.cached,
        "overlap": args.overlap,
        "steps_s": {},
        "cpu_s": {},
        "loadavg_before": os.getloadavg()[0],
    }
    busy0, ours0 = machine_busy_seconds(), cpu_seconds()
    steps, cpu = record["steps_s"], record["cpu_s"]

    # Start the worker pool outside the timed steps: a node keeps it for its lifetime.
    _, record["pool_start_s"] = timed(
        lambda: psi.run_psi_local(
            bank_codes[:2000], bank_codes[:2000], salt=b"warm", parallel_min=1000, **kw
        )
    )

    with tempfile.TemporaryDirectory(prefix="bench-psi-") as tmp:
        cache_dir = Path(tmp) if args.cached else None
        if args.cached:
            builder = psi.PsiHolder(holder_codes, salt=salt, cache_dir=cache_dir, **kw)
            _, record["cache_build_s"] = timed(builder.blinded_set)

        def setup() -> tuple[psi.PsiBank, psi.PsiHolder]:
            b = psi.PsiBank(bank_codes, salt=salt, **kw)
            h = psi.PsiHolder(holder_codes, salt=salt, cache_dir=cache_dir, **kw)
            return b, h

        (bank, holder), steps["setup"] = timed(setup, cpu, "setup")
        hset, steps["holder_set"] = timed(holder.blinded_set, cpu, "holder_set")
        queries, steps["bank_queries"] = timed(bank.queries, cpu, "bank_queries")
        dbl, steps["holder_blind"] = timed(
            lambda: holder.blind_queries(queries), cpu, "holder_blind"
        )
        result, steps["bank_finish"] = timed(lambda: bank.finish(dbl, hset), cpu, "bank_finish")
        rows, steps["holder_accept"] = timed(
            lambda: holder.accept_intersection(result.positions_bytes()), cpu, "holder_accept"
        )

    expect = sorted(set(bank_codes) & set(holder_codes))
    got_b = [bank_codes[i] for i in result.bank_rows]
    got_h = [holder_codes[i] for i in rows]
    record["correct"] = got_b == expect and got_h == expect
    record["intersection"] = result.size
    record["cache_hit"] = holder.stats.cache_hit
    record["holder_own_blinded"] = holder.stats.own_blinded
    record["total_s"] = sum(steps.values())
    record["total_cpu_s"] = sum(cpu.values())
    record["loadavg_after"] = os.getloadavg()[0]
    # CPU the rest of the machine used during the whole run (incl. warm-up and cache build).
    ours = cpu_seconds() - ours0
    record["others_cpu_s"] = max(0.0, machine_busy_seconds() - busy0 - ours)
    record["wire_bytes"] = {
        "bank_to_holder": len(queries) + len(result.positions_bytes()),
        "holder_to_bank": len(hset) + len(dbl),
    }
    # Scalar multiplications done in the timed steps (the cost that dominates).
    record["scalar_mults"] = 3 * args.bank + (0 if holder.stats.cache_hit else args.holder)
    record["us_per_mult"] = 1e6 * record["total_s"] / record["scalar_mults"]
    record["cpu_us_per_mult"] = 1e6 * record["total_cpu_s"] / record["scalar_mults"]
    record["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    return record


def render_md(runs: list[dict[str, Any]]) -> str:
    head = ["bank", "holder", "cached", "workers", "∩"] + [s for s, _ in STEPS]
    head += ["total s", "CPU s", "CPU µs/mult", "others' CPU s", "correct"]
    lines = ["# PSI benchmark (federation.psi)", ""]
    lines.append(
        "Both parties in one process on one machine, steps run one after another; step times "
        "are wall seconds. `CPU s` adds the CPU time of the process and its workers; "
        "`CPU µs/mult` divides it by the scalar multiplications in the timed steps (the cost "
        "that dominates). `others' CPU s` is CPU time other programs used on the machine "
        "during the run: well above zero, they shared the cores and wall times are inflated."
    )
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        cells = [f"{r['bank']:,}", f"{r['holder']:,}", "yes" if r["cached"] else "no"]
        cells += [str(r["workers"]), f"{r['intersection']:,}"]
        cells += [f"{r['steps_s'][s]:.2f}" for s, _ in STEPS]
        cells += [f"**{r['total_s']:.2f}**", f"{r['total_cpu_s']:.1f}"]
        others = r.get("others_cpu_s")
        cells += [f"{r['cpu_us_per_mult']:.1f}", "—" if others is None else f"{others:.1f}"]
        cells.append(str(r["correct"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Steps:"] + [f"- `{s}`: {d}" for s, d in STEPS]
    extra = [
        f"- {r['bank']:,} × {r['holder']:,}: building the holder cache took "
        f"{r['cache_build_s']:.2f} s (once, before the job)"
        for r in runs
        if r.get("cache_build_s") is not None
    ]
    if extra:
        lines += ["", "Cache builds:", *extra]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bank", type=int, default=100_000, help="bank set size")
    ap.add_argument("--holder", type=int, default=100_000, help="holder set size")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--overlap", type=float, default=0.5, help="common share of the smaller set")
    ap.add_argument("--cached", action="store_true", help="holder set from a prebuilt cache")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/bench_psi.json"))
    args = ap.parse_args(argv)
    if args.bank < 1 or args.holder < 1 or not 0 < args.overlap <= 1:
        ap.error("set sizes must be positive and --overlap in (0, 1]")

    record = run(args)
    width = max(len(s) for s, _ in STEPS)
    print(f"PSI {args.bank:,} bank × {args.holder:,} holder, workers={args.workers}, "
          f"cached={args.cached}, intersection={record['intersection']:,}")  # fmt: skip
    if "cache_build_s" in record:
        print(f"  {'(cache build)':<{width}}  {record['cache_build_s']:8.2f} s  (not in total)")
    for s, desc in STEPS:
        wall, c = record["steps_s"][s], record["cpu_s"][s]
        print(f"  {s:<{width}}  {wall:8.2f} s  (cpu {c:7.2f} s)  {desc}")
    print(
        f"  {'total':<{width}}  {record['total_s']:8.2f} s  (cpu {record['total_cpu_s']:7.2f} s)"
        f"  correct={record['correct']}  others' cpu {record['others_cpu_s']:.1f} s"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    if args.out.exists():
        runs = json.loads(args.out.read_text()).get("runs", [])
    key = ("bank", "holder", "workers", "cached")
    runs = [r for r in runs if tuple(r[k] for k in key) != tuple(record[k] for k in key)]
    runs.append(record)
    runs.sort(key=lambda r: (r["cached"], r["holder"], r["bank"], r["workers"]))
    args.out.write_text(json.dumps({"runs": runs}, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(render_md(runs))
    print(f"saved {args.out} and {args.out.with_suffix('.md')}")
    return 0 if record["correct"] else 1


if __name__ == "__main__":
    sys.exit(main())
