"""One-round SecureBoost scoring at the bank: its own splits here, each holder's reach masks.

Why apart from training (``active.py``): scoring needs no keys and no job — the bank routes rows
through its own splits, asks every holder whose splits the model uses for the leaves each row
can reach under that holder's splits, and ANDs the masks (``tree.leaf_reachability``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from federation.transport.base import PeerBase, new_meta
from models.driver import ask_holders
from models.rows import MaskError, mask_from_bytes
from models.secureboost.bank_state import BANK, BankModel, ProtocolError
from models.secureboost.reference import SecureBoostError, goes_left, margins_from_reach
from models.secureboost.tree import leaf_reachability
from protos import secureboost_pb2 as pb

__all__ = ["predict_margin"]


def predict_margin(
    model: BankModel,
    bank_bins: np.ndarray,
    holders: Mapping[str, PeerBase],
    rows: Any,
    *,
    purpose: str = "financing",
    alignment_id: str = "",
) -> np.ndarray:
    """Margins for ``rows`` (holder row indices, aligned with ``bank_bins``' rows).

    ``alignment_id`` names the PSI job whose order ``rows`` index (empty: the holder's own rows).
    """
    row_ids = np.asarray(rows, dtype=np.int64)
    n = bank_bins.shape[0]
    if row_ids.shape != (n,):
        raise SecureBoostError(
            f"rows must give one holder row per bank row ({n}), got {row_ids.shape}"
        )
    if n and row_ids.min() < 0:
        raise SecureBoostError("rows must be non-negative holder row indices")
    reaches = []
    for tree in model.trees:
        go_left = {
            i: goes_left(bank_bins[:, node.feature], node.threshold)
            for i, node in tree.nodes.items()
            if not node.is_leaf and node.owner == BANK
        }
        reaches.append(leaf_reachability(tree.leaves(), go_left, n))
    owners = sorted(model.split_owners() - {BANK})
    missing = [h for h in owners if h not in holders]
    if missing:
        raise SecureBoostError(f"the model needs holder(s) {missing} to score, they were not given")
    request = pb.SecureBoostPredictRequest(
        meta=new_meta(purpose, job_id=model.job_id),
        rows=row_ids.tolist(),
        alignment_id=alignment_id,
    )
    replies: dict[str, pb.SecureBoostPredictReply] = ask_holders(
        holders, owners, "Predict", request
    )
    for name, reply in replies.items():
        if len(reply.trees) != len(model.trees):
            raise ProtocolError(
                f"holder '{name}' answered {len(reply.trees)} trees, model has {len(model.trees)}"
            )
        for t, item in enumerate(reply.trees):
            if not item.reach:
                continue
            n_leaves = len(model.trees[t].leaves())
            try:
                mask = mask_from_bytes(item.reach, n * n_leaves, f"holder '{name}' tree {t} reach")
            except MaskError as exc:
                raise ProtocolError(str(exc)) from None
            reaches[t] &= mask.reshape(n, n_leaves)
    return margins_from_reach(model.base_score, model.trees, reaches, f"model {model.job_id}")
