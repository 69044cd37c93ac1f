"""A holder's side of alignment and the training view of its table.

- ``encode_table``: the numeric form every party gives its own validated table before binning
  (the encoding stays with the party; only bins of it are ever used, and those stay local too).
- ``AlignmentStore``: the rows of this node's table in the common order of each PSI job, written
  atomically under ``NODE_DIR/alignments/`` and checked against the table they were made on.
- ``PsiSessions``: open PSI jobs (one ``federation.psi.PsiHolder`` per calling bank and job).
- ``TrainingView.features_for``: what ``SecureBoostHolderServicer`` trains on — the encoded
  table restricted to and reordered by one stored alignment.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.errors import XinyidaiError
from federation.files import write_atomic
from federation.psi import PsiHolder
from parties.data.schema import TAX_CREDIT_GRADES, PartySchema

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

ORDINALS: dict[str, dict[str, float]] = {
    # 纳税信用等级 in risk order: A (best) > B > M (new enterprises) > C > D (worst).
    "tax_credit_grade": {
        g: float(len(TAX_CREDIT_GRADES) - i) for i, g in enumerate(TAX_CREDIT_GRADES)
    }
}
"""Categorical columns with a natural order, encoded as numbers (higher = better grade).
Other categorical columns (``industry``: nominal GB/T 4754 sections) are not model features."""


class AlignmentError(XinyidaiError):
    """An alignment is missing, damaged, or was made on a different table."""


def check_name(value: str, what: str) -> str:
    if not _NAME.match(value or ""):
        raise AlignmentError(f"{what} {value!r} must match {_NAME.pattern}")
    return value


# ---------------------------------------------------------------------------------------------
# numeric encoding of a validated table


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


# ---------------------------------------------------------------------------------------------
# stored alignments


def codes_digest(codes: Sequence[str]) -> str:
    """sha256 over the table's codes in row order: an alignment is valid only for this table."""
    h = hashlib.sha256(b"xinyidai-alignment-table|")
    for code in codes:
        h.update(code.encode("ascii", "replace") + b"\n")
    return h.hexdigest()


def rows_to_bytes(rows: np.ndarray) -> bytes:
    return np.asarray(rows, dtype="<u4").tobytes()


class AlignmentStore:
    """``<root>/<bank>/<job>.rows`` (uint32 LE table rows, common order) + ``<job>.json``.

    The JSON is written last and carries the rows' sha256, the row count and the digest of the
    table's codes, so a half-written, edited or stale alignment is refused, never used.
    """

    def __init__(self, root: Path, *, node_id: str, table_codes: Sequence[str]):
        self.root = root
        self.node_id = node_id
        self.n_table = len(table_codes)
        self.digest = codes_digest(table_codes)

    def _paths(self, bank: str, job_id: str) -> tuple[Path, Path]:
        base = self.root / check_name(bank, "bank") / check_name(job_id, "alignment id")
        return base.with_suffix(".rows"), base.with_suffix(".json")

    def exists(self, bank: str, job_id: str) -> bool:
        return self._paths(bank, job_id)[1].exists()

    def save(self, bank: str, job_id: str, rows: np.ndarray, **extra: Any) -> None:
        rows_path, meta_path = self._paths(bank, job_id)
        data = rows_to_bytes(rows)
        write_atomic(rows_path, data)
        meta = {
            "format": "xinyidai.alignment/1",
            "node_id": self.node_id,
            "bank": bank,
            "job_id": job_id,
            "size": len(rows),
            "rows_sha256": hashlib.sha256(data).hexdigest(),
            "table_rows": self.n_table,
            "table_digest": self.digest,
            "created": time.time(),
            **extra,
        }
        write_atomic(meta_path, json.dumps(meta, indent=1).encode())

    def load(self, bank: str, job_id: str) -> np.ndarray:
        rows_path, meta_path = self._paths(bank, job_id)
        where = f"alignment '{job_id}' of bank '{bank}'"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = rows_path.read_bytes()
        except FileNotFoundError:
            raise AlignmentError(f"{where} does not exist (run PSI first)") from None
        except (OSError, ValueError) as exc:
            raise AlignmentError(f"{where} cannot be read: {exc}") from None
        if meta.get("table_digest") != self.digest:
            raise AlignmentError(f"{where} was made on a different table; align again")
        if hashlib.sha256(data).hexdigest() != meta.get("rows_sha256"):
            raise AlignmentError(f"{where} is damaged (rows do not match their digest)")
        rows = np.frombuffer(data, dtype="<u4").astype(np.int64)
        if rows.size != meta.get("size") or (rows.size and rows.max() >= self.n_table):
            raise AlignmentError(f"{where} is damaged (size or row out of range)")
        return rows


# ---------------------------------------------------------------------------------------------
# open PSI jobs


class PsiSessions:
    """Open PSI jobs per (bank, job), at most ``max_open`` per bank (each holds a set in memory)."""

    def __init__(self, *, max_open: int = 8):
        self.max_open = max_open
        self._open: dict[tuple[str, str], PsiHolder] = {}
        self._lock = threading.Lock()

    def add(self, bank: str, job_id: str, holder: PsiHolder) -> None:
        with self._lock:
            if (bank, job_id) in self._open:
                raise AlignmentError(f"PSI job '{job_id}' is already open for bank '{bank}'")
            if sum(1 for b, _ in self._open if b == bank) >= self.max_open:
                raise AlignmentError(
                    f"bank '{bank}' has {self.max_open} PSI jobs open; finish or abort one first"
                )
            self._open[(bank, job_id)] = holder

    def get(self, bank: str, job_id: str) -> PsiHolder:
        with self._lock:
            found = self._open.get((bank, job_id))
        if found is None:
            raise AlignmentError(f"no open PSI job '{job_id}' for bank '{bank}' (PsiStart first)")
        return found

    def drop(self, bank: str, job_id: str) -> bool:
        with self._lock:
            return self._open.pop((bank, job_id), None) is not None


# ---------------------------------------------------------------------------------------------
# what SecureBoost trains on


class TrainingView:
    """The holder's encoded table, served per alignment (``features_for`` of the servicer)."""

    def __init__(
        self,
        table: pd.DataFrame,
        schema: PartySchema,
        store: AlignmentStore,
        *,
        as_of: date | None = None,
    ):
        self.store = store
        self.values, self.names = encode_table(table, schema, as_of=as_of)

    def features_for(self, bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
        if not alignment_id:
            raise AlignmentError("a training job must name its alignment (a PSI job id)")
        rows = self.store.load(bank, alignment_id)
        return self.values[rows], self.names


__all__ = [
    "ORDINALS",
    "AlignmentError",
    "AlignmentStore",
    "PsiSessions",
    "TrainingView",
    "codes_digest",
    "encode_table",
]
