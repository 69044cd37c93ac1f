"""Registering what the bank trained: each party's evidence, the MLflow run and model version,
and the bank's audit record of the registration.

Why in the application layer: the node applications (``parties.bank``) train and serve; turning
a finished job into a tracked, registered version is the experiment runner's and the demo's
step. Why not re-exported by ``xinyidai.tracking``: it knows every model family (``models``,
``parties.bank``), which ``import xinyidai.tracking`` (the CLI, the lineage report) should not
load; import it as ``xinyidai.tracking.register``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np

from federation.audit import AuditLog
from federation.errors import ConfigError
from federation.transport.base import PeerBase, new_meta
from models.linear import VerticalLogisticRegression
from models.secureboost.estimator import SecureBoostClassifier
from parties.bank.registry import TrackingConfig
from parties.bank.reports import ScorecardReport, TrainingReport
from parties.bank.scorecard_model import FederatedScorecard
from parties.config import NodeConfig
from parties.data.loader import load_table
from protos import common_pb2
from xinyidai.tracking.record import (
    PartyDataset,
    TrackedRun,
    TrainingRecord,
    log_training,
    secureboost_record,
)

CKKS_PARAMS = ("poly_modulus_degree", "coeff_mod_bit_sizes", "scale_bits", "security_bits")
"""The CKKS parameters a CKKS job logs as MLflow params (every one is a run tag too)."""


def party_evidence(
    config: NodeConfig,
    holders: Mapping[str, PeerBase],
    *,
    job_id: str,
    purpose: str = "financing",
    alignment_id: str = "",
) -> tuple[list[PartyDataset], dict[str, dict[str, Any]]]:
    """Each party's own table digest and revealed schema (row count, keyed column hashes) and
    each holder's consent counts for this bank, as of now: what the registry records about the
    data a model saw. Holders answer ``Hello`` (``DataHolder`` peers); nothing else is asked.

    With ``alignment_id`` (the job's PSI alignment) each holder also returns the sha256 of the
    authorisation set it holds for the alignment's enterprises, this bank and ``purpose``
    (``auth_set_sha256``, ``auth_set_size``): the holder computes it, no USCC leaves it."""
    from parties.summary import node_secret, table_summary

    if config.data is None:
        raise ConfigError(f"bank '{config.node_id}': no data table configured")
    schema = config.data.table_schema(config.node_id)
    own = table_summary(
        load_table(config.data.path, schema), schema, node_secret(config.node_dir / "column_key")
    )
    datasets = [PartyDataset.from_summary(config.node_id, own, own.data_digest)]
    consent: dict[str, dict[str, Any]] = {}
    for name, peer in holders.items():
        request = common_pb2.HelloRequest(
            meta=new_meta(purpose, job_id=job_id), alignment_id=alignment_id
        )
        reply = peer.call("Hello", request)
        summary = reply.tables[0]
        datasets.append(PartyDataset.from_summary(name, summary, summary.data_digest))
        c = reply.consent
        consent[name] = {
            "active": c.active,
            "revoked": c.revoked,
            "expired": c.expired,
            "enterprises": c.enterprises,
        }
        if alignment_id:
            if len(c.auth_set_sha256) != 64:
                raise ConfigError(
                    f"holder '{name}' returned no authorisation-set digest for alignment "
                    f"'{alignment_id}' (an older node?); it is needed for the consent snapshot"
                )
            consent[name].update(
                alignment=alignment_id,
                auth_set_sha256=c.auth_set_sha256,
                auth_set_size=c.auth_set_size,
            )
    return datasets, consent


def register_secureboost(
    config: NodeConfig,
    clf: SecureBoostClassifier,
    report: TrainingReport,
    *,
    datasets: list[PartyDataset],
    consent: Mapping[str, Any],
    config_text: str = "",
    config_name: str = "experiment.yaml",
    model_name: str = "credit-sbt",
    tracking: TrackingConfig | None = None,
    audit: AuditLog | None = None,
    serving_mode: str = "private",
) -> TrackedRun:
    """Log the job to MLflow and register its model (alias ``challenger``): parameters,
    per-tree seconds, metrics, crypto, each party's data digest, consent counts, the holders'
    part digests and how the pyfunc reaches this bank. Returns the ``TrackedRun``.

    ``serving_mode`` (``fast`` | ``private``) is tagged on the version
    (``xinyidai.serving_mode``; docs/scoring.md, "Serving modes"); ``private`` by default:
    the bank then decrypts totals only."""
    holders = list(clf.model_.holders)
    return log_registration(
        config,
        secureboost_record(
            clf,
            report,
            model_name=model_name,
            parties=[config.node_id, *holders],
            datasets=datasets,
            consent=dict(consent),
            consent_taken_at=time.time(),
            holder_parts={h: d for h, d in clf.model_.part_digests.items() if d},
            config_text=config_text,
            config_name=config_name,
            scoring_endpoint={"node_config": str(config.node_dir / "node.yaml")},
        ),
        tracking=tracking,
        audit=audit,
        serving_mode=serving_mode,
    )


def log_registration(
    config: NodeConfig,
    record: TrainingRecord,
    *,
    tracking: TrackingConfig | None = None,
    audit: AuditLog | None = None,
    serving_mode: str | None = None,
) -> TrackedRun:
    """Log a ``TrainingRecord`` to MLflow, register its model, and put the registration on
    the bank's audit record (``model.register`` with ``<name>/<version>``). ``serving_mode``:
    tagged on the version (``xinyidai.serving_mode``), checked before anything is logged."""
    from parties.bank.served import SERVING_MODES, TAG_SERVING_MODE

    if serving_mode is not None and serving_mode not in SERVING_MODES:
        raise ConfigError(
            f"serving_mode {serving_mode[:32]!r}: expected one of {', '.join(SERVING_MODES)}"
        )
    run = log_training(record, tracking=tracking)
    if serving_mode is not None and run.version:
        from parties.bank.registry import config_or_default, mlflow_client

        mlflow_client(config_or_default(tracking)).set_model_version_tag(
            record.model_name, str(run.version), TAG_SERVING_MODE, serving_mode
        )
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="model.register",
            job_id=record.job_id,
            model_id=run.model_id,
            counts={"version": int(run.version or 0)},
        )
    return run


def register_scorecard(
    config: Any,
    model: FederatedScorecard | VerticalLogisticRegression,
    report: ScorecardReport,
    *,
    datasets: list[PartyDataset],
    consent: Mapping[str, Any],
    config_text: str = "",
    config_name: str = "experiment.yaml",
    model_name: str | None = None,
    tracking: TrackingConfig | None = None,
    audit: AuditLog | None = None,
) -> TrackedRun:
    """Log the job to MLflow and register the bank's part as ``model_name`` (default
    ``credit-scorecard``, protocol ``vertical-lr-scorecard``, or ``credit-lr``,
    ``vertical-lr``). Returns the ``TrackedRun``."""
    is_card = isinstance(model, FederatedScorecard)
    lr = model.lr_ if isinstance(model, FederatedScorecard) else model
    params: dict[str, Any] = (
        asdict(model.params) if isinstance(model, FederatedScorecard) else asdict(lr.params_)
    )
    params["backend"] = report.backend
    crypto = dict(getattr(lr, "crypto_", None) or lr.crypto_params())
    crypto_tags: dict[str, str] = {}
    if report.backend == "ckks":  # a CKKS key has no single size: its parameters instead
        params.pop("key_bits", None)
        crypto_tags = {
            f"xinyidai.crypto.{k}": ",".join(map(str, v)) if isinstance(v, list) else str(v)
            for k, v in crypto.items()
            if k != "scheme"
        }
        params.update({f"ckks_{k}": crypto_tags[f"xinyidai.crypto.{k}"] for k in CKKS_PARAMS})
    metrics = {
        "test_auc": report.auc,
        "test_ks": report.ks,
        "test_gini": report.gini,
        "bank_only_auc": report.baseline_auc,
        "bank_only_ks": report.baseline_ks,
        "bank_only_gini": report.baseline_gini,
        "n_train": float(report.n_train),
        "n_test": float(report.n_test),
        "train_seconds": report.train_seconds,
    }
    if is_card:
        metrics["points_auc"] = report.points_auc
        metrics["points_ks"] = report.points_ks
    metrics = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
    record = TrainingRecord(
        job_id=report.job_id,
        model_name=model_name or ("credit-scorecard" if is_card else "credit-lr"),
        protocol="vertical-lr-scorecard" if is_card else "vertical-lr",
        parties=[config.node_id, *lr.holders_],
        bank_model_json=model.to_json(),
        params={k: v for k, v in params.items() if v is not None},
        metrics=metrics,
        step_metrics={"train_loss": list(lr.loss_curve_)},
        crypto_scheme="ckks" if report.backend == "ckks" else "paillier-djn",
        key_bits=None if report.backend == "ckks" else int(getattr(lr, "key_bits", 2048)),
        tags=crypto_tags,
        psi_job=report.alignment_id,
        config_text=config_text,
        config_name=config_name,
        datasets=datasets,
        consent=dict(consent),
        consent_taken_at=time.time(),
        scoring_endpoint={"node_config": str(config.node_dir / "node.yaml")},
        train_seconds=float(report.train_seconds or report.seconds),
    )
    return log_registration(config, record, tracking=tracking, audit=audit)


__all__ = ["log_registration", "party_evidence", "register_scorecard", "register_secureboost"]
