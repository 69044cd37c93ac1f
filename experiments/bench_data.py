"""Data-layer speed: USCC validation, table loading and city generation (prints and saves a table).

python experiments/bench_data.py --out experiments/results/bench_data.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from parties.data import uscc
from parties.data.loader import load_table
from parties.data.schema import schema_for
from parties.data.synth import synthesize_city, write_city


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=int, default=1_000_000)
    parser.add_argument("--enterprises", type=int, default=143_000)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/bench_data.json"))
    opts = parser.parse_args()
    rows = []
    base = uscc.generate(np.random.default_rng(7), 100_000, uscc.CHENGDU_REGIONS)
    codes = np.resize(base, opts.codes)
    _, t = timed(lambda: uscc.problems(codes))
    rows.append(("validate USCCs (vectorised)", opts.codes, t))
    tables, t = timed(lambda: synthesize_city(n_enterprises=opts.enterprises, seed=1))
    rows.append(("synthesise city (enterprises)", opts.enterprises, t))
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_city(tables, Path(tmp))
        for role in ("bank", "tax", "utility"):
            df, t = timed(lambda role=role: load_table(paths[role], schema_for(role)))
            rows.append((f"load + validate {role}.csv (rows)", len(df), t))
    print(f"{'step':40} {'n':>10} {'seconds':>8} {'per s':>12}")
    for name, n, t in rows:
        print(f"{name:40} {n:>10,} {t:8.2f} {n / t:12,.0f}")
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(
        json.dumps([{"step": s, "n": n, "seconds": round(t, 3)} for s, n, t in rows], indent=2)
    )
    print(f"saved {opts.out}")


if __name__ == "__main__":
    main()
