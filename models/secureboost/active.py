"""The bank's half of vertical SecureBoost (active party: labels and the Paillier private key).

Reads top to bottom as the bank runs a job: ``SecureBoostBank.train`` (keys and ``Start``, then
per tree the encrypted gradients and level-wise growth, then ``Finish``). Scoring is
``predict.py``; the bank's model part and checkpoint are ``bank_state.py``; the holders' half is
``passive.py``; the algorithm (and its plaintext twin) is ``reference.py``; the protocol and who
learns what are in docs/secureboost.md. Talking to the holders (fan-out, abort, blame) is
``models.driver.HolderDriver``.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from phe.paillier import PaillierPrivateKey

from federation import compute
from federation.compute import ComputeLostError
from federation.crypto import (
    CryptoError,
    GradHessPacker,
    PaillierEngine,
    ciphertexts_from_bytes,
    generate_keypair,
    make_public_params,
    public_params_to_bytes,
)
from federation.crypto.keys import PublicParams
from federation.crypto.reserve import KeyReserve, ReadyKey
from federation.errors import PeerError
from federation.ids import name_problem
from federation.transport.base import PeerBase
from models.driver import HolderDriver
from models.rows import MaskError, mask_from_bytes, mask_to_bytes
from models.secureboost.bank_splits import (
    Choice,
    HolderCandidates,
    choose_split,
    with_category_prefixes,
)
from models.secureboost.bank_state import (
    BANK,
    BankCheckpoint,
    BankModel,
    FederatedTrainingError,
    ProtocolError,
    Resumed,
)
from models.secureboost.reference import (
    G_BOUND,
    H_BOUND,
    MAX_ROWS,
    PRECISION_BITS,
    BoostParams,
    SecureBoostError,
    base_score,
    check_labels,
    children_eligible,
    goes_left,
    grad_hess,
    leaf_weight,
    quantize,
    subsample_rows,
    to_real,
)
from models.secureboost.tree import Tree, TreeNode, left_child, right_child, sibling_of
from protos import secureboost_pb2 as pb

__all__ = ["RESUMABLE_CODES", "SecureBoostBank"]

log = logging.getLogger(__name__)

RESUMABLE_CODES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED", "FAILED_PRECONDITION"}
)
"""Peer failures that a restarted holder can recover from (it lost, or never got, the call)."""

DECRYPT_PARALLEL_FROM = 512
"""The bank engine's ``parallel_threshold`` (in DJN-encryption equivalents; a CRT decryption is
~15): a level's decryptions go to the worker pool from ~35 ciphertexts on."""
MAX_RESUMES = 5
"""Resumes per job before the bank gives up: a holder that keeps failing is not restarting."""
KEY_WAIT_S = 20.0
"""How long a job waits for a ready key being generated as it starts (else it makes its own)."""


_Entry = tuple[str, int, np.ndarray, list[np.ndarray], int]
"""One node's reply from one holder: (holder, node, candidate ids, category groups, number of
packed ciphertexts)."""


@dataclass
class _Open:
    """An open node: all training rows reaching it and whether holders may evaluate it."""

    node: int
    rows: np.ndarray
    eligible: bool


class SecureBoostBank:
    """Drives one training job against ``holders`` (any ``PeerBase``: in-process or gRPC).

    Protocol, from the bank's side:

    1. **Keys and start.** Generate a Paillier key pair (the private key never leaves this
       object); send every holder the public parameters, the ``GradHessPacker`` layout (one
       fixed-point scale, 2^40, for the whole job) and the hyperparameters it needs.
    2. **Per tree.** g, h of logloss; the row subsample; unless this is the first tree and
       ``first_tree_bank_only``, pack (g, h, 1) of each sampled row into one plaintext,
       DJN-encrypt and stream to every holder (``HolderDriver.broadcast_blob`` fed by
       ``encrypt_stream``: the holders receive while the bank still encrypts), then
       ``Gradients``.
    3. **Per level.** The bank's own candidates in plaintext (exact integer sums); for nodes
       the holders may evaluate (eligibility rule in ``reference.py``) one ``Histograms`` call
       per holder with the nodes' sample sets — the smaller sibling computed directly, the
       other by subtraction. CRT-decrypt and unpack the packed left sums, compute all gains,
       pick the best (bank first, then holders in mapping order, then the owner's smallest
       (feature, threshold)). A bank split is applied here; a holder's by ``ApplySplit`` to
       that holder only, whose left partition is checked against the decrypted count. Leaves
       get −G/(H+λ)·learning_rate — leaf weights exist only here.
    4. **Finish** sends the tree shapes; on any failure every started holder gets
       ``Finish(abort)`` and ``FederatedTrainingError`` names the holder and the stage.

    Sees: for eligible nodes, the (ΣG, ΣH, count) of each of a holder's candidate partitions,
    shuffled under opaque ids; the left partition of the holder splits it chose; the holders'
    feature counts. Never sees: a holder's values, column names, bin edges, or which feature
    and threshold a split id stands for.

    **Resume.** With ``checkpoint_dir`` the bank saves its trees, margins and random state
    after every tree (``<job>.checkpoint.json``; deleted when the job finishes or is
    aborted). A later ``train`` with the same ``job_id``, data and parameters continues from
    there: holders are re-started with ``resume_from_tree`` (new keys; they keep earlier
    splits from memory or their own checkpoint). With ``resume_wait_s`` > 0 a holder that
    goes away mid-job (restart, network) is waited for that long and the current tree is
    grown again, so a crash costs at most one tree; the result equals an uninterrupted run.

    Only ``peer.call`` and ``peer.put_blob`` are used, so the carrier does not matter.
    ``key_bits`` below 2048 only inside ``federation.crypto.testing.allow_insecure_key_sizes``.
    """

    def __init__(
        self,
        *,
        params: BoostParams,
        holders: Mapping[str, PeerBase],
        key_bits: int = 2048,
        purpose: str = "financing",
        job_id: str | None = None,
        workers: int | None = None,
        chunk_size: int = 4096,
        alignment_id: str = "",
        alignment_rows: np.ndarray | None = None,
        on_tree: Callable[[int], None] | None = None,
        checkpoint_dir: Path | None = None,
        resume_wait_s: float = 0.0,
        key_reserve: KeyReserve | None = None,
        overlap: bool = True,
    ):
        self.params = params
        # Overlap (issue 14): announce each tree's gradients before streaming them, so holders
        # sum the root histogram as chunks arrive (same sums, same trees; off: blob, then call).
        self.overlap = bool(overlap)
        # The node's ready key (``federation.crypto.reserve``): a key pair and obfuscators
        # made while the node was idle; None, or nothing ready, generates the key at start.
        self.key_reserve = key_reserve
        self.resume_wait_s = float(resume_wait_s)
        # Which aligned rows the holders train on: the PSI job (empty: the holder's rows as
        # they are) and a mask over its rows (None: all of them, in order).
        self.alignment_id = alignment_id
        self.alignment_rows = alignment_rows
        self.on_tree = on_tree
        self.holders = dict(holders)
        if BANK in self.holders:
            raise SecureBoostError(
                f"a holder may not be named '{BANK}': it names the bank's splits"
            )
        self.key_bits = int(key_bits)
        self.purpose = purpose
        self.job_id = job_id or f"sb-{uuid.uuid4().hex[:16]}"
        problem = name_problem(self.job_id, "job_id")
        if problem is not None:
            raise SecureBoostError(problem)
        self.workers = workers
        self.chunk_size = chunk_size
        self.checkpoint = BankCheckpoint(checkpoint_dir, self.job_id)
        self.driver = HolderDriver(
            self.holders, purpose=purpose, job_id=self.job_id, thread_name="sb-peer"
        )
        self.stats: dict[str, Any] = {"holder_candidates": 0, "decryptions": 0, "resumes": 0}
        self.categorical: tuple[int, ...] = ()  # the bank's own categorical features (train)

    # -- the job ---------------------------------------------------------------------------
    def train(
        self,
        bank_bins: np.ndarray,
        n_bins: np.ndarray,
        y: Any,
        *,
        categorical: Sequence[int] = (),
    ) -> BankModel:
        """Run the whole job; returns the bank's model part or raises with every holder reset.

        ``categorical``: the bank's own features whose bins are categories (split as sets)."""
        self.categorical = tuple(int(j) for j in categorical)
        bins = np.asarray(bank_bins)
        n = bins.shape[0]
        if n > MAX_ROWS:
            raise SecureBoostError(f"{n} rows: at most {MAX_ROWS} are supported")
        labels = check_labels(y, n)
        n_bins = np.asarray(n_bins, dtype=np.int64)
        lease: AbstractContextManager[ReadyKey | None] = (
            nullcontext(None)
            if self.key_reserve is None
            else self.key_reserve.lease(self.key_bits, wait_s=KEY_WAIT_S)
        )
        with lease as ready:  # the ready key serves this job only; dropped when it ends
            if ready is None:
                public, private = generate_keypair(self.key_bits)
                params = make_public_params(public)
            else:
                private, params = ready.private_key, ready.params
            self.stats["ready_key"] = ready is not None
            # How warm the job started: obfuscators made ahead and ready (a count, no values).
            self.stats["obfuscators_at_start"] = 0 if ready is None else len(ready.pool)
            return self._train(bins, n, labels, n_bins, params, private, ready)

    def _train(
        self,
        bins: np.ndarray,
        n: int,
        labels: np.ndarray,
        n_bins: np.ndarray,
        params: PublicParams,
        private: PaillierPrivateKey,
        ready: ReadyKey | None,
    ) -> BankModel:
        packer = GradHessPacker(
            n_samples_max=n,
            key_bits=self.key_bits,
            precision_bits=PRECISION_BITS,
            g_bound=G_BOUND,
            h_bound=H_BOUND,
        )
        self._gh = packer
        terms = BankCheckpoint.terms(
            self.params,
            list(self.holders),
            self.alignment_id,
            self.alignment_rows,
            bins,
            n_bins,
            labels,
        )
        saved = self.checkpoint.read(terms)
        d = self.driver
        with (
            # Decryption of a level's packed sums on every worker from ~35 ciphertexts up (the
            # default waits for ~270): holders sit idle while the bank decrypts, so it is on the
            # critical path of every level.
            PaillierEngine(
                params,
                private_key=private,
                workers=self.workers,
                parallel_threshold=DECRYPT_PARALLEL_FROM,
            ) as engine,
            d.running(
                abort=lambda: pb.SecureBoostFinish(meta=d.meta(), abort=True),
                error=FederatedTrainingError,
                attributable=(PeerError, CryptoError, ProtocolError, MaskError),
                what=f"SecureBoost job {self.job_id}",
                dropped="Every holder was asked to drop the job; no model was produced.",
            ),
        ):
            # The ready key's obfuscators: made ahead, and (if fewer than the job needs) topped
            # up at low priority while the bank waits for holders.
            if self.key_reserve is not None and ready is not None:
                self.key_reserve.attach(engine, ready, need=self._encryptions(n, saved))
            engine.warm()  # workers get ready while the holders start and tree 0 grows
            try:
                self._start_holders(params, packer, n, resume=len(saved.trees) if saved else 0)
                model = self._boost(bins, n_bins, labels, engine, packer, terms, saved)
                model.part_digests = self._finish(model)
            except Exception:
                self.checkpoint.drop()
                raise
            self.checkpoint.drop()
        return model

    def _encryptions(self, n: int, saved: Resumed | None) -> int:
        """About how many gradients this job will encrypt (one per sampled row per holder
        tree): the obfuscators worth making for it."""
        p = self.params
        trees = p.n_trees - (len(saved.trees) if saved else 0)
        if p.first_tree_bank_only and not saved:
            trees -= 1
        return max(0, trees) * int(np.ceil(n * p.subsample)) if self.holders else 0

    def _start_holders(self, params: Any, packer: GradHessPacker, n: int, *, resume: int) -> None:
        d = self.driver
        start = pb.SecureBoostStart(
            meta=d.meta(),
            paillier_params=public_params_to_bytes(params),
            n_rows=n,
            pack_n_samples_max=packer.n_samples_max,
            pack_precision_bits=packer.precision_bits,
            pack_g_bound=packer.g_bound,
            pack_h_bound=packer.h_bound,
            pack_slot_bits=packer.slot_bits,
            max_bin=self.params.max_bin,
            max_depth=self.params.max_depth,
            n_trees=self.params.n_trees,
            min_node_samples=self.params.min_holder_node_samples,
            alignment_id=self.alignment_id,
        )
        if self.alignment_rows is not None:
            start.rows = mask_to_bytes(np.asarray(self.alignment_rows, dtype=bool))
        self._start = start
        start.resume_from_tree = resume
        d.started = list(self.holders)  # abort is best effort: some may not have it
        d.each_call("Start", start)

    def _finish(self, model: BankModel) -> dict[str, str]:
        """Every holder keeps its part; returns each one's digest of it (lineage records it)."""
        d = self.driver
        d.stage = "finish"
        shapes = [
            pb.SecureBoostTreeShape(tree=t, leaves=tree.leaves())
            for t, tree in enumerate(model.trees)
        ]
        finished = d.finish(pb.SecureBoostFinish(meta=d.meta(), trees=shapes))
        return {name: str(getattr(reply, "part_sha256", "")) for name, reply in finished.items()}

    # -- resume ----------------------------------------------------------------------------
    def _recoverable(self, exc: BaseException) -> bool:
        return (
            self.resume_wait_s > 0
            and isinstance(exc, PeerError)
            and exc.code in RESUMABLE_CODES
            and self.stats["resumes"] < MAX_RESUMES
        )

    def _compute_back(self, tree: int, cause: ComputeLostError) -> bool:
        """After the bank's compute cluster was lost mid-tree: wait (``resume_wait_s``) for it
        to answer again; True to grow ``tree`` again from the same state (earlier trees stand)."""
        engine = compute.current()
        if self.resume_wait_s <= 0 or engine is None or self.stats["resumes"] >= MAX_RESUMES:
            return False
        log.warning(
            "job %s: %s at %s; waiting up to %.0f s for it to resume at tree %d",
            self.job_id,
            cause,
            self.driver.stage,
            self.resume_wait_s,
            tree,
        )
        return engine.wait_ready(self.resume_wait_s)

    def _resume_holders(self, tree: int, cause: PeerError | ComputeLostError) -> None:
        """Wait for every holder to take the job back at ``tree`` (or give up with ``cause``)."""
        d = self.driver
        if isinstance(cause, PeerError):
            log.warning(
                "job %s: holder '%s' failed at %s (%s); waiting up to %.0f s to resume at tree %d",
                self.job_id,
                cause.peer,
                d.stage,
                cause.code,
                self.resume_wait_s,
                tree,
            )
        d.stage = f"tree {tree}: resume"
        start = pb.SecureBoostStart()
        start.CopyFrom(self._start)
        start.resume_from_tree = tree
        deadline = time.monotonic() + self.resume_wait_s
        pending = list(self.holders)
        while pending:
            name = pending[0]
            try:
                self.holders[name].call("Start", start)
                pending.pop(0)
            except PeerError as exc:
                if exc.code not in RESUMABLE_CODES or time.monotonic() >= deadline:
                    d.holder = name
                    raise
                time.sleep(0.5)
        self.stats["resumes"] += 1
        d.holder = None

    # -- 2. the trees ----------------------------------------------------------------------
    def _boost(
        self,
        bins: np.ndarray,
        n_bins: np.ndarray,
        labels: np.ndarray,
        engine: PaillierEngine,
        packer: GradHessPacker,
        terms: dict[str, Any],
        saved: Resumed | None,
    ) -> BankModel:
        p = self.params
        n = bins.shape[0]
        rng = np.random.default_rng(p.random_state)
        base = base_score(labels)
        margin = np.full(n, base)
        trees: list[Tree] = []
        if saved is not None:
            trees, margin, base = saved.trees, saved.margin, saved.base_score
            rng.bit_generator.state = saved.rng_state
        t = len(trees)
        while t < p.n_trees:
            state = rng.bit_generator.state  # a tree grown again draws the same subsample
            try:
                tree, leaf_rows = self._tree(t, bins, n_bins, labels, margin, rng, engine, packer)
            except PeerError as exc:
                if not self._recoverable(exc):
                    raise
                self._resume_holders(t, exc)
                rng.bit_generator.state = state
                continue
            except ComputeLostError as exc:  # the bank's own cluster lost its head
                if not self._compute_back(t, exc):
                    raise
                self._resume_holders(t, exc)
                rng.bit_generator.state = state
                continue
            for leaf, rows in leaf_rows.items():
                margin[rows] += tree.nodes[leaf].weight
            trees.append(tree)
            self.checkpoint.write(terms, trees, margin, rng, base)
            if self.on_tree is not None:
                self.on_tree(t)
            t += 1
        return BankModel(
            job_id=self.job_id,
            base_score=base,
            trees=trees,
            holders=list(self.holders),
            stats=dict(self.stats),
        )

    def _tree(
        self,
        t: int,
        bins: np.ndarray,
        n_bins: np.ndarray,
        labels: np.ndarray,
        margin: np.ndarray,
        rng: np.random.Generator,
        engine: PaillierEngine,
        packer: GradHessPacker,
    ) -> tuple[Tree, dict[int, np.ndarray]]:
        """One tree: gradients, the row subsample, encrypted gradients out, level-wise growth."""
        p = self.params
        n = bins.shape[0]
        self.driver.stage = f"tree {t}: gradients"
        g, h = grad_hess(margin, labels)
        g_q, h_q = quantize(g), quantize(h)
        sample = subsample_rows(rng, n, p.subsample)
        in_sample = np.zeros(n, dtype=bool)
        in_sample[sample] = True
        use_holders = bool(self.holders) and not (t == 0 and p.first_tree_bank_only)
        if use_holders:
            self._send_gradients(t, g[sample], h[sample], in_sample, engine, packer)
        return self._grow(t, bins, n_bins, g_q, h_q, in_sample, use_holders, engine)

    def _send_gradients(
        self,
        tree: int,
        g: np.ndarray,
        h: np.ndarray,
        in_sample: np.ndarray,
        engine: PaillierEngine,
        packer: GradHessPacker,
    ) -> None:
        """Encrypt once, stream to every holder at once (``broadcast_blob``), then Gradients.

        With ``overlap`` the ``Gradients`` call (``streamed``) goes first: each holder then sums
        its root histogram chunk by chunk while the bank still encrypts and sends, and the
        tree is ready at the holder when its ``PutBlob`` returns."""
        d = self.driver
        blob_id = f"gradients-t{tree}"
        request = pb.SecureBoostGradients(
            meta=d.meta(),
            tree=tree,
            blob_id=blob_id,
            samples=mask_to_bytes(in_sample),
            n_samples=int(in_sample.sum()),
            streamed=self.overlap,
        )
        if self.overlap:
            d.each_call("Gradients", request)
        d.broadcast_blob(
            blob_id,
            engine.encrypt_stream(packer.pack(g, h), chunk_size=self.chunk_size),
            total=int(in_sample.sum()) * engine.ciphertext_bytes,
            then=lambda name: (
                None if self.overlap else self.holders[name].call("Gradients", request)
            ),
        )
        pool = engine.obfuscator_pool()
        if pool is not None:  # how many encryptions were one multiply (a count, no values)
            self.stats["obfuscators_ahead"] = pool.served

    # -- 3. one tree, level by level -------------------------------------------------------
    def _grow(
        self,
        t: int,
        bins: np.ndarray,
        n_bins: np.ndarray,
        g_q: np.ndarray,
        h_q: np.ndarray,
        in_sample: np.ndarray,
        use_holders: bool,
        engine: PaillierEngine,
    ) -> tuple[Tree, dict[int, np.ndarray]]:
        p = self.params
        n = in_sample.size
        tree = Tree()
        leaf_rows: dict[int, np.ndarray] = {}
        root_ok = use_holders and int(in_sample.sum()) >= p.min_holder_node_samples
        level = [_Open(0, np.ones(n, dtype=bool), root_ok)]
        for depth in range(p.max_depth + 1):
            self.driver.stage = f"tree {t}, depth {depth}"
            splittable = depth < p.max_depth
            asked = [o for o in level if o.eligible and splittable]
            holder_cands = (
                self._holder_candidates(t, depth, asked, in_sample, engine) if asked else {}
            )
            following: list[_Open] = []
            for o in level:
                idx = np.flatnonzero(o.rows & in_sample)
                g_node = float(to_real(int(g_q[idx].sum())))
                h_node = float(to_real(int(h_q[idx].sum())))
                choice = None
                if splittable:
                    cands = {name: c[o.node] for name, c in holder_cands.items() if o.node in c}
                    own = (bins[idx], n_bins, g_q[idx], h_q[idx])
                    choice = choose_split(
                        p,
                        list(self.holders),
                        own,
                        g_node,
                        h_node,
                        idx.size,
                        cands,
                        own_categorical=self.categorical,
                    )
                if choice is None:
                    weight = leaf_weight(g_node, h_node, p)
                    tree.nodes[o.node] = TreeNode(o.node, True, weight, n_samples=idx.size)
                    leaf_rows[o.node] = o.rows
                    continue
                following += self._split(t, o, choice, bins, in_sample, idx.size, tree)
            level = following
        return tree, leaf_rows

    def _split(
        self,
        t: int,
        o: _Open,
        choice: Choice,
        bins: np.ndarray,
        in_sample: np.ndarray,
        n_node: int,
        tree: Tree,
    ) -> list[_Open]:
        """Apply the chosen split (here, or at its holder); the node's two children."""
        owner, gain, feature, threshold, tied_ids, tied_counts, category_ids = choice
        if owner == BANK:
            left = o.rows & goes_left(bins[:, feature], threshold)
        else:
            left = self._apply_holder_split(
                owner, t, o, tied_ids, tied_counts, in_sample, category_ids=category_ids
            )
        right = o.rows & ~left
        n_left = int((left & in_sample).sum())
        tree.nodes[o.node] = TreeNode(
            o.node,
            False,
            owner=owner,
            feature=feature,
            threshold=threshold,
            gain=gain,
            n_samples=n_node,
        )
        ok = children_eligible(
            o.eligible, n_left, n_node - n_left, self.params.min_holder_node_samples
        )
        return [_Open(left_child(o.node), left, ok), _Open(right_child(o.node), right, ok)]

    def _holder_candidates(
        self,
        t: int,
        depth: int,
        nodes: list[_Open],
        in_sample: np.ndarray,
        engine: PaillierEngine,
    ) -> dict[str, dict[int, HolderCandidates]]:
        """One ``Histograms`` round per holder; decrypt and unpack every node's candidates."""
        d = self.driver
        request = pb.SecureBoostHistogramRequest(meta=d.meta(), tree=t, depth=depth)
        sizes = {o.node: int((o.rows & in_sample).sum()) for o in nodes}
        for o in nodes:
            sibling = sibling_of(o.node)
            # Of two siblings the smaller is accumulated directly (ties: the left one).
            by_sub = o.node != 0 and (
                sizes[o.node] > sizes[sibling]
                or (sizes[o.node] == sizes[sibling] and o.node % 2 == 0)
            )
            request.nodes.add(
                node=o.node, samples=mask_to_bytes(o.rows & in_sample), by_subtraction=by_sub
            )
        cp = self._gh.ciphertext_packer()

        def one(name: str) -> tuple[list[_Entry], list[Any]]:
            # Each holder's sums are checked and decrypted as soon as its reply is here,
            # while slower holders still compute (a failure is blamed on this holder).
            reply: pb.SecureBoostHistogramReply = self.holders[name].call("Histograms", request)
            got = [h.node for h in reply.nodes]
            if sorted(got) != sorted(sizes):
                raise ProtocolError(f"holder '{name}' answered nodes {got}, asked {sorted(sizes)}")
            layout: list[_Entry] = []
            cts_all: list[Any] = []
            for hist in reply.nodes:
                ids = np.array(hist.split_ids, dtype=np.uint64)
                groups = [np.array(g.category_ids, dtype=np.uint64) for g in hist.groups]
                if any(g.size < 2 for g in groups):
                    raise ProtocolError(
                        f"holder '{name}' node {hist.node}: a category group of < 2"
                    )
                n_sums = ids.size + sum(g.size for g in groups)
                cts = ciphertexts_from_bytes(hist.ciphertexts, engine.params)
                if len(cts) != cp.n_packed(n_sums):
                    raise ProtocolError(
                        f"holder '{name}' node {hist.node}: {len(cts)} ciphertexts for "
                        f"{n_sums} sums"
                    )
                layout.append((name, hist.node, ids, groups, len(cts)))
                cts_all.extend(cts)
            return layout, engine.decrypt(cts_all)

        replies = d.each(one)
        d.stage = f"tree {t}, depth {depth}: unpacking"
        layout: list[_Entry] = []
        plains: list[Any] = []
        for name in self.holders:  # holder order: the same candidates whoever answered first
            layout += replies[name][0]
            plains += replies[name][1]
        self.stats["decryptions"] += len(plains)
        return self._unpack(layout, plains, sizes)

    def _unpack(
        self,
        layout: list[tuple[str, int, np.ndarray, list[np.ndarray], int]],
        plains: list[Any],
        sizes: dict[int, int],
    ) -> dict[str, dict[int, HolderCandidates]]:
        """Decrypted packed sums → each holder's (ΣG, ΣH, count) per candidate, per node;
        categorical groups → their ordered prefixes (``with_category_prefixes``)."""
        gh = self._gh
        cp = gh.ciphertext_packer()
        out: dict[str, dict[int, HolderCandidates]] = {name: {} for name in self.holders}
        pos = 0
        for name, node, ids, groups, n_cts in layout:
            with self.driver.blame(name):
                n_sums = ids.size + sum(g.size for g in groups)
                slots = cp.unpack(plains[pos : pos + n_cts], n_sums) if n_sums else []
                pos += n_cts
                g_all, h_all, n_all = gh.unpack(slots)
                if n_sums and n_all.max() > sizes[node]:
                    raise ProtocolError(f"holder '{name}' node {node}: a count exceeds the node")
                k = ids.size
                found = HolderCandidates(ids, g_all[:k], h_all[:k], n_all[:k])
                per_group = []
                for members in groups:
                    end = k + members.size
                    if int(n_all[k:end].sum()) != sizes[node]:
                        raise ProtocolError(
                            f"holder '{name}' node {node}: a category group does not cover "
                            "the node's rows"
                        )
                    per_group.append((members, g_all[k:end], h_all[k:end], n_all[k:end]))
                    k = end
                if per_group:
                    found = with_category_prefixes(found, per_group, self.params.reg_lambda)
                out[name][node] = found
                self.stats["holder_candidates"] += int(n_sums)
        return out

    def _apply_holder_split(
        self,
        holder: str,
        t: int,
        o: _Open,
        split_ids: list[int],
        counts: list[int],
        in_sample: np.ndarray,
        *,
        category_ids: Sequence[int] = (),
    ) -> np.ndarray:
        d = self.driver
        d.stage = f"tree {t}, node {o.node}: apply split"
        request = pb.SecureBoostApplySplit(
            meta=d.meta(),
            tree=t,
            node=o.node,
            split_ids=split_ids,
            rows=mask_to_bytes(o.rows),
            category_ids=list(category_ids),
        )
        reply: pb.SecureBoostPartition = d.call(holder, "ApplySplit", request)
        with d.blame(holder):
            left = mask_from_bytes(reply.left, o.rows.size, f"holder '{holder}' left partition")
            if (left & ~o.rows).any():
                raise ProtocolError(f"holder '{holder}' sent left rows outside node {o.node}")
            if int((left & in_sample).sum()) not in counts:
                raise ProtocolError(
                    f"holder '{holder}' node {o.node}: the left partition does not match the "
                    "count of the chosen candidate"
                )
        return left
