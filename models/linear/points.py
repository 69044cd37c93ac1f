"""A data holder's scorecard points (service ``xinyidai.v1.ScorecardHolder``) and the bank's calls.

A scorecard's LR is a ``LinearHolder`` job on the holder's own WOE values (feature view
"woe:<job>[:i,j]"). Its points table needs the holder's coefficients (``LinearHolderServicer``
keeps them) and its WOE tables, bins and column categories (a ``PointsSource``, e.g.
``parties.holder.views.FeatureViews``); it is built, kept and used here, never sent. Protocol
and who learns what: docs/scorecard.md.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from federation.errors import PeerError, Refused
from federation.files import write_atomic
from federation.transport.base import (
    FAILED_PRECONDITION,
    CallFailed,
    CallInfo,
    PeerBase,
    invalid,
    new_meta,
)
from models.linear.active import LinearBankModel, ScoringError
from models.linear.backends import (
    CONTRIBUTION_SCALE_BITS,
    encode_contribution,
    rows_digest,
    sum_contributions,
)
from models.linear.passive import LinearHolderModel, LinearHolderServicer
from models.linear.reference import OutOfRange
from models.scorecard import PdoScaling, PointsTable, ScorecardError, points_table
from protos import scorecard_pb2 as pb

SERVICE_NAME = "ScorecardHolder"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PointsSource(Protocol):
    """What a points table needs at the holder for a ``woe:`` view, in the view's order: its
    own WOE tables, its own bins of an alignment's rows, its columns' data categories."""

    def woe_tables(self, bank: str, view: str) -> list[Any]: ...

    def bins(self, bank: str, alignment_id: str, view: str) -> np.ndarray: ...

    def categories(self, bank: str, view: str) -> list[str]: ...


def _failed(detail: str) -> CallFailed:
    return CallFailed(FAILED_PRECONDITION, detail)


class ScorecardHolderServicer:
    """``xinyidai.v1.ScorecardHolder`` for one data holder (state scoped by bank and job).

    1. ``Points``: for a finished linear job on a ``woe:`` view (not standardised: the points
       need coefficients on raw WOE values), build the points table from the holder's own
       weights and WOE tables with the bank's public PDO scaling and the holder's column
       categories; keep it (``<models_dir>/<bank>/<job>.points.json``, 0600); answer only the
       feature count.
    2. ``ScorePoints``: the holder's total points of the requested alignment rows as fixed point
       mod 2^64, plus its pairwise masks (the LR job's scoring keys, tag "points|nonce|rows"):
       with two or more holders the bank reads only the sum. With ``by_category`` (reason
       codes): its points summed per data category and each category's maximum.

    Sees: the public scaling, which rows the bank scores. Never sees: anything of the bank's or
    another holder's. The bank learns: the sum of the holders' points per row; per category
    (reason codes) the category's points of the rows it asks about — never a feature's or bin's.
    """

    service = pb.DESCRIPTOR.services_by_name[SERVICE_NAME]

    def __init__(
        self,
        *,
        node_id: str,
        linear: LinearHolderServicer,
        source: PointsSource,
        banks: Iterable[str],
        models_dir: Path | None = None,
    ):
        self.node_id = node_id
        self.linear = linear
        self.source = source
        self.banks = frozenset(banks)
        self.models_dir = models_dir
        self._tables: dict[tuple[str, str], PointsTable] = {}
        self._lock = threading.Lock()

    def authorise_caller(self, caller: str, method: str) -> None:
        if caller not in self.banks:
            raise Refused(
                "caller",
                f"'{caller}' is not a bank this holder keeps scorecards for "
                f"(policy lists: {', '.join(sorted(self.banks)) or 'none'})",
            )

    def _path(self, bank: str, job_id: str) -> Path | None:
        if self.models_dir is None or not _SAFE_NAME.match(bank) or not _SAFE_NAME.match(job_id):
            return None
        return self.models_dir / bank / f"{job_id}.points.json"

    def _model(self, bank: str, job_id: str) -> LinearHolderModel:
        model = self.linear.model(bank, job_id)
        if not model.feature_view.startswith("woe:"):
            raise _failed(f"linear model '{job_id}' was not trained on WOE features")
        return model

    def points_table(self, bank: str, job_id: str) -> PointsTable:
        """This holder's points table of a scorecard job (read back from ``models_dir``)."""
        with self._lock:
            found = self._tables.get((bank, job_id))
        if found is None:
            path = self._path(bank, job_id)
            if path is not None and path.exists():
                found = PointsTable.from_dict(json.loads(path.read_text(encoding="utf-8")))
                with self._lock:
                    self._tables[(bank, job_id)] = found
        if found is None:
            raise _failed(f"no points table for linear job '{job_id}' of {bank}")
        return found

    # -- 1. Points -------------------------------------------------------------------------
    def Points(self, request: Any, call: CallInfo) -> Any:
        model = self._model(call.caller, call.meta.job_id)
        if not (np.all(model.scaler.mean == 0) and np.all(model.scaler.scale == 1)):
            raise _failed("points need coefficients on raw WOE values: the job standardised")
        tables = self.source.woe_tables(call.caller, model.feature_view)
        if len(tables) != model.n_features:
            raise _failed(
                f"{self.node_id}: {len(tables)} WOE tables for {model.n_features} coefficients"
            )
        try:
            scaling = PdoScaling(
                points0=float(request.points0), odds0=float(request.odds0), pdo=float(request.pdo)
            )
            table = points_table(
                self.node_id,
                tables,
                model.weights.tolist(),
                scaling,
                categories=self.source.categories(call.caller, model.feature_view),
                decimals=None if request.decimals < 0 else int(request.decimals),
            )
        except ScorecardError as exc:
            raise invalid(f"Points: {exc}") from None
        path = self._path(call.caller, call.meta.job_id)
        if path is not None:
            write_atomic(path, json.dumps(table.to_dict()).encode("utf-8"))
        with self._lock:
            self._tables[(call.caller, call.meta.job_id)] = table
        call.counts["features"] = len(table.features)
        return pb.PointsAck(n_features=len(table.features))

    # -- 2. ScorePoints --------------------------------------------------------------------
    def ScorePoints(self, request: Any, call: CallInfo) -> Any:
        model = self._model(call.caller, call.meta.job_id)
        table = self.points_table(call.caller, call.meta.job_id)
        if len(request.nonce) < 16:
            raise invalid("ScorePoints: nonce must be at least 16 bytes")
        rows = np.asarray(request.rows, dtype=np.int64)
        bins = self.source.bins(
            call.caller, request.alignment_id or model.alignment_id, model.feature_view
        )
        if bins.ndim != 2 or bins.shape[1] != len(table.features):
            raise _failed(f"{self.node_id}: the points table and the features differ (drift)")
        if rows.size and (rows.min() < 0 or rows.max() >= bins.shape[0]):
            raise invalid(f"ScorePoints: rows must be in [0, {bins.shape[0]})")
        call.counts["rows"] = int(rows.size)
        reply = pb.PointsReply(scale_bits=CONTRIBUTION_SCALE_BITS)
        if request.by_category:
            maxima = table.category_max()
            for category, points in table.category_points(bins[rows]).items():
                reply.categories.add(
                    category=category, max_points=maxima[category], points=points.tolist()
                )
            return reply
        try:
            values = encode_contribution(table.score(bins[rows]), f"{self.node_id} points")
        except OutOfRange as exc:
            raise _failed(str(exc)) from None
        masked = bool(model.masks.pairs)
        if masked:
            raw_rows = np.asarray(request.rows, dtype="<u4").tobytes()
            tag = b"points|" + bytes(request.nonce) + b"|" + rows_digest(raw_rows)
            values = values + model.masks.mask(tag, values.size)
        reply.values = values.astype("<u8").tobytes()
        reply.masked = masked
        return reply


# --------------------------------------------------------------------------------------------
# the bank's calls


def _ask(
    model: LinearBankModel, holders: Mapping[str, PeerBase], method: str, request: Any
) -> dict[str, Any]:
    missing = [h for h in model.holders if h not in holders]
    if missing:
        raise ScoringError(f"the scorecard needs holder(s) {missing}, not given", holder=None)
    out = {}
    for name in model.holders:
        try:
            out[name] = holders[name].call(method, request)
        except PeerError as exc:
            raise ScoringError(
                f"holder '{name}' could not answer {method}: {exc}",
                holder=name,
                schema_drift="drift" in exc.detail,
            ) from exc
    return out


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


__all__ = [
    "SERVICE_NAME",
    "PointsSource",
    "ScorecardHolderServicer",
    "build_points",
    "holder_category_points",
    "holder_points",
]
