"""The bank's orchestration of a federated job: align (PSI) → train (SecureBoost) → evaluate.

Runs at the bank, with the bank's configuration, certificate and audit log (the demo and the
operator's tools call it in-process on the bank's host, as the bank's operator). Every call
to a holder goes through a ``PeerBase`` (gRPC over mutual TLS, or the in-process twin in unit
tests), so nothing crosses except protobuf and blobs, and every call is audited at both ends.

1. ``align``: one PSI job with every holder (``DataHolder.PsiStart``/``PsiBlind``/
   ``PsiAccept``, messages as blobs), one common order for bank ∩ tax ∩ utility
   (``PsiBank.align``). The bank's side is stored under ``NODE_DIR/alignments/<job>.json|rows``,
   each holder's under its own node directory. An intersection below ``min_overlap`` (at any
   holder, or of the common set) stops the job with an ``AlignmentError`` naming the holder,
   and every holder is told to drop it (``PsiAbort``).
2. ``train_secureboost``: the aligned rows with a label, split 70/30 stratified and seeded;
   the ``SecureBoostClassifier`` trains on the training split with the holders'
   ``SecureBoostHolder`` services (each told the alignment and the training rows), scores the
   test split in one round, and reports AUC/KS next to a bank-only LightGBM baseline. The
   bank's model part goes to ``NODE_DIR/models/<job>.json``; holders keep theirs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from federation.audit import AuditLog
from federation.errors import ConfigError, PeerError, XinyidaiError
from federation.files import write_atomic
from federation.psi import PsiBank, PsiOverlapError, PsiProtocolError, PsiResult
from federation.transport.base import PeerBase, new_meta
from models.metrics import ks_statistic, roc_auc
from models.secureboost.estimator import SecureBoostClassifier
from parties.config import NodeConfig
from parties.data.loader import load_table
from parties.data.schema import PartySchema
from parties.holder.alignment import (
    AlignmentError,
    check_name,
    codes_digest,
    encode_table,
)
from protos import holder_pb2

PSI_QUERIES_BLOB = "psi-queries"
PSI_POSITIONS_BLOB = "psi-positions"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------
# the bank's table


@dataclass
class BankTable:
    """The bank's validated table: codes in row order, encoded features, labels."""

    codes: list[str]
    features: pd.DataFrame
    labels: np.ndarray  # float, NaN where not yet observed

    @classmethod
    def load(cls, config: NodeConfig) -> BankTable:
        if config.data is None:
            raise ConfigError(f"bank '{config.node_id}': no data table configured")
        schema: PartySchema = config.data.table_schema(config.node_id)
        table = load_table(config.data.path, schema)
        values, names = encode_table(table, schema, as_of=config.data.as_of)
        label = schema.label_column
        if label is None:
            raise ConfigError(f"bank '{config.node_id}': its table has no label column")
        return cls(
            codes=list(table.index),
            features=pd.DataFrame(values, columns=names),
            labels=table[label].to_numpy(dtype=np.float64),
        )


# ---------------------------------------------------------------------------------------------
# 1. alignment


@dataclass(frozen=True, eq=False)
class Alignment:
    """The bank's view of one alignment: its rows of the common set, in the common order."""

    job_id: str
    holders: tuple[str, ...]
    bank_rows: np.ndarray
    bank_size: int
    holder_sizes: dict[str, int]
    pairwise: dict[str, int]  # bank ∩ holder, per holder (the bank computes these)
    table_digest: str
    seconds: float = 0.0

    @property
    def size(self) -> int:
        return int(self.bank_rows.size)

    def save(self, directory: Path) -> None:
        base = directory / check_name(self.job_id, "alignment id")
        data = self.bank_rows.astype("<u4").tobytes()
        write_atomic(base.with_suffix(".rows"), data)
        meta = {
            "format": "xinyidai.alignment.bank/1",
            "job_id": self.job_id,
            "holders": list(self.holders),
            "size": self.size,
            "bank_size": self.bank_size,
            "holder_sizes": self.holder_sizes,
            "pairwise": self.pairwise,
            "table_digest": self.table_digest,
            "rows_sha256": hashlib.sha256(data).hexdigest(),
            "seconds": self.seconds,
        }
        write_atomic(base.with_suffix(".json"), json.dumps(meta, indent=1).encode())

    @classmethod
    def load(cls, directory: Path, job_id: str, *, table_codes: list[str]) -> Alignment:
        base = directory / check_name(job_id, "alignment id")
        try:
            meta = json.loads(base.with_suffix(".json").read_text(encoding="utf-8"))
            data = base.with_suffix(".rows").read_bytes()
        except FileNotFoundError:
            raise AlignmentError(f"the bank has no alignment '{job_id}' (run align)") from None
        if meta["table_digest"] != codes_digest(table_codes):
            raise AlignmentError(f"alignment '{job_id}' was made on a different bank table")
        if hashlib.sha256(data).hexdigest() != meta["rows_sha256"]:
            raise AlignmentError(f"alignment '{job_id}' is damaged")
        return cls(
            job_id=job_id,
            holders=tuple(meta["holders"]),
            bank_rows=np.frombuffer(data, dtype="<u4").astype(np.int64),
            bank_size=int(meta["bank_size"]),
            holder_sizes={k: int(v) for k, v in meta["holder_sizes"].items()},
            pairwise={k: int(v) for k, v in meta["pairwise"].items()},
            table_digest=meta["table_digest"],
            seconds=float(meta.get("seconds", 0.0)),
        )


def _join(pieces: Iterator[bytes]) -> bytes:
    return b"".join(pieces)


def align_codes(
    codes: list[str],
    holders: Mapping[str, PeerBase],
    *,
    job_id: str,
    salt: bytes,
    min_overlap: int | float = 1,
    purpose: str = "financing",
    workers: int = 1,
    progress: Progress = _quiet,
) -> Alignment:
    """PSI of the bank's ``codes`` with every holder (``DataHolder`` peers), one common order.

    Raises ``AlignmentError`` naming the holder (overlap too small, a malformed message) or
    ``PeerError`` (a holder refused or is down); every holder is then told to drop the job.
    """
    check_name(job_id, "alignment id")
    if not holders:
        raise ConfigError("align needs at least one holder")
    started = time.perf_counter()
    bank = PsiBank(codes, salt=salt, min_overlap=min_overlap, workers=workers)
    meta = lambda: new_meta(purpose, job_id=job_id)  # noqa: E731
    required = bank.required_overlap
    queries = bank.queries()
    contacted: list[str] = []

    def exchange(name: str, peer: PeerBase) -> tuple[bytes, bytes, int]:
        """Messages 1 and 3 of one holder (its set; its answer to the bank's queries)."""
        contacted.append(name)
        started_reply = peer.call(
            "PsiStart",
            holder_pb2.PsiStartRequest(meta=meta(), salt=salt, min_overlap=required),
        )
        holder_set = _join(peer.get_blob(started_reply.set_blob_id, meta=meta()))
        peer.put_blob(PSI_QUERIES_BLOB, queries, meta=meta())
        blinded = peer.call(
            "PsiBlind", holder_pb2.PsiBlindRequest(meta=meta(), queries_blob_id=PSI_QUERIES_BLOB)
        )
        answer = _join(peer.get_blob(blinded.answer_blob_id, meta=meta()))
        return holder_set, answer, int(started_reply.set_size)

    def abort(reason: str) -> None:
        for name in contacted:
            try:
                holders[name].call(
                    "PsiAbort", holder_pb2.PsiAbortRequest(meta=meta(), reason=reason[:500])
                )
            except XinyidaiError:
                pass  # best effort: the holder may be the one that failed

    try:
        with ThreadPoolExecutor(max_workers=len(holders)) as pool:
            futures = {name: pool.submit(exchange, name, peer) for name, peer in holders.items()}
            messages = {name: f.result() for name, f in futures.items()}
    except PeerError as exc:
        abort(f"holder '{exc.peer}' failed: {exc}")
        raise
    results: list[PsiResult] = []
    sizes: dict[str, int] = {}
    short: list[str] = []
    for name, (holder_set, answer, set_size) in messages.items():
        sizes[name] = set_size
        try:
            results.append(bank.finish(answer, holder_set))
        except PsiOverlapError as exc:
            short.append(f"holder '{name}' shares {exc.size}")
            continue
        except PsiProtocolError as exc:
            abort(f"malformed message from holder '{name}'")
            raise AlignmentError(f"alignment '{job_id}': holder '{name}': {exc}") from None
        progress(f"{name}: {set_size} enterprises, {results[-1].size} shared with the bank")
    if short:
        detail = (
            f"alignment '{job_id}': {', '.join(short)} of the bank's {bank.size} enterprises; "
            f"{required} required (min_overlap)"
        )
        abort(detail)
        raise AlignmentError(detail)
    try:
        aligned = bank.align(results)
    except PsiOverlapError as exc:
        detail = (
            f"alignment '{job_id}': {exc.size} enterprises are held by the bank and every holder "
            f"({', '.join(holders)}), {required} required (min_overlap)"
        )
        abort(detail)
        raise AlignmentError(detail) from None
    for i, (name, peer) in enumerate(holders.items()):
        try:
            peer.put_blob(PSI_POSITIONS_BLOB, aligned.positions_bytes(i), meta=meta())
            accepted = peer.call(
                "PsiAccept",
                holder_pb2.PsiAcceptRequest(meta=meta(), positions_blob_id=PSI_POSITIONS_BLOB),
            )
        except PeerError as exc:
            abort(f"holder '{name}' failed to accept: {exc}")
            raise
        if accepted.size != aligned.size:
            raise AlignmentError(
                f"alignment '{job_id}': holder '{name}' stored {accepted.size} rows, "
                f"the common set has {aligned.size}"
            )
    return Alignment(
        job_id=job_id,
        holders=tuple(holders),
        bank_rows=aligned.bank_rows,
        bank_size=bank.size,
        holder_sizes=sizes,
        pairwise={r_name: r.size for r_name, r in zip(holders, results, strict=True)},
        table_digest=codes_digest(codes),
        seconds=time.perf_counter() - started,
    )


def align(
    config: NodeConfig,
    holders: Mapping[str, PeerBase],
    *,
    job_id: str,
    salt: bytes,
    min_overlap: int | float = 1,
    audit: AuditLog | None = None,
    purpose: str = "financing",
    progress: Progress = _quiet,
) -> Alignment:
    """Align the bank's table with ``holders``; store the bank's side under the node dir."""
    table = BankTable.load(config)
    alignment = align_codes(
        table.codes,
        holders,
        job_id=job_id,
        salt=salt,
        min_overlap=min_overlap,
        purpose=purpose,
        workers=config.limits.compute_workers,
        progress=progress,
    )
    alignment.save(config.node_dir / "alignments")
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="psi.align",
            purpose=purpose,
            job_id=job_id,
            counts={"bank_rows": alignment.bank_size, "aligned": alignment.size},
        )
    return alignment


# ---------------------------------------------------------------------------------------------
# 2. training and evaluation


def stratified_split(
    labels: np.ndarray, *, test_fraction: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the train and test rows (each ascending): per class, a seeded shuffle."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), not {test_fraction}")
    rng = np.random.default_rng(seed)
    test: list[np.ndarray] = []
    for value in np.unique(labels):
        members = np.flatnonzero(labels == value)
        k = round(test_fraction * members.size)
        test.append(rng.permutation(members)[:k])
    test_rows = np.sort(np.concatenate(test)) if test else np.empty(0, np.int64)
    train_rows = np.setdiff1d(np.arange(labels.size), test_rows)
    return train_rows.astype(np.int64), test_rows.astype(np.int64)


@dataclass
class TrainingReport:
    """What a training job produced, for the operator (and the tests)."""

    job_id: str
    alignment_id: str
    n_aligned: int
    n_labelled: int
    n_train: int
    n_test: int
    auc: float
    ks: float
    baseline_auc: float
    baseline_ks: float
    seconds: float
    tree_seconds: list[float] = field(default_factory=list)
    split_owners: dict[str, int] = field(default_factory=dict)
    train_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_positions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    test_scores: np.ndarray = field(default_factory=lambda: np.empty(0))

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("train_positions", "test_positions", "test_scores"):
            out.pop(key)
        return out


DEFAULT_PARAMS: dict[str, Any] = {
    "n_trees": 5,
    "max_depth": 3,
    "learning_rate": 0.3,
    "max_bin": 32,
    "random_state": 0,
}


def bank_only_baseline(
    X_train: pd.DataFrame, y_train: np.ndarray, X_test: pd.DataFrame, params: Mapping[str, Any]
) -> np.ndarray:
    """LightGBM on the bank's own features, depth-wise like the federated model."""
    import lightgbm as lgb

    depth = int(params.get("max_depth", 3))
    model = lgb.LGBMClassifier(
        n_estimators=int(params.get("n_trees", 5)),
        max_depth=depth,
        num_leaves=2**depth,
        learning_rate=float(params.get("learning_rate", 0.3)),
        max_bin=int(params.get("max_bin", 32)),
        min_child_samples=20,
        min_child_weight=float(params.get("min_child_weight", 1.0)),
        reg_lambda=float(params.get("reg_lambda", 1.0)),
        random_state=0,
        n_jobs=1,
        verbose=-1,
    )
    model.fit(X_train, y_train)
    return np.asarray(model.predict_proba(X_test))[:, 1]


def train_secureboost(
    config: NodeConfig,
    alignment: Alignment,
    *,
    holders: Mapping[str, PeerBase],
    params: Mapping[str, Any] | None = None,
    job_id: str | None = None,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    is_test: Callable[[list[str]], np.ndarray] | None = None,
    audit: AuditLog | None = None,
    progress: Progress = _quiet,
    on_tree: Callable[[int], None] | None = None,
    resume_wait_s: float = 0.0,
) -> tuple[SecureBoostClassifier, TrainingReport]:
    """Train on the aligned, labelled rows' training split; evaluate on the test split.

    ``holders``: ``SecureBoostHolder`` peers, one per holder of the alignment. ``params``:
    ``SecureBoostClassifier`` keyword arguments (defaults ``DEFAULT_PARAMS``, 2048-bit keys).
    The split: ``is_test(codes)`` (a boolean per aligned row's code, e.g. a benchmark's fixed
    split by id) or else stratified with ``test_fraction`` and ``split_seed``. The bank
    checkpoints every tree under ``NODE_DIR/checkpoints`` (a rerun of the same ``job_id``
    resumes); ``resume_wait_s``: how long to wait for a holder that restarts mid-job.
    """
    missing = [h for h in alignment.holders if h not in holders]
    if missing:
        raise ConfigError(f"alignment '{alignment.job_id}' needs holder(s) {missing}")
    started = time.perf_counter()
    table = BankTable.load(config)
    if alignment.table_digest != codes_digest(table.codes):
        raise AlignmentError(f"alignment '{alignment.job_id}' was made on a different bank table")
    job_id = job_id or f"{alignment.job_id}-sb"
    check_name(job_id, "job id")
    labels = table.labels[alignment.bank_rows]
    labelled = np.flatnonzero(~np.isnan(labels))
    if is_test is not None:
        codes = [table.codes[i] for i in alignment.bank_rows[labelled]]
        test_mask = np.asarray(is_test(codes), dtype=bool)
        train_pos, test_pos = labelled[~test_mask], labelled[test_mask]
        if not (train_pos.size and test_pos.size):
            raise ConfigError(
                f"the split leaves {train_pos.size} training and {test_pos.size} test rows"
            )
    else:
        train_l, test_l = stratified_split(
            labels[labelled], test_fraction=test_fraction, seed=split_seed
        )
        train_pos, test_pos = labelled[train_l], labelled[test_l]
    X = table.features.iloc[alignment.bank_rows].reset_index(drop=True)
    y = labels.astype(np.float64)
    train_mask = np.zeros(alignment.size, dtype=bool)
    train_mask[train_pos] = True

    tree_marks: list[float] = []
    t_fit = time.perf_counter()

    def tree_done(t: int) -> None:
        tree_marks.append(time.perf_counter())
        progress(f"tree {t} done")
        if on_tree is not None:
            on_tree(t)

    kwargs = {**DEFAULT_PARAMS, **(params or {})}
    clf = SecureBoostClassifier(**kwargs, job_id=job_id)
    clf.fit(
        X.iloc[train_pos].reset_index(drop=True),
        y[train_pos],
        holders=holders,
        alignment_id=alignment.job_id,
        alignment_rows=train_mask,
        on_tree=tree_done,
        checkpoint_dir=config.node_dir / "checkpoints",
        resume_wait_s=resume_wait_s,
    )
    scores = clf.predict_proba(
        X.iloc[test_pos].reset_index(drop=True), holders=holders, rows=test_pos
    )[:, 1]
    y_test = y[test_pos]
    baseline = bank_only_baseline(X.iloc[train_pos], y[train_pos], X.iloc[test_pos], kwargs)
    owners: dict[str, int] = {}
    for tree in clf.trees_:
        for node in tree.nodes.values():
            if not node.is_leaf:
                owners[node.owner] = owners.get(node.owner, 0) + 1
    marks = [t_fit, *tree_marks]
    report = TrainingReport(
        job_id=job_id,
        alignment_id=alignment.job_id,
        n_aligned=alignment.size,
        n_labelled=int(labelled.size),
        n_train=int(train_pos.size),
        n_test=int(test_pos.size),
        auc=roc_auc(y_test, scores),
        ks=ks_statistic(y_test, scores),
        baseline_auc=roc_auc(y_test, baseline),
        baseline_ks=ks_statistic(y_test, baseline),
        seconds=time.perf_counter() - started,
        tree_seconds=[b - a for a, b in itertools.pairwise(marks)],
        split_owners=owners,
        train_positions=train_pos,
        test_positions=test_pos,
        test_scores=scores,
    )
    models = config.node_dir / "models"
    write_atomic(models / f"{job_id}.json", clf.to_json().encode())
    write_atomic(models / f"{job_id}.report.json", json.dumps(report.summary(), indent=1).encode())
    # Post-loan monitoring's "expected" population (docs/monitoring.md): the model's scores of
    # every labelled aligned row, training and test split, as the scoring service computes them.
    from parties.bank.monitoring import write_training_population

    population = np.sort(np.r_[train_pos, test_pos])
    write_training_population(
        models,
        job_id,
        clf.decision_function(
            X.iloc[population].reset_index(drop=True), holders=holders, rows=population
        ),
        split=["train" if train_mask[p] else "test" for p in population],
    )
    if audit is not None:
        audit.append(
            direction="local",
            peer=config.node_id,
            operation="secureboost.train",
            purpose=clf.purpose,
            job_id=job_id,
            model_id=job_id,
            counts={"train_rows": report.n_train, "test_rows": report.n_test},
        )
    return clf, report


# ---------------------------------------------------------------------------------------------
# the bank's peers


@contextmanager
def holder_peers(
    config: NodeConfig,
    *,
    audit: AuditLog | None,
    service: str = "DataHolder",
    deadline_s: float | None = None,
) -> Iterator[dict[str, PeerBase]]:
    """gRPC clients of every configured holder, acting as the bank (its certificate and log)."""
    from parties.node import connect

    peers: dict[str, PeerBase] = {
        p.node_id: connect(config, p, audit=audit, service=service, deadline_s=deadline_s)
        for p in config.holders
    }
    try:
        yield peers
    finally:
        for peer in peers.values():
            peer.close()


# ---------------------------------------------------------------------------------------------
# 3. lineage and the registry


__all__ = [
    "Alignment",
    "BankTable",
    "TrainingReport",
    "align",
    "align_codes",
    "holder_peers",
    "stratified_split",
    "train_secureboost",
]
