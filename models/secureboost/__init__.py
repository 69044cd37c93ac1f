"""Vertical federated SecureBoost: the bank (labels, Paillier key) with data holders.

``estimator.SecureBoostClassifier`` is the bank's entry point; ``active`` is the bank's half of
the protocol, ``passive`` the holder's (service ``xinyidai.v1.SecureBoostHolder``), ``reference``
the algorithm in plaintext (the federation reproduces its trees exactly), ``local`` runs holders
in-process. Protocol and who-learns-what: docs/secureboost.md.
"""

from models.secureboost.active import (
    BankModel,
    FederatedTrainingError,
    ProtocolError,
    SecureBoostBank,
    predict_margin,
)
from models.secureboost.estimator import NotFittedError, SchemaDriftError, SecureBoostClassifier
from models.secureboost.passive import HolderModel, SecureBoostHolderServicer
from models.secureboost.reference import (
    BoostParams,
    LabelError,
    PartyBins,
    PlaintextSecureBoost,
    SecureBoostError,
    SecureBoostParamError,
    Tree,
    TreeNode,
)

__all__ = [
    "BankModel",
    "BoostParams",
    "FederatedTrainingError",
    "HolderModel",
    "LabelError",
    "NotFittedError",
    "PartyBins",
    "PlaintextSecureBoost",
    "ProtocolError",
    "SchemaDriftError",
    "SecureBoostBank",
    "SecureBoostClassifier",
    "SecureBoostError",
    "SecureBoostHolderServicer",
    "SecureBoostParamError",
    "Tree",
    "TreeNode",
    "predict_margin",
]
