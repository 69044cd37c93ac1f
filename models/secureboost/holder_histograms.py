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


def candidates(
    job: SecureBoostJob,
    state: TreeState,
    node_id: int,
    mask: np.ndarray,
    hist: list[list[mpz]],
) -> tuple[list[int], bytes]:
    """Prefix sums → real candidates → shuffle → opaque ids → pack → re-randomise.

    Packing saves the bank one decryption per candidate; re-randomising is what keeps the
    packed sums unlinkable to the per-sample ciphertexts the bank sent.
    """
    n_bins = job.n_bins
    offsets = bin_offsets(n_bins)
    flat = (job.bins[mask].astype(np.int64) + offsets).ravel()
    counts = np.bincount(flat, minlength=int(n_bins.sum()))
    keep = keep_candidates(counts, n_bins)
    nsq = mpz(job.params.nsquare)
    found: list[tuple[int, int, mpz]] = []
    for f in range(n_bins.size):
        acc = mpz(1)
        base = int(offsets[f])
        for b in range(int(n_bins[f]) - 1):
            acc = gmpy2.f_mod(acc * hist[f][b], nsq)
            if keep[base + b]:
                found.append((f, b, acc))
    random.SystemRandom().shuffle(found)
    ids: list[int] = []
    table: dict[int, tuple[int, int]] = {}
    for f, b, _ in found:
        split_id = secrets.randbits(64)
        while split_id in table:
            split_id = secrets.randbits(64)
        table[split_id] = (f, b)
        ids.append(split_id)
    state.candidates[node_id] = table
    if not found:
        return ids, b""
    packer = job.packer.ciphertext_packer()
    packed = packer.pack([c for _, _, c in found], job.params, engine=job.engine)
    fresh = job.engine.rerandomise(packed)  # textbook at a holder: hides from the key holder
    return ids, ciphertexts_to_bytes(fresh, job.params)
