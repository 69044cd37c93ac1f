"""Validated, all-or-nothing loading of a party's table.

A federated model trained on a silently mangled column is wrong in a way nobody can see from
another node, so a table is either loaded whole and typed, or refused with every problem listed
(file, row, column, what is wrong) so the data owner can fix the file in one pass.

Types of the returned frame, chosen so numpy-based model code can use ``df.to_numpy(float)``
on the numeric columns without further conversion:

- ``float`` and ``int`` columns: ``float64``, NaN where missing (ints are checked to be whole);
- ``bool`` columns: ``float64`` 0.0 / 1.0, NaN where missing;
- ``date`` columns: ``datetime64[ns]``, NaT where missing;
- ``category`` and ``str`` columns: pandas ``"str"`` dtype, NaN where missing;
- index: the normalised USCC, named ``uscc``; columns in schema order, without the key.

Optional columns absent from the file are present in the result, all missing, so every loaded
table of a role has the same columns. Missing values in text files are empty cells or one of
``NA``, ``N/A``, ``NULL``, ``NaN``, ``None`` (any case). Booleans accept 1/0, true/false,
yes/no, y/n, t/f, 是/否.
"""

from __future__ import annotations

import csv
import hashlib
import io
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from federation.errors import DataValidationError
from parties.data import uscc as uscc_mod
from parties.data.schema import Column, PartySchema

__all__ = [
    "MAX_PROBLEMS",
    "QualityReport",
    "check_table",
    "load_table",
    "read_header",
    "read_raw",
    "table_digest",
]

MAX_PROBLEMS = 1000
"""Problems listed per file; the total is still counted beyond this."""

_MISSING_TOKENS = frozenset({"", "na", "n/a", "null", "nan", "none"})
_TRUE = frozenset({"1", "1.0", "true", "t", "yes", "y", "是"})
_FALSE = frozenset({"0", "0.0", "false", "f", "no", "n", "否"})
_BOOL_MAP = {**dict.fromkeys(_TRUE, 1.0), **dict.fromkeys(_FALSE, 0.0)}


@dataclass(frozen=True)
class QualityReport:
    """What ``check_table`` found; ``ok`` is true only when the file would load."""

    path: str
    role: str
    rows: int
    columns: tuple[str, ...]
    duplicate_keys: int
    invalid_keys: int
    missing: dict[str, int] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0


class _Problems:
    """Collects (row, column-order, message) triples, counting beyond the listing cap."""

    def __init__(self, file_name: str, row_label: Callable[[int], str]):
        self.file_name = file_name
        self.row_label = row_label
        self.items: list[tuple[int, int, str]] = []
        self.total = 0
        self.exclude: np.ndarray | None = None  # rows already reported as a whole (blank)

    def file(self, message: str) -> None:
        self.total += 1
        self.items.append((-1, len(self.items), f"{self.file_name}: {message}"))

    def rows(
        self,
        mask: np.ndarray,
        col_order: int,
        column: str,
        message: Callable[[int], str],
    ) -> None:
        """Record a problem for every row where ``mask`` is set (messages only up to the cap)."""
        if self.exclude is not None:
            mask = mask & ~self.exclude
        idx = np.flatnonzero(mask)
        self.total += len(idx)
        for i in idx[:MAX_PROBLEMS]:
            i = int(i)
            self.items.append(
                (
                    i,
                    col_order,
                    f"{self.file_name} {self.row_label(i)}, column {column!r}: {message(i)}",
                )
            )

    def listing(self) -> list[str]:
        ordered = [m for _, _, m in sorted(self.items, key=lambda t: (t[0], t[1]))]
        shown = ordered[:MAX_PROBLEMS]
        if self.total > len(shown):
            shown.append(f"{self.file_name}: ... {self.total - len(shown)} more problem(s)")
        return shown


# ---------------------------------------------------------------------------------------------
# Reading


def _read(path: Path) -> tuple[pd.DataFrame, bool, list[str]]:
    """Read the raw file: (frame, is_text, file-level problems). Raises OSError/ValueError."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"not UTF-8 text (byte {exc.start}); save the file as UTF-8 (or UTF-8 with BOM)"
            ) from None
        header_problems: list[str] = []
        first = next(csv.reader(io.StringIO(text)), None)
        if not first:
            raise ValueError("file is empty (no header row)")
        names = [h.strip() for h in first]
        seen: set[str] = set()
        for h in names:
            if h in seen:
                header_problems.append(f"column {h!r} appears more than once in the header")
            seen.add(h)
        df = pd.read_csv(
            io.StringIO(text),
            dtype=_STRING,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            header=0,
            names=names if not header_problems else None,
        )
        return df, True, header_problems
    if suffix in (".parquet", ".pq"):
        df = pd.read_parquet(path)
        if df.index.name is not None or isinstance(df.index, pd.MultiIndex):
            df = df.reset_index()
        df.columns = [str(c).strip() for c in df.columns]
        return df, False, []
    raise ValueError(f"unsupported file type {path.suffix!r}; expected .csv or .parquet")


_STRING = "string[pyarrow]"  # arrow-backed text: vectorised strip/lower/regex without objects


class _Cell:
    """One input column with its text form computed at most once."""

    def __init__(self, series: pd.Series):
        self.series = series
        self._text: tuple[pd.Series, np.ndarray] | None = None

    @property
    def text(self) -> tuple[pd.Series, np.ndarray]:
        """(stripped arrow-string series, missing mask) for any input dtype."""
        if self._text is None:
            s = self.series
            if s.dtype != _STRING:
                s = s.astype(object).where(s.notna(), None).astype(_STRING)
            s = s.str.strip()
            missing = (s.isna() | s.str.lower().isin(list(_MISSING_TOKENS))).to_numpy(
                dtype=bool, na_value=True
            )
            self._text = (s.reset_index(drop=True), missing)
        return self._text

    def shown(self, i: int) -> str:
        """The cell as the user wrote it, for messages."""
        value = self.series.iloc[i]
        return repr(value.item() if isinstance(value, np.generic) else value)


def _nfkc(text: pd.Series) -> pd.Series:
    """NFKC only where needed: full-width input is rare, so ASCII cells skip the Python path."""
    wide = text.str.contains(r"[^\x00-\x7f]", regex=True).to_numpy(dtype=bool, na_value=False)
    if not wide.any():
        return text
    out = text.copy()
    out[wide] = text[wide].astype(object).map(lambda v: unicodedata.normalize("NFKC", v))
    return out


# ---------------------------------------------------------------------------------------------
# Per-type parsing: each returns (typed values, missing mask, bad mask, reason for a bad row)

_Parsed = tuple[np.ndarray, np.ndarray, np.ndarray, Callable[[int], str]]


def _no_reason(i: int) -> str:  # pragma: no cover - only called for bad rows
    return "invalid value"


def _parse_number(cell: _Cell, *, integral: bool) -> _Parsed:
    s = cell.series
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        values = s.to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
    else:
        text, missing = cell.text
        values = pd.to_numeric(text.where(~missing, None), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    bad = ~missing & ~np.isfinite(values)
    if integral:
        finite = np.where(bad | missing, 0.0, values)
        bad |= ~missing & (finite != np.round(finite))
    values = np.where(bad | missing, np.nan, values)
    kind = "whole number" if integral else "number"
    return values, missing, bad, lambda i: f"{cell.shown(i)} is not a {kind}"


def _parse_bool(cell: _Cell) -> _Parsed:
    s = cell.series
    if pd.api.types.is_bool_dtype(s.dtype):
        values = s.astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)
        missing = np.isnan(values)
        return values, missing, np.zeros(len(s), bool), _no_reason
    text, missing = cell.text
    values = text.str.lower().map(_BOOL_MAP).to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~missing & np.isnan(values)
    values = np.where(missing, np.nan, values)
    return (
        values,
        missing,
        bad,
        lambda i: f"{cell.shown(i)} is not yes/no (use 1/0, true/false, yes/no, 是/否)",
    )


def _parse_date(cell: _Cell) -> _Parsed:
    s = cell.series
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        if getattr(s.dt, "tz", None) is not None:
            s = s.dt.tz_localize(None)
        values = s.astype("datetime64[ns]").to_numpy()
        return values, np.isnat(values), np.zeros(len(s), bool), _no_reason
    text, missing = cell.text
    parsed = pd.to_datetime(
        text.where(~missing, None).astype(object), format="ISO8601", errors="coerce"
    )
    values = pd.Series(parsed).astype("datetime64[ns]").to_numpy()
    bad = ~missing & np.isnat(values)
    return values, missing, bad, lambda i: f"{cell.shown(i)} is not a date (expected YYYY-MM-DD)"


def _parse_text(cell: _Cell) -> _Parsed:
    text, missing = cell.text
    values = _nfkc(text).to_numpy(dtype=object, na_value=None)
    return values, missing, np.zeros(len(missing), bool), _no_reason


# ---------------------------------------------------------------------------------------------
# Validation


@dataclass
class _Outcome:
    frame: pd.DataFrame | None
    problems: list[str]
    problem_count: int
    rows: int
    columns: tuple[str, ...]
    duplicate_keys: int
    invalid_keys: int
    missing: dict[str, int]


def _validate(path: Path, schema: PartySchema) -> _Outcome:
    name = path.name

    def fail(message: str) -> _Outcome:
        return _Outcome(None, [f"{name}: {message}"], 1, 0, (), 0, 0, {})

    try:
        raw, is_text, header_problems = _read(path)
    except FileNotFoundError:
        return fail(f"file not found ({path})")
    except (OSError, ValueError) as exc:  # pandas/pyarrow parse errors derive from these
        return fail(f"cannot read: {exc}")
    except Exception as exc:  # pyarrow raises its own types for corrupt parquet files
        return fail(f"cannot read: {type(exc).__name__}: {exc}")

    cells = {col: _Cell(raw[col].reset_index(drop=True)) for col in raw.columns}
    n = len(raw)
    blank = np.zeros(n, dtype=bool)
    if is_text:
        blank = np.ones(n, dtype=bool)
        for cell in cells.values():
            blank &= cell.text[1]
        # Empty rows at the very end are an artefact of spreadsheet export; drop them.
        n = n - int(np.argmin(blank[::-1])) if not blank.all() else 0
        if n < len(blank):
            blank = blank[:n]
            cells = {col: _Cell(raw[col].iloc[:n].reset_index(drop=True)) for col in raw.columns}

        def row_label(i: int) -> str:
            return f"row {i + 2}"
    else:

        def row_label(i: int) -> str:
            return f"record {i + 1}"

    probs = _Problems(name, row_label)
    if blank.any():
        probs.rows(blank, -1, "*", lambda i: "empty row")
        probs.exclude = blank
    for p in header_problems:
        probs.file(p)
    present = list(raw.columns)
    order = {c.name: k for k, c in enumerate(schema.columns)}

    for col in present:
        if col not in order and schema.extra_columns == "refuse":
            probs.file(
                f"unknown column {col!r}: not in the {schema.role} schema "
                "(schema drift? remove it or update the schema)"
            )
    for c in schema.columns:
        if c.name not in present and c.required:
            probs.file(f"required column {c.name!r} ({c.label_zh}) is missing")

    typed: dict[str, np.ndarray] = {}
    missing_counts: dict[str, int] = {}
    keys: np.ndarray | None = None
    n_invalid = n_dupes = 0

    if schema.key in present:
        keys, key_missing, n_invalid, n_dupes = _check_keys(
            cells[schema.key], schema, order[schema.key], probs, blank, row_label
        )
        missing_counts[schema.key] = key_missing

    for c in schema.columns:
        if c.name == schema.key or c.name not in present:
            continue
        values, missing = _check_column(cells[c.name], c, order[c.name], probs)
        missing_counts[c.name] = int(missing.sum())
        typed[c.name] = values

    columns = tuple(present)
    listing = probs.listing()
    if probs.total or keys is None:
        return _Outcome(None, listing, probs.total, n, columns, n_dupes, n_invalid, missing_counts)

    frame = _typed_frame(schema, typed, keys, n)
    return _Outcome(frame, [], 0, n, columns, 0, 0, missing_counts)


def _check_keys(
    cell: _Cell,
    schema: PartySchema,
    k_order: int,
    probs: _Problems,
    blank: np.ndarray,
    row_label: Callable[[int], str],
) -> tuple[np.ndarray, int, int, int]:
    """The key: normalise, then validate every code at once (missing, invalid, duplicate).

    Returns the normalised codes and the counts of missing, invalid and duplicate ones."""
    text, missing = cell.text
    n = len(missing)
    if schema.key_kind == "uscc":
        norm = (
            _nfkc(text.where(~missing, ""))
            .str.replace(r"\s+", "", regex=True)
            .str.upper()
            .to_numpy(dtype=object, na_value="")
        )
        reasons = uscc_mod.problems(np.where(missing, "0" * 18, norm).astype(str))
    else:  # plain keys (benchmark row ids), normalised like USCCs, each mapped to a valid USCC
        plain = uscc_mod.normalise_plain(text.where(~missing, "").astype(object))
        norm = np.full(n, "", dtype=object)
        present_ids = ~missing & (plain != "")
        if present_ids.any():
            norm[present_ids] = uscc_mod.from_plain_id(plain[present_ids])
        missing = missing | ~present_ids
        reasons = np.full(n, None, dtype=object)
    probs.rows(missing, k_order, schema.key, lambda i: "missing enterprise code")
    invalid = ~missing & pd.notna(reasons)
    probs.rows(invalid, k_order, schema.key, lambda i: str(reasons[i]))
    valid = ~missing & ~invalid & ~blank
    dup = pd.Series(np.where(valid, norm, None)).duplicated(keep="first").to_numpy() & valid
    n_dupes = int(dup.sum())
    if n_dupes:
        first_at = pd.Series(np.arange(n)).groupby(norm).transform("min").to_numpy()
        probs.rows(
            dup,
            k_order,
            schema.key,
            lambda i: f"duplicate code {norm[i]}, first seen at {row_label(int(first_at[i]))}",
        )
    return norm, int(missing.sum()), int(invalid.sum()), n_dupes


def _typed_frame(
    schema: PartySchema, typed: dict[str, np.ndarray], keys: np.ndarray, n: int
) -> pd.DataFrame:
    """The validated table: every schema column (absent optional ones empty), indexed by key."""
    data: dict[str, object] = {}
    for c in schema.columns:
        if c.name == schema.key:
            continue
        if c.dtype == "date":
            data[c.name] = typed.get(c.name, np.full(n, np.datetime64("NaT"), "datetime64[ns]"))
        elif c.dtype in ("str", "category"):
            data[c.name] = pd.Series(typed.get(c.name, np.full(n, None, object)), dtype="str")
        else:
            data[c.name] = typed.get(c.name, np.full(n, np.nan))
    index = pd.Index(keys.astype(str), name=schema.key, dtype="str")
    frame = pd.DataFrame({k: np.asarray(v) for k, v in data.items()}, index=index)
    for c in schema.columns:
        if c.dtype in ("str", "category") and c.name != schema.key:
            frame[c.name] = pd.Series(
                np.asarray(data[c.name], dtype=object), index=index, dtype="str"
            )
    return frame


def _check_column(
    cell: _Cell, c: Column, col_order: int, probs: _Problems
) -> tuple[np.ndarray, np.ndarray]:
    """Parse one column into its typed values, recording its problems; (values, missing)."""
    if c.dtype in ("float", "int"):
        values, missing, bad, reason = _parse_number(cell, integral=c.dtype == "int")
    elif c.dtype == "bool":
        values, missing, bad, reason = _parse_bool(cell)
    elif c.dtype == "date":
        values, missing, bad, reason = _parse_date(cell)
    else:
        values, missing, bad, reason = _parse_text(cell)

    if c.required:
        probs.rows(missing, col_order, c.name, lambda i: "missing value (required)")
    probs.rows(bad, col_order, c.name, reason)
    ok = ~missing & ~bad
    if c.min_value is not None:
        floor = float(c.min_value)
        below = ok & (np.where(ok, values, np.inf) < floor)
        probs.rows(
            below,
            col_order,
            c.name,
            lambda i: f"value {values[i]:g} is below the minimum {floor:g}",
        )
    if c.allowed is not None:
        keyed = values if c.dtype in ("str", "category") else values.astype(str)
        outside = ok & ~pd.Series(keyed).isin(list(c.allowed)).to_numpy()
        shown = ", ".join(c.allowed)
        probs.rows(
            outside,
            col_order,
            c.name,
            lambda i: f"value {keyed[i]!r} not allowed (allowed: {shown})",
        )
    return values, missing


# ---------------------------------------------------------------------------------------------
# Public API


def read_header(path: str | Path) -> list[str]:
    """The column names of a .csv or .parquet file, without reading its rows."""
    p = Path(path)
    try:
        if p.suffix.lower() in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return [str(c) for c in pq.read_schema(p).names if not str(c).startswith("__")]
        with p.open(encoding="utf-8-sig", newline="") as fh:
            first = next(csv.reader(fh), None)
    except FileNotFoundError:
        raise DataValidationError(str(p), [f"{p.name}: file not found ({p})"]) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataValidationError(str(p), [f"{p.name}: cannot read the header: {exc}"]) from None
    if not first:
        raise DataValidationError(str(p), [f"{p.name}: file is empty (no header row)"])
    return [h.strip() for h in first]


def read_raw(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """The file's cells before any typing (text files: every cell as stripped text, missing
    tokens as ``None``) and its file-level problems; ``DataValidationError`` naming the file when
    it is absent or unreadable.

    Why: an experiment's check looks at whole columns first (is this column text? are these
    labels 0/1?) so it can say one thing per column instead of one thing per row.
    """
    p = Path(path)
    try:
        raw, _is_text, header_problems = _read(p)
    except FileNotFoundError:
        raise DataValidationError(str(p), [f"{p.name}: file not found ({p})"]) from None
    except Exception as exc:  # OSError, ValueError, pyarrow's own types: the file is unusable
        raise DataValidationError(str(p), [f"{p.name}: cannot read: {exc}"]) from None
    out = {}
    for col in raw.columns:
        text, missing = _Cell(raw[col].reset_index(drop=True)).text
        values = text.to_numpy(dtype=object, na_value=None)
        values[missing] = None
        out[col] = values
    frame = pd.DataFrame(out, columns=list(raw.columns)) if out else pd.DataFrame()
    return frame, [f"{p.name}: {m}" for m in header_problems]


def load_table(path: str | Path, schema: PartySchema) -> pd.DataFrame:
    """Load and validate ``path`` (.csv or .parquet) against ``schema``.

    Returns the typed frame indexed by normalised USCC, or raises ``DataValidationError``
    listing every problem found (up to ``MAX_PROBLEMS``); nothing is returned on error.
    """
    p = Path(path)
    outcome = _validate(p, schema)
    if outcome.frame is None:
        raise DataValidationError(str(p), outcome.problems)
    return outcome.frame


def check_table(path: str | Path, schema: PartySchema) -> QualityReport:
    """Run ``load_table``'s validation and report on it instead of raising."""
    p = Path(path)
    o = _validate(p, schema)
    return QualityReport(
        path=str(p),
        role=schema.role,
        rows=o.rows,
        columns=o.columns,
        duplicate_keys=o.duplicate_keys,
        invalid_keys=o.invalid_keys,
        missing=o.missing,
        problems=tuple(o.problems),
        problem_count=o.problem_count,
    )


def table_digest(df: pd.DataFrame) -> str:
    """sha256 of a canonical form of a loaded table: row and column order do not matter.

    Why: a party records which exact data a model was trained on (lineage) without revealing
    it. The form covers the index name and values, each column's name, kind and values, with
    floats as IEEE bytes (one NaN, no negative zero), dates as nanoseconds, text as UTF-8, so
    the CSV and the Parquet of the same data give the same digest.
    """
    order = np.argsort(df.index.to_numpy().astype(str), kind="stable")
    h = hashlib.sha256(b"xinyidai-table-digest-v1\x00")

    def put_text(values: np.ndarray) -> None:
        missing = pd.isna(values)
        encoded = [b"" if m else str(v).encode() for v, m in zip(values, missing, strict=True)]
        lengths = np.array([len(e) for e in encoded], dtype="<i8")
        lengths[missing] = -1
        h.update(lengths.tobytes())
        h.update(b"".join(encoded))

    h.update(f"index:{df.index.name}\x00".encode())
    put_text(df.index.to_numpy()[order])
    for col in sorted(df.columns, key=str):
        s = df[col]
        values = s.to_numpy()[order]
        if pd.api.types.is_datetime64_any_dtype(s.dtype):
            kind = "date"
            ns = s.astype("datetime64[ns]").to_numpy()[order].view("<i8").copy()
            payload = ns.tobytes()
        elif pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            kind = "num"
            f = s.to_numpy(dtype=np.float64, na_value=np.nan)[order] + 0.0  # -0.0 -> 0.0
            f[np.isnan(f)] = np.nan
            payload = f.astype("<f8").tobytes()
        else:
            kind = "text"
            payload = None
        h.update(f"column:{col}:{kind}\x00".encode())
        if payload is None:
            put_text(values)
        else:
            h.update(payload)
    return h.hexdigest()
