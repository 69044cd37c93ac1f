"""Yes/no verification at a holder: the predicate catalogue on a synthetic city's tax and utility
tables, validation errors, consent categories, disputes and the threshold budget."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from federation.audit import AuditLog, sqlite_url
from federation.errors import ConfigError, Refused
from parties.config import VerificationConfig
from parties.data import uscc
from parties.data.loader import load_table
from parties.data.schema import TAX, UTILITY
from parties.data.synth import synthesize_city
from parties.disputes import DisputeRegistry
from parties.holder.predicates import PredicateError, Threshold, parse_predicate, predicate_json
from parties.holder.verify import Answer, ThresholdBudget, ThresholdGrid, Verifier

ALL = ("tax", "electricity", "water", "gas")


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    """The tax and utility tables of a small city, loaded (validated, typed) like a node does."""
    city = synthesize_city(n_enterprises=300, seed=21)
    out = {}
    d = tmp_path_factory.mktemp("city")
    for role, schema in (("tax", TAX), ("utility", UTILITY)):
        path = d / f"{role}.csv"
        city[role].to_csv(path, index=False)
        out[role] = load_table(path, schema)
    return out


@pytest.fixture(scope="module")
def tax(tables: dict[str, pd.DataFrame]) -> Verifier:
    return Verifier(table=tables["tax"], schema=TAX)


@pytest.fixture(scope="module")
def utility(tables: dict[str, pd.DataFrame]) -> Verifier:
    return Verifier(table=tables["utility"], schema=UTILITY)


def ask(v: Verifier, code: str, predicate: dict, **kw) -> Answer:
    return v.verify(code, predicate, bank_id=kw.pop("bank_id", "bank"),
                    authorised_categories=kw.pop("authorised", ALL), **kw)  # fmt: skip


def _expect(mask: pd.Series, missing: pd.Series | None = None) -> list[Answer]:
    out = [Answer.YES if bool(m) else Answer.NO for m in mask]
    if missing is not None:
        out = [Answer.NO_DATA if bool(x) else a for a, x in zip(out, missing, strict=True)]
    return out


# ------------------------------------------------------------------------------------------------
# The catalogue, against the table computed independently with pandas


@pytest.mark.parametrize("op", [">=", ">", "<=", "<"])
def test_threshold_agrees_with_the_table_for_every_enterprise(
    tax: Verifier, tables: dict, op: str
) -> None:
    t = tables["tax"]
    value = float(t["vat_paid_12m"].median())
    got = [ask(tax, c, {"kind": "threshold", "column": "vat_paid_12m", "op": op,
                        "value": value}) for c in t.index]  # fmt: skip
    col = t["vat_paid_12m"]
    expected = {">=": col >= value, ">": col > value, "<=": col <= value, "<": col < value}[op]
    assert got == _expect(expected)
    assert {Answer.YES, Answer.NO} <= set(got)


def test_threshold_on_a_column_with_missing_values_answers_no_data(
    tax: Verifier, tables: dict
) -> None:
    t = tables["tax"]
    predicate = {"kind": "threshold", "column": "cit_paid_12m", "op": ">=", "value": 1000}
    got = [ask(tax, c, predicate) for c in t.index]
    missing = t["cit_paid_12m"].isna()
    assert missing.any(), "the synthetic city should have enterprises without CIT yet"
    assert got == _expect(t["cit_paid_12m"] >= 1000, missing)
    months = {"kind": "threshold", "column": "consecutive_normal_months", "op": ">=", "value": 12}
    got = [ask(tax, c, months) for c in t.index]
    assert got == _expect(t["consecutive_normal_months"] >= 12)


def test_tax_predicates(tax: Verifier, tables: dict) -> None:
    t = tables["tax"]
    cases = [
        ({"kind": "tax_grade_at_least", "grade": "B"}, t["tax_credit_grade"].isin(["A", "B"])),
        ({"kind": "tax_grade_at_least", "grade": "M"}, t["tax_credit_grade"].isin(["A", "B", "M"])),
        ({"kind": "tax_grade_at_least", "grade": "D"}, t["tax_credit_grade"].notna()),
        ({"kind": "normal_taxpayer"}, t["abnormal_taxpayer"] == 0),
        ({"kind": "no_arrears", "category": "tax"}, t["in_tax_arrears"] == 0),
        (
            {"kind": "paid_at_least", "tax": "vat", "ratio": 0.95},
            t["vat_paid_12m"] >= 0.95 * t["vat_payable_12m"],
        ),
    ]
    for predicate, expected in cases:
        got = [ask(tax, c, predicate) for c in t.index]
        assert got == _expect(expected), predicate
        assert Answer.YES in got, predicate
    cit = {"kind": "paid_at_least", "tax": "cit", "ratio": 1.0}
    missing = t["cit_paid_12m"].isna() | t["cit_payable_12m"].isna()
    got = [ask(tax, c, cit) for c in t.index]
    assert got == _expect(t["cit_paid_12m"] >= t["cit_payable_12m"], missing)


def test_utility_predicates(utility: Verifier, tables: dict) -> None:
    u = tables["utility"]
    for category, column in (("electricity", "elec_in_arrears"), ("water", "water_in_arrears"),
                             ("gas", "gas_in_arrears")):  # fmt: skip
        got = [ask(utility, c, {"kind": "no_arrears", "category": category}) for c in u.index]
        assert got == _expect(u[column] == 0, u[column].isna()), category
    assert u["gas_in_arrears"].isna().any()  # not every premises has gas: no data there
    for name, months, column in (("electricity", 12, "elec_avg_amount_12m"),
                                 ("electricity", 3, "elec_avg_amount_3m"),
                                 ("gas", 6, "gas_avg_volume_6m")):  # fmt: skip
        predicate = {"kind": "supplied_for_months", "utility": name, "months": months}
        got = [ask(utility, c, predicate) for c in u.index]
        # No average on record means no metered supply over that period: "no", not "no data".
        assert got == _expect(u[column].fillna(0) > 0), predicate
    amount = {"kind": "threshold", "column": "elec_avg_amount_3m", "op": ">", "value": 2000.5}
    got = [ask(utility, c, amount) for c in u.index]
    assert got == _expect(u["elec_avg_amount_3m"] > 2000.5)


def test_an_enterprise_the_holder_does_not_hold_answers_no_data(tax: Verifier, tables) -> None:
    codes = uscc.generate(np.random.default_rng(5), 40, uscc.CHENGDU_REGIONS)
    absent = next(c for c in codes if c not in tables["tax"].index)
    assert ask(tax, absent, {"kind": "normal_taxpayer"}) is Answer.NO_DATA


def test_answers_are_one_of_four_words_never_the_value(tax: Verifier, tables: dict) -> None:
    t = tables["tax"]
    code = str(t.index[0])
    value = float(t.at[code, "vat_paid_12m"])
    predicate = '{"kind": "threshold", "column": "vat_paid_12m", "op": ">=", "value": 0}'
    answer = tax.verify(code, predicate, bank_id="bank", authorised_categories=["tax"])
    assert answer is Answer.YES and str(answer) == "yes"
    assert {a.value for a in Answer} == {"yes", "no", "no-data", "disputed"}
    assert f"{value:g}" not in repr(answer)
    # Normalised like every other input: lower case and spaces are the same enterprise.
    assert ask(tax, " " + code.lower(), {"kind": "normal_taxpayer"}) in (Answer.YES, Answer.NO)


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("predicate", "message"),
    [
        ({"kind": "regex", "column": "x"}, "field 'kind' must be one of threshold,"),
        ({"column": "vat_paid_12m"}, "field 'kind' must be one of"),
        ({"kind": "threshold", "column": "vat_paid_12m", "op": "==", "value": 1},
         "field 'op': Input should be '>=', '>', '<=' or '<'"),
        ({"kind": "threshold", "column": "vat_paid_12m", "op": ">="}, "field 'value' is missing"),
        ({"kind": "threshold", "column": "vat_paid_12m", "op": ">=", "value": float("inf")},
         "field 'value': Input should be a finite number"),
        ({"kind": "threshold", "column": "vat_paid_12m", "op": ">=", "value": "100"},
         "field 'value': Input should be a valid number"),
        ({"kind": "threshold", "column": "vat_paid_12m", "op": ">=", "value": 1, "expr": "x"},
         "field 'expr' is not part of this kind of predicate"),
        ({"kind": "tax_grade_at_least", "grade": "AA"}, "field 'grade'"),
        ({"kind": "paid_at_least", "tax": "vat", "ratio": 1.5}, "field 'ratio'"),
        ({"kind": "no_arrears", "category": "label"}, "field 'category'"),
        ({"kind": "supplied_for_months", "utility": "gas", "months": 12},
         "months 12 is not on record for gas (allowed: 3, 6)"),
        ("not json", "invalid predicate"),
    ],
)  # fmt: skip
def test_malformed_predicates_name_the_field(predicate: object, message: str) -> None:
    with pytest.raises(PredicateError, match="invalid predicate") as info:
        parse_predicate(predicate)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_predicates_this_holder_cannot_answer_are_refused(
    tax: Verifier, utility: Verifier, tables: dict
) -> None:
    code = str(tables["tax"].index[0])
    cases = [
        (tax, {"kind": "threshold", "column": "turnover", "op": ">=", "value": 1},
         "unknown column 'turnover': this holder's tax table has no such column"),
        (utility, {"kind": "threshold", "column": "vat_paid_12m", "op": ">=", "value": 1},
         "unknown column 'vat_paid_12m'"),
        (utility, {"kind": "tax_grade_at_least", "grade": "B"}, "unknown column 'tax_credit_grade'"),
        (tax, {"kind": "no_arrears", "category": "gas"}, "unknown column 'gas_in_arrears'"),
        (tax, {"kind": "threshold", "column": "industry", "op": ">=", "value": 1},
         "column 'industry' is category; a threshold needs a number column"),
        (tax, {"kind": "threshold", "column": "in_tax_arrears", "op": ">=", "value": 1},
         "column 'in_tax_arrears' is bool"),
        (tax, {"kind": "threshold", "column": "uscc", "op": ">=", "value": 1},
         "column 'uscc' (identity) cannot be verified"),
    ]  # fmt: skip
    for verifier, predicate, message in cases:
        with pytest.raises(PredicateError) as info:
            ask(verifier, code, predicate)
        assert message in str(info.value), predicate


def test_invalid_uscc_names_the_problem(tax: Verifier, tables: dict) -> None:
    code = str(tables["tax"].index[0])
    bad = code[:17] + ("0" if code[17] != "0" else "1")
    with pytest.raises(PredicateError, match="check character is"):
        ask(tax, bad, {"kind": "normal_taxpayer"})
    with pytest.raises(PredicateError, match="length 5"):
        ask(tax, "91510", {"kind": "normal_taxpayer"})


def test_columns_of_unauthorised_categories_are_refused(utility: Verifier, tables) -> None:
    code = str(tables["utility"].index[0])
    predicate = {"kind": "threshold", "column": "water_avg_volume_3m", "op": ">=", "value": 1}
    assert utility.categories(predicate) == ("water",)
    with pytest.raises(Refused) as info:
        ask(utility, code, predicate, authorised=["electricity", "gas"])
    assert info.value.code == "consent"
    assert "reads column 'water_avg_volume_3m' of category 'water'" in info.value.reason
    assert f"enterprise {code} has not authorised for this bank" in info.value.reason
    assert "(authorised: electricity, gas)" in info.value.reason
    assert ask(utility, code, predicate, authorised=["water"]) in (Answer.YES, Answer.NO)
    with pytest.raises(Refused, match="authorised: none"):
        ask(utility, code, {"kind": "no_arrears", "category": "gas"}, authorised=[])


# ------------------------------------------------------------------------------------------------
# Disputes and the threshold budget (real SQLite stores)


def test_disputed_until_resolved(tmp_path: Path, tables: dict) -> None:
    u = tables["utility"]
    code = str(u.index[u["water_in_arrears"].notna()][0])
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "utility")
    disputes = DisputeRegistry(
        sqlite_url(tmp_path / "consent.db"),
        node_id="utility",
        audit=audit,
        categories=["electricity", "water", "gas"],
    )
    v = Verifier(table=u, schema=UTILITY, disputes=disputes)
    water = {"kind": "no_arrears", "category": "water"}
    elec = {"kind": "no_arrears", "category": "electricity"}
    before = ask(v, code, water)
    assert before in (Answer.YES, Answer.NO)

    d = disputes.dispute(code, reason="water arrears paid", by="enterprise", categories=["water"])
    assert ask(v, code, water) is Answer.DISPUTED
    assert ask(v, code, elec) in (Answer.YES, Answer.NO)  # another category: still answered
    # Consent is checked before the dispute: an unauthorised bank learns nothing, not even that.
    with pytest.raises(Refused):
        ask(v, code, water, authorised=["electricity"])
    everything = disputes.dispute(code, reason="all wrong", by="enterprise")
    assert ask(v, code, elec) is Answer.DISPUTED

    disputes.resolve(d.dispute_id, note="repaired", by="alice")
    disputes.resolve(everything.dispute_id, note="confirmed", by="alice")
    assert ask(v, code, water) == before
    assert [r.operation for r in audit.query(subject=code)] == [
        "subject.dispute", "subject.dispute", "subject.resolve", "subject.resolve"
    ]  # fmt: skip


def test_threshold_budget_limits_distinct_thresholds(tmp_path: Path, tables: dict) -> None:
    t = tables["tax"]
    code, other = str(t.index[0]), str(t.index[1])
    url = sqlite_url(tmp_path / "consent.db")
    budget = ThresholdBudget(url, max_distinct=3, window_s=3600)
    v = Verifier(table=t, schema=TAX, budget=budget)
    now = 1_800_000_000.0

    def vat(value: float, op: str = ">=", **kw) -> Answer:
        p = {"kind": "threshold", "column": "vat_paid_12m", "op": op, "value": value}
        return ask(v, kw.pop("code", code), p, at=kw.pop("at", now), **kw)

    for value in (1e4, 5e4, 1e5):
        vat(value)
    vat(5e4)  # asked before: free
    vat(5e4, op="<")  # the same threshold with another comparison: the same bit
    with pytest.raises(Refused) as info:
        vat(7.5e4)
    assert info.value.code == "rate-limit"
    assert "asked 3 different thresholds on 'vat_paid_12m'" in info.value.reason
    assert f"enterprise {code}" in info.value.reason and "(limit 3)" in info.value.reason

    vat(7.5e4, bank_id="bank2")  # budgets are per bank,
    vat(7.5e4, code=other)  # per enterprise,
    months = {"kind": "threshold", "column": "consecutive_normal_months", "op": ">=", "value": 6}
    ask(v, code, months, at=now)  # and per column
    for _ in range(5):  # a fixed question is one question on its column, however often asked
        ask(v, code, {"kind": "normal_taxpayer"}, at=now)
    for grade in ("A", "B", "M"):
        ask(v, code, {"kind": "tax_grade_at_least", "grade": grade}, at=now)
    with pytest.raises(Refused, match="on 'tax_credit_grade'"):
        ask(v, code, {"kind": "tax_grade_at_least", "grade": "C"}, at=now)

    budget.close()
    reopened = ThresholdBudget(url, max_distinct=3, window_s=3600)
    v = Verifier(table=t, schema=TAX, budget=reopened)
    with pytest.raises(Refused):  # the count survives a restart
        vat(7.5e4, at=now + 10)
    assert vat(7.5e4, at=now + 3601) in (Answer.YES, Answer.NO)  # the window has passed


def test_no_data_and_disputed_answers_do_not_spend_the_budget(tmp_path: Path, tables) -> None:
    absent = next(
        c for c in uscc.generate(np.random.default_rng(8), 40, uscc.CHENGDU_REGIONS)
        if c not in tables["tax"].index
    )  # fmt: skip
    held = str(tables["tax"].index[0])
    url = sqlite_url(tmp_path / "consent.db")
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "tax")
    disputes = DisputeRegistry(url, node_id="tax", audit=audit, categories=["tax"])
    d = disputes.dispute(held, reason="wrong", by="enterprise")
    budget = ThresholdBudget(url, max_distinct=1)
    v = Verifier(table=tables["tax"], schema=TAX, budget=budget, disputes=disputes)
    for value in (1.0, 2.0, 3.0):
        p = {"kind": "threshold", "column": "vat_paid_12m", "op": ">=", "value": value}
        assert ask(v, absent, p) is Answer.NO_DATA
        assert ask(v, held, p) is Answer.DISPUTED
    disputes.resolve(d.dispute_id, note="confirmed", by="alice")
    p = {"kind": "threshold", "column": "vat_paid_12m", "op": ">=", "value": 4.0}
    assert ask(v, held, p) in (Answer.YES, Answer.NO)
    with pytest.raises(Refused, match="limit 1"):
        ask(v, held, {**p, "value": 5.0})


def test_budget_settings_are_validated(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "consent.db")
    with pytest.raises(ConfigError, match="max_distinct"):
        ThresholdBudget(url, max_distinct=0)
    with pytest.raises(ConfigError, match="window_s"):
        ThresholdBudget(url, window_s=float("nan"))


def test_parse_accepts_json_and_round_trips() -> None:
    p = parse_predicate(b'{"kind":"threshold","column":"vat_paid_12m","op":">=","value":100000}')
    assert isinstance(p, Threshold) and p.value == 100000.0
    assert parse_predicate(predicate_json(p)) == p
    assert p.describe() == "vat_paid_12m >= 100000"


# ------------------------------------------------------------------------------------------------
# The verification oracle closed (issue 10, item 5): one budget per column, both cuts at one
# threshold refused, a lifetime cap, a fixed grid, an audit alert on every budget refusal


def _budgeted(tmp_path: Path, tables: dict, **limits) -> tuple[Verifier, AuditLog]:
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "tax")
    budget = ThresholdBudget(sqlite_url(tmp_path / "consent.db"), **limits)
    return Verifier(table=tables["tax"], schema=TAX, budget=budget, audit=audit), audit


def _vat(value: float, op: str = ">=") -> dict:
    return {"kind": "threshold", "column": "vat_paid_12m", "op": op, "value": value}


def test_both_cuts_at_one_threshold_are_refused_they_would_test_equality(
    tmp_path: Path, tables: dict
) -> None:
    v, _ = _budgeted(tmp_path, tables, max_distinct=10)
    code = str(tables["tax"].index[0])
    ask(v, code, _vat(1e5, ">="))
    ask(v, code, _vat(1e5, "<"))  # the same cut: the same bit, free
    for op in (">", "<="):
        with pytest.raises(Refused, match="would test whether the value equals it") as info:
            ask(v, code, _vat(1e5, op))
        assert info.value.code == "rate-limit"
    # ... and it stays refused after any window: the value rarely moves
    with pytest.raises(Refused, match="other cut at 100000"):
        ask(v, code, _vat(1e5, ">"), at=time.time() + 30 * 86_400)
    ask(v, code, _vat(2e5, ">"))  # another threshold is another question


def test_every_kind_of_question_on_a_column_draws_on_one_budget(
    tmp_path: Path, tables: dict
) -> None:
    v, _ = _budgeted(tmp_path, tables, max_distinct=1)
    code = str(tables["tax"].index[0])
    ask(v, code, _vat(1e5))
    with pytest.raises(Refused, match="on 'vat_paid_12m'"):  # the paid ratio reads vat_paid_12m
        ask(v, code, {"kind": "paid_at_least", "tax": "vat", "ratio": 0.9})
    # a derived quantity counts against every column it reads
    ask(v, code, {"kind": "paid_at_least", "tax": "cit", "ratio": 0.9})
    with pytest.raises(Refused, match="on 'cit_payable_12m'"):
        ask(v, code, {"kind": "threshold", "column": "cit_payable_12m", "op": ">=", "value": 1e5})
    # refused as a whole: the paid ratio spent nothing on vat_payable_12m either
    ask(v, code, {"kind": "threshold", "column": "vat_payable_12m", "op": ">=", "value": 1e5})


def test_supply_questions_are_the_cut_above_zero_of_their_column(
    tmp_path: Path, tables: dict
) -> None:
    audit = AuditLog(sqlite_url(tmp_path / "audit.db"), "utility")
    budget = ThresholdBudget(sqlite_url(tmp_path / "consent.db"), max_distinct=5)
    v = Verifier(table=tables["utility"], schema=UTILITY, budget=budget, audit=audit)
    code = str(tables["utility"].index[0])
    ask(v, code, {"kind": "supplied_for_months", "utility": "electricity", "months": 3})
    ask(v, code, {"kind": "threshold", "column": "elec_avg_amount_3m", "op": ">", "value": 0})
    with pytest.raises(Refused, match="equals it"):  # "> 0" and ">= 0" would test "== 0"
        ask(v, code, {"kind": "threshold", "column": "elec_avg_amount_3m", "op": ">=", "value": 0})


def test_lifetime_cap_per_bank_enterprise_and_column(tmp_path: Path, tables: dict) -> None:
    v, _ = _budgeted(tmp_path, tables, max_distinct=2, window_s=3600, lifetime=4)
    code, other = str(tables["tax"].index[0]), str(tables["tax"].index[1])
    day = 86_400.0
    start = 1_800_000_000.0
    for i, value in enumerate((1e4, 2e4, 5e4, 1e5)):  # two a day: within every window's limit
        ask(v, code, _vat(value), at=start + (i // 2) * day)
    with pytest.raises(Refused, match=r"lifetime limit 4") as info:
        ask(v, code, _vat(2e5), at=start + 30 * day)
    assert info.value.code == "rate-limit"
    assert ask(v, code, _vat(2e4), at=start + 30 * day) in (Answer.YES, Answer.NO)  # asked before
    ask(v, other, _vat(2e5), at=start + 30 * day)  # another enterprise has its own
    ask(v, code, _vat(2e5), bank_id="bank2", at=start + 30 * day)  # and another bank


def test_every_budget_refusal_raises_an_audit_alert(tmp_path: Path, tables: dict) -> None:
    v, audit = _budgeted(tmp_path, tables, max_distinct=1)
    code = str(tables["tax"].index[0])
    ask(v, code, _vat(1e5))
    assert not [r for r in audit.query() if r.operation == "verify.alert"]
    for predicate in (_vat(2e5), _vat(1e5, ">")):
        with pytest.raises(Refused):
            ask(v, code, predicate)
    alerts = [r for r in audit.query() if r.operation == "verify.alert"]
    assert [a.subject for a in alerts] == [code, code]
    assert all(a.peer == "bank" and a.decision == "alert" for a in alerts)
    assert "vat_paid_12m >= 200000" in alerts[0].reason and "limit 1" in alerts[0].reason
    assert "equals it" in alerts[1].reason
    assert audit.verify().ok


def test_thresholds_off_the_grid_are_refused_naming_the_nearest(tables: dict) -> None:
    config = VerificationConfig()
    grid = ThresholdGrid(default=config.resolved_grid, columns=config.columns, ratios=config.ratios)
    v = Verifier(table=tables["tax"], schema=TAX, grid=grid)
    code = str(tables["tax"].index[0])
    with pytest.raises(PredicateError, match=r"75000 is not one of .* nearest: 50000, 100000"):
        v.check(_vat(75_000))
    with pytest.raises(PredicateError, match=r"100001 .* nearest: 100000, 200000"):
        ask(v, code, _vat(100_001))  # refused before anything is read or counted
    assert ask(v, code, _vat(100_000)) in (Answer.YES, Answer.NO)
    months = {"kind": "threshold", "column": "consecutive_normal_months", "op": ">="}
    ask(v, code, {**months, "value": 12})  # a per-column grid
    with pytest.raises(PredicateError, match="nearest: 6, 12"):
        v.check({**months, "value": 10})
    with pytest.raises(PredicateError, match=r"paid_at_least ratio: 0\.93 .* nearest: 0\.9, 0\.95"):
        v.check({"kind": "paid_at_least", "tax": "vat", "ratio": 0.93})


def test_verification_settings_in_node_yaml() -> None:
    default = VerificationConfig()
    assert (default.max_distinct, default.window_h, default.lifetime) == (3, 24.0, 12)
    grid = set(default.resolved_grid)
    assert {0.0, 1e5, 2e5, 5e5, 1e6} <= grid and 75_000.0 not in grid
    custom = VerificationConfig.model_validate(
        {"grid": [3, 1, 2, 2], "columns": {"vat_paid_12m": [1e6]}, "lifetime": 5}
    )
    assert custom.grid == [1.0, 2.0, 3.0] and custom.lifetime == 5
    for bad, field in (({"grid": []}, "grid"), ({"ratios": [0, 1]}, "ratios"),
                       ({"grid": [float("inf")]}, "grid"), ({"max_distinct": 0}, "max_distinct"),
                       ({"lifetime": 0}, "lifetime")):  # fmt: skip
        with pytest.raises(ValidationError, match=field):
            VerificationConfig.model_validate(bad)
