"""SecureBoost, defined once in plaintext: the primitives every implementation shares, and a
reference trainer that runs the whole algorithm on the union of all parties' binned features.

Why a reference: the federated protocol (``active.py`` at the bank, ``passive.py`` at each data
holder) must produce **exactly** the trees this module produces — same split owner, feature and
bin threshold at every node, same leaf weights. The lossless test checks that, and everything
that needs the full data set (the LightGBM comparison on 24,000 rows) can then run on this
fast plaintext version instead of the encrypted one.

Algorithm (binary logloss, XGBoost-style second-order boosting on pre-binned features):

* base score = log-odds of the training label mean; for each tree, g = p − y and h = p(1 − p)
  with p = sigmoid(margin).
* **Fixed-point sums.** g and h are quantised once per tree to integers ``rint(v · 2^40)``
  (exactly what ``GradHessPacker`` encrypts) and every histogram sum is an exact integer sum,
  converted to float by one correctly-rounded division. Encrypted and plaintext sums are
  therefore bit-identical, which is what makes "the same trees" a testable claim.
* Level-wise growth to ``max_depth``. A candidate split is (party, feature, bin t): rows with
  bin ≤ t go left (bin 0 = missing, so missing values always go left). Only candidates that
  change the partition are considered: bin t must be non-empty in the node and the right side
  must be non-empty (so empty bins never produce duplicate candidates).
* Gain ½[G_L²/(H_L+λ) + G_R²/(H_R+λ) − G²/(H+λ)] − γ; a node splits only on gain > 0
  with H_L, H_R ≥ ``min_child_weight``. Leaf weight −G/(H+λ)·learning_rate.
* **Tie-break (deterministic):** the first maximum in the order (party, feature, threshold),
  parties ordered bank first, then the holders in the order given. The federation keeps it
  although holders shuffle their candidates: the bank picks the first party with a maximal
  gain and, for a holder, sends all its tied ids; the holder takes its smallest
  (feature, threshold).
* **Row subsampling** per tree (``subsample`` < 1): ``round(subsample · n)`` rows without
  replacement from ``numpy.random.default_rng(random_state)``, one draw per tree. Histograms
  and leaf weights use the subsample; every row is routed and updated.
* ``first_tree_bank_only``: tree 0 uses the bank's features only (holders get no gradients).
* **Holder eligibility** (holders' privacy rule, mirrored here): holders contribute candidates
  to a node only if the node has ≥ ``min_holder_node_samples`` in-sample rows, its sibling
  does too, and its parent was eligible (the root: itself ≥ the minimum). Why the sibling
  and the parent: the bank holds the parent's histogram, so a child's histogram would give
  away its sibling's by subtraction; with this rule every histogram the bank can derive
  covers at least ``min_holder_node_samples`` samples.

Tree structure (``tree.py``): nodes are numbered heap-style (root 0; children of i are 2i+1
left, 2i+2 right); each split records its owner party, the feature index *within the owner* and
the bin threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from federation.errors import XinyidaiError
from models.secureboost.tree import (
    Tree,
    TreeNode,
    leaf_reachability,
    left_child,
    right_child,
)

PRECISION_BITS = 40
"""Fixed-point precision of g and h (bits after the binary point), as encrypted."""
G_BOUND = 1.0
"""|g| = |p − y| ≤ 1."""
H_BOUND = 0.25
"""h = p(1 − p) ≤ 1/4."""
MAX_ROWS = 1 << 22
"""Exact int64 sums of 2^40-scaled values need fewer than 2^22 rows (headroom 1 bit)."""
MAX_DEPTH = 16


class SecureBoostError(XinyidaiError):
    """Base of SecureBoost errors."""


class SecureBoostParamError(SecureBoostError):
    """A hyperparameter is out of range; the message names it."""


class LabelError(SecureBoostError):
    """Labels are not a usable binary target (one class, NaN, wrong length...)."""


# --------------------------------------------------------------------------------------------
# hyperparameters


@dataclass(frozen=True, kw_only=True)
class BoostParams:
    """The hyperparameters of the algorithm (validated on construction)."""

    n_trees: int = 5
    max_depth: int = 3
    learning_rate: float = 0.3
    reg_lambda: float = 1.0
    min_child_weight: float = 1.0
    gamma: float = 0.0
    max_bin: int = 32
    subsample: float = 1.0
    first_tree_bank_only: bool = True
    min_holder_node_samples: int = 20
    random_state: int | None = None

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> SecureBoostParamError:
            return SecureBoostParamError(f"{name}={getattr(self, name)!r}: must be {rule}")

        def is_int(v: Any) -> bool:
            return isinstance(v, int | np.integer) and not isinstance(v, bool)

        if not is_int(self.n_trees) or self.n_trees < 1:
            raise bad("n_trees", "an integer >= 1")
        if not is_int(self.max_depth) or not 1 <= self.max_depth <= MAX_DEPTH:
            raise bad("max_depth", f"an integer in [1, {MAX_DEPTH}]")
        if not (np.isfinite(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise bad("learning_rate", "in (0, 1]")
        if not (np.isfinite(self.reg_lambda) and self.reg_lambda >= 0):
            raise bad("reg_lambda", "finite and >= 0")
        if not (np.isfinite(self.min_child_weight) and self.min_child_weight >= 0):
            raise bad("min_child_weight", "finite and >= 0")
        if self.reg_lambda == 0 and self.min_child_weight == 0:
            raise bad("reg_lambda", "> 0 when min_child_weight is 0 (else H_L = 0 divides by 0)")
        if not (np.isfinite(self.gamma) and self.gamma >= 0):
            raise bad("gamma", "finite and >= 0")
        if not is_int(self.max_bin) or not 2 <= self.max_bin <= 255:
            raise bad("max_bin", "an integer in [2, 255]")
        if not (np.isfinite(self.subsample) and 0 < self.subsample <= 1):
            raise bad("subsample", "in (0, 1]")
        if not isinstance(self.first_tree_bank_only, bool | np.bool_):
            raise bad("first_tree_bank_only", "a bool")
        if not is_int(self.min_holder_node_samples) or self.min_holder_node_samples < 0:
            raise bad("min_holder_node_samples", "an integer >= 0")
        if self.random_state is not None and not is_int(self.random_state):
            raise bad("random_state", "an integer or None")


# --------------------------------------------------------------------------------------------
# numeric primitives (shared by the reference and the federated bank)


def check_labels(y: Any, n_rows: int) -> np.ndarray:
    """Binary labels as float64 0/1; refuses anything else with a clear reason."""
    arr = np.asarray(y)
    if arr.ndim != 1 or arr.shape[0] != n_rows:
        raise LabelError(f"y must be 1-D with one label per row ({n_rows}), got shape {arr.shape}")
    try:
        values = arr.astype(np.float64)
    except (TypeError, ValueError):
        raise LabelError(f"labels must be 0/1, got dtype {arr.dtype}") from None
    if np.isnan(values).any():
        raise LabelError(f"{int(np.isnan(values).sum())} labels are missing")
    classes = np.unique(values)
    if not np.isin(classes, (0.0, 1.0)).all():
        raise LabelError(f"labels must be 0/1, found {classes[:5].tolist()}")
    if classes.size < 2:
        raise LabelError(
            f"labels have a single class ({classes[0]:g}): a credit model needs defaults and "
            "non-defaults"
        )
    return values


def base_score(y: np.ndarray) -> float:
    """Log-odds of the label mean: the optimal constant margin for logloss."""
    p = float(np.mean(y))
    return float(np.log(p / (1.0 - p)))


def sigmoid(margin: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-margin)))


def grad_hess(margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Logloss derivatives with respect to the margin: g = p − y, h = p(1 − p)."""
    p = sigmoid(margin)
    return p - y, p * (1.0 - p)


def quantize(values: np.ndarray, precision_bits: int = PRECISION_BITS) -> np.ndarray:
    """``rint(v · 2^P)`` as int64: the integers ``GradHessPacker`` packs (before its offset)."""
    return np.rint(values * float(2**precision_bits)).astype(np.int64)


def to_real(int_sums: Any, precision_bits: int = PRECISION_BITS) -> np.ndarray:
    """Exact integer sums → float64 in one correctly rounded step, as ``GradHessPacker.unpack``
    does (so plaintext and decrypted sums are the same floats)."""
    return np.asarray(int_sums, dtype=np.int64).astype(np.float64) / float(2**precision_bits)


def bin_offsets(n_bins: np.ndarray) -> np.ndarray:
    """Start of each feature's bins in a flattened (feature, bin) histogram."""
    return np.concatenate(([0], np.cumsum(n_bins)[:-1])).astype(np.int64)


@dataclass
class Candidates:
    """Split candidates of one party at one node, in (feature, threshold) order."""

    feature: np.ndarray  # int64, index within the party
    threshold: np.ndarray  # int64, left = bin <= threshold
    g_left: np.ndarray  # int64 exact sums of quantised g
    h_left: np.ndarray  # int64
    n_left: np.ndarray  # int64 in-sample rows going left


def keep_candidates(bin_counts: np.ndarray, n_bins: np.ndarray) -> np.ndarray:
    """Which (feature, threshold) cells of a flattened histogram are split candidates.

    Thresholds t < n_bins − 1 where bin t is non-empty (else the partition equals t − 1's) and
    some rows remain on the right. Used by the bank and, on its own counts, by each holder.
    """
    offsets = bin_offsets(n_bins)
    seg = np.repeat(np.arange(n_bins.size), n_bins)
    total = np.add.reduceat(bin_counts, offsets) if bin_counts.size else bin_counts
    prefix = segment_prefix(bin_counts, n_bins)
    local = np.arange(bin_counts.size) - offsets[seg]
    return np.asarray((local < n_bins[seg] - 1) & (bin_counts > 0) & (prefix < total[seg]))


def segment_prefix(flat: np.ndarray, n_bins: np.ndarray) -> np.ndarray:
    """Inclusive prefix sums within each feature's segment of a flattened histogram (int64)."""
    csum = np.cumsum(flat, dtype=np.int64)
    offsets = bin_offsets(n_bins)
    before = np.concatenate(([0], csum))[offsets]
    return np.asarray(csum - np.repeat(before, n_bins))


def party_candidates(
    bins: np.ndarray, n_bins: np.ndarray, g_q: np.ndarray, h_q: np.ndarray
) -> Candidates:
    """All split candidates of one party's features over one node's in-sample rows.

    ``bins`` (rows × features) and ``g_q``/``h_q`` are already restricted to the node's rows.
    Sums are exact int64 (``np.add.at``), so any implementation that sums the same integers
    gets the same numbers.
    """
    n_bins = np.asarray(n_bins, dtype=np.int64)
    total = int(n_bins.sum())
    offsets = bin_offsets(n_bins)
    flat = (bins.astype(np.int64) + offsets).ravel()
    reps = bins.shape[1]
    hist_g = np.zeros(total, dtype=np.int64)
    hist_h = np.zeros(total, dtype=np.int64)
    np.add.at(hist_g, flat, np.repeat(g_q, reps))
    np.add.at(hist_h, flat, np.repeat(h_q, reps))
    counts = np.bincount(flat, minlength=total).astype(np.int64)
    keep = keep_candidates(counts, n_bins)
    seg = np.repeat(np.arange(n_bins.size), n_bins)
    where = np.flatnonzero(keep)
    return Candidates(
        feature=seg[where],
        threshold=where - offsets[seg[where]],
        g_left=segment_prefix(hist_g, n_bins)[where],
        h_left=segment_prefix(hist_h, n_bins)[where],
        n_left=segment_prefix(counts, n_bins)[where],
    )


def goes_left(bins: np.ndarray, threshold: int) -> np.ndarray:
    """Which rows of one feature's bins a split sends left.

    ``threshold >= 0``: an ordered split, bins ``<= threshold``. ``threshold < 0``: a
    categorical split, ``-threshold`` a bitmask of the bins that go left (so a categorical
    feature has at most 63 bins, ``models.binning.MAX_CATEGORIES``); any other bin — another
    category, "other", a category unseen at this node — goes right.
    """
    col = np.asarray(bins, dtype=np.int64)
    if threshold >= 0:
        return np.asarray(col <= threshold)
    return np.asarray((np.int64(-threshold) >> col) & 1, dtype=bool)


def category_order(g: np.ndarray, h: np.ndarray, lam: float) -> np.ndarray:
    """Categories in ascending g / (h + lambda) — their leaf weight's order, stable.

    Why this order: for a convex loss the best split of categories into two sets is a prefix
    of this order (Fisher 1958; LightGBM's many-vs-many categorical split), so k − 1 prefixes
    replace 2^(k−1) subsets. The bank computes it in the clear from decrypted sums.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.asarray(g, dtype=np.float64) / (np.asarray(h, dtype=np.float64) + lam)
    return np.argsort(np.nan_to_num(ratio, nan=0.0), kind="stable")


def category_prefixes(
    g: np.ndarray, h: np.ndarray, n: np.ndarray, lam: float
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, np.ndarray]:
    """Every prefix of ``category_order`` but the whole: (positions going left per prefix,
    ΣG, ΣH, count of each left side). ``g``/``h`` are per-category real sums (``to_real``),
    summed in that order so every party that has the same per-category sums gets the same
    floats."""
    order = category_order(g, h, lam)
    if order.size < 2:
        empty = np.empty(0)
        return [], empty, empty, np.empty(0, dtype=np.int64)
    g_left = np.cumsum(np.asarray(g, dtype=np.float64)[order])[:-1]
    h_left = np.cumsum(np.asarray(h, dtype=np.float64)[order])[:-1]
    n_left = np.cumsum(np.asarray(n, dtype=np.int64)[order])[:-1]
    sets = [order[: k + 1] for k in range(order.size - 1)]
    return sets, g_left, h_left, n_left


@dataclass
class CategorySplits:
    """Categorical split candidates of one party at one node (plaintext): as ``Candidates`` but
    with real-valued sums and the threshold a bitmask (``goes_left``)."""

    feature: np.ndarray
    threshold: np.ndarray  # int64, negative: -bitmask of the bins going left
    g_left: np.ndarray  # float64
    h_left: np.ndarray
    n_left: np.ndarray


def category_candidates(
    bins: np.ndarray,
    n_bins: np.ndarray,
    g_q: np.ndarray,
    h_q: np.ndarray,
    categorical: Sequence[int],
    lam: float,
) -> CategorySplits:
    """Prefix-of-ordered-categories candidates of a party's categorical features at one node
    (bins non-empty in the node only), in (feature, prefix length) order."""
    feats: list[int] = []
    masks: list[int] = []
    gl: list[float] = []
    hl: list[float] = []
    nl: list[int] = []
    for f in categorical:
        k = int(n_bins[f])
        col = bins[:, f].astype(np.int64)
        counts = np.bincount(col, minlength=k)
        g_int = np.zeros(k, dtype=np.int64)
        h_int = np.zeros(k, dtype=np.int64)
        np.add.at(g_int, col, g_q)
        np.add.at(h_int, col, h_q)
        present = np.flatnonzero(counts)
        sets, g_left, h_left, n_left = category_prefixes(
            to_real(g_int[present]), to_real(h_int[present]), counts[present], lam
        )
        for j, chosen in enumerate(sets):
            feats.append(int(f))
            masks.append(-int(sum(1 << int(b) for b in present[chosen])))
            gl.append(float(g_left[j]))
            hl.append(float(h_left[j]))
            nl.append(int(n_left[j]))
    return CategorySplits(
        feature=np.asarray(feats, dtype=np.int64),
        threshold=np.asarray(masks, dtype=np.int64),
        g_left=np.asarray(gl, dtype=np.float64),
        h_left=np.asarray(hl, dtype=np.float64),
        n_left=np.asarray(nl, dtype=np.int64),
    )


def all_candidates(
    bins: np.ndarray,
    n_bins: np.ndarray,
    g_q: np.ndarray,
    h_q: np.ndarray,
    categorical: Sequence[int],
    lam: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A party's ordered candidates (numeric features) then its categorical ones, as
    (feature, threshold, g_left real, h_left real, n_left) — the order of the tie-break."""
    c = party_candidates(bins, n_bins, g_q, h_q)
    if categorical:
        numeric = ~np.isin(c.feature, np.asarray(categorical, dtype=np.int64))
        cat = category_candidates(bins, n_bins, g_q, h_q, categorical, lam)
    else:
        numeric = np.ones(c.feature.size, dtype=bool)
        cat = None
    feature = c.feature[numeric]
    threshold = c.threshold[numeric]
    g_left, h_left, n_left = (
        to_real(c.g_left[numeric]),
        to_real(c.h_left[numeric]),
        c.n_left[numeric],
    )
    if cat is not None and cat.feature.size:
        feature = np.concatenate([feature, cat.feature])
        threshold = np.concatenate([threshold, cat.threshold])
        g_left = np.concatenate([g_left, cat.g_left])
        h_left = np.concatenate([h_left, cat.h_left])
        n_left = np.concatenate([n_left, cat.n_left])
    return feature, threshold, g_left, h_left, n_left


def split_gains(
    g_left: np.ndarray,
    h_left: np.ndarray,
    n_left: np.ndarray,
    g_node: float,
    h_node: float,
    n_node: int,
    params: BoostParams,
) -> np.ndarray:
    """XGBoost gains of candidates (floats from :func:`to_real`); invalid candidates get −inf."""
    lam = params.reg_lambda
    g_right = g_node - g_left
    h_right = h_node - h_left
    with np.errstate(divide="ignore", invalid="ignore"):
        parent = g_node * g_node / (h_node + lam)
        gain = (
            0.5 * (g_left * g_left / (h_left + lam) + g_right * g_right / (h_right + lam) - parent)
            - params.gamma
        )
    valid = (
        (n_left > 0)
        & (n_left < n_node)
        & (h_left >= params.min_child_weight)
        & (h_right >= params.min_child_weight)
        & np.isfinite(gain)
    )
    return np.where(valid, gain, -np.inf)


def leaf_weight(g_node: float, h_node: float, params: BoostParams) -> float:
    denom = h_node + params.reg_lambda
    if denom <= 0:
        return 0.0
    return float(-g_node / denom * params.learning_rate)


def subsample_rows(rng: np.random.Generator, n_rows: int, subsample: float) -> np.ndarray:
    """Sorted in-sample rows of one tree; one generator draw per tree when subsample < 1."""
    if subsample >= 1.0:
        return np.arange(n_rows, dtype=np.int64)
    size = min(n_rows, max(1, round(subsample * n_rows)))
    return np.sort(rng.choice(n_rows, size=size, replace=False)).astype(np.int64)


def children_eligible(parent_eligible: bool, n_left: int, n_right: int, minimum: int) -> bool:
    """Holder eligibility of a split's two children (see the module docstring)."""
    return bool(parent_eligible and n_left >= minimum and n_right >= minimum)


def margins_from_reach(
    base: float, trees: Sequence[Tree], reaches: Sequence[np.ndarray], what: str = "model"
) -> np.ndarray:
    """base + Σ_trees weight of the single reachable leaf; refuses an ambiguous routing."""
    n = reaches[0].shape[0] if reaches else 0
    margin = np.full(n, base, dtype=np.float64)
    for t, (tree, reach) in enumerate(zip(trees, reaches, strict=True)):
        per_row = reach.sum(axis=1)
        if (per_row != 1).any():
            bad = int(np.flatnonzero(per_row != 1)[0])
            raise SecureBoostError(
                f"{what}: row {bad} reaches {int(per_row[bad])} leaves of tree {t}; the parties' "
                "model parts do not fit together"
            )
        margin += tree.leaf_weights()[np.argmax(reach, axis=1)]
    return margin


# --------------------------------------------------------------------------------------------
# the plaintext reference trainer


@dataclass
class PartyBins:
    """One party's binned features for the aligned rows (``n_bins`` includes the missing bin)."""

    name: str
    bins: np.ndarray
    n_bins: np.ndarray
    categorical: Sequence[int] = ()  # features whose bins are categories (split as sets)

    def __post_init__(self) -> None:
        self.categorical = tuple(int(j) for j in self.categorical)
        self.bins = np.asarray(self.bins)
        self.n_bins = np.asarray(self.n_bins, dtype=np.int64)
        if self.bins.ndim != 2 or not np.issubdtype(self.bins.dtype, np.integer):
            raise SecureBoostError(f"party '{self.name}': bins must be a 2-D integer array")
        if self.n_bins.shape != (self.bins.shape[1],):
            raise SecureBoostError(f"party '{self.name}': one n_bins per feature expected")
        if self.bins.size and ((self.bins < 0) | (self.bins >= self.n_bins)).any():
            raise SecureBoostError(f"party '{self.name}': a bin is outside [0, n_bins)")
        if any(not 0 <= j < self.n_bins.size or self.n_bins[j] > 63 for j in self.categorical):
            raise SecureBoostError(
                f"party '{self.name}': categorical features must exist and have <= 63 bins"
            )


class PlaintextSecureBoost:
    """The reference: the whole algorithm on every party's bins at once (no encryption).

    ``parties[0]`` is the bank (the label owner); the others are holders, in the order the
    federated bank lists them (that order is part of the tie-break).
    """

    def __init__(self, params: BoostParams | None = None, **kwargs: Any):
        self.params = params if params is not None else BoostParams(**kwargs)

    def fit(self, parties: Sequence[PartyBins], y: Any) -> PlaintextSecureBoost:
        p = self.params
        if not parties:
            raise SecureBoostError("at least the bank's features are needed")
        n = parties[0].bins.shape[0]
        if any(party.bins.shape[0] != n for party in parties):
            raise SecureBoostError("every party must have the same (aligned) rows")
        if n > MAX_ROWS:
            raise SecureBoostError(f"{n} rows: at most {MAX_ROWS} are supported")
        labels = check_labels(y, n)
        rng = np.random.default_rng(p.random_state)
        self.base_score_ = base_score(labels)
        margin = np.full(n, self.base_score_)
        self.trees_: list[Tree] = []
        for t in range(p.n_trees):
            g, h = grad_hess(margin, labels)
            g_q, h_q = quantize(g), quantize(h)
            in_sample = np.zeros(n, dtype=bool)
            in_sample[subsample_rows(rng, n, p.subsample)] = True
            use_holders = len(parties) > 1 and not (t == 0 and p.first_tree_bank_only)
            tree = self._grow(parties, g_q, h_q, in_sample, use_holders)
            for leaf in tree.leaves():
                margin[self._rows[leaf]] += tree.nodes[leaf].weight
            self.trees_.append(tree)
        self.party_names_ = [party.name for party in parties]
        return self

    def _grow(
        self,
        parties: Sequence[PartyBins],
        g_q: np.ndarray,
        h_q: np.ndarray,
        in_sample: np.ndarray,
        use_holders: bool,
    ) -> Tree:
        p = self.params
        n = in_sample.size
        tree = Tree()
        self._rows: dict[int, np.ndarray] = {}
        root_eligible = use_holders and int(in_sample.sum()) >= p.min_holder_node_samples
        level: list[tuple[int, np.ndarray, bool]] = [(0, np.ones(n, dtype=bool), root_eligible)]
        for depth in range(p.max_depth + 1):
            following: list[tuple[int, np.ndarray, bool]] = []
            for node_id, rows, eligible in level:
                idx = np.flatnonzero(rows & in_sample)
                g_int, h_int = int(g_q[idx].sum()), int(h_q[idx].sum())
                g_node, h_node = float(to_real(g_int)), float(to_real(h_int))
                best = None
                if depth < p.max_depth:
                    best = self._best_split(parties, idx, g_q, h_q, g_node, h_node, eligible)
                self._rows[node_id] = rows
                if best is None:
                    w = leaf_weight(g_node, h_node, p)
                    tree.nodes[node_id] = TreeNode(node_id, True, w, n_samples=idx.size)
                    continue
                owner, feature, threshold, gain = best
                party = parties[owner]
                go_left = goes_left(party.bins[:, feature], threshold)
                left, right = rows & go_left, rows & ~go_left
                n_left = int((left & in_sample).sum())
                n_right = idx.size - n_left
                tree.nodes[node_id] = TreeNode(
                    node_id,
                    False,
                    owner=party.name,
                    feature=feature,
                    threshold=threshold,
                    gain=gain,
                    n_samples=idx.size,
                )
                child_ok = children_eligible(eligible, n_left, n_right, p.min_holder_node_samples)
                following.append((left_child(node_id), left, child_ok))
                following.append((right_child(node_id), right, child_ok))
            level = following
        return tree

    def _best_split(
        self,
        parties: Sequence[PartyBins],
        idx: np.ndarray,
        g_q: np.ndarray,
        h_q: np.ndarray,
        g_node: float,
        h_node: float,
        eligible: bool,
    ) -> tuple[int, int, int, float] | None:
        best: tuple[int, int, int, float] | None = None
        for k, party in enumerate(parties):
            if k > 0 and not eligible:
                break
            feature, threshold, g_left, h_left, n_left = all_candidates(
                party.bins[idx],
                party.n_bins,
                g_q[idx],
                h_q[idx],
                party.categorical,
                self.params.reg_lambda,
            )
            if feature.size == 0:
                continue
            gains = split_gains(g_left, h_left, n_left, g_node, h_node, idx.size, self.params)
            j = int(np.argmax(gains))
            if gains[j] > 0 and (best is None or gains[j] > best[3]):
                best = (k, int(feature[j]), int(threshold[j]), float(gains[j]))
        return best

    def decision_function(self, parties: Sequence[PartyBins]) -> np.ndarray:
        """Margins for rows binned by the same parties (names must match the fit)."""
        by_name = {party.name: party for party in parties}
        n = parties[0].bins.shape[0]
        reaches = []
        for tree in self.trees_:
            go_left = {
                i: goes_left(by_name[node.owner].bins[:, node.feature], node.threshold)
                for i, node in tree.nodes.items()
                if not node.is_leaf
            }
            reaches.append(leaf_reachability(tree.leaves(), go_left, n))
        return margins_from_reach(self.base_score_, self.trees_, reaches, "reference")

    def predict_proba(self, parties: Sequence[PartyBins]) -> np.ndarray:
        p = sigmoid(self.decision_function(parties))
        return np.column_stack([1.0 - p, p])


__all__ = [
    "G_BOUND",
    "H_BOUND",
    "MAX_ROWS",
    "PRECISION_BITS",
    "BoostParams",
    "Candidates",
    "CategorySplits",
    "LabelError",
    "PartyBins",
    "PlaintextSecureBoost",
    "SecureBoostError",
    "SecureBoostParamError",
    "all_candidates",
    "base_score",
    "category_candidates",
    "category_order",
    "category_prefixes",
    "check_labels",
    "children_eligible",
    "goes_left",
    "grad_hess",
    "keep_candidates",
    "leaf_weight",
    "margins_from_reach",
    "party_candidates",
    "quantize",
    "split_gains",
    "subsample_rows",
    "to_real",
]
