"""The demo's federated jobs, as the bank's operator over the running nodes: align, train
SecureBoost and a scorecard, register and promote the model, and score through the bank node.

Why each job catches ``XinyidaiError`` and prints it: the demo is a walk-through, so a refused
or failed step is shown (and makes the demo exit non-zero) instead of hiding the steps after it
behind a traceback.
"""

from __future__ import annotations

import json
import time
import warnings
from types import TracebackType
from typing import Any

from rich.console import Console

from federation.audit import AuditLog
from federation.errors import XinyidaiError
from federation.transport.base import new_meta
from parties.config import NodeConfig
from xinyidai.launcher import Federation

DEMO_PARAMS = {"n_trees": 5, "max_depth": 3, "learning_rate": 0.3, "random_state": 0}
PSI_SALT = b"xinyidai-demo-federation"


class _Step:
    """One demo step: times it into ``timings[timing]`` when it succeeds; a ``XinyidaiError``
    is printed as "<what> failed" and swallowed (``failed`` is then True), any other error
    propagates. The caller returns early on ``failed``."""

    def __init__(self, console: Console, timings: dict[str, float], *, what: str, timing: str):
        self.console = console
        self.timings = timings
        self.what = what
        self.timing = timing
        self.failed = False
        self._t0 = 0.0

    def __enter__(self) -> _Step:
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            self.timings[self.timing] = time.perf_counter() - self._t0
            return False
        if isinstance(exc, XinyidaiError):
            self.console.print(f"  [red]{self.what} failed:[/] {exc}")
            self.failed = True
            return True
        return False


def train_in_federation(
    console: Console,
    bank_cfg: NodeConfig,
    audit: AuditLog,
    timings: dict[str, float],
    *,
    trees: int,
    workers: int,
) -> tuple[Any, Any] | None:
    """Align (PSI) → train (SecureBoost) → evaluate, as the bank's operator; (model, report)."""
    alignment = _align(console, bank_cfg, audit, timings)
    if alignment is None:
        return None
    trained = _train_secureboost(
        console, bank_cfg, audit, alignment, timings, trees=trees, workers=workers
    )
    if trained is None:
        return None
    train_scorecard_in_federation(console, bank_cfg, audit, alignment, timings)
    return trained


def _align(
    console: Console, bank_cfg: NodeConfig, audit: AuditLog, timings: dict[str, float]
) -> Any | None:
    from parties.bank.alignment import align
    from parties.node import holder_peers

    console.print("\n[bold]Alignment[/] (private set intersection on USCCs, bank ∩ tax ∩ utility)")
    step = _Step(console, timings, what="alignment", timing="align bank ∩ tax ∩ utility (PSI)")
    with step, holder_peers(bank_cfg, audit=audit) as peers:
        alignment = align(
            bank_cfg,
            peers,
            job_id="demo-align",
            salt=PSI_SALT,
            min_overlap=0.2,
            audit=audit,
            progress=lambda m: console.print(f"  {m}", highlight=False),
        )
    if step.failed:
        return None
    console.print(
        f"  bank {alignment.bank_size} applicants; common set {alignment.size} enterprises "
        f"(same rows, same order at all three nodes)",
        highlight=False,
    )
    return alignment


def _train_secureboost(
    console: Console,
    bank_cfg: NodeConfig,
    audit: AuditLog,
    alignment: Any,
    timings: dict[str, float],
    *,
    trees: int,
    workers: int,
) -> tuple[Any, Any] | None:
    from parties.bank.secureboost import train_secureboost
    from parties.node import holder_peers

    params = {**DEMO_PARAMS, "n_trees": trees}
    console.print(
        f"\n[bold]Vertical SecureBoost[/] ({trees} trees, depth {params['max_depth']}, "
        "2048-bit Paillier; the first tree is bank-only)"
    )
    t1 = time.perf_counter()
    last = [t1]

    def tick(message: str) -> None:
        now = time.perf_counter()
        console.print(f"  {message:14} {now - last[0]:6.2f} s", highlight=False)
        last[0] = now

    # The MLflow run opens now, so its duration is the training time (registration fills it in).
    from xinyidai.tracking import TrackingConfig
    from xinyidai.tracking.record import fail_training_run, open_training_run

    tracking = TrackingConfig.resolve(bank_cfg.node_dir.parent / "mlflow")  # WORKDIR/mlflow
    job_id = f"{alignment.job_id}-sb"
    run_id = open_training_run(job_id, tracking=tracking)
    step = _Step(console, timings, what="training", timing="train + evaluate SecureBoost")
    with step, holder_peers(bank_cfg, audit=audit, service="SecureBoostHolder") as peers:
        clf, report = train_secureboost(
            bank_cfg,
            alignment,
            holders=peers,
            params={**params, "key_bits": 2048, "workers": workers},
            job_id=job_id,
            audit=audit,
            progress=tick,
        )
    if step.failed:
        fail_training_run(run_id, tracking=tracking)
        return None
    owners = ", ".join(f"{k} {v}" for k, v in sorted(report.split_owners.items()))
    console.print(
        f"  {report.n_train} training / {report.n_test} test rows (stratified 70/30); "
        f"splits won: {owners}",
        highlight=False,
    )
    console.print(
        f"  test AUC  federated [bold green]{report.auc:.4f}[/] (KS {report.ks:.3f})   "
        f"bank-only LightGBM {report.baseline_auc:.4f} (KS {report.baseline_ks:.3f})",
        highlight=False,
    )
    return clf, report


def train_scorecard_in_federation(
    console: Console, bank_cfg: NodeConfig, audit: AuditLog, alignment: Any, timings: dict
) -> bool:
    """Federated WOE/IV → vertical LR on WOE (2048-bit Paillier) → points, on the same rows."""
    from parties.bank.scorecard import comparison_lines, scorecard_over_nodes

    console.print(
        "\n[bold]Scorecard[/] (federated WOE binning → vertical logistic regression → points; "
        "each holder keeps its own points table)"
    )
    step = _Step(console, timings, what="scorecard", timing="train + evaluate scorecard")
    with step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, card = scorecard_over_nodes(
            bank_cfg,
            alignment,
            params={"key_bits": 2048, "workers": 2},
            audit=audit,
            job_id="demo-scorecard",
        )
    if step.failed:
        return False
    for note in caught:
        console.print(f"  note: {note.message}", highlight=False)
    for line in comparison_lines(card):
        console.print(f"  {line}", highlight=False)
    return True


def register_and_score(
    console: Console,
    fed: Federation,
    bank_cfg: NodeConfig,
    audit: AuditLog,
    trained: tuple[Any, Any],
    timings: dict[str, float],
) -> tuple[str, str] | None:
    """Register the model (MLflow), promote it to champion, then serve scores through the
    bank's scoring service: a whitelist for a region, and one enterprise under its
    authorisation. Returns (model name, version) for the lineage report."""
    run = _register_and_promote(console, fed, bank_cfg, audit, trained, timings)
    if run is None:
        return None
    if not _score(console, bank_cfg, run.model_name, timings):
        return None
    return run.model_name, str(run.version)


def _register_and_promote(
    console: Console,
    fed: Federation,
    bank_cfg: NodeConfig,
    audit: AuditLog,
    trained: tuple[Any, Any],
    timings: dict[str, float],
) -> Any | None:
    """The ``TrackedRun`` of the new version, now champion (None: it failed, as printed)."""
    from parties.node import holder_peers
    from xinyidai.tracking import TrackingConfig, promote
    from xinyidai.tracking.register import party_evidence, register_secureboost

    clf, report = trained
    tracking = TrackingConfig.resolve(fed.workdir / "mlflow")
    console.print("\n[bold]Registry[/] (MLflow: run, each party's own data digest, model version)")
    with _Step(console, timings, what="registration", timing="register + promote (MLflow)") as step:
        with holder_peers(bank_cfg, audit=audit) as peers:
            datasets, consent = party_evidence(
                bank_cfg, peers, job_id=report.job_id, alignment_id=report.alignment_id
            )
        run = register_secureboost(
            bank_cfg,
            clf,
            report,
            datasets=datasets,
            consent=consent,
            config_text=json.dumps({**DEMO_PARAMS, "n_trees": len(clf.trees_)}, indent=1),
            config_name="demo-params.json",
            tracking=tracking,
            audit=audit,
        )
        promote(
            run.model_name,
            str(run.version),
            by="demo-operator",
            reason="demo",
            audit=audit,
            tracking=tracking,
        )
    if step.failed:
        return None
    console.print(
        f"  models:/{run.model_name}/{run.version} registered and promoted to [bold]champion[/] "
        f"(store {tracking.describe()})",
        highlight=False,
    )
    return run


def _score(
    console: Console, bank_cfg: NodeConfig, model_name: str, timings: dict[str, float]
) -> bool:
    """A region's whitelist (top 3), then the first of them alone, through the bank node."""
    from parties.node import operator_client
    from protos import bank_pb2

    console.print("\n[bold]Scoring service[/] (usable but invisible: each holder checks consent)")
    step = _Step(console, timings, what="scoring", timing="score a region + one enterprise")
    with step, operator_client(bank_cfg, deadline_s=60) as ops:
        batch = ops.call(
            "ScoreBatch",
            bank_pb2.ScoreBatchRequest(
                meta=new_meta(job_id="demo-score"),
                model_name=model_name,
                model_ref="champion",
                region="51",
                threshold=0.0,
                limit=3,
            ),
        )
        excluded = ", ".join(f"{k} {v}" for k, v in sorted(batch.excluded.items()))
        console.print(
            f"  whitelist for region 51…: {batch.scored} of {batch.candidates} applicants "
            f"scored ({excluded or 'none excluded'}); serving mode {batch.serving_mode or '?'}; "
            "top 3 (= marks a tie, broken by USCC):",
            highlight=False,
        )
        for e in batch.enterprises:
            console.print(
                f"    {e.uscc}  {e.points:6.1f} points{' =' if e.tie else '  '}  "
                f"PD {e.probability_default:.3f}",
                highlight=False,
            )
        if batch.enterprises:
            one = ops.call(
                "Score",
                bank_pb2.ScoreRequest(
                    meta=new_meta(job_id="demo-score"),
                    uscc=batch.enterprises[0].uscc,
                    model_name=model_name,
                    model_ref="champion",
                ),
            )
            console.print(
                f"  Score {one.uscc}: PD {one.probability_default:.3f}, "
                f"{one.points:.0f} points, {one.model_name} v{one.model_version} "
                f"({one.serving_mode or '?'} serving), "
                f"reasons: {', '.join(one.reason_categories) or '- (at or above the base)'}",
                highlight=False,
            )
    return not step.failed
