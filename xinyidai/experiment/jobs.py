"""The bank operator's jobs over the running nodes: align, train (per model type), register.

Why apart from ``run``: each is one federated job with its own id, peers and audit trail; the
runner only sequences them and measures what they cost.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from federation.errors import ConfigError
from xinyidai.experiment.config import (
    ExperimentConfig,
    ScorecardModelConfig,
    SecureBoostModelConfig,
)

Progress = Callable[[str], None]


def is_test_rule(config: ExperimentConfig) -> Callable[[list[str]], np.ndarray] | None:
    """For ``id_mod``: the bank maps its own plain ids to the codes the nodes key rows by
    (``uscc.from_plain_id``, as its loader did) and tests ``id % modulus == remainder``."""
    split = config.split
    if split.kind != "id_mod":
        return None
    from parties.data import uscc
    from parties.data.loader import read_raw

    bank = config.bank
    raw, _ = read_raw(bank.path)  # .csv or .parquet, as the loader reads it
    ids = pd.Series(uscc.normalise_plain(raw[bank.id_column]), dtype=object)
    ids = ids[ids != ""]  # a missing id is the loader's problem, named by row
    numbers = pd.to_numeric(ids, errors="coerce")
    if numbers.isna().any() or (numbers % 1 != 0).any():
        bad = ids[numbers.isna() | (numbers % 1 != 0)].iloc[0]
        raise ConfigError(f"split id_mod needs integer ids; {bank.path.name} has {bad!r}")
    codes = uscc.from_plain_id(ids.to_numpy())
    code_to_id = dict(zip(codes, numbers.astype(np.int64), strict=True))

    def is_test(codes: list[str]) -> np.ndarray:
        ids_ = np.array([code_to_id[c] for c in codes], dtype=np.int64)
        return np.asarray(ids_ % split.modulus == split.remainder)

    return is_test


def align_parties(
    config: ExperimentConfig, bank_cfg: Any, *, audit: Any, progress: Progress
) -> tuple[Any, float]:
    """PSI over every holder (salt fixed per experiment name); (alignment, seconds)."""
    from parties.bank.alignment import align
    from parties.node import holder_peers

    t1 = time.perf_counter()
    with holder_peers(bank_cfg, audit=audit) as peers:
        alignment = align(
            bank_cfg,
            peers,
            job_id=f"{config.name}-psi",
            salt=hashlib.sha256(f"xinyidai-experiment|{config.name}".encode()).digest(),
            min_overlap=config.psi.spec(),
            audit=audit,
            progress=progress,
        )
    align_seconds = time.perf_counter() - t1
    progress(f"aligned {alignment.size} enterprises in {align_seconds:.1f} s")
    progress(unjoined_message(alignment))
    return alignment, align_seconds


def unjoined_message(alignment: Any) -> str:
    """How many of the bank's rows did not join, and where they were missing: said every
    time, so a key mismatch (case, spaces...) is never a silent loss of rows."""
    lost = alignment.bank_size - alignment.size
    if not lost:
        return f"joined: all {alignment.bank_size} bank rows are at every holder"
    per = ", ".join(
        f"{alignment.bank_size - n} not at {h}" for h, n in sorted(alignment.pairwise.items())
    )
    return (
        f"not joined: {lost} of {alignment.bank_size} bank rows ({per}); they are left out of "
        "training and testing"
    )


def training_job_id(config: ExperimentConfig) -> str:
    """The job id a config's training runs under (its MLflow run is opened under it first)."""
    if isinstance(config.model, SecureBoostModelConfig):
        return f"{config.name}-sb"
    if isinstance(config.model, ScorecardModelConfig):
        return f"{config.name}-sc"
    return f"{config.name}-lr"


def train_model(
    config: ExperimentConfig,
    bank_cfg: Any,
    alignment: Any,
    *,
    audit: Any,
    progress: Progress,
    on_tree: Callable[[int], None] | None,
    on_epoch: Callable[[int, float], None] | None,
) -> tuple[Any, Any]:
    """The configured model across the node processes: (model, report). SecureBoost reports
    per tree (``on_tree``), the linear models per epoch (``on_epoch``)."""
    if isinstance(config.model, SecureBoostModelConfig):
        return _train_secureboost(
            config, bank_cfg, alignment, audit=audit, progress=progress, on_tree=on_tree
        )
    return _train_linear(
        config, bank_cfg, alignment, audit=audit, progress=progress, on_epoch=on_epoch
    )


def _train_secureboost(
    config: ExperimentConfig,
    bank_cfg: Any,
    alignment: Any,
    *,
    audit: Any,
    progress: Progress,
    on_tree: Callable[[int], None] | None,
) -> tuple[Any, Any]:
    """Vertical SecureBoost; a holder that restarts mid-job is waited for (``resume_wait_s``)."""
    from parties.bank.secureboost import train_secureboost
    from parties.node import holder_peers

    m = config.model
    if not isinstance(m, SecureBoostModelConfig):
        raise ConfigError(f"SecureBoost training got a {m.type} model config")
    params = {**m.classifier_params(), "key_bits": config.crypto.key_bits}
    params["workers"] = config.crypto.workers
    with holder_peers(bank_cfg, audit=audit, service="SecureBoostHolder") as peers:
        return train_secureboost(
            bank_cfg,
            alignment,
            holders=peers,
            params=params,
            job_id=training_job_id(config),
            is_test=is_test_rule(config),
            test_fraction=config.split.test_fraction,
            split_seed=config.split.seed,
            audit=audit,
            progress=progress,
            on_tree=on_tree,
            resume_wait_s=config.run.resume_wait_s,
        )


def _train_linear(
    config: ExperimentConfig,
    bank_cfg: Any,
    alignment: Any,
    *,
    audit: Any,
    progress: Progress,
    on_epoch: Callable[[int, float], None] | None,
) -> tuple[Any, Any]:
    """A ``scorecard`` or ``logistic`` model across the node processes (the bank's side)."""
    from parties.bank.linear import train_logistic
    from parties.bank.scorecard import scorecard_over_nodes
    from parties.bank.scorecard_model import ScorecardParams
    from parties.node import holder_peers

    m = config.model
    crypto = {"key_bits": config.crypto.key_bits, "workers": config.crypto.workers}
    split = {
        "is_test": is_test_rule(config),
        "test_fraction": config.split.test_fraction,
        "split_seed": config.split.seed,
        "audit": audit,
        "progress": progress,
        "on_epoch": on_epoch,
    }
    if isinstance(m, ScorecardModelConfig):
        params = ScorecardParams.from_mapping({**m.classifier_params(), **crypto})
        return scorecard_over_nodes(
            bank_cfg, alignment, params=params, job_id=training_job_id(config), **split
        )
    with holder_peers(bank_cfg, audit=audit, service="LinearHolder") as linear:
        return train_logistic(
            bank_cfg,
            alignment,
            holders=linear,
            params={**m.classifier_params(), **crypto},
            job_id=training_job_id(config),
            **split,
        )


def register_model(
    config: ExperimentConfig,
    bank_cfg: Any,
    model: Any,
    report: Any,
    *,
    audit: Any,
    progress: Progress,
    tracking: Any,
    config_text: str,
) -> Any:
    """Log the job to MLflow and register the bank's part, with each party's data digest and
    consent counts as of now; the ``TrackedRun``."""
    from parties.node import holder_peers
    from xinyidai.tracking.register import (
        party_evidence,
        register_scorecard,
        register_secureboost,
    )

    progress("registering the model (MLflow: parameters, metrics, each party's digest)")
    with holder_peers(bank_cfg, audit=audit) as peers:
        datasets, consent = party_evidence(
            bank_cfg, peers, job_id=report.job_id, alignment_id=report.alignment_id
        )
    evidence: dict[str, Any] = {
        "datasets": datasets,
        "consent": consent,
        "config_text": config_text,
        "config_name": f"{config.name}.yaml",
        "model_name": config.model.name or config.name,
        "tracking": tracking,
        "audit": audit,
    }
    if isinstance(config.model, SecureBoostModelConfig):
        return register_secureboost(bank_cfg, model, report, **evidence)
    return register_scorecard(bank_cfg, model, report, **evidence)
