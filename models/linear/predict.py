"""One-round LR scoring at the bank: its own linear predictor plus the holders' masked parts.

Why apart from training (``active.py``): scoring needs no keys and no job — every holder of the
model answers once with its masked u_k for the rows (``Predict``), and only the sum is readable.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from federation.errors import PeerError
from federation.transport.base import PeerBase, new_meta
from models.driver import ask_holders
from models.linear.backends import CONTRIBUTION_SCALE_BITS, sum_contributions
from models.linear.bank_state import LinearBankModel, ScoringError
from models.linear.reference import LinearError
from protos import linear_pb2 as pb

__all__ = ["predict_linear"]


def _could_not_score(name: str, exc: PeerError) -> ScoringError:
    return ScoringError(
        f"holder '{name}' could not score: {exc}",
        holder=name,
        schema_drift="schema drift" in exc.detail,
    )


def predict_linear(
    model: LinearBankModel,
    X: np.ndarray,
    holders: Mapping[str, PeerBase],
    rows: Any,
    *,
    purpose: str = "financing",
    alignment_id: str = "",
) -> np.ndarray:
    """Linear predictors for the bank's prepared rows ``X`` and the holders' ``rows``.

    ``rows`` are each bank row's positions in the alignment ``alignment_id`` (empty: the
    holders' own rows). Every holder of the model answers once; with two or more holders their
    answers are masked and only the sum is readable.
    """
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    row_ids = np.asarray(rows, dtype=np.int64)
    if row_ids.shape != (n,):
        raise LinearError(f"rows must give one holder row per bank row ({n}), got {row_ids.shape}")
    if n and row_ids.min() < 0:
        raise LinearError("rows must be non-negative holder row indices")
    u = X @ model.coef + model.intercept
    if not model.holders:
        return np.asarray(u, dtype=np.float64)
    missing = [h for h in model.holders if h not in holders]
    if missing:
        raise ScoringError(
            f"the model needs holder(s) {missing} to score, they were not given", holder=None
        )
    request = pb.LinearPredictRequest(
        meta=new_meta(purpose, job_id=model.job_id),
        rows=row_ids.tolist(),
        alignment_id=alignment_id,
        nonce=secrets.token_bytes(16),
    )
    replies: dict[str, pb.LinearContribution] = ask_holders(
        holders, model.holders, "Predict", request, failure=_could_not_score
    )
    parts = []
    for name, reply in replies.items():
        if reply.scale_bits != CONTRIBUTION_SCALE_BITS or len(reply.values) != 8 * n:
            raise ScoringError(f"holder '{name}' answered the wrong number of rows", holder=name)
        if reply.masked != (len(model.holders) > 1):
            raise ScoringError(f"holder '{name}' answered with the wrong masking", holder=name)
        parts.append(reply.values)
    return np.asarray(u + sum_contributions(parts, n, "Predict"), dtype=np.float64)
