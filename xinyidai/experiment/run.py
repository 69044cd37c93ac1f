"""The run: build the federation, start its nodes, align, train, register, evaluate, stop.

Why the nodes are stopped in a ``finally`` and measured only afterwards: a bad table or a refused
job must not leave node processes serving, and each node writes its CPU, bytes and memory use
when it exits; the centralised comparison runs after that, so it is not counted as the
bank's work.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from federation.files import write_atomic
from models.linear.backends import CryptoOptions, crypto_parameters
from xinyidai.experiment.build import build_experiment
from xinyidai.experiment.check import ExperimentCheck, check_experiment
from xinyidai.experiment.compare import centralised_auc, centralised_linear
from xinyidai.experiment.config import (
    ExperimentConfig,
    LogisticModelConfig,
    ScorecardModelConfig,
    SecureBoostModelConfig,
)
from xinyidai.experiment.jobs import (
    Progress,
    align_parties,
    register_model,
    train_model,
    training_job_id,
)


def _quiet(_: str) -> None:
    pass


@dataclass
class ExperimentResult:
    data: dict[str, Any]

    def write(self, path: Path) -> None:
        write_atomic(path, (json.dumps(self.data, indent=1) + "\n").encode(), mode=0o644)


def run_experiment(
    config: ExperimentConfig,
    *,
    config_sha256: str,
    workdir: Path,
    progress: Progress = _quiet,
    on_tree: Callable[[int], None] | None = None,
    on_started: Callable[[Any], None] | None = None,
    tracking: Any = None,
    track: bool = True,
    config_text: str = "",
    on_epoch: Callable[[int, float], None] | None = None,
    checked: ExperimentCheck | None = None,
    ready_key: bool = True,
) -> ExperimentResult:
    """Build the federation, start its nodes, align, train, evaluate, stop; the result.

    The model type picks the training: ``secureboost`` (trees; ``on_tree``), ``scorecard``
    (federated WOE/IV → vertical LR on WOE → points; ``on_epoch``) or ``logistic`` (vertical
    LR on the raw features). With ``track`` the job is logged to MLflow and its model
    registered (``tracking``: a ``xinyidai.tracking.TrackingConfig``; default the
    project-local store or ``MLFLOW_TRACKING_URI``). ``on_started(federation)`` runs once the
    nodes serve (tests use it to restart a holder).

    Every party's file is checked first (``check_experiment``; ``checked`` when the caller ran
    it already): any problem stops the run before a node starts.

    ``ready_key`` (SecureBoost): start the bank's ready key with the nodes (``_ReadyKey``), so
    its key pair and obfuscators are made in the idle time before training; False: the job
    makes its key at the start (benchmarks' baseline).
    """
    from federation.audit import AuditLog
    from federation.crypto.paillier import prestart_workers
    from federation.usage import process_usage
    from parties.config import load_node_config
    from xinyidai.launcher import stop_nodes
    from xinyidai.tracking.record import fail_training_run, open_training_run

    if checked is None:
        checked = check_experiment(config)
    checked.raise_if_problems(f"experiment {config.name!r}")
    config = checked.applied(config)
    if track:
        tracking = experiment_tracking(config, tracking)
    before = process_usage(reaped_children=False)  # reaped children would be node processes
    prestart_workers()  # this process does the bank's Paillier work
    fed = build_experiment(config, workdir)
    bank_cfg = load_node_config(fed.configs["bank"])
    progress(f"nodes: {', '.join(fed.configs)} (each its own process, mTLS on loopback)")
    t0 = time.perf_counter()
    codes: dict[str, int] = {}
    ready = (  # made while nodes start and the parties align
        _ReadyKey.start(config, bank_cfg, checked)
        if ready_key
        else _ReadyKey(None, owned=False, capacity=0)
    )
    try:  # stop every node that did start, whatever fails (a bad table, a refused job...)
        _start(fed, t0, progress=progress, on_started=on_started)
        audit = AuditLog(bank_cfg.resolved_audit_url, bank_cfg.node_id)
        alignment, align_seconds = align_parties(config, bank_cfg, audit=audit, progress=progress)
        # The MLflow run opens as training starts, so its duration is the training time
        # (registration fills it in; a failed job's run is marked FAILED).
        run_id = open_training_run(training_job_id(config), tracking=tracking) if track else None
        try:
            model, report = train_model(
                config,
                bank_cfg,
                alignment,
                audit=audit,
                progress=progress,
                on_tree=on_tree,
                on_epoch=on_epoch,
            )
        except BaseException:
            if run_id is not None:
                fail_training_run(run_id, tracking=tracking)
            raise
        ready.stop()  # the run's one job is done: make no next key while it evaluates
        tracked = None
        if track:
            tracked = register_model(
                config,
                bank_cfg,
                model,
                report,
                audit=audit,
                progress=progress,
                tracking=tracking,
                config_text=config_text,
            )
        train_codes, test_codes = _split_codes(bank_cfg, alignment, report)
        audit.close()
    finally:
        ready.stop()
        codes = stop_nodes(fed)
    nodes = _node_usage(fed, codes, before)
    rows, m = (train_codes, test_codes), config.model
    if isinstance(m, SecureBoostModelConfig):
        specific = _secureboost_results(config, model, report, rows, align_seconds, progress)
        specific["ready_key"] = rk = ready.result(model)
        if rk["started_with_nodes"] or rk["key_used"]:
            progress(
                f"bank's ready key: {rk['mode']} ({rk['obfuscators_at_start']:,} of "
                f"{rk['pool_capacity']:,} obfuscators made before training)"
            )
    else:
        specific = _linear_results(config, m, report, rows, align_seconds, progress)
        specific.update(_feature_report(model))
    data = {
        **_common_results(config, config_sha256, alignment, report),
        **specific,
        "job_id": report.job_id,
        "mlflow": None if tracked is None else _mlflow_fields(tracked, tracking.experiment),
        "nodes": nodes,
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "workdir": str(workdir),
    }
    return ExperimentResult(data)


class _ReadyKey:
    """The bank's ready key for the run's SecureBoost job (``bank_key_reserve``), started with
    the nodes: the key pair and its obfuscators are made at low priority while the nodes start
    and the parties align, so the job starts warm as far as that idle time allowed.

    Sized to the job (aligned rows at most × trees with holders), so nothing is made to be
    dropped; stopped once the job is done. A reserve the caller started already (a benchmark's
    "warm" row, a notebook) is used as it is and left running."""

    def __init__(self, reserve: Any, *, owned: bool, capacity: int):
        self.reserve = reserve
        self.owned = owned  # started here (stopped here), not the caller's
        self.made_here = owned
        self.capacity = capacity

    @classmethod
    def start(cls, config: ExperimentConfig, bank_cfg: Any, checked: ExperimentCheck) -> _ReadyKey:
        from math import ceil

        from federation.crypto.reserve import running_reserve
        from parties.bank.secureboost import bank_key_reserve

        m = config.model
        bits = config.crypto.key_bits
        if not isinstance(m, SecureBoostModelConfig):
            return cls(None, owned=False, capacity=0)
        existing = running_reserve(bits)
        if existing is not None:
            return cls(existing, owned=False, capacity=existing.capacity)
        rows = checked.overlap.get("all") or (
            checked.parties["bank"].rows if "bank" in checked.parties else 0
        )
        trees = m.n_trees - (1 if m.first_tree_bank_only else 0)
        need = ceil(rows * m.subsample) * max(0, trees) if config.holders else 0
        reserve = bank_key_reserve(bank_cfg, key_bits=bits, need=need)
        if reserve is None:  # node.yaml obfuscator_pool 0, or nothing to encrypt
            return cls(None, owned=False, capacity=0)
        return cls(reserve, owned=True, capacity=reserve.capacity)

    def stop(self) -> None:
        from federation.crypto.reserve import stop_reserve

        if self.owned and self.reserve is not None:
            stop_reserve(self.reserve)
            self.owned = False

    def result(self, clf: Any) -> dict[str, Any]:
        """For result.json: whether the job ran warm (a ready key with obfuscators made
        ahead) or cold, and how full the pool was when the job took the key."""
        stats = clf.model_.stats
        used = bool(stats.get("ready_key"))
        at_start = int(stats.get("obfuscators_at_start", 0))
        full = self.capacity > 0 and at_start >= self.capacity
        return {  # warm: every obfuscator the job needs was made ahead; partly: some were
            "mode": "warm" if used and full else "partly warm" if used and at_start else "cold",
            "started_with_nodes": self.made_here,
            "pool_capacity": self.capacity,
            "key_used": used,
            "obfuscators_at_start": at_start,
            "pool_fill_at_start": round(at_start / self.capacity, 3) if self.capacity else 0.0,
            "obfuscators_used": int(stats.get("obfuscators_ahead", 0)),
        }


def experiment_tracking(config: ExperimentConfig, tracking: Any) -> Any:
    """The MLflow store of ``tracking`` (default: the project's), with the experiment's own
    name as the MLflow experiment unless the caller chose one: each experiment's runs in one
    place, not every experiment's under one shared name."""
    from dataclasses import replace

    from parties.bank.registry import DEFAULT_EXPERIMENT, TrackingConfig

    base = tracking if tracking is not None else TrackingConfig.resolve()
    if base.experiment != DEFAULT_EXPERIMENT:
        return base
    return replace(base, experiment=config.name)


def _start(
    fed: Any, t0: float, *, progress: Progress, on_started: Callable[[Any], None] | None
) -> None:
    from xinyidai.launcher import start_nodes

    start_nodes(fed, timeout=120)
    progress(f"nodes serving in {time.perf_counter() - t0:.1f} s")
    if on_started is not None:
        on_started(fed)


def _split_codes(bank_cfg: Any, alignment: Any, report: Any) -> tuple[list[str], list[str]]:
    """The codes of the rows the federated model trained and was tested on (bank's order), so
    the centralised comparison uses exactly the same rows."""
    from parties.bank.table import BankTable

    table = BankTable.load(bank_cfg)
    bank_codes = [table.codes[i] for i in alignment.bank_rows]
    train_codes = [bank_codes[i] for i in report.train_positions]
    test_codes = [bank_codes[i] for i in report.test_positions]
    return train_codes, test_codes


def _node_usage(fed: Any, codes: dict[str, int], before: dict[str, Any]) -> dict[str, Any]:
    """Per node: CPU, bytes and peak memory of its own process tree, pool workers included (as
    each node process wrote them when it stopped) and its exit code. The bank's federated work
    runs in this process, as the bank's operator, so the bank's entry adds what this process
    and its own pool workers used since ``before`` (never its reaped children: those are the
    nodes, which report for themselves), and its peak adds the two trees' peaks."""
    from federation.usage import process_usage, read_usage

    runner = process_usage(reaped_children=False)
    nodes: dict[str, Any] = {}
    for name in fed.configs:
        usage = read_usage(fed.node_dir(name)) or {}
        entry: dict[str, Any] = {
            "cpu_seconds": usage.get("cpu_seconds"),
            "bytes_sent": usage.get("bytes_sent"),
            "bytes_received": usage.get("bytes_received"),
            "peak_rss_mb": usage.get("peak_rss_mb"),
            "exit_code": codes.get(name),
        }
        if name == "bank":  # the bank's work runs in this process, as the bank's operator
            entry["operator_cpu_seconds"] = round(runner["cpu_seconds"] - before["cpu_seconds"], 3)
            entry["operator_bytes_sent"] = runner["bytes_sent"] - before["bytes_sent"]
            entry["operator_bytes_received"] = runner["bytes_received"] - before["bytes_received"]
            entry["operator_peak_rss_mb"] = runner["peak_rss_mb"]
            for key in ("cpu_seconds", "bytes_sent", "bytes_received"):
                entry[key] = round((entry[key] or 0) + entry[f"operator_{key}"], 3)
            entry["peak_rss_mb"] = round((entry["peak_rss_mb"] or 0.0) + runner["peak_rss_mb"], 1)
        nodes[name] = entry
    return nodes


def _common_results(
    config: ExperimentConfig, config_sha256: str, alignment: Any, report: Any
) -> dict[str, Any]:
    m = config.model
    backend = "ckks" if getattr(m, "backend", "") == "ckks" else "paillier"
    crypto = crypto_parameters(backend, CryptoOptions(key_bits=config.crypto.key_bits))
    return {
        "experiment": config.name,
        "config_sha256": config_sha256,
        "model": m.type,
        "params": m.classifier_params(),
        "key_bits": crypto.get("key_bits"),  # Paillier only: a CKKS key has no single size
        "crypto": crypto,  # CKKS: ring, modulus chain, scale, HE-standard security estimate
        "workers": config.crypto.workers,
        "model_name": config.model.name or config.name,
        "n_bank_rows": alignment.bank_size,
        "n_aligned": alignment.size,
        "n_not_joined": alignment.bank_size - alignment.size,
        "n_train": report.n_train,
        "n_test": report.n_test,
        "test_auc": report.auc,
        "test_ks": report.ks,
    }


def _secureboost_results(
    config: ExperimentConfig,
    clf: Any,
    report: Any,
    rows: tuple[list[str], list[str]],
    align_seconds: float,
    progress: Progress,
) -> dict[str, Any]:
    progress("centralised comparison (LightGBM on all columns in one place)")
    central = centralised_auc(config, *rows)
    return {
        "test_gini": 2.0 * report.auc - 1.0,
        "bank_only_auc": report.baseline_auc,
        "bank_only_ks": report.baseline_ks,
        "centralised_auc": central,
        "align_seconds": round(align_seconds, 3),
        "train_seconds": round(sum(report.tree_seconds), 3),
        "train_and_score_seconds": round(report.seconds, 3),
        "tree_seconds": [round(x, 3) for x in report.tree_seconds],
        "split_owners": report.split_owners,
        "resumes": int(clf.model_.stats.get("resumes", 0)),
    }


def _linear_results(
    config: ExperimentConfig,
    m: ScorecardModelConfig | LogisticModelConfig,
    report: Any,
    rows: tuple[list[str], list[str]],
    align_seconds: float,
    progress: Progress,
) -> dict[str, Any]:
    progress(f"centralised comparison ({m.type} on all columns in one place, same rows)")
    points = report.test_points if report.test_points.size else None
    specific = {
        "test_gini": report.gini,
        "bank_only_auc": report.baseline_auc,
        "bank_only_ks": report.baseline_ks,
        "bank_only_gini": report.baseline_gini,
        **centralised_linear(config, *rows, federated_points=points),
        "backend": m.backend,
        "align_seconds": round(align_seconds, 3),
        "train_seconds": round(report.train_seconds, 3),
        "train_and_score_seconds": round(report.seconds, 3),
        "epoch_seconds": [round(x, 3) for x in report.epoch_seconds],
        "n_iter": report.n_iter,
        "top_decile_lift": report.top_decile_lift,
    }
    if isinstance(m, ScorecardModelConfig):
        specific.update(
            {
                "points_auc": report.points_auc,
                "points_ks": report.points_ks,
                "base_points": report.base_points,
                "features_kept": report.features_kept,
                **{k: v for k, v in report.timings.items()},
            }
        )
    return specific


def _feature_report(model: Any) -> dict[str, Any]:
    """A scorecard's IV per feature, highest first, holder features under the aliases their
    holders publish (``tax:f03`` or a chosen label; the same in every run), never names."""
    iv = getattr(model, "iv_", None)
    if iv is None or len(iv) == 0:
        return {}
    return {
        "iv": [
            {"party": str(r.party), "feature": str(r.name), "iv": round(float(r.iv), 6)}
            for r in iv.itertuples()
        ]
    }


def _mlflow_fields(tracked: Any, experiment: str) -> dict[str, Any]:
    return {
        "run_id": tracked.run_id,
        "model_name": tracked.model_name,
        "version": tracked.version,
        "experiment": experiment,
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
