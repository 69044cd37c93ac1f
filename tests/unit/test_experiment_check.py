"""An experiment's files are checked before anything starts (issue 13, parts 2-4).

``xinyidai experiment check`` (and the same check at the start of ``experiment run``) lists every
problem at once, naming file, column and rows; plain ids are normalised like USCCs and rows that
do not join are counted; the registered model and the MLflow experiment are named by the
config; features are published under stable aliases. No node is started in this file.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from federation.errors import ConfigError
from parties.data import uscc
from xinyidai.experiment import load_experiment, run_experiment
from xinyidai.experiment.check import check_experiment, check_party

N = 40


def _write(directory: Path, *, bank: pd.DataFrame | None = None, tax: pd.DataFrame | None = None):
    rng = np.random.default_rng(0)
    ids = [f"E{i:03d}" for i in range(N)]
    if bank is None:
        bank = pd.DataFrame(
            {"id": ids, "y": np.arange(N) % 2, "age": rng.normal(size=N), "[b]default": 1.0}
        )
    if tax is None:
        tax = pd.DataFrame({"id": ids, "vat": rng.normal(size=N)})
    bank.to_csv(directory / "bank.csv", index=False)
    tax.to_csv(directory / "tax.csv", index=False)


def _config(directory: Path, file: str = "exp.yaml", **changes) -> Path:
    config = {
        "name": "tiny-check",
        "bank": {"path": "bank.csv", "id_column": "id", "id_kind": "plain", "label_column": "y"},
        "holders": {"tax": {"path": "tax.csv", "id_column": "id", "id_kind": "plain"}},
        "psi": {"min_overlap": 0.5},
    }
    for key, value in changes.items():
        config[key] = value
    path = directory / file
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def _check(path: Path):
    config, _ = load_experiment(path)
    return check_experiment(config)


def test_a_clean_experiment_passes_with_its_overlap(tmp_path):
    _write(tmp_path)
    report = _check(_config(tmp_path))
    assert report.ok, report.problems
    assert report.overlap == {"bank&tax": N, "all": N}
    assert report.parties["bank"].features == ["age", "[b]default"]


def test_every_problem_is_listed_at_once_naming_file_column_and_rows(tmp_path):
    ids = [f"E{i:03d}" for i in range(N)]
    labels = np.arange(N) % 2 + 1  # coded 1/2, as a public data set may be
    bank = pd.DataFrame({"id": ids, "y": labels, "age": 1.0})
    _write(tmp_path, bank=bank)
    holders = {
        "tax": {"path": "tax.csv", "id_column": "id", "id_kind": "plain", "features": ["vat_x"]},
        "utility": {"path": "nowhere.csv", "id_column": "id", "id_kind": "plain"},
    }
    report = _check(_config(tmp_path, holders=holders))
    text = "\n".join(report.problems)
    # the label: file, column, the bad value and its rows
    assert "bank.csv column 'y' (the label) must hold 0 or 1" in text
    assert "found '2' in 20 row(s): rows 3, 5, 7, 9, 11 (and 15 more)" in text
    # an absent column names the config field and what the file has
    assert "tax.csv has no column 'vat_x' (holders.tax.features)" in text
    # a missing file is said as such, and nothing about its columns
    missing = [p for p in report.problems if "nowhere.csv" in p]
    assert missing == [f"utility: nowhere.csv: file not found ({tmp_path / 'nowhere.csv'})"]
    assert len(report.problems) == 3
    assert "all" not in report.overlap  # no common set without every party


def test_invalid_usccs_are_named_by_row_after_normalisation(tmp_path):
    codes = uscc.generate(np.random.default_rng(1), N, uscc.CHENGDU_REGIONS)
    typed = [f"  {c.lower()} " for c in codes]  # padded, lower case: fine once normalised
    typed[4] = codes[4][:17] + ("0" if codes[4][17] != "0" else "1")  # a wrong check character
    bank = pd.DataFrame({"uscc": typed, "y": np.arange(N) % 2, "x": 1.0})
    tax = pd.DataFrame({"uscc": list(codes), "t": np.arange(N, dtype=float)})
    _write(tmp_path, bank=bank, tax=tax)
    bank_cfg = {"path": "bank.csv", "label_column": "y"}
    report = _check(_config(tmp_path, bank=bank_cfg, holders={"tax": {"path": "tax.csv"}}))
    assert len(report.problems) == 1, report.problems
    assert report.problems[0].startswith("bank: bank.csv row 6, column 'uscc': check character")
    assert report.overlap["bank&tax"] == N - 1


def test_text_columns_are_categorical_with_a_note_and_declared_ones_without(tmp_path):
    ids = [f"E{i:03d}" for i in range(N)]
    tax = pd.DataFrame(
        {"id": ids, "housing": ["own", "rent", "[b]free", None] * (N // 4), "vat": 1.5}
    )
    _write(tmp_path, tax=tax)
    report = _check(_config(tmp_path))
    assert report.ok, report.problems
    assert report.parties["tax"].categorical == ["housing"]
    (note,) = report.notes
    assert "tax.csv column 'housing' holds text ('own', 'rent', '[b]free'...)" in note
    assert "categorical" in note
    holders = {"tax": {"path": "tax.csv", "id_column": "id", "id_kind": "plain"}}
    holders["tax"]["categorical"] = ["housing"]
    declared = _check(_config(tmp_path, holders=holders))
    assert declared.ok and not declared.notes
    applied = declared.applied(load_experiment(_config(tmp_path))[0])
    assert applied.holders["tax"].categorical is None  # nothing inferred, nothing added
    inferred = report.applied(load_experiment(_config(tmp_path))[0])
    assert inferred.holders["tax"].categorical == ["housing"]


def test_a_mostly_numeric_column_with_a_bad_cell_is_named_by_row(tmp_path):
    ids = [f"E{i:03d}" for i in range(N)]
    vat = [str(float(i)) for i in range(N)]
    vat[9] = "1,234"
    _write(tmp_path, tax=pd.DataFrame({"id": ids, "vat": vat}))
    report = _check(_config(tmp_path))
    assert report.problems == ["tax: tax.csv row 11, column 'vat': '1,234' is not a number"]


def test_plain_ids_join_whatever_their_case_width_or_padding(tmp_path):
    ids = [f"E{i:03d}" for i in range(N)]
    typed = [
        f" e{i:03d}  " if i % 3 == 0 else f"Ｅ{i:03d}" if i % 3 == 1 else ids[i] for i in range(N)
    ]
    _write(tmp_path, tax=pd.DataFrame({"id": typed, "vat": 1.0}))
    report = _check(_config(tmp_path))
    assert report.ok, report.problems
    assert report.overlap["bank&tax"] == N  # before: 27 of 40 rows did not join, silently

    from parties.config import TableConfig
    from parties.data.loader import load_table

    def codes(name: str) -> list[str]:
        table = TableConfig(path=tmp_path / name, id_column="id", id_kind="plain")
        return sorted(load_table(table.path, table.table_schema("x")).index)

    assert codes("bank.csv") == codes("tax.csv")
    assert list(uscc.normalise_plain([" Ab1 ", "ａＢ１", None, "a b"])) == ["ab1", "ab1", "", "a b"]


def test_rows_that_will_not_join_are_counted(tmp_path):
    ids = [f"E{i:03d}" for i in range(N)]
    _write(tmp_path, tax=pd.DataFrame({"id": ids[:30], "vat": 1.0}))
    report = _check(_config(tmp_path))
    assert report.ok
    assert any("10 bank row(s) will not join" in n for n in report.notes)
    too_few = _check(_config(tmp_path, psi={"min_overlap": 0.9}))
    assert any("share 30 of the bank's 40 keys; 36 required" in p for p in too_few.problems)


def test_the_run_stops_before_any_node_starts(tmp_path):
    bank = pd.DataFrame({"id": [f"E{i:03d}" for i in range(N)], "y": 2, "age": 1.0})
    _write(tmp_path, bank=bank)
    config, _ = load_experiment(_config(tmp_path))
    with pytest.raises(ConfigError, match=r"bank\.csv column 'y' \(the label\)"):
        run_experiment(config, config_sha256="x", workdir=tmp_path / "never", track=False)
    assert not (tmp_path / "never").exists()


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xinyidai.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_cli_check_and_run_print_user_text_literally(tmp_path):
    bank = pd.DataFrame({"id": [f"E{i:03d}" for i in range(N)], "y": 3, "[b]default": 1.0})
    _write(tmp_path, bank=bank)
    bank_cfg = {
        "path": "bank.csv",
        "id_column": "id",
        "id_kind": "plain",
        "label_column": "y",
        "features": ["[b]default", "[red]gone"],
    }
    path = _config(tmp_path, bank=bank_cfg)
    checked = _cli("experiment", "check", str(path), cwd=tmp_path)
    assert checked.returncode == 1
    assert "bank.csv has no column '[red]gone' (bank.features)" in checked.stdout
    assert "'[b]default'" in checked.stdout
    assert "found '3' in 40 row(s)" in checked.stdout
    run = _cli("experiment", "run", str(path), "--out", "r.json", "--no-track", cwd=tmp_path)
    assert run.returncode == 2
    assert "2 problem(s), nothing started" in run.stderr and "'[red]gone'" in run.stderr
    assert "training" not in run.stderr and "nodes" not in run.stderr
    assert not (tmp_path / ".xinyidai").exists()
    bad_name = _config(tmp_path, file="bad.yaml", name="Bad_Name")
    named = _cli("experiment", "check", str(bad_name), cwd=tmp_path)
    assert "'^[a-z0-9][a-z0-9-]{0,62}$'" in named.stderr  # the whole rule, not '^{0,62}$'


def test_data_check_uses_an_experiments_columns(tmp_path):
    from xinyidai.cli.data import app

    ids = [f"E{i:03d}" for i in range(N)]
    _write(tmp_path, tax=pd.DataFrame({"id": ids, "vat": ["x"] * 39 + ["1"]}))
    path = _config(tmp_path)
    runner = CliRunner()
    one = runner.invoke(app, ["check", str(tmp_path / "tax.csv"), "--config", str(path)])
    assert one.exit_code == 0, one.output
    assert "tax: tax.csv: 40 rows, 40 valid keys, 1 features, categorical: vat" in one.output
    every = runner.invoke(app, ["check", "--config", str(path)])
    assert every.exit_code == 0 and "overlap: bank ∩ tax 40, all 40" in every.output
    (tmp_path / "tax.csv").write_text("id,vat\nE001,1\nE001,2\n")
    dup = runner.invoke(app, ["check", "--config", str(path), "--party", "tax"])
    assert dup.exit_code == 1
    assert "tax.csv row 3, column 'id': duplicate code" in dup.output
    config, _ = load_experiment(path)
    with pytest.raises(ConfigError, match="no party 'water'"):
        check_party(config, "water")


def test_data_check_of_a_missing_file_says_so_first(tmp_path):
    from xinyidai.cli.data import app

    result = CliRunner().invoke(app, ["check", str(tmp_path / "tax.csv"), "--role", "tax"])
    assert result.exit_code == 1
    assert "tax.csv: file not found" in result.output
    assert "absent" not in result.output  # no table of "absent" columns for a missing file


def test_the_model_is_named_by_the_config_or_its_file(tmp_path):
    _write(tmp_path)
    config, _ = load_experiment(_config(tmp_path, file="my_credit.v2 (copy).yaml"))
    assert config.model.name == "my_credit.v2-copy"
    named, _ = load_experiment(
        _config(tmp_path, model={"type": "logistic", "name": "sme-credit-lr"})
    )
    assert named.model.name == "sme-credit-lr"
    assert "name" not in named.model.classifier_params()
    with pytest.raises(ConfigError, match=r"model\.logistic\.name"):
        load_experiment(_config(tmp_path, model={"type": "logistic", "name": "no spaces"}))

    from xinyidai.experiment.run import experiment_tracking
    from xinyidai.tracking import TrackingConfig

    tracking = experiment_tracking(config, TrackingConfig.resolve(tmp_path / "mlflow"))
    assert tracking.experiment == "tiny-check"  # the MLflow experiment is the experiment's
    chosen = TrackingConfig.resolve(tmp_path / "mlflow", experiment="mine")
    assert experiment_tracking(config, chosen).experiment == "mine"


def test_feature_aliases_are_stable_and_labels_are_published(tmp_path):
    from parties.data.schema import generic_schema, schema_for
    from parties.summary import feature_aliases, table_summary

    schema = generic_schema(
        "tax", id_column="id", id_kind="plain", features=["vat", "housing", "arrears"]
    )
    first = feature_aliases("tax", schema)
    assert first == {"vat": "tax:f01", "housing": "tax:f02", "arrears": "tax:f03"}
    assert feature_aliases("tax", schema) == first  # no secret, no run: the same every time
    labelled = feature_aliases("tax", schema, {"vat": "VAT paid (12m)"})
    assert labelled["vat"] == "VAT paid (12m)" and labelled["housing"] == "tax:f02"
    with pytest.raises(ConfigError, match="'tax:f02'"):
        feature_aliases("tax", schema, {"vat": "tax:f02"})
    with pytest.raises(ConfigError, match="'nope'"):
        feature_aliases("tax", schema, {"nope": "x"})
    with pytest.raises(ConfigError, match="printable"):
        feature_aliases("tax", schema, {"vat": "x" * 65})
    role = schema_for("tax")
    table = pd.DataFrame(index=pd.Index([], name="uscc"))
    a = table_summary(table, role, b"k" * 32)
    b = table_summary(table, role, b"j" * 32)
    assert [c.alias for c in a.columns] == [c.alias for c in b.columns]  # keys differ, aliases not
    assert [c.name_hash for c in a.columns] != [c.name_hash for c in b.columns]
    assert a.columns[-1].alias.startswith("tax:f")


def test_published_labels_are_checked_before_the_run(tmp_path):
    _write(tmp_path)
    labels = {"vat": "tax:f01 ", "gone": "x"}  # a padded label; a column the file lacks
    holders = {"tax": {"path": "tax.csv", "id_column": "id", "id_kind": "plain", "labels": labels}}
    report = _check(_config(tmp_path, holders=holders))
    assert "tax: holders.tax.labels names 'gone', which is not among its features" in (
        report.problems
    )
    assert any("label for 'vat' must be 1-64 printable" in p for p in report.problems)


def test_the_unjoined_rows_are_said_after_alignment():
    from types import SimpleNamespace

    from xinyidai.experiment.jobs import unjoined_message

    lost = SimpleNamespace(bank_size=898, size=845, pairwise={"tax": 845, "utility": 890})
    assert unjoined_message(lost) == (
        "not joined: 53 of 898 bank rows (53 not at tax, 8 not at utility); they are left out "
        "of training and testing"
    )
    whole = SimpleNamespace(bank_size=10, size=10, pairwise={"tax": 10})
    assert unjoined_message(whole) == "joined: all 10 bank rows are at every holder"
