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

``--workload onehot`` needs no data files: the shape of issue 13's CKKS complaint (565 training
rows, one holder with 60 one-hot columns: 10 categorical variables of 6 levels; the bank 3
numeric columns; 240 test rows), where CKKS used to return one ciphertext per feature:

    python experiments/bench_linear.py --workload onehot --key-bits 2048 --workers 2 \\
        --paillier-epochs 15 --ckks-epochs 15 --out experiments/results/bench_linear_onehot.json

``--write-experiment DIR`` writes the same shape as CSVs and two experiment configs (CKKS,
Paillier) for ``xinyidai experiment run`` across node processes (gRPC + mTLS).
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


def synthetic_onehot(
    n_train: int = 565, n_test: int = 240, variables: int = 10, levels: int = 6, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Issue 13's workload without its data: a holder with ``variables × levels`` one-hot
    columns (every level present in the training rows), the bank with 3 numeric columns."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    codes = rng.integers(0, levels, size=(n, variables))
    codes[:levels] = np.arange(levels)[:, None]  # every level occurs among the training rows
    holder = np.zeros((n, variables * levels))
    for v in range(variables):
        holder[np.arange(n), v * levels + codes[:, v]] = 1.0
    bank = pd.DataFrame(rng.normal(size=(n, 3)), columns=["b0", "b1", "b2"])
    effects = rng.normal(scale=0.6, size=variables * levels)
    u = holder @ effects + bank.to_numpy() @ np.array([0.8, -0.5, 0.3]) - 1.0
    y = (rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-u))).astype(np.int64)
    test = np.zeros(n, dtype=bool)
    test[n_train:] = True
    return bank, holder, y, test


def write_experiment(directory: Path, *, epochs: int = 15, workers: int = 2) -> list[Path]:
    """Issue 13's shape as an experiment across node processes: ``bank.csv`` (id, y, 3
    numeric columns), ``tax.csv`` (id, 60 one-hot columns), 706 ids (test: id % 5 == 0, so
    565 training rows) and one config per backend; run them with ``xinyidai experiment run
    DIR/onehot_ckks.yaml --out ... --no-track`` (the result has per-node bytes)."""
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n = 706
    ids = np.arange(1, n + 1)
    codes = rng.integers(0, 6, size=(n, 10))
    codes[:6] = np.arange(6)[:, None]
    X = np.zeros((n, 60))
    for v in range(10):
        X[np.arange(n), v * 6 + codes[:, v]] = 1
    bank = rng.normal(size=(n, 3))
    u = X @ rng.normal(scale=0.6, size=60) + bank @ [0.8, -0.5, 0.3] - 1.0
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-u))).astype(int)
    columns = {"id": ids, "y": y, "b0": bank[:, 0], "b1": bank[:, 1], "b2": bank[:, 2]}
    pd.DataFrame(columns).to_csv(directory / "bank.csv", index=False)
    tax = pd.DataFrame(X.astype(int), columns=[f"c{v}_{k}" for v in range(10) for k in range(6)])
    tax.insert(0, "id", ids)
    tax.to_csv(directory / "tax.csv", index=False)
    paths = []
    for backend in ("ckks", "paillier"):
        plain = {"id_column": "id", "id_kind": "plain"}
        config = {
            "name": f"onehot-{backend}",
            "bank": {"path": "bank.csv", **plain, "label_column": "y"},
            "holders": {"tax": {"path": "tax.csv", **plain, "category": "tax"}},
            "split": {"kind": "id_mod", "modulus": 5, "remainder": 0},
            "model": {
                "type": "logistic",
                "backend": backend,
                "max_iter": epochs,
                "learning_rate": 1.0,
                "tol": None,
            },
            "crypto": {"key_bits": 2048, "workers": workers},
        }
        paths.append(directory / f"onehot_{backend}.yaml")
        paths[-1].write_text(yaml.safe_dump(config, sort_keys=False))
    return paths


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
        n_test = int(test.sum())
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
        "scoring_kb": round(score_bytes / 1e3, 1),
        "scored_rows": n_test,
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


def compare_ckks_methods(shapes: tuple[tuple[int, int], ...] = ((24_000, 10), (565, 60))) -> dict:
    """Two ways for a holder to get X_kᵀ[[r]] (seconds per gradient, ciphertexts returned).

    ``per_feature_slot_sums`` is what ``CkksHolder`` did before issue 13: per feature, plaintext
    products per 4,096-row chunk, summed, one rotation sum over all slots (12 rotations), a
    masked ciphertext per feature. ``packed`` is what it does now
    (``ckks.packed_masked_products``): every feature in one ciphertext, ~2·√d + log2(rows/d)
    rotations. (An earlier run timed TenSEAL's ``dot`` per chunk, 2.15 s, and vector-matrix
    ``matmul``, 68.9 s for one 4,096-row chunk, at 24,000 × 10: see docs/linear.md.)
    """
    import tenseal as ts

    from federation.crypto import ckks

    ctx = ckks.make_context(8192, (60, 40, 40, 60), 40)
    public = ckks.load_public_context(ckks.public_bytes(ctx))
    slots = 4096
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    for rows, features in shapes:
        X = rng.normal(size=(rows, features))
        r = rng.uniform(-1, 1, rows)
        shape = f"{rows}x{features}"
        n_chunks = -(-rows // slots)
        padded = np.zeros((n_chunks * slots, features))
        padded[:rows] = X
        encs = [
            ts.ckks_vector(ctx, v.tolist())
            for v in np.array_split(np.pad(r, (0, n_chunks * slots - rows)), n_chunks)
        ]
        t = time.perf_counter()
        sizes = 0
        for j in range(features):
            acc = encs[0] * padded[:slots, j].tolist()
            for c in range(1, n_chunks):
                acc = acc + encs[c] * padded[c * slots : (c + 1) * slots, j].tolist()
            total = acc.sum()
            total.add_(ts.ckks_vector(ctx, [1.0]))
            sizes += len(total.serialize())
        out[f"per_feature_slot_sums_{shape}_s"] = round(time.perf_counter() - t, 3)
        out[f"per_feature_slot_sums_{shape}_bytes"] = sizes
        items = ckks.encrypt_blocks(ctx, r, slots)
        t = time.perf_counter()
        packed, masks = ckks.packed_masked_products(public, items, X, mask_bits=36)
        out[f"packed_{shape}_s"] = round(time.perf_counter() - t, 3)
        out[f"packed_{shape}_bytes"] = len(packed)
        err = np.abs(ckks.decrypt_slots(ctx, packed, features) - masks - X.T @ r).max()
        out[f"packed_{shape}_max_abs_error"] = float(err)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--key-bits", type=int, default=2048)
    parser.add_argument("--paillier-epochs", type=int, default=5)
    parser.add_argument("--ckks-epochs", type=int, default=30)
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--backends", default="ckks,paillier")
    parser.add_argument("--compare-ckks-methods", action="store_true")
    parser.add_argument(
        "--workload", choices=["default_credit", "onehot"], default="default_credit"
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--write-experiment",
        type=Path,
        default=None,
        metavar="DIR",
        help="write issue 13's one-hot job as node-process experiment configs and stop",
    )
    args = parser.parse_args(argv)
    if args.write_experiment is not None:
        for path in write_experiment(args.write_experiment, workers=args.workers):
            print(f"wrote {path}")
        return 0
    if args.out is None:
        name = (
            "bench_linear.json" if args.workload == "default_credit" else "bench_linear_onehot.json"
        )
        args.out = ROOT / "experiments" / "results" / name
    data = synthetic_onehot() if args.workload == "onehot" else load()
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
            "workload": args.workload,
            "train_rows": int((~data[3]).sum()),
            "test_rows": int(data[3].sum()),
            "bank_features": int(data[0].shape[1]),
            "holder_features": int(data[1].shape[1]),
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
        result["ckks_gradient_methods"] = compare_ckks_methods()
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
        "scoring_kb",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"{row[h]:.2e}" if h == "max_abs_coef_diff" else str(row[h]) for h in header]
        lines.append("| " + " | ".join(cells) + " |")
    table = "\n".join(lines)
    print(table)
    if "ckks_gradient_methods" in result:
        print(json.dumps(result["ckks_gradient_methods"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(f"Command: `{result['command']}`\n\n{table}\n")
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
