"""Model versions the bank serves: resolved in the registry, loaded, checked, compiled once.

Why a cache: resolving a version (or an alias such as ``champion``) means asking the MLflow
registry, and compiling the bank's part means binning its whole table through the model's own
splits; a scoring request must do neither. ``ModelCache`` does both once per version (aliases
are re-resolved every ``alias_ttl_s``), refusing a part whose sha256 differs from the one the
version recorded, and keeps the bank's reach (the leaves its own splits allow) for every row of
its table. Scoring with it is ``parties.bank.scoring``.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from federation.errors import XinyidaiError
from federation.ids import name_problem
from federation.transport.base import invalid
from models.secureboost.bank_state import BANK
from models.secureboost.estimator import SecureBoostClassifier
from models.secureboost.reference import SecureBoostError, goes_left
from models.secureboost.tree import ReachProgram

if TYPE_CHECKING:
    from parties.bank.registry import TrackingConfig

__all__ = [
    "LOCAL_VERSION",
    "SERVING_MODES",
    "TAG_SERVING_MODE",
    "ModelCache",
    "ScoringError",
    "ServedModel",
    "holder_part_tag",
]

LOCAL_VERSION = "local"
"""``model_version`` of a model served from ``NODE_DIR/models/<job>.json`` without a registry."""


TAG_SERVING_MODE = "xinyidai.serving_mode"
"""Version tag: how the version is served, chosen at registration (docs/scoring.md)."""
SERVING_MODES = ("fast", "private")
"""``fast``: holders return leaf-reach masks (the bank learns every holder split direction on
the path). ``private``: the bank decrypts totals only (models.secureboost.private_scoring). A
version without the tag was registered before serving modes existed and is served ``fast``."""


def serving_mode_of(tags: dict[str, str], what: str) -> str:
    """The serving mode a version's tags name; an unknown mode refuses the version (never
    served with the fast path's leakage instead of the protection it was registered with)."""
    mode = tags.get(TAG_SERVING_MODE, "fast") or "fast"
    if mode not in SERVING_MODES:
        raise ScoringError(f"model {what}: unknown serving mode {mode[:32]!r} on the version")
    return mode


class ScoringError(XinyidaiError):
    """A model version cannot be served (unknown, part missing or altered, parts disagree)."""


def holder_part_tag(holder: str) -> str:
    return f"xinyidai.part.{holder}.sha256"


@dataclass
class ServedModel:
    """One model version ready to score: the bank's part, compiled, and what holders must hold."""

    name: str
    version: str
    model_id: str  # audit records' model_id: "<name>/<version>" (registry) or the job id
    job_id: str
    clf: SecureBoostClassifier
    owners: tuple[str, ...]  # holders whose splits the model uses (asked for every score)
    digests: dict[str, str]  # holder -> sha256 of its part, as recorded on the version
    bank_reach: np.ndarray  # bool (bank table rows, leaves): under the bank's own splits
    weights: np.ndarray  # leaf weights, global leaf order
    samples: np.ndarray  # training samples per leaf (the "typical" leaf's weighting)
    tree_starts: np.ndarray
    base_score: float
    serving_mode: str = "fast"  # SERVING_MODES; named on every reply
    private: Any = None  # parties.bank.scoring's private-chain state (keys, holders' keys)


class ModelCache:
    """Served models by (name, version), loaded once; aliases re-resolved every ``alias_ttl_s``.

    ``codes``/``features``: the bank's table (row order) encoded as in training. ``models_dir``:
    ``NODE_DIR/models`` where training wrote the bank's parts. ``tracking``: the registry
    (a node passes ``TrackingConfig.for_node(config).tracking``; without one,
    ``TrackingConfig.resolve()``: ``MLFLOW_TRACKING_URI`` or ``./.xinyidai/mlflow``, for local tools).
    """

    def __init__(
        self,
        *,
        features: pd.DataFrame,
        models_dir: Path,
        tracking: TrackingConfig | None = None,
        alias_ttl_s: float = 10.0,
    ):
        self.features = features
        self.models_dir = Path(models_dir)
        self._tracking = tracking
        self.alias_ttl_s = alias_ttl_s
        self._lock = threading.Lock()
        self._served: dict[tuple[str, str], ServedModel] = {}
        self._aliases: dict[tuple[str, str], tuple[float, str]] = {}

    @property
    def tracking(self) -> TrackingConfig:
        if self._tracking is None:
            from parties.bank.registry import TrackingConfig

            self._tracking = TrackingConfig.resolve()
        return self._tracking

    def get(self, name: str, ref: str) -> ServedModel:
        """The model ``name`` at version or alias ``ref``; empty ``ref``: the local job ``name``."""
        name, ref = name.strip(), ref.strip()
        if not name:
            raise invalid("model_name is required (a registered model, e.g. credit-sbt)")
        # Names become file names (NODE_DIR/models/<name>.json): an identifier, never a path,
        # checked before any file or registry is touched.
        problem = name_problem(name, "model_name")
        if problem is not None:
            raise invalid(problem)
        if ref and (problem := name_problem(ref, "model_ref")) is not None:
            raise invalid(problem)
        if not ref:
            return self._cached((name, LOCAL_VERSION), lambda: self._load_local(name))
        version = self._version(name, ref)
        return self._cached((name, version), lambda: self._load_registered(name, version))

    def _cached(self, key: tuple[str, str], load: Any) -> ServedModel:
        with self._lock:
            found = self._served.get(key)
        if found is None:
            found = load()
            with self._lock:
                self._served[key] = found
        return found

    def _version(self, name: str, ref: str) -> str:
        from parties.bank.registry import TrackingError, resolve

        digits = ref[1:] if ref[:1] in "vV" else ref
        if digits.isdigit():
            return str(int(digits))
        now = time.monotonic()
        with self._lock:
            hit = self._aliases.get((name, ref))
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            version = resolve(name, ref, tracking=self.tracking).version
        except TrackingError as exc:
            raise ScoringError(str(exc)) from None
        with self._lock:
            self._aliases[(name, ref)] = (now + self.alias_ttl_s, version)
        return version

    def _load_local(self, job_id: str) -> ServedModel:
        path = self.models_dir / f"{job_id}.json"
        if not path.is_file():
            raise ScoringError(f"no local model '{job_id}' at the bank (nor a version was named)")
        return self._compile(job_id, LOCAL_VERSION, job_id, job_id, path.read_text("utf-8"), {})

    def _load_registered(self, name: str, version: str) -> ServedModel:
        from parties.bank.registry import (
            BANK_MODEL_ARTIFACT,
            TAG_BANK_PART,
            TAG_JOB_ID,
            TrackingError,
            mlflow_client,
            model_id,
            resolve,
        )

        try:
            resolved = resolve(name, version, tracking=self.tracking)
        except TrackingError as exc:
            raise ScoringError(str(exc)) from None
        tags = resolved.tags
        job_id = tags.get(TAG_JOB_ID, "")
        expected = tags.get(TAG_BANK_PART, "")
        if not job_id or not expected:
            raise ScoringError(f"model {name}/{version} has no recorded job id or bank part digest")
        if name_problem(job_id, "job id") is not None:  # a tag names a file too
            raise ScoringError(f"model {name}/{version}: its recorded job id is not an identifier")
        path = self.models_dir / f"{job_id}.json"
        text = path.read_text("utf-8") if path.is_file() else ""
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != expected:
            # Not (or not this) part on the node: the registered artifact is the reference.
            with tempfile.TemporaryDirectory(prefix="xinyidai-score-") as tmp:
                try:
                    local = mlflow_client(self.tracking).download_artifacts(
                        resolved.run_id, BANK_MODEL_ARTIFACT, tmp
                    )
                    text = Path(local).read_text("utf-8")
                except Exception as exc:  # MLflow raises many kinds; all mean "not there"
                    raise ScoringError(
                        f"model {name}/{version}: the bank's part of job '{job_id}' is not at "
                        f"{path} and its artifact could not be read ({type(exc).__name__})"
                    ) from None
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != expected:
                raise ScoringError(
                    f"model {name}/{version}: the bank's part differs from the sha256 recorded "
                    "on the version"
                )
        digests = {
            key[len("xinyidai.part.") : -len(".sha256")]: value
            for key, value in tags.items()
            if key.startswith("xinyidai.part.") and key.endswith(".sha256") and key != TAG_BANK_PART
        }
        mode = serving_mode_of(tags, f"{name}/{version}")
        served = self._compile(name, version, model_id(name, version), job_id, text, digests)
        served.serving_mode = mode
        return served

    def _compile(
        self,
        name: str,
        version: str,
        model_id: str,
        job_id: str,
        text: str,
        digests: dict[str, str],
    ) -> ServedModel:
        try:
            clf = SecureBoostClassifier.from_json(text)
            bins = clf._bank_bins(self.features)
        except SecureBoostError as exc:
            raise ScoringError(f"model {name}/{version}: {exc}") from None
        trees = clf.trees_
        owned = [
            (t, i)
            for t, tree in enumerate(trees)
            for i, node in tree.nodes.items()
            if not node.is_leaf and node.owner == BANK
        ]
        program = ReachProgram.compile([tree.leaves() for tree in trees], owned)
        go_left = np.empty((bins.shape[0], len(program.splits)), dtype=bool)
        for j, (t, i) in enumerate(program.splits):
            node = trees[t].nodes[i]
            go_left[:, j] = goes_left(bins[:, node.feature], node.threshold)
        owners = tuple(sorted(clf.model_.split_owners() - {BANK}))
        if digests:
            missing = [h for h in owners if h not in digests]
            if missing:
                raise ScoringError(
                    f"model {name}/{version} records no part digest for holder(s) {missing}; "
                    "holders serve only a part whose digest the version names"
                )
        leaves = [tree.nodes[i] for tree in trees for i in tree.leaves()]
        return ServedModel(
            name=name,
            version=version,
            model_id=model_id,
            job_id=job_id,
            clf=clf,
            owners=owners,
            digests=digests,
            bank_reach=program.reach(go_left),
            weights=np.array([leaf.weight for leaf in leaves], dtype=np.float64),
            samples=np.array([max(leaf.n_samples, 1) for leaf in leaves], dtype=np.float64),
            tree_starts=program.tree_starts,
            base_score=float(clf.base_score_),
        )
