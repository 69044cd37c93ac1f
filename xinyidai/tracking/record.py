"""What one training job logs: the record the integrator fills in, and the MLflow run it becomes.

Why a record first: a job that would make an unauditable run (a holder that is not a party, a
part digest that is not a sha256, a plain column name) is refused, naming the field, before
anything reaches MLflow. ``log_training`` then writes the run (parameters, per-tree/epoch and
final metrics, ``xinyidai.*`` tags, one dataset input per party, artifacts) and hands the
registration of the bank's part to ``registry.register_version``.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.ids import is_name, is_node_id
from parties.bank.registry import (
    BANK_MODEL_ARTIFACT,
    PARTS_ARTIFACT,
    TAG_CODE_VERSION,
    TAG_CONFIG_SHA256,
    TAG_CRYPTO_SCHEME,
    TAG_JOB_ID,
    TAG_KEY_BITS,
    TAG_MODEL_NAME,
    TAG_PARTIES,
    TAG_PROTOCOL,
    TAG_PSI_JOB,
    TrackingConfig,
    TrackingError,
    config_or_default,
    is_mlflow_code,
    mlflow_client,
    model_id,
)
from xinyidai.tracking.registry import register_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

CONSENT_DIR = "consent"
TAG_DATASET_PREFIX = "xinyidai.dataset."
"""``xinyidai.dataset.<party>``: each party's table and digest as a run tag, so the run page
lists every party at once (its dataset inputs fold all but the first behind "+N")."""
CONFIG_DIR = "config"
DATASET_SOURCE_TYPE = "xinyidai"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_HASHED_COLUMN = re.compile(r"^[0-9a-f]{8,64}$")
_DIGEST_MAX = 36  # MLflow's limit on a dataset digest
_MLFLOW_DTYPES = {
    "str": "string",
    "category": "string",
    "float": "double",
    "int": "long",
    "bool": "boolean",
    "date": "datetime",
}


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


@functools.cache
def code_version() -> str:
    """The git commit of this checkout (``+dirty`` if tracked files changed), else the package
    version + ``+unknown-commit`` (an installed wheel has no git history)."""
    repo = Path(__file__).resolve().parents[2]  # xinyidai/tracking/record.py -> the checkout
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
    training time (a dict or ``ConsentStats``), with the ``auth_set_sha256`` of the
    authorisations the holder used when it reports one. ``holder_parts``: per holder, the
    sha256 of its own model part. ``scoring_endpoint``: how the pyfunc reaches the bank's
    scoring service (e.g. ``{"node_config": ".../bank/node.yaml"}``). ``train_seconds``: how
    long training took, so the run's duration is the training time. ``run_id``: the run
    ``open_training_run`` opened when training started (default: the open run of this job id,
    if any; else a new run whose start is set ``train_seconds`` back).
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
    train_seconds: float | None = None
    run_id: str | None = None

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
        if self.train_seconds is not None and not (
            math.isfinite(self.train_seconds) and self.train_seconds >= 0
        ):
            raise TrackingError(f"job '{self.job_id}': train_seconds must be a duration >= 0")

    def parts_manifest(self) -> dict[str, Any]:
        """``parts.json``: the sha256 of each party's model part (logged with the run and
        shipped with the pyfunc, so a version names every part it needs)."""
        return {
            "format": "xinyidai.model-parts/1",
            "job_id": self.job_id,
            "bank": {"party": self.parties[0], "sha256": self.bank_part_sha256},
            "holders": {h: {"sha256": d} for h, d in sorted(self.holder_parts.items())},
        }

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
        for dataset in self.datasets:
            rows = "" if dataset.n_rows is None else f", {dataset.n_rows} rows"
            tags[f"{TAG_DATASET_PREFIX}{dataset.party}"] = (
                f"{dataset.table}: {dataset.digest}{rows}"
            )
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


def open_training_run(
    job_id: str, *, tracking: TrackingConfig | None = None, run_name: str | None = None
) -> str:
    """Open the job's run (RUNNING) as training starts; returns its id.

    Why at the start: MLflow shows a run's duration as end minus start, and an auditor reads
    it as the training time. ``log_training`` of the same job id fills this run in and ends it
    (``fail_training_run`` if training fails, so a failed job shows as FAILED, not running)."""
    if not job_id or len(job_id) > 128:
        raise TrackingError(f"job id must be 1-128 characters, got {job_id!r}")
    config = config_or_default(tracking)
    client = mlflow_client(config)
    experiment_id = _experiment_id(client, config)
    run = client.create_run(experiment_id, run_name=run_name or job_id, tags={TAG_JOB_ID: job_id})
    return str(run.info.run_id)


def fail_training_run(run_id: str, *, tracking: TrackingConfig | None = None) -> None:
    """End a run ``open_training_run`` opened for a job that failed."""
    mlflow_client(config_or_default(tracking)).set_terminated(run_id, "FAILED")


def _open_run_of(client: MlflowClient, experiment_id: str, job_id: str) -> Any | None:
    """The newest RUNNING run opened for ``job_id``, if any."""
    quoted = job_id.replace("'", "")
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_JOB_ID}` = '{quoted}' and attributes.status = 'RUNNING'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _training_run(client: MlflowClient, experiment_id: str, record: TrainingRecord) -> Any:
    """The run to log ``record`` into: the one opened at training start, or a new one whose
    start is ``train_seconds`` before now (so its duration is still the training time)."""
    if record.run_id:
        given = client.get_run(record.run_id)
        if given.info.experiment_id != experiment_id:
            raise TrackingError(f"job '{record.job_id}': run {record.run_id} is in another store")
        return given
    opened = _open_run_of(client, experiment_id, record.job_id)
    if opened is not None:
        return opened
    start = None
    if record.train_seconds is not None:
        start = int((time.time() - record.train_seconds) * 1000)
    return client.create_run(
        experiment_id, start_time=start, run_name=record.run_name or record.job_id
    )


def log_training(
    record: TrainingRecord,
    *,
    tracking: TrackingConfig | None = None,
    register: bool = True,
) -> TrackedRun:
    """Log one training job as one run and (``register``) register the bank's part as a new
    version of ``record.model_name`` with alias ``challenger``. The run is the one opened when
    training started (``open_training_run``) if there is one; it ends FINISHED at the end of
    training (start + ``train_seconds``), or FAILED if logging failed half-way (then the error
    is raised)."""
    record.check()
    config = config_or_default(tracking)
    client = mlflow_client(config)
    from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag

    experiment_id = _experiment_id(client, config)
    run = _training_run(client, experiment_id, record)
    run_id = run.info.run_id
    end_time = None
    if record.train_seconds is not None:
        end_time = int(run.info.start_time + record.train_seconds * 1000)
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
        client.log_dict(run_id, record.parts_manifest(), PARTS_ARTIFACT)
        if register:
            version = register_version(client, config, experiment_id, run_id, record)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED", end_time=end_time)
    return TrackedRun(run_id, experiment_id, record.model_name, version)


def track_training(*, tracking: TrackingConfig | None = None, **fields: Any) -> TrackedRun:
    """``log_training(TrainingRecord(**fields))``: the one-call form."""
    return log_training(TrainingRecord(**fields), tracking=tracking)


def secureboost_record(
    clf: Any,
    report: Any,
    *,
    model_name: str = "credit-sbt",
    parties: Sequence[str],
    **fields: Any,
) -> TrainingRecord:
    """A ``TrainingRecord`` from a fitted ``SecureBoostClassifier`` and the ``TrainingReport``
    of ``parties.bank.secureboost.train_secureboost``; ``fields`` adds the rest (datasets,
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
    fields.setdefault("train_seconds", float(report.seconds))
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
