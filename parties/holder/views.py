"""A holder's views of its own table: what each training job reads, never leaving the holder.

``TrainingView.features_for``: the encoded table restricted to and reordered by one stored
alignment (``models.psi.store.AlignmentStore``) — what SecureBoost and WOE jobs train on.

A vertical LR job names a view in ``LinearStart.feature_view``; the holder resolves it here,
locally, so the values never leave it:

* ``""``: its encoded table for the alignment (``TrainingView.features_for``), as SecureBoost;
* ``"woe:<woe job>"`` or ``"woe:<woe job>:<i>,<j>,..."``: its own WOE values of a finished
  WOE job (``WoeHolderServicer.woe_model``), only the listed feature indices — the bank's IV
  selection, told by index because the column names stay here.

``FeatureViews`` is also the ``PointsSource`` of ``LinearHolderServicer``: a scorecard's points
table needs the view's WOE tables, the holder's own bins and its columns' data categories.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, Protocol

import numpy as np
import pandas as pd

from federation.errors import XinyidaiError
from federation.ids import NAME_PATTERN
from models.psi.store import AlignmentError, AlignmentStore
from parties.data.encoding import encode, one_hot
from parties.data.schema import PartySchema

_VIEW = re.compile(rf"^woe:({NAME_PATTERN.pattern})(?::([0-9]{{1,4}}(?:,[0-9]{{1,4}})*))?$")


class TrainingView:
    """The holder's encoded table, served per alignment (``features_for`` of the servicers).

    Encoded once at start: every job of every bank reads the same numbers, restricted to and
    ordered by the rows its alignment stored.
    """

    def __init__(
        self,
        table: pd.DataFrame,
        schema: PartySchema,
        store: AlignmentStore,
        *,
        as_of: date | None = None,
    ):
        self.store = store
        encoded = encode(table, schema, as_of=as_of)
        self.values, self.names = encoded.values, encoded.names
        self.categorical = encoded.categorical
        # LR reads categorical columns as 0/1 indicators, expanded once on the whole table so
        # training and scoring see the same columns (``parties.data.encoding.one_hot``).
        self.linear_values, self.linear_names = one_hot(self.values, self.names, self.categorical)

    def features_for(self, bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
        if not alignment_id:
            raise AlignmentError("a training job must name its alignment (a PSI job id)")
        rows = self.store.load(bank, alignment_id)
        return self.values[rows], self.names

    def linear_features_for(self, bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
        """``features_for`` with categorical columns one-hot (what a linear model reads)."""
        if not alignment_id:
            raise AlignmentError("a training job must name its alignment (a PSI job id)")
        rows = self.store.load(bank, alignment_id)
        return self.linear_values[rows], self.linear_names


class FeatureViewError(XinyidaiError):
    """A view is malformed, names an unknown WOE job, or no longer fits the holder's table."""


class _Features(Protocol):
    def features_for(self, bank: str, alignment_id: str) -> tuple[np.ndarray, Sequence[str]]: ...


class _WoeModels(Protocol):
    node_id: str

    def woe_model(self, bank: str, job_id: str) -> Any: ...


def parse_view(view: str) -> tuple[str, list[int] | None]:
    """``"woe:<job>[:i,j]"`` → (job, indices or None for all); refuses anything else."""
    found = _VIEW.match(view or "")
    if found is None:
        raise FeatureViewError(f"feature view {view!r} must look like 'woe:<job>[:0,2,5]'")
    if found.group(2) is None:
        return found.group(1), None
    indices = [int(v) for v in found.group(2).split(",")]
    if any(b <= a for a, b in itertools.pairwise(indices)):
        raise FeatureViewError(f"feature view {view!r}: indices must be strictly increasing")
    return found.group(1), indices


def woe_view(job_id: str, indices: Sequence[int] | None = None) -> str:
    """The view string for a holder's WOE values of ``job_id`` (``indices``: selected features)."""
    if indices is None:
        return f"woe:{job_id}"
    return f"woe:{job_id}:" + ",".join(str(int(i)) for i in indices)


class FeatureViews:
    """``features_for(bank, alignment_id, view="")`` for ``LinearHolderServicer``.

    ``training_view``: anything with ``features_for(bank, alignment_id) -> (values, names)``
    (the node's ``TrainingView``); ``woe``: the node's ``WoeHolderServicer``; ``categories``:
    column name → data category (the schema's), default ``default_category`` (the node id).
    """

    def __init__(
        self,
        training_view: _Features,
        woe: _WoeModels,
        *,
        categories: Mapping[str, str] | None = None,
        default_category: str | None = None,
    ):
        self.training_view = training_view
        self.woe = woe
        self.column_categories = dict(categories or {})
        self.default_category = default_category or woe.node_id

    def _resolve(self, bank: str, view: str) -> tuple[Any, list[int]]:
        job, indices = parse_view(view)
        model = self.woe.woe_model(bank, job)
        n = len(model.features)
        chosen = list(range(n)) if indices is None else indices
        if not chosen or max(chosen) >= n:
            raise FeatureViewError(f"feature view {view!r}: WOE job '{job}' has {n} features")
        return model, chosen

    def _raw(self, bank: str, alignment_id: str, model: Any) -> tuple[np.ndarray, list[str]]:
        values, names = self.training_view.features_for(bank, alignment_id)
        names = [str(n) for n in names]
        if names != model.feature_names:
            raise FeatureViewError(
                "the table's columns changed since the WOE job (schema drift): "
                f"{len(names)} columns now, {len(model.feature_names)} then"
            )
        return np.asarray(values, dtype=np.float64), names

    def __call__(
        self, bank: str, alignment_id: str, view: str = ""
    ) -> tuple[np.ndarray, list[str]]:
        if not view:  # raw features; categorical ones one-hot where the view offers it
            read = getattr(self.training_view, "linear_features_for", None)
            values, names = (read or self.training_view.features_for)(bank, alignment_id)
            return np.asarray(values, dtype=np.float64), [str(n) for n in names]
        model, chosen = self._resolve(bank, view)
        values, names = self._raw(bank, alignment_id, model)
        woe = model.transform(values)[:, chosen]
        return woe, [f"woe:{names[j]}" for j in chosen]

    # -- PointsSource ----------------------------------------------------------------------
    def woe_tables(self, bank: str, view: str) -> list[Any]:
        model, chosen = self._resolve(bank, view)
        return [model.features[j] for j in chosen]

    def bins(self, bank: str, alignment_id: str, view: str) -> np.ndarray:
        model, chosen = self._resolve(bank, view)
        values, _ = self._raw(bank, alignment_id, model)
        return np.asarray(model.binner.transform(values)[:, chosen], dtype=np.int64)

    def categories(self, bank: str, view: str) -> list[str]:
        model, chosen = self._resolve(bank, view)
        names = model.feature_names
        return [self.column_categories.get(names[j], self.default_category) for j in chosen]


def feature_views(
    training_view: _Features,
    woe_servicer: _WoeModels,
    *,
    categories: Mapping[str, str] | None = None,
) -> FeatureViews:
    """The ``features_for`` (and points source) a holder node gives its ``LinearHolderServicer``."""
    return FeatureViews(training_view, woe_servicer, categories=categories)


__all__ = [
    "FeatureViewError",
    "FeatureViews",
    "TrainingView",
    "feature_views",
    "parse_view",
    "woe_view",
]
