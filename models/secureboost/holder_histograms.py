"""A SecureBoost holder's histograms: encrypted bin sums per node, and its split candidates
as the bank receives them — shuffled, under opaque ids, packed and re-randomised.

Why apart from the protocol (``passive.py``): this is the holder's homomorphic arithmetic, the
part whose output the bank sees; the servicer only vets requests and keeps state.
"""

from __future__ import annotations

import random
import secrets

import gmpy2
import numpy as np
from gmpy2 import mpz

from federation.crypto import ciphertexts_to_bytes, encrypted_bin_sums, subtract
from models.secureboost.holder_state import SecureBoostJob, TreeState
from models.secureboost.reference import bin_offsets, keep_candidates
from models.secureboost.tree import parent_of, sibling_of

__all__ = ["candidates", "level_histograms"]


def level_histograms(
    job: SecureBoostJob,
    state: TreeState,
    samples: dict[int, np.ndarray],
    by_sub: dict[int, bool],
) -> dict[int, list[list[mpz]]]:
    """Encrypted bin sums per node: directly, or as parent − sibling."""
    n_bins_max = int(job.n_bins.max())
    hists: dict[int, list[list[mpz]]] = {}
    for node_id in sorted(samples, key=lambda i: by_sub[i]):  # direct ones first
        if by_sub[node_id]:
            hists[node_id] = subtract(
                state.histograms[parent_of(node_id)], hists[sibling_of(node_id)], job.params
            )
        else:
            positions = state.position[np.flatnonzero(samples[node_id])]
            hists[node_id] = encrypted_bin_sums(
                state.ciphertexts,
                state.bins,
                positions,
                n_bins_max,
                job.params,
                engine=job.engine,
            )
    return hists


def _fresh_id(table: dict[int, tuple[int, int]]) -> int:
    split_id = secrets.randbits(64)
    while split_id in table:
        split_id = secrets.randbits(64)
    return split_id


def candidates(
    job: SecureBoostJob,
    state: TreeState,
    node_id: int,
    mask: np.ndarray,
    hist: list[list[mpz]],
) -> tuple[list[int], list[list[int]], bytes]:
    """Prefix sums → real candidates → shuffle → opaque ids → pack → re-randomise.

    Ordered features give prefix sums (one candidate per threshold). A categorical feature
    gives a *group*: the sums of each category non-empty in the node, under fresh ids, in a
    fresh random order (the groups too), so the bank can order them by g/h but cannot tell
    which category (or which feature) an id is, nor link ids across nodes. Returns (candidate
    ids, groups of category ids, the packed ciphertexts: candidates then groups in order).

    Packing saves the bank one decryption per candidate; re-randomising is what keeps the
    packed sums unlinkable to the per-sample ciphertexts the bank sent.
    """
    n_bins = job.n_bins
    nominal = {j for j, c in enumerate(job.binner.categorical_) if c}
    offsets = bin_offsets(n_bins)
    flat = (job.bins[mask].astype(np.int64) + offsets).ravel()
    counts = np.bincount(flat, minlength=int(n_bins.sum()))
    keep = keep_candidates(counts, n_bins)
    nsq = mpz(job.params.nsquare)
    rng = random.SystemRandom()
    found: list[tuple[int, int, mpz]] = []
    groups: list[list[tuple[int, int, mpz]]] = []
    for f in range(n_bins.size):
        base = int(offsets[f])
        if f in nominal:
            group = [(f, b, hist[f][b]) for b in range(int(n_bins[f])) if counts[base + b] > 0]
            if len(group) >= 2:
                rng.shuffle(group)
                groups.append(group)
            continue
        acc = mpz(1)
        for b in range(int(n_bins[f]) - 1):
            acc = gmpy2.f_mod(acc * hist[f][b], nsq)
            if keep[base + b]:
                found.append((f, b, acc))
    rng.shuffle(found)
    rng.shuffle(groups)
    ids: list[int] = []
    table: dict[int, tuple[int, int]] = {}
    for f, b, _ in found:
        split_id = _fresh_id(table)
        table[split_id] = (f, b)
        ids.append(split_id)
    group_ids: list[list[int]] = []
    cats: dict[int, tuple[int, int]] = {}
    for group in groups:
        members = []
        for f, b, _ in group:
            cat_id = _fresh_id(cats)
            while cat_id in table:
                cat_id = _fresh_id(cats)
            cats[cat_id] = (f, b)
            members.append(cat_id)
        group_ids.append(members)
    state.candidates[node_id] = table
    state.categories[node_id] = cats
    sums = [c for _, _, c in found] + [c for group in groups for _, _, c in group]
    if not sums:
        return ids, group_ids, b""
    packer = job.packer.ciphertext_packer()
    packed = packer.pack(sums, job.params, engine=job.engine)
    fresh = job.engine.rerandomise(packed)  # textbook at a holder: hides from the key holder
    return ids, group_ids, ciphertexts_to_bytes(fresh, job.params)
