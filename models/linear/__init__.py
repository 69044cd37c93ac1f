"""Vertical federated logistic regression: the bank (labels, HE secret key) with data holders.

``estimator.VerticalLogisticRegression`` is the bank's entry point; ``active`` is the bank's half
of the protocol, ``passive`` the holder's (service ``xinyidai.v1.LinearHolder``), ``backends``
the crypto (pairwise masks; ``BACKENDS = {"paillier": ..., "ckks": ...}``), ``reference`` the
optimiser and its centralised plaintext twin, ``points`` a holder's scorecard points (service
``xinyidai.v1.ScorecardHolder``). Protocol and who-learns-what: docs/linear.md.
"""

from models.linear.active import (
    FederatedTrainingError,
    LinearBank,
    LinearBankModel,
    ProtocolError,
    ScoringError,
    predict_linear,
)
from models.linear.backends import BACKENDS, Backend, BackendError, CryptoOptions, get_backend
from models.linear.estimator import NotFittedError, SchemaDriftError, VerticalLogisticRegression
from models.linear.passive import LinearHolderModel, LinearHolderServicer, local_holders
from models.linear.points import ScorecardHolderServicer
from models.linear.reference import (
    ConstantFeatureError,
    DivergenceError,
    LabelError,
    LinearError,
    LinearParamError,
    LinearParams,
    PlaintextLogisticRegression,
)

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "ConstantFeatureError",
    "CryptoOptions",
    "DivergenceError",
    "FederatedTrainingError",
    "LabelError",
    "LinearBank",
    "LinearBankModel",
    "LinearError",
    "LinearHolderModel",
    "LinearHolderServicer",
    "LinearParamError",
    "LinearParams",
    "NotFittedError",
    "PlaintextLogisticRegression",
    "ProtocolError",
    "SchemaDriftError",
    "ScorecardHolderServicer",
    "ScoringError",
    "VerticalLogisticRegression",
    "get_backend",
    "local_holders",
    "predict_linear",
]
