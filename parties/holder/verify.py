"""Yes/no verification (数据核验) at a data holder: one bit about one authorised enterprise.

The questions are the closed catalogue of ``parties.holder.predicates``; this module answers
them. Answers (``Answer``): ``yes``, ``no``, ``no-data`` (the holder has no row for the
enterprise, or the value the predicate needs is missing) and ``disputed`` (the enterprise has an
open dispute covering a category the predicate reads - see ``parties.disputes``). A predicate may
only read columns of categories the enterprise authorised for the asking bank; anything else is
refused.

Leakage of repeated thresholds: each answer is one bit, but a bank asking ``value >= t`` for
ever different ``t`` bisects the value (about 17 questions pin a 100,000-yuan amount to the
yuan). ``ThresholdBudget`` caps the *distinct* parameters per (bank, enterprise, topic) in a
sliding window (default 3 per 24 h); repeating a question already asked is free, because it
reveals nothing new. See ``docs/subject.md``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
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
    delete,
    insert,
    select,
)

from federation.errors import ConfigError, Refused
from federation.store import (
    create_tables,
    immediate,
    open_engine,
    redacted,
    single_read,
    sqlite_url,
)
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
    parse_predicate,
)

__all__ = ["Answer", "ThresholdBudget", "Verifier"]


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


class ThresholdBudget:
    """At most ``max_distinct`` distinct parameters per (bank, enterprise, topic) per window.

    A *topic* is a column (or derived quantity: the VAT paid ratio) a parameterised predicate
    compares against; the *parameter* is its threshold. Stored in a small table (by default in
    the node's consent database, next to disputes) so the limit holds across restarts and
    processes; the check and the record are one transaction.
    """

    def __init__(self, url: str, *, max_distinct: int = 3, window_s: float = 86_400.0):
        if isinstance(max_distinct, bool) or not isinstance(max_distinct, int) or max_distinct < 1:
            raise ConfigError(f"max_distinct must be a whole number >= 1, got {max_distinct!r}")
        if not isinstance(window_s, int | float) or not math.isfinite(window_s) or window_s <= 0:
            raise ConfigError(f"window_s must be a positive number of seconds, got {window_s!r}")
        self.max_distinct = max_distinct
        self.window_s = float(window_s)
        self._engine = open_engine(url, label="verification budget")
        self.url = redacted(self._engine)
        create_tables(self._engine, [_questions], [_questions_index], label="verification budget")

    @classmethod
    def for_node_dir(cls, node_dir: Path, **limits: Any) -> ThresholdBudget:
        return cls(sqlite_url(Path(node_dir) / "consent.db"), **limits)

    @classmethod
    def for_config(cls, config: NodeConfig, **limits: Any) -> ThresholdBudget:
        return cls(config.resolved_consent_url, **limits)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> ThresholdBudget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def admit(
        self, *, bank_id: str, uscc: str, topic: str, parameter: str, at: float | None = None
    ) -> None:
        """Record the question, or raise ``Refused('rate-limit', ...)`` if over budget."""
        now = time.time() if at is None else float(at)
        key = (
            (_questions.c.bank_id == bank_id)
            & (_questions.c.uscc == uscc)
            & (_questions.c.topic == topic)
        )
        window = (_questions.c.asked_at >= now - self.window_s) & (_questions.c.asked_at <= now)
        with self._engine.connect() as conn:
            # Fast path, no write lock: the same question again reveals nothing new.
            single_read(conn)
            repeat = select(_questions.c.id).where(
                key & window, _questions.c.parameter == parameter
            )
            if conn.execute(repeat.limit(1)).first() is not None:
                return
        with self._engine.connect() as conn:
            immediate(conn)
            with conn.begin():
                # Questions older than the window no longer count: forget them.
                conn.execute(
                    delete(_questions).where(key & (_questions.c.asked_at < now - self.window_s))
                )
                asked = {
                    row.parameter: row.asked_at
                    for row in conn.execute(
                        select(_questions.c.parameter, _questions.c.asked_at).where(
                            key & (_questions.c.asked_at <= now)
                        )
                    )
                }
                if parameter in asked:
                    return  # the same question again reveals nothing new
                if len(asked) >= self.max_distinct:
                    retry = min(asked.values()) + self.window_s
                    raise Refused(
                        "rate-limit",
                        f"bank '{bank_id}' has asked {len(asked)} different thresholds on "
                        f"'{topic}' for enterprise {uscc} within {self.window_s / 3600:g} h "
                        f"(limit {self.max_distinct}); ask one of those again, or retry after "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(retry))}",
                    )
                conn.execute(
                    insert(_questions).values(
                        bank_id=bank_id, uscc=uscc, topic=topic, parameter=parameter, asked_at=now
                    )
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
    predicate reads (None: no dispute check). ``budget``: the threshold rate limit (None: no
    limit - tests and local tools only).
    """

    def __init__(
        self,
        *,
        table: pd.DataFrame,
        schema: PartySchema,
        disputes: DisputeRegistry | None = None,
        budget: ThresholdBudget | None = None,
    ):
        self.table = table
        self.schema = schema
        self.disputes = disputes
        self.budget = budget

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
        question is counted against the threshold budget (``Refused('rate-limit', ...)``);
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
                    f"which enterprise {code} has not authorised for bank '{bank_id}' "
                    f"(authorised: {', '.join(sorted(authorised)) or 'none'})",
                )
        categories = {self.schema.column(n).category for n in parsed.columns()}
        if self.disputes is not None and self.disputes.status(code).covers_any(categories):
            return Answer.DISPUTED
        if code not in self.table.index:
            return Answer.NO_DATA
        key = parsed.budget_key()
        if self.budget is not None and key is not None:
            self.budget.admit(bank_id=bank_id, uscc=code, topic=key[0], parameter=key[1], at=at)
        return self._evaluate(parsed, code)

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
