"""Benchmark serving scorecard and LR versions: ``Score`` p50/p99 and ``ScoreBatch`` rate.

Three node processes (bank, tax, utility) on loopback with mutual TLS, built as ``xinyidai
demo`` builds them; a vertical LR and a federated scorecard trained over them (2048-bit
Paillier), registered in a temporary MLflow store and served by version number. ``Score``:
sequential requests for authorised enterprises of the alignment from one client (persistent
connection), after a warm-up. ``ScoreBatch``: a list of authorised codes (each one checked at
every holder with ``CheckAuthorisation`` before the scoring round). Target (issue 12): Score
p99 <= 20 ms.

    python experiments/bench_scoring_linear.py --out experiments/results/bench_scoring_linear.json

With ``--out`` a Markdown table goes next to the JSON (same name, ``.md``), with the command and
the load average before and after the run (the figures are only as good as the machine was idle).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

TARGET_P99_MS = 20.0


def run(
    *, enterprises: int = 3000, requests: int = 300, batch: int = 256, seed: int = 5
) -> dict[str, Any]:
    from federation.audit import AuditLog
    from federation.pki import load_platform_public_key
    from federation.transport.base import new_meta
    from parties.bank.alignment import align
    from parties.bank.linear import train_logistic
    from parties.bank.scorecard import train_scorecard
    from parties.bank.table import BankTable
    from parties.config import load_node_config
    from parties.consent import ConsentRegistry
    from parties.node import holder_peers, operator_client
    from protos import bank_pb2
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes
    from xinyidai.tracking import TrackingConfig
    from xinyidai.tracking.register import register_scorecard

    tmp = tempfile.TemporaryDirectory(prefix="xinyidai-bench-linear-")
    workdir = Path(tmp.name)
    tracking = TrackingConfig.resolve(directory=workdir / "mlflow")
    os.environ["MLFLOW_TRACKING_URI"] = tracking.tracking_uri
    fed, _ = build_federation(
        workdir / "fed", enterprises=enterprises, seed=seed, deadline_s=120.0, workers=2
    )
    out: dict[str, Any] = {"enterprises": enterprises, "requests": requests, "models": {}}
    try:
        start_nodes(fed)
        bank = load_node_config(fed.configs["bank"])
        audit = AuditLog(bank.resolved_audit_url, "bank")
        with holder_peers(bank, audit=audit) as peers:
            alignment = align(bank, peers, job_id="bl-align", salt=b"bench-l", min_overlap=0.2)
        with (
            holder_peers(bank, audit=audit, service="WoeHolder") as woe,
            holder_peers(bank, audit=audit, service="LinearHolder") as linear,
            holder_peers(bank, audit=audit, service="ScorecardHolder") as points,
        ):
            lr, lr_report = train_logistic(
                bank,
                alignment,
                holders=linear,
                params={"key_bits": 2048, "workers": 2, "max_iter": 3, "standardize": True},
                job_id="bl-lr",
            )
            card, card_report = train_scorecard(
                bank,
                alignment,
                woe_holders=woe,
                linear_holders=linear,
                points_holders=points,
                params={"key_bits": 2048, "workers": 2, "max_iter": 3},
                job_id="bl-sc",
            )
        table = BankTable.load(bank)
        aligned = [table.codes[i] for i in alignment.bank_rows]
        active: set[str] | None = None
        for holder in ("tax", "utility"):
            node = fed.node_dir(holder)
            key = load_platform_public_key(node / "platform_signing.pub")
            with ConsentRegistry.for_node_dir(node, key, node_id=holder) as reg:
                got = {r.auth.uscc for r in reg.list(bank_id="bank") if r.status == "active"}
            active = got if active is None else active & got
        codes = [c for c in aligned if c in (active or set())]
        for name, model, report in (
            ("credit-lr-bench", lr, lr_report),
            ("credit-scorecard-bench", card, card_report),
        ):
            version = register_scorecard(
                bank, model, report, datasets=[], consent={}, model_name=name, tracking=tracking
            ).version
            with operator_client(bank, deadline_s=600.0) as client:

                def score(code: str, name: str = name, version: Any = version) -> Any:
                    return client.call(
                        "Score",
                        bank_pb2.ScoreRequest(
                            meta=new_meta("financing"),
                            uscc=code,
                            model_name=name,
                            model_ref=str(version),
                        ),
                    )

                for code in codes[:5]:
                    score(code)
                lat = []
                for i in range(requests):
                    t = time.perf_counter()
                    reply = score(codes[i % len(codes)])
                    lat.append((time.perf_counter() - t) * 1000)
                    if not reply.scored:
                        raise RuntimeError(f"{reply.uscc} not scored: {reply.missing_sources}")
                t = time.perf_counter()
                whole = client.call(
                    "ScoreBatch",
                    bank_pb2.ScoreBatchRequest(
                        meta=new_meta("financing"),
                        model_name=name,
                        model_ref=str(version),
                        usccs=codes[:batch],
                    ),
                )
                batch_s = time.perf_counter() - t
            arr = np.asarray(lat)
            out["models"][name] = {
                "family": reply.model_family,
                "p50_ms": float(np.percentile(arr, 50)),
                "p99_ms": float(np.percentile(arr, 99)),
                "max_ms": float(arr.max()),
                "batch_candidates": int(whole.candidates),
                "batch_scored": int(whole.scored),
                "batch_per_second": whole.candidates / batch_s,
                "meets_p99_target": bool(np.percentile(arr, 99) <= TARGET_P99_MS),
            }
            print(name, out["models"][name], flush=True)
        audit.close()
    finally:
        stop_nodes(fed)
        tmp.cleanup()
    return out


def table(result: dict[str, Any], *, command: str) -> str:
    """The result as Markdown: one row per model, the target, the command and the load."""
    lines = [
        "# Serving scorecard and LR versions (issue 12: Score p99 <= 20 ms)",
        "",
        f"`{command}`  ",
        f"{result['enterprises']} enterprises, {result['requests']} sequential Score requests per "
        f"model; load average (1 min) {result['load_before']:.2f} before, "
        f"{result['load_after']:.2f} after.",
        "",
        "| model | family | Score p50 (ms) | p99 (ms) | max (ms) | p99 <= 20 ms | "
        "ScoreBatch enterprises/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in result["models"].items():
        lines.append(
            f"| {name} | {m['family']} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
            f"{m['max_ms']:.1f} | {'yes' if m['meets_p99_target'] else 'no'} | "
            f"{m['batch_per_second']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--enterprises", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    result = run(enterprises=args.enterprises, requests=args.requests, batch=args.batch)
    result["load_before"], result["load_after"] = load_before, os.getloadavg()[0]
    text = json.dumps(result, indent=1)
    print(text)
    command = "python experiments/bench_scoring_linear.py " + " ".join(sys.argv[1:])
    markdown = table(result, command=command.strip())
    print(markdown)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
        args.out.with_suffix(".md").write_text(markdown, encoding="utf-8")


if __name__ == "__main__":
    main()
