"""`xinyidai data synth` and `xinyidai data check` through the real typer app."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from federation.errors import ConfigError
from parties.data.loader import load_table
from parties.data.schema import schema_for
from xinyidai.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def city_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("city")
    result = runner.invoke(
        app, ["data", "synth", "--enterprises", "800", "--seed", "4", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_synth_writes_tables_and_summary(city_dir):
    out, output = city_dir
    meta = json.loads((out / "city.json").read_text("utf-8"))
    assert meta["seed"] == 4 and meta["n_enterprises"] == 800
    for role in ("bank", "tax", "utility"):
        df = load_table(out / f"{role}.csv", schema_for(role))
        assert len(df) == meta["rows"][role]
        assert f"{meta['rows'][role]:,}" in output
    assert "default rate" in output and "bank&tax" in output


def test_synth_parquet(tmp_path):
    result = runner.invoke(
        app,
        [
            "data",
            "synth",
            "-n",
            "300",
            "--seed",
            "1",
            "--out",
            str(tmp_path),
            "--format",
            "parquet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bank.parquet",
        "city.json",
        "tax.parquet",
        "utility.parquet",
    ]


def test_synth_rejects_bad_format(tmp_path):
    result = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--format", "xlsx"])
    assert isinstance(result.exception, ConfigError)
    assert not list(tmp_path.iterdir())


def test_check_clean_file_exits_zero(city_dir):
    out, _ = city_dir
    result = runner.invoke(app, ["data", "check", "--role", "utility", str(out / "utility.csv")])
    assert result.exit_code == 0, result.output
    assert "OK" in result.output and "gas_avg_volume_3m" in result.output


def test_check_broken_file_lists_problems_and_exits_one(city_dir, tmp_path):
    out, _ = city_dir
    lines = (out / "tax.csv").read_text("utf-8").splitlines()
    code = lines[3].split(",")[0]
    lines[3] = ",".join([code[:17] + ("0" if code[17] != "0" else "1"), *lines[3].split(",")[1:]])
    lines[5] = lines[1]  # duplicate of row 2
    broken = tmp_path / "tax.csv"
    broken.write_text("\n".join(lines) + "\n", "utf-8")
    result = runner.invoke(app, ["data", "check", "--role", "tax", str(broken)])
    assert result.exit_code == 1
    assert "tax.csv row 4, column 'uscc': check character is" in result.output
    assert "tax.csv row 6, column 'uscc': duplicate code" in result.output
    assert "duplicate keys: 1" in result.output and "2 problem(s)" in result.output


def test_check_wrong_role_is_a_config_error(city_dir):
    out, _ = city_dir
    result = runner.invoke(app, ["data", "check", "--role", "bnak", str(out / "bank.csv")])
    assert isinstance(result.exception, ConfigError)
    assert "allowed roles: bank, tax, utility" in str(result.exception)


def test_check_against_wrong_schema_reports_drift(city_dir):
    out, _ = city_dir
    result = runner.invoke(app, ["data", "check", "--role", "bank", str(out / "tax.csv")])
    assert result.exit_code == 1
    assert "unknown column 'tax_credit_grade'" in result.output
    assert "required column 'requested_amount'" in result.output
