"""Vertical federated SecureBoost: the bank (labels, Paillier key) with data holders.

``estimator.SecureBoostClassifier`` is the bank's entry point; ``active`` is the bank's half of
the protocol (``bank_state`` its model part and checkpoint, ``predict`` one-round scoring),
``passive`` the holder's (service ``xinyidai.v1.SecureBoostHolder``; ``holder_state`` what it
keeps; ``passive.local_holders`` runs holders in-process), ``reference`` the algorithm in
plaintext (the federation reproduces its trees exactly), ``tree`` the tree structure every party
shares. Protocol and who-learns-what: docs/secureboost.md.
"""

from models.secureboost.active import SecureBoostBank
from models.secureboost.bank_state import (
    BankModel,
    FederatedTrainingError,
    ProtocolError,
)
from models.secureboost.estimator import NotFittedError, SchemaDriftError, SecureBoostClassifier
from models.secureboost.holder_state import HolderModel
from models.secureboost.passive import SecureBoostHolderServicer
from models.secureboost.predict import predict_margin
from models.secureboost.reference import (
    BoostParams,
    LabelError,
    PartyBins,
    PlaintextSecureBoost,
    SecureBoostError,
    SecureBoostParamError,
)
from models.secureboost.tree import Tree, TreeNode

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
