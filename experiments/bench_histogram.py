"""Benchmark of the holder histogram kernel: per-row scan (in use) vs sorted-by-bin (candidate).

Result (issue 14): the scan is already at the GMP multiply-reduce floor ("floor" row: the same
number of bare ``f_mod(a * c, n^2)`` in one loop), and sorting by bin was slower, so the scan
stays. Since then the kernel in use skips each column's heaviest bin when that saves products
(``_accumulate``): on uniform bins it equals the reference; on a holder's real bins (``--city
tax``, ``--city utility``) it is measured against the reference here.

Not a test: run it by hand, e.g.

    .venv/bin/python experiments/bench_histogram.py --rows 24000 --features 10 --bins 32

Ciphertexts are random residues mod n^2 of a fresh 2048-bit key (the kernel only multiplies
them, so real encryptions would cost time without changing the measurement). "2 workers" splits
the features over a 2-process pool, as ``encrypted_bin_sums`` does; both kernels must return
identical sums, which the benchmark checks. The load average at start is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe import paillier

from federation.crypto.histogram import _accumulate


def sorted_accumulate(
    cts: Sequence[mpz], cols: np.ndarray, n_bins: int, nsq: mpz
) -> list[list[mpz]]:
    """Candidate: stable argsort per column, then one tight product loop per bin."""
    one = mpz(1)
    out: list[list[mpz]] = []
    for j in range(cols.shape[1]):
        col = cols[:, j]
        order = np.argsort(col, kind="stable").tolist()
        counts = np.bincount(col, minlength=n_bins).tolist()
        ordered = [cts[i] for i in order]
        row: list[mpz] = []
        start = 0
        for cnt in counts:
            if cnt == 0:
                row.append(one)
                continue
            acc = ordered[start]
            for c in ordered[start + 1 : start + cnt]:
                acc = gmpy2.f_mod(acc * c, nsq)
            row.append(acc)
            start += cnt
        out.append(row)
    return out


def old_accumulate(cts: Sequence[mpz], cols: np.ndarray, n_bins: int, nsq: mpz) -> list[list[mpz]]:
    """The per-row kernel before issue 14 (reference)."""
    one = mpz(1)
    out = []
    for j in range(cols.shape[1]):
        acc: list[Any] = [None] * n_bins
        for c, b in zip(cts, cols[:, j].tolist(), strict=True):
            a = acc[b]
            acc[b] = c if a is None else gmpy2.f_mod(a * c, nsq)
        out.append([one if a is None else a for a in acc])
    return out


KERNELS: dict[str, Callable[..., list[list[mpz]]]] = {
    "reference": old_accumulate,
    "scan (in use)": _accumulate,
    "sorted": sorted_accumulate,
}


def city_bins(role: str, n_rows: int, max_bin: int) -> np.ndarray:
    """Bins of a synthetic-city holder's columns, as its quantile binner makes them: text
    categories and flags as category bins, dates as day numbers, missing values in their own
    bin. (The holder's own loader encodes a little differently; the bin mass is the point.)"""
    import pandas as pd

    from models.binning import QuantileBinner
    from parties.data.synth import synthesize_city

    table = synthesize_city(n_enterprises=int(n_rows * 1.6), seed=5)[role].head(n_rows)
    cols, categorical = [], []
    for name in table.columns:
        if name == "uscc":
            continue
        col = table[name]
        numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
        if name.endswith("date"):
            values = pd.to_datetime(col, errors="coerce")
            cols.append((values - pd.Timestamp("2000-01-01")).dt.days.astype(float).to_numpy())
        elif not numeric:
            categorical.append(len(cols))
            cols.append(pd.factorize(col, use_na_sentinel=True)[0].astype(float))
        else:
            cols.append(col.astype(float).to_numpy())
    matrix = np.column_stack(cols)
    binner = QuantileBinner(max_bin=max_bin)
    return np.asarray(binner.fit_transform(matrix, categorical=categorical), dtype=np.int64)


def _task(name: str, cts: list[int], cols: np.ndarray, n_bins: int, nsq: int) -> list[list[int]]:
    out = KERNELS[name]([mpz(c) for c in cts], cols, n_bins, mpz(nsq))
    return [[int(c) for c in row] for row in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=24_000)
    ap.add_argument("--features", type=int, default=10)
    ap.add_argument("--bins", type=int, default=32)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument(
        "--city",
        choices=["tax", "utility"],
        help="bins of a synthetic-city holder instead of uniform random bins",
    )
    ap.add_argument("--out", default="experiments/results/bench_histogram.json")
    args = ap.parse_args()

    pub, _ = paillier.generate_paillier_keypair(n_length=args.key_bits)
    nsq = mpz(pub.nsquare)
    cts = [mpz(secrets.randbelow(int(nsq) - 1) + 1) for _ in range(args.rows)]
    rng = np.random.default_rng(0)
    if args.city:
        bins = city_bins(args.city, args.rows, args.bins)
        args.features = bins.shape[1]
        args.bins = int(bins.max()) + 1
    else:
        bins = rng.integers(0, args.bins, size=(args.rows, args.features), dtype=np.int64)
    load = os.getloadavg()
    rows: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    t = time.perf_counter()
    acc = cts[0]
    for _ in range(args.features):
        for c in cts:
            acc = gmpy2.f_mod(acc * c, nsq)
    rows.append({"kernel": "floor", "workers": 1, "seconds": time.perf_counter() - t})
    for name in KERNELS:
        t = time.perf_counter()
        results[name] = KERNELS[name](cts, bins, args.bins, nsq)
        rows.append({"kernel": name, "workers": 1, "seconds": time.perf_counter() - t})
    if not results["reference"] == results["scan (in use)"] == results["sorted"]:
        raise SystemExit("kernels disagree")
    plain = [int(c) for c in cts]
    halves = np.array_split(np.arange(args.features), 2)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(abs, [1, 2]))  # start the workers before timing
        for name in ("scan (in use)", "sorted"):
            t = time.perf_counter()
            futs = [
                pool.submit(_task, name, plain, bins[:, h], args.bins, int(nsq)) for h in halves
            ]
            [f.result() for f in futs]
            rows.append({"kernel": name, "workers": 2, "seconds": time.perf_counter() - t})
    products = args.rows * args.features
    for r in rows:
        r["products_per_s"] = products / r["seconds"]
    report = {
        "rows": args.rows,
        "features": args.features,
        "bins": args.bins,
        "key_bits": args.key_bits,
        "loadavg_at_start": load,
        "results": rows,
    }
    lines = ["| kernel | workers | seconds | products/s |", "|---|---|---|---|"]
    lines += [
        f"| {r['kernel']} | {r['workers']} | {r['seconds']:.3f} | {r['products_per_s']:,.0f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    what = f"synthetic city {args.city}'s bins" if args.city else "uniform random bins"
    print(f"{args.rows} rows x {args.features} features x {args.bins} bins ({what})")
    print(f"load average at start: {load}")
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(
        f"{args.rows} rows x {args.features} features x {args.bins} bins ({what}), "
        f"{args.key_bits}-bit; "
        f"load average at start {load}\n\n{table}\n"
    )


if __name__ == "__main__":
    main()
