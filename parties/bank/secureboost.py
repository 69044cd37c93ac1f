"""The bank's SecureBoost job: train on an alignment's labelled rows, evaluate, keep the result.

Runs at the bank, with the bank's configuration and audit log; every call to a holder goes
through a ``PeerBase`` (``SecureBoostHolder`` peers). The aligned rows with a label are split
(``parties.bank.table``); the ``SecureBoostClassifier`` trains on the training split with the
holders (each told the alignment and the training rows), scores the test split in one round, and
the report puts AUC/KS next to a bank-only LightGBM baseline. The bank's model part goes to
``NODE_DIR/models/<job>.json``, the training population's scores (post-loan monitoring's expected
side) next to it; holders keep their parts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from federation.audit import AuditLog
from federation.crypto.reserve import KeyReserve, key_reserve, running_reserve
from federation.errors import ConfigError
from federation.transport.base import PeerBase
from models.metrics import ks_statistic, roc_auc
from models.psi.active import Alignment
from models.psi.store import check_name
from models.secureboost.estimator import SecureBoostClassifier
from models.secureboost.reference import sigmoid
from parties.bank.monitoring import write_training_population
from parties.bank.reports import TrainingReport, save_job
from parties.bank.table import BankTable, IsTest, TrainingSplit, split_alignment
from parties.compute import use_compute
from parties.config import NodeConfig
from parties.data.encoding import lightgbm_frame

__all__ = ["DEFAULT_PARAMS", "bank_key_reserve", "bank_only_baseline", "train_secureboost"]

Progress = Callable[[str], None]

DEFAULT_PARAMS: dict[str, Any] = {
    "n_trees": 5,
    "max_depth": 3,
    "learning_rate": 0.3,
    "max_bin": 32,
    "random_state": 0,
}


def _quiet(_: str) -> None:
    pass


def bank_only_baseline(
    X_train: pd.DataFrame, y_train: np.ndarray, X_test: pd.DataFrame, params: Mapping[str, Any]
) -> np.ndarray:
    """LightGBM on the bank's own features, depth-wise like the federated model."""
    import lightgbm as lgb

    depth = int(params.get("max_depth", 3))
    model = lgb.LGBMClassifier(
        n_estimators=int(params.get("n_trees", 5)),
        max_depth=depth,
        num_leaves=2**depth,
        learning_rate=float(params.get("learning_rate", 0.3)),
        max_bin=int(params.get("max_bin", 32)),
        min_child_samples=20,
        min_child_weight=float(params.get("min_child_weight", 1.0)),
        reg_lambda=float(params.get("reg_lambda", 1.0)),
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    # category codes as pandas categories: LightGBM splits them natively, as SecureBoost does
    model.fit(lightgbm_frame(X_train), y_train)
    return np.asarray(model.predict_proba(lightgbm_frame(X_test)))[:, 1]


def bank_key_reserve(
    config: NodeConfig, *, key_bits: int = 2048, start: bool = True, need: int | None = None
) -> KeyReserve | None:
    """The ready key of the process that runs this bank's jobs (``node.yaml``
    ``limits.obfuscator_pool`` obfuscators, filled ``limits.obfuscator_batch`` at a time by
    ``limits.compute_workers`` niced workers); None when the pool is off (0).

    ``start``: keep a key ready from now on (a process that will run several jobs, or starts
    long enough before its first one). Without it, only a reserve already started in this
    process for this key size is returned, else None: the job generates its key at start and
    encrypts as before. (Filling a job's own pool while it waits for holders, without a key
    made ahead, measured no faster on 2 cores and cost ~0.9 CPU s more: docs/crypto.md.)

    ``need``: about how many encryptions the next job will do (a run that knows its one job:
    ``xinyidai experiment run``); the pool is then no larger, so no obfuscator is made only
    to be dropped.
    """
    if not start:
        return running_reserve(key_bits)
    limits = config.limits
    capacity = limits.obfuscator_pool if need is None else min(limits.obfuscator_pool, need)
    if capacity <= 0:
        return None
    return key_reserve(
        key_bits=key_bits,
        capacity=capacity,
        batch=limits.obfuscator_batch,
        workers=limits.compute_workers,
    )


def _split_owners(clf: SecureBoostClassifier) -> dict[str, int]:
    """Splits per party: how much each party's features shaped the trees."""
    owners: dict[str, int] = {}
    for tree in clf.trees_:
        for node in tree.nodes.values():
            if not node.is_leaf:
                owners[node.owner] = owners.get(node.owner, 0) + 1
    return owners


def _evaluate(
    clf: SecureBoostClassifier, split: TrainingSplit, holders: Mapping[str, PeerBase]
) -> tuple[np.ndarray, np.ndarray]:
    """(population, margins): the model's margins of every labelled aligned row, training and
    test split, in ONE round with the holders — the job's one evaluation, which the holders
    answer without per-enterprise consent once (``models.base.HolderModule.gate``); any
    later ``Predict`` about these rows needs each enterprise's authorisation."""
    population = np.sort(np.r_[split.train, split.test])
    margins = clf.decision_function(
        split.features.iloc[population].reset_index(drop=True), holders=holders, rows=population
    )
    return population, np.asarray(margins, dtype=np.float64)


def _save_population(
    config: NodeConfig,
    job_id: str,
    split: TrainingSplit,
    population: np.ndarray,
    margins: np.ndarray,
) -> None:
    """Post-loan monitoring's "expected" population (docs/monitoring.md): the model's scores of
    every labelled aligned row, training and test split, as the scoring service computes them."""
    train_mask = split.train_mask
    write_training_population(
        config.node_dir / "models",
        job_id,
        margins,
        split=["train" if train_mask[p] else "test" for p in population],
    )


def _fit(
    config: NodeConfig,
    job_id: str,
    alignment: Alignment,
    split: TrainingSplit,
    *,
    holders: Mapping[str, PeerBase],
    params: dict[str, Any],
    progress: Progress,
    on_tree: Callable[[int], None] | None,
    resume_wait_s: float,
) -> tuple[SecureBoostClassifier, list[float]]:
    """The federated fit on the training split (checkpointed per tree); seconds per tree."""
    tree_marks: list[float] = []
    t_fit = time.perf_counter()

    def tree_done(t: int) -> None:
        tree_marks.append(time.perf_counter())
        progress(f"tree {t} done")
        if on_tree is not None:
            on_tree(t)

    clf = SecureBoostClassifier(**params, job_id=job_id)
    reserve = bank_key_reserve(config, key_bits=int(clf.key_bits), start=False)
    clf.fit(
        split.features.iloc[split.train].reset_index(drop=True),
        split.labels[split.train],
        holders=holders,
        alignment_id=alignment.job_id,
        alignment_rows=split.train_mask,
        on_tree=tree_done,
        checkpoint_dir=config.node_dir / "checkpoints",
        resume_wait_s=resume_wait_s,
        key_reserve=reserve,
    )
    return clf, [b - a for a, b in itertools.pairwise([t_fit, *tree_marks])]


def train_secureboost(
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
    on_tree: Callable[[int], None] | None = None,
    resume_wait_s: float = 0.0,
) -> tuple[SecureBoostClassifier, TrainingReport]:
    """Train on the aligned, labelled rows' training split; evaluate on the test split.

    ``holders``: ``SecureBoostHolder`` peers, one per holder of the alignment. ``params``:
    ``SecureBoostClassifier`` keyword arguments (defaults ``DEFAULT_PARAMS``, 2048-bit keys).
    The split: ``is_test(codes)`` (a boolean per aligned row's code, e.g. a benchmark's fixed
    split by id) or else stratified with ``test_fraction`` and ``split_seed``. The bank
    checkpoints every tree under ``NODE_DIR/checkpoints`` (a rerun of the same ``job_id``
    resumes); ``resume_wait_s``: how long to wait for a holder that restarts mid-job.
    """
    missing = [h for h in alignment.holders if h not in holders]
    if missing:
        raise ConfigError(f"alignment '{alignment.job_id}' needs holder(s) {missing}")
    use_compute(config)  # encryption and decryption run where the bank's node.yaml says
    started = time.perf_counter()
    table = BankTable.for_alignment(config, alignment)
    job_id = check_name(job_id or f"{alignment.job_id}-sb", "job id")
    split = split_alignment(
        table, alignment, is_test=is_test, test_fraction=test_fraction, split_seed=split_seed
    )
    if is_test is not None:
        split.require_both()
    X, y = split.features, split.labels
    train_pos, test_pos = split.train, split.test

    kwargs = {**DEFAULT_PARAMS, **(params or {})}
    clf, tree_seconds = _fit(
        config,
        job_id,
        alignment,
        split,
        holders=holders,
        params=kwargs,
        progress=progress,
        on_tree=on_tree,
        resume_wait_s=resume_wait_s,
    )
    population, margins = _evaluate(clf, split, holders)
    scores = sigmoid(margins[np.searchsorted(population, test_pos)])
    y_test = y[test_pos]
    baseline = bank_only_baseline(X.iloc[train_pos], y[train_pos], X.iloc[test_pos], kwargs)
    report = TrainingReport(
        job_id=job_id,
        alignment_id=alignment.job_id,
        n_aligned=alignment.size,
        n_labelled=int(split.labelled.size),
        n_train=int(train_pos.size),
        n_test=int(test_pos.size),
        auc=roc_auc(y_test, scores),
        ks=ks_statistic(y_test, scores),
        baseline_auc=roc_auc(y_test, baseline),
        baseline_ks=ks_statistic(y_test, baseline),
        seconds=time.perf_counter() - started,
        tree_seconds=tree_seconds,
        split_owners=_split_owners(clf),
        train_positions=train_pos,
        test_positions=test_pos,
        test_scores=scores,
    )
    save_job(config, job_id, clf.to_json(), report)
    _save_population(config, job_id, split, population, margins)
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="secureboost.train",
            purpose=clf.purpose,
            job_id=job_id,
            model_id=job_id,
            counts={"train_rows": report.n_train, "test_rows": report.n_test},
        )
    return clf, report
