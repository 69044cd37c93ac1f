"""The numeric form every party gives its own validated table before binning.

Why with the data and not with a protocol: the encoding is the party's own business (which
columns are features, how a grade or a date becomes a number), shared by everything that reads
the table — training at a holder, the bank's table for training and scoring, the experiment
runner's centralised baselines. Only bins of these values are ever used by a model, and those
stay with the party too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

import numpy as np
import pandas as pd

from federation.errors import XinyidaiError
from models.binning import MIN_CATEGORY_COUNT
from parties.data.schema import TAX_CREDIT_GRADES, PartySchema

__all__ = [
    "ORDINALS",
    "CategoryError",
    "EncodedTable",
    "category_code",
    "category_text",
    "encode",
    "encode_categories",
    "encode_table",
    "lightgbm_frame",
    "one_hot",
    "one_hot_frame",
    "table_as_of",
]

FeatureKind = Literal["numeric", "categorical"]

ORDINALS: dict[str, dict[str, float]] = {
    # 纳税信用等级 in risk order: A (best) > B > M (new enterprises) > C > D (worst).
    "tax_credit_grade": {
        g: float(len(TAX_CREDIT_GRADES) - i) for i, g in enumerate(TAX_CREDIT_GRADES)
    }
}
"""Categorical columns with a natural order, encoded as numbers (higher = better grade).
Other categorical columns (``industry``: nominal GB/T 4754 sections) are not model features."""


class CategoryError(XinyidaiError):
    """A categorical column cannot be encoded (absent, or two texts share a code)."""


CODE_BITS = 31
"""Category codes are non-negative integers below 2**31: exact in float64 and valid category
values for LightGBM (the centralised baseline), which refuses codes at or above int32's max."""


def category_text(value: object) -> str | None:
    """The normal form of one categorical cell: text with surrounding spaces removed; integral
    numbers without ".0" (a column read as float); ``None`` for missing (NaN, None, blank)."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def category_code(text: str) -> int:
    """A category's code: the first 31 bits of sha256 of its normal text.

    Why a hash and not a position in a sorted list: the same text gets the same code in every
    table, every run and every process (training, scoring, a new file) with no mapping to store
    or ship; a category never seen in training simply has a code the model does not know, which
    sends it down the model's "other" path. Codes stay with the party like every value.
    Do not give raw codes to LightGBM as ``categorical_feature``: it sizes its tables by the
    largest value and stalls (over a minute for 12 categories); use :func:`lightgbm_frame`.
    """
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") >> (32 - CODE_BITS)


@dataclass(frozen=True)
class EncodedTable:
    """A party's features as numbers, with what each column is.

    ``values``: float64 (rows, features), NaN = missing; a categorical column holds
    :func:`category_code` codes. ``names``: the feature columns in order; ``kinds``: per column
    ``"numeric"`` or ``"categorical"``; ``categories``: per categorical column, its texts seen
    in this table → their codes (kept by the party: the texts are data).
    """

    values: np.ndarray
    names: list[str]
    kinds: list[FeatureKind]
    categories: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def categorical(self) -> list[str]:
        """Names of the categorical columns, in table order."""
        return [n for n, k in zip(self.names, self.kinds, strict=True) if k == "categorical"]

    @property
    def categorical_indices(self) -> list[int]:
        """Positions of the categorical columns in ``names``."""
        return [j for j, k in enumerate(self.kinds) if k == "categorical"]


def _codes(values: pd.Series, column: str) -> tuple[np.ndarray, dict[str, int]]:
    """One categorical column as codes (NaN = missing) and its text → code map."""
    texts = [category_text(v) for v in values.tolist()]
    seen = sorted({t for t in texts if t is not None})
    mapping = {t: category_code(t) for t in seen}
    if len(set(mapping.values())) != len(mapping):  # ~1 in 10^7 for 100 categories
        raise CategoryError(f"column '{column}': two categories share a code; rename one")
    out = np.array([np.nan if t is None else float(mapping[t]) for t in texts], dtype=np.float64)
    return out, mapping


def encode_categories(
    df: pd.DataFrame,
    categorical: Sequence[str],
    *,
    features: Sequence[str] | None = None,
) -> EncodedTable:
    """A party's DataFrame as a numeric matrix with the categorical columns encoded.

    ``categorical``: the columns to treat as categories (declared in the config, or text columns
    the experiment inferred); every other feature must already be numeric (a text value there
    raises ``CategoryError`` naming the column and saying to declare it). ``features``: the
    feature columns in matrix order (default: every column of ``df``; leave out the key and the
    label). Categories: the text trimmed (``category_text``), missing = NaN (a bin of its own
    downstream), codes by ``category_code`` (stable across runs and files, so scoring a new
    file needs no stored mapping; an unseen category goes down the model's "other" path).
    """
    names = [str(c) for c in (df.columns if features is None else features)]
    wanted = set(categorical)
    absent = sorted((wanted | set(names)) - {str(c) for c in df.columns})
    if absent:
        raise CategoryError(f"no column(s) {', '.join(repr(a) for a in absent)} in the table")
    columns: list[np.ndarray] = []
    kinds: list[FeatureKind] = []
    maps: dict[str, dict[str, int]] = {}
    for name in names:
        if name in wanted:
            out, maps[name] = _codes(df[name], name)
            kinds.append("categorical")
        else:
            try:
                out = pd.to_numeric(df[name], errors="raise").astype(np.float64).to_numpy()
            except (TypeError, ValueError):
                raise CategoryError(
                    f"column '{name}' holds text: declare it under categorical:"
                ) from None
            kinds.append("numeric")
        columns.append(out)
    values = np.column_stack(columns) if columns else np.empty((len(df), 0))
    return EncodedTable(values=values, names=names, kinds=kinds, categories=maps)


def one_hot(
    values: np.ndarray,
    names: Sequence[str],
    categorical: Sequence[str],
    *,
    min_count: int = MIN_CATEGORY_COUNT,
) -> tuple[np.ndarray, list[str]]:
    """The matrix with each categorical column replaced by 0/1 indicators, for linear models.

    Why: a category code is a label, not a quantity; logistic regression needs one weight per
    category. One indicator per category with at least ``min_count`` rows (in code order, named
    ``"<column>=<code>"``), plus ``"<column>=other"`` when rarer ones exist — where any category
    unseen here also goes; a missing value is all zeros (the baseline the intercept carries).
    Deterministic from ``values``: a node expands its whole table once, so training and scoring
    see the same columns. Numeric columns pass through unchanged, in place.
    """
    arr = np.asarray(values, dtype=np.float64)
    nominal = set(categorical)
    if not nominal:
        return arr, list(names)
    columns: list[np.ndarray] = []
    out_names: list[str] = []
    for j, name in enumerate(names):
        col = arr[:, j]
        if name not in nominal:
            columns.append(col)
            out_names.append(name)
            continue
        present = ~np.isnan(col)
        codes, counts = np.unique(col[present], return_counts=True)
        kept = codes[counts >= min_count]
        for code in kept:
            columns.append((col == code).astype(np.float64))
            out_names.append(f"{name}={int(code)}")
        rest = present & ~np.isin(col, kept)
        if rest.any():
            columns.append(rest.astype(np.float64))
            out_names.append(f"{name}=other")
    matrix = np.column_stack(columns) if columns else np.empty((arr.shape[0], 0))
    return matrix, out_names


def one_hot_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """``one_hot`` of a party's feature frame whose ``attrs["categorical"]`` names its category
    columns (``parties.bank.table.BankTable``); a frame without them is returned as it is."""
    categorical = list(frame.attrs.get("categorical") or [])
    if not categorical:
        return frame
    values, names = one_hot(frame.to_numpy(dtype=np.float64), list(frame.columns), categorical)
    return pd.DataFrame(values, columns=names, index=frame.index)


def lightgbm_frame(frame: pd.DataFrame, categorical: Sequence[str] | None = None) -> pd.DataFrame:
    """A copy whose categorical columns (``categorical``, default ``attrs["categorical"]``)
    have pandas' category dtype, so LightGBM splits them natively (it renumbers the categories
    densely itself and maps a test frame's by value; raw 31-bit codes would be "sparse")."""
    names = list(frame.attrs.get("categorical") or []) if categorical is None else categorical
    out = frame.copy()
    for name in names:
        out[name] = pd.Categorical(out[name])
    return out


def table_as_of(table: pd.DataFrame, schema: PartySchema, as_of: date | None) -> pd.Timestamp:
    """The reference date of date columns: configured, else the latest date in the table."""
    if as_of is not None:
        return pd.Timestamp(as_of)
    dates = [table[c.name].max() for c in schema.columns if c.dtype == "date" and c.name in table]
    dates = [d for d in dates if pd.notna(d)]
    return max(dates) if dates else pd.Timestamp(0)


def encode_table(
    table: pd.DataFrame, schema: PartySchema, *, as_of: date | None = None
) -> tuple[np.ndarray, list[str]]:
    """The table's model features as float64 (NaN = missing), in schema order, and their names
    (``encode`` without the column kinds)."""
    encoded = encode(table, schema, as_of=as_of)
    return encoded.values, encoded.names


def encode(table: pd.DataFrame, schema: PartySchema, *, as_of: date | None = None) -> EncodedTable:
    """The table's model features as float64 (NaN = missing), in schema order, with their kinds.

    Numbers and booleans (already 0/1 from the loader) as they are; ordinal categories by
    ``ORDINALS``; dates as whole days before ``as_of``; columns declared ``categorical`` as
    category codes (``encode_categories``); other categories, text, the key and the label are
    left out.
    """
    ref = table_as_of(table, schema, as_of)
    columns: list[np.ndarray] = []
    names: list[str] = []
    kinds: list[FeatureKind] = []
    maps: dict[str, dict[str, int]] = {}
    for col in schema.columns:
        if col.name == schema.key or col.category == "label" or col.name not in table:
            continue
        values = table[col.name]
        if col.dtype in ("float", "int", "bool"):
            out = pd.to_numeric(values, errors="raise").astype(np.float64).to_numpy()
        elif col.dtype == "date":
            days = (ref - pd.to_datetime(values)).dt.days
            out = days.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        elif col.categorical:
            out, maps[col.name] = _codes(values, col.name)
        elif col.dtype == "category" and col.name in ORDINALS:
            out = values.map(ORDINALS[col.name]).astype(np.float64).to_numpy()
        else:
            continue
        columns.append(out)
        names.append(col.name)
        kinds.append("categorical" if col.categorical else "numeric")
    matrix = np.column_stack(columns) if columns else np.empty((len(table), 0))
    return EncodedTable(values=matrix, names=names, kinds=kinds, categories=maps)
