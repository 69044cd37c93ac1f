"""What the LR bank keeps of a job, and how a job or a scoring round fails.

Why apart from the protocol (``active.py``): the bank's model part and the errors are what the
estimator, scoring and the scorecard pipeline share; the driver only runs the optimiser with
the holders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.linear.reference import LinearError, TrainResult

__all__ = ["FederatedTrainingError", "LinearBankModel", "ProtocolError", "ScoringError"]


class ProtocolError(LinearError):
    """A holder answered something inconsistent with the protocol (sizes, counts, flags)."""


class FederatedTrainingError(LinearError):
    """Training stopped; every holder was asked to drop the job. Names the holder and stage."""

    def __init__(self, message: str, *, holder: str | None, stage: str):
        self.holder = holder
        self.stage = stage
        super().__init__(message)


class ScoringError(LinearError):
    """Scoring failed at a holder (it is down, refuses, or its columns changed: ``holder``)."""

    def __init__(self, message: str, *, holder: str | None, schema_drift: bool = False):
        self.holder = holder
        self.schema_drift = schema_drift
        super().__init__(message)


@dataclass
class LinearBankModel:
    """The bank's part of a fitted model: its own coefficients and the intercept.

    Holders keep their weights; ``holders`` and ``holder_features`` (counts only) say who must
    answer ``Predict`` for model ``job_id``.
    """

    job_id: str
    backend: str
    coef: np.ndarray
    intercept: float
    holders: list[str]
    holder_features: dict[str, int]
    result: TrainResult
    stats: dict[str, Any] = field(default_factory=dict)
    crypto: dict[str, Any] = field(default_factory=dict)
    """The job's key parameters (``backends.crypto_parameters``): no secret in it."""
