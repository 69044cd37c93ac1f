"""The numeric form every party gives its own validated table before binning.

Why with the data and not with a protocol: the encoding is the party's own business (which
columns are features, how a grade or a date becomes a number), shared by everything that reads
the table — training at a holder, the bank's table for training and scoring, the experiment
runner's centralised baselines. Only bins of these values are ever used by a model, and those
stay with the party too.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from parties.data.schema import TAX_CREDIT_GRADES, PartySchema

__all__ = ["ORDINALS", "encode_table", "table_as_of"]

ORDINALS: dict[str, dict[str, float]] = {
    # 纳税信用等级 in risk order: A (best) > B > M (new enterprises) > C > D (worst).
    "tax_credit_grade": {
        g: float(len(TAX_CREDIT_GRADES) - i) for i, g in enumerate(TAX_CREDIT_GRADES)
    }
}
"""Categorical columns with a natural order, encoded as numbers (higher = better grade).
Other categorical columns (``industry``: nominal GB/T 4754 sections) are not model features."""


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
    """The table's model features as float64 (NaN = missing), in schema order, and their names.

    Numbers and booleans (already 0/1 from the loader) as they are; ordinal categories by
    ``ORDINALS``; dates as whole days before ``as_of``; other categories, text, the key and the
    label are left out.
    """
    ref = table_as_of(table, schema, as_of)
    columns: list[np.ndarray] = []
    names: list[str] = []
    for col in schema.columns:
        if col.name == schema.key or col.category == "label" or col.name not in table:
            continue
        values = table[col.name]
        if col.dtype in ("float", "int", "bool"):
            out = pd.to_numeric(values, errors="raise").astype(np.float64).to_numpy()
        elif col.dtype == "date":
            days = (ref - pd.to_datetime(values)).dt.days
            out = days.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        elif col.dtype == "category" and col.name in ORDINALS:
            out = values.map(ORDINALS[col.name]).astype(np.float64).to_numpy()
        else:
            continue
        columns.append(out)
        names.append(col.name)
    if not columns:
        return np.empty((len(table), 0)), names
    return np.column_stack(columns), names
