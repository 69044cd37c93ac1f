"""The bank's half of vertical SecureBoost (active party: labels and the Paillier private key).

Reads top to bottom as the bank runs a job: ``SecureBoostBank.train`` (keys and ``Start``, then
per tree the encrypted gradients and level-wise growth, then ``Finish``), then one-round scoring
(``predict_margin``). The holders' half is ``passive.py``; the algorithm (and its plaintext
twin) is ``reference.py``; the protocol and who learns what are in docs/secureboost.md.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from federation.crypto import (
    CryptoError,
    GradHessPacker,
    PaillierEngine,
    ciphertexts_from_bytes,
    generate_keypair,
    make_public_params,
    public_params_to_bytes,
)
from federation.errors import PeerError, XinyidaiError
from federation.files import write_atomic
from federation.transport.base import PeerBase, new_meta
from models.secureboost.reference import (
    G_BOUND,
    H_BOUND,
    MAX_ROWS,
    PRECISION_BITS,
    BoostParams,
    MaskError,
    SecureBoostError,
    Tree,
    TreeNode,
    base_score,
    check_labels,
    children_eligible,
    grad_hess,
    leaf_reachability,
    leaf_weight,
    left_child,
    margins_from_reach,
    mask_from_bytes,
    mask_to_bytes,
    party_candidates,
    quantize,
    right_child,
    sibling_of,
    split_gains,
    subsample_rows,
    to_real,
)
from protos import secureboost_pb2 as pb

log = logging.getLogger(__name__)
T = TypeVar("T")

RESUMABLE_CODES = frozenset(
    {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "ABORTED", "FAILED_PRECONDITION"}
)
"""Peer failures that a restarted holder can recover from (it lost, or never got, the call)."""
MAX_RESUMES = 5
"""Resumes per job before the bank gives up: a holder that keeps failing is not restarting."""

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
BANK = "bank"
"""The owner name of the bank's own splits (so no holder may be called that)."""


class ProtocolError(SecureBoostError):
    """A holder answered something inconsistent with the protocol (shape, counts, partition)."""


class FederatedTrainingError(SecureBoostError):
    """Training stopped; every holder was asked to drop the job. Names the holder and stage."""

    def __init__(self, message: str, *, holder: str | None, stage: str):
        self.holder = holder
        self.stage = stage
        super().__init__(message)


@dataclass
class BankModel:
    """The bank's part of a trained model: tree shapes, its own splits, all leaf weights.

    Holder splits appear with ``owner`` = the holder and ``feature`` = −1: their meaning stays
    at the holder. ``job_id`` names the model at the holders (``Predict``).
    """

    job_id: str
    base_score: float
    trees: list[Tree]
    holders: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    part_digests: dict[str, str] = field(default_factory=dict)  # holder → sha256 of its part

    def split_owners(self) -> set[str]:
        return {n.owner for t in self.trees for n in t.nodes.values() if not n.is_leaf}


@dataclass
class _Open:
    """An open node: all training rows reaching it and whether holders may evaluate it."""

    node: int
    rows: np.ndarray
    eligible: bool


@dataclass
class _HolderCandidates:
    split_ids: np.ndarray  # uint64, the holder's order
    g_left: np.ndarray
    h_left: np.ndarray
    n_left: np.ndarray


class SecureBoostBank:
    """Drives one training job against ``holders`` (any ``PeerBase``: in-process or gRPC).

    Protocol, from the bank's side:

    1. **Keys and start.** Generate a Paillier key pair (the private key never leaves this
       object); send every holder the public parameters, the ``GradHessPacker`` layout (one
       fixed-point scale, 2^40, for the whole job) and the hyperparameters it needs.
    2. **Per tree.** g, h of logloss; the row subsample; unless this is the first tree and
       ``first_tree_bank_only``, pack (g, h, 1) of each sampled row into one plaintext,
       DJN-encrypt and stream to every holder (``put_blob`` fed by ``encrypt_stream``: the
       first holder receives while the bank still encrypts), then ``Gradients``.
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

    Holders are called concurrently (one thread each): the gradient stream is teed to all of
    them as it is encrypted, and each level's ``Histograms`` go out at once.

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
    ):
        self.params = params
        self.checkpoint_dir = checkpoint_dir
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
        if not _JOB_ID.match(self.job_id):
            raise SecureBoostError(f"job_id {self.job_id!r} must match {_JOB_ID.pattern}")
        self.workers = workers
        self.chunk_size = chunk_size
        self._stage = "start"
        self._holder: str | None = None
        self.stats: dict[str, Any] = {"holder_candidates": 0, "decryptions": 0, "resumes": 0}
        self._pool: ThreadPoolExecutor | None = None

    def _meta(self) -> Any:
        return new_meta(self.purpose, job_id=self.job_id)

    def _call(self, holder: str, method: str, request: Any) -> Any:
        self._holder = holder
        reply = self.holders[holder].call(method, request)
        self._holder = None
        return reply

    def _each(self, fn: Callable[[str], T]) -> dict[str, T]:
        """``fn(holder)`` for every holder at once; the first failure (in holder order) names
        its holder and is raised after all calls have returned."""
        names = list(self.holders)
        if self._pool is None or len(names) == 1:
            futures = None
        else:
            futures = {name: self._pool.submit(fn, name) for name in names}
        results: dict[str, T] = {}
        failure: tuple[str, BaseException] | None = None
        for name in names:
            try:
                results[name] = fn(name) if futures is None else futures[name].result()
            except Exception as exc:
                if failure is None:
                    failure = (name, exc)
                if futures is None:
                    break
        if failure is not None:
            self._holder = failure[0]
            raise failure[1]
        return results

    # -- the job ---------------------------------------------------------------------------
    def train(self, bank_bins: np.ndarray, n_bins: np.ndarray, y: Any) -> BankModel:
        """Run the whole job; returns the bank's model part or raises with every holder reset."""
        bins = np.asarray(bank_bins)
        n = bins.shape[0]
        if n > MAX_ROWS:
            raise SecureBoostError(f"{n} rows: at most {MAX_ROWS} are supported")
        labels = check_labels(y, n)
        n_bins = np.asarray(n_bins, dtype=np.int64)
        public, private = generate_keypair(self.key_bits)
        params = make_public_params(public)
        packer = GradHessPacker(
            n_samples_max=n,
            key_bits=self.key_bits,
            precision_bits=PRECISION_BITS,
            g_bound=G_BOUND,
            h_bound=H_BOUND,
        )
        self._gh = packer
        terms = self._terms(bins, n_bins, labels)
        saved = self._read_checkpoint(terms)
        started: list[str] = []
        self._pool = ThreadPoolExecutor(max(1, len(self.holders)), thread_name_prefix="sb-peer")
        with PaillierEngine(params, private_key=private, workers=self.workers) as engine:
            engine.warm()  # workers get ready while the holders start and tree 0 grows
            try:
                start = pb.SecureBoostStart(
                    meta=self._meta(),
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
                start.resume_from_tree = len(saved["trees"]) if saved else 0
                started.extend(self.holders)  # abort is best effort: some may not have it
                self._each(lambda name: self.holders[name].call("Start", start))
                model = self._boost(bins, n_bins, labels, engine, packer, terms, saved)
                self._stage = "finish"
                shapes = [
                    pb.SecureBoostTreeShape(tree=t, leaves=tree.leaves())
                    for t, tree in enumerate(model.trees)
                ]
                finish = pb.SecureBoostFinish(meta=self._meta(), trees=shapes)
                finished = self._each(lambda name: self.holders[name].call("Finish", finish))
                # each holder's digest of the part it keeps (lineage: the registry records it)
                model.part_digests = {
                    name: str(getattr(reply, "part_sha256", "")) for name, reply in finished.items()
                }
                started.clear()
                self._drop_checkpoint()
            except Exception as exc:
                self._abort(started)
                self._drop_checkpoint()
                if isinstance(exc, PeerError | CryptoError | ProtocolError | MaskError):
                    who = f"holder '{self._holder}'" if self._holder else "a holder"
                    raise FederatedTrainingError(
                        f"SecureBoost job {self.job_id} failed at {self._stage} ({who}): {exc}. "
                        "Every holder was asked to drop the job; no model was produced.",
                        holder=self._holder,
                        stage=self._stage,
                    ) from exc
                raise
            finally:
                self._pool.shutdown(wait=True)
                self._pool = None
        return model

    # -- checkpoints and resume --------------------------------------------------------------
    def _terms(self, bins: np.ndarray, n_bins: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
        """What a resumed job must share with the original: data digests and parameters."""
        rows = b"" if self.alignment_rows is None else np.packbits(self.alignment_rows).tobytes()
        return {
            "params": asdict(self.params),
            "holders": list(self.holders),
            "alignment_id": self.alignment_id,
            "rows_sha256": hashlib.sha256(rows).hexdigest(),
            "bins_sha256": hashlib.sha256(
                np.ascontiguousarray(bins, dtype=np.int32).tobytes()
                + np.asarray(n_bins, dtype=np.int64).tobytes()
            ).hexdigest(),
            "labels_sha256": hashlib.sha256(labels.astype("<f8").tobytes()).hexdigest(),
        }

    def _checkpoint_path(self) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        return Path(self.checkpoint_dir) / f"{self.job_id}.checkpoint.json"

    def _read_checkpoint(self, terms: dict[str, Any]) -> dict[str, Any] | None:
        path = self._checkpoint_path()
        if path is None or not path.exists():
            return None
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SecureBoostError(f"{path}: checkpoint cannot be read: {exc}") from None
        if data.get("terms") != json.loads(json.dumps(terms)):
            raise SecureBoostError(
                f"{path}: this checkpoint of job '{self.job_id}' was made with other data or "
                "parameters; remove it or train under a new job id"
            )
        log.info("job %s resumes after %d trees", self.job_id, len(data["trees"]))
        return data

    def _write_checkpoint(
        self,
        terms: dict[str, Any],
        trees: list[Tree],
        margin: np.ndarray,
        rng: np.random.Generator,
        base: float,
    ) -> None:
        path = self._checkpoint_path()
        if path is None:
            return
        data = {
            "format": "xinyidai.secureboost.bank-checkpoint/1",
            "job_id": self.job_id,
            "terms": terms,
            "base_score": base,
            "trees": [tree.to_dict() for tree in trees],
            "margin": base64.b64encode(margin.astype("<f8").tobytes()).decode("ascii"),
            "rng": rng.bit_generator.state,
        }
        write_atomic(path, json.dumps(data).encode("utf-8"))

    def _drop_checkpoint(self) -> None:
        path = self._checkpoint_path()
        if path is not None:
            path.unlink(missing_ok=True)

    def _recoverable(self, exc: BaseException) -> bool:
        return (
            self.resume_wait_s > 0
            and isinstance(exc, PeerError)
            and exc.code in RESUMABLE_CODES
            and self.stats["resumes"] < MAX_RESUMES
        )

    def _resume_holders(self, tree: int, cause: PeerError) -> None:
        """Wait for every holder to take the job back at ``tree`` (or give up with ``cause``)."""
        log.warning(
            "job %s: holder '%s' failed at %s (%s); waiting up to %.0f s to resume at tree %d",
            self.job_id,
            cause.peer,
            self._stage,
            cause.code,
            self.resume_wait_s,
            tree,
        )
        self._stage = f"tree {tree}: resume"
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
                    self._holder = name
                    raise
                time.sleep(0.5)
        self.stats["resumes"] += 1
        self._holder = None

    def _abort(self, started: list[str]) -> None:
        for name in started:
            try:
                self.holders[name].call(
                    "Finish", pb.SecureBoostFinish(meta=self._meta(), abort=True)
                )
            except XinyidaiError as exc:  # best effort: the holder may be the one that is down
                log.warning("could not abort job %s at %s: %s", self.job_id, name, exc)

    def _boost(
        self,
        bins: np.ndarray,
        n_bins: np.ndarray,
        labels: np.ndarray,
        engine: PaillierEngine,
        packer: GradHessPacker,
        terms: dict[str, Any],
        saved: dict[str, Any] | None,
    ) -> BankModel:
        p = self.params
        n = bins.shape[0]
        rng = np.random.default_rng(p.random_state)
        base = base_score(labels)
        margin = np.full(n, base)
        trees: list[Tree] = []
        if saved is not None:
            trees = [Tree.from_dict(t) for t in saved["trees"]]
            margin = np.frombuffer(base64.b64decode(saved["margin"]), dtype="<f8").copy()
            rng.bit_generator.state = saved["rng"]
            base = float(saved["base_score"])
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
            for leaf, rows in leaf_rows.items():
                margin[rows] += tree.nodes[leaf].weight
            trees.append(tree)
            self._write_checkpoint(terms, trees, margin, rng, base)
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
        self._stage = f"tree {t}: gradients"
        g, h = grad_hess(margin, labels)
        g_q, h_q = quantize(g), quantize(h)
        sample = subsample_rows(rng, n, p.subsample)
        in_sample = np.zeros(n, dtype=bool)
        in_sample[sample] = True
        use_holders = bool(self.holders) and not (t == 0 and p.first_tree_bank_only)
        if use_holders:
            self._send_gradients(t, g[sample], h[sample], in_sample, engine, packer)
        return self._grow(t, bins, n_bins, g_q, h_q, in_sample, use_holders, engine)

    # -- 2. encrypted gradients ------------------------------------------------------------
    def _send_gradients(
        self,
        tree: int,
        g: np.ndarray,
        h: np.ndarray,
        in_sample: np.ndarray,
        engine: PaillierEngine,
        packer: GradHessPacker,
    ) -> None:
        """Encrypt once, stream to every holder at once: each chunk is teed to per-holder queues
        as it leaves the engine, so holders receive while the bank still encrypts."""
        blob_id = f"gradients-t{tree}"
        total = int(in_sample.sum()) * engine.ciphertext_bytes
        request = pb.SecureBoostGradients(
            meta=self._meta(),
            tree=tree,
            blob_id=blob_id,
            samples=mask_to_bytes(in_sample),
            n_samples=int(in_sample.sum()),
        )
        end = object()
        queues: dict[str, queue.SimpleQueue[Any]] = {n: queue.SimpleQueue() for n in self.holders}
        failed = threading.Event()

        def pieces(name: str) -> Iterator[bytes]:
            q = queues[name]
            while (item := q.get()) is not end:
                if failed.is_set():
                    raise ProtocolError("the bank stopped encrypting (see its error)")
                yield item

        def send(name: str) -> Any:
            self.holders[name].put_blob(blob_id, pieces(name), meta=self._meta(), total_size=total)
            return self.holders[name].call("Gradients", request)

        pool = self._pool
        if pool is None:  # only train() calls this, with its pool open
            raise SecureBoostError("gradients can only be sent while a job is training")
        futures = {name: pool.submit(send, name) for name in self.holders}
        try:
            for chunk in engine.encrypt_stream(packer.pack(g, h), chunk_size=self.chunk_size):
                for q in queues.values():
                    q.put(chunk)
        except BaseException:
            failed.set()
            raise
        finally:
            for q in queues.values():
                q.put(end)
            for f in futures.values():
                f.exception()  # let every stream end before this returns or raises
        for name, f in futures.items():
            error = f.exception()
            if error is not None:
                self._holder = name
                raise error

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
            self._stage = f"tree {t}, depth {depth}"
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
                    choice = self._choose(
                        bins[idx],
                        n_bins,
                        g_q[idx],
                        h_q[idx],
                        g_node,
                        h_node,
                        idx.size,
                        {name: c[o.node] for name, c in holder_cands.items() if o.node in c},
                    )
                if choice is None:
                    weight = leaf_weight(g_node, h_node, p)
                    tree.nodes[o.node] = TreeNode(o.node, True, weight, n_samples=idx.size)
                    leaf_rows[o.node] = o.rows
                    continue
                owner, gain, feature, threshold, tied_ids, tied_counts = choice
                if owner == BANK:
                    left = o.rows & (bins[:, feature] <= threshold)
                else:
                    left = self._apply_holder_split(owner, t, o, tied_ids, tied_counts, in_sample)
                right = o.rows & ~left
                n_left = int((left & in_sample).sum())
                tree.nodes[o.node] = TreeNode(
                    o.node,
                    False,
                    owner=owner,
                    feature=feature,
                    threshold=threshold,
                    gain=gain,
                    n_samples=idx.size,
                )
                ok = children_eligible(
                    o.eligible, n_left, idx.size - n_left, p.min_holder_node_samples
                )
                following += [
                    _Open(left_child(o.node), left, ok),
                    _Open(right_child(o.node), right, ok),
                ]
            level = following
        return tree, leaf_rows

    def _holder_candidates(
        self,
        t: int,
        depth: int,
        nodes: list[_Open],
        in_sample: np.ndarray,
        engine: PaillierEngine,
    ) -> dict[str, dict[int, _HolderCandidates]]:
        """One ``Histograms`` round per holder; decrypt and unpack every node's candidates."""
        request = pb.SecureBoostHistogramRequest(meta=self._meta(), tree=t, depth=depth)
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
        replies = self._each(lambda name: self.holders[name].call("Histograms", request))
        self._stage = f"tree {t}, depth {depth}: decrypting"
        gh = self._gh
        cp = gh.ciphertext_packer()
        layout: list[tuple[str, int, np.ndarray, int]] = []
        all_cts: list[Any] = []
        for name, reply in replies.items():
            self._holder = name
            got = [h.node for h in reply.nodes]
            if sorted(got) != sorted(sizes):
                raise ProtocolError(f"holder '{name}' answered nodes {got}, asked {sorted(sizes)}")
            for hist in reply.nodes:
                ids = np.array(hist.split_ids, dtype=np.uint64)
                cts = ciphertexts_from_bytes(hist.ciphertexts, engine.params)
                if len(cts) != cp.n_packed(ids.size):
                    raise ProtocolError(
                        f"holder '{name}' node {hist.node}: {len(cts)} ciphertexts for "
                        f"{ids.size} candidates"
                    )
                layout.append((name, hist.node, ids, len(cts)))
                all_cts.extend(cts)
        self._holder = None
        plains = engine.decrypt(all_cts)
        self.stats["decryptions"] += len(plains)
        out: dict[str, dict[int, _HolderCandidates]] = {name: {} for name in self.holders}
        pos = 0
        for name, node, ids, n_cts in layout:
            self._holder = name
            slots = cp.unpack(plains[pos : pos + n_cts], ids.size) if ids.size else []
            pos += n_cts
            g_left, h_left, n_left = gh.unpack(slots)
            if ids.size and n_left.max() > sizes[node]:
                raise ProtocolError(f"holder '{name}' node {node}: a count exceeds the node")
            out[name][node] = _HolderCandidates(ids, g_left, h_left, n_left)
            self.stats["holder_candidates"] += int(ids.size)
        self._holder = None
        return out

    def _choose(
        self,
        bins: np.ndarray,
        n_bins: np.ndarray,
        g_q: np.ndarray,
        h_q: np.ndarray,
        g_node: float,
        h_node: float,
        n_node: int,
        holder_cands: Mapping[str, _HolderCandidates],
    ) -> tuple[str, float, int, int, list[int], list[int]] | None:
        """Best split of a node over the bank's and the holders' candidates, or None (leaf).

        Returns (owner, gain, feature, threshold, tied ids, their left counts). Tie-break: the
        bank, then the holders in mapping order; within the bank its smallest (feature,
        threshold); within a holder all tied ids go to the holder, which takes its smallest.
        """
        p = self.params
        own = party_candidates(bins, n_bins, g_q, h_q)
        own_gains = split_gains(
            to_real(own.g_left), to_real(own.h_left), own.n_left, g_node, h_node, n_node, p
        )
        gains = {
            name: split_gains(c.g_left, c.h_left, c.n_left, g_node, h_node, n_node, p)
            for name, c in holder_cands.items()
        }
        best = max(
            [own_gains.max(initial=-np.inf), *(v.max(initial=-np.inf) for v in gains.values())]
        )
        if not best > 0:
            return None
        if own_gains.size and own_gains.max() == best:
            j = int(np.argmax(own_gains))
            return BANK, float(best), int(own.feature[j]), int(own.threshold[j]), [], []
        for name in self.holders:
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

    def _apply_holder_split(
        self,
        holder: str,
        t: int,
        o: _Open,
        split_ids: list[int],
        counts: list[int],
        in_sample: np.ndarray,
    ) -> np.ndarray:
        self._stage = f"tree {t}, node {o.node}: apply split"
        reply = self._call(
            holder,
            "ApplySplit",
            pb.SecureBoostApplySplit(
                meta=self._meta(),
                tree=t,
                node=o.node,
                split_ids=split_ids,
                rows=mask_to_bytes(o.rows),
            ),
        )
        self._holder = holder
        left = mask_from_bytes(reply.left, o.rows.size, f"holder '{holder}' left partition")
        if (left & ~o.rows).any():
            raise ProtocolError(f"holder '{holder}' sent left rows outside node {o.node}")
        if int((left & in_sample).sum()) not in counts:
            raise ProtocolError(
                f"holder '{holder}' node {o.node}: the left partition does not match the "
                "count of the chosen candidate"
            )
        self._holder = None
        return left


# --------------------------------------------------------------------------------------------
# one-round inference


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
            i: bank_bins[:, node.feature] <= node.threshold
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
    for name in owners:
        reply = holders[name].call("Predict", request)
        if len(reply.trees) != len(model.trees):
            raise ProtocolError(
                f"holder '{name}' answered {len(reply.trees)} trees, model has {len(model.trees)}"
            )
        for t, item in enumerate(reply.trees):
            if not item.reach:
                continue
            n_leaves = len(model.trees[t].leaves())
            mask = mask_from_bytes(item.reach, n * n_leaves, f"holder '{name}' tree {t} reach")
            reaches[t] &= mask.reshape(n, n_leaves)
    return margins_from_reach(model.base_score, model.trees, reaches, f"model {model.job_id}")


__all__ = [
    "BANK",
    "BankModel",
    "FederatedTrainingError",
    "ProtocolError",
    "SecureBoostBank",
    "predict_margin",
]
