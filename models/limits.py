"""A data holder's policy limits: how much one bank may make the holder reveal.

Why: in every training protocol the bank chooses what the holder computes — how many trees, how
deep, how finely binned, which of the holder's splits it takes, how often a job starts again.
A dishonest bank can turn those choices into a read-out of the holder's data (a "probe model" of
one stump per holder bin returns every row's bin through ``ApplySplit`` partitions and, later,
reach masks). Cryptography cannot stop a bank from asking; a holder can only refuse to answer
beyond fixed bounds. This module holds those bounds (:class:`HolderLimits`, built by
``parties/node.py`` from ``node.yaml``'s ``policy:``) and the checks every protocol's ``Start``
and ``ApplySplit`` run *before* any work (before a key is verified, a row read or a ciphertext
touched). Every refusal is ``Refused("limit", ...)`` naming the limit and its value.

What it does not bound: the encrypted gradients are the bank's choice, so crafted gradients
can make a holder's bin sums decode to row membership; only zero-knowledge proofs or MPC would
stop that (docs/secureboost.md, "What a dishonest bank can still learn").
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federation.audit import AuditLog
from federation.crypto.keys import _PARAMS_MAGIC
from federation.crypto.testing import insecure_key_sizes_allowed
from federation.errors import ConfigError, Refused
from federation.files import write_atomic
from federation.ids import is_name
from federation.transport.base import invalid

__all__ = ["DAY_S", "LIMIT", "HolderLimits", "JobLedger", "paillier_modulus_bits"]

log = logging.getLogger(__name__)

LIMIT = "limit"
"""The refusal code of every policy-limit refusal (``PeerRefused.refusal`` at the bank)."""
DAY_S = 86_400.0


def _refuse(limit: str, value: int, detail: str) -> Refused:
    return Refused(LIMIT, f"holder policy {limit} = {value}: {detail}")


def paillier_modulus_bits(buf: bytes) -> int | None:
    """The bit length of the modulus in serialised Paillier public parameters, read from the
    header alone (no arithmetic), or None when ``buf`` is not such parameters (the full parser
    then names the problem). Why: a holder must refuse an oversized key *before* verifying it —
    verification is a modular exponentiation whose cost grows with the cube of the key size."""
    head = len(_PARAMS_MAGIC) + 3
    if len(buf) <= head or bytes(buf[: len(_PARAMS_MAGIC)]) != _PARAMS_MAGIC:
        return None
    n_bytes = int(struct.unpack(">H", bytes(buf[len(_PARAMS_MAGIC) + 1 : head]))[0])
    first = int(buf[head])
    if n_bytes == 0 or first == 0:
        return None
    return (n_bytes - 1) * 8 + first.bit_length()


class JobLedger:
    """Training jobs started per (bank, alignment) in the last 24 h and resumes per job.

    Persisted (JSON, mode 0600, written atomically) when ``path`` is given, so a restart does not
    reset the counts; in memory only otherwise (tests, in-process holders). One ledger is shared
    by every protocol of a node: the jobs-per-day bound counts SecureBoost, WOE and LR jobs alike.
    """

    def __init__(self, path: Path | None = None):
        self.path = path
        self._lock = threading.Lock()
        self._jobs: dict[str, list[float]] = {}
        self._resumes: dict[str, int] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            jobs = {str(k): [float(t) for t in v] for k, v in data["jobs"].items()}
            resumes = {str(k): int(v) for k, v in data["resumes"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            # Fail closed: a damaged ledger must not silently reset every count.
            raise ConfigError(
                f"limit ledger {path} is damaged ({type(exc).__name__}); restore it or, to reset "
                "every job and resume count deliberately, delete it"
            ) from None
        self._jobs, self._resumes = jobs, resumes

    def _save(self) -> None:
        if self.path is not None:
            data: dict[str, Any] = {
                "format": "xinyidai.holder-limits/1",
                "jobs": self._jobs,
                "resumes": self._resumes,
            }
            write_atomic(self.path, json.dumps(data, sort_keys=True).encode("utf-8"))

    def admit_job(self, key: str, *, limit: int, now: float) -> int:
        """Count one more job under ``key`` if fewer than ``limit`` started in the last day;
        returns the count before it, or raises ``Refused``."""
        with self._lock:
            recent = [t for t in self._jobs.get(key, []) if now - t < DAY_S]
            if len(recent) >= limit:
                return -len(recent)
            self._jobs[key] = [*recent, now]
            for other in [k for k, v in self._jobs.items() if all(now - t >= DAY_S for t in v)]:
                del self._jobs[other]
            self._save()
            return len(recent)

    def admit_resume(self, key: str, *, limit: int) -> int:
        """Count one more resume of the job ``key`` if fewer than ``limit`` happened."""
        with self._lock:
            done = self._resumes.get(key, 0)
            if done >= limit:
                return -done - 1
            self._resumes[key] = done + 1
            self._save()
            return done

    def resumes(self, key: str) -> int:
        with self._lock:
            return self._resumes.get(key, 0)


@dataclass(frozen=True, kw_only=True)
class HolderLimits:
    """One holder's limits (``node.yaml`` ``policy:``; the field descriptions there say why).

    ``ledger`` keeps the job and resume counts (shared by a node's protocols); ``audit`` is where
    an alert goes when a bank's model crosses a limit (None: the node's log only).
    """

    max_trees: int = 200
    max_depth: int = 8
    max_bins: int = 64
    max_thresholds_per_feature: int = 32
    max_jobs_per_alignment_per_day: int = 24
    max_resumes_per_job: int = 10
    min_holders: int = 1
    paillier_min_bits: int = 2048
    paillier_max_bits: int = 4096
    ledger: JobLedger = field(default_factory=JobLedger, compare=False, repr=False)
    audit: AuditLog | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "max_trees",
            "max_depth",
            "max_bins",
            "max_thresholds_per_feature",
            "max_jobs_per_alignment_per_day",
            "max_resumes_per_job",
            "min_holders",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "max_resumes_per_job" else 1):
                raise ValueError(f"HolderLimits.{name} must be a positive integer, got {value!r}")
        if not 2 <= self.max_bins <= 255:
            raise ValueError(f"HolderLimits.max_bins must be in [2, 255], got {self.max_bins}")
        if not 0 < self.paillier_min_bits <= self.paillier_max_bits:
            raise ValueError("HolderLimits: paillier_min_bits must be in (0, paillier_max_bits]")

    # -- the job's shape -------------------------------------------------------------------
    def check_trees(self, *, n_trees: int, max_depth: int) -> None:
        """A SecureBoost job's size: every tree and level is another round of answers."""
        if n_trees > self.max_trees:
            raise _refuse("max_trees", self.max_trees, f"the job asks {n_trees} trees")
        if max_depth > self.max_depth:
            raise _refuse("max_depth", self.max_depth, f"the job asks depth {max_depth}")

    def check_bins(self, max_bin: int) -> None:
        """Bins per feature: the finest resolution at which any answer describes a value."""
        if max_bin > self.max_bins:
            raise _refuse("max_bins", self.max_bins, f"the job asks {max_bin} bins per feature")

    def check_holders(self, n_holders: int) -> None:
        """LR: with one holder the bank computes that holder's linear predictor."""
        if n_holders < self.min_holders:
            raise Refused(
                "min_holders",
                f"holder policy min_holders = {self.min_holders}: the job has {n_holders} "
                "holder(s) (fewer would let the bank unmask a holder's linear predictor)",
            )

    def check_paillier(self, buf: bytes) -> None:
        """The peer's Paillier modulus, from the header of its public parameters, before the
        parameters are verified or used (a 32,768-bit key costs a holder seconds per step).
        The test-only small-key switch lowers the minimum only, never the maximum."""
        bits = paillier_modulus_bits(buf)
        if bits is None:
            return  # malformed: the parser's INVALID_ARGUMENT names it
        if bits > self.paillier_max_bits:
            raise _refuse(
                "paillier_max_bits", self.paillier_max_bits, f"the bank's key has {bits} bits"
            )
        if bits < self.paillier_min_bits and not insecure_key_sizes_allowed():
            raise _refuse(
                "paillier_min_bits", self.paillier_min_bits, f"the bank's key has {bits} bits"
            )

    # -- how often -------------------------------------------------------------------------
    def admit_job(
        self, *, node: str, protocol: str, bank: str, alignment_id: str, now: float | None = None
    ) -> None:
        """A new training job on ``alignment_id``: refused beyond the daily count (each job is
        another full round of answers about the same rows)."""
        if alignment_id and not is_name(alignment_id):
            raise invalid(f"{protocol} Start: alignment_id is not a valid name")
        key = f"{node}/{bank}/{alignment_id or '-'}"
        limit = self.max_jobs_per_alignment_per_day
        count = self.ledger.admit_job(key, limit=limit, now=time.time() if now is None else now)
        if count < 0:
            raise _refuse(
                "max_jobs_per_alignment_per_day",
                limit,
                f"{-count} training jobs of {bank} on alignment "
                f"'{alignment_id or '(fixed table)'}' started in the last 24 h",
            )

    def admit_resume(self, *, node: str, protocol: str, bank: str, job_id: str) -> None:
        """A resumed job re-grows trees (new gradients, new answers): bounded per job."""
        limit = self.max_resumes_per_job
        done = self.ledger.admit_resume(f"{node}/{protocol}/{bank}/{job_id}", limit=limit)
        if done < 0:
            raise _refuse(
                "max_resumes_per_job",
                limit,
                f"job '{job_id}' was already resumed {-done - 1} times",
            )

    # -- what a model reveals ----------------------------------------------------------------
    def check_thresholds(
        self, *, used: Mapping[int, set[int]], feature: int, threshold: int
    ) -> None:
        """A split on ``feature`` at ``threshold`` joins the thresholds the bank already holds
        partitions for (``used``: feature → thresholds, over the whole job, resumes included).
        The bank learns each row's value only up to the intervals between distinct thresholds,
        so their count per feature is what bounds a probe model."""
        seen = used.get(feature, set())
        if threshold not in seen and len(seen) >= self.max_thresholds_per_feature:
            raise _refuse(
                "max_thresholds_per_feature",
                self.max_thresholds_per_feature,
                f"the model would split feature #{feature} at a "
                f"{len(seen) + 1}th distinct threshold",
            )

    def alert(
        self,
        *,
        operation: str,
        bank: str,
        job_id: str,
        reason: str,
        counts: Mapping[str, int] | None = None,
    ) -> None:
        """Record that a bank crossed a limit: an audit record (and the node's log), so an
        operator sees a probing bank, not only the bank its refusal."""
        log.warning("ALERT %s: bank %s job %s: %s", operation, bank, job_id, reason)
        if self.audit is None:
            return
        self.audit.alert(
            peer=bank, operation=operation, job_id=job_id, reason=reason, counts=counts
        )
