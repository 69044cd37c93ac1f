"""Yes/no verification (数据核验) at a data holder: one bit about one authorised enterprise.

The questions are the closed catalogue of ``parties.holder.predicates``; this module answers
them. Answers (``Answer``): ``yes``, ``no``, ``no-data`` (the holder has no row for the
enterprise, or the value the predicate needs is missing) and ``disputed`` (the enterprise has an
open dispute covering a category the predicate reads - see ``parties.disputes``). A predicate may
only read columns of categories the enterprise authorised for the asking bank; anything else is
refused.

Leakage of repeated questions: each answer is one bit, but a bank asking ``value >= t`` for
ever different ``t`` bisects the value (about 17 questions pin a 100,000-yuan amount to the
yuan; measured before these limits: an exact VAT figure in 34 answers over 11 days). Hence,
configured in ``node.yaml`` ``verification:`` (``parties.config.VerificationConfig``):

* ``ThresholdGrid``: thresholds (and paid ratios) only from a fixed grid per column - by
  default 0 and +/- 1, 2, 5 x 10^k - so no number of answers narrows a value below the grid
  interval holding it (a factor of 2 to 2.5); an off-grid value is refused (INVALID_ARGUMENT)
  naming the nearest grid values, before anything is read.
* ``ThresholdBudget``: per (bank, enterprise, column) at most ``max_distinct`` new questions per
  ``window_h`` (default 3 per 24 h) and ``lifetime`` different questions ever (default 12); every
  kind of question reading a column counts against that column's one budget (``paid_at_least``
  against both columns it reads, ``supplied_for_months`` as the cut "> 0"); ``>= t`` and
  ``> t`` at one ``t`` are never both answered (together they test ``value == t``). Repeating
  a question asked within the window is free: it reveals nothing new.
* Every budget refusal is an audit alert (``verify.alert``) at the holder.

See ``docs/subject.md``.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    insert,
    select,
    update,
)

from federation.audit import AuditLog
from federation.errors import ConfigError, Refused
from federation.store import SqlStore, immediate, single_read
from parties.config import NodeConfig
from parties.data import uscc as uscc_codes
from parties.data.schema import TAX_CREDIT_GRADES, PartySchema
from parties.disputes import DisputeRegistry
from parties.holder.predicates import (
    NoArrears,
    NormalTaxpayer,
    PaidAtLeast,
    PredicateBase,
    PredicateError,
    SuppliedForMonths,
    TaxGradeAtLeast,
    Threshold,
    opposite_cut,
    parse_predicate,
)

__all__ = ["Answer", "ThresholdBudget", "ThresholdGrid", "Verifier"]


class Answer(StrEnum):
    """The only things a verification ever returns: never the value itself."""

    YES = "yes"
    NO = "no"
    NO_DATA = "no-data"
    DISPUTED = "disputed"


# ------------------------------------------------------------------------------------------------
# The threshold budget


_budget_metadata = MetaData()
_questions = Table(
    "verify_question",
    _budget_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("bank_id", String(63), nullable=False),
    Column("uscc", String(18), nullable=False),
    Column("topic", String(128), nullable=False),
    Column("parameter", String(64), nullable=False),
    Column("asked_at", Double, nullable=False),
)
_questions_index = Index(
    "ix_verify_question_key",
    _questions.c.bank_id,
    _questions.c.uscc,
    _questions.c.topic,
    _questions.c.asked_at,
)


class ThresholdBudget(SqlStore):
    """How many different questions a bank may ask about one enterprise's column.

    Per (bank, enterprise, column): at most ``max_distinct`` *new* questions in any
    ``window_s`` and at most ``lifetime`` different questions ever; and never both cuts at one
    threshold (``>= t`` and ``> t`` together test ``value == t``). Every kind of question that
    reads a column counts against that column's one budget (``PredicateBase.charges``), so a
    derived quantity (the VAT paid ratio) cannot open a second budget on the same figure.
    Repeating a question asked within the window is free: it reveals nothing new.

    Stored in a small table (by default in the node's consent database, next to disputes), one
    row per (bank, enterprise, column, question) with the time it was last counted, so the
    limits hold across restarts and processes and storage stays bounded by ``lifetime``; the
    check and the record are one transaction.
    """

    LABEL = "verification budget"
    TABLES = (_questions,)
    INDEXES = (_questions_index,)
    FILE = "consent.db"

    def __init__(
        self,
        url: str,
        *,
        max_distinct: int = 3,
        window_s: float = 86_400.0,
        lifetime: int = 12,
    ):
        for name, value in (("max_distinct", max_distinct), ("lifetime", lifetime)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        if not isinstance(window_s, int | float) or not math.isfinite(window_s) or window_s <= 0:
            raise ConfigError(f"window_s must be a positive number of seconds, got {window_s!r}")
        self.max_distinct = max_distinct
        self.window_s = float(window_s)
        self.lifetime = lifetime
        super().__init__(url)

    @classmethod
    def for_node_dir(cls, node_dir: Path, **limits: Any) -> ThresholdBudget:
        return cls(cls.node_dir_url(node_dir), **limits)

    @classmethod
    def for_config(cls, config: NodeConfig) -> ThresholdBudget:
        v = config.verification
        return cls(
            config.resolved_consent_url,
            max_distinct=v.max_distinct,
            window_s=v.window_h * 3600.0,
            lifetime=v.lifetime,
        )

    def admit(
        self,
        *,
        bank_id: str,
        uscc: str,
        charges: Sequence[tuple[str, str]],
        at: float | None = None,
    ) -> None:
        """Count the question against every column it reads, or raise
        ``Refused('rate-limit', ...)`` (nothing counted) if any column is over its budget."""
        if not charges:
            return
        now = time.time() if at is None else float(at)
        since = now - self.window_s
        who = (_questions.c.bank_id == bank_id) & (_questions.c.uscc == uscc)
        topics = sorted({topic for topic, _ in charges})
        with self._engine.connect() as conn:
            # Fast path, no write lock: every column already counted this question recently.
            single_read(conn)
            recent = {
                (row.topic, row.parameter)
                for row in conn.execute(
                    select(_questions.c.topic, _questions.c.parameter).where(
                        who
                        & _questions.c.topic.in_(topics)
                        & (_questions.c.asked_at >= since)
                        & (_questions.c.asked_at <= now)
                    )
                )
            }
            if all(charge in recent for charge in charges):
                return
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                asked: dict[str, dict[str, tuple[int, float]]] = {t: {} for t in topics}
                for row in conn.execute(
                    select(
                        _questions.c.id,
                        _questions.c.topic,
                        _questions.c.parameter,
                        _questions.c.asked_at,
                    ).where(who & _questions.c.topic.in_(topics))
                ):
                    asked[row.topic][row.parameter] = (row.id, row.asked_at)
                plan: list[tuple[str, str, int | None]] = []
                for topic, question in charges:
                    before = asked[topic]
                    found = before.get(question)
                    if found is not None and since <= found[1] <= now:
                        continue  # asked within the window: free
                    self._check(bank_id, uscc, topic, question, before, since=since, now=now)
                    plan.append((topic, question, None if found is None else found[0]))
                for topic, question, row_id in plan:
                    if row_id is None:
                        conn.execute(
                            insert(_questions).values(
                                bank_id=bank_id,
                                uscc=uscc,
                                topic=topic,
                                parameter=question,
                                asked_at=now,
                            )
                        )
                    else:
                        conn.execute(
                            update(_questions).where(_questions.c.id == row_id).values(asked_at=now)
                        )

    def _check(
        self,
        bank_id: str,
        uscc: str,
        topic: str,
        question: str,
        before: Mapping[str, tuple[int, float]],
        *,
        since: float,
        now: float,
    ) -> None:
        """Refuse ``question`` on ``topic`` if it breaks one of the three limits."""
        where = f"on '{topic}' for enterprise {uscc}"
        other = opposite_cut(question)
        if other is not None and other in before:
            t = float(question.lstrip(">="))
            raise Refused(
                "rate-limit",
                f"bank '{bank_id}' already asked the other cut at {t:g} {where}: asking both "
                f"'>= {t:g}' and '> {t:g}' would test whether the value equals it; ask the same "
                "comparison as before",
            )
        in_window = [ts for _, ts in before.values() if since <= ts <= now]
        if len(in_window) >= self.max_distinct:
            retry = min(in_window) + self.window_s
            raise Refused(
                "rate-limit",
                f"bank '{bank_id}' has asked {len(in_window)} different thresholds {where} "
                f"within {self.window_s / 3600:g} h (limit {self.max_distinct}); ask one of "
                "those again, or retry after "
                f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(retry))}",
            )
        if question not in before and len(before) >= self.lifetime:
            raise Refused(
                "rate-limit",
                f"bank '{bank_id}' has asked {len(before)} different questions {where} "
                f"(lifetime limit {self.lifetime}); only those can be asked again",
            )


class ThresholdGrid:
    """The only thresholds (and paid ratios) a bank may ask about, per column.

    Why a fixed grid: with free thresholds each answer halves the interval holding the value, so
    a budget only slows bisection down; on a grid no number of answers narrows a value below
    the grid interval that holds it. ``default`` applies to every number column without its own
    grid in ``columns``; ``ratios`` to ``paid_at_least``.
    """

    def __init__(
        self,
        *,
        default: Sequence[float],
        columns: Mapping[str, Sequence[float]] | None = None,
        ratios: Sequence[float] = (0.5, 0.8, 0.9, 0.95, 1.0),
    ):
        self.default = tuple(sorted({float(v) for v in default}))
        self.columns = {k: tuple(sorted({float(v) for v in g})) for k, g in (columns or {}).items()}
        self.ratios = tuple(sorted({float(v) for v in ratios}))
        if not self.default or not self.ratios or not all(self.columns.values()):
            raise ConfigError("a verification grid needs at least one value")

    @classmethod
    def for_config(cls, config: NodeConfig) -> ThresholdGrid:
        v = config.verification
        return cls(default=v.resolved_grid, columns=v.columns, ratios=v.ratios)

    def check(self, predicate: PredicateBase) -> None:
        """``PredicateError`` naming the nearest allowed values if a parameter is off the grid."""
        if isinstance(predicate, Threshold):
            grid = self.columns.get(predicate.column, self.default)
            self._on(grid, float(predicate.value), f"threshold on {predicate.column!r}")
        elif isinstance(predicate, PaidAtLeast):
            self._on(self.ratios, float(predicate.ratio), "paid_at_least ratio")

    @staticmethod
    def _on(grid: Sequence[float], value: float, what: str) -> None:
        if value in grid:
            return
        i = bisect.bisect_left(grid, value)
        near = [f"{g:g}" for g in grid[max(0, i - 1) : i + 1]]
        raise PredicateError(
            f"{what}: {value:g} is not one of this holder's values; nearest: {', '.join(near)} "
            f"(the grid has {len(grid)} values from {grid[0]:g} to {grid[-1]:g})"
        )


# ------------------------------------------------------------------------------------------------
# Evaluation


_GRADE_RANK = {g: len(TAX_CREDIT_GRADES) - i for i, g in enumerate(TAX_CREDIT_GRADES)}
_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
}
_VERIFIABLE_DTYPES = {
    "threshold": ("float", "int"),
}


def _missing(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


class Verifier:
    """Answers yes/no questions about one enterprise's row of this holder's table.

    ``table``: the validated table (indexed by USCC, as ``load_table`` returns it); ``schema``
    its schema. ``disputes``: answer "disputed" while an open dispute covers a category the
    predicate reads (None: no dispute check). ``budget``: the per-column question limits;
    ``grid``: the allowed thresholds (None: no limit - tests and local tools only; a node
    always has both). ``audit``: where a refusal by the budget raises an alert.
    """

    def __init__(
        self,
        *,
        table: pd.DataFrame,
        schema: PartySchema,
        disputes: DisputeRegistry | None = None,
        budget: ThresholdBudget | None = None,
        grid: ThresholdGrid | None = None,
        audit: AuditLog | None = None,
    ):
        self.table = table
        self.schema = schema
        self.disputes = disputes
        self.budget = budget
        self.grid = grid
        self.audit = audit

    def check(self, predicate: Mapping[str, Any] | str | bytes | PredicateBase) -> PredicateBase:
        """Parse ``predicate`` and make sure this holder can answer it (its columns exist here,
        are of the right type, and are neither the key nor a label)."""
        parsed = parse_predicate(predicate)
        for name in parsed.columns():
            try:
                column = self.schema.column(name)
            except KeyError:
                raise PredicateError(
                    f"{parsed.kind} predicate: unknown column {name!r}: this holder's "
                    f"{self.schema.role} table has no such column"
                ) from None
            if name == self.schema.key or column.category in ("identity", "label"):
                raise PredicateError(
                    f"{parsed.kind} predicate: column {name!r} ({column.category}) cannot be "
                    "verified"
                )
            dtypes = _VERIFIABLE_DTYPES.get(parsed.kind)
            if dtypes is not None and column.dtype not in dtypes:
                raise PredicateError(
                    f"{parsed.kind} predicate: column {name!r} is {column.dtype}; a threshold "
                    f"needs a number column ({', '.join(self._number_columns())})"
                )
        if self.grid is not None:
            self.grid.check(parsed)
        return parsed

    def _number_columns(self) -> list[str]:
        return [
            c.name
            for c in self.schema.columns
            if c.dtype in ("float", "int") and c.category not in ("identity", "label")
        ]

    def categories(
        self, predicate: Mapping[str, Any] | str | bytes | PredicateBase
    ) -> tuple[str, ...]:
        """The data categories ``predicate`` reads: what the consent check must cover."""
        parsed = self.check(predicate)
        return tuple(sorted({self.schema.column(n).category for n in parsed.columns()}))

    def verify(
        self,
        uscc: str,
        predicate: Mapping[str, Any] | str | bytes | PredicateBase,
        *,
        bank_id: str,
        authorised_categories: Iterable[str],
        at: float | None = None,
    ) -> Answer:
        """One bit about one enterprise (or no-data / disputed), never the value.

        Order: the USCC and the predicate are validated; the predicate's categories must be
        among ``authorised_categories`` (else ``Refused('consent', ...)``); an open dispute
        covering them answers ``disputed``; no row answers ``no-data``; a parameterised
        question is counted against the budget of every column it reads
        (``Refused('rate-limit', ...)``, and an audit alert);
        then the predicate is evaluated.
        """
        if not isinstance(uscc, str):
            raise PredicateError(f"enterprise code must be text, got {type(uscc).__name__}")
        code = uscc_codes.normalise(uscc)
        problem = uscc_codes.problem(code)
        if problem is not None:
            raise PredicateError(f"{uscc!r} is not a valid unified social credit code: {problem}")
        parsed = self.check(predicate)
        authorised = (
            {authorised_categories}
            if isinstance(authorised_categories, str)
            else set(authorised_categories)
        )
        for name in parsed.columns():
            category = self.schema.column(name).category
            if category not in authorised:
                raise Refused(
                    "consent",
                    f"{parsed.kind} predicate reads column {name!r} of category '{category}', "
                    f"which enterprise {code} has not authorised for this bank "
                    f"(authorised: {', '.join(sorted(authorised)) or 'none'})",
                )
        categories = {self.schema.column(n).category for n in parsed.columns()}
        if self.disputes is not None and self.disputes.status(code).covers_any(categories):
            return Answer.DISPUTED
        if code not in self.table.index:
            return Answer.NO_DATA
        if self.budget is not None:
            try:
                self.budget.admit(bank_id=bank_id, uscc=code, charges=parsed.charges(), at=at)
            except Refused as exc:
                self._alert(bank_id, code, parsed, exc)
                raise
        return self._evaluate(parsed, code)

    def _alert(self, bank_id: str, code: str, parsed: PredicateBase, exc: Refused) -> None:
        """Every budget refusal is an alert in the audit log: a bank at its limit is either
        misconfigured or probing a value, and the holder's operator should look."""
        if self.audit is None:
            return
        self.audit.alert(
            peer=bank_id,
            operation="verify.alert",
            subject=code,
            reason=f"{parsed.describe()}: {exc.reason}",
        )

    def _value(self, code: str, column: str) -> Any:
        if column not in self.table.columns:
            return None
        return self.table.at[code, column]

    def _evaluate(self, p: PredicateBase, code: str) -> Answer:
        values = [self._value(code, c) for c in p.columns()]
        if isinstance(p, SuppliedForMonths):
            # A missing average means no metered supply over that period: a "no", not a gap.
            v = values[0]
            return Answer.YES if not _missing(v) and float(v) > 0 else Answer.NO
        if any(_missing(v) for v in values):
            return Answer.NO_DATA
        ok: bool
        if isinstance(p, Threshold):
            ok = bool(_OPS[p.op](float(values[0]), p.value))
        elif isinstance(p, TaxGradeAtLeast):
            rank = _GRADE_RANK.get(str(values[0]))
            if rank is None:
                return Answer.NO_DATA
            ok = rank >= _GRADE_RANK[p.grade]
        elif isinstance(p, NormalTaxpayer | NoArrears):
            ok = float(values[0]) == 0.0
        elif isinstance(p, PaidAtLeast):
            paid, payable = float(values[0]), float(values[1])
            ok = paid >= p.ratio * payable
        else:  # pragma: no cover - every kind is handled above
            raise PredicateError(f"no evaluation for predicate kind {p.kind!r}")
        return Answer.YES if ok else Answer.NO
