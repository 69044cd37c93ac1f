"""Where a private score's time goes (issue 12): the cost of each CKKS operation of the chain at
the parameters private SecureBoost scoring uses. Prints a table and saves it.

    python experiments/bench_ckks_ops.py                # 2 holders: N = 16384, 4 data primes
    python experiments/bench_ckks_ops.py --holders 1

One score is one ciphertext through bank → holder 1 → … → bank: the bank adds its plaintext to a
ready encryption of zero and serialises; each holder deserialises, multiplies by its 0/1 mask,
adds a ready zero (the last also the zero-sum shares) and serialises; the bank deserialises and
decrypts. The table gives each step's milliseconds (median of ``--repeat``) and the sum on the
critical path, before gRPC, TLS, sealing and the audit records.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from federation.crypto.ckks import tenseal  # noqa: E402
from models.secureboost.private_scoring import SCALE_BITS, ckks_parameters  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--holders", type=int, default=2)
    ap.add_argument("--slots-used", type=int, default=1710, help="570 leaves x (1 + 2) blocks")
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--out", type=Path, default=ROOT / "experiments/results/bench_ckks_ops.json")
    args = ap.parse_args()
    ts = tenseal()
    n, coeffs, _ = ckks_parameters(args.holders)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=n, coeff_mod_bit_sizes=coeffs)
    ctx.global_scale = 2.0**SCALE_BITS
    rng = np.random.default_rng(0)
    values = rng.random(args.slots_used).tolist()
    mask = (rng.random(args.slots_used) > 0.5).astype(float).tolist()
    zero = ts.ckks_vector(ctx, [0.0] * args.slots_used)

    def timed(fn):  # type: ignore[no-untyped-def]
        out, runs = None, []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            out = fn()
            runs.append((time.perf_counter() - t0) * 1000)
        return statistics.median(runs), out

    rows = []
    ms, _ = timed(lambda: ts.ckks_vector(ctx, values))
    rows.append(("bank: fresh public-key encryption (when no ready zero)", ms, None))
    ms, ready = timed(lambda: zero + values)
    rows.append(("bank: ready zero + plaintext", ms, None))
    ms, blob = timed(lambda: ready.serialize())
    rows.append(("bank: serialise", ms, len(blob)))
    hop = blob
    for h in range(args.holders):
        ms, vec = timed(lambda b=hop: ts.ckks_vector_from(ctx, b))
        rows.append((f"holder {h + 1}: deserialise", ms, None))
        ms, vec = timed(lambda v=vec: v * mask)
        rows.append((f"holder {h + 1}: multiply by its 0/1 mask (one level)", ms, None))
        vec2 = vec
        ms, vec = timed(lambda v=vec2: v + [0.0] * args.slots_used)
        rows.append((f"holder {h + 1}: add shares / flooding (plaintext)", ms, None))
        ms, hop_blob = timed(lambda v=vec: v.serialize())
        rows.append((f"holder {h + 1}: serialise", ms, len(hop_blob)))
        hop = hop_blob
    ms, last = timed(lambda b=hop: ts.ckks_vector_from(ctx, b))
    rows.append(("bank: deserialise", ms, None))
    ms, _ = timed(lambda v=last: v.decrypt())
    rows.append(("bank: decrypt", ms, None))
    path = sum(ms for name, ms, _ in rows if "fresh public-key" not in name)
    lines = [
        f"# CKKS operations of one private score (N = {n}, coefficient moduli {coeffs}, "
        f"scale 2^{SCALE_BITS}; {args.holders} holder(s); median of {args.repeat})",
        "",
        "| step | ms | bytes |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {ms:.2f} | {'' if b is None else f'{b:,}'} |" for name, ms, b in rows]
    lines += ["", f"Critical path (ready zero at the bank): **{path:.1f} ms** of CPU per score."]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": n, "coeffs": coeffs, "rows": rows, "path_ms": path}))
    args.out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
