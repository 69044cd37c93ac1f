"""Vertical logistic regression on default_credit: CKKS and Paillier against the centralised LR.

Two parties, as published for this data set: the bank = ``default_credit_hetero_guest.csv``
(id, y, x0..x12), one holder = ``default_credit_hetero_host.csv`` (id, x0..x9); train = ids
with id % 5 != 0 (24,000 rows), test = id % 5 == 0 (6,000). Full-batch gradient descent with
the same hyperparameters in every line; the centralised line is ``PlaintextLogisticRegression``
(the same optimiser on the concatenated columns). The holder runs in this process behind the
real service runtime (``local_holders``: protobuf bytes, no sockets), so times are compute plus
serialisation, and bytes are what would cross the network per party.

Reports: CKKS seconds per full-batch epoch at 24,000 rows, Paillier total training time at
``--key-bits`` (``--paillier-epochs`` epochs), test AUC federated vs centralised, the largest
coefficient difference, and bytes sent by each party. ``--compare-ckks-methods`` also times
three ways for a holder to compute X_kᵀ[[r]] on one 4,096-row chunk.

    python experiments/bench_linear.py --key-bits 2048 --workers 2 \\
        --out experiments/results/bench_linear.json
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from federation.transport.inproc import InProcessPeer  # noqa: E402
from models.linear import (  # noqa: E402
    LinearParams,
    PlaintextLogisticRegression,
    VerticalLogisticRegression,
    local_holders,
)
from models.metrics import roc_auc  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "default_credit"


class CountingPeer(InProcessPeer):
    """Counts the protobuf bytes each way (bank → holder requests, holder → bank replies)."""

    def __init__(self, runtime: Any, **kwargs: Any):
        super().__init__(runtime, **kwargs)
        self.sent = 0
        self.received = 0

    def _unary(self, method: str, raw: bytes, timeout: float) -> bytes:
        self.sent += len(raw)
        out = super()._unary(method, raw, timeout)
        self.received += len(out)
        return out

    def _client_stream(self, method: str, raws: Any, timeout: float) -> bytes:
        def tap() -> Any:
            for raw in raws:
                self.sent += len(raw)
                yield raw

        out = super()._client_stream(method, tap(), timeout)
        self.received += len(out)
        return out

    def _server_stream(self, method: str, raw: bytes, timeout: float) -> Any:
        self.sent += len(raw)
        for out in super()._server_stream(method, raw, timeout):
            self.received += len(out)
            yield out


def load() -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray] | None:
    guest, host = DATA / "default_credit_hetero_guest.csv", DATA / "default_credit_hetero_host.csv"
    if not (guest.exists() and host.exists()):
        return None
    g = pd.read_csv(guest)
    h = pd.read_csv(host)
    joined = g.merge(h, on="id", suffixes=("", "_host"))
    bank = joined[[f"x{i}" for i in range(13)]]
    holder = joined[[f"x{i}_host" for i in range(10)]].to_numpy(dtype=np.float64)
    test = (joined["id"] % 5 == 0).to_numpy()
    return bank, holder, joined["y"].to_numpy(dtype=np.int64), test


def run_backend(
    backend: str,
    epochs: int,
    data: tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray],
    params: dict[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    bank, holder, y, test = data
    train = ~test
    X_train = bank[train].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        # two views of one holder table: rows 0..23,999 train, then the test rows for scoring
        table = np.vstack([holder[train], holder[test]])
        names = [f"host_x{i}" for i in range(holder.shape[1])]
        peers, _servicers = local_holders(
            {"host": (table, names)},
            Path(tmp),
            peer_class=CountingPeer,
            workers=args.workers,
        )
        alignment_rows = np.zeros(len(table), dtype=bool)
        alignment_rows[: int(train.sum())] = True
        clf = VerticalLogisticRegression(
            backend=backend,
            key_bits=args.key_bits,
            workers=args.workers,
            **dict(params, max_iter=epochs),
        )
        stamps: list[float] = []
        started = time.perf_counter()
        clf.fit(
            X_train,
            y[train],
            holders=peers,
            alignment_rows=alignment_rows,
            on_epoch=lambda e, loss: stamps.append(time.perf_counter()),
        )
        total = time.perf_counter() - started
        peer = peers["host"]
        sent, received = peer.sent, peer.received
        test_rows = np.arange(int(train.sum()), len(table))
        p = clf.predict_proba(bank[test].reset_index(drop=True), holders=peers, rows=test_rows)
        score_bytes = (peer.sent - sent) + (peer.received - received)
        holder_weights = _servicers["host"].model("bank", clf.job_id_).weights
    epoch_times = np.diff([started, *stamps])
    ref = PlaintextLogisticRegression(LinearParams(**dict(params, max_iter=epochs)))
    both = np.column_stack([bank.to_numpy(dtype=np.float64), holder])
    ref.fit(both[train], y[train])
    coef = np.concatenate([clf.coef_[0], holder_weights])
    return {
        "backend": backend,
        "epochs": int(clf.n_iter_),
        "train_s": round(total, 2),
        "setup_plus_epoch1_s": round(float(epoch_times[0]), 3),
        "epoch_s_median": round(
            float(np.median(epoch_times[1:] if epochs > 1 else epoch_times)), 3
        ),
        "auc_federated": round(roc_auc(y[test], p[:, 1]), 5),
        "auc_centralised": round(roc_auc(y[test], ref.predict_proba(both[test])[:, 1]), 5),
        "max_abs_coef_diff": float(np.abs(coef - ref.coef_[0]).max()),
        "bank_sent_mb": round(sent / 1e6, 2),
        "holder_sent_mb": round(received / 1e6, 2),
        "scoring_kb_6000_rows": round(score_bytes / 1e3, 1),
        "bank_encrypt_s": round(clf.stats_.get("encrypt_s", 0.0), 2),
        "bank_decrypt_s": round(clf.stats_.get("decrypt_s", 0.0), 3),
    }


def sklearn_auc(data: tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]) -> float:
    """Context for the AUCs: scikit-learn's LogisticRegression fitted to convergence."""
    from sklearn.linear_model import LogisticRegression

    bank, holder, y, test = data
    both = np.column_stack([bank.to_numpy(dtype=np.float64), holder])
    model = LogisticRegression(max_iter=1000).fit(both[~test], y[~test])
    return round(roc_auc(y[test], model.predict_proba(both[test])[:, 1]), 5)


def compare_ckks_methods(rows: int = 24_000, features: int = 10) -> dict[str, float]:
    """Three ways for a holder to get X_kᵀ[[r]] from residuals in 4,096-slot chunks (seconds).

    ``products_then_one_slot_sum`` is what ``CkksHolder`` does: plaintext products per chunk,
    summed over chunks, then one rotation sum per feature. ``dot_per_chunk`` rotates every
    chunk. ``matmul`` (TenSEAL's vector-matrix product) is timed on one chunk only: it is
    orders of magnitude slower.
    """
    import tenseal as ts

    ctx = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60]
    )
    ctx.global_scale = 2.0**40
    ctx.generate_galois_keys()
    slots = 4096
    n_chunks = -(-rows // slots)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_chunks * slots, features))
    encs = [ts.ckks_vector(ctx, rng.uniform(-1, 1, slots).tolist()) for _ in range(n_chunks)]
    out = {}
    t = time.perf_counter()
    for j in range(features):
        acc = None
        for c, enc in enumerate(encs):
            part = enc * X[c * slots : (c + 1) * slots, j].tolist()
            acc = part if acc is None else acc + part
        assert acc is not None
        acc.sum()
    out[f"products_then_one_slot_sum_{rows}_rows"] = time.perf_counter() - t
    t = time.perf_counter()
    for j in range(features):
        acc = None
        for c, enc in enumerate(encs):
            part = enc.dot(X[c * slots : (c + 1) * slots, j].tolist())
            acc = part if acc is None else acc + part
    out[f"dot_per_chunk_{rows}_rows"] = time.perf_counter() - t
    t = time.perf_counter()
    encs[0].matmul(X[:slots].tolist())
    out[f"matmul_one_chunk_{slots}_rows"] = time.perf_counter() - t
    return {k: round(v, 3) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--paillier-epochs", type=int, default=5)
    parser.add_argument("--ckks-epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backends", default="ckks,paillier")
    parser.add_argument("--compare-ckks-methods", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments/results/bench_linear.json")
    args = parser.parse_args(argv)
    data = load()
    if data is None:
        print(f"skipped: default_credit hetero files not found under {DATA}")
        return 0
    params = dict(learning_rate=args.learning_rate, alpha=1e-4, tol=None, random_state=0)
    rows = []
    for backend in args.backends.split(","):
        epochs = args.ckks_epochs if backend == "ckks" else args.paillier_epochs
        print(f"running {backend} ({epochs} epochs)...", flush=True)
        rows.append(run_backend(backend, epochs, data, params, args))
    result: dict[str, Any] = {
        "command": " ".join(
            ["python experiments/bench_linear.py", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": round(os.getloadavg()[0], 2),
        },
        "data": {
            "train_rows": int((~data[3]).sum()),
            "test_rows": int(data[3].sum()),
            "bank_features": 13,
            "holder_features": 10,
        },
        "params": dict(params, key_bits=args.key_bits, workers=args.workers, batch="full"),
        "results": rows,
    }
    result["auc_sklearn_lbfgs_converged"] = sklearn_auc(data)
    print(
        f"scikit-learn LogisticRegression (lbfgs, converged): {result['auc_sklearn_lbfgs_converged']}"
    )
    if args.compare_ckks_methods:
        print("timing CKKS gradient methods...", flush=True)
        result["ckks_gradient_methods_10_features_s"] = compare_ckks_methods()
    header = [
        "backend",
        "epochs",
        "train_s",
        "epoch_s_median",
        "auc_federated",
        "auc_centralised",
        "max_abs_coef_diff",
        "bank_sent_mb",
        "holder_sent_mb",
        "scoring_kb_6000_rows",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row[h]:.2e}" if h == "max_abs_coef_diff" else str(row[h]) for h in header]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if "ckks_gradient_methods_10_features_s" in result:
        print(json.dumps(result["ckks_gradient_methods_10_features_s"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(f"Command: `{result['command']}`\n\n{table}\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
