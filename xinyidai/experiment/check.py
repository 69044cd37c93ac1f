"""``xinyidai experiment check CONFIG``: every problem of an experiment's files, before anything starts.

Why a check of its own, run again at the start of ``experiment run``: a wrong label or feature
column used to surface only after three node processes had started and a progress bar had been
printed, one problem at a time, sometimes naming no file. Here each party's file is read once,
in this process (the data scientist's own files), and every problem is listed at once, each
naming the file, column and (for row problems) rows: a missing file (before anything about its
columns), absent columns, text columns not declared categorical, labels other than 0/1, keys
that are missing, invalid (after normalisation) or duplicated, and the overlap between the
parties' keys (exact here; the federation's PSI finds the same set without the files in one
place).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from federation.errors import ConfigError, DataValidationError, XinyidaiError
from federation.ids import short
from xinyidai.experiment.config import ExperimentConfig, PartyConfig

SHOWN_ROWS = 5
"""Row numbers (and values) listed per problem; the count says how many there are."""

SHOWN_PER_FILE = 20
"""Row-level problems listed per file by the check; the rest are counted."""

TEXT_SHARE = 0.5
"""A feature column is text when fewer than this share of its filled cells are numbers; a
mostly numeric column with a few bad cells is a numeric column with errors (named by row)."""


@dataclass
class PartyCheck:
    """What the check found about one party's file."""

    name: str
    path: Path
    rows: int = 0
    features: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    inferred: list[str] = field(default_factory=list)  # text columns found, not declared
    keys: set[str] = field(default_factory=set)  # normalised, valid codes


@dataclass
class ExperimentCheck:
    """Every problem (``problems``), what the reader should know (``notes``), per party what
    was found, and the overlap of the parties' keys."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    parties: dict[str, PartyCheck] = field(default_factory=dict)
    overlap: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_problems(self, source: str) -> None:
        """``ConfigError`` listing every problem (``experiment run`` stops here)."""
        if self.problems:
            listing = "\n  ".join(self.problems)
            raise ConfigError(
                f"{source}: {len(self.problems)} problem(s), nothing started:\n  {listing}"
            )

    def applied(self, config: ExperimentConfig) -> ExperimentConfig:
        """``config`` with each party's ``categorical`` completed by the text columns found
        (what the nodes, the bank and the centralised comparison then all use)."""
        out = config.model_copy(deep=True)
        for name, party in out.parties().items():
            found = self.parties.get(name)
            if found is not None and found.inferred:
                party.categorical = [*(party.categorical or []), *found.inferred]
        return out


def check_experiment(config: ExperimentConfig) -> ExperimentCheck:
    """Check every party's file of ``config`` (paths absolute) without starting anything."""
    report = ExperimentCheck()
    for name, party in config.parties().items():
        found = _check_party(name, party, config, report)
        if found is not None:
            report.parties[name] = found
    _check_split(config, report)
    _overlap(config, report)
    return report


def check_party(config: ExperimentConfig, name: str) -> ExperimentCheck:
    """Check one party's file of ``config`` (``xinyidai data check --config``): no overlap."""
    parties = config.parties()
    if name not in parties:
        raise ConfigError(f"no party {name!r} in experiment {config.name!r} ({', '.join(parties)})")
    report = ExperimentCheck()
    found = _check_party(name, parties[name], config, report)
    if found is not None:
        report.parties[name] = found
    return report


def rows_text(rows: np.ndarray | list[int], total: int | None = None) -> str:
    """'row 7' / 'rows 2, 5, 9 (and 41 more)' for 0-based data rows of a text file."""
    shown = [int(r) + 2 for r in list(rows)[:SHOWN_ROWS]]
    n = len(rows) if total is None else total
    more = f" (and {n - len(shown)} more)" if n > len(shown) else ""
    word = "row" if n == 1 else "rows"
    return f"{word} {', '.join(str(r) for r in shown)}{more}"


def _check_party(
    name: str, party: PartyConfig, config: ExperimentConfig, report: ExperimentCheck
) -> PartyCheck | None:
    from parties.data.loader import read_raw

    file = party.path.name
    try:
        raw, file_problems = read_raw(party.path)
    except DataValidationError as exc:  # missing or unreadable: nothing about its columns
        report.problems += [f"{name}: {p}" for p in exc.problems]
        return None
    report.problems += [f"{name}: {p}" for p in file_problems]
    found = PartyCheck(name, party.path, rows=_data_rows(raw))
    if party.schema_role is not None:
        _check_role_table(name, party, found, report, raw)
        return found
    header = [str(c) for c in raw.columns]
    label = config.bank.label_column if name == "bank" else None
    wanted = _wanted_columns(name, party, header, label, report)
    if wanted is None:
        return found
    features, declared = wanted
    numeric: list[str] = []
    for col in features:
        if col in declared:
            continue
        text_values = _text_values(raw[col].to_numpy(dtype=object))
        if text_values is None:
            numeric.append(col)
        else:
            found.inferred.append(col)
            shown = ", ".join(short(v, 32) for v in text_values[:3])
            report.notes.append(
                f"{name}: {file} column {col!r} holds text ({shown}...): treated as categorical "
                "(declare it under categorical: to silence this note)"
            )
    found.features = list(features)
    found.categorical = [c for c in features if c in declared or c in found.inferred]
    if label is not None:
        _check_label(name, file, label, raw[label].to_numpy(dtype=object), report)
    _check_generic_rows(name, party, numeric, found, report)
    found.keys = party_keys(party, raw=raw)
    _check_aliases(name, party, found, report)
    return found


def _check_aliases(
    name: str, party: PartyConfig, found: PartyCheck, report: ExperimentCheck
) -> None:
    """The names the party will publish for its features (``labels``) are distinct and
    printable, as its node will require at start."""
    if not party.labels or not found.features:
        return
    from parties.data.schema import generic_schema
    from parties.summary import feature_aliases

    try:
        schema = generic_schema(
            name, id_column=party.id_column, id_kind=party.id_kind, features=found.features
        )
        feature_aliases(
            name, schema, {k: v for k, v in party.labels.items() if k in found.features}
        )
    except XinyidaiError as exc:
        report.problems.append(f"{name}: {exc}")


def _data_rows(raw: pd.DataFrame) -> int:
    """Rows up to the last non-empty one (trailing empty rows of a spreadsheet export do not
    count, as the loader drops them)."""
    if raw.empty:
        return 0
    filled = raw.notna().any(axis=1).to_numpy()
    return int(np.flatnonzero(filled)[-1]) + 1 if filled.any() else 0


def _wanted_columns(
    name: str,
    party: PartyConfig,
    header: list[str],
    label: str | None,
    report: ExperimentCheck,
) -> tuple[list[str], set[str]] | None:
    """(feature columns, declared categorical columns), or ``None`` when the key is absent; each
    absent column is one problem naming the file, the column and the config field."""
    file = party.path.name
    where = "bank" if name == "bank" else f"holders.{name}"
    columns = ", ".join(repr(c) for c in header[:12]) + (" ..." if len(header) > 12 else "")
    absent: list[tuple[str, str]] = []
    if party.id_column not in header:
        absent.append((party.id_column, "id_column"))
    if label is not None and label not in header:
        absent.append((label, "label_column"))
    features = party.features
    if features is None:
        features = [c for c in header if c not in (party.id_column, label)]
    absent += [(c, "features") for c in features if c not in header]
    declared = set(party.categorical or [])
    absent += [(c, "categorical") for c in party.categorical or [] if c not in header]
    for col, config_field in absent:
        report.problems.append(
            f"{name}: {file} has no column {col!r} ({where}.{config_field}); its columns: {columns}"
        )
    for col in sorted(declared & {party.id_column, label or party.id_column}):
        report.problems.append(
            f"{name}: {where}.categorical lists {col!r}, the key or label column, not a feature"
        )
    for col in sorted(declared - set(features) - {party.id_column, label or party.id_column}):
        if col in header:
            report.problems.append(
                f"{name}: {where}.categorical lists {col!r}, which is not among its features"
            )
    for col in sorted(set(party.labels or {}) - set(features)):
        report.problems.append(
            f"{name}: {where}.labels names {col!r}, which is not among its features"
        )
    if party.id_column not in header:
        return None
    present = [c for c in features if c in header]
    if not present and not absent:
        report.problems.append(f"{name}: {file} has no feature columns")
    return present, declared


def _text_values(values: np.ndarray) -> list[str] | None:
    """The distinct non-numeric values (first seen first) of a text column, or ``None`` when
    the column is numeric (most filled cells are numbers; the loader names its bad cells)."""
    filled = np.array([v is not None for v in values], dtype=bool)
    if not filled.any():
        return None
    cells = pd.Series(values[filled], dtype=object)
    numbers = pd.to_numeric(cells, errors="coerce")
    share = float(numbers.notna().mean())
    if share >= TEXT_SHARE:
        return None
    return [str(v) for v in pd.unique(cells[numbers.isna()])]


def _check_label(
    name: str, file: str, label: str, values: np.ndarray, report: ExperimentCheck
) -> None:
    """Labels are 0/1 (missing: an unlabelled row); the values found otherwise, the first few,
    with their rows."""
    filled = np.array([v is not None for v in values], dtype=bool)
    numbers = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(
        dtype=np.float64, na_value=np.nan
    )
    bad = filled & ~np.isin(numbers, (0.0, 1.0))
    if bad.any():
        rows = np.flatnonzero(bad)
        distinct = list(pd.unique(pd.Series(values[rows], dtype=object)))
        shown = ", ".join(short(str(v), 32) for v in distinct[:SHOWN_ROWS])
        more = f" and {len(distinct) - SHOWN_ROWS} other value(s)" if len(distinct) > 5 else ""
        report.problems.append(
            f"{name}: {file} column {label!r} (the label) must hold 0 or 1 (missing: unlabelled); "
            f"found {shown}{more} in {len(rows)} row(s): {rows_text(rows)}"
        )
        return
    kinds = set(numbers[filled].tolist())
    if filled.any() and len(kinds) < 2:
        only = int(next(iter(kinds)))
        report.problems.append(
            f"{name}: {file} column {label!r} (the label) holds only {only}: a model needs both "
            "classes"
        )


def _check_generic_rows(
    name: str,
    party: PartyConfig,
    numeric: list[str],
    found: PartyCheck,
    report: ExperimentCheck,
) -> None:
    """The loader's own row checks (keys: missing, invalid after normalisation, duplicated;
    numeric cells that are not numbers), exactly as a node will run them; then the keys."""
    from parties.data.loader import check_table
    from parties.data.schema import generic_schema

    try:
        schema = generic_schema(
            name,
            id_column=party.id_column,
            id_kind=party.id_kind,
            features=numeric,
            category=party.category,
        )
    except XinyidaiError as exc:
        report.problems.append(f"{name}: {exc}")
        return
    quality = check_table(party.path, schema)
    _add_row_problems(name, quality.problems, quality.problem_count, report)


def _check_role_table(
    name: str, party: PartyConfig, found: PartyCheck, report: ExperimentCheck, raw: pd.DataFrame
) -> None:
    from parties.data.loader import check_table
    from parties.data.schema import schema_for

    if party.features is not None or party.categorical:
        report.problems.append(
            f"{name}: features/categorical come from the {party.schema_role} schema "
            "(schema_role); remove them from the config"
        )
    schema = schema_for(str(party.schema_role))
    quality = check_table(party.path, schema)
    _add_row_problems(name, quality.problems, quality.problem_count, report)
    found.features = list(schema.feature_columns)
    found.keys = party_keys(party, key=schema.key, raw=raw)


def _add_row_problems(
    name: str, problems: tuple[str, ...], count: int, report: ExperimentCheck
) -> None:
    shown = list(problems[:SHOWN_PER_FILE])
    report.problems += [f"{name}: {p}" for p in shown]
    if count > len(shown):
        report.problems.append(f"{name}: ... {count - len(shown)} more problem(s) in this file")


def party_keys(
    party: PartyConfig, *, key: str | None = None, raw: pd.DataFrame | None = None
) -> set[str]:
    """The party's valid keys as the nodes will match them (USCCs normalised; plain ids
    normalised and mapped to their USCCs); ``raw``: the file as ``read_raw`` gave it."""
    from parties.data import uscc
    from parties.data.loader import read_raw

    column = key or party.id_column
    if raw is None:
        raw, _ = read_raw(party.path)
    if column not in raw.columns:
        return set()
    values = raw[column].to_numpy(dtype=object)
    filled = np.array([v is not None for v in values], dtype=bool)
    if party.schema_role is not None or party.id_kind == "uscc":
        codes = np.array([uscc.normalise(v) for v in values[filled]], dtype=object)
        ok = pd.isna(uscc.problems(codes)) if codes.size else np.zeros(0, bool)
        return set(codes[ok].tolist())
    ids = uscc.normalise_plain(values[filled])
    ids = ids[ids != ""]
    return set(uscc.from_plain_id(ids).tolist()) if ids.size else set()


def _check_split(config: ExperimentConfig, report: ExperimentCheck) -> None:
    """``id_mod`` needs integer ids at the bank (the rule is applied to them)."""
    if config.split.kind != "id_mod" or "bank" not in report.parties:
        return
    from xinyidai.experiment.jobs import is_test_rule

    try:
        is_test_rule(config)
    except (ConfigError, ValueError, KeyError) as exc:
        report.problems.append(f"bank: {exc}")


def _overlap(config: ExperimentConfig, report: ExperimentCheck) -> None:
    """The parties' common keys: bank ∩ each holder and ∩ all, with the rows that will not
    join said (never silently dropped); below ``psi.min_overlap`` is a problem."""
    from federation.psi.results import required

    bank = report.parties.get("bank")
    if bank is None or not bank.keys:
        return
    common = set(bank.keys)
    need = required(config.psi.spec(), len(bank.keys))
    for holder in config.holders:
        if holder not in report.parties:
            continue  # its file is the problem already named
        keys = report.parties[holder].keys
        both = len(bank.keys & keys)
        report.overlap[f"bank&{holder}"] = both
        common &= keys
        if both < need:
            report.problems.append(
                f"overlap: the bank and {holder} share {both} of the bank's {len(bank.keys)} "
                f"keys; {need} required (psi.min_overlap) — do the key columns "
                f"({config.bank.id_column!r}, {config.holders[holder].id_column!r}) hold the "
                "same ids?"
            )
        elif both < len(bank.keys):
            report.notes.append(
                f"overlap: {len(bank.keys) - both} of the bank's {len(bank.keys)} keys have no "
                f"row at {holder}"
            )
    if any(h not in report.parties for h in config.holders):
        return
    report.overlap["all"] = len(common)
    unjoined = len(bank.keys) - len(common)
    if unjoined and len(common) >= need:
        report.notes.append(
            f"overlap: {len(common)} of the bank's {len(bank.keys)} keys are at every holder; "
            f"{unjoined} bank row(s) will not join and are left out of training and testing"
        )
    elif len(common) < need and len(config.holders) > 1:
        report.problems.append(
            f"overlap: {len(common)} keys common to every party; {need} required (psi.min_overlap)"
        )


def check_summary(report: ExperimentCheck) -> list[str]:
    """One line per party (rows, keys, features, categorical) and one for the overlap."""
    lines = []
    for name, p in report.parties.items():
        cats = f", categorical: {', '.join(p.categorical)}" if p.categorical else ""
        lines.append(
            f"{name}: {p.path.name}: {p.rows} rows, {len(p.keys)} valid keys, "
            f"{len(p.features)} features{cats}"
        )
    if report.overlap:
        parts = [f"{k.replace('&', ' ∩ ')} {v}" for k, v in report.overlap.items()]
        lines.append("overlap: " + ", ".join(parts))
    return lines


__all__ = [
    "ExperimentCheck",
    "PartyCheck",
    "check_experiment",
    "check_party",
    "check_summary",
    "party_keys",
    "rows_text",
]
