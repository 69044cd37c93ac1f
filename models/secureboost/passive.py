"""The data holder's half of vertical SecureBoost (passive party: tax bureau, utility).

Reads top to bottom as the holder serves a job: ``Start`` → (``PutBlob`` + ``Gradients`` →
``Histograms`` / ``ApplySplit`` per level) per tree → ``Finish``; later ``Predict``. The bank's
half is ``active.py``; the algorithm (and its plaintext twin) is ``reference.py``; the protocol
and the who-learns-what table are in docs/secureboost.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gmpy2
import numpy as np
from gmpy2 import mpz

from federation.blobs import BlobEndpoints, BlobStore
from federation.crypto import (
    CryptoError,
    GradHessPacker,
    PaillierEngine,
    PublicParams,
    ciphertexts_from_bytes,
    ciphertexts_to_bytes,
    encrypted_bin_sums,
    public_params_from_bytes,
    subtract,
)
from federation.errors import Refused
from federation.files import write_atomic
from federation.transport.base import FAILED_PRECONDITION, CallFailed, CallInfo, invalid
from models.binning import BinningError, QuantileBinner
from models.secureboost.reference import (
    MAX_DEPTH,
    MaskError,
    bin_offsets,
    depth_of,
    keep_candidates,
    leaf_reachability,
    left_child,
    mask_from_bytes,
    mask_to_bytes,
    parent_of,
    sibling_of,
)
from protos import secureboost_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = "SecureBoostHolder"

FeaturesFor = Callable[[str, str], tuple[np.ndarray, Sequence[str]]]
"""``features_for(bank, alignment_id) -> (values, names)``: the holder's features for the rows
of one alignment, in its common order (NaN = missing). Raises a ``XinyidaiError`` (or
``CallFailed``) naming what is wrong when there is no such alignment for that bank."""


def _failed(detail: str) -> CallFailed:
    return CallFailed(FAILED_PRECONDITION, detail)


@dataclass
class HolderModel:
    """The holder's part of a trained model: its bins and the meaning of its own splits."""

    binner: QuantileBinner
    splits: dict[int, dict[int, tuple[int, int]]]  # tree → node → (feature, threshold bin)
    leaves: dict[int, list[int]]  # tree → leaf heap ids, ascending
    n_trees: int
    alignment_id: str = ""  # the alignment the job trained on (Predict's default)

    @property
    def n_splits(self) -> int:
        return sum(len(s) for s in self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; contains bin edges (data values): store it at the holder only."""
        return {
            "format": "xinyidai.secureboost.holder/1",
            "binner": self.binner.to_dict(),
            "n_trees": self.n_trees,
            "splits": {
                str(t): {str(n): list(ft) for n, ft in s.items()} for t, s in self.splits.items()
            },
            "leaves": {str(t): list(v) for t, v in self.leaves.items()},
            "alignment_id": self.alignment_id,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HolderModel:
        return cls(
            binner=QuantileBinner.from_dict(data["binner"]),
            splits={
                int(t): {int(n): (int(ft[0]), int(ft[1])) for n, ft in s.items()}
                for t, s in data["splits"].items()
            },
            leaves={int(t): [int(x) for x in v] for t, v in data["leaves"].items()},
            n_trees=int(data["n_trees"]),
            alignment_id=str(data.get("alignment_id", "")),
        )


@dataclass(frozen=True)
class ReachProgram:
    """Every leaf of every tree as its root path over one party's splits: reach in one step.

    Why: scoring asks "which leaves can this row reach under my splits" for all trees at once;
    walking trees leaf by leaf costs thousands of small numpy calls per request. Compiled once
    per model part, ``reach`` is one gather and one comparison over rows x leaves x depth.
    ``splits``: the (tree, node) this party resolves, the columns of ``go_left``. Leaves are
    numbered globally: tree 0's leaves ascending, then tree 1's... (``tree_starts``).
    """

    splits: tuple[tuple[int, int], ...]
    tree_starts: np.ndarray  # first global leaf of each tree
    n_leaves: int
    steps: np.ndarray  # int (n_leaves, depth): 1 + column of go_left; 0 = no constraint
    left: np.ndarray  # bool (n_leaves, depth): the path goes left there (True at padding)

    @classmethod
    def compile(
        cls, leaves: Sequence[Sequence[int]], owned: Iterable[tuple[int, int]]
    ) -> ReachProgram:
        """``leaves[t]``: tree t's leaf heap ids; ``owned``: the (tree, node) splits known."""
        splits = tuple(sorted(set(owned)))
        column = {key: j + 1 for j, key in enumerate(splits)}
        paths: list[list[tuple[int, bool]]] = []
        starts: list[int] = []
        for t, tree_leaves in enumerate(leaves):
            starts.append(len(paths))
            for leaf in sorted(int(x) for x in tree_leaves):
                path: list[tuple[int, bool]] = []
                child = leaf
                while child > 0:
                    par = parent_of(child)
                    j = column.get((t, par))
                    if j is not None:
                        path.append((j, child == left_child(par)))
                    child = par
                paths.append(path)
        depth = max((len(p) for p in paths), default=0) or 1
        steps = np.zeros((len(paths), depth), dtype=np.int64)
        left = np.ones((len(paths), depth), dtype=bool)
        for i, path in enumerate(paths):
            for d, (j, goes_left) in enumerate(path):
                steps[i, d], left[i, d] = j, goes_left
        return cls(splits, np.asarray(starts, dtype=np.int64), len(paths), steps, left)

    def reach(self, go_left: np.ndarray) -> np.ndarray:
        """bool (rows, n_leaves) from ``go_left``: bool (rows, len(splits))."""
        n = go_left.shape[0]
        ext = np.empty((n, len(self.splits) + 1), dtype=bool)
        ext[:, 0] = True
        ext[:, 1:] = go_left
        out = np.empty((n, self.n_leaves), dtype=bool)
        for start in range(0, n, 4096):  # bounded memory: rows x leaves x depth per block
            block = ext[start : start + 4096][:, self.steps]
            out[start : start + 4096] = ~(block ^ self.left).any(axis=2)
        return out


@dataclass
class _TreeState:
    """One tree's working state: its ciphertexts, the nodes evaluated, open candidates."""

    tree: int
    rows: np.ndarray  # sorted rows of the subsample; ciphertext i belongs to rows[i]
    position: np.ndarray  # row → index into rows (−1: not in the subsample)
    ciphertexts: list[mpz]
    bins: np.ndarray  # the holder's bins of the subsample rows
    subsample: np.ndarray  # row mask of the subsample
    histograms: dict[int, list[list[mpz]]] = field(default_factory=dict)
    samples: dict[int, np.ndarray] = field(default_factory=dict)  # node → in-sample row mask
    candidates: dict[int, dict[int, tuple[int, int]]] = field(default_factory=dict)


@dataclass
class _Job:
    alignment_id: str
    n_rows: int  # rows of the job (the selected rows of the alignment)
    params: PublicParams
    packer: GradHessPacker
    engine: PaillierEngine
    binner: QuantileBinner
    bins: np.ndarray  # (n_rows, n_features) int32
    n_bins: np.ndarray
    n_trees: int
    max_depth: int
    min_node_samples: int
    trees_seen: set[int] = field(default_factory=set)
    tree: _TreeState | None = None
    splits: dict[int, dict[int, tuple[int, int]]] = field(default_factory=dict)
    terms: dict[str, Any] = field(default_factory=dict)  # what a resumed Start must repeat
    lock: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.monotonic)  # last call (housekeeping)


def _start_terms(request: Any, binner: QuantileBinner) -> dict[str, Any]:
    """A job's terms apart from its keys: equal on resume, or the data or the job changed."""
    return {
        "alignment_id": request.alignment_id,
        "rows_sha256": hashlib.sha256(request.rows).hexdigest(),
        "n_rows": int(request.n_rows),
        "max_bin": int(request.max_bin),
        "max_depth": int(request.max_depth),
        "n_trees": int(request.n_trees),
        "min_node_samples": int(request.min_node_samples),
        "bins_sha256": hashlib.sha256(
            json.dumps(binner.to_dict(), sort_keys=True).encode()
        ).hexdigest(),
    }


class SecureBoostHolderServicer(BlobEndpoints):
    """``xinyidai.v1.SecureBoostHolder`` for one data holder.

    A holder keeps its feature values, its bin edges and the meaning of every split it owns.
    All state is scoped by (calling bank, job id). Protocol, from the holder's side:

    1. ``Start``: verify the public parameters (``hs`` recomputed from the seed), check the row
       count, the packing layout and that the job's ``min_node_samples`` is at least this
       holder's policy; bin the features locally (``QuantileBinner``; edges stay here).
    2. ``PutBlob`` + ``Gradients`` (per tree): take the streamed ciphertexts, one per row of
       the tree's subsample, in row order.
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
       under this holder's own splits; the bank ANDs it with the other parties' masks.

    Sees: the public key and the hyperparameters above, the row subsample, the sample sets of
    the nodes it evaluates, which of its candidates won where, the tree shapes, the rows
    scored. Never sees: labels, gradients (only ciphertexts), gains, leaf weights, the bank's
    or another holder's features, edges or splits.

    ``features`` are the holder's values for the aligned rows (rows in the order the bank
    uses; NaN = missing); ``feature_names`` stay here (errors sent to the bank name features
    by index and the name goes to this node's log). A node instead passes ``features_for``
    (see ``FeaturesFor``): each job then names its alignment (``Start.alignment_id``, a PSI
    job) and the rows of it to train on (``Start.rows``); ``features``/``feature_names`` is the
    same with one fixed alignment. ``models_dir``: where finished model parts are written
    (``<models_dir>/<bank>/<job>.json``, mode 0600: they hold bin edges) and read back after a
    restart; None keeps them in memory only. ``min_node_samples`` is this holder's
    policy: it refuses jobs asking less and histograms of smaller nodes. ``workers`` is the
    Paillier engine's process count (1: in-process).
    """

    service = secureboost_pb2.DESCRIPTOR.services_by_name[SERVICE_NAME]

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
    ):
        self.node_id = node_id
        self.features: np.ndarray | None = None
        self.feature_names: list[str] = []
        if (features is None) == (features_for is None):
            raise ValueError("give either features (with feature_names) or features_for")
        if features is not None:
            names = [str(n) for n in feature_names or []]
            arr = self._checked(features, names)
            self.features, self.feature_names = arr, names

            def fixed(bank: str, alignment_id: str) -> tuple[np.ndarray, Sequence[str]]:
                return arr, names

            features_for = fixed
        assert features_for is not None
        self.features_for: FeaturesFor = features_for
        self.models_dir = models_dir
        self.banks = frozenset(banks)
        self.blobs = blobs
        self.min_node_samples = int(min_node_samples)
        self.workers = workers
        self.chunk_bytes = chunk_bytes
        self._jobs: dict[tuple[str, str], _Job] = {}
        self._models: dict[tuple[str, str], HolderModel] = {}
        self._lock = threading.Lock()
        # Scoring: (bank, job) -> (the table it was computed on, reach of every table row).
        self._scoring: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
        self._digests: dict[tuple[str, str], tuple[int, int, str]] = {}

    def _checked(self, features: Any, names: Sequence[str]) -> np.ndarray:
        arr = np.asarray(features, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise BinningError(
                f"holder '{self.node_id}': features must be (rows, {len(names)}) for the "
                f"given names, got shape {arr.shape}"
            )
        return arr

    def _features(self, bank: str, alignment_id: str) -> tuple[np.ndarray, list[str]]:
        values, names = self.features_for(bank, alignment_id)
        return self._checked(values, names), [str(n) for n in names]

    # -- policy and bookkeeping ------------------------------------------------------------
    def authorise_caller(self, caller: str, method: str) -> None:
        if caller not in self.banks:
            raise Refused(
                "caller",
                f"'{caller}' is not a bank this holder trains with "
                f"(policy lists: {', '.join(sorted(self.banks)) or 'none'})",
            )

    def _job(self, call: CallInfo) -> _Job:
        with self._lock:
            job = self._jobs.get((call.caller, call.meta.job_id))
        if job is None:
            raise _failed(f"no open SecureBoost job '{call.meta.job_id}' from {call.caller}")
        job.touched = time.monotonic()
        return job

    def sweep(self, *, idle_s: float, checkpoint_days: float = 7.0) -> dict[str, int]:
        """Housekeeping: drop jobs no call touched for ``idle_s`` (their keys, ciphertexts and
        blobs; the checkpoint stays so the bank may still resume) and checkpoints older than
        ``checkpoint_days``. Nodes run this periodically."""
        now = time.monotonic()
        with self._lock:
            stale = [(k, j) for k, j in self._jobs.items() if now - j.touched > idle_s]
        for key, job in stale:
            with job.lock:
                job.tree = None
                job.engine.close()
                with self._lock:
                    self._jobs.pop(key, None)
            self.blobs.drop_job(*key)
            log.warning("%s: dropped SecureBoost job %s of %s (idle)", self.node_id, key[1], key[0])
        old = 0
        if self.models_dir is not None and self.models_dir.is_dir():
            cutoff = time.time() - checkpoint_days * 86_400
            for path in self.models_dir.glob("*/*.checkpoint.json"):
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    old += 1
        return {"jobs": len(stale), "checkpoints": old}

    def model(self, bank: str, job_id: str) -> HolderModel:
        """The holder's part of a finished model (its own secret: bins and split meanings)."""
        with self._lock:
            found = self._models.get((bank, job_id))
        if found is None:
            found = self._read_model(bank, job_id)
        if found is None:
            raise _failed(f"no finished SecureBoost model '{job_id}' for {bank}")
        return found

    def _model_path(self, bank: str, job_id: str) -> Path | None:
        if self.models_dir is None or not _SAFE_NAME.match(bank) or not _SAFE_NAME.match(job_id):
            return None
        return self.models_dir / bank / f"{job_id}.json"

    def _read_model(self, bank: str, job_id: str) -> HolderModel | None:
        path = self._model_path(bank, job_id)
        if path is None or not path.exists():
            return None
        model = HolderModel.from_dict(json.loads(path.read_text(encoding="utf-8")))
        with self._lock:
            self._models[(bank, job_id)] = model
        return model

    def _write_model(self, bank: str, job_id: str, model: HolderModel) -> None:
        """Atomically (temp file + rename), mode 0600 from the first byte: bin edges are data."""
        path = self._model_path(bank, job_id)
        if path is None:
            return
        write_atomic(path, json.dumps(model.to_dict()).encode("utf-8"))

    def load_model(self, bank: str, job_id: str, model: HolderModel) -> None:
        """Serve a saved model part (``HolderModel.from_dict``), e.g. after a restart or on a
        scoring node whose table holds new applicants; its bins must fit this node's columns."""
        if self.features is not None and model.binner.n_features_in_ != self.features.shape[1]:
            raise BinningError(
                f"holder '{self.node_id}': the model was binned on {model.binner.n_features_in_} "
                f"features, this node has {self.features.shape[1]}"
            )
        with self._lock:
            self._models[(bank, job_id)] = model

    def open_jobs(self) -> list[tuple[str, str]]:
        with self._lock:
            return sorted(self._jobs)

    def _mask(self, buf: bytes, n_rows: int, what: str) -> np.ndarray:
        try:
            return mask_from_bytes(buf, n_rows, what)
        except MaskError as exc:
            raise invalid(str(exc)) from None

    # -- 1. Start --------------------------------------------------------------------------
    def Start(self, request: Any, call: CallInfo) -> Any:
        key = (call.caller, call.meta.job_id)
        if not call.meta.job_id:
            raise invalid("Start: meta.job_id is required (it scopes all of the job's state)")
        resume = int(request.resume_from_tree)
        with self._lock:
            existing = self._jobs.get(key)
            finished = key in self._models
        saved = self._model_path(*key)
        if finished or (saved is not None and saved.exists()) or (existing and not resume):
            raise _failed(f"job '{call.meta.job_id}' already exists at {self.node_id}")
        if resume and resume >= request.n_trees:
            raise invalid(f"resume_from_tree {resume} is not below n_trees {request.n_trees}")
        features, names = self._features(call.caller, request.alignment_id)
        if request.rows:
            selected = self._mask(request.rows, features.shape[0], "Start.rows")
            features = features[selected]
        n_rows = features.shape[0]
        if request.n_rows != n_rows:
            raise invalid(f"the bank aligned {request.n_rows} rows, this holder has {n_rows}")
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
        binner = QuantileBinner(max_bin=int(request.max_bin))
        try:
            bins = binner.fit_transform(features, feature_names=names)
        except BinningError as exc:
            log.error("%s: SecureBoost job %s: %s", self.node_id, call.meta.job_id, exc)
            # Column names stay at the holder (the bank sees keyed hashes only): name by index.
            where = "a feature" if exc.index is None else f"feature #{exc.index}"
            raise _failed(
                f"{self.node_id} cannot bin {where} of {len(names)}: {exc.reason} "
                f"(the column name is in {self.node_id}'s log)"
            ) from None
        terms = _start_terms(request, binner)
        splits: dict[int, dict[int, tuple[int, int]]] = {}
        if resume:
            splits = self._resume(call, existing, terms, resume)
        job = _Job(
            alignment_id=request.alignment_id,
            n_rows=n_rows,
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
        )
        with self._lock:
            replaced = self._jobs.get(key)
            self._jobs[key] = job
        if replaced is not None:
            replaced.engine.close()
        job.engine.warm()  # re-randomisation workers start while the bank encrypts
        self._checkpoint(call.caller, call.meta.job_id, job)
        call.counts["features"] = bins.shape[1]
        if resume:
            call.counts["resume_from_tree"] = resume
        return secureboost_pb2.SecureBoostStarted(n_features=bins.shape[1])

    def _resume(
        self, call: CallInfo, existing: _Job | None, terms: dict[str, Any], resume: int
    ) -> dict[int, dict[int, tuple[int, int]]]:
        """The splits of trees before ``resume``: from the open job, or from its checkpoint."""
        job_id = call.meta.job_id
        if existing is not None:
            kept, splits = existing.terms, existing.splits
        else:
            found = self._read_checkpoint(call.caller, job_id)
            if found is None:
                raise _failed(
                    f"cannot resume job '{job_id}' at {self.node_id}: it is neither open nor "
                    "checkpointed here (start a new job)"
                )
            kept, splits = found
        if kept != terms:
            differ = sorted(k for k in terms if kept.get(k) != terms[k])
            raise _failed(
                f"cannot resume job '{job_id}' at {self.node_id}: {', '.join(differ)} differ from "
                "the original job (the data or the job changed; start a new job)"
            )
        done = {t: dict(s) for t, s in splits.items() if t < resume}
        log.info("%s: job %s resumes at tree %d", self.node_id, job_id, resume)
        return done

    def _checkpoint_path(self, bank: str, job_id: str) -> Path | None:
        path = self._model_path(bank, job_id)
        return None if path is None else path.with_name(f"{job_id}.checkpoint.json")

    def _checkpoint(self, bank: str, job_id: str, job: _Job) -> None:
        """The job's terms and splits so far (0600: bin edges are data); at most a tree is lost."""
        path = self._checkpoint_path(bank, job_id)
        if path is None:
            return
        data = {
            "format": "xinyidai.secureboost.holder-checkpoint/1",
            "terms": job.terms,
            "splits": {
                str(t): {str(n): list(ft) for n, ft in s.items()} for t, s in job.splits.items()
            },
        }
        write_atomic(path, json.dumps(data).encode("utf-8"))

    def _read_checkpoint(
        self, bank: str, job_id: str
    ) -> tuple[dict[str, Any], dict[int, dict[int, tuple[int, int]]]] | None:
        path = self._checkpoint_path(bank, job_id)
        if path is None or not path.exists():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            splits = {
                int(t): {int(n): (int(ft[0]), int(ft[1])) for n, ft in s.items()}
                for t, s in data["splits"].items()
            }
            return dict(data["terms"]), splits
        except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
            raise _failed(
                f"{self.node_id}: checkpoint of job '{job_id}' is damaged: {exc}"
            ) from None

    # -- blobs -----------------------------------------------------------------------------
    # -- 2. Gradients ----------------------------------------------------------------------
    def Gradients(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        with job.lock:
            if request.tree >= job.n_trees or request.tree in job.trees_seen:
                raise _failed(f"tree {request.tree} is out of range or was already trained")
            sample = self._mask(request.samples, job.n_rows, "Gradients.samples")
            rows = np.flatnonzero(sample)
            if rows.size != request.n_samples:
                raise invalid(
                    f"samples has {rows.size} rows set, n_samples says {request.n_samples}"
                )
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
            position = np.full(job.n_rows, -1, dtype=np.int64)
            position[rows] = np.arange(rows.size)
            job.trees_seen.add(request.tree)
            job.tree = _TreeState(
                tree=request.tree,
                rows=rows,
                position=position,
                ciphertexts=cts,
                bins=job.bins[rows],
                subsample=sample,
            )
        call.counts["ciphertexts"] = len(cts)
        return secureboost_pb2.SecureBoostGradientsAck(n_ciphertexts=len(cts))

    # -- 3. Histograms ---------------------------------------------------------------------
    def _current_tree(self, job: _Job, tree: int) -> _TreeState:
        if job.tree is None or job.tree.tree != tree:
            raise _failed(f"tree {tree} has no gradients at {self.node_id} (send Gradients first)")
        return job.tree

    def _check_level(self, job: _Job, state: _TreeState, request: Any) -> dict[int, np.ndarray]:
        """Parse and vet the requested nodes: size policy, shape rule, consistent partitions."""
        depth = int(request.depth)
        if depth >= job.max_depth:
            raise invalid(f"depth {depth}: nodes at max_depth {job.max_depth} are leaves")
        samples: dict[int, np.ndarray] = {}
        subsample = state.subsample
        for node in request.nodes:
            if depth_of(node.node) != depth:
                raise invalid(f"node {node.node} is not at depth {depth}")
            if node.node in samples:
                raise invalid(f"node {node.node} requested twice")
            mask = self._mask(node.samples, job.n_rows, f"node {node.node} samples")
            if (mask & ~subsample).any():
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
        return samples

    def Histograms(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
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
            n_bins_max = int(job.n_bins.max())
            hists: dict[int, list[list[mpz]]] = {}
            for node_id in sorted(samples, key=lambda i: by_sub[i]):  # direct ones first
                if by_sub[node_id]:
                    hists[node_id] = subtract(
                        state.histograms[parent_of(node_id)],
                        hists[sibling_of(node_id)],
                        job.params,
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
            reply = secureboost_pb2.SecureBoostHistogramReply()
            returned = 0
            for node_id in sorted(samples):
                ids, cts = self._candidates(job, state, node_id, samples[node_id], hists[node_id])
                reply.nodes.add(node=node_id, split_ids=ids, ciphertexts=cts)
                returned += len(ids)
            # Keep this level for the next one's subtractions; older levels are no longer needed.
            state.histograms = hists
            state.samples = samples
        call.counts["nodes"] = len(samples)
        call.counts["candidates"] = returned
        return reply

    def _candidates(
        self,
        job: _Job,
        state: _TreeState,
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

    # -- 4. ApplySplit ---------------------------------------------------------------------
    def ApplySplit(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        with job.lock:
            state = self._current_tree(job, request.tree)
            table = state.candidates.get(request.node)
            if table is None:
                raise _failed(f"node {request.node} of tree {request.tree} has no open candidates")
            unknown = [i for i in request.split_ids if i not in table]
            if unknown or not request.split_ids:
                raise invalid(f"node {request.node}: unknown or no split id")
            feature, threshold = min(table[i] for i in request.split_ids)
            rows = self._mask(request.rows, job.n_rows, "ApplySplit.rows")
            if (state.samples[request.node] & ~rows).any():
                raise invalid(f"node {request.node}: rows miss samples of the node")
            left = rows & (job.bins[:, feature] <= threshold)
            job.splits.setdefault(request.tree, {})[request.node] = (feature, threshold)
            del state.candidates[request.node]
            self._checkpoint(call.caller, call.meta.job_id, job)
        call.counts["rows"] = int(rows.sum())
        return secureboost_pb2.SecureBoostPartition(left=mask_to_bytes(left))

    # -- 5. Finish -------------------------------------------------------------------------
    def Finish(self, request: Any, call: CallInfo) -> Any:
        job = self._job(call)
        key = (call.caller, call.meta.job_id)
        with job.lock:
            if request.abort:
                self._drop(key, job)
                return secureboost_pb2.SecureBoostFinished(n_splits=0)
            leaves = {int(s.tree): sorted(int(x) for x in s.leaves) for s in request.trees}
            if sorted(leaves) != list(range(len(request.trees))) or len(leaves) > job.n_trees:
                raise invalid("Finish: trees must be numbered 0..n-1, each once")
            for tree, splits in job.splits.items():
                for node in splits:
                    under = [
                        leaf
                        for leaf in leaves.get(tree, [])
                        if leaf > node and _is_descendant(leaf, node)
                    ]
                    if not under or node in leaves.get(tree, []):
                        raise invalid(f"Finish: tree {tree} has no split at node {node}")
            model = HolderModel(
                binner=job.binner,
                splits=job.splits,
                leaves=leaves,
                n_trees=len(leaves),
                alignment_id=job.alignment_id,
            )
            self._write_model(call.caller, call.meta.job_id, model)
            self._drop(key, job)
            with self._lock:
                self._models[key] = model
        call.counts["splits"] = model.n_splits
        return secureboost_pb2.SecureBoostFinished(
            n_splits=model.n_splits, part_sha256=self.part_sha256(call.caller, call.meta.job_id)
        )

    def _drop(self, key: tuple[str, str], job: _Job) -> None:
        job.tree = None
        job.engine.close()
        with self._lock:
            self._jobs.pop(key, None)
        self.blobs.drop_job(*key)
        path = self._checkpoint_path(*key)
        if path is not None:
            path.unlink(missing_ok=True)

    # -- 6. Predict ------------------------------------------------------------------------
    def Predict(self, request: Any, call: CallInfo) -> Any:
        model = self.model(call.caller, call.meta.job_id)
        rows = np.asarray(request.rows, dtype=np.int64)
        features, _ = self._features(call.caller, request.alignment_id or model.alignment_id)
        n_rows = features.shape[0]
        if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
            raise invalid(f"Predict: rows must be in [0, {n_rows})")
        if features.shape[1] != model.binner.n_features_in_:
            raise _failed(
                f"{self.node_id}: the model was binned on {model.binner.n_features_in_} "
                f"features, this alignment has {features.shape[1]}"
            )
        bins = model.binner.transform(features[rows])
        reply = secureboost_pb2.SecureBoostPredictReply()
        for tree in range(model.n_trees):
            splits = model.splits.get(tree, {})
            if not splits:
                reply.trees.add(tree=tree, reach=b"")
                continue
            go_left = {node: bins[:, f] <= t for node, (f, t) in splits.items()}
            reach = leaf_reachability(model.leaves[tree], go_left, rows.size)
            reply.trees.add(tree=tree, reach=mask_to_bytes(reach.ravel()))
        call.counts["rows"] = int(rows.size)
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
        (the table of a running node does not change).
        """
        key = (bank, job_id)
        with self._lock:
            cached = self._scoring.get(key)
        if cached is None or cached[0] is not table:
            model = self.model(bank, job_id)
            fitted = list(model.binner.feature_names_)
            if list(names) != fitted:
                raise _failed(
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
                go_left[:, j] = bins[:, feature] <= threshold
            cached = (table, program.reach(go_left))
            with self._lock:
                self._scoring[key] = cached
        reach = cached[1]
        return reach[np.asarray(rows, dtype=np.int64)], int(reach.shape[1])


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _is_descendant(node: int, ancestor: int) -> bool:
    while node > ancestor:
        node = parent_of(node)
    return node == ancestor


__all__ = ["HolderModel", "ReachProgram", "SecureBoostHolderServicer"]
