"""The experiment file: one YAML per experiment, validated by pydantic before anything starts.

Why strict models (unknown keys refused): a typo in a data scientist's config (``n_tree``) must
fail with the field's name, not silently train with a default. Paths are relative to the config
file, so an experiment folder can move as a whole.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from federation.errors import ConfigError
from federation.ids import is_node_id
from parties.config import ComputeConfig, validate_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PartyConfig(_Strict):
    """One party's table: the file, its key, and which columns take part — or, with
    ``schema_role``, a table of the platform's sharing lists (keyed by USCC, e.g. a synthetic
    city from ``xinyidai data synth``), whose model features the schema defines."""

    path: Path
    schema_role: Literal["bank", "tax", "utility"] | None = None
    id_column: str = "uscc"
    id_kind: Literal["uscc", "plain"] = "uscc"
    features: list[str] | None = Field(
        default=None, description="feature columns; default every column but the key and label"
    )
    categorical: list[str] | None = Field(
        default=None,
        description="feature columns holding categories (text or codes); text columns not "
        "listed here are found by the check and treated as categorical, with a note",
    )
    category: str = Field(default="tax", description="data category of a holder's features")
    labels: dict[str, str] | None = Field(
        default=None,
        description="column -> a label this party publishes to the bank for the column "
        "(default: a stable alias such as 'tax:f03'; the column name never leaves the party)",
    )
    compute: ComputeConfig | None = Field(
        default=None,
        description="where this party's heavy work runs (node.yaml compute:): default this "
        "host's process pool; {engine: ray, address: ...} for the party's own Ray cluster",
    )


class BankPartyConfig(PartyConfig):
    label_column: str = "default_12m"
    category: str = "bank"


class SplitConfig(_Strict):
    """``id_mod``: test rows are those whose integer id % modulus == remainder (benchmarks);
    ``stratified``: a seeded stratified split of the aligned, labelled rows."""

    kind: Literal["id_mod", "stratified"] = "stratified"
    modulus: int = Field(default=5, ge=2)
    remainder: int = Field(default=0, ge=0)
    test_fraction: float = Field(default=0.3, gt=0, lt=1)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.remainder >= self.modulus:
            raise ValueError(f"remainder {self.remainder} must be below modulus {self.modulus}")
        return self


MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
"""Registered model names (MLflow, ``models:/NAME@alias``): a safe identifier."""


class _Named(_Strict):
    name: str | None = Field(
        default=None,
        pattern=MODEL_NAME_PATTERN,
        description="the registered model's name; default derived from the config file name",
    )


class SecureBoostModelConfig(_Named):
    type: Literal["secureboost"] = "secureboost"
    n_trees: int = Field(default=5, ge=1)
    max_depth: int = Field(default=3, ge=1, le=8)
    learning_rate: float = Field(default=0.3, gt=0)
    reg_lambda: float = Field(default=1.0, ge=0)
    min_child_weight: float = Field(default=1.0, ge=0)
    gamma: float = Field(default=0.0, ge=0)
    max_bin: int = Field(default=32, ge=2, le=255)
    subsample: float = Field(default=1.0, gt=0, le=1)
    first_tree_bank_only: bool = True
    min_holder_node_samples: int = Field(default=20, ge=1)
    random_state: int = 0

    def classifier_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type", "name"})


class _LinearFields(_Named):
    """The vertical LR's optimiser (``models.linear``): full batch unless ``batch_size``."""

    backend: Literal["paillier", "ckks"] = "paillier"
    learning_rate: float = Field(default=0.5, gt=0)
    max_iter: int = Field(default=10, ge=1, le=1000)
    alpha: float = Field(default=1e-4, ge=0, description="L2 strength (mean log-loss + a/2|w|^2)")
    tol: float | None = Field(default=1e-4, ge=0)
    n_iter_no_change: int = Field(default=3, ge=1)
    batch_size: int | None = Field(default=None, ge=32)
    random_state: int = 0

    def classifier_params(self) -> dict[str, Any]:
        return self.model_dump(exclude={"type", "name"})


class ScorecardModelConfig(_LinearFields):
    """WOE binning (federated IV) → vertical LR on each party's own WOE values → PDO points."""

    type: Literal["scorecard"] = "scorecard"
    learning_rate: float = Field(default=1.0, gt=0)
    max_iter: int = Field(default=8, ge=1, le=1000)
    max_bin: int = Field(default=32, ge=2, le=255)
    min_bin_samples: int = Field(default=20, ge=1)
    monotonic: bool = True
    min_iv: float = Field(default=0.02, ge=0, description="features below this IV are dropped")
    points0: float = 600.0
    odds0: float = Field(default=1 / 19, gt=0)
    pdo: float = Field(default=50.0, gt=0)
    decimals: int | None = Field(default=0, ge=0, le=6)


class LogisticModelConfig(_LinearFields):
    """Vertical LR on every party's raw (encoded) features, each party z-scoring its own."""

    type: Literal["logistic"] = "logistic"
    standardize: bool = True


ModelConfig = Annotated[
    SecureBoostModelConfig | ScorecardModelConfig | LogisticModelConfig,
    Field(discriminator="type"),
]


class CryptoConfig(_Strict):
    key_bits: Literal[2048, 3072] = 2048
    workers: int = Field(default=2, ge=1, le=256, description="Paillier worker processes per node")


class PsiConfig(_Strict):
    min_overlap: float = Field(
        default=0.1, gt=0, description="smallest intersection: a count, or a fraction if < 1"
    )

    def spec(self) -> int | float:
        """``min_overlap`` as the PSI reads it: a whole number >= 1 is a count (YAML ``100``
        arrives as a float here), anything below 1 a fraction of the bank's rows."""
        value = self.min_overlap
        return int(value) if value >= 1 and float(value).is_integer() else value


class RunConfig(_Strict):
    deadline_s: float = Field(default=120.0, gt=0, description="deadline of every node call")
    resume_wait_s: float = Field(
        default=60.0, ge=0, description="wait this long for a holder that restarts mid-job"
    )


class ExperimentConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    description: str = ""
    bank: BankPartyConfig
    holders: dict[str, PartyConfig]
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=SecureBoostModelConfig)
    crypto: CryptoConfig = Field(default_factory=CryptoConfig)
    psi: PsiConfig = Field(default_factory=PsiConfig)
    run: RunConfig = Field(default_factory=RunConfig)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if not self.holders:
            raise ValueError("holders: at least one data holder is needed")
        for name in self.holders:
            if name == "bank" or not is_node_id(name):
                raise ValueError(f"holders: {name!r} must be a DNS label other than 'bank'")
        if self.split.kind == "id_mod":
            for name, party in [("bank", self.bank), *self.holders.items()]:
                if party.id_kind != "plain":
                    raise ValueError(f"split id_mod needs integer (plain) ids; {name} uses uscc")
        return self

    # -- derived -------------------------------------------------------------------------------
    def parties(self) -> dict[str, PartyConfig]:
        return {"bank": self.bank, **self.holders}

    def resolved(self, base: Path) -> ExperimentConfig:
        """Paths made absolute against the config file's folder."""
        out = self.model_copy(deep=True)
        for party in out.parties().values():
            if not party.path.is_absolute():
                party.path = (base / party.path).resolve()
        return out


def model_name_for(path: Path) -> str:
    """The default registered model name of the experiment in ``path``: the file's name
    without its suffix, other characters than letters, digits, '.', '_', '-' turned into '-'.

    Why the file name: two experiments in two files are two models; before, every experiment
    registered as ``credit-sbt``/``credit-scorecard``/``credit-lr``, so unrelated experiments
    became versions of one model.
    """
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", path.stem).strip("-._")[:128]
    return stem or "experiment"


def load_experiment(path: Path) -> tuple[ExperimentConfig, str]:
    """Read and validate CONFIG: (the config with absolute paths, sha256 of the file); the
    model's name defaults to one derived from the file name (``model_name_for``)."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    config = validate_yaml(text, ExperimentConfig, path)
    if config.model.name is None:
        config.model.name = model_name_for(path)
    return config.resolved(path.parent.resolve()), hashlib.sha256(text).hexdigest()


def missing_data(config: ExperimentConfig) -> list[str]:
    """The party files that are not there (benchmarks say so and skip)."""
    return [f"{name}: {p.path}" for name, p in config.parties().items() if not p.path.exists()]
