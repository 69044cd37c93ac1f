"""The bank node's model registry (MLflow): where it is, and what a name at an alias or version is.

Why here and not with the rest of tracking (``xinyidai.tracking``): the bank node itself resolves
``credit-sbt@champion`` to a version, and the tags that name each party's part, every time it
serves a score; the node layer must not reach up into the application layer for that. Writing to
the registry (runs, registration, promotion) stays in ``xinyidai.tracking``.

MLflow is imported inside functions only (it costs seconds), so a node and the CLI start fast.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from federation.errors import ConfigError, XinyidaiError
from federation.ids import is_name, name_problem

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from parties.config import NodeConfig


DEFAULT_DIR = Path(".xinyidai") / "mlflow"
"""The project-local store, relative to the current directory: ``mlflow.db`` + ``artifacts/``."""


DEFAULT_EXPERIMENT = "xinyidai"


ALIAS_CHALLENGER = "challenger"


ALIAS_CHAMPION = "champion"


TAG_PROTOCOL = "xinyidai.protocol"


TAG_CRYPTO_SCHEME = "xinyidai.crypto.scheme"


TAG_KEY_BITS = "xinyidai.crypto.key_bits"


TAG_PARTIES = "xinyidai.parties"


TAG_CONFIG_SHA256 = "xinyidai.config_sha256"


TAG_CODE_VERSION = "xinyidai.code_version"


TAG_PSI_JOB = "xinyidai.psi_job"


TAG_JOB_ID = "xinyidai.job_id"


TAG_MODEL_NAME = "xinyidai.model_name"


TAG_BANK_PART = "xinyidai.part.bank.sha256"


TAG_PROMOTED_BY = "xinyidai.promoted_by"


TAG_PROMOTED_AT = "xinyidai.promoted_at"


TAG_PROMOTION_REASON = "xinyidai.promotion_reason"


TAG_PROMOTIONS = "xinyidai.promotions"


PROMOTE_OPERATION = "model.promote"
"""Audit-log operation of a promotion. Every other audit record whose ``model_id`` is
``<name>/<version>`` is a use of that version (a score request)."""


BANK_MODEL_ARTIFACT = "bank/model.json"


PARTS_ARTIFACT = "parts.json"


class TrackingError(XinyidaiError):
    """A tracking or registry operation failed; the message names the model, version or run."""


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs, artifacts and the registry live.

    ``artifact_location`` is set for the project-local store (so artifacts land next to the
    database, not in ``./mlruns``); a tracking server decides it itself (``None``).
    """

    tracking_uri: str
    registry_uri: str
    artifact_location: str | None = None
    experiment: str = DEFAULT_EXPERIMENT
    local_dir: Path | None = None

    @classmethod
    def resolve(
        cls,
        directory: Path | str | None = None,
        *,
        tracking_uri: str | None = None,
        registry_uri: str | None = None,
        artifact_location: str | None = None,
        experiment: str = DEFAULT_EXPERIMENT,
    ) -> TrackingConfig:
        """Explicit ``tracking_uri`` > explicit ``directory`` > ``MLFLOW_TRACKING_URI`` >
        ``./.xinyidai/mlflow``. The registry follows the tracking store unless
        ``registry_uri`` (or, with a server, ``MLFLOW_REGISTRY_URI``) says otherwise."""
        if not experiment:
            raise ConfigError("MLflow experiment name must not be empty")
        env_tracking = os.environ.get("MLFLOW_TRACKING_URI") or None
        if tracking_uri is None and directory is None and env_tracking:
            tracking_uri = env_tracking
            registry_uri = registry_uri or os.environ.get("MLFLOW_REGISTRY_URI") or None
        if tracking_uri is not None:
            return cls(
                tracking_uri=tracking_uri,
                registry_uri=registry_uri or tracking_uri,
                artifact_location=artifact_location,
                experiment=experiment,
            )
        root = (Path(directory) if directory is not None else DEFAULT_DIR).expanduser()
        root = root.absolute()
        local = f"sqlite:///{root / 'mlflow.db'}"
        return cls(
            tracking_uri=local,
            registry_uri=registry_uri or local,
            artifact_location=artifact_location or (root / "artifacts").as_uri(),
            experiment=experiment,
            local_dir=root,
        )

    def describe(self) -> str:
        """For messages: the local directory, or the server URI without credentials."""
        if self.local_dir is not None:
            return str(self.local_dir)
        return redact_uri(self.tracking_uri)

    @classmethod
    def for_node(cls, config: NodeConfig) -> NodeStore:
        """The store a bank node serves from, and why that one.

        ``MLFLOW_TRACKING_URI`` (and ``MLFLOW_REGISTRY_URI``) in the environment > ``node.yaml``
        ``mlflow.tracking_uri`` > ``mlflow.dir`` > ``NODE_DIR/mlflow``. Why never the current
        directory: a node started from another folder would silently open an empty store there
        and answer "no registered model" for every version the bank trained."""
        settings = config.mlflow
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return NodeStore(cls.resolve(), "the environment variable MLFLOW_TRACKING_URI")
        if settings is not None and settings.tracking_uri:
            store = cls.resolve(
                tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri
            )
            return NodeStore(store, "node.yaml mlflow.tracking_uri")
        if settings is not None and settings.dir is not None:
            return NodeStore(cls.resolve(settings.dir), "node.yaml mlflow.dir")
        return NodeStore(
            cls.resolve(config.node_dir / "mlflow"),
            "the default in the node folder: neither node.yaml mlflow: nor MLFLOW_TRACKING_URI "
            "is set",
        )


class NodeStore(NamedTuple):
    """A bank node's registry and where that choice came from (for its start-up log line)."""

    tracking: TrackingConfig
    source: str

    def describe(self) -> str:
        return f"MLflow store {self.tracking.describe()} (from {self.source})"


def redact_uri(uri: str) -> str:
    """``uri`` without its password (``scheme://user:***@host``; a user part without ``:``
    may be a token: ``scheme://***@host``), for logs and messages."""

    def hide(match: re.Match[str]) -> str:
        user, colon, _secret = match.group(1).partition(":")
        return f"//{user}:***@" if colon else "//***@"

    return re.sub(r"//([^/]*)@", hide, uri)


def config_or_default(tracking: TrackingConfig | None) -> TrackingConfig:
    return tracking if tracking is not None else TrackingConfig.resolve()


def import_mlflow() -> Any:
    """Import MLflow on first use (seconds), with its usage telemetry off unless the operator
    turned it on: a credit-data host sends nothing to third parties by default."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow


def mlflow_client(tracking: TrackingConfig | None = None) -> MlflowClient:
    """An ``MlflowClient`` bound to ``tracking`` (creating the local directory, mode 0700)."""
    config = config_or_default(tracking)
    if config.local_dir is not None:
        config.local_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    mlflow = import_mlflow()
    return mlflow.MlflowClient(tracking_uri=config.tracking_uri, registry_uri=config.registry_uri)


def is_mlflow_code(exc: Exception, *codes: str) -> bool:
    return getattr(exc, "error_code", None) in codes


_FLUENT_LOCK = threading.RLock()


@contextmanager
def fluent(config: TrackingConfig) -> Iterator[Any]:
    """Point MLflow's process-wide tracking/registry URIs at ``config`` for a block.

    Needed where MLflow reads them instead of a client's (logging a model; the registry
    resolving a ``models:/`` source; loading one). Restores the previous values *and* the
    environment variables ``set_tracking_uri`` writes, so an operator's ``MLFLOW_TRACKING_URI``
    survives. Other threads calling MLflow's fluent API meanwhile would see these URIs: the lock
    serialises this module's own uses.
    """
    mlflow = import_mlflow()
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    with _FLUENT_LOCK:
        saved_tracking = tracking_utils._tracking_uri
        saved_registry = registry_utils._registry_uri
        saved_env = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
        mlflow.set_tracking_uri(config.tracking_uri)
        mlflow.set_registry_uri(config.registry_uri)
        try:
            yield mlflow
        finally:
            tracking_utils._tracking_uri = saved_tracking
            registry_utils._registry_uri = saved_registry
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def model_id(name: str, version: str | int) -> str:
    """The ``model_id`` audit records of a registered version carry: ``<name>/<version>``."""
    return f"{name}/{version}"


def check_model_name(name: str) -> None:
    """A model name is an identifier, never a path (it names files and MLflow entries); the
    error shows at most a short prefix of a bad one."""
    if not is_name(name):
        problem = name_problem(name, "model name") or "model name is not an identifier"
        raise TrackingError(f"{problem} (e.g. credit-sbt)")


def get_version(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    text = str(version).strip()
    if text.lower().startswith("v") and text[1:].isdigit():
        text = text[1:]
    if not text.isdigit():
        raise TrackingError(f"model '{name}': version must be a number, got {version!r}")
    try:
        return client.get_model_version(name, text)
    except MlflowException as exc:
        if is_mlflow_code(exc, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise TrackingError(missing_message(client, name, f"version {text}")) from None
        raise


def store_of(client: MlflowClient) -> str:
    """The registry a client reads, for messages: a local database's folder, or its URI
    without a password."""
    uri = str(getattr(client, "_registry_uri", "") or client.tracking_uri)
    if uri.startswith("sqlite:///"):
        return str(Path(uri[len("sqlite:///") :]).parent)
    return redact_uri(uri)


def missing_message(client: MlflowClient, name: str, what: str) -> str:
    """Names the store looked in: "no registered model" most often means the wrong store."""
    from mlflow.exceptions import MlflowException

    store = store_of(client)
    try:
        client.get_registered_model(name)
    except MlflowException:
        return f"no registered model '{name}' (so no {what}) in the MLflow store {store}"
    return f"model '{name}' has no {what} in the MLflow store {store}"


class ResolvedModel(NamedTuple):
    """What the scoring service needs to serve a version: which one, from which run."""

    version: str
    run_id: str
    tags: dict[str, str]


def resolve(
    name: str, alias_or_version: str | int, *, tracking: TrackingConfig | None = None
) -> ResolvedModel:
    """``(version, run_id, tags)`` of ``name`` at an alias (``champion``) or a version number;
    ``tags`` are the version's tags (part digests, promotion)."""
    from mlflow.exceptions import MlflowException

    check_model_name(name)
    client = mlflow_client(config_or_default(tracking))
    ref = str(alias_or_version).strip()
    if ref.isdigit() or (ref[:1] in "vV" and ref[1:].isdigit() and ref[1:]):
        mv = get_version(client, name, ref)
    else:
        if (problem := name_problem(ref, "alias")) is not None:
            raise TrackingError(f"model '{name}': {problem}")
        try:
            mv = client.get_model_version_by_alias(name, ref)
        except MlflowException as exc:
            if is_mlflow_code(exc, "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise TrackingError(missing_message(client, name, f"alias '{ref}'")) from None
            raise
    return ResolvedModel(str(mv.version), str(mv.run_id or ""), dict(mv.tags or {}))
