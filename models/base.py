"""The data holder's side of every federated protocol: one skeleton, each protocol only its steps.

Why: SecureBoost, WOE, LR and scorecard points are four services a holder runs for its banks, and
each needs the same machinery around its protocol — which banks may call, the holder's features
per (bank, alignment), open jobs keyed by (bank, job id), finished model parts kept as private
files, housekeeping. :class:`HolderModule` (after FATE 2.x's ``HeteroModule``) owns that
machinery once; a protocol servicer derives from it and keeps only its RPC handlers.

The rule a servicer follows: it reaches this holder's rows only through :meth:`training_rows`
(a job's ``Start``) and :meth:`rows_for` (every answer about named rows outside an open job),
its jobs only through :meth:`job` / :meth:`open_job` / :meth:`drop_job`, and its finished models
only through :meth:`model` / :meth:`keep_model`. That keeps one door for the holder gate
(:meth:`HolderModule.gate`): every answer about named rows outside an open training job passes
an :class:`EnterpriseGate` (the holder node's consent, alignment and dispute check, injected
with :meth:`HolderModule.use_gate`) or, once per finished job, that job's own evaluation.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

import numpy as np
from google.protobuf.descriptor import ServiceDescriptor

from federation.errors import Refused
from federation.files import write_atomic
from federation.ids import is_name, name_problem
from federation.transport.base import FAILED_PRECONDITION, CallFailed, CallInfo, invalid
from federation.transport.calls import SubjectAccess
from models.binning import BinningError, QuantileBinner
from models.limits import HolderLimits
from models.rows import MaskError, mask_from_bytes

__all__ = [
    "ADMITTED",
    "EVALUATION_WINDOW_S",
    "UNGATED",
    "EnterpriseGate",
    "FeaturesFor",
    "GateRefused",
    "HolderJob",
    "HolderModule",
    "JobKey",
    "RowAccess",
    "Rows",
    "failed",
    "trust_caller",
]

log = logging.getLogger(__name__)

FeaturesFor = Callable[..., tuple[np.ndarray, Sequence[str]]]
"""``features_for(bank, alignment_id) -> (values, names)``: the holder's features for the rows
of one alignment, in its common order (NaN = missing). Raises a ``XinyidaiError`` (or
``CallFailed``) naming what is wrong when there is no such alignment for that bank. One that also
takes ``view`` (``features_for(bank, alignment_id, view="")``, e.g.
``parties.holder.views.FeatureViews``) serves the feature views a job names (LR's
``feature_view``: "woe:<job>[:i,j]", the holder's own WOE values)."""

JobKey = tuple[str, str]
"""(calling bank, job id): the scope of every piece of job state at a holder."""


def failed(detail: str) -> CallFailed:
    """A request this holder cannot serve in its current state (no such job, wrong order...)."""
    return CallFailed(FAILED_PRECONDITION, detail)


class StoredModel(Protocol):
    """A finished model part: JSON-safe both ways (it is written 0600 at the holder)."""

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(kw_only=True)
class HolderJob:
    """What every open job carries: a lock (a job serves one call at a time) and its last use."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    touched: float = field(default_factory=time.monotonic)  # last call (housekeeping)

    def close(self) -> None:
        """Release what the job holds (worker processes, keys, ciphertexts); once, on drop."""


@dataclass(frozen=True)
class RowAccess:
    """One request's reach into this holder's rows: what the holder gate judges.

    ``rows`` are positions in the alignment ``alignment_id`` (the holder maps them to
    enterprises); ``training`` is True for the rows a training job is opened on (``Start``),
    False for every answer about named rows outside an open job (``Predict``, ``ScorePoints``).
    The consent scope of the answer: ``categories`` (data categories, when the servicer knows
    them) or else ``columns`` (the holder's own column names the answer reads; the node maps
    them to categories); both empty means every category the holder holds. ``evaluation``:
    the one post-training evaluation of the job ``job_id`` (rows are recorded, not consented).
    """

    bank: str
    method: str
    job_id: str
    purpose: str
    alignment_id: str
    view: str
    rows: np.ndarray
    training: bool
    columns: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    evaluation: bool = False


EVALUATION_WINDOW_S = 3600.0
"""How long after ``Finish`` a job's one evaluation may come (the bank's training flows
evaluate within seconds); a slot no one used closes then, so it cannot linger as an
unconsented answer for later."""

ADMITTED = frozenset({"allow", "evaluation"})
"""``SubjectAccess.status`` values of rows an answer may use; anything else is a refusal
(``refused:<why>``)."""


class EnterpriseGate(Protocol):
    """The holder node's per-enterprise check (``parties.holder.service.HolderGate``).

    Why a protocol: models must not import the node's consent registry, alignment store or
    disputes, yet every protocol's answers about named rows must pass them; the node injects
    its gate into every servicer it builds (``HolderModule.use_gate``).
    """

    def admit(self, access: RowAccess) -> list[SubjectAccess]:
        """One ``SubjectAccess`` per row of ``access`` (its enterprise, the authorisation id
        that covers it, ``allow`` / ``evaluation`` / ``refused:<why>``), from one read of the
        stores. Raises ``CallFailed`` (INVALID_ARGUMENT) for rows outside the alignment or a
        malformed request, before any work."""
        ...


class GateRefused(Refused):
    """The gate refused an answer; ``subjects`` are the rows to record with the refusal (so the
    refused enterprise's report shows the attempt)."""

    def __init__(self, code: str, reason: str, *, subjects: Sequence[SubjectAccess] = ()):
        self.subjects = list(subjects)
        super().__init__(code, reason)


class _TrustCaller:
    """The open gate: admits every row and records nothing (see :func:`trust_caller`)."""

    def admit(self, access: RowAccess) -> list[SubjectAccess]:
        return []

    def __repr__(self) -> str:
        return "UNGATED"


UNGATED: EnterpriseGate = _TrustCaller()
"""For a data scientist's own in-process data only (``models.local.local_holders``, notebooks,
unit tests): the caller IS the data owner, so there is no enterprise to protect from it. A node
never uses it: ``parties.node`` injects the holder's consent gate."""


def trust_caller() -> EnterpriseGate:
    """:data:`UNGATED`, by a name that says what it does."""
    return UNGATED


@dataclass(frozen=True)
class Rows:
    """Rows a request may use, after the gate: their values and where they sit."""

    values: np.ndarray  # the table's rows at ``positions`` (features, or bins for points)
    names: list[str]  # column names (stay at the holder; never sent)
    positions: np.ndarray  # int64 positions in the alignment
    n_rows: int  # rows of the whole alignment

    @property
    def mask(self) -> np.ndarray:
        """``positions`` as a bool mask over the alignment."""
        out = np.zeros(self.n_rows, dtype=bool)
        out[self.positions] = True
        return out


def _takes_view(features_for: FeaturesFor | None) -> bool:
    """Whether ``features_for`` takes a ``view`` (feature views such as "woe:<job>")."""
    if features_for is None:
        return False
    try:
        return "view" in inspect.signature(features_for).parameters
    except (TypeError, ValueError):  # a builtin without a signature: no views
        return False


JobT = TypeVar("JobT", bound=HolderJob)
ModelT = TypeVar("ModelT", bound=StoredModel)


class HolderModule(Generic[JobT, ModelT]):
    """A holder's service for one protocol: policy, rows, jobs and models; subclasses add RPCs.

    Class settings a protocol gives: ``service`` (its descriptor), ``protocol`` (its name in
    messages), ``caller_role`` (what a listed bank does with this holder), ``model_file`` (the
    file name of a finished part under ``<models_dir>/<bank>/``, ``{job}`` = job id),
    ``feature_error`` (raised for a feature table of the wrong shape) and ``reads_features``
    (False: the service reads its rows elsewhere and overrides :meth:`_read_table`).

    ``features``/``feature_names`` (one fixed table) or ``features_for`` (per job: see
    ``FeaturesFor``); ``banks`` the callers this holder serves; ``models_dir`` where finished
    parts are written (mode 0600) and read back after a restart (None: memory only).
    """

    service: ServiceDescriptor  # an instance attribute to the runtime's Servicer protocol
    protocol: ClassVar[str]
    caller_role: ClassVar[str] = "trains with"
    model_file: ClassVar[str] = "{job}.json"
    feature_error: ClassVar[type[Exception]] = BinningError
    reads_features: ClassVar[bool] = True
    # Column names this holder treats as categories (``use_categorical``); none by default.
    categorical: frozenset[str] = frozenset()

    def __init__(
        self,
        *,
        node_id: str,
        banks: Iterable[str],
        models_dir: Path | None = None,
        features: np.ndarray | None = None,
        feature_names: Sequence[str] | None = None,
        features_for: FeaturesFor | None = None,
        limits: HolderLimits | None = None,
    ):
        self.node_id = node_id
        self.banks = frozenset(banks)
        # The holder's policy limits (node.yaml ``policy:``), checked before any work.
        self.limits = limits if limits is not None else HolderLimits()
        self.models_dir = models_dir
        self.features: np.ndarray | None = None
        self.feature_names: list[str] = []
        self.features_for = self._features_source(features, feature_names, features_for)
        self._serves_views = _takes_view(self.features_for)
        self._jobs: dict[JobKey, JobT] = {}
        self._models: dict[JobKey, ModelT] = {}
        self._lock = threading.Lock()
        # None: refuse every answer about named rows outside a training job (secure default).
        self.enterprise_gate: EnterpriseGate | None = None
        self._evaluations: dict[JobKey, dict[str, Any]] = {}
        self._evaluation_lock = threading.Lock()

    def use_gate(self, gate: EnterpriseGate) -> Self:
        """Put every answer about named rows behind ``gate`` (the node's consent gate, or
        :data:`UNGATED` for in-process use on one's own data); returns ``self``."""
        self.enterprise_gate = gate
        return self

    def _features_source(
        self,
        features: np.ndarray | None,
        feature_names: Sequence[str] | None,
        features_for: FeaturesFor | None,
    ) -> FeaturesFor | None:
        if not self.reads_features:
            return None
        if (features is None) == (features_for is None):
            raise ValueError("give either features (with feature_names) or features_for")
        if features_for is not None:
            return features_for
        names = [str(n) for n in feature_names or []]
        arr = self._checked(features, names)
        self.features, self.feature_names = arr, names

        def fixed(bank: str, alignment_id: str) -> tuple[np.ndarray, Sequence[str]]:
            return arr, names

        return fixed

    # -- policy ------------------------------------------------------------------------------
    def authorise_caller(self, caller: str, method: str) -> None:
        """Only the banks this holder's policy lists may call it at all."""
        if caller not in self.banks:
            raise Refused(
                "caller",
                f"'{caller}' is not a bank this holder {self.caller_role} "
                f"(policy lists: {', '.join(sorted(self.banks)) or 'none'})",
            )

    def gate(self, access: RowAccess) -> list[SubjectAccess]:
        """THE HOLDER GATE — the one place every row a request uses passes.

        Called by :meth:`rows_for` as soon as the request's rows are parsed — before the
        holder's table is read and before anything is computed from it — and by
        :meth:`training_rows` for the rows a training job opens on (``access.training``).
        Every servicer reaches its rows through those two, so this method is the whole gate.

        Outside a training job: with no :class:`EnterpriseGate` injected, refuse (secure by
        default). Otherwise the request is either the job's one evaluation (the first answer
        about the job's own alignment after ``Finish``, each row at most once: bounded by the
        alignment's rows, recorded per enterprise, a second one is gated like any other) or
        passes the gate per enterprise (authorisation for the caller, purpose and categories,
        not revoked or expired, no open dispute). Any refused enterprise refuses the whole
        answer (``Predict``/``ScorePoints`` carry no per-row status): it gets a refusal and
        nothing else (``GateRefused``). Returns one ``SubjectAccess`` per row, which
        :meth:`rows_for` puts in ``call.subjects`` (refusals too), so the audit record names
        each enterprise and the authorisation that covered it.
        """
        if access.training:
            return []
        gate = self.enterprise_gate
        if gate is None:
            raise Refused(
                "consent",
                f"{self.node_id} answers {access.method} about named rows only through its "
                "consent gate, and none is configured here",
            )
        with self._evaluation_lock:
            evaluation = self._evaluation_open(access)
            if evaluation:  # the job's one evaluation: admitted and used up atomically
                subjects = gate.admit(replace(access, evaluation=True))
                refused = [s for s in subjects if s.status not in ADMITTED]
                if not refused:
                    self._close_evaluation(access)
        if not evaluation:  # gated per enterprise, outside the lock: calls do not queue
            subjects = gate.admit(replace(access, evaluation=False))
            refused = [s for s in subjects if s.status not in ADMITTED]
        if refused:
            first = refused[0]
            why = first.status.removeprefix("refused:")
            raise GateRefused(
                {"auth-id": "auth-id", "disputed": "disputed", "quota": "limit"}.get(
                    why, "consent"
                ),
                f"{access.method}: {len(refused)} of {len(subjects)} enterprises may not be "
                f"answered for {access.bank} (purpose {access.purpose[:32]!r}); first: "
                f"{first.uscc} ({why}); nothing is answered",
                subjects=subjects,
            )
        return subjects

    # -- the one evaluation of a finished job ------------------------------------------------
    def _evaluation_path(self, bank: str, job_id: str) -> Path | None:
        path = self._model_path(bank, job_id)
        return None if path is None else path.with_name(path.name + ".evaluation")

    def _evaluation_state(self, key: JobKey) -> dict[str, Any] | None:
        state = self._evaluations.get(key)
        if state is None:
            path = self._evaluation_path(*key)
            if path is not None and path.exists():
                try:
                    loaded = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    loaded = {"state": "used"}  # unreadable: fail closed
                state = loaded if isinstance(loaded, dict) else {"state": "used"}
                self._evaluations[key] = state
        return state

    def _write_evaluation(self, key: JobKey, state: dict[str, Any]) -> None:
        self._evaluations[key] = state
        path = self._evaluation_path(*key)
        if path is not None:
            write_atomic(path, json.dumps(state).encode("utf-8"))

    def open_evaluation(self, key: JobKey, alignment_id: str) -> None:
        """A job finished here: its bank may evaluate it once on ``alignment_id`` without
        per-enterprise consent. A slot once used (or recorded) is never reopened."""
        if not alignment_id:
            return
        with self._evaluation_lock:
            if self._evaluation_state(key) is None:
                self._write_evaluation(
                    key, {"state": "open", "alignment_id": alignment_id, "opened": time.time()}
                )

    def _evaluation_open(self, access: RowAccess) -> bool:
        """Whether ``access`` is the job's evaluation: slot open, the job's own alignment,
        every row at most once (so at most the alignment's rows)."""
        state = self._evaluation_state((access.bank, access.job_id))
        if state is None or state.get("state") != "open":
            return False
        opened = state.get("opened")
        if not isinstance(opened, int | float) or time.time() - opened > EVALUATION_WINDOW_S:
            return False
        if state.get("alignment_id") != access.alignment_id or access.rows.size == 0:
            return False
        return bool(np.unique(access.rows).size == access.rows.size)

    def _close_evaluation(self, access: RowAccess) -> None:
        key = (access.bank, access.job_id)
        state = dict(self._evaluation_state(key) or {})
        state.update(
            state="used", method=access.method, rows=int(access.rows.size), used=time.time()
        )
        self._write_evaluation(key, state)

    # -- rows --------------------------------------------------------------------------------
    def _checked(self, features: Any, names: Sequence[str]) -> np.ndarray:
        arr = np.asarray(features, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != len(names):
            raise self.feature_error(
                f"holder '{self.node_id}': features must be (rows, {len(names)}) for the "
                f"given names, got shape {arr.shape}"
            )
        return arr

    def _cached_table(
        self,
        key: tuple[str, str, str],
        build: Callable[[], tuple[np.ndarray, list[str]]],
        *,
        keep: int = 4,
    ) -> tuple[np.ndarray, list[str]]:
        """``build()`` for (bank, alignment, view), kept for the last ``keep`` keys.

        Why: a served model reads the same alignment for every score, and rebuilding it each
        time (alignment file, one-hot, WOE or bin transform of every row) repeats the same
        work. The node's table is fixed while it runs, and the gate still sees every request
        first. Kept read-only, so no caller can change what the next one reads."""
        cache: OrderedDict[tuple[str, str, str], tuple[np.ndarray, list[str]]] = (
            self.__dict__.setdefault("_table_cache", OrderedDict())
        )
        with self._lock:
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                return hit
        found = build()
        found[0].setflags(write=False)
        with self._lock:
            cache[key] = found
            while len(cache) > keep:
                cache.popitem(last=False)
        return found

    def _read_table(self, bank: str, alignment_id: str, view: str) -> tuple[np.ndarray, list[str]]:
        """Every row of one alignment (and view) for ``bank``: values and column names.

        Private on purpose: handlers go through :meth:`training_rows` or :meth:`rows_for`.
        """
        if self.features_for is None:
            raise failed(f"{self.node_id} keeps no feature table for {self.protocol}")
        if view:
            if not self._serves_views:
                raise invalid(f"{self.node_id} serves no feature views (asked for {view!r})")
            values, names = self.features_for(bank, alignment_id, view=view)
        else:
            values, names = self.features_for(bank, alignment_id)
        text = [str(n) for n in names]
        return self._checked(values, text), text

    def own_table(
        self, bank: str, alignment_id: str, view: str = ""
    ) -> tuple[np.ndarray, list[str]]:
        """Every row of an alignment for the holder's *own* use (e.g. WOE values it feeds to
        its own LR): never an answer to a request — those go through :meth:`rows_for`."""
        return self._read_table(bank, alignment_id, view)

    def _access(
        self,
        call: CallInfo,
        alignment_id: str,
        view: str,
        rows: np.ndarray,
        training: bool,
        *,
        columns: Sequence[str] = (),
        categories: Sequence[str] = (),
    ) -> RowAccess:
        return RowAccess(
            bank=call.caller,
            method=call.method,
            job_id=str(call.meta.job_id),
            purpose=str(call.meta.purpose),
            alignment_id=alignment_id,
            view=view,
            rows=rows,
            training=training,
            columns=tuple(str(c) for c in columns),
            categories=tuple(str(c) for c in categories),
        )

    def training_rows(
        self, call: CallInfo, *, alignment_id: str, rows: bytes, view: str = ""
    ) -> Rows:
        """The rows a training job opens on: the alignment's, or the ``rows`` mask of them."""
        table, names = self._read_table(call.caller, alignment_id, view)
        n = table.shape[0]
        selected = self.row_mask(rows, n, "Start.rows") if rows else np.ones(n, dtype=bool)
        positions = np.flatnonzero(selected).astype(np.int64)
        self.gate(self._access(call, alignment_id, view, positions, training=True))
        values = table[selected] if rows else table
        return Rows(values=values, names=names, positions=positions, n_rows=n)

    def rows_for(
        self,
        call: CallInfo,
        *,
        alignment_id: str,
        rows: Sequence[int] | np.ndarray,
        view: str = "",
        what: str = "",
        columns: Sequence[str] = (),
        categories: Sequence[str] = (),
    ) -> Rows:
        """The named rows a request outside a training job asks about, after the holder gate.

        ``rows`` are positions in ``alignment_id``; ``what`` names the request in errors;
        ``columns``/``categories`` the answer's consent scope (see :class:`RowAccess`). The
        gate sees them before the table is read (no work for a refused request); the range
        check against the alignment follows.
        """
        positions = np.asarray(rows, dtype=np.int64).ravel()
        access = self._access(
            call, alignment_id, view, positions, False, columns=columns, categories=categories
        )
        try:
            subjects = self.gate(access) or []
        except GateRefused as exc:
            call.subjects.extend(exc.subjects)
            raise
        call.subjects.extend(subjects)
        if subjects:
            call.counts["enterprises"] = len(subjects)
            evaluated = sum(s.status == "evaluation" for s in subjects)
            if evaluated:
                call.counts["evaluation_rows"] = evaluated
        table, names = self._read_table(call.caller, alignment_id, view)
        n = table.shape[0]
        if positions.size and (positions.min() < 0 or positions.max() >= n):
            raise invalid(f"{what or call.method}: rows must be in [0, {n})")
        return Rows(values=table[positions], names=names, positions=positions, n_rows=n)

    def use_categorical(self, names: Iterable[str]) -> Self:
        """Treat the columns ``names`` as categories (codes from ``parties.data.encoding``):
        binned one bin per category, split natively where the protocol can; returns ``self``."""
        self.categorical = frozenset(str(n) for n in names)
        return self

    def categorical_indices(self, names: Sequence[str]) -> list[int]:
        """Positions of this holder's categorical columns among ``names``."""
        return [j for j, n in enumerate(names) if n in self.categorical]

    def bin_rows(
        self, call: CallInfo, rows: Rows, max_bin: int
    ) -> tuple[QuantileBinner, np.ndarray]:
        """Bin a job's rows locally (quantile bins, category bins for categorical columns, this
        holder's own). A column that cannot be binned is named by index only: column names stay
        at the holder (the bank sees keyed hashes), so the name goes to this node's log, not
        into the refusal."""
        binner = QuantileBinner(max_bin=max_bin)
        try:
            bins = binner.fit_transform(
                rows.values,
                feature_names=rows.names,
                categorical=self.categorical_indices(rows.names),
            )
        except BinningError as exc:
            log.error("%s: %s job %s: %s", self.node_id, self.protocol, call.meta.job_id, exc)
            where = "a feature" if exc.index is None else f"feature #{exc.index}"
            raise failed(
                f"{self.node_id} cannot bin {where} of {len(rows.names)}: {exc.reason} "
                f"(the column name is in {self.node_id}'s log)"
            ) from None
        return binner, bins

    @staticmethod
    def row_mask(buf: bytes, n_rows: int, what: str) -> np.ndarray:
        """A row bitmask from a request (a malformed one is the caller's error)."""
        try:
            return mask_from_bytes(buf, n_rows, what)
        except MaskError as exc:
            raise invalid(str(exc)) from None

    # -- jobs --------------------------------------------------------------------------------
    @staticmethod
    def key(call: CallInfo) -> JobKey:
        return (call.caller, str(call.meta.job_id))

    @staticmethod
    def check_job_id(call: CallInfo) -> JobKey:
        """A new job's key; its id names files and blob folders, so it must be a safe name."""
        problem = name_problem(call.meta.job_id, "meta.job_id")
        if problem is not None:
            raise invalid(f"{call.method}: {problem} (it scopes all of the job's state)")
        return HolderModule.key(call)

    def job(self, call: CallInfo) -> JobT:
        """The open job this call belongs to (and mark it used)."""
        with self._lock:
            job = self._jobs.get(self.key(call))
        if job is None:
            raise failed(f"no open {self.protocol} job '{call.meta.job_id}' from {call.caller}")
        job.touched = time.monotonic()
        return job

    def peek_job(self, call: CallInfo) -> JobT | None:
        """The open job of this call's key, if any (``Start`` deciding on a resume)."""
        with self._lock:
            return self._jobs.get(self.key(call))

    def open_job(self, call: CallInfo, job: JobT) -> None:
        """Register ``job`` under the call's key; a job it replaces (a resume) is closed."""
        with self._lock:
            replaced = self._jobs.get(self.key(call))
            self._jobs[self.key(call)] = job
        if replaced is not None and replaced is not job:
            replaced.close()

    def drop_job(self, call: CallInfo, job: JobT) -> None:
        """The job is over (finished or aborted): release it and forget its working state."""
        key = self.key(call)
        job.close()
        with self._lock:
            self._jobs.pop(key, None)
        self._forget(key, finished=True)

    def _forget(self, key: JobKey, *, finished: bool) -> None:
        """Protocol hook: remove what a dropped job left outside memory (blobs, checkpoints).

        ``finished`` False: the job was only idle (its checkpoint may still be resumed).
        """

    def open_jobs(self) -> list[JobKey]:
        with self._lock:
            return sorted(self._jobs)

    def sweep(self, *, idle_s: float, checkpoint_days: float = 7.0) -> dict[str, int]:
        """Housekeeping: drop jobs no call touched for ``idle_s`` (their keys, ciphertexts and
        blobs; a checkpoint stays so the bank may still resume) and checkpoints older than
        ``checkpoint_days``. Nodes run this periodically."""
        now = time.monotonic()
        with self._lock:
            stale = [(k, j) for k, j in self._jobs.items() if now - j.touched > idle_s]
        for key, job in stale:
            with job.lock:
                job.close()
                with self._lock:
                    self._jobs.pop(key, None)
            self._forget(key, finished=False)
            log.warning(
                "%s: dropped %s job %s of %s (idle)", self.node_id, self.protocol, key[1], key[0]
            )
        return {"jobs": len(stale), "checkpoints": self._sweep_files(checkpoint_days)}

    def _sweep_files(self, checkpoint_days: float) -> int:
        """Protocol hook: delete files older than ``checkpoint_days``; returns how many."""
        return 0

    # -- finished models ---------------------------------------------------------------------
    def _model_path(self, bank: str, job_id: str) -> Path | None:
        if self.models_dir is None or not is_name(bank) or not is_name(job_id):
            return None
        return self.models_dir / bank / self.model_file.format(job=job_id)

    def _decode_model(self, data: dict[str, Any]) -> ModelT:
        """Protocol hook: a model part from its saved JSON (``to_dict``'s inverse)."""
        raise NotImplementedError

    def _no_model(self, bank: str, job_id: str) -> str:
        return f"no finished {self.protocol} model '{job_id}' for {bank}"

    def has_model(self, key: JobKey, *, stored: bool = True) -> bool:
        """A finished model of ``key`` is held (in memory, or with ``stored`` also on disk)."""
        with self._lock:
            if key in self._models:
                return True
        path = self._model_path(*key) if stored else None
        return path is not None and path.exists()

    def model(self, bank: str, job_id: str) -> ModelT:
        """This holder's part of a finished model (its own secret), read back if needed."""
        with self._lock:
            found = self._models.get((bank, job_id))
        if found is None:
            path = self._model_path(bank, job_id)
            if path is not None and path.exists():
                found = self._decode_model(json.loads(path.read_text(encoding="utf-8")))
                with self._lock:
                    self._models[(bank, job_id)] = found
        if found is None:
            raise failed(self._no_model(bank, job_id))
        return found

    def keep_model(self, call: CallInfo, model: ModelT, *, evaluate_on: str = "") -> None:
        """Keep a finished part: atomically, mode 0600 from the first byte (it is data).

        Opens the job's one evaluation on ``evaluate_on`` (default: the model's own
        ``alignment_id``), see :meth:`gate`."""
        key = self.key(call)
        path = self._model_path(*key)
        if path is not None:
            write_atomic(path, json.dumps(model.to_dict()).encode("utf-8"))
        with self._lock:
            self._models[key] = model
        self.open_evaluation(key, evaluate_on or str(getattr(model, "alignment_id", "") or ""))

    def _check_loaded(self, model: ModelT) -> None:
        """Protocol hook: refuse a loaded part that cannot fit this node's table."""

    def _check_width(self, n_features: int, what: str) -> None:
        if self.features is not None and n_features != self.features.shape[1]:
            raise self.feature_error(
                f"holder '{self.node_id}': {what} was binned on {n_features} features, this "
                f"node has {self.features.shape[1]}"
            )

    def load_model(self, bank: str, job_id: str, model: ModelT) -> None:
        """Serve a saved model part, e.g. after a restart or on a scoring node whose table
        holds new applicants; it must fit this node's columns."""
        self._check_loaded(model)
        with self._lock:
            self._models[(bank, job_id)] = model
