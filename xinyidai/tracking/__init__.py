"""MLflow tracking and model registry: every training job becomes a tracked, registered version.

Why: a credit model that a bank uses to lend must be traceable to the data, code, configuration
and consent it was trained under, and every promotion to production must say who and why. The
bank logs each federated training job as one MLflow run (parameters, per-tree/epoch and final
metrics, ``xinyidai.*`` tags, one dataset input per party carrying only the digest and the
schema that party chose to reveal, the bank's model part, the resolved config, the consent
snapshot per holder) and registers the bank's part as a pyfunc model version with the alias
``challenger``; ``promote`` moves ``champion``. See ``docs/tracking.md``.

- ``record``: ``TrainingRecord``/``PartyDataset`` (refused before logging if unauditable),
  ``log_training`` (one run), ``secureboost_record``, ``code_version``.
- ``registry``: writing to the registry: a new version per job, ``promote`` and its history,
  ``list_models``, ``describe_version``.
- ``pyfunc``: the registered model (``BankScoringModel``, scoring through the bank node).
- ``register``: a finished job of any model family → evidence, run, version, audit record.
  Imported on its own (``xinyidai.tracking.register``): it loads the model families.

The read side of the registry (``TrackingConfig``, ``resolve``, the tag names, ``mlflow_client``,
``fluent``, ``model_id``) lives in ``parties.bank.registry``, because the bank *node* resolves
``name@alias`` every time it serves a score and must not import the application layer; it is
re-exported here so callers have one tracking API.

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

from typing import TYPE_CHECKING, Any

from parties.bank.registry import (
    ALIAS_CHALLENGER,
    ALIAS_CHAMPION,
    DEFAULT_DIR,
    DEFAULT_EXPERIMENT,
    ResolvedModel,
    TrackingConfig,
    TrackingError,
    mlflow_client,
    model_id,
    resolve,
)
from xinyidai.tracking.pyfunc import bank_scoring_model_class, load_scoring_model
from xinyidai.tracking.record import (
    CONFIG_DIR,
    CONSENT_DIR,
    PartyDataset,
    TrackedRun,
    TrainingRecord,
    code_version,
    log_training,
    secureboost_record,
    track_training,
)
from xinyidai.tracking.registry import (
    Promotion,
    describe_version,
    list_models,
    promote,
    promotion_history,
)

if TYPE_CHECKING:
    BankScoringModel: type  # built on first access by ``__getattr__`` below


def __getattr__(name: str) -> Any:
    # The pyfunc's entry script (stored with every registered version) imports it from here.
    if name == "BankScoringModel":
        return bank_scoring_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALIAS_CHALLENGER",
    "ALIAS_CHAMPION",
    "CONFIG_DIR",
    "CONSENT_DIR",
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
