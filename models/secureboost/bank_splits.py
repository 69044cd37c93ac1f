"""How the SecureBoost bank picks a node's split from its own and the holders' candidates.

Why its own module: the choice (gains over every party's candidates, then the reference's
deterministic tie-break — bank first, holders in job order, the owner's smallest (feature,
threshold)) is what makes the federated trees equal the plaintext reference's.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from models.secureboost.bank_state import BANK
from models.secureboost.reference import (
    BoostParams,
    all_candidates,
    category_prefixes,
    split_gains,
)

__all__ = ["Choice", "HolderCandidates", "choose_split", "with_category_prefixes"]

Choice = tuple[str, float, int, int, list[int], list[int], list[int]]
"""(owner, gain, feature, threshold, tied holder split ids, their left counts, the category ids
going left of a holder's categorical split — empty for an ordered one)."""


@dataclass
class HolderCandidates:
    """A holder's candidates at one node, as the bank decrypted them (under opaque ids).

    Categorical groups become candidates here too (``with_category_prefixes``): each gets a
    bank-local id, and ``sets`` maps it to the holder's category ids that go left.
    """

    split_ids: np.ndarray  # uint64, the holder's order
    g_left: np.ndarray
    h_left: np.ndarray
    n_left: np.ndarray
    sets: dict[int, list[int]] = field(default_factory=dict)


def with_category_prefixes(
    numeric: HolderCandidates,
    groups: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    lam: float,
) -> HolderCandidates:
    """``numeric`` plus, for every categorical group (category ids, ΣG, ΣH, count per
    category), the prefixes of its categories in g/(h + λ) order (``category_prefixes``: the
    many-vs-many split LightGBM makes in the clear), each under a fresh bank-local id."""
    ids = [numeric.split_ids]
    g = [numeric.g_left]
    h = [numeric.h_left]
    n = [numeric.n_left]
    sets: dict[int, list[int]] = {}
    taken = {int(i) for i in numeric.split_ids}
    for cat_ids, g_cat, h_cat, n_cat in groups:
        chosen, g_left, h_left, n_left = category_prefixes(g_cat, h_cat, n_cat, lam)
        local = []
        for members in chosen:
            key = secrets.randbits(64)
            while key in taken:
                key = secrets.randbits(64)
            taken.add(key)
            sets[key] = [int(cat_ids[m]) for m in members]
            local.append(key)
        ids.append(np.asarray(local, dtype=np.uint64))
        g.append(np.asarray(g_left, dtype=np.float64))
        h.append(np.asarray(h_left, dtype=np.float64))
        n.append(np.asarray(n_left, dtype=np.int64))
    return HolderCandidates(
        np.concatenate(ids).astype(np.uint64),
        np.concatenate(g).astype(np.float64),
        np.concatenate(h).astype(np.float64),
        np.concatenate(n).astype(np.int64),
        sets,
    )


def choose_split(
    params: BoostParams,
    holders: Sequence[str],
    own_data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    g_node: float,
    h_node: float,
    n_node: int,
    holder_cands: Mapping[str, HolderCandidates],
    *,
    own_categorical: Sequence[int] = (),
) -> Choice | None:
    """Best split of a node over the bank's and the holders' candidates, or None (leaf).

    ``own_data``: the bank's (bins, n_bins, g_q, h_q) of the node's in-sample rows;
    ``own_categorical`` the bank's categorical features (split as sets, in the clear);
    ``holders`` the holders in the job's order (part of the tie-break).
    Tie-break: the bank, then the holders in mapping order; within the bank its first
    candidate (ordered features by (feature, threshold), then categorical ones); within a
    holder all tied ordered ids go to the holder, which takes its smallest; a holder's
    categorical split only when no ordered candidate of it ties.
    """
    p = params
    feature, threshold, g_left, h_left, n_left = all_candidates(
        *own_data, own_categorical, p.reg_lambda
    )
    own_gains = split_gains(g_left, h_left, n_left, g_node, h_node, n_node, p)
    gains = {
        name: split_gains(c.g_left, c.h_left, c.n_left, g_node, h_node, n_node, p)
        for name, c in holder_cands.items()
    }
    best = max([own_gains.max(initial=-np.inf), *(v.max(initial=-np.inf) for v in gains.values())])
    if not best > 0:
        return None
    if own_gains.size and own_gains.max() == best:
        j = int(np.argmax(own_gains))
        return BANK, float(best), int(feature[j]), int(threshold[j]), [], [], []
    for name in holders:
        if name in gains and gains[name].size and gains[name].max() == best:
            c = holder_cands[name]
            tied = np.flatnonzero(gains[name] == best)
            ordered = [int(k) for k in tied if int(c.split_ids[k]) not in c.sets]
            if ordered:
                return (
                    name,
                    float(best),
                    -1,
                    -1,
                    [int(c.split_ids[k]) for k in ordered],
                    [int(c.n_left[k]) for k in ordered],
                    [],
                )
            k = int(tied[0])
            return (
                name,
                float(best),
                -1,
                -1,
                [],
                [int(c.n_left[k])],
                list(c.sets[int(c.split_ids[k])]),
            )
    raise AssertionError("unreachable: the best gain belongs to some party")
