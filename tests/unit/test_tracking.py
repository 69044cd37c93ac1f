"""MLflow tracking and registry: what a training job logs (params, per-step and final metrics,
tags, one dataset input per party with only its digest and keyed-hash schema, artifacts), the
registered pyfunc version with alias challenger, promotion to champion, ``resolve``, the pyfunc
scoring through a pluggable scorer, and the ``xinyidai model`` commands.

MLflow's first use of a fresh SQLite store runs its migrations (seconds): they run once per
session into a template database that each module copies (``_store``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from federation.audit import AuditLog, sqlite_url
from parties.consent import ConsentStats
from parties.data.schema import schema_for
from parties.summary import table_summary
from xinyidai import tracking
from xinyidai.cli import model as model_cli
from xinyidai.tracking import (
    PartyDataset,
    TrackingConfig,
    TrackingError,
    TrainingRecord,
    code_version,
    load_scoring_model,
    log_training,
    mlflow_client,
    promote,
    promotion_history,
    resolve,
    secureboost_record,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = b"k" * 32  # a node's column-hashing secret (test value)
BANK_MODEL = json.dumps({"format": "test-model/1", "trees": [[1, 2, 3]]}, indent=1)
CONFIG = "model: secureboost\nparams:\n  n_trees: 3\n  max_depth: 2\n"
PARTS = {"tax": hashlib.sha256(b"tax part").hexdigest(), "utility": "ab" * 32}


def _store(tmp_path_factory: pytest.TempPathFactory, name: str) -> TrackingConfig:
    """A fresh local store whose database is a copy of one migrated once per session."""
    template = tmp_path_factory.getbasetemp() / "mlflow-template"
    if not (template / "mlflow.db").exists():
        mlflow_client(TrackingConfig.resolve(template)).search_experiments()
    dest = tmp_path_factory.mktemp(name)
    src, dst = sqlite3.connect(template / "mlflow.db"), sqlite3.connect(dest / "mlflow.db")
    with dst:
        src.backup(dst)
    src.close()
    dst.close()
    return TrackingConfig.resolve(dest)


def _datasets() -> list[PartyDataset]:
    out = []
    for role, rows in (("bank", 500), ("tax", 420), ("utility", 450)):
        summary = table_summary(pd.DataFrame(index=range(rows)), schema_for(role), KEY)
        digest = hashlib.sha256(f"{role} table".encode()).hexdigest()
        out.append(PartyDataset.from_summary(role, summary, digest))
    return out


def _record(**overrides) -> TrainingRecord:
    fields = dict(
        job_id="job-7",
        model_name="credit-sbt",
        protocol="secureboost",
        parties=["bank", "tax", "utility"],
        bank_model_json=BANK_MODEL,
        params={"n_trees": 3, "max_depth": 2, "learning_rate": 0.3, "bins": [8, 16]},
        metrics={"test_auc": 0.81, "test_ks": 0.47, "test_gini": 0.62, "bank_only_auc": 0.7},
        step_metrics={"train_logloss": [0.6, 0.5, 0.45], "tree_seconds": [1.5, 1.25, 1.0]},
        crypto_scheme="paillier-djn",
        key_bits=2048,
        psi_job="psi-3",
        config_text=CONFIG,
        datasets=_datasets(),
        consent={
            "tax": ConsentStats(active=40, revoked=2, expired=1, enterprises=39),
            "utility": {"active": 38, "revoked": 0, "expired": 3},
        },
        consent_taken_at=1_700_000_000.0,
        holder_parts=PARTS,
        scoring_endpoint={"node_config": "/srv/bank/node.yaml", "address": "127.0.0.1:50051"},
    )
    fields.update(overrides)
    return TrainingRecord(**fields)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> TrackingConfig:
    return _store(tmp_path_factory, "tracking")


@pytest.fixture(scope="module")
def tracked(store: TrackingConfig):
    return log_training(_record(), tracking=store)


# ---------------------------------------------------------------------------------------------
# where things are stored


def test_config_defaults_to_project_local_store_and_honours_mlflow_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    local = TrackingConfig.resolve()
    root = tmp_path / ".xinyidai" / "mlflow"
    assert local.local_dir == root
    assert local.tracking_uri == f"sqlite:///{root / 'mlflow.db'}" == local.registry_uri
    assert local.artifact_location == (root / "artifacts").as_uri()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@mlflow.internal:5000")
    server = TrackingConfig.resolve()
    assert server.tracking_uri == server.registry_uri == "http://user:secret@mlflow.internal:5000"
    assert server.artifact_location is None and server.local_dir is None
    assert "secret" not in server.describe()
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", "postgresql://mlflow@db/registry")
    assert TrackingConfig.resolve().registry_uri == "postgresql://mlflow@db/registry"
    # An explicit directory or URI wins over the environment.
    assert TrackingConfig.resolve(tmp_path / "x").local_dir == tmp_path / "x"
    assert TrackingConfig.resolve(tracking_uri="sqlite:///a.db").tracking_uri == "sqlite:///a.db"


def test_importing_tracking_and_its_cli_does_not_import_mlflow() -> None:
    code = (
        "import sys, xinyidai.tracking, xinyidai.lineage, xinyidai.cli.model, "
        "xinyidai.cli.lineage; print('mlflow' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_code_version_is_a_commit_or_says_unknown() -> None:
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|.+\+unknown-commit", code_version())


# ---------------------------------------------------------------------------------------------
# what a run holds


def test_run_has_params_metrics_per_step_and_final(store: TrackingConfig, tracked) -> None:
    client = mlflow_client(store)
    run = client.get_run(tracked.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "job-7"
    assert run.data.params == {
        "n_trees": "3",
        "max_depth": "2",
        "learning_rate": "0.3",
        "bins": "[8, 16]",
    }
    assert run.data.metrics["test_auc"] == pytest.approx(0.81)
    assert run.data.metrics["bank_only_auc"] == pytest.approx(0.7)
    history = client.get_metric_history(tracked.run_id, "train_logloss")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.6), (1, 0.5), (2, 0.45)]
    assert len(client.get_metric_history(tracked.run_id, "tree_seconds")) == 3


def test_run_tags_name_protocol_crypto_parties_config_code_psi_and_job(
    store: TrackingConfig, tracked
) -> None:
    tags = mlflow_client(store).get_run(tracked.run_id).data.tags
    expected = {
        "xinyidai.protocol": "secureboost",
        "xinyidai.crypto.scheme": "paillier-djn",
        "xinyidai.crypto.key_bits": "2048",
        "xinyidai.parties": "bank,tax,utility",
        "xinyidai.config_sha256": hashlib.sha256(CONFIG.encode()).hexdigest(),
        "xinyidai.psi_job": "psi-3",
        "xinyidai.job_id": "job-7",
        "xinyidai.code_version": code_version(),
    }
    assert {k: tags.get(k) for k in expected} == expected


def test_one_dataset_input_per_party_with_its_digest_and_no_plain_column_name(
    store: TrackingConfig, tracked
) -> None:
    run = mlflow_client(store).get_run(tracked.run_id)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert sorted(inputs) == ["bank-bank", "tax-tax", "utility-utility"]
    for role in ("bank", "tax", "utility"):
        entry = inputs[f"{role}-{role}"]
        ds = entry.dataset
        full = hashlib.sha256(f"{role} table".encode()).hexdigest()
        assert full.startswith(ds.digest) and len(ds.digest) <= 36
        assert ds.source_type == "xinyidai"
        assert json.loads(ds.source) == {"uri": f"xinyidai://{role}/{role}"}
        profile = json.loads(ds.profile)
        assert profile["table_digest"] == full and profile["party"] == role
        assert profile["num_rows"] == {"bank": 500, "tax": 420, "utility": 450}[role]
        names = [c["name"] for c in json.loads(ds.schema)["mlflow_colspec"]]
        assert names and all(re.fullmatch(r"[0-9a-f]{16}", n) for n in names)
        text = json.dumps([ds.name, ds.source, ds.schema, ds.profile])
        for column in schema_for(role).columns:
            assert column.name not in text.replace(f"{role}-{role}", "")
        assert [(t.key, t.value) for t in entry.tags] == [("mlflow.data.context", "training")]


def test_artifacts_hold_bank_part_config_consent_snapshots_and_part_digests(
    store: TrackingConfig, tracked, tmp_path: Path
) -> None:
    client = mlflow_client(store)

    def text(path: str) -> str:
        return Path(client.download_artifacts(tracked.run_id, path, str(tmp_path))).read_text()

    assert text("bank/model.json") == BANK_MODEL
    assert text("config/experiment.yaml") == CONFIG
    tax = json.loads(text("consent/tax.json"))
    assert tax == {
        "holder": "tax",
        "taken_at": 1_700_000_000.0,
        "active": 40,
        "revoked": 2,
        "expired": 1,
        "enterprises": 39,
        "not_yet_valid": 0,
    }
    assert json.loads(text("consent/utility.json"))["expired"] == 3
    parts = json.loads(text("parts.json"))
    assert parts["holders"] == {h: {"sha256": d} for h, d in PARTS.items()}
    assert parts["bank"]["sha256"] == hashlib.sha256(BANK_MODEL.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# registry


def test_registered_as_new_version_with_challenger_alias_and_part_tags(
    store: TrackingConfig, tracked
) -> None:
    assert tracked.version == "1" and tracked.model_uri == "models:/credit-sbt/1"
    assert tracked.model_id == "credit-sbt/1"
    version, run_id, tags = resolve("credit-sbt", "challenger", tracking=store)
    assert (version, run_id) == ("1", tracked.run_id)
    assert tags["xinyidai.part.tax.sha256"] == PARTS["tax"]
    assert tags["xinyidai.part.utility.sha256"] == PARTS["utility"]
    assert tags["xinyidai.part.bank.sha256"] == hashlib.sha256(BANK_MODEL.encode()).hexdigest()
    assert resolve("credit-sbt", 1, tracking=store) == resolve("credit-sbt", "v1", tracking=store)
    with pytest.raises(TrackingError, match="model 'credit-sbt' has no alias 'champion'"):
        resolve("credit-sbt", "champion", tracking=store)


def test_promote_moves_champion_records_who_when_why_and_refuses_missing_versions(
    store: TrackingConfig, tmp_path: Path
) -> None:
    first = log_training(_record(model_name="credit-promo", job_id="job-p1"), tracking=store)
    second = log_training(_record(model_name="credit-promo", job_id="job-p2"), tracking=store)
    assert (first.version, second.version) == ("1", "2")
    assert resolve("credit-promo", "challenger", tracking=store).version == "2"

    assert promote("credit-promo", "1", by="alice", reason="first", tracking=store) is None
    with AuditLog(sqlite_url(tmp_path / "audit.db"), "bank") as log:
        previous = promote(
            "credit-promo", 2, by="bob", reason="AUC +0.03 on test", tracking=store, audit=log
        )
        (entry,) = log.query(operation="model.promote")
        assert log.verify().ok
    assert previous == "1"
    assert entry.model_id == "credit-promo/2" and "by bob" in entry.reason
    version, _, tags = resolve("credit-promo", "champion", tracking=store)
    assert version == "2"
    assert tags["xinyidai.promoted_by"] == "bob"
    assert tags["xinyidai.promotion_reason"] == "AUC +0.03 on test"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", tags["xinyidai.promoted_at"])
    history = promotion_history("credit-promo", tracking=store)
    assert [(p.version, p.previous, p.by, p.reason) for p in history] == [
        ("1", None, "alice", "first"),
        ("2", "1", "bob", "AUC +0.03 on test"),
    ]

    with pytest.raises(TrackingError, match="model 'credit-promo' has no version 9"):
        promote("credit-promo", 9, by="carol", tracking=store)
    with pytest.raises(TrackingError, match="no registered model 'credit-nope'"):
        promote("credit-nope", 1, by="carol", tracking=store)
    with pytest.raises(TrackingError, match="who promotes"):
        promote("credit-promo", 1, by=" ", tracking=store)
    assert resolve("credit-promo", "champion", tracking=store).version == "2"  # unchanged


def test_failed_registration_leaves_a_failed_run_and_no_version(
    store: TrackingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tracking.registry, "log_pyfunc", broken)
    client = mlflow_client(store)
    with pytest.raises(RuntimeError, match="disk full"):
        log_training(_record(model_name="credit-broken", job_id="job-b"), tracking=store)
    assert client.search_model_versions("name='credit-broken'") == []
    experiment = client.get_experiment_by_name("xinyidai").experiment_id
    (run,) = client.search_runs([experiment], "tags.`xinyidai.job_id` = 'job-b'")
    assert run.info.status == "FAILED"
    logged = client.search_logged_models(experiment_ids=[experiment])
    (pending,) = [m for m in logged if m.tags.get("xinyidai.job_id") == "job-b"]
    assert str(pending.status).endswith("FAILED")


# ---------------------------------------------------------------------------------------------
# the pyfunc


@pytest.fixture
def fake_scorer(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Stands in for parties.bank.scoring (the bank node's Score service, built later)."""
    calls: list[tuple] = []

    def score_codes(endpoint: dict, model_name: str, version: str, codes: list[str]):
        calls.append((endpoint, model_name, version, codes))
        return pd.DataFrame({"uscc": codes, "pd": np.linspace(0.1, 0.2, len(codes))})

    module = types.ModuleType("parties.bank.scoring")
    module.score_codes = score_codes  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "parties.bank.scoring", module)
    return calls


def test_pyfunc_scores_codes_through_the_pluggable_scorer(
    store: TrackingConfig, tracked, fake_scorer: list[tuple], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An operator's MLFLOW_TRACKING_URI survives our scoped use of MLflow's global URIs.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    model = load_scoring_model("credit-sbt", "challenger", tracking=store)
    assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:9"
    codes = ["91350100M000100Y43", "91110000600037341L"]
    out = model.predict(pd.DataFrame({"uscc": codes}))
    assert list(out["uscc"]) == codes and len(out) == 2
    endpoint, name, version, sent = fake_scorer[0]
    assert endpoint == {"node_config": "/srv/bank/node.yaml", "address": "127.0.0.1:50051"}
    assert (name, version, sent) == ("credit-sbt", "1", codes)
    python_model = model.unwrap_python_model()
    assert python_model.bank_model == json.loads(BANK_MODEL)
    assert type(python_model).__name__ == "BankScoringModel"
    with pytest.raises(Exception, match="uscc"):
        model.predict(pd.DataFrame({"code": codes}))


def test_pyfunc_without_scoring_service_says_so(
    store: TrackingConfig, tracked, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "parties.bank.scoring", None)  # import fails
    model = load_scoring_model("credit-sbt", "1", tracking=store)
    with pytest.raises(TrackingError, match="scoring service is not available"):
        model.predict(pd.DataFrame({"uscc": ["91350100M000100Y43"]}))


# ---------------------------------------------------------------------------------------------
# validation and helpers (no MLflow needed)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"model_name": "credit sbt"}, "model name"),
        ({"parties": ["bank", "Tax!"]}, "not a node id"),
        ({"holder_parts": {"insurer": "ab" * 32}}, "not holders of this job"),
        ({"holder_parts": {"tax": "xyz"}}, "not a sha256"),
        ({"consent": {"bank": {"active": 1}}}, "not holders of this job"),
        ({"bank_model_json": "{not json"}, "not JSON"),
        ({"metrics": {"auc": "high"}}, "not a number"),
        (
            {"datasets": [PartyDataset("tax", "tax", "d1", 3, (("tax_paid_12m", "float"),))]},
            "not a keyed hash",
        ),
    ],
)
def test_record_is_checked_before_anything_is_logged(overrides: dict, message: str) -> None:
    with pytest.raises(TrackingError, match=message):
        _record(**overrides).check()


def test_secureboost_record_maps_estimator_and_report() -> None:
    clf = SimpleNamespace(
        to_json=lambda: BANK_MODEL,
        params_=None,
        n_trees=3,
        max_depth=2,
        learning_rate=0.3,
        max_bin=16,
        random_state=0,
        key_bits=1024,
    )
    report = SimpleNamespace(
        job_id="al-1-sb",
        alignment_id="al-1",
        auc=0.8,
        ks=0.5,
        baseline_auc=0.7,
        baseline_ks=0.4,
        n_aligned=100,
        n_train=70,
        n_test=30,
        seconds=12.0,
        tree_seconds=[4.0, 4.0, 4.0],
        split_owners={"bank": 3, "tax": 2},
    )
    record = secureboost_record(clf, report, parties=["bank", "tax"], config_text=CONFIG)
    record.check()
    assert (record.job_id, record.psi_job, record.key_bits) == ("al-1-sb", "al-1", 1024)
    assert record.metrics["test_gini"] == pytest.approx(0.6)
    assert record.metrics["bank_only_gini"] == pytest.approx(0.4)
    assert record.metrics["splits_tax"] == 2.0
    assert record.step_metrics["tree_seconds"] == [4.0, 4.0, 4.0]
    assert record.params["n_trees"] == 3 and record.protocol == "secureboost"


# ---------------------------------------------------------------------------------------------
# xinyidai model ...


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(model_cli.app, name="model")
    app.command("noop")(lambda: None)  # keeps "model" a sub-command
    return app


def test_model_cli_list_show_promote(store: TrackingConfig) -> None:
    cli_run = log_training(_record(model_name="credit-cli", job_id="job-cli"), tracking=store)
    runner, app = CliRunner(), _cli()
    where = ["--mlflow-dir", str(store.local_dir)]
    listed = runner.invoke(app, ["model", "list", *where])
    assert listed.exit_code == 0, listed.output
    assert "credit-cli" in listed.output and "challenger→v1" in listed.output

    shown = runner.invoke(app, ["model", "show", "credit-cli", "challenger", *where])
    assert shown.exit_code == 0, shown.output
    assert cli_run.run_id in shown.output
    assert "xinyidai.part.tax.sha256" in shown.output and "test_auc = 0.81" in shown.output

    promoted = runner.invoke(
        app, ["model", "promote", "credit-cli", "1", "--by", "alice", "--reason", "ok", *where]
    )
    assert promoted.exit_code == 0, promoted.output
    assert "credit-cli v1 is now champion (first champion)" in promoted.output
    assert promotion_history("credit-cli", tracking=store)[0].by == "alice"
    missing = runner.invoke(app, ["model", "promote", "credit-cli", "5", "--by", "alice", *where])
    assert missing.exit_code != 0
    assert isinstance(missing.exception, TrackingError)
    assert "has no version 5" in str(missing.exception)
