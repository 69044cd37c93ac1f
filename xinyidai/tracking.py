"""MLflow tracking and model registry: every training job becomes a tracked, registered version.

Why: a credit model that a bank uses to lend must be traceable to the data, code, configuration
and consent it was trained under, and every promotion to production must say who and why. The
bank logs each federated training job as one MLflow run (parameters, per-tree/epoch and final
metrics, ``xinyidai.*`` tags, one dataset input per party carrying only the digest and the
schema that party chose to reveal, the bank's model part, the resolved config, the consent
snapshot per holder) and registers the bank's part as a pyfunc model version with the alias
``challenger``; ``promote`` moves ``champion``. See ``docs/tracking.md``.

Where: by default MLflow's embedded SQLite store and an artifact folder under one git-ignored,
project-local directory (``.xinyidai/mlflow/``); ``MLFLOW_TRACKING_URI`` (and
``MLFLOW_REGISTRY_URI``) point it at a server instead. Nothing here pickles: the pyfunc is a
"model from code" (a three-line script importing ``BankScoringModel``) plus JSON artifacts.

MLflow is imported inside functions only (it costs seconds), so the CLI stays fast. Calls go
through ``MlflowClient`` with explicit run ids; the few MLflow calls that read the process-wide
tracking URI (logging the pyfunc, which also resolves ``models:/`` sources in the registry) run
inside ``fluent``, which sets the URIs under a lock and restores them exactly afterwards.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import importlib
import json
import math
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.ids import is_name, is_node_id
from parties.bank.registry import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    BANK_MODEL_ARTIFACT,
    DEFAULT_DIR,
    DEFAULT_EXPERIMENT,
    PARTS_ARTIFACT,
    PROMOTE_OPERATION,
    TAG_BANK_PART,
    TAG_CODE_VERSION,
    TAG_CONFIG_SHA256,
    TAG_CRYPTO_SCHEME,
    TAG_JOB_ID,
    TAG_KEY_BITS,
    TAG_MODEL_NAME,
    TAG_PARTIES,
    TAG_PROMOTED_AT,
    TAG_PROMOTED_BY,
    TAG_PROMOTION_REASON,
    TAG_PROMOTIONS,
    TAG_PROTOCOL,
    TAG_PSI_JOB,
    ResolvedModel,
    TrackingConfig,
    TrackingError,
    check_model_name,
    config_or_default,
    fluent,
    get_version,
    import_mlflow,
    is_mlflow_code,
    mlflow_client,
    model_id,
    resolve,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from federation.audit import AuditLog

    BankScoringModel: type  # built on first access by the module ``__getattr__`` below

__all__ = [
    "ALIAS_CHALLENGER",
    "ALIAS_CHAMPION",
    "DEFAULT_DIR",
    "DEFAULT_EXPERIMENT",
    "PartyDataset",
    "Promotion",
    "ResolvedModel",
    "TrackedRun",
    "TrackingConfig",
    "TrackingError",
    "TrainingRecord",
    "code_version",
    "describe_version",
    "list_models",
    "load_scoring_model",
    "log_training",
    "mlflow_client",
    "model_id",
    "promote",
    "promotion_history",
    "resolve",
    "secureboost_record",
    "track_training",
]


# Run tags (every training job).
# Model-version tags.
# Registered-model tag: JSON list of every promotion, oldest first.


CONSENT_DIR = "consent"
CONFIG_DIR = "config"
PYFUNC_NAME = "bank-model"
DATASET_SOURCE_TYPE = "xinyidai"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASHED_COLUMN = re.compile(r"^[0-9a-f]{8,64}$")
_DIGEST_MAX = 36  # MLflow's limit on a dataset digest
_PROMOTIONS_MAX_CHARS = 90_000  # under MLflow's 100 000-character registry tag limit
_MLFLOW_DTYPES = {
    "str": "string",
    "category": "string",
    "float": "double",
    "int": "long",
    "bool": "boolean",
    "date": "datetime",
}


# ---------------------------------------------------------------------------------------------
# Where things are stored


def _experiment_id(client: MlflowClient, config: TrackingConfig) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(config.experiment)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            client.create_experiment(
                config.experiment,
                artifact_location=config.artifact_location,
                tags={"xinyidai.project": "xinyidai"},
            )
        )
    except MlflowException as exc:  # another process created it first
        if not is_mlflow_code(exc, "RESOURCE_ALREADY_EXISTS"):
            raise
        found = client.get_experiment_by_name(config.experiment)
        if found is None:
            raise
        return str(found.experiment_id)


# ---------------------------------------------------------------------------------------------
# What one training job logs


@functools.cache
def code_version() -> str:
    """The git commit of this checkout (``+dirty`` if tracked files changed), else the package
    version + ``+unknown-commit`` (an installed wheel has no git history)."""
    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", commit.stdout.strip()):
            status = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=repo,
                capture_output=True,
                text=True,
                timeout=10,
            )
            dirty = status.returncode == 0 and bool(status.stdout.strip())
            return commit.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        package = version("xinyidai")
    except Exception:
        package = "0"
    return f"{package}+unknown-commit"


@dataclass(frozen=True)
class PartyDataset:
    """What one party says about the table it trained on: its own digest and the schema it
    chose to reveal (row count, keyed hashes of column names with their dtypes), never a row
    and never a plain column name (column names must look like keyed hashes: 8-64 hex)."""

    party: str
    table: str
    digest: str
    n_rows: int | None = None
    columns: Sequence[tuple[str, str]] = ()
    schema_digest: str = ""
    source: str = ""

    @property
    def name(self) -> str:
        return f"{self.party}-{self.table}"

    @property
    def source_uri(self) -> str:
        return self.source or f"xinyidai://{self.party}/{self.table}"

    @classmethod
    def from_summary(cls, party: str, summary: Any, digest: str) -> PartyDataset:
        """From a holder's ``common_pb2.TableSummary`` (its Hello reply) and table digest."""
        return cls(
            party=party,
            table=str(summary.table),
            digest=digest,
            n_rows=int(summary.n_rows),
            columns=tuple((str(c.name_hash), str(c.dtype)) for c in summary.columns),
            schema_digest=str(summary.schema_digest),
        )

    def check(self) -> None:
        if not is_node_id(self.party):
            raise TrackingError(f"dataset party {self.party!r} is not a node id")
        if not self.table or not is_name(self.table):
            raise TrackingError(f"dataset of party '{self.party}': bad table name {self.table!r}")
        if not self.digest:
            raise TrackingError(f"dataset '{self.name}': the party's digest is empty")
        for name_hash, _dtype in self.columns:
            if not _HASHED_COLUMN.match(name_hash):
                raise TrackingError(
                    f"dataset '{self.name}': column {name_hash!r} is not a keyed hash; plain "
                    "column names must not leave their party"
                )

    def to_entity(self) -> Any:
        """An MLflow dataset (metadata only): name ``<party>-<table>``, the party's digest (cut
        to MLflow's 36 characters; the full one is in the profile), source
        ``xinyidai://<party>/<table>``, schema = the revealed columns."""
        from mlflow.entities import Dataset
        from mlflow.types import ColSpec, Schema

        self.check()
        schema = None
        if self.columns:
            specs: list[Any] = [
                ColSpec(_MLFLOW_DTYPES.get(d, "string"), name=h) for h, d in self.columns
            ]
            schema = json.dumps({"mlflow_colspec": Schema(specs).to_dict()})
        profile = {
            "party": self.party,
            "table": self.table,
            "table_digest": self.digest,
            "num_rows": self.n_rows,
            "num_columns": len(self.columns),
            "schema_digest": self.schema_digest,
        }
        digest = self.digest if len(self.digest) <= _DIGEST_MAX else self.digest[:32]
        return Dataset(
            name=self.name,
            digest=digest,
            source_type=DATASET_SOURCE_TYPE,
            source=json.dumps({"uri": self.source_uri}),
            schema=schema,
            profile=json.dumps(profile, sort_keys=True),
        )


@dataclass
class TrainingRecord:
    """Everything the bank logs about one training job (the integrator fills it in).

    ``parties``: node ids, bank first. ``step_metrics``: name -> one value per tree/epoch
    (logged with step = index). ``metrics``: final values (test AUC/KS/Gini, bank-only
    AUC...). ``consent``: per holder, counts of active/revoked/expired authorisations at
    training time (a dict or ``ConsentStats``). ``holder_parts``: per holder, the sha256 of its
    own model part. ``scoring_endpoint``: how the pyfunc reaches the bank's scoring service
    (e.g. ``{"node_config": ".../bank/node.yaml"}``).
    """

    job_id: str
    model_name: str
    protocol: str
    parties: Sequence[str]
    bank_model_json: str
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    step_metrics: Mapping[str, Sequence[float]] = field(default_factory=dict)
    crypto_scheme: str = "paillier-djn"
    key_bits: int | None = None
    psi_job: str = ""
    config_text: str = ""
    config_name: str = "experiment.yaml"
    datasets: Sequence[PartyDataset] = ()
    consent: Mapping[str, Any] = field(default_factory=dict)
    consent_taken_at: float | None = None
    holder_parts: Mapping[str, str] = field(default_factory=dict)
    scoring_endpoint: Mapping[str, Any] = field(default_factory=dict)
    code_version: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    run_name: str | None = None

    @property
    def config_sha256(self) -> str:
        return hashlib.sha256(self.config_text.encode("utf-8")).hexdigest()

    @property
    def bank_part_sha256(self) -> str:
        return hashlib.sha256(self.bank_model_json.encode("utf-8")).hexdigest()

    def check(self) -> None:
        """Refuse a record that would make an unauditable run, naming the field."""
        if not self.job_id or len(self.job_id) > 128:
            raise TrackingError(f"job id must be 1-128 characters, got {self.job_id!r}")
        if not is_name(self.model_name):
            raise TrackingError(
                f"model name {self.model_name!r}: use letters, digits, '.', '_' or '-' "
                "(e.g. credit-sbt)"
            )
        if not self.protocol:
            raise TrackingError(f"job '{self.job_id}': protocol is empty")
        if not self.parties:
            raise TrackingError(f"job '{self.job_id}': no parties")
        for party in self.parties:
            if not is_node_id(party):
                raise TrackingError(f"job '{self.job_id}': party {party!r} is not a node id")
        try:
            json.loads(self.bank_model_json)
        except ValueError as exc:
            raise TrackingError(f"job '{self.job_id}': bank model is not JSON ({exc})") from None
        holders = set(self.parties[1:])
        for name, mapping in (("consent", self.consent), ("holder_parts", self.holder_parts)):
            unknown = sorted(set(mapping) - holders)
            if unknown:
                raise TrackingError(
                    f"job '{self.job_id}': {name} names {unknown}, which are not holders of "
                    f"this job ({sorted(holders)})"
                )
        for holder, digest in self.holder_parts.items():
            if not _SHA256.match(str(digest)):
                raise TrackingError(
                    f"job '{self.job_id}': part digest of holder '{holder}' is not a sha256 hex"
                )
        for metric, values in {**self.metrics, **self.step_metrics}.items():
            for value in values if isinstance(values, Sequence) else [values]:
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise TrackingError(f"job '{self.job_id}': metric {metric!r} is not a number")
        for dataset in self.datasets:
            dataset.check()
        if self.key_bits is not None and int(self.key_bits) <= 0:
            raise TrackingError(f"job '{self.job_id}': key_bits must be positive")

    def run_tags(self) -> dict[str, str]:
        version = self.code_version or code_version()
        tags = {
            TAG_PROTOCOL: self.protocol,
            TAG_CRYPTO_SCHEME: self.crypto_scheme,
            TAG_KEY_BITS: "" if self.key_bits is None else str(int(self.key_bits)),
            TAG_PARTIES: ",".join(self.parties),
            TAG_CONFIG_SHA256: self.config_sha256,
            TAG_CODE_VERSION: version,
            TAG_PSI_JOB: self.psi_job,
            TAG_JOB_ID: self.job_id,
            TAG_MODEL_NAME: self.model_name,
            "mlflow.runName": self.run_name or self.job_id,
        }
        commit = version.split("+", 1)[0]
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            tags["mlflow.source.git.commit"] = commit
        return {**{k: str(v) for k, v in self.tags.items()}, **tags}


@dataclass(frozen=True)
class TrackedRun:
    """Where a training job went: its run and (if registered) its model version."""

    run_id: str
    experiment_id: str
    model_name: str
    version: str | None

    @property
    def model_uri(self) -> str | None:
        return None if self.version is None else f"models:/{self.model_name}/{self.version}"

    @property
    def model_id(self) -> str:
        """``<name>/<version>``: the audit-log ``model_id`` of score requests served with it."""
        return model_id(self.model_name, self.version or "")


def _consent_dict(value: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return {str(k): v for k, v in dict(value).items()}


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            text = str(value)
    return text if len(text) <= 6000 else text[:5990] + "…[cut]"


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def log_training(
    record: TrainingRecord,
    *,
    tracking: TrackingConfig | None = None,
    register: bool = True,
) -> TrackedRun:
    """Log one training job as one run and (``register``) register the bank's part as a new
    version of ``record.model_name`` with alias ``challenger``. The run ends FINISHED, or
    FAILED if logging failed half-way (then the error is raised)."""
    record.check()
    config = config_or_default(tracking)
    client = mlflow_client(config)
    from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag

    experiment_id = _experiment_id(client, config)
    run = client.create_run(experiment_id, run_name=record.run_name or record.job_id)
    run_id = run.info.run_id
    version: str | None = None
    try:
        stamp = int(time.time() * 1000)
        tags = record.run_tags()
        params = [Param(str(k), _param_value(v)) for k, v in sorted(record.params.items())]
        metrics = [Metric(k, float(v), stamp, 0) for k, v in sorted(record.metrics.items())]
        for name, values in sorted(record.step_metrics.items()):
            metrics += [Metric(name, float(v), stamp, i) for i, v in enumerate(values)]
        for chunk in _chunks([RunTag(k, v) for k, v in tags.items()], 100):
            client.log_batch(run_id, tags=chunk)
        for chunk in _chunks(params, 100):
            client.log_batch(run_id, params=chunk)
        for chunk in _chunks(metrics, 1000):
            client.log_batch(run_id, metrics=chunk)
        if record.datasets:
            context = [InputTag("mlflow.data.context", "training")]
            client.log_inputs(
                run_id, datasets=[DatasetInput(d.to_entity(), context) for d in record.datasets]
            )
        client.log_text(run_id, record.bank_model_json, BANK_MODEL_ARTIFACT)
        if record.config_text:
            client.log_text(run_id, record.config_text, f"{CONFIG_DIR}/{record.config_name}")
        taken_at = record.consent_taken_at if record.consent_taken_at is not None else time.time()
        for holder, stats in sorted(record.consent.items()):
            snapshot = {"holder": holder, "taken_at": taken_at, **_consent_dict(stats)}
            client.log_dict(run_id, snapshot, f"{CONSENT_DIR}/{holder}.json")
        client.log_dict(run_id, _parts(record), PARTS_ARTIFACT)
        if register:
            version = _register(client, config, experiment_id, run_id, record)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return TrackedRun(run_id, experiment_id, record.model_name, version)


def track_training(*, tracking: TrackingConfig | None = None, **fields: Any) -> TrackedRun:
    """``log_training(TrainingRecord(**fields))``: the one-call form."""
    return log_training(TrainingRecord(**fields), tracking=tracking)


def _parts(record: TrainingRecord) -> dict[str, Any]:
    return {
        "format": "xinyidai.model-parts/1",
        "job_id": record.job_id,
        "bank": {"party": record.parties[0], "sha256": record.bank_part_sha256},
        "holders": {h: {"sha256": d} for h, d in sorted(record.holder_parts.items())},
    }


def secureboost_record(
    clf: Any,
    report: Any,
    *,
    model_name: str = "credit-sbt",
    parties: Sequence[str],
    **fields: Any,
) -> TrainingRecord:
    """A ``TrainingRecord`` from a fitted ``SecureBoostClassifier`` and the ``TrainingReport``
    of ``parties.bank.federation.train_secureboost``; ``fields`` adds the rest (datasets,
    consent, holder_parts, config_text, psi_job, scoring_endpoint...)."""
    params: dict[str, Any] = {}
    params_obj = getattr(clf, "params_", None)
    if dataclasses.is_dataclass(params_obj) and not isinstance(params_obj, type):
        params.update(dataclasses.asdict(params_obj))
    for name in ("n_trees", "max_depth", "learning_rate", "max_bin", "random_state", "key_bits"):
        if name not in params and hasattr(clf, name):
            params[name] = getattr(clf, name)
    auc = float(report.auc)
    metrics = {
        "test_auc": auc,
        "test_ks": float(report.ks),
        "test_gini": 2.0 * auc - 1.0 if math.isfinite(auc) else auc,
        "bank_only_auc": float(report.baseline_auc),
        "bank_only_ks": float(report.baseline_ks),
        "bank_only_gini": 2.0 * float(report.baseline_auc) - 1.0,
        "n_aligned": float(report.n_aligned),
        "n_train": float(report.n_train),
        "n_test": float(report.n_test),
        "train_seconds": float(report.seconds),
    }
    step_metrics = {"tree_seconds": [float(s) for s in getattr(report, "tree_seconds", [])]}
    for owner, count in sorted(getattr(report, "split_owners", {}).items()):
        metrics[f"splits_{owner}"] = float(count)
    fields.setdefault("psi_job", str(getattr(report, "alignment_id", "")))
    fields.setdefault("key_bits", getattr(clf, "key_bits", None))
    return TrainingRecord(
        job_id=str(report.job_id),
        model_name=model_name,
        protocol="secureboost",
        parties=parties,
        bank_model_json=clf.to_json(),
        params={**params, **fields.pop("params", {})},
        metrics={**metrics, **fields.pop("metrics", {})},
        step_metrics={**step_metrics, **fields.pop("step_metrics", {})},
        **fields,
    )


# ---------------------------------------------------------------------------------------------
# Registry


_PYFUNC_ENTRY = '''"""Models-from-code entry point of the bank's scoring pyfunc (xinyidai/tracking.py)."""

import mlflow

from xinyidai.tracking import BankScoringModel

mlflow.models.set_model(BankScoringModel())
'''


def _register(
    client: MlflowClient,
    config: TrackingConfig,
    experiment_id: str,
    run_id: str,
    record: TrainingRecord,
) -> str:
    """New version of ``record.model_name`` holding the bank's pyfunc; alias ``challenger``.

    The version is created first (on a pending MLflow logged model), so the pyfunc's artifacts
    can name the version they belong to - the scoring service is asked for (name, version) -
    and the artifacts are written once. ``mlflow.pyfunc.log_model`` has no run id argument (it
    uses the thread's active run); ``Model.log``, which it wraps, takes one explicitly.
    """
    from mlflow.exceptions import MlflowException

    name = record.model_name
    with fluent(config) as mlflow:
        try:
            client.create_registered_model(
                name,
                tags={"xinyidai.protocol": record.protocol},
                description=f"xinyidai {record.protocol} credit model (bank part as pyfunc)",
            )
        except MlflowException as exc:
            if not is_mlflow_code(exc, "RESOURCE_ALREADY_EXISTS"):
                raise
        logged = client.create_logged_model(
            experiment_id,
            name=PYFUNC_NAME,
            source_run_id=run_id,
            tags={TAG_JOB_ID: record.job_id, TAG_MODEL_NAME: name},
        )
        version_tags = {
            TAG_JOB_ID: record.job_id,
            TAG_PROTOCOL: record.protocol,
            TAG_BANK_PART: record.bank_part_sha256,
            **{f"xinyidai.part.{h}.sha256": d for h, d in sorted(record.holder_parts.items())},
        }
        mv = client.create_model_version(
            name,
            source=f"models:/{logged.model_id}",
            run_id=run_id,
            tags=version_tags,
            model_id=logged.model_id,
        )
        version = str(mv.version)
        try:
            _log_pyfunc(mlflow, run_id, logged.model_id, record, version)
        except BaseException:
            try:  # leave no version without a model behind it
                client.delete_model_version(name, version)
                client.finalize_logged_model(logged.model_id, "FAILED")
            except MlflowException:
                pass
            raise
        client.set_registered_model_alias(name, ALIAS_CHALLENGER, version)
    return version


def _log_pyfunc(
    mlflow: Any, run_id: str, logged_id: str, record: TrainingRecord, version: str
) -> None:
    import warnings

    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    with tempfile.TemporaryDirectory(prefix="xinyidai-pyfunc-") as tmp:
        base = Path(tmp)
        entry = base / "bank_scoring_model.py"
        entry.write_text(_PYFUNC_ENTRY, encoding="utf-8")
        (base / "bank_model.json").write_text(record.bank_model_json, encoding="utf-8")
        scoring = {
            "format": "xinyidai.scoring/1",
            "model_name": record.model_name,
            "version": version,
            "job_id": record.job_id,
            "run_id": run_id,
            "bank_model_sha256": record.bank_part_sha256,
            "endpoint": dict(record.scoring_endpoint),
        }
        (base / "scoring.json").write_text(json.dumps(scoring, indent=1), encoding="utf-8")
        (base / "parts.json").write_text(json.dumps(_parts(record), indent=1), encoding="utf-8")
        with warnings.catch_warnings():
            # No input example on purpose: it would call the live scoring service at logging.
            warnings.filterwarnings("ignore", message=".*input example.*", category=UserWarning)
            Model.log(
                artifact_path=None,
                name=PYFUNC_NAME,
                flavor=mlflow.pyfunc,
                flavor_name="pyfunc.ModelFromCode",
                run_id=run_id,
                model_id=logged_id,
                python_model=str(entry),
                artifacts={
                    "bank_model": str(base / "bank_model.json"),
                    "scoring": str(base / "scoring.json"),
                    "parts": str(base / "parts.json"),
                },
                signature=ModelSignature(inputs=Schema([ColSpec("string", "uscc")])),
                # Explicit, so MLflow does not load the model to infer them. The xinyidai
                # package itself is not listed: it is not on PyPI; load the model in the
                # bank's environment (env_manager="local").
                pip_requirements=[f"mlflow=={mlflow.__version__}", "pandas"],
                await_registration_for=0,
            )


@dataclass(frozen=True)
class Promotion:
    """One move of ``champion``: to ``version`` from ``previous`` (None: first champion)."""

    version: str
    previous: str | None
    by: str
    at: str  # ISO 8601, UTC
    reason: str = ""


_PROMOTE_LOCK = threading.Lock()


def promote(
    name: str,
    version: str | int,
    *,
    by: str,
    reason: str = "",
    tracking: TrackingConfig | None = None,
    audit: AuditLog | None = None,
) -> str | None:
    """Move alias ``champion`` of ``name`` to ``version``; record who, when and why on the
    version (tags) and in the model's ``xinyidai.promotions`` history; return the previous
    champion's version (None if there was none). Refuses a version that does not exist.

    ``audit``: the bank's audit log, to keep the promotion on record there too.
    """
    from mlflow.exceptions import MlflowException

    who = by.strip()
    if not who:
        raise TrackingError("promote: say who promotes (--by)")
    client = mlflow_client(config_or_default(tracking))
    mv = get_version(client, name, version)
    target = str(mv.version)
    with _PROMOTE_LOCK:
        try:
            previous: str | None = str(
                client.get_model_version_by_alias(name, ALIAS_CHAMPION).version
            )
        except MlflowException as exc:
            if not is_mlflow_code(exc, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            previous = None
        at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        client.set_registered_model_alias(name, ALIAS_CHAMPION, target)
        client.set_model_version_tag(name, target, TAG_PROMOTED_BY, who)
        client.set_model_version_tag(name, target, TAG_PROMOTED_AT, at)
        client.set_model_version_tag(name, target, TAG_PROMOTION_REASON, reason)
        history = promotion_history(name, client=client)
        history.append(Promotion(target, previous, who, at, reason))
        entries = [dataclasses.asdict(p) for p in history]
        text = json.dumps(entries, ensure_ascii=False)
        while len(text) > _PROMOTIONS_MAX_CHARS and len(entries) > 1:
            entries.pop(0)  # the oldest; each version still carries its own promotion tags
            text = json.dumps(entries, ensure_ascii=False)
        client.set_registered_model_tag(name, TAG_PROMOTIONS, text)
    if audit is not None:
        audit.append(
            direction="local",
            peer=audit.node_id,
            operation=PROMOTE_OPERATION,
            model_id=model_id(name, target)[:128],
            reason=f"by {who}; previous champion: {previous or 'none'}; {reason}"[:2000],
        )
    return previous


def promotion_history(
    name: str, *, tracking: TrackingConfig | None = None, client: MlflowClient | None = None
) -> list[Promotion]:
    """Every promotion of ``name``, oldest first (empty if never promoted)."""
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    client = client or mlflow_client(config_or_default(tracking))
    try:
        model = client.get_registered_model(name)
    except MlflowException as exc:
        if is_mlflow_code(exc, "RESOURCE_DOES_NOT_EXIST"):
            raise TrackingError(f"no registered model '{name}'") from None
        raise
    raw = (model.tags or {}).get(TAG_PROMOTIONS)
    if not raw:
        return []
    try:
        entries = json.loads(raw)
        return [
            Promotion(
                version=str(e["version"]),
                previous=None if e.get("previous") is None else str(e["previous"]),
                by=str(e.get("by", "")),
                at=str(e.get("at", "")),
                reason=str(e.get("reason", "")),
            )
            for e in entries
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise TrackingError(f"model '{name}': promotion history tag is damaged ({exc})") from None


def list_models(*, tracking: TrackingConfig | None = None) -> list[dict[str, Any]]:
    """Every registered model: name, latest version, aliases (alias -> version), description."""
    client = mlflow_client(config_or_default(tracking))
    out: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = client.search_registered_models(max_results=100, page_token=token)
        for rm in page:
            versions = client.search_model_versions(f"name='{rm.name}'", max_results=1000)
            numbers = sorted(int(v.version) for v in versions)
            out.append(
                {
                    "name": rm.name,
                    "latest_version": str(numbers[-1]) if numbers else "",
                    "versions": len(numbers),
                    "aliases": {k: str(v) for k, v in sorted((rm.aliases or {}).items())},
                    "description": rm.description or "",
                }
            )
        token = page.token
        if not token:
            break
    return sorted(out, key=lambda m: m["name"])


def describe_version(
    name: str, alias_or_version: str | int, *, tracking: TrackingConfig | None = None
) -> dict[str, Any]:
    """One version as the operator sees it: aliases, status, run, tags, params, final metrics."""
    config = config_or_default(tracking)
    resolved = resolve(name, alias_or_version, tracking=config)
    client = mlflow_client(config)
    mv = client.get_model_version(name, resolved.version)
    aliases = sorted(
        a
        for a, v in (client.get_registered_model(name).aliases or {}).items()
        if str(v) == resolved.version
    )
    out: dict[str, Any] = {
        "name": name,
        "version": resolved.version,
        "aliases": aliases,
        "status": str(mv.status),
        "created": _iso_ms(mv.creation_timestamp),
        "source": mv.source,
        "run_id": resolved.run_id,
        "tags": dict(sorted(resolved.tags.items())),
        "run_tags": {},
        "params": {},
        "metrics": {},
    }
    if resolved.run_id:
        run = client.get_run(resolved.run_id)
        out["run_tags"] = {
            k: v for k, v in sorted(run.data.tags.items()) if k.startswith("xinyidai.")
        }
        out["params"] = dict(sorted(run.data.params.items()))
        out["metrics"] = dict(sorted(run.data.metrics.items()))
    return out


def _iso_ms(ms: int | None) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------------
# The pyfunc: the bank's part, scored through the bank's live scoring service


SCORING_MODULE = "parties.bank.scoring"


@functools.cache
def _bank_scoring_model_class() -> type:
    """Built on first use so that importing this module does not import MLflow."""
    import pandas as pd

    mlflow = import_mlflow()

    def load_context(self: Any, context: Any) -> None:
        text = Path(context.artifacts["bank_model"]).read_text(encoding="utf-8")
        self.scoring = json.loads(Path(context.artifacts["scoring"]).read_text("utf-8"))
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        expected = self.scoring.get("bank_model_sha256")
        if digest != expected:
            raise TrackingError(
                f"model {self.scoring.get('model_name')}/{self.scoring.get('version')}: "
                f"bank model artifact sha256 {digest[:16]}… does not match the recorded "
                f"{str(expected)[:16]}…"
            )
        self.bank_model = json.loads(text)
        self.bank_model_sha256 = digest

    def predict(self: Any, context: Any, model_input: Any, params: Any = None) -> Any:
        if not isinstance(model_input, pd.DataFrame) or "uscc" not in model_input.columns:
            raise TrackingError("scoring input must be a DataFrame with a 'uscc' column")
        codes = [str(c).strip() for c in model_input["uscc"].tolist()]
        try:
            module = importlib.import_module(SCORING_MODULE)
        except ImportError as exc:
            raise TrackingError(
                f"the bank's scoring service is not available here ({SCORING_MODULE}: "
                f"{exc}); score on the bank's host"
            ) from None
        scores = module.score_codes(
            dict(self.scoring.get("endpoint") or {}),
            str(self.scoring["model_name"]),
            str(self.scoring["version"]),
            codes,
        )
        if not isinstance(scores, pd.DataFrame) or len(scores) != len(codes):
            raise TrackingError(
                f"{SCORING_MODULE}.score_codes must return a DataFrame with one row per "
                f"code ({len(codes)}), got {type(scores).__name__}"
            )
        return scores

    # Real (not string) annotations, set before the class exists: MLflow reads ``predict``'s
    # type hints when the subclass is created; a DataFrame hint means "no type-hint validation,
    # use the signature" (string hints would not resolve here and draw a warning).
    predict.__annotations__ = {
        "context": Any,
        "model_input": pd.DataFrame,
        "params": Any,
        "return": pd.DataFrame,
    }
    doc = """The registered bank part: ``predict(df)`` with a ``uscc`` column scores each code
    through ``parties.bank.scoring.score_codes(endpoint, model_name, version, codes)`` (the bank
    node's ``Score`` service, where holders check each enterprise's consent).

    ``load_context`` reads the bank model JSON and checks it against the sha256 recorded with
    the version; the scoring module is imported at predict time, so a model loads (and can be
    inspected) where the scoring service is not installed.
    """
    namespace: dict[str, Any] = {
        "__doc__": doc,
        "__module__": __name__,
        "load_context": load_context,
        "predict": predict,
    }
    return type("BankScoringModel", (mlflow.pyfunc.PythonModel,), namespace)


def __getattr__(name: str) -> Any:
    if name == "BankScoringModel":
        return _bank_scoring_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_scoring_model(
    name: str,
    alias_or_version: str | int = ALIAS_CHAMPION,
    *,
    tracking: TrackingConfig | None = None,
) -> Any:
    """``mlflow.pyfunc.load_model("models:/<name>@<alias>")`` against ``tracking``."""
    config = config_or_default(tracking)
    resolved = resolve(name, alias_or_version, tracking=config)
    with fluent(config) as mlflow:
        return mlflow.pyfunc.load_model(f"models:/{name}/{resolved.version}")
