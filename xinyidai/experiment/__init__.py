"""``xinyidai experiment run CONFIG --out RESULT.json``: one federated experiment, end to end.

A data scientist's experiment is one YAML file (validated here with pydantic): each party's file,
key column and features, the bank's label, the train/test split, the model and the crypto. The
runner makes a throwaway federation for it on this machine — a development PKI and one node
directory per party, every node a separate OS process serving mutual-TLS gRPC on loopback —
then, as the bank's operator, aligns the parties by PSI, trains across the processes, scores
the test rows in one round and compares with a bank-only and a centralised model.

The centralised comparison is the one step outside the federation: the runner reads every
party's file itself, which only a benchmark on public data may do (in production no one can).
Node files are read in place (``path`` relative to the config file), never copied.

- ``config``: the pydantic models of the YAML file, ``load_experiment``, ``missing_data``.
- ``build``: the PKI and node directories of one experiment (``build_experiment``).
- ``jobs``: the bank operator's jobs over the running nodes: align, train per model type,
  register.
- ``compare``: the centralised comparison models (every party's columns in one place).
- ``run``: ``run_experiment`` (sequencing the steps, measuring each node) and its result.
"""

from xinyidai.experiment.build import build_experiment
from xinyidai.experiment.compare import centralised_auc, centralised_linear, party_frames
from xinyidai.experiment.config import (
    BankPartyConfig,
    CryptoConfig,
    ExperimentConfig,
    LogisticModelConfig,
    ModelConfig,
    PartyConfig,
    PsiConfig,
    RunConfig,
    ScorecardModelConfig,
    SecureBoostModelConfig,
    SplitConfig,
    load_experiment,
    missing_data,
)
from xinyidai.experiment.jobs import Progress
from xinyidai.experiment.run import ExperimentResult, run_experiment

__all__ = [
    "BankPartyConfig",
    "CryptoConfig",
    "ExperimentConfig",
    "ExperimentResult",
    "LogisticModelConfig",
    "ModelConfig",
    "PartyConfig",
    "Progress",
    "PsiConfig",
    "RunConfig",
    "ScorecardModelConfig",
    "SecureBoostModelConfig",
    "SplitConfig",
    "build_experiment",
    "centralised_auc",
    "centralised_linear",
    "load_experiment",
    "missing_data",
    "party_frames",
    "run_experiment",
]
