"""``SecureBoostClassifier``: the bank's scikit-learn-style face of vertical SecureBoost.

The bank calls ``fit(X_bank, y, holders=...)`` with its own features (a DataFrame) and labels;
the holders' features never come here — they are reached through ``PeerBase`` peers that speak
``xinyidai.v1.SecureBoostHolder`` (in-process twin or gRPC). Rows must already be aligned: row
i of ``X_bank`` is row i at every holder (alignment by PSI happens before this).

Fitting is all-or-nothing: the fitted attributes are assigned only after every holder has
accepted the finished model, so a failure (a holder disconnecting, bad data at a holder) leaves
an earlier fit untouched. The bank's model part exports to JSON (no pickle): tree shapes, the
bank's own splits and bin edges, leaf weights; the holders keep their part.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.crypto.reserve import KeyReserve
from federation.transport.base import PeerBase
from models.binning import BinningError, QuantileBinner
from models.estimator import BankFrameMixin
from models.estimator import SchemaDriftError as BaseSchemaDriftError
from models.secureboost.active import SecureBoostBank
from models.secureboost.bank_state import BankModel
from models.secureboost.predict import predict_margin
from models.secureboost.reference import BoostParams, SecureBoostError, check_labels, sigmoid
from models.secureboost.tree import Tree

MODEL_FORMAT = "xinyidai.secureboost.bank/1"


class SchemaDriftError(SecureBoostError, BaseSchemaDriftError):
    """The columns given to predict differ from the ones the model was fitted on."""


class NotFittedError(SecureBoostError):
    """The classifier has not been fitted (or loaded) yet."""


class SecureBoostClassifier(BankFrameMixin):
    """Vertical federated SecureBoost for binary credit default (bank side).

    Hyperparameters as in ``reference.BoostParams`` (the algorithm's definition) plus
    ``key_bits`` (Paillier modulus; < 2048 only under the test switch), ``purpose`` (sent with
    every request, checked by the holders), ``job_id`` (default: random), ``workers`` (the bank's
    Paillier worker processes; default all cores).
    """

    frame_error = SecureBoostError
    drift_error = SchemaDriftError

    def __init__(
        self,
        *,
        n_trees: int = 5,
        max_depth: int = 3,
        learning_rate: float = 0.3,
        reg_lambda: float = 1.0,
        min_child_weight: float = 1.0,
        gamma: float = 0.0,
        max_bin: int = 32,
        subsample: float = 1.0,
        first_tree_bank_only: bool = True,
        min_holder_node_samples: int = 20,
        random_state: int | None = None,
        key_bits: int = 2048,
        purpose: str = "financing",
        job_id: str | None = None,
        workers: int | None = None,
    ):
        self.n_trees = n_trees
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.reg_lambda = reg_lambda
        self.min_child_weight = min_child_weight
        self.gamma = gamma
        self.max_bin = max_bin
        self.subsample = subsample
        self.first_tree_bank_only = first_tree_bank_only
        self.min_holder_node_samples = min_holder_node_samples
        self.random_state = random_state
        self.key_bits = key_bits
        self.purpose = purpose
        self.job_id = job_id
        self.workers = workers

    def boost_params(self) -> BoostParams:
        """The algorithm's hyperparameters, validated (raises ``SecureBoostParamError``)."""
        return BoostParams(
            n_trees=self.n_trees,
            max_depth=self.max_depth,
            learning_rate=self.learning_rate,
            reg_lambda=self.reg_lambda,
            min_child_weight=self.min_child_weight,
            gamma=self.gamma,
            max_bin=self.max_bin,
            subsample=self.subsample,
            first_tree_bank_only=self.first_tree_bank_only,
            min_holder_node_samples=self.min_holder_node_samples,
            random_state=self.random_state,
        )

    # -- training --------------------------------------------------------------------------
    def fit(
        self,
        X_bank: pd.DataFrame,
        y: Any,
        *,
        holders: Mapping[str, PeerBase],
        alignment_id: str = "",
        alignment_rows: np.ndarray | None = None,
        on_tree: Callable[[int], None] | None = None,
        checkpoint_dir: Path | None = None,
        resume_wait_s: float = 0.0,
        categorical: Sequence[str] | None = None,
        key_reserve: KeyReserve | None = None,
        overlap: bool = True,
    ) -> SecureBoostClassifier:
        """Train with the holders; the bank's data never leaves this process in the clear.

        ``alignment_id``/``alignment_rows``: the PSI job whose common order the rows follow and
        the mask of its rows that ``X_bank`` holds (default: the holders' rows as they are).
        ``on_tree(t)`` is called when tree t is complete (progress bars). ``checkpoint_dir``:
        save the job after every tree and resume a job of the same ``job_id`` found there;
        ``resume_wait_s``: how long to wait for a holder that went away mid-job (0: fail).
        ``categorical``: columns of ``X_bank`` holding category codes
        (``parties.data.encoding``): one bin per category, split as sets (default: the
        frame's ``attrs["categorical"]``, as ``parties.bank.table.BankTable`` sets it).
        ``key_reserve``: the node's ready key (``federation.crypto.reserve``), taken for this
        job if one is ready; without it the key is generated at the start, as always.
        ``overlap``: holders sum each tree's root histogram as its gradients stream in
        (``SecureBoostBank``; the same trees either way).
        """
        if categorical is None:
            categorical = list(getattr(X_bank, "attrs", {}).get("categorical") or [])
        params = self.boost_params()
        X = self._numeric_frame(X_bank, "X_bank")
        labels = check_labels(np.asarray(y), len(X))
        columns = [str(c) for c in X.columns]
        unknown = [c for c in categorical if c not in columns]
        if unknown:
            raise SecureBoostError(f"categorical column(s) {unknown} are not in X_bank")
        nominal = [columns.index(c) for c in categorical]
        binner = QuantileBinner(max_bin=params.max_bin)
        bins = binner.fit_transform(X.to_numpy(), feature_names=columns, categorical=nominal)
        bank = SecureBoostBank(
            params=params,
            holders=holders,
            key_bits=self.key_bits,
            purpose=self.purpose,
            job_id=self.job_id,
            workers=self.workers,
            alignment_id=alignment_id,
            alignment_rows=alignment_rows,
            on_tree=on_tree,
            checkpoint_dir=checkpoint_dir,
            resume_wait_s=resume_wait_s,
            key_reserve=key_reserve,
            overlap=overlap,
        )
        model = bank.train(bins, binner.n_bins_, labels, categorical=nominal)
        self.alignment_id_ = alignment_id
        # All-or-nothing: only a finished job replaces the fitted state.
        self._set_fitted(model, binner, params)
        return self

    def _set_fitted(self, model: BankModel, binner: QuantileBinner, params: BoostParams) -> None:
        self.model_ = model
        self.binner_ = binner
        self.params_ = params
        self.trees_: list[Tree] = model.trees
        self.base_score_ = model.base_score
        self.job_id_ = model.job_id
        self.holders_ = list(model.holders)
        self.feature_names_in_ = np.array(binner.feature_names_, dtype=object)
        self.n_features_in_ = len(binner.feature_names_)

    # -- scoring ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError("SecureBoostClassifier is not fitted: call fit or from_json")

    def _bank_bins(self, X_bank: pd.DataFrame) -> np.ndarray:
        X = self._fitted_frame(X_bank, list(self.feature_names_in_))
        try:
            return self.binner_.transform(X.to_numpy())
        except BinningError as exc:
            raise SchemaDriftError(str(exc)) from exc

    def decision_function(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any
    ) -> np.ndarray:
        """Margins (log-odds). ``rows``: each bank row's row index at the holders."""
        self._check_fitted()
        bins = self._bank_bins(X_bank)
        return predict_margin(
            self.model_,
            bins,
            holders,
            rows,
            purpose=self.purpose,
            alignment_id=getattr(self, "alignment_id_", ""),
        )

    def predict_proba(
        self, X_bank: pd.DataFrame, *, holders: Mapping[str, PeerBase], rows: Any
    ) -> np.ndarray:
        """``[[P(no default), P(default)], ...]`` in one round with the holders."""
        p = sigmoid(self.decision_function(X_bank, holders=holders, rows=rows))
        return np.column_stack([1.0 - p, p])

    # -- the bank's model part as JSON -----------------------------------------------------
    def to_json(self) -> str:
        """The bank's part (no holder secrets are in it; it contains the bank's bin edges)."""
        self._check_fitted()
        return json.dumps(
            {
                "format": MODEL_FORMAT,
                "params": asdict(self.params_),
                "purpose": self.purpose,
                "job_id": self.job_id_,
                "holders": self.holders_,
                "alignment_id": getattr(self, "alignment_id_", ""),
                "base_score": self.base_score_,
                "binner": self.binner_.to_dict(),
                "trees": [t.to_dict() for t in self.trees_],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str) -> SecureBoostClassifier:
        try:
            data = json.loads(text)
            if data.get("format") != MODEL_FORMAT:
                raise SecureBoostError(f"not a {MODEL_FORMAT} model: {data.get('format')!r}")
            params = BoostParams(**data["params"])
            clf = cls(**asdict(params), purpose=data["purpose"], job_id=data["job_id"])
            model = BankModel(
                job_id=data["job_id"],
                base_score=float(data["base_score"]),
                trees=[Tree.from_dict(t) for t in data["trees"]],
                holders=[str(h) for h in data["holders"]],
            )
            binner = QuantileBinner.from_dict(data["binner"])
        except (KeyError, TypeError, ValueError) as exc:
            raise SecureBoostError(f"not a saved SecureBoostClassifier: {exc}") from None
        clf._set_fitted(model, binner, params)
        clf.alignment_id_ = str(data.get("alignment_id", ""))
        return clf


__all__ = ["NotFittedError", "SchemaDriftError", "SecureBoostClassifier"]
