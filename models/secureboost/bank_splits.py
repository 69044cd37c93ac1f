"""How the SecureBoost bank picks a node's split from its own and the holders' candidates.

Why its own module: the choice (gains over every party's candidates, then the reference's
deterministic tie-break — bank first, holders in job order, the owner's smallest (feature,
threshold)) is what makes the federated trees equal the plaintext reference's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.secureboost.bank_state import BANK
from models.secureboost.reference import BoostParams, party_candidates, split_gains, to_real

__all__ = ["Choice", "HolderCandidates", "choose_split"]

Choice = tuple[str, float, int, int, list[int], list[int]]
"""(owner, gain, feature, threshold, tied holder split ids, their left counts)."""


@dataclass
class HolderCandidates:
    """A holder's candidates at one node, as the bank decrypted them (under opaque ids)."""

    split_ids: np.ndarray  # uint64, the holder's order
    g_left: np.ndarray
    h_left: np.ndarray
    n_left: np.ndarray


def choose_split(
    params: BoostParams,
    holders: Sequence[str],
    own_data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    g_node: float,
    h_node: float,
    n_node: int,
    holder_cands: Mapping[str, HolderCandidates],
) -> Choice | None:
    """Best split of a node over the bank's and the holders' candidates, or None (leaf).

    ``own_data``: the bank's (bins, n_bins, g_q, h_q) of the node's in-sample rows;
    ``holders`` the holders in the job's order (part of the tie-break).
    Tie-break: the bank, then the holders in mapping order; within the bank its smallest
    (feature, threshold); within a holder all tied ids go to the holder, which takes its
    smallest.
    """
    p = params
    own = party_candidates(*own_data)
    own_gains = split_gains(
        to_real(own.g_left), to_real(own.h_left), own.n_left, g_node, h_node, n_node, p
    )
    gains = {
        name: split_gains(c.g_left, c.h_left, c.n_left, g_node, h_node, n_node, p)
        for name, c in holder_cands.items()
    }
    best = max([own_gains.max(initial=-np.inf), *(v.max(initial=-np.inf) for v in gains.values())])
    if not best > 0:
        return None
    if own_gains.size and own_gains.max() == best:
        j = int(np.argmax(own_gains))
        return BANK, float(best), int(own.feature[j]), int(own.threshold[j]), [], []
    for name in holders:
        if name in gains and gains[name].size and gains[name].max() == best:
            tied = np.flatnonzero(gains[name] == best)
            c = holder_cands[name]
            return (
                name,
                float(best),
                -1,
                -1,
                [int(i) for i in c.split_ids[tied]],
                [int(k) for k in c.n_left[tied]],
            )
    raise AssertionError("unreachable: the best gain belongs to some party")
