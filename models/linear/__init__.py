"""Vertical federated logistic regression: the bank (labels, HE secret key) with data holders.

``estimator.VerticalLogisticRegression`` is the bank's entry point; ``active`` is the bank's half
of the protocol (``bank_state`` its model part and errors, ``predict`` one-round scoring),
``passive`` the holder's (service ``xinyidai.v1.LinearHolder``; ``holder_state`` what it keeps;
``passive.local_holders`` runs holders in-process), ``backends`` the crypto (pairwise masks;
``BACKENDS = {"paillier": ..., "ckks": ...}``), ``reference`` the optimiser and its centralised
plaintext twin. A holder's scorecard points service is ``models.scorecard.passive``. Protocol
and who-learns-what: docs/linear.md.
"""

from models.linear.active import LinearBank
from models.linear.backends import BACKENDS, Backend, BackendError, CryptoOptions, get_backend
from models.linear.bank_state import (
    FederatedTrainingError,
    LinearBankModel,
    ProtocolError,
    ScoringError,
)
from models.linear.estimator import NotFittedError, SchemaDriftError, VerticalLogisticRegression
from models.linear.holder_state import LinearHolderModel
from models.linear.passive import LinearHolderServicer, local_holders
from models.linear.predict import predict_linear
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
    "ScoringError",
    "VerticalLogisticRegression",
    "get_backend",
    "local_holders",
    "predict_linear",
]
