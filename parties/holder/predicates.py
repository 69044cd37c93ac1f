"""The closed set of yes/no questions a bank may ask a holder about one enterprise (数据核验).

Why a closed set: a bank may ask a holder one question about one authorised enterprise ("did it
pay at least 100,000 yuan of VAT last year?") and learn one bit - never the value. Arbitrary
expressions could compute anything from the row (or be bisected into the value in a few
questions), so only the predicate kinds below exist, each validated with pydantic (errors name
the field) and evaluated by code written in ``parties.holder.verify``; nothing is ever
``eval``-ed.

Catalogue (columns as in ``parties/data/schema.py``):

==========================  ==================================================================
``threshold``               ``{"kind": "threshold", "column": "vat_paid_12m", "op": ">=",
                            "value": 100000}`` - a number column compared with a constant
                            of the holder's grid (``>=``, ``>``, ``<=``, ``<``); missing
                            value: no data
``tax_grade_at_least``      ``{"kind": "tax_grade_at_least", "grade": "B"}`` - 纳税信用等级 at
                            least B in the order A > B > M > C > D
``normal_taxpayer``         ``{"kind": "normal_taxpayer"}`` - not listed as 非正常户
``no_arrears``              ``{"kind": "no_arrears", "category": "electricity"}`` - no current
                            arrears of tax / electricity / water / gas; missing flag: no data
``paid_at_least``           ``{"kind": "paid_at_least", "tax": "vat", "ratio": 0.95}`` - paid
                            at least ``ratio`` (one of the holder's ratios) of the tax
                            payable over 12 months (VAT or CIT)
``supplied_for_months``     ``{"kind": "supplied_for_months", "utility": "electricity",
                            "months": 12}`` - a metered supply with consumption over the last
                            3/6/12 months (water and gas: 3/6); no average on record: no
==========================  ==================================================================
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from federation.errors import XinyidaiError

__all__ = [
    "PREDICATE_KINDS",
    "NoArrears",
    "NormalTaxpayer",
    "PaidAtLeast",
    "Predicate",
    "PredicateBase",
    "PredicateError",
    "SuppliedForMonths",
    "TaxGradeAtLeast",
    "Threshold",
    "cut",
    "opposite_cut",
    "parse_predicate",
    "predicate_json",
]


def cut(op: str, value: float) -> str:
    """The canonical name of a threshold cut: ``">=100000.0"`` or ``">100000.0"``."""
    return f"{op}{float(value)!r}"


def opposite_cut(question: str) -> str | None:
    """The other cut at the same value (``>= t`` <-> ``> t``), or None if ``question`` is not a
    cut. Asking both tests whether the value *equals* t, which a grid alone does not stop."""
    if question.startswith(">="):
        return ">" + question[2:]
    if question.startswith(">") and question[1:2] not in ("", "="):
        return ">=" + question[1:]
    return None


class PredicateError(XinyidaiError):
    """A predicate is malformed, or names a column this holder cannot verify; nothing was read."""


class PredicateBase(BaseModel):
    """What every predicate kind offers; instances are immutable and validated strictly."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    kind: str  # each kind narrows it to its own literal tag

    def columns(self) -> tuple[str, ...]:
        """The columns the predicate reads (their categories need the enterprise's consent)."""
        raise NotImplementedError

    def charges(self) -> tuple[tuple[str, str], ...]:
        """(column, question) pairs ``ThresholdBudget`` counts: one per column the predicate
        reads, so every kind of question about a column (and every derived quantity that reads
        it) draws on that column's one budget. ``question`` is canonical: two predicates that
        reveal the same bit (``>= t`` and ``< t``) have the same one."""
        question = self.question()
        return tuple((column, question) for column in self.columns())

    def question(self) -> str:
        """The canonical form of the bit this predicate reveals (see ``charges``)."""
        return self.kind

    def describe(self) -> str:
        """A short human description (for audit reasons and logs: no data values)."""
        raise NotImplementedError


class Threshold(PredicateBase):
    kind: Literal["threshold"]
    column: str = Field(min_length=1, max_length=128)
    op: Literal[">=", ">", "<=", "<"]
    value: float = Field(allow_inf_nan=False)

    def columns(self) -> tuple[str, ...]:
        return (self.column,)

    def question(self) -> str:
        # ">= t" and "< t" are the same cut (the same bit), as are "> t" and "<= t"; the two
        # cuts at one t are different questions and together test "value == t" (see
        # ``opposite_cut``).
        return cut(">=" if self.op in (">=", "<") else ">", float(self.value))

    def describe(self) -> str:
        return f"{self.column} {self.op} {self.value:g}"


class TaxGradeAtLeast(PredicateBase):
    kind: Literal["tax_grade_at_least"]
    grade: Literal["A", "B", "M", "C", "D"]

    def columns(self) -> tuple[str, ...]:
        return ("tax_credit_grade",)

    def question(self) -> str:
        return f"grade>={self.grade}"

    def describe(self) -> str:
        return f"tax credit grade at least {self.grade}"


class NormalTaxpayer(PredicateBase):
    kind: Literal["normal_taxpayer"]

    def columns(self) -> tuple[str, ...]:
        return ("abnormal_taxpayer",)

    def describe(self) -> str:
        return "not an abnormal taxpayer"


_ARREARS = {
    "tax": "in_tax_arrears",
    "electricity": "elec_in_arrears",
    "water": "water_in_arrears",
    "gas": "gas_in_arrears",
}


class NoArrears(PredicateBase):
    kind: Literal["no_arrears"]
    category: Literal["tax", "electricity", "water", "gas"]

    def columns(self) -> tuple[str, ...]:
        return (_ARREARS[self.category],)

    def describe(self) -> str:
        return f"no {self.category} arrears"


class PaidAtLeast(PredicateBase):
    kind: Literal["paid_at_least"]
    tax: Literal["vat", "cit"]
    ratio: float = Field(gt=0, le=1, allow_inf_nan=False)

    def columns(self) -> tuple[str, ...]:
        return (f"{self.tax}_paid_12m", f"{self.tax}_payable_12m")

    def question(self) -> str:
        # A derived quantity: counted against both columns it reads (paid and payable).
        return f"paid/payable>={float(self.ratio)!r}"

    def describe(self) -> str:
        return f"paid at least {self.ratio:.0%} of {self.tax.upper()} payable over 12 months"


_SUPPLY = {
    "electricity": ("elec_avg_amount_{}m", (3, 6, 12)),
    "water": ("water_avg_volume_{}m", (3, 6)),
    "gas": ("gas_avg_volume_{}m", (3, 6)),
}


class SuppliedForMonths(PredicateBase):
    kind: Literal["supplied_for_months"]
    utility: Literal["electricity", "water", "gas"]
    months: Literal[3, 6, 12]

    @model_validator(mode="after")
    def _months_on_record(self) -> SuppliedForMonths:
        allowed = _SUPPLY[self.utility][1]
        if self.months not in allowed:
            raise ValueError(
                f"months {self.months} is not on record for {self.utility} "
                f"(allowed: {', '.join(map(str, allowed))})"
            )
        return self

    def columns(self) -> tuple[str, ...]:
        return (_SUPPLY[self.utility][0].format(self.months),)

    def question(self) -> str:
        # The answer is "average > 0": the same cut as a threshold "> 0" on that column.
        return cut(">", 0.0)

    def describe(self) -> str:
        return f"{self.utility} supplied for the last {self.months} months"


Predicate = Annotated[
    Threshold | TaxGradeAtLeast | NormalTaxpayer | NoArrears | PaidAtLeast | SuppliedForMonths,
    Field(discriminator="kind"),
]
_PREDICATE: TypeAdapter[Any] = TypeAdapter(Predicate)
PREDICATE_KINDS: tuple[str, ...] = (
    "threshold",
    "tax_grade_at_least",
    "normal_taxpayer",
    "no_arrears",
    "paid_at_least",
    "supplied_for_months",
)


def _problems(exc: ValidationError) -> str:
    out = []
    for err in exc.errors():
        loc = [str(x) for x in err["loc"]]
        if loc and loc[0] in PREDICATE_KINDS:  # the union's tag, not a field
            loc = loc[1:]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            out.append(f"field 'kind' must be one of {', '.join(PREDICATE_KINDS)}")
        elif err["type"] == "missing":
            out.append(f"field '{'.'.join(loc)}' is missing")
        elif err["type"] == "extra_forbidden":
            out.append(f"field '{'.'.join(loc)}' is not part of this kind of predicate")
        elif loc:
            out.append(f"field '{'.'.join(loc)}': {err['msg']}")
        else:
            out.append(err["msg"].removeprefix("Value error, "))
    return "; ".join(out)


def parse_predicate(data: Mapping[str, Any] | str | bytes | PredicateBase) -> PredicateBase:
    """A predicate from a mapping or its JSON text; ``PredicateError`` naming each bad field."""
    if isinstance(data, PredicateBase):
        return data
    try:
        if isinstance(data, str | bytes):
            parsed = _PREDICATE.validate_json(data)
        else:
            parsed = _PREDICATE.validate_python(data)
    except ValidationError as exc:
        raise PredicateError(f"invalid predicate: {_problems(exc)}") from None
    if not isinstance(parsed, PredicateBase):  # pragma: no cover - the union only holds these
        raise PredicateError("invalid predicate")
    return parsed


def predicate_json(predicate: PredicateBase) -> str:
    """Canonical JSON of a predicate (for logs and wire messages)."""
    return json.dumps(predicate.model_dump(), sort_keys=True, separators=(",", ":"))
