"""The data holder's half of vertical SecureBoost (passive party: tax bureau, utility).

Reads top to bottom as the holder serves a job: ``Start`` → (``PutBlob`` + ``Gradients`` →
``Histograms`` / ``ApplySplit`` per level) per tree → ``Finish``; later ``Predict``. The bank's
half is ``active.py``; the algorithm (and its plaintext twin) is ``reference.py``; what the
holder keeps is ``holder_state.py``; the protocol and the who-learns-what table are in
docs/secureboost.md. Policy, rows, jobs and model files come from ``models.base.HolderModule``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from federation.blobs import BlobEndpoints, BlobStore
from federation.crypto import (
    CryptoError,
    GradHessPacker,
    PaillierEngine,
    PublicParams,
    ciphertexts_from_bytes,
    public_params_from_bytes,
)
from federation.crypto.histogram import HistogramInputError, StreamingBinSums
from federation.errors import Refused
from federation.files import write_atomic
from federation.transport.base import CallInfo, invalid
from federation.transport.inproc import InProcessPeer
from models.base import FeaturesFor, HolderModule, JobKey, failed
from models.limits import HolderLimits
from models.local import HolderArgs
from models.local import local_holders as _local_holders
from models.rows import mask_to_bytes
from models.secureboost.holder_histograms import candidates, level_histograms
from models.secureboost.holder_state import (
    HolderModel,
    Revealed,
    SecureBoostJob,
    Splits,
    TreeState,
    checkpoint_from_dict,
    checkpoint_to_dict,
    start_terms,
)
from models.secureboost.reference import MAX_DEPTH, goes_left
from models.secureboost.tree import (
    ReachProgram,
    depth_of,
    is_descendant,
    leaf_reachability,
    left_child,
    parent_of,
    sibling_of,
)
from protos import common_pb2
from protos import secureboost_pb2 as pb

__all__ = ["SERVICE_NAME", "SecureBoostHolderServicer", "local_holders"]

log = logging.getLogger(__name__)

SERVICE_NAME = "SecureBoostHolder"


@dataclass
class _Stream:
    """A tree whose gradients were announced (``Gradients.streamed``) before their blob: the
    root histogram is summed as the blob's chunks arrive (``StreamingBinSums``)."""

    tree: int
    blob_id: str
    sample: np.ndarray  # row mask of the subsample
    rows: np.ndarray  # its rows, ascending: ciphertext i belongs to rows[i]
    sums: StreamingBinSums


class SecureBoostHolderServicer(HolderModule[SecureBoostJob, HolderModel], BlobEndpoints):
    """``xinyidai.v1.SecureBoostHolder`` for one data holder.

    A holder keeps its feature values, its bin edges and the meaning of every split it owns.
    All state is scoped by (calling bank, job id). Protocol, from the holder's side:

    1. ``Start``: verify the public parameters (``hs`` recomputed from the seed), check the row
       count, the packing layout and that the job's ``min_node_samples`` is at least this
       holder's policy; bin the features locally (``QuantileBinner``; edges stay here).
    2. ``PutBlob`` + ``Gradients`` (per tree): take the streamed ciphertexts, one per row of
       the tree's subsample, in row order. With ``Gradients.streamed`` (overlap, issue 14) the
       call comes first and names the blob; ``PutBlob`` then sums the root histogram chunk by
       chunk as the ciphertexts arrive (exactly the announced count, or refused) — the same
       ciphertexts and the same sums, so the holder learns nothing it did not before.
    3. ``Histograms`` (per level): the root alone or sibling pairs that partition a parent this
       holder evaluated; any node under ``min_node_samples`` rows is refused (policy). Per
       node: encrypted bin sums for the directly computed (smaller) sibling, parent − sibling
       for the other; prefix sums per feature (the candidates' left sides), keeping thresholds
       whose bin is non-empty in the node and that leave rows on the right (counted in
       plaintext: the holder knows node membership); a fresh random permutation, an opaque
       random 64-bit id per candidate (the id → (feature, threshold) map stays here), several
       sums packed per ciphertext, **every returned ciphertext re-randomised** (textbook
       obfuscation: unlinkable even for the key holder, see docs/crypto.md).
    4. ``ApplySplit``: the bank chose one of this holder's ids (several only on an exact tie:
       the holder takes its smallest (feature, threshold), the reference's tie-break); keep
       (feature, threshold) for (tree, node) and return which of the node's rows go left.
    5. ``Finish``: keep the model part (bins, splits, tree shapes) or, with ``abort``, drop it.
    6. ``Predict``: for the requested rows and every tree, the bitmask of leaves reachable
       under this holder's own splits; the bank ANDs it with the other parties' masks. Behind
       the holder gate (``HolderModule.gate``): the job's one evaluation, or every row's
       enterprise authorised for the categories this part's splits read.

    Sees: the public key and the hyperparameters above, the row subsample, the sample sets of
    the nodes it evaluates, which of its candidates won where, the tree shapes, the rows
    scored. Never sees: labels, gradients (only ciphertexts), gains, leaf weights, the bank's
    or another holder's features, edges or splits.

    ``features``/``feature_names`` (one fixed alignment) or ``features_for`` (per job: each job
    names its alignment in ``Start.alignment_id`` and the rows of it in ``Start.rows``; see
    ``models.base.FeaturesFor``); feature names stay here (errors sent to the bank name
    features by index, the name goes to this node's log). ``models_dir``: where finished parts
    are written (``<models_dir>/<bank>/<job>.json``, mode 0600: they hold bin edges) and read
    back after a restart; None keeps them in memory only. ``min_node_samples`` is this holder's
    policy: it refuses jobs asking less and histograms of smaller nodes. ``workers`` is the
    Paillier engine's process count (1: in-process).
    """

    service = pb.DESCRIPTOR.services_by_name[SERVICE_NAME]
    protocol = "SecureBoost"

    def __init__(
        self,
        *,
        node_id: str,
        features: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
        features_for: FeaturesFor | None = None,
        banks: Iterable[str],
        blobs: BlobStore,
        min_node_samples: int = 20,
        workers: int | None = 1,
        chunk_bytes: int = 1 << 20,
        models_dir: Path | None = None,
        limits: HolderLimits | None = None,
        obfuscator_pool: int = 0,
        obfuscator_batch: int = 16,
    ):
        super().__init__(
            node_id=node_id,
            banks=banks,
            models_dir=models_dir,
            features=features,
            feature_names=feature_names,
            features_for=features_for,
            limits=limits,
        )
        self.blobs = blobs
        # Textbook obfuscators for re-randomising what this holder returns, made per job from
        # Start on at low priority while it waits for the bank (0: made when needed).
        self.obfuscator_pool = int(obfuscator_pool)
        self.obfuscator_batch = int(obfuscator_batch)
        self.chunk_bytes = chunk_bytes
        self.min_node_samples = int(min_node_samples)
        self.workers = workers
        # Scoring: (bank, job) -> (the table it was computed on, reach of every table row).
        self._scoring: dict[JobKey, tuple[np.ndarray, np.ndarray]] = {}
        self._digests: dict[JobKey, tuple[int, int, str]] = {}
        # Overlap (issue 14): per job, the announced tree whose blob is awaited or streaming,
        # and the root histogram summed from it ((tree, sums), used once by Histograms).
        self._streams: dict[JobKey, _Stream] = {}
        self._roots: dict[JobKey, tuple[int, list[list[Any]]]] = {}
        self._stream_lock = threading.Lock()

    # -- HolderModule hooks ----------------------------------------------------------------
    def _decode_model(self, data: dict[str, Any]) -> HolderModel:
        return HolderModel.from_dict(data)

    def _check_loaded(self, model: HolderModel) -> None:
        self._check_width(model.binner.n_features_in_, "the model")

    def _forget(self, key: JobKey, *, finished: bool) -> None:
        with self._stream_lock:
            stream = self._streams.pop(key, None)
            self._roots.pop(key, None)
        if stream is not None:
            stream.sums.cancel()
        self.blobs.drop_job(*key)
        path = self._checkpoint_path(*key)
        if finished and path is not None:
            path.unlink(missing_ok=True)

    def _sweep_files(self, checkpoint_days: float) -> int:
        old = 0
        if self.models_dir is not None and self.models_dir.is_dir():
            cutoff = time.time() - checkpoint_days * 86_400
            for path in self.models_dir.glob("*/*.checkpoint.json"):
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    old += 1
        return old

    # -- checkpoints -----------------------------------------------------------------------
    def _checkpoint_path(self, bank: str, job_id: str) -> Path | None:
        path = self._model_path(bank, job_id)
        return None if path is None else path.with_name(f"{job_id}.checkpoint.json")

    def _checkpoint(self, call: CallInfo, job: SecureBoostJob) -> None:
        """The job's terms and splits so far (0600: bin edges are data); at most a tree is lost."""
        path = self._checkpoint_path(*self.key(call))
        if path is not None:
            write_atomic(path, json.dumps(checkpoint_to_dict(job)).encode("utf-8"))

    def _read_checkpoint(
        self, bank: str, job_id: str
    ) -> tuple[dict[str, Any], Splits, Revealed] | None:
        path = self._checkpoint_path(bank, job_id)
        if path is None or not path.exists():
            return None
        try:
            return checkpoint_from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise failed(
                f"{self.node_id}: checkpoint of job '{job_id}' is damaged: {exc}"
            ) from None

    # -- 1. Start --------------------------------------------------------------------------
    def Start(self, request: pb.SecureBoostStart, call: CallInfo) -> pb.SecureBoostStarted:
        key = self.check_job_id(call)
        resume = int(request.resume_from_tree)
        existing = self.peek_job(call)
        if self.has_model(key) or (existing and not resume):
            raise failed(f"job '{call.meta.job_id}' already exists at {self.node_id}")
        if resume and resume >= request.n_trees:
            raise invalid(f"resume_from_tree {resume} is not below n_trees {request.n_trees}")
        self._check_terms(request)
        self._check_limits(request, call, resume)  # before a row is read or the key verified
        rows = self.training_rows(call, alignment_id=request.alignment_id, rows=request.rows)
        if request.n_rows != rows.values.shape[0]:
            raise invalid(
                f"the bank aligned {request.n_rows} rows, this holder has {rows.values.shape[0]}"
            )
        params, packer = self._start_crypto(request)
        binner, bins = self.bin_rows(call, rows, int(request.max_bin))
        terms = start_terms(request, binner)
        splits, revealed = self._resume(call, existing, terms, resume) if resume else ({}, {})
        job = SecureBoostJob(
            alignment_id=request.alignment_id,
            n_rows=rows.values.shape[0],
            params=params,
            packer=packer,
            engine=PaillierEngine(params, workers=self.workers),
            binner=binner,
            bins=bins,
            n_bins=binner.n_bins_,
            n_trees=int(request.n_trees),
            max_depth=int(request.max_depth),
            min_node_samples=int(request.min_node_samples),
            trees_seen=set(range(resume)),
            splits=splits,
            terms=terms,
            revealed=revealed,
        )
        self.open_job(call, job)
        job.engine.warm()  # re-randomisation workers start while the bank encrypts
        if self.obfuscator_pool:  # dropped with the job (SecureBoostJob.close)
            job.engine.start_obfuscator_pool(
                capacity=self.obfuscator_pool, batch=self.obfuscator_batch, nice=19
            )
        self._checkpoint(call, job)
        call.counts["features"] = bins.shape[1]
        if resume:
            call.counts["resume_from_tree"] = resume
        return pb.SecureBoostStarted(n_features=bins.shape[1])

    def _check_terms(self, request: pb.SecureBoostStart) -> None:
        """The job's shape and this holder's node-size policy, before any work."""
        if request.min_node_samples < self.min_node_samples:
            raise Refused(
                "min_node_samples",
                f"the job asks histograms down to {request.min_node_samples} samples per node; "
                f"this holder's policy is at least {self.min_node_samples}",
            )
        if not 1 <= request.max_depth <= MAX_DEPTH or request.n_trees < 1:
            raise invalid(f"max_depth must be in [1, {MAX_DEPTH}] and n_trees >= 1")
        if not 2 <= request.max_bin <= 255:
            raise invalid(f"max_bin must be in [2, 255], got {request.max_bin}")

    def _check_limits(self, request: pb.SecureBoostStart, call: CallInfo, resume: int) -> None:
        """This holder's policy limits (``models.limits``): the job's size, the bank's key
        size, and how many jobs and resumes the bank already had. Cheap checks first; a job or
        resume is counted only once every other limit passed."""
        limits = self.limits
        limits.check_trees(n_trees=int(request.n_trees), max_depth=int(request.max_depth))
        limits.check_bins(int(request.max_bin))
        limits.check_paillier(request.paillier_params)
        if resume:
            limits.admit_resume(
                node=self.node_id, protocol=self.protocol, bank=call.caller, job_id=call.meta.job_id
            )
        else:
            limits.admit_job(
                node=self.node_id,
                protocol=self.protocol,
                bank=call.caller,
                alignment_id=request.alignment_id,
            )

    @staticmethod
    def _start_crypto(request: pb.SecureBoostStart) -> tuple[PublicParams, GradHessPacker]:
        """The bank's public key (verified) and the packing layout, as this holder computes it."""
        try:
            params = public_params_from_bytes(request.paillier_params)
            packer = GradHessPacker(
                n_samples_max=int(request.pack_n_samples_max),
                key_bits=params.key_bits,
                precision_bits=int(request.pack_precision_bits),
                g_bound=request.pack_g_bound,
                h_bound=request.pack_h_bound,
            )
        except CryptoError as exc:
            raise invalid(f"Start: {exc}") from None
        if packer.slot_bits != request.pack_slot_bits:
            raise invalid(
                f"packing layout mismatch: the bank computed {request.pack_slot_bits}-bit "
                f"slots, this holder {packer.slot_bits}"
            )
        return params, packer

    def _resume(
        self, call: CallInfo, existing: SecureBoostJob | None, terms: dict[str, Any], resume: int
    ) -> tuple[Splits, Revealed]:
        """The splits of trees before ``resume`` and every threshold the bank already received
        partitions of (also in trees the resume drops): from the open job, or its checkpoint."""
        job_id = call.meta.job_id
        if existing is not None:
            kept, splits = existing.terms, existing.splits
            revealed = {f: set(t) for f, t in existing.revealed.items()}
        else:
            found = self._read_checkpoint(call.caller, job_id)
            if found is None:
                raise failed(
                    f"cannot resume job '{job_id}' at {self.node_id}: it is neither open nor "
                    "checkpointed here (start a new job)"
                )
            kept, splits, revealed = found
        if kept != terms:
            differ = sorted(k for k in terms if kept.get(k) != terms[k])
            raise failed(
                f"cannot resume job '{job_id}' at {self.node_id}: {', '.join(differ)} differ from "
                "the original job (the data or the job changed; start a new job)"
            )
        done = {t: dict(s) for t, s in splits.items() if t < resume}
        log.info("%s: job %s resumes at tree %d", self.node_id, job_id, resume)
        return done, revealed

    # -- 2. Gradients ----------------------------------------------------------------------
    def Gradients(
        self, request: pb.SecureBoostGradients, call: CallInfo
    ) -> pb.SecureBoostGradientsAck:
        job = self.job(call)
        with job.lock:
            if request.tree >= job.n_trees or request.tree in job.trees_seen:
                raise failed(f"tree {request.tree} is out of range or was already trained")
            sample = self.row_mask(request.samples, job.n_rows, "Gradients.samples")
            rows = np.flatnonzero(sample)
            if rows.size != request.n_samples:
                raise invalid(
                    f"samples has {rows.size} rows set, n_samples says {request.n_samples}"
                )
            if request.streamed:
                return self._announce(request, call, job, sample, rows)
            path = self.blobs.path(call.caller, call.meta.job_id, request.blob_id)
            try:
                cts = ciphertexts_from_bytes(path.read_bytes(), job.params)
            except CryptoError as exc:
                raise invalid(f"blob {request.blob_id}: {exc}") from None
            finally:  # in memory now (or refused): 12 MB per tree need not stay on disk
                self.blobs.delete(call.caller, call.meta.job_id, request.blob_id)
            if len(cts) != rows.size:
                raise invalid(
                    f"blob {request.blob_id} holds {len(cts)} ciphertexts for {rows.size} samples"
                )
            job.trees_seen.add(request.tree)
            job.tree = self._tree_state(job, int(request.tree), sample, rows, cts)
        call.counts["ciphertexts"] = len(cts)
        return pb.SecureBoostGradientsAck(n_ciphertexts=len(cts))

    @staticmethod
    def _tree_state(
        job: SecureBoostJob, tree: int, sample: np.ndarray, rows: np.ndarray, cts: list[Any]
    ) -> TreeState:
        position = np.full(job.n_rows, -1, dtype=np.int64)
        position[rows] = np.arange(rows.size)
        return TreeState(
            tree=tree,
            rows=rows,
            position=position,
            ciphertexts=cts,
            bins=job.bins[rows],
            subsample=sample,
            known={0: np.ones(job.n_rows, dtype=bool)},  # the root holds every row
        )

    def _announce(
        self,
        request: pb.SecureBoostGradients,
        call: CallInfo,
        job: SecureBoostJob,
        sample: np.ndarray,
        rows: np.ndarray,
    ) -> pb.SecureBoostGradientsAck:
        """``Gradients.streamed``: the tree's blob comes next; sum its root histogram as it
        arrives (``PutBlob``). The previous tree is over from here (its state is dropped), and
        the tree counts as seen, so an announcement cannot be replayed."""
        key = self.key(call)
        sums = StreamingBinSums(
            job.bins[rows], int(job.n_bins.max()), job.params, engine=job.engine
        )
        stream = _Stream(int(request.tree), str(request.blob_id), sample, rows, sums)
        with self._stream_lock:
            old = self._streams.pop(key, None)
            self._roots.pop(key, None)
            self._streams[key] = stream
        if old is not None:
            old.sums.cancel()
        job.trees_seen.add(request.tree)
        job.tree = None
        call.counts["ciphertexts"] = 0
        call.counts["announced"] = int(rows.size)
        return pb.SecureBoostGradientsAck(n_ciphertexts=0)

    def PutBlob(
        self, chunks: Iterator[common_pb2.BlobChunk], call: CallInfo
    ) -> common_pb2.BlobReceipt:
        """A blob as ``BlobEndpoints`` stores it; an announced tree's gradients are also summed
        into its root histogram chunk by chunk, and the tree is ready when this returns."""
        it = iter(chunks)
        first = next(it, None)
        if first is None:
            raise invalid("PutBlob: an empty stream")
        key = self.key(call)
        with self._stream_lock:
            stream = self._streams.get(key)
        if stream is None or stream.blob_id != first.blob_id:
            return super().PutBlob(itertools.chain([first], it), call)

        def summing() -> Iterator[common_pb2.BlobChunk]:
            for chunk in itertools.chain([first], it):
                stream.sums.feed(chunk.data)
                yield chunk

        try:
            receipt = self.blobs.receive(summing(), owner=call.caller)
            root = stream.sums.finish()
        except HistogramInputError as exc:
            self._drop_stream(key, stream)
            raise invalid(f"blob {stream.blob_id}: {exc}") from None
        except BaseException:
            self._drop_stream(key, stream)
            raise
        finally:  # in memory now (or refused): it need not stay on disk
            self.blobs.delete(call.caller, call.meta.job_id, stream.blob_id)
        job = self.job(call)
        with job.lock:
            with self._stream_lock:
                if self._streams.get(key) is not stream:
                    raise failed(f"tree {stream.tree}: its announcement was replaced or dropped")
                del self._streams[key]
                self._roots[key] = (stream.tree, root)
            job.tree = self._tree_state(
                job, stream.tree, stream.sample, stream.rows, stream.sums.ciphertexts
            )
        call.counts["blob_bytes"] = receipt.size
        call.counts["ciphertexts"] = len(stream.sums.ciphertexts)
        return receipt

    def _drop_stream(self, key: JobKey, stream: _Stream) -> None:
        with self._stream_lock:
            if self._streams.get(key) is stream:
                del self._streams[key]
        stream.sums.cancel()

    def _streamed_root(self, call: CallInfo, tree: int) -> list[list[Any]] | None:
        """The root histogram summed while tree ``tree``'s gradients arrived (taken once)."""
        with self._stream_lock:
            found = self._roots.pop(self.key(call), None)
        return found[1] if found is not None and found[0] == tree else None

    # -- 3. Histograms ---------------------------------------------------------------------
    def _current_tree(self, job: SecureBoostJob, tree: int) -> TreeState:
        if job.tree is None or job.tree.tree != tree:
            raise failed(f"tree {tree} has no gradients at {self.node_id} (send Gradients first)")
        return job.tree

    def _check_level(
        self, job: SecureBoostJob, state: TreeState, request: pb.SecureBoostHistogramRequest
    ) -> dict[int, np.ndarray]:
        """Parse and vet the requested nodes: size policy, shape rule, consistent partitions."""
        depth = int(request.depth)
        if depth >= job.max_depth:
            raise invalid(f"depth {depth}: nodes at max_depth {job.max_depth} are leaves")
        samples: dict[int, np.ndarray] = {}
        for node in request.nodes:
            if depth_of(node.node) != depth:
                raise invalid(f"node {node.node} is not at depth {depth}")
            if node.node in samples:
                raise invalid(f"node {node.node} requested twice")
            mask = self.row_mask(node.samples, job.n_rows, f"node {node.node} samples")
            if (mask & ~state.subsample).any():
                raise invalid(f"node {node.node} has rows outside the tree's subsample")
            count = int(mask.sum())
            if count < job.min_node_samples:
                raise Refused(
                    "min_node_samples",
                    f"node {node.node} of tree {state.tree} has {count} samples; "
                    f"{self.node_id} answers only for nodes of at least {job.min_node_samples}",
                )
            samples[node.node] = mask
        if depth == 0:
            if set(samples) != {0}:
                raise invalid("depth 0 asks for the root (node 0) only")
            return samples
        self._check_pairs(state, samples)
        return samples

    @staticmethod
    def _check_pairs(state: TreeState, samples: dict[int, np.ndarray]) -> None:
        """Siblings come together and partition a parent this holder evaluated."""
        for node_id, mask in samples.items():
            sib = sibling_of(node_id)
            par = parent_of(node_id)
            if sib not in samples:
                raise invalid(
                    f"node {node_id} without its sibling {sib}: siblings are evaluated together "
                    "(else the bank could derive a small node's histogram by subtraction)"
                )
            if par not in state.histograms:
                raise invalid(f"node {node_id}: this holder did not evaluate its parent {par}")
            if node_id == left_child(par):
                parent = state.samples[par]
                other = samples[sib]
                if (mask & other).any() or not np.array_equal(mask | other, parent):
                    raise invalid(f"nodes {node_id} and {sib} do not partition node {par}")

    def Histograms(
        self, request: pb.SecureBoostHistogramRequest, call: CallInfo
    ) -> pb.SecureBoostHistogramReply:
        job = self.job(call)
        with job.lock:
            state = self._current_tree(job, request.tree)
            samples = self._check_level(job, state, request)
            by_sub = {node.node: node.by_subtraction for node in request.nodes}
            for node_id in samples:
                if by_sub[node_id] and (node_id == 0 or by_sub[sibling_of(node_id)]):
                    raise invalid(
                        f"node {node_id}: by_subtraction needs its sibling computed directly"
                    )
            state.candidates.clear()  # ids of the previous level are void now
            state.categories.clear()
            root = self._streamed_root(call, state.tree) if int(request.depth) == 0 else None
            hists = (
                {0: root}
                if root is not None and np.array_equal(samples[0], state.subsample)
                else level_histograms(job, state, samples, by_sub)
            )
            reply = pb.SecureBoostHistogramReply()
            returned = 0
            for node_id in sorted(samples):
                ids, groups, cts = candidates(job, state, node_id, samples[node_id], hists[node_id])
                item = reply.nodes.add(node=node_id, split_ids=ids, ciphertexts=cts)
                for members in groups:
                    item.groups.add(category_ids=members)
                returned += len(ids) + sum(len(m) for m in groups)
            # Keep this level for the next one's subtractions; older levels are no longer needed.
            state.histograms = hists
            state.samples = samples
        call.counts["nodes"] = len(samples)
        call.counts["candidates"] = returned
        return reply

    # -- 4. ApplySplit ---------------------------------------------------------------------
    def ApplySplit(
        self, request: pb.SecureBoostApplySplit, call: CallInfo
    ) -> pb.SecureBoostPartition:
        job = self.job(call)
        with job.lock:
            state = self._current_tree(job, request.tree)
            table = state.candidates.get(request.node)
            if table is None:
                raise failed(f"node {request.node} of tree {request.tree} has no open candidates")
            feature, threshold = self._chosen(state, request, table)
            rows = self.row_mask(request.rows, job.n_rows, "ApplySplit.rows")
            self._check_split_rows(state, int(request.node), rows)
            self._check_thresholds(call, job, feature, threshold)
            left = rows & goes_left(job.bins[:, feature], threshold)
            job.splits.setdefault(request.tree, {})[request.node] = (feature, threshold)
            job.revealed.setdefault(feature, set()).add(threshold)
            state.known[request.node] = rows
            state.known[left_child(request.node)] = left
            state.known[sibling_of(left_child(request.node))] = rows & ~left
            del state.candidates[request.node]
            state.categories.pop(request.node, None)
            self._checkpoint(call, job)
        call.counts["rows"] = int(rows.sum())
        return pb.SecureBoostPartition(left=mask_to_bytes(left))

    @staticmethod
    def _chosen(
        state: TreeState, request: pb.SecureBoostApplySplit, table: dict[int, tuple[int, int]]
    ) -> tuple[int, int]:
        """(feature, threshold) of the bank's choice: one of the node's candidate ids (the
        smallest on a tie), or a set of category ids of one group (a categorical split,
        kept as the negative bitmask of its bins)."""
        node = int(request.node)
        if request.split_ids and request.category_ids:
            raise invalid(f"node {node}: name split_ids or category_ids, not both")
        if request.split_ids:
            if any(i not in table for i in request.split_ids):
                raise invalid(f"node {node}: unknown split id")
            return min(table[i] for i in request.split_ids)
        cats = state.categories.get(node, {})
        chosen = list(request.category_ids)
        if not chosen or any(i not in cats for i in chosen) or len(set(chosen)) != len(chosen):
            raise invalid(f"node {node}: unknown, repeated or no split id / category id")
        features = {cats[i][0] for i in chosen}
        if len(features) != 1:
            raise invalid(f"node {node}: category ids of more than one group")
        feature = features.pop()
        in_group = sum(1 for f, _ in cats.values() if f == feature)
        if len(chosen) >= in_group:
            raise invalid(f"node {node}: a categorical split must leave a category on the right")
        return feature, -sum(1 << cats[i][1] for i in chosen)

    @staticmethod
    def _check_split_rows(state: TreeState, node: int, rows: np.ndarray) -> None:
        """``ApplySplit.rows`` must be the node's rows, not more (a superset would hand the
        bank this holder's split of rows outside the node).

        In the tree's subsample the holder knows the node's rows exactly (its ``Histograms``
        request). Rows outside the subsample it knows where they descend from a split of its
        own; elsewhere they must stay inside the nearest node it knows and belong to no other
        node of the same depth it knows (each row reaches one node per level)."""
        samples = state.samples[node]
        if not np.array_equal(rows & state.subsample, samples):
            raise invalid(
                f"node {node}: ApplySplit.rows must be the node's rows: it has "
                f"{int(samples.sum())} of the tree's subsample, the request "
                f"{int((rows & state.subsample).sum())}"
            )
        if node in state.known:
            if not np.array_equal(rows, state.known[node]):
                raise invalid(f"node {node}: ApplySplit.rows differ from the node's rows")
            return
        above = parent_of(node) if node else 0
        while above and above not in state.known:
            above = parent_of(above)
        if above in state.known and (rows & ~state.known[above]).any():
            raise invalid(f"node {node}: ApplySplit.rows leave its ancestor node {above}")
        depth = depth_of(node)
        for other, known in state.known.items():
            if other != node and depth_of(other) == depth and (known & rows).any():
                raise invalid(f"node {node}: ApplySplit.rows overlap node {other}")

    def _check_thresholds(
        self, call: CallInfo, job: SecureBoostJob, feature: int, threshold: int
    ) -> None:
        """The probe-model bound: refuse a split that would give the bank one more distinct
        threshold on a feature than the policy allows, and raise an audit alert (an honest
        model rarely needs that many; a model reading the holder's bins does)."""
        try:
            self.limits.check_thresholds(used=job.revealed, feature=feature, threshold=threshold)
        except Refused as exc:
            self.limits.alert(
                operation="limit.max_thresholds_per_feature",
                bank=call.caller,
                job_id=str(call.meta.job_id),
                reason=exc.reason,
                counts={"feature": feature, "thresholds": len(job.revealed.get(feature, ()))},
            )
            raise

    # -- 5. Finish -------------------------------------------------------------------------
    def Finish(self, request: pb.SecureBoostFinish, call: CallInfo) -> pb.SecureBoostFinished:
        job = self.job(call)
        with job.lock:
            if request.abort:
                self.drop_job(call, job)
                return pb.SecureBoostFinished(n_splits=0)
            leaves = {int(s.tree): sorted(int(x) for x in s.leaves) for s in request.trees}
            if sorted(leaves) != list(range(len(request.trees))) or len(leaves) > job.n_trees:
                raise invalid("Finish: trees must be numbered 0..n-1, each once")
            for tree, splits in job.splits.items():
                for node in splits:
                    tree_leaves = leaves.get(tree, [])
                    under = [leaf for leaf in tree_leaves if is_descendant(leaf, node)]
                    if not under or node in tree_leaves:
                        raise invalid(f"Finish: tree {tree} has no split at node {node}")
            model = HolderModel(
                binner=job.binner,
                splits=job.splits,
                leaves=leaves,
                n_trees=len(leaves),
                alignment_id=job.alignment_id,
            )
            self.keep_model(call, model)
            self.drop_job(call, job)
        call.counts["splits"] = model.n_splits
        return pb.SecureBoostFinished(
            n_splits=model.n_splits, part_sha256=self.part_sha256(call.caller, call.meta.job_id)
        )

    # -- 6. Predict ------------------------------------------------------------------------
    def Predict(
        self, request: pb.SecureBoostPredictRequest, call: CallInfo
    ) -> pb.SecureBoostPredictReply:
        model = self.model(call.caller, call.meta.job_id)
        rows = self.rows_for(
            call,
            alignment_id=request.alignment_id or model.alignment_id,
            rows=request.rows,
            what="Predict",
            columns=self.used_features(call.caller, call.meta.job_id),  # the consent scope
        )
        if rows.values.shape[1] != model.binner.n_features_in_:
            raise failed(
                f"{self.node_id}: the model was binned on {model.binner.n_features_in_} "
                f"features, this alignment has {rows.values.shape[1]}"
            )
        bins = model.binner.transform(rows.values)
        n = rows.positions.size
        reply = pb.SecureBoostPredictReply()
        for tree in range(model.n_trees):
            splits = model.splits.get(tree, {})
            if not splits:
                reply.trees.add(tree=tree, reach=b"")
                continue
            go_left = {node: goes_left(bins[:, f], t) for node, (f, t) in splits.items()}
            reach = leaf_reachability(model.leaves[tree], go_left, n)
            reply.trees.add(tree=tree, reach=mask_to_bytes(reach.ravel()))
        call.counts["rows"] = n
        return reply

    # -- 7. scoring by enterprise (the holder's DataHolder.ScoreReach calls these) -----------
    def part_sha256(self, bank: str, job_id: str) -> str:
        """sha256 (hex) of the saved model part file; "" when the part is not on disk (a
        part held in memory only, or none). Cached while the file's size and mtime stay."""
        path = self._model_path(bank, job_id)
        if path is None:
            return ""
        try:
            stat = path.stat()
        except FileNotFoundError:
            return ""
        with self._lock:
            cached = self._digests.get((bank, job_id))
        if cached is not None and cached[:2] == (stat.st_mtime_ns, stat.st_size):
            return cached[2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        with self._lock:
            self._digests[(bank, job_id)] = (stat.st_mtime_ns, stat.st_size, digest)
        return digest

    def used_features(self, bank: str, job_id: str) -> list[str]:
        """Names of the features this holder's splits of the model read (the consent scope)."""
        model = self.model(bank, job_id)
        used = sorted({f for splits in model.splits.values() for f, _ in splits.values()})
        return [model.binner.feature_names_[f] for f in used]

    def score_reach(
        self, bank: str, job_id: str, table: np.ndarray, names: Sequence[str], rows: np.ndarray
    ) -> tuple[np.ndarray, int]:
        """(bool[len(rows), n_leaves], n_leaves): the leaves of every tree each of ``rows``
        can reach under this holder's splits (leaf order as ``ReachProgram``).

        ``table``/``names``: the holder's current encoded table (every row, as
        ``TrainingView`` keeps it), ``rows`` positions in it. The table is binned with the
        model's edges and the reach of every row computed once per model part and cached
        (the table of a running node does not change). The caller (``DataHolder.ScoreReach``)
        has already checked the enterprise's authorisation.
        """
        key = (bank, job_id)
        with self._lock:
            cached = self._scoring.get(key)
        if cached is None or cached[0] is not table:
            cached = (table, self._reach_all(bank, job_id, table, names))
            with self._lock:
                self._scoring[key] = cached
        reach = cached[1]
        return reach[np.asarray(rows, dtype=np.int64)], int(reach.shape[1])

    def _reach_all(
        self, bank: str, job_id: str, table: np.ndarray, names: Sequence[str]
    ) -> np.ndarray:
        model = self.model(bank, job_id)
        fitted = list(model.binner.feature_names_)
        if list(names) != fitted:
            raise failed(
                f"{self.node_id}: model '{job_id}' was binned on {len(fitted)} features that "
                f"differ from this node's current {len(names)} (names in its log)"
            )
        bins = model.binner.transform(np.asarray(table, dtype=np.float64))
        leaves = [model.leaves.get(t, []) for t in range(model.n_trees)]
        owned = [(t, n) for t, splits in model.splits.items() for n in splits]
        program = ReachProgram.compile(leaves, owned)
        go_left = np.empty((bins.shape[0], len(program.splits)), dtype=bool)
        for j, (t, n) in enumerate(program.splits):
            feature, threshold = model.splits[t][n]
            go_left[:, j] = goes_left(bins[:, feature], threshold)
        return program.reach(go_left)


def local_holders(
    tables: dict[str, tuple[np.ndarray, Sequence[str]]],
    workdir: Path,
    *,
    bank_id: str = "bank",
    min_node_samples: int = 20,
    peer_class: type[InProcessPeer] = InProcessPeer,
    max_blob_bytes: int = 1 << 30,
    workers: int | None = 1,
    keep_models: bool = False,
    limits: HolderLimits | None = None,
    categorical: Mapping[str, Sequence[str]] | None = None,
    obfuscator_pool: int = 0,
) -> tuple[dict[str, InProcessPeer], dict[str, SecureBoostHolderServicer]]:
    """SecureBoost holders in this process (``models.local.local_holders``).

    ``workers`` is each holder's Paillier process count (1: in-process, None: all cores);
    ``keep_models``: holders write model parts and checkpoints under ``workdir/<holder>/models``
    as a node does (needed to resume after a simulated restart). ``categorical``: per holder,
    its columns holding category codes (split natively, ``use_categorical``).
    ``obfuscator_pool``: textbook obfuscators per job made ahead at low priority (node.yaml
    ``limits.rerandomise_pool``).
    """
    nominal = dict(categorical or {})

    def make(args: HolderArgs, home: Path) -> SecureBoostHolderServicer:
        return SecureBoostHolderServicer(
            **args,
            min_node_samples=min_node_samples,
            workers=workers,
            models_dir=home / "models" if keep_models else None,
            limits=limits,
            obfuscator_pool=obfuscator_pool,
        ).use_categorical(nominal.get(args["node_id"], ()))

    return _local_holders(
        make, tables, workdir, bank_id=bank_id, peer_class=peer_class, max_blob_bytes=max_blob_bytes
    )
