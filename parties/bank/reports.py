"""What a bank training job reports, and where it keeps the result.

Why shared: the operator, the experiment runner, the registry (``xinyidai.registration``) and the
tests read the same fields whichever model trained, and every job writes its model part and its
report side by side as ``NODE_DIR/models/<job>.json`` and ``<job>.report.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from federation.files import write_atomic
from parties.config import NodeConfig

__all__ = ["ScorecardReport", "TrainingReport", "save_job"]

_PER_ROW = ("train_positions", "test_positions", "test_scores", "test_points")


def _summary(report: Any) -> dict[str, Any]:
    out = asdict(report)
    for key in _PER_ROW:
        out.pop(key, None)
    return out


@dataclass
class TrainingReport:
    """What a SecureBoost training job produced, for the operator (and the tests)."""

    job_id: str
    alignment_id: str
    n_aligned: int
    n_labelled: int
    n_train: int
    n_test: int
    auc: float
    ks: float
    baseline_auc: float
    baseline_ks: float
    seconds: float
    tree_seconds: list[float] = field(default_factory=list)
    split_owners: dict[str, int] = field(default_factory=dict)
    train_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_scores: np.ndarray = field(default_factory=lambda: np.empty(0))

    def summary(self) -> dict[str, Any]:
        """The report without its per-row arrays (what is written and logged)."""
        return _summary(self)


@dataclass
class ScorecardReport:
    """What a scorecard (or logistic) job produced, for the operator, the runner and tests."""

    job_id: str
    alignment_id: str
    model: str
    backend: str
    n_aligned: int
    n_labelled: int
    n_train: int
    n_test: int
    auc: float
    ks: float
    gini: float
    points_auc: float = float("nan")
    points_ks: float = float("nan")
    baseline_auc: float = float("nan")
    baseline_ks: float = float("nan")
    baseline_gini: float = float("nan")
    n_iter: int = 0
    seconds: float = 0.0
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    features_kept: dict[str, int] = field(default_factory=dict)
    top_decile_lift: float = float("nan")
    base_points: float = float("nan")
    train_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_scores: np.ndarray = field(default_factory=lambda: np.empty(0))
    test_points: np.ndarray = field(default_factory=lambda: np.empty(0))

    def summary(self) -> dict[str, Any]:
        """The report without its per-row arrays (what is written and logged)."""
        return _summary(self)


def save_job(
    config: NodeConfig, job_id: str, model_json: str, report: TrainingReport | ScorecardReport
) -> None:
    """The bank's model part and the job's report, side by side under ``NODE_DIR/models``."""
    models = config.node_dir / "models"
    write_atomic(models / f"{job_id}.json", model_json.encode())
    write_atomic(models / f"{job_id}.report.json", json.dumps(report.summary(), indent=1).encode())
