"""Benchmark of the Paillier engine against raw gmpy2 and ``phe``.

Not a test: run it by hand on the machine whose speed you want to know, e.g.

    .venv/bin/python experiments/bench_paillier.py --key-bits 2048 --n 20000 --workers 2

Prints a table and writes JSON (``--out``) plus a Markdown table next to it. "per core" is items
per CPU-second of one process (so it does not depend on other jobs on the machine); "total" is
items per wall-clock second with ``--workers`` processes at once (the engine's pool, warmed up
first: pool start-up and table precomputation are not timed), which other jobs on a shared
machine do distort — the load average at start is recorded. Slow operations (textbook, phe,
decryption) run on a proportionally smaller sample; the item counts are in the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz
from phe.paillier import PaillierPublicKey

from federation.crypto import (
    GradHessPacker,
    PaillierEngine,
    encrypted_bin_sums,
    generate_keypair,
    make_public_params,
)
from federation.crypto.testing import allow_insecure_key_sizes

TARGET_PER_CORE = 2500  # DJN encryptions/s per core at 2048 bits


def _cpu(fn: Callable[[], Any]) -> float:
    """CPU seconds of this process: "per core" rates do not depend on what else the machine runs."""
    start = time.process_time()
    fn()
    return time.process_time() - start


def _wall(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- functions run in the benchmark's own worker processes (for the "total" of baselines) -----


def _raw_powmod(n_int: int, count: int) -> tuple[int, float]:
    n = mpz(n_int)
    nsq = n * n
    rs = [mpz(secrets.randbelow(n_int - 1) + 1) for _ in range(count)]
    return count, _cpu(lambda: [gmpy2.powmod(r, n, nsq) for r in rs])


def _phe_encrypt(n_int: int, count: int) -> tuple[int, float]:
    pk = PaillierPublicKey(n_int)
    values = [secrets.randbits(64) for _ in range(count)]
    return count, _cpu(lambda: [pk.encrypt(v) for v in values])


def _additions(n_int: int, count: int) -> tuple[int, float]:
    nsq = mpz(n_int) ** 2
    cts = [mpz(secrets.randbelow(int(nsq))) for _ in range(256)]

    def run() -> None:
        acc = mpz(1)
        for i in range(count):
            acc = gmpy2.f_mod(acc * cts[i & 255], nsq)

    return count, _cpu(run)


def _all_cores(
    fn: Callable[[int, int], tuple[int, float]], n_int: int, count: int, w: int
) -> float:
    """Run ``fn`` in ``w`` fresh processes at once; items per second of wall time."""
    with ProcessPoolExecutor(w) as pool:
        list(pool.map(fn, [n_int] * w, [2] * w))  # warm-up: imports, process start
        start = time.perf_counter()
        done = sum(c for c, _ in pool.map(fn, [n_int] * w, [count] * w))
        return done / (time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    key_bits, n, workers = args.key_bits, args.n, args.workers
    n_slow = max(20, n // 100)  # textbook / phe / raw powmod
    n_dec = max(50, n // 20)
    n_features, n_bins = args.features, args.bins
    rows: list[dict[str, Any]] = []

    def row(name: str, items: int, per_core: float | None, total: float | None, unit: str) -> None:
        rows.append(
            {"operation": name, "items": items, "per_core": per_core, "total": total, "unit": unit}
        )
        pc = f"{per_core:,.0f}" if per_core is not None else "—"
        tt = f"{total:,.0f}" if total is not None else "—"
        print(f"  {name:<40} {items:>8} {pc:>14} {tt:>14}  {unit}", flush=True)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    if key_bits < 2048:
        with allow_insecure_key_sizes():
            pk, sk = generate_keypair(key_bits)
            params = make_public_params(pk)
    else:
        pk, sk = generate_keypair(key_bits)
        params = make_public_params(pk)
    keygen_s = time.perf_counter() - t0
    n_int = int(pk.n)
    print(f"{key_bits}-bit key in {keygen_s:.2f} s; workers={workers}; load average {load}")
    print(f"  {'operation':<40} {'items':>8} {'per core/s':>14} {'total/s':>14}")

    ctx = allow_insecure_key_sizes() if key_bits < 2048 else contextlib.nullcontext()
    with ctx:
        single = PaillierEngine(params, private_key=sk, workers=1)
        single_tb = PaillierEngine(params, private_key=sk, workers=1, obfuscation="textbook")
        multi = PaillierEngine(params, private_key=sk, workers=workers, parallel_threshold=0)
        multi_tb = PaillierEngine(
            params, private_key=sk, workers=workers, obfuscation="textbook", parallel_threshold=0
        )
    ms = [secrets.randbits(min(key_bits - 2, 200)) for _ in range(n)]
    with single, single_tb, multi, multi_tb:
        single.encrypt(ms[:10])  # table precomputation, not timed
        multi.encrypt(ms[: 4 * workers])  # pool start + per-worker tables, not timed
        multi_tb.encrypt(ms[:workers])
        djn_1 = n / _cpu(lambda: single.encrypt(ms))
        cts: list[mpz] = []
        djn_w = n / _wall(lambda: cts.extend(multi.encrypt(ms)))
        row("encrypt: engine DJN (key holder: CRT fixed-base)", n, djn_1, djn_w, "enc/s")
        # Warm: obfuscators made ahead of time (federation/crypto/randomness.py), as a node
        # would while idle; the fill is timed separately, then encrypt only multiplies.
        fill_s = _wall(
            lambda: multi.start_obfuscator_pool(
                capacity=n, batch=max(1, n // (4 * workers)), prefill=n, background=False
            )
        )
        row(f"obfuscator pool fill ({workers} workers)", n, None, n / fill_s, "obf/s")
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        multi.encrypt(ms)  # all from the pool: in-process, no worker round trip
        warm_cpu, warm_wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
        multi.drop_obfuscators()
        row("encrypt: DJN warm (pool pre-filled)", n, n / warm_cpu, n / warm_wall, "enc/s")
        with ctx:
            public_djn = PaillierEngine(params, workers=1, obfuscation="djn")
        with public_djn:  # the same DJN without p and q: fixed-base table mod n^2
            public_djn.encrypt(ms[:10])
            djn_n2 = n / _cpu(lambda: public_djn.encrypt(ms))
        row("encrypt: engine DJN without p, q (mod n^2)", n, djn_n2, None, "enc/s")
        tb_1 = n_slow / _cpu(lambda: single_tb.encrypt(ms[:n_slow]))
        tb_w = (n_slow * workers) / _wall(lambda: multi_tb.encrypt(ms[: n_slow * workers]))
        row("encrypt: engine textbook r^n", n_slow, tb_1, tb_w, "enc/s")
        _, raw_s = _raw_powmod(n_int, n_slow)
        row(
            "raw gmpy2.powmod(r, n, n^2)",
            n_slow,
            n_slow / raw_s,
            _all_cores(_raw_powmod, n_int, n_slow, workers),
            "op/s",
        )
        _, phe_s = _phe_encrypt(n_int, n_slow)
        row(
            "encrypt: phe pk.encrypt",
            n_slow,
            n_slow / phe_s,
            _all_cores(_phe_encrypt, n_int, n_slow, workers),
            "enc/s",
        )
        sub = cts[:n_dec]
        dec_1 = n_dec / _cpu(lambda: single.decrypt(sub))
        dec_w = (n_dec * workers) / _wall(lambda: multi.decrypt(cts[: n_dec * workers]))
        row("decrypt: CRT", n_dec, dec_1, dec_w, "dec/s")
        rr_1 = n / _cpu(lambda: single.rerandomise(cts))
        rr_w = n / _wall(lambda: multi.rerandomise(cts))
        row("re-randomise: DJN", n, rr_1, rr_w, "ct/s")
        rrt_1 = n_slow / _cpu(lambda: single_tb.rerandomise(cts[:n_slow]))
        rrt_w = (n_slow * workers) / _wall(lambda: multi_tb.rerandomise(cts[: n_slow * workers]))
        row("re-randomise: textbook", n_slow, rrt_1, rrt_w, "ct/s")
        _, add_s = _additions(n_int, n)
        row(
            "ciphertext additions (mulmod n^2)",
            n,
            n / add_s,
            _all_cores(_additions, n_int, n, workers),
            "add/s",
        )
        rng = np.random.default_rng(0)
        bins = rng.integers(0, n_bins, size=(n, n_features))
        idx = np.arange(n)
        work = n * n_features
        h_1 = work / _cpu(lambda: encrypted_bin_sums(cts, bins, idx, n_bins, pk))
        hist: list[list[mpz]] = []
        h_w = work / _wall(
            lambda: hist.extend(
                encrypted_bin_sums(cts, bins, idx, n_bins, pk, engine=multi, parallel_threshold=0)
            )
        )
        row(f"histogram ({n_features} feat x {n_bins} bins)", work, h_1, h_w, "sample*feat/s")
        gh = GradHessPacker(n_samples_max=n, key_bits=key_bits)
        cp = gh.ciphertext_packer()
        flat = [c for r in hist for c in r] * 4
        n_packed = cp.n_packed(len(flat))
        p_1 = n_packed / _cpu(lambda: cp.pack(flat, pk))
        packed: list[mpz] = []
        p_w = n_packed / _wall(lambda: packed.extend(cp.pack(flat, pk, engine=multi)))
        row(f"pack bin sums ({cp.slots_per_ciphertext}/ciphertext)", n_packed, p_1, p_w, "ct/s")

    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "config": {
            "key_bits": key_bits,
            "n": n,
            "workers": workers,
            "cpu_count": os.cpu_count(),
            "load_average_at_start": load,
            "exponent_bits": single.exponent_bits,
            "window_bits": single.window_bits,
            "python": platform.python_version(),
            "gmpy2": gmpy2.version(),
            "machine": platform.machine(),
            "processor": _cpu_model(),
            "keygen_seconds": keygen_s,
            "obfuscator_pool_fill_seconds": fill_s,
            "obfuscator_pool_size": n,
        },
        "target_djn_per_core": TARGET_PER_CORE,
        "target_met": djn_1 >= TARGET_PER_CORE if key_bits == 2048 else None,
        "speedup_djn_vs_phe_per_core": djn_1 / (n_slow / phe_s),
        "results": rows,
    }
    print(
        f"DJN per core {djn_1:,.0f}/s vs target {TARGET_PER_CORE:,}/s; "
        f"{result['speedup_djn_vs_phe_per_core']:.0f}x phe per core"
    )
    return result


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def to_markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        f"# Paillier engine benchmark ({cfg['key_bits']}-bit key)",
        "",
        f"Command: `{result['command']}`",
        "",
        f"{cfg['cpu_count']} CPUs ({cfg['processor']}), {cfg['workers']} workers, "
        f"load average at start {cfg['load_average_at_start']:.2f}, Python {cfg['python']}, "
        f"gmpy2 {cfg['gmpy2']}, DJN exponent {cfg['exponent_bits']} bits, "
        f"window {cfg['window_bits']} bits.",
        "",
        "| operation | items | per core (per CPU-second) | total (wall, all workers) | unit |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for r in result["results"]:
        pc = f"{r['per_core']:,.0f}" if r["per_core"] is not None else "—"
        tt = f"{r['total']:,.0f}" if r["total"] is not None else "—"
        lines.append(f"| {r['operation']} | {r['items']:,} | {pc} | {tt} | {r['unit']} |")
    lines += [
        "",
        f"Target ≥ {result['target_djn_per_core']:,} DJN encryptions/s per core at 2048 bits: "
        f"{'met' if result['target_met'] else 'not met' if result['target_met'] is False else 'n/a'}"
        f"; DJN is {result['speedup_djn_vs_phe_per_core']:.0f}x phe per core.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--n", type=int, default=20000, help="samples (ciphertexts)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--bins", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("experiments/results/bench_paillier.json"))
    args = parser.parse_args(argv)
    if args.n < 100 or args.workers < 1:
        parser.error("--n must be >= 100 and --workers >= 1")
    result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    md = args.out.with_suffix(".md")
    md.write_text(to_markdown(result))
    print(f"wrote {args.out} and {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
