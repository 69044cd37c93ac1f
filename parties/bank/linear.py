"""The bank's vertical logistic-regression job on every party's raw (encoded) features.

Runs at the bank like the SecureBoost job (``parties.bank.secureboost``): the same split of an
alignment's labelled rows (``parties.bank.table``), ``LinearHolder`` peers for the holders, the
model part and report under ``NODE_DIR/models``. The baseline is the plaintext twin
(``PlaintextLogisticRegression``) on the bank's own columns with the same optimiser, so the
comparison isolates what the holders' features add.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from federation.audit import AuditLog
from federation.errors import ConfigError
from federation.transport.base import PeerBase
from models.linear import PlaintextLogisticRegression, VerticalLogisticRegression
from models.metrics import gini, ks_statistic, lift_table, roc_auc
from models.psi.active import Alignment
from models.psi.store import check_name
from parties.bank.reports import ScorecardReport, save_job
from parties.bank.table import BankTable, IsTest, split_alignment
from parties.compute import use_compute
from parties.config import NodeConfig
from parties.data.encoding import one_hot_frame

__all__ = ["epoch_seconds", "epoch_timer", "train_logistic"]

Progress = Callable[[str], None]
OnEpoch = Callable[[int, float], None]


def _quiet(_: str) -> None:
    pass


def epoch_timer(progress: Progress, on_epoch: OnEpoch | None) -> tuple[list[float], OnEpoch]:
    """A progress line and a mark at the end of every epoch (and one at the start). Reports
    take ``VerticalLogisticRegression.epoch_seconds_`` instead: one entry per epoch, timed by
    the bank's driver with setup (keys, public material, Start) apart."""
    marks: list[float] = [time.perf_counter()]

    def done(epoch: int, loss: float) -> None:
        marks.append(time.perf_counter())
        progress(f"epoch {epoch} done (loss {loss:.5f})")
        if on_epoch is not None:
            on_epoch(epoch, loss)

    return marks, done


def epoch_seconds(marks: list[float]) -> list[float]:
    """Seconds of epochs 2..n from ``epoch_timer``'s marks (epoch 1's mark includes setup)."""
    return [b - a for a, b in itertools.pairwise(marks[1:])]


def train_logistic(
    config: NodeConfig,
    alignment: Alignment,
    *,
    holders: Mapping[str, PeerBase],
    params: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    is_test: IsTest | None = None,
    audit: AuditLog | None = None,
    progress: Progress = _quiet,
    on_epoch: OnEpoch | None = None,
) -> tuple[VerticalLogisticRegression, ScorecardReport]:
    """Vertical LR on every party's raw (encoded) features: ``holders`` are ``LinearHolder``
    peers; ``params`` ``VerticalLogisticRegression`` keyword arguments; the bank-only baseline
    is the plaintext twin on the bank's columns with the same optimiser."""
    missing = [h for h in alignment.holders if h not in holders]
    if missing:
        raise ConfigError(f"alignment '{alignment.job_id}' needs LinearHolder peer(s) {missing}")
    use_compute(config)
    started = time.perf_counter()
    job_id = check_name(job_id or f"{alignment.job_id}-lr", "job id")
    table = BankTable.for_alignment(config, alignment)
    split = split_alignment(
        table, alignment, is_test=is_test, test_fraction=test_fraction, split_seed=split_seed
    )
    split.require_both()
    # categorical columns as 0/1 indicators (one per category): a code is not a quantity
    X = one_hot_frame(split.features)
    labels, train_pos, test_pos = split.labels, split.train, split.test
    _marks, done = epoch_timer(progress, on_epoch)
    clf = VerticalLogisticRegression(**dict(params or {}), job_id=job_id)
    t_fit = time.perf_counter()
    clf.fit(
        X.iloc[train_pos].reset_index(drop=True),
        labels[train_pos],
        holders={h: holders[h] for h in alignment.holders},
        alignment_id=alignment.job_id,
        alignment_rows=split.train_mask,
        on_epoch=done,
    )
    train_seconds = time.perf_counter() - t_fit
    X_test = X.iloc[test_pos].reset_index(drop=True)
    y_test = labels[test_pos]
    proba = clf.predict_proba(X_test, holders=holders, rows=test_pos)[:, 1]
    ref = PlaintextLogisticRegression(clf.params_).fit(
        X.iloc[train_pos].to_numpy(dtype=np.float64), labels[train_pos]
    )
    base = ref.predict_proba(X_test.to_numpy(dtype=np.float64))[:, 1]
    report = ScorecardReport(
        job_id=job_id,
        alignment_id=alignment.job_id,
        model="logistic",
        backend=clf.backend,
        n_aligned=alignment.size,
        n_labelled=int(split.labelled.size),
        n_train=int(train_pos.size),
        n_test=int(test_pos.size),
        auc=roc_auc(y_test, proba),
        ks=ks_statistic(y_test, proba),
        gini=gini(y_test, proba),
        baseline_auc=roc_auc(y_test, base),
        baseline_ks=ks_statistic(y_test, base),
        baseline_gini=gini(y_test, base),
        n_iter=int(clf.n_iter_),
        seconds=time.perf_counter() - started,
        train_seconds=train_seconds,
        epoch_seconds=list(clf.epoch_seconds_),  # one per epoch; setup apart
        top_decile_lift=float(lift_table(y_test, proba)["lift"].iloc[0]),
        train_positions=train_pos,
        test_positions=test_pos,
        test_scores=proba,
    )
    save_job(config, job_id, clf.to_json(), report)
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="linear.train",
            purpose=clf.purpose,
            job_id=job_id,
            model_id=job_id,
            counts={"train_rows": report.n_train, "test_rows": report.n_test},
        )
    return clf, report
