"""The bank's table as its training jobs read it: codes, encoded features, labels, and the split.

Why one place: SecureBoost, the vertical LR and the scorecard all train on the bank's rows of one
alignment, and a model is comparable with another only when they split those rows the same way
(70/30 stratified and seeded, or a benchmark's fixed split). ``TrainingSplit`` is that split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from federation.errors import ConfigError
from models.psi.active import Alignment
from models.psi.store import AlignmentError, codes_digest
from parties.config import NodeConfig
from parties.data.encoding import encode
from parties.data.loader import load_table
from parties.data.schema import PartySchema

__all__ = ["BankTable", "TrainingSplit", "split_alignment", "stratified_split"]

IsTest = Callable[[list[str]], np.ndarray]
"""``is_test(codes)``: a boolean per code, True for the test split (e.g. a benchmark's split)."""


@dataclass
class BankTable:
    """The bank's validated table: codes in row order, encoded features, labels."""

    codes: list[str]
    features: pd.DataFrame
    labels: np.ndarray  # float, NaN where not yet observed

    @classmethod
    def load(cls, config: NodeConfig) -> BankTable:
        if config.data is None:
            raise ConfigError(f"bank '{config.node_id}': no data table configured")
        schema: PartySchema = config.data.table_schema(config.node_id)
        table = load_table(config.data.path, schema)
        encoded = encode(table, schema, as_of=config.data.as_of)
        label = schema.label_column
        if label is None:
            raise ConfigError(f"bank '{config.node_id}': its table has no label column")
        features = pd.DataFrame(encoded.values, columns=encoded.names)
        # the columns holding category codes travel with the frame (pandas keeps attrs through
        # iloc/reset_index): SecureBoost splits them as sets, LR one-hot encodes them
        features.attrs["categorical"] = encoded.categorical
        return cls(
            codes=list(table.index),
            features=features,
            labels=table[label].to_numpy(dtype=np.float64),
        )

    @classmethod
    def for_alignment(cls, config: NodeConfig, alignment: Alignment) -> BankTable:
        """The table ``alignment`` was made on; refused if the table changed since."""
        table = cls.load(config)
        if alignment.table_digest != codes_digest(table.codes):
            raise AlignmentError(
                f"alignment '{alignment.job_id}' was made on a different bank table"
            )
        return table


def stratified_split(
    labels: np.ndarray, *, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the train and test rows (each ascending): per class, a seeded shuffle."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), not {test_fraction}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        k = round(test_fraction * members.size)
        test.append(rng.permutation(members)[:k])
    test_rows = np.sort(np.concatenate(test)) if test else np.empty(0, np.int64)
    train_rows = np.setdiff1d(np.arange(labels.size), test_rows)
    return train_rows.astype(np.int64), test_rows.astype(np.int64)


@dataclass(frozen=True, eq=False)
class TrainingSplit:
    """The bank's side of an alignment, split for training; positions index the alignment."""

    features: pd.DataFrame  # the bank's features of the aligned rows, in the common order
    labels: np.ndarray  # float, NaN where not yet observed
    labelled: np.ndarray
    train: np.ndarray
    test: np.ndarray

    @property
    def train_mask(self) -> np.ndarray:
        """The training rows as a mask over the alignment (what holders are told)."""
        mask = np.zeros(len(self.labels), dtype=bool)
        mask[self.train] = True
        return mask

    def require_both(self) -> None:
        """A model needs rows to train on and rows to be evaluated on."""
        if not (self.train.size and self.test.size):
            raise ConfigError(
                f"the split leaves {self.train.size} training and {self.test.size} test rows"
            )


def split_alignment(
    table: BankTable,
    alignment: Alignment,
    *,
    is_test: IsTest | None,
    test_fraction: float,
    split_seed: int,
) -> TrainingSplit:
    """The labelled aligned rows split by ``is_test`` (per code), else stratified and seeded."""
    labels = table.labels[alignment.bank_rows]
    labelled = np.flatnonzero(~np.isnan(labels))
    if is_test is not None:
        codes = [table.codes[i] for i in alignment.bank_rows[labelled]]
        test_mask = np.asarray(is_test(codes), dtype=bool)
        train_pos, test_pos = labelled[~test_mask], labelled[test_mask]
    else:
        train_l, test_l = stratified_split(
            labels[labelled], test_fraction=test_fraction, seed=split_seed
        )
        train_pos, test_pos = labelled[train_l], labelled[test_l]
    return TrainingSplit(
        features=table.features.iloc[alignment.bank_rows].reset_index(drop=True),
        labels=labels,
        labelled=labelled,
        train=train_pos,
        test=test_pos,
    )
