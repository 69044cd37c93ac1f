"""WOE/IV for scorecards: plaintext (``reference``) and federated (bank ``active``, holder ``passive``).

``reference.WoeEncoder`` is one party's plaintext encoder (the bank's own features, and the
definition the federation reproduces); ``active.FederatedWoe`` is the bank's entry point for the
holders' features; ``passive.WoeHolderServicer`` is the holder's service
(``xinyidai.v1.WoeHolder``; what it keeps is ``holder_state``), ``passive.local_woe_holders``
runs holders in-process. Protocol and who-learns-what: docs/scorecard.md.
"""

from models.woe.active import BANK, FederatedWoe, FederatedWoeError, ProtocolError
from models.woe.holder_state import HolderFeatureWoe, HolderWoeModel
from models.woe.passive import WoeHolderServicer, local_woe_holders
from models.woe.reference import (
    MIN_BIN_SAMPLES,
    SMOOTHING,
    FeatureWoe,
    WoeEncoder,
    WoeError,
    WoeWarning,
    iv_report,
    iv_strength,
    merge_small_bins,
    monotonic_merge,
    woe_from_counts,
    woe_iv,
    woe_tables,
)

__all__ = [
    "BANK",
    "MIN_BIN_SAMPLES",
    "SMOOTHING",
    "FeatureWoe",
    "FederatedWoe",
    "FederatedWoeError",
    "HolderFeatureWoe",
    "HolderWoeModel",
    "ProtocolError",
    "WoeEncoder",
    "WoeError",
    "WoeHolderServicer",
    "WoeWarning",
    "iv_report",
    "iv_strength",
    "local_woe_holders",
    "merge_small_bins",
    "monotonic_merge",
    "woe_from_counts",
    "woe_iv",
    "woe_tables",
]
