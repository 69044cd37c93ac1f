"""A data holder's scorecard points (service ``xinyidai.v1.ScorecardHolder``).

A scorecard's LR is a ``LinearHolder`` job on the holder's own WOE values (feature view
"woe:<job>[:i,j]"). Its points table needs the holder's coefficients (``LinearHolderServicer``
keeps them) and its WOE tables, bins and column categories (a ``PointsSource``, e.g.
``parties.holder.views.FeatureViews``); it is built, kept and used here, never sent. The bank's
calls are ``active.py``; the maths is ``points.py``. Protocol and who learns what:
docs/scorecard.md. Policy, rows and model files come from ``models.base.HolderModule``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from federation.transport.base import CallInfo, invalid
from models.base import HolderJob, HolderModule, failed
from models.linear.backends import CONTRIBUTION_SCALE_BITS, encode_contribution, rows_digest
from models.linear.holder_state import LinearHolderModel
from models.linear.passive import LinearHolderServicer
from models.linear.reference import OutOfRange
from models.scorecard.points import PdoScaling, PointsTable, ScorecardError, points_table
from protos import scorecard_pb2 as pb

__all__ = ["SERVICE_NAME", "PointsSource", "ScorecardHolderServicer"]

SERVICE_NAME = "ScorecardHolder"
TABLE_CACHE = 4
"""(bank, alignment, view) bin tables a holder keeps for scoring."""


class PointsSource(Protocol):
    """What a points table needs at the holder for a ``woe:`` view, in the view's order: its
    own WOE tables, its own bins of an alignment's rows, its columns' data categories."""

    def woe_tables(self, bank: str, view: str) -> list[Any]: ...

    def bins(self, bank: str, alignment_id: str, view: str) -> np.ndarray: ...

    def categories(self, bank: str, view: str) -> list[str]: ...


class ScorecardHolderServicer(HolderModule[HolderJob, PointsTable]):
    """``xinyidai.v1.ScorecardHolder`` for one data holder (state scoped by bank and job).

    1. ``Points``: for a finished linear job on a ``woe:`` view (not standardised: the points
       need coefficients on raw WOE values), build the points table from the holder's own
       weights and WOE tables with the bank's public PDO scaling and the holder's column
       categories; keep it (``<models_dir>/<bank>/<job>.points.json``, 0600); answer only the
       feature count.
    2. ``ScorePoints``: the holder's total points of the requested alignment rows as fixed point
       mod 2^64, plus its pairwise masks (the LR job's scoring keys, tag "points|nonce|rows"):
       with two or more holders the bank reads only the sum. With ``by_category`` (reason
       codes) also its points summed per data category and each category's maximum, in the
       same reply; with ``with_predictor`` also its linear predictor exactly as
       ``LinearHolder.Predict`` answers it (a served score asks each holder once for all).

    Sees: the public scaling, which rows the bank scores. Never sees: anything of the bank's or
    another holder's. The bank learns: the sum of the holders' points per row; per category
    (reason codes) the category's points of the rows it asks about — never a feature's or bin's;
    with ``with_predictor`` the sum of the holders' linear predictors (what ``Predict`` gives).

    Its rows are the holder's own bins of a ``woe:`` view (``source.bins``), read through
    ``HolderModule.rows_for`` like every other protocol's — so behind the holder gate: the
    job's one evaluation (opened when ``Points`` keeps the table), or every row's enterprise
    authorised for the table's categories (``by_category`` too).
    """

    service = pb.DESCRIPTOR.services_by_name[SERVICE_NAME]
    protocol = "scorecard points"
    caller_role = "keeps scorecards for"
    model_file = "{job}.points.json"
    reads_features = False

    def __init__(
        self,
        *,
        node_id: str,
        linear: LinearHolderServicer,
        source: PointsSource,
        banks: Iterable[str],
        models_dir: Path | None = None,
    ):
        super().__init__(node_id=node_id, banks=banks, models_dir=models_dir)
        self.linear = linear
        self.source = source

    # -- HolderModule hooks ----------------------------------------------------------------
    def _decode_model(self, data: dict[str, Any]) -> PointsTable:
        return PointsTable.from_dict(data)

    def _no_model(self, bank: str, job_id: str) -> str:
        return f"no points table for linear job '{job_id}' of {bank}"

    def _read_table(self, bank: str, alignment_id: str, view: str) -> tuple[np.ndarray, list[str]]:
        """The holder's own bins of the view's features (points are looked up by bin), kept
        for the last few (``HolderModule._cached_table``)."""
        return self._cached_table(
            (bank, alignment_id, view),
            lambda: (self.source.bins(bank, alignment_id, view), []),
            keep=TABLE_CACHE,
        )

    def points_table(self, bank: str, job_id: str) -> PointsTable:
        """This holder's points table of a scorecard job (read back from ``models_dir``)."""
        return self.model(bank, job_id)

    def _linear_model(self, bank: str, job_id: str) -> LinearHolderModel:
        model = self.linear.model(bank, job_id)
        if not model.feature_view.startswith("woe:"):
            raise failed(f"linear model '{job_id}' was not trained on WOE features")
        return model

    # -- 1. Points -------------------------------------------------------------------------
    def Points(self, request: pb.PointsRequest, call: CallInfo) -> pb.PointsAck:
        model = self._linear_model(call.caller, call.meta.job_id)
        if not (np.all(model.scaler.mean == 0) and np.all(model.scaler.scale == 1)):
            raise failed("points need coefficients on raw WOE values: the job standardised")
        tables = self.source.woe_tables(call.caller, model.feature_view)
        if len(tables) != model.n_features:
            raise failed(
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
        self.keep_model(call, table, evaluate_on=model.alignment_id)
        call.counts["features"] = len(table.features)
        return pb.PointsAck(n_features=len(table.features))

    # -- 2. ScorePoints --------------------------------------------------------------------
    def ScorePoints(self, request: pb.ScorePointsRequest, call: CallInfo) -> pb.PointsReply:
        model = self._linear_model(call.caller, call.meta.job_id)
        table = self.model(call.caller, call.meta.job_id)
        if len(request.nonce) < 16:
            raise invalid("ScorePoints: nonce must be at least 16 bytes")
        rows = self.rows_for(
            call,
            alignment_id=request.alignment_id or model.alignment_id,
            rows=request.rows,
            view=model.feature_view,
            what="ScorePoints",
            categories=table.categories(),  # the consent scope: the categories it has points of
        )
        bins = rows.values
        if bins.ndim != 2 or bins.shape[1] != len(table.features):
            raise failed(f"{self.node_id}: the points table and the features differ (drift)")
        call.counts["rows"] = int(rows.positions.size)
        reply = pb.PointsReply(scale_bits=CONTRIBUTION_SCALE_BITS)
        if request.by_category:
            maxima = table.category_max()
            for category, points in table.category_points(bins).items():
                reply.categories.add(
                    category=category, max_points=maxima[category], points=points.tolist()
                )
        # the masked total too, with or without categories: a served score asks once per
        # holder (one gate pass, one audit record) instead of once for each
        try:
            values = encode_contribution(table.score(bins), f"{self.node_id} points")
        except OutOfRange as exc:
            raise failed(str(exc)) from None
        masked = bool(model.masks.pairs)
        if masked:
            raw_rows = np.asarray(request.rows, dtype="<u4").tobytes()
            tag = b"points|" + bytes(request.nonce) + b"|" + rows_digest(raw_rows)
            values = values + model.masks.mask(tag, values.size)
        reply.values = values.astype("<u8").tobytes()
        reply.masked = masked
        if request.with_predictor:  # the rows passed the gate above, for the same categories
            reply.predictor, _ = self.linear.gated_predictor(
                call.caller,
                model,
                alignment_id=request.alignment_id or model.alignment_id,
                positions=rows.positions,
                nonce=bytes(request.nonce),
                rows=request.rows,
            )
        return reply
