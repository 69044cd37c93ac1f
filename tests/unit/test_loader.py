"""Validated, all-or-nothing loading of party tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from federation.errors import DataValidationError
from parties.data import uscc
from parties.data.loader import MAX_PROBLEMS, check_table, load_table, table_digest
from parties.data.schema import BANK, TAX, UTILITY, schema_for
from parties.data.synth import synthesize_city, write_city

CODES = list(uscc.generate(np.random.default_rng(11), 50, uscc.CHENGDU_REGIONS))

BANK_HEADER = (
    "uscc,account_age_months,existing_loans,existing_loan_balance,overdue_count_24m,"
    "requested_amount,industry,default_12m"
)


def _bank_row(code: str, **over: str) -> str:
    row = {
        "uscc": code,
        "account_age_months": "24",
        "existing_loans": "1",
        "existing_loan_balance": "150000.5",
        "overdue_count_24m": "0",
        "requested_amount": "300000",
        "industry": "C",
        "default_12m": "0",
    }
    row.update(over)
    return ",".join(row.values())


def _write(path: Path, lines: list[str], *, bom: bool = False) -> Path:
    text = "\n".join(lines) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    tables = synthesize_city(n_enterprises=3000, seed=21)
    out = tmp_path_factory.mktemp("city")
    csv_paths = write_city(tables, out / "csv", fmt="csv")
    pq_paths = write_city(tables, out / "pq", fmt="parquet")
    return tables, csv_paths, pq_paths


def test_loads_typed_frame(city):
    tables, csv_paths, _ = city
    df = load_table(csv_paths["tax"], TAX)
    assert df.index.name == "uscc" and df.index.is_unique
    assert len(df) == len(tables["tax"])
    assert list(df.columns) == [c for c in TAX.names if c != "uscc"]
    assert df["vat_paid_12m"].dtype == np.float64
    assert df["consecutive_normal_months"].dtype == np.float64
    assert set(np.unique(df["in_tax_arrears"])) <= {0.0, 1.0}
    assert df["last_normal_payment_date"].dtype == "datetime64[ns]"
    assert df["last_normal_payment_date"].isna().any()
    assert pd.api.types.is_string_dtype(df["tax_credit_grade"].dtype)
    assert set(df["tax_credit_grade"]) <= {"A", "B", "M", "C", "D"}
    # values survive the round trip
    src = tables["tax"].set_index("uscc").loc[df.index]
    np.testing.assert_allclose(df["vat_paid_12m"], src["vat_paid_12m"])
    np.testing.assert_array_equal(df["in_tax_arrears"], src["in_tax_arrears"].astype(float))


def test_digest_same_for_csv_and_parquet_and_order_free(city):
    _, csv_paths, pq_paths = city
    for role in ("bank", "tax", "utility"):
        a = load_table(csv_paths[role], schema_for(role))
        b = load_table(pq_paths[role], schema_for(role))
        assert table_digest(a) == table_digest(b)
    shuffled = a.sample(frac=1.0, random_state=3)[list(reversed(a.columns))]
    assert table_digest(shuffled) == table_digest(a)
    changed = a.copy()
    changed.iloc[5, 0] = (changed.iloc[5, 0] if pd.notna(changed.iloc[5, 0]) else 0) + 1
    assert table_digest(changed) != table_digest(a)
    assert table_digest(a.iloc[1:]) != table_digest(a)


def test_bom_fullwidth_and_case_normalised(tmp_path):
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in CODES[0])
    lower = " " + CODES[1].lower() + " "
    p = _write(
        tmp_path / "bank.csv", [BANK_HEADER, _bank_row(fullwidth), _bank_row(lower)], bom=True
    )
    df = load_table(p, BANK)
    assert list(df.index) == [CODES[0], CODES[1]]


def test_bool_tokens(tmp_path):
    tokens = ["1", "0", "true", "FALSE", "yes", "No", "是", "否", "Y", "n", ""]
    expected = [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, np.nan]
    rows = [_bank_row(CODES[i], default_12m=t) for i, t in enumerate(tokens)]
    df = load_table(_write(tmp_path / "bank.csv", [BANK_HEADER, *rows]), BANK)
    np.testing.assert_array_equal(df["default_12m"].to_numpy(), np.array(expected, float))


def test_every_problem_is_listed_with_row_and_column(tmp_path):
    bad_check = CODES[5][:17] + ("X" if CODES[5][17] != "X" else "0")
    lines = [
        BANK_HEADER + ",note",
        _bank_row(CODES[0]),  # row 2
        _bank_row(CODES[1], existing_loan_balance="abc"),  # row 3
        _bank_row(CODES[2], existing_loans="-1"),  # row 4
        _bank_row(CODES[3], industry="Z"),  # row 5
        _bank_row(CODES[0]),  # row 6: duplicate of row 2
        _bank_row(bad_check),  # row 7
        _bank_row(CODES[6], requested_amount=""),  # row 8
        _bank_row(CODES[7], overdue_count_24m="1.5"),  # row 9
        _bank_row(CODES[8], default_12m="maybe"),  # row 10
        _bank_row(CODES[9][:17]),  # row 11
    ]
    lines[1:] = [line + ",x" for line in lines[1:]]
    p = _write(tmp_path / "bank.csv", lines)
    with pytest.raises(DataValidationError) as info:
        load_table(p, BANK)
    err = info.value
    assert err.path == str(p)
    probs = err.problems
    want = [
        "bank.csv: unknown column 'note'",
        "bank.csv row 3, column 'existing_loan_balance': 'abc' is not a number",
        "bank.csv row 4, column 'existing_loans': value -1 is below the minimum 0",
        "bank.csv row 5, column 'industry': value 'Z' not allowed",
        f"bank.csv row 6, column 'uscc': duplicate code {CODES[0]}, first seen at row 2",
        f"bank.csv row 7, column 'uscc': check character is '{bad_check[17]}', "
        f"expected '{CODES[5][17]}'",
        "bank.csv row 8, column 'requested_amount': missing value (required)",
        "bank.csv row 9, column 'overdue_count_24m': '1.5' is not a whole number",
        "bank.csv row 10, column 'default_12m': 'maybe' is not yes/no",
        "bank.csv row 11, column 'uscc': length 17, expected 18",
    ]
    for w in want:
        assert any(p.startswith(w) for p in probs), (w, probs)
    assert len(probs) == len(want)
    # check_table reports the same without raising
    report = check_table(p, BANK)
    assert not report.ok and report.problem_count == len(want)
    assert report.duplicate_keys == 1 and report.invalid_keys == 2
    assert report.missing["requested_amount"] == 1 and report.rows == 10


def test_missing_required_column_and_optional_absent(tmp_path):
    header = "uscc,elec_avg_amount_3m,elec_in_arrears"
    p = _write(tmp_path / "utility.csv", [header, f"{CODES[0]},120.5,否"])
    df = load_table(p, UTILITY)  # every other utility column is optional
    assert list(df.columns) == [c for c in UTILITY.names if c != "uscc"]
    assert df["gas_avg_volume_3m"].isna().all() and df.loc[CODES[0], "elec_in_arrears"] == 0.0

    p2 = _write(tmp_path / "utility2.csv", ["uscc,elec_avg_amount_3m", f"{CODES[0]},1"])
    with pytest.raises(DataValidationError, match="required column 'elec_in_arrears'"):
        load_table(p2, UTILITY)


def test_blank_rows(tmp_path):
    lines = [BANK_HEADER, _bank_row(CODES[0]), ",,,,,,,", _bank_row(CODES[1])]
    with pytest.raises(DataValidationError) as info:
        load_table(_write(tmp_path / "bank.csv", lines), BANK)
    assert info.value.problems == ["bank.csv row 3, column '*': empty row"]
    # trailing empty lines from a spreadsheet export are harmless
    ok = _write(tmp_path / "ok.csv", [BANK_HEADER, _bank_row(CODES[0]), ",,,,,,,", "", ""])
    assert len(load_table(ok, BANK)) == 1


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.csv", None, "file not found"),
        ("latin.csv", b"uscc,industry\n" + "caf\xe9".encode("latin-1"), "not UTF-8"),
        ("empty.csv", b"", "empty"),
        ("table.xlsx", b"PK..", "unsupported file type"),
        ("broken.parquet", b"not parquet at all", "cannot read"),
    ],
)
def test_unreadable_files(tmp_path, name, content, message):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataValidationError) as info:
        load_table(p, TAX)
    assert info.value.problems[0].startswith(name) and message in info.value.problems[0]
    assert not check_table(p, TAX).ok


def test_parquet_records_are_numbered(tmp_path):
    df = pd.DataFrame(
        {
            "uscc": [CODES[0], CODES[1][:10]],
            "elec_avg_amount_3m": [1.0, -2.0],
            "elec_in_arrears": [True, False],
        }
    )
    p = tmp_path / "utility.parquet"
    df.to_parquet(p, index=False)
    with pytest.raises(DataValidationError) as info:
        load_table(p, UTILITY)
    assert info.value.problems == [
        "utility.parquet record 2, column 'uscc': length 10, expected 18",
        "utility.parquet record 2, column 'elec_avg_amount_3m': value -2 is below the minimum 0",
    ]


def test_problem_list_is_capped_but_counted(tmp_path):
    rows = [_bank_row(c[:17]) for c in uscc.generate(np.random.default_rng(2), 1500, ["510104"])]
    p = _write(tmp_path / "bank.csv", [BANK_HEADER, *rows])
    report = check_table(p, BANK)
    assert report.problem_count == 1500
    assert len(report.problems) == MAX_PROBLEMS + 1
    assert report.problems[-1].endswith("500 more problem(s)")


def test_hundred_thousand_rows_load_completely(tmp_path):
    tables = synthesize_city(n_enterprises=143_000, seed=5)  # bank holds ~100,000
    paths = write_city({"bank": tables["bank"]}, tmp_path, fmt="csv")
    df = load_table(paths["bank"], BANK)
    assert len(df) > 95_000


def test_docs_list_every_schema_column():
    """docs/data.md is the human copy of the sharing lists; keep it in step with the code."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text("utf-8")
    for role in ("bank", "tax", "utility"):
        schema = schema_for(role)
        section = doc[doc.index(f"### {role}") :].split("\n#", 1)[0]
        for c in schema.columns:
            row = f"| `{c.name}` | {c.label_zh} | {c.dtype}"
            assert row in section, row
            line = section[section.index(row) :].splitlines()[0]
            assert f"| {c.category} | {c.grade} | {'yes' if c.required else 'no'} |" in line
