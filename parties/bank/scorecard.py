"""The bank's scorecard job: a federated scorecard on an alignment, evaluated and kept.

Runs at the bank like the SecureBoost job (``parties.bank.secureboost``): the same split of an
alignment's labelled rows (``parties.bank.table``), the model (``parties.bank.scorecard_model``:
WOE/IV → vertical LR on WOE → points) trained with every holder's ``WoeHolder``,
``LinearHolder`` and ``ScorecardHolder`` services, the test split scored in one round
(probability and points), and a bank-only scorecard fitted the same way
(``parties.bank.scorecard_reference``) as the baseline. The bank's part goes to
``NODE_DIR/models/<job>.json``; each holder keeps its WOE tables, weights and points table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from federation.audit import AuditLog
from federation.errors import ConfigError
from federation.transport.base import PeerBase
from models.metrics import gini, ks_statistic, lift_table, roc_auc
from models.psi.active import Alignment
from models.psi.store import check_name
from models.woe import BANK
from parties.bank.linear import OnEpoch, epoch_timer
from parties.bank.reports import ScorecardReport, save_job
from parties.bank.scorecard_model import FederatedScorecard, ScorecardParams
from parties.bank.scorecard_reference import centralised_scorecard
from parties.bank.table import BankTable, IsTest, TrainingSplit, split_alignment
from parties.compute import use_compute
from parties.config import NodeConfig
from parties.node import holder_peers

__all__ = ["comparison_lines", "scorecard_over_nodes", "train_scorecard"]

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


def _evaluate(
    card: FederatedScorecard,
    split: TrainingSplit,
    params: ScorecardParams,
    *,
    linear_holders: Mapping[str, PeerBase],
    points_holders: Mapping[str, PeerBase],
) -> dict[str, Any]:
    """The test split's probabilities and points (one round each) and the bank-only card's."""
    X, labels, train_pos, test_pos = split.features, split.labels, split.train, split.test
    X_test = X.iloc[test_pos].reset_index(drop=True)
    y_test = labels[test_pos]
    proba = card.predict_proba(X_test, holders=linear_holders, rows=test_pos)[:, 1]
    points = card.score(X_test, holders=points_holders, rows=test_pos)
    names = [str(c) for c in X.columns]
    bank_only = centralised_scorecard(
        {BANK: (X.iloc[train_pos].to_numpy(dtype=np.float64), names)}, labels[train_pos], params
    )
    base = bank_only.predict_proba({BANK: X_test.to_numpy(dtype=np.float64)})[:, 1]
    lift = lift_table(y_test, proba)
    return {
        "auc": roc_auc(y_test, proba),
        "ks": ks_statistic(y_test, proba),
        "gini": gini(y_test, proba),
        "points_auc": roc_auc(y_test, -points),
        "points_ks": ks_statistic(y_test, -points),
        "baseline_auc": roc_auc(y_test, base),
        "baseline_ks": ks_statistic(y_test, base),
        "baseline_gini": gini(y_test, base),
        "top_decile_lift": float(lift["lift"].iloc[0]),
        "test_scores": proba,
        "test_points": points,
    }


def train_scorecard(
    config: NodeConfig,
    alignment: Alignment,
    *,
    woe_holders: Mapping[str, PeerBase],
    linear_holders: Mapping[str, PeerBase],
    points_holders: Mapping[str, PeerBase],
    params: ScorecardParams | Mapping[str, Any] | None = None,
    job_id: str | None = None,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    is_test: IsTest | None = None,
    audit: AuditLog | None = None,
    progress: Progress = _quiet,
    on_epoch: OnEpoch | None = None,
) -> tuple[FederatedScorecard, ScorecardReport]:
    """Train a federated scorecard on the aligned, labelled rows' training split; evaluate it
    on the test split (probability and points in one round each) next to a bank-only scorecard
    fitted the same way. ``woe_holders``/``linear_holders``/``points_holders``: ``WoeHolder``,
    ``LinearHolder`` and ``ScorecardHolder`` peers of every holder of the alignment; the split
    as in ``train_secureboost``. The bank's part goes to ``NODE_DIR/models/<job>.json``, each
    holder keeps its WOE tables, weights and points table."""
    for what, peers in (
        ("WoeHolder", woe_holders),
        ("LinearHolder", linear_holders),
        ("ScorecardHolder", points_holders),
    ):
        missing = [h for h in alignment.holders if h not in peers]
        if missing:
            raise ConfigError(f"alignment '{alignment.job_id}' needs {what} peer(s) {missing}")
    p = params if isinstance(params, ScorecardParams) else ScorecardParams.from_mapping(params)
    use_compute(config)
    started = time.perf_counter()
    job_id = check_name(job_id or f"{alignment.job_id}-sc", "job id")
    table = BankTable.for_alignment(config, alignment)
    split = split_alignment(
        table, alignment, is_test=is_test, test_fraction=test_fraction, split_seed=split_seed
    )
    split.require_both()
    _marks, done = epoch_timer(progress, on_epoch)
    card = FederatedScorecard(p, job_id=job_id)
    t_fit = time.perf_counter()
    card.fit(
        split.features.iloc[split.train].reset_index(drop=True),
        split.labels[split.train],
        woe_holders={h: woe_holders[h] for h in alignment.holders},
        linear_holders={h: linear_holders[h] for h in alignment.holders},
        points_holders={h: points_holders[h] for h in alignment.holders},
        alignment_id=alignment.job_id,
        alignment_rows=split.train_mask,
        on_epoch=done,
        progress=progress,
    )
    train_seconds = time.perf_counter() - t_fit
    scores = _evaluate(card, split, p, linear_holders=linear_holders, points_holders=points_holders)
    report = ScorecardReport(
        job_id=job_id,
        alignment_id=alignment.job_id,
        model="scorecard",
        backend=p.backend,
        n_aligned=alignment.size,
        n_labelled=int(split.labelled.size),
        n_train=int(split.train.size),
        n_test=int(split.test.size),
        n_iter=int(card.lr_.n_iter_),
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        epoch_seconds=list(card.lr_.epoch_seconds_),  # one per epoch; setup apart
        timings={k: round(v, 3) for k, v in card.timings_.items()},
        features_kept={k: len(v) for k, v in card.selected_.items()},
        base_points=card.scorecard_.base_points,
        train_positions=split.train,
        test_positions=split.test,
        **scores,
    )
    save_job(config, job_id, card.to_json(), report)
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="scorecard.train",
            purpose=p.purpose,
            job_id=job_id,
            model_id=job_id,
            counts={"train_rows": report.n_train, "test_rows": report.n_test},
        )
    return card, report


def scorecard_over_nodes(
    config: NodeConfig,
    alignment: Alignment,
    *,
    params: ScorecardParams | Mapping[str, Any] | None = None,
    audit: AuditLog | None = None,
    progress: Progress = _quiet,
    **kwargs: Any,
) -> tuple[FederatedScorecard, ScorecardReport]:
    """``train_scorecard`` with the bank's own gRPC peers of every configured holder (the
    ``WoeHolder``, ``LinearHolder`` and ``ScorecardHolder`` services): what the demo calls after
    ``align``. ``kwargs``: ``job_id``, ``is_test``, ``test_fraction``, ``split_seed``,
    ``on_epoch``."""
    with (
        holder_peers(config, audit=audit, service="WoeHolder") as woe,
        holder_peers(config, audit=audit, service="LinearHolder") as linear,
        holder_peers(config, audit=audit, service="ScorecardHolder") as points,
    ):
        return train_scorecard(
            config,
            alignment,
            woe_holders=woe,
            linear_holders=linear,
            points_holders=points,
            params=params,
            audit=audit,
            progress=progress,
            **kwargs,
        )


def comparison_lines(report: ScorecardReport) -> list[str]:
    """The KS/AUC comparison a person reads (the demo prints these)."""
    return [
        f"federated scorecard: KS {report.ks:.4f}  AUC {report.auc:.4f}  Gini {report.gini:.4f} "
        f"({report.n_train} train / {report.n_test} test rows, {report.backend} LR)",
        f"bank-only scorecard: KS {report.baseline_ks:.4f}  AUC {report.baseline_auc:.4f}  "
        f"Gini {report.baseline_gini:.4f}",
        f"points: base {report.base_points:g}; features kept {report.features_kept}; "
        f"trained in {report.train_seconds:.1f} s",
    ]
