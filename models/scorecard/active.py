"""The bank's calls to the holders' scorecard points service (``passive.py`` at each holder).

Why apart from the bank's scorecard pipeline (``parties.bank.scorecard``): these are the
protocol's bank half — build every holder's points table, and score rows one round, as a masked
sum or per data category — and nothing else.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np
from google.protobuf.message import Message

from federation.errors import PeerError
from federation.transport.base import PeerBase, new_meta
from models.driver import ask_holders
from models.linear.backends import CONTRIBUTION_SCALE_BITS, sum_contributions
from models.linear.bank_state import LinearBankModel, ScoringError
from models.scorecard.points import PdoScaling
from protos import scorecard_pb2 as pb

__all__ = ["build_points", "holder_category_points", "holder_points"]


def _ask(
    model: LinearBankModel, holders: Mapping[str, PeerBase], method: str, request: Message
) -> dict[str, Any]:
    """``method`` to every holder of the scorecard's LR, a failure named after its holder."""
    missing = [h for h in model.holders if h not in holders]
    if missing:
        raise ScoringError(f"the scorecard needs holder(s) {missing}, not given", holder=None)

    def failure(name: str, exc: PeerError) -> ScoringError:
        return ScoringError(
            f"holder '{name}' could not answer {method}: {exc}",
            holder=name,
            schema_drift="drift" in exc.detail,
        )

    return ask_holders(holders, model.holders, method, request, failure=failure)


def build_points(
    model: LinearBankModel,
    holders: Mapping[str, PeerBase],
    scaling: PdoScaling,
    *,
    decimals: int | None,
    purpose: str = "financing",
) -> dict[str, int]:
    """Ask every holder of a scorecard's linear model to build and keep its points table
    (``ScorecardHolder`` peers); returns each holder's feature count."""
    request = pb.PointsRequest(
        meta=new_meta(purpose, job_id=model.job_id),
        points0=float(scaling.points0),
        odds0=float(scaling.odds0),
        pdo=float(scaling.pdo),
        decimals=-1 if decimals is None else int(decimals),
    )
    out = {}
    for name, reply in _ask(model, holders, "Points", request).items():
        if reply.n_features != model.holder_features.get(name):
            raise ScoringError(
                f"holder '{name}' built points for {reply.n_features} features, the model has "
                f"{model.holder_features.get(name)}",
                holder=name,
            )
        out[name] = int(reply.n_features)
    return out


def holder_points(
    model: LinearBankModel,
    holders: Mapping[str, PeerBase],
    rows: Any,
    *,
    purpose: str = "financing",
    alignment_id: str = "",
) -> np.ndarray:
    """Σ over holders of their points per row, one round (masked: only the sum is readable)."""
    row_ids = np.asarray(rows, dtype=np.int64).ravel()
    n = row_ids.size
    if not model.holders:
        return np.zeros(n)
    request = pb.ScorePointsRequest(
        meta=new_meta(purpose, job_id=model.job_id),
        rows=row_ids.tolist(),
        alignment_id=alignment_id,
        nonce=secrets.token_bytes(16),
    )
    parts = []
    for name, reply in _ask(model, holders, "ScorePoints", request).items():
        if reply.scale_bits != CONTRIBUTION_SCALE_BITS or len(reply.values) != 8 * n:
            raise ScoringError(f"holder '{name}' answered the wrong number of rows", holder=name)
        if reply.masked != (len(model.holders) > 1):
            raise ScoringError(f"holder '{name}' answered with the wrong masking", holder=name)
        parts.append(reply.values)
    return np.asarray(sum_contributions(parts, n, "ScorePoints"), dtype=np.float64)


def holder_category_points(
    model: LinearBankModel,
    holders: Mapping[str, PeerBase],
    rows: Any,
    *,
    purpose: str = "financing",
    alignment_id: str = "",
) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Per data category, the holders' points per row and the category's maximum (reason
    codes: category level, never per feature or bin)."""
    row_ids = np.asarray(rows, dtype=np.int64).ravel()
    request = pb.ScorePointsRequest(
        meta=new_meta(purpose, job_id=model.job_id),
        rows=row_ids.tolist(),
        alignment_id=alignment_id,
        nonce=secrets.token_bytes(16),
        by_category=True,
    )
    points: dict[str, np.ndarray] = {}
    maxima: dict[str, float] = {}
    for name, reply in _ask(model, holders, "ScorePoints", request).items():
        for item in reply.categories:
            got = np.asarray(item.points, dtype=np.float64)
            if got.size != row_ids.size:
                raise ScoringError(
                    f"holder '{name}' answered the wrong number of rows", holder=name
                )
            cat = str(item.category)
            points[cat] = points[cat] + got if cat in points else got
            maxima[cat] = maxima.get(cat, 0.0) + float(item.max_points)
    return points, maxima
