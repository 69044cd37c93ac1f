"""Benchmark federated SecureBoost end to end on the default-credit hetero split (in-process).

The bank and one data holder ("host") run in this one process over the in-process transport
twin (real protobuf bytes, real Paillier with production-size keys), so the wall time is what
one machine needs for both parties' work; across machines the holder's histogram work and the
bank's encryption/decryption would run on separate CPUs. Prints and writes one JSON entry per
run and a Markdown table beside the JSON file.

    python experiments/bench_secureboost.py --rows 24000 --trees 5 --depth 3 --key-bits 2048 \
        --workers 2 --out experiments/results/bench_secureboost.json

``--ready-key N`` (issue 14): the bank takes a key made before the run with N obfuscators
(``federation.crypto.reserve.KeyReserve``; filling time reported, not in ``fit_s``);
``--holder-pool K``: the holder makes K textbook obfuscators per job from Start on.
``--overlap both``: the same job without, then with, the holder summing the root histogram as
the gradients stream in (issue 14 part 3); both rows are written and the trees compared.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.transport.inproc import InProcessPeer
from models.metrics import ks_statistic, roc_auc
from models.secureboost import HolderModel, SecureBoostClassifier
from models.secureboost.passive import local_holders

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "default_credit"


class CountingPeer(InProcessPeer):
    """Counts the bytes each RPC moves (requests and responses, serialised)."""

    def __init__(self, runtime: Any, **kwargs: Any):
        super().__init__(runtime, **kwargs)
        self.bytes: dict[str, int] = {}

    def _add(self, method: str, n: int) -> None:
        self.bytes[method] = self.bytes.get(method, 0) + n

    def _unary(self, method: str, raw: bytes, timeout: float) -> bytes:
        out = super()._unary(method, raw, timeout)
        self._add(method, len(raw) + len(out))
        return out

    def _client_stream(self, method: str, raws: Any, timeout: float) -> bytes:
        def tap() -> Any:
            for raw in raws:
                self._add(method, len(raw))
                yield raw

        return super()._client_stream(method, tap(), timeout)


def load(rows: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    guest = pd.read_csv(DATA / "default_credit_hetero_guest.csv")
    host = pd.read_csv(DATA / "default_credit_hetero_host.csv")
    joined = guest.merge(host, on="id", suffixes=("", "_host"))
    train = joined[joined["id"] % 5 != 0].iloc[:rows]
    test = joined[joined["id"] % 5 == 0]
    host_cols = [f"x{i}_host" for i in range(10)]
    both = pd.concat([train, test], ignore_index=True)
    X_bank = both[[f"x{i}" for i in range(13)]]
    is_test = np.r_[np.zeros(len(train), bool), np.ones(len(test), bool)]
    return X_bank, both["y"].to_numpy(), both[host_cols].to_numpy(np.float64), is_test, host_cols


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=24000)
    ap.add_argument("--trees", type=int, default=5)
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ready-key", type=int, default=0, help="obfuscators made before the run")
    ap.add_argument("--holder-pool", type=int, default=0, help="holder obfuscators per job")
    ap.add_argument(
        "--overlap",
        choices=["on", "off", "both"],
        default="on",
        help="holders sum the root histogram as gradients stream in (issue 14); both: off then "
        "on, one after the other, trees compared",
    )
    opts = ap.parse_args(argv)
    settings = {"on": [True], "off": [False], "both": [False, True]}[opts.overlap]
    fitted: list[Any] = []
    for overlap in settings:
        code = _one(opts, overlap, fitted)
        if code:
            return code
    if len(fitted) == 2:
        same = _tree_rows(fitted[0]) == _tree_rows(fitted[1])
        print(f"trees with and without overlap: {'identical' if same else 'DIFFERENT'}")
        if not same:
            return 1
    return 0


def _tree_rows(clf: Any) -> list[list[tuple[Any, ...]]]:
    return [
        sorted(
            (i, n.is_leaf, n.owner, n.feature, n.threshold, n.gain, n.weight)
            for i, n in t.nodes.items()
        )
        for t in clf.trees_
    ]


def _one(opts: argparse.Namespace, overlap: bool, fitted: list[Any]) -> int:
    if not DATA.exists():
        print(f"default-credit data not found under {DATA}", file=sys.stderr)
        return 1
    X_bank, y, X_host, is_test, host_cols = load(opts.rows)
    train = ~is_test
    with tempfile.TemporaryDirectory() as tmp:
        # Training: the holder's table is the aligned training rows (as after PSI).
        peers, servicers = local_holders(
            {"host": (X_host[train], host_cols)},
            Path(tmp) / "train",
            peer_class=CountingPeer,
            workers=opts.workers,
            obfuscator_pool=opts.holder_pool,
        )
        counter = peers["host"]
        assert isinstance(counter, CountingPeer)
        clf = SecureBoostClassifier(
            n_trees=opts.trees, max_depth=opts.depth, key_bits=opts.key_bits, workers=opts.workers
        )
        reserve, fill_s = None, None
        if opts.ready_key:
            from federation.crypto.reserve import KeyReserve

            t0 = time.perf_counter()
            reserve = KeyReserve(
                key_bits=opts.key_bits, capacity=opts.ready_key, workers=opts.workers
            ).start()
            if not reserve.wait_filled(1800):
                raise SystemExit("the ready key did not fill in 30 minutes")
            fill_s = round(time.perf_counter() - t0, 2)
        started = time.perf_counter()
        cpu0 = time.process_time()
        clf.fit(X_bank[train], y[train], holders=peers, key_reserve=reserve, overlap=overlap)
        fitted.append(clf)
        if reserve is not None:
            reserve.stop()
        fit_s = time.perf_counter() - started
        fit_cpu = time.process_time() - cpu0
        # Scoring: a holder node whose table holds the test applicants, serving the saved part.
        saved = servicers["host"].model("bank", clf.job_id_).to_dict()
        scorers, scoring = local_holders(
            {"host": (X_host[is_test], host_cols)}, Path(tmp) / "score", workers=opts.workers
        )
        scoring["host"].load_model("bank", clf.job_id_, HolderModel.from_dict(saved))
        started = time.perf_counter()
        proba = clf.predict_proba(
            X_bank[is_test], holders=scorers, rows=np.arange(int(is_test.sum()))
        )[:, 1]
        predict_s = time.perf_counter() - started
    result = {
        "rows": int((~is_test).sum()),
        "test_rows": int(is_test.sum()),
        "trees": opts.trees,
        "depth": opts.depth,
        "key_bits": opts.key_bits,
        "workers": opts.workers,
        "fit_s": round(fit_s, 2),
        "fit_s_per_tree": round(fit_s / opts.trees, 2),
        "ready_key": opts.ready_key,
        "ready_key_fill_s": fill_s,
        "holder_pool": opts.holder_pool,
        "overlap": overlap,
        "main_process_cpu_s": round(fit_cpu, 2),
        "predict_s": round(predict_s, 3),
        "test_auc": round(roc_auc(y[is_test], proba), 4),
        "test_ks": round(ks_statistic(y[is_test], proba), 4),
        "wire_mb": {k: round(v / 1e6, 2) for k, v in sorted(counter.bytes.items())},
        "holder_candidates": clf.model_.stats.get("holder_candidates"),
        "decryptions": clf.model_.stats.get("decryptions"),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=1))
    if opts.out:
        runs = json.loads(opts.out.read_text()) if opts.out.exists() else []
        runs.append(result)
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        opts.out.write_text(json.dumps(runs, indent=1) + "\n")
        lines = [
            "| rows | trees × depth | key | workers | overlap | fit (s) | s/tree | AUC | KS "
            "| MB on wire | load |",
            "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in runs:
            mb = sum(r["wire_mb"].values())
            lines.append(
                f"| {r['rows']:,} | {r['trees']} × {r['depth']} | {r['key_bits']} | "
                f"{r['workers']} | {'on' if r.get('overlap') else 'off'} | {r['fit_s']} | "
                f"{r['fit_s_per_tree']} | {r['test_auc']} | {r['test_ks']} | {mb:.1f} | "
                f"{r.get('load_avg', '')} |"
            )
        opts.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
