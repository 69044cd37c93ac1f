"""What one audit record is: its fields, their limits, and the hash that chains it.

Kept apart from storage so the record format (and so every hash ever written) has one
definition that the chain, the diagnosis and any future witness of a peer's head share.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from federation.errors import AuditChainError

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record."""

Direction = Literal["served", "made", "local"]
DIRECTIONS: tuple[str, ...] = ("served", "made", "local")

# Column widths, checked in ``clean_content`` so SQLite (which ignores them) and PostgreSQL
# (which enforces them) accept exactly the same records.
LIMITS = {
    "node_id": 63,
    "peer": 255,
    "operation": 128,
    "purpose": 64,
    "job_id": 128,
    "model_id": 128,
    "subject": 64,
    "request_id": 64,
    "decision": 16,
    "peer_head": 84,
}

SUBJECT_LIMITS = {"uscc": 64, "auth_id": 128, "status": 64}

CONTENT_FIELDS = (
    "seq",
    "ts",
    "node_id",
    "direction",
    "peer",
    "operation",
    "purpose",
    "job_id",
    "model_id",
    "subject",
    "request_id",
    "counts",
    "decision",
    "reason",
)
"""The fields every record's hash covers, i.e. all but ``prev_hash``, ``hash`` and the
optional fields below."""

OPTIONAL_FIELDS = ("peer_head", "subjects_sha256")
"""Hashed only when non-empty, so records written before they existed verify unchanged:
``peer_head`` is the other side's audit chain head (``SEQ:HASH``) as it stated it in this call
(its witness of that peer), ``subjects_sha256`` the digest of the record's subject rows."""


@dataclass(frozen=True)
class SubjectAccess:
    """One enterprise a request is about, the authorisation that covered it and the outcome.

    Why: a batch request touches many enterprises; each gets its own row next to the call's
    audit record (covered by the record's hash), so an enterprise's report shows every access.
    ``status`` is a short word ("allow", "refused:revoked"...); ``auth_id`` empty if none.
    """

    uscc: str
    auth_id: str = ""
    status: str = "allow"


def subjects_digest(subjects: Sequence[SubjectAccess]) -> str:
    """sha256 (hex) of the sorted subject rows; "" for none (the record then hashes as before)."""
    if not subjects:
        return ""
    rows = sorted([s.uscc, s.auth_id, s.status] for s in subjects)
    return hashlib.sha256(canonical_json(rows)).hexdigest()


def clean_subjects(subjects: Iterable[SubjectAccess]) -> list[SubjectAccess]:
    """Check subject rows before anything is written (same strictness as the record)."""
    out: list[SubjectAccess] = []
    for item in subjects:
        for name, limit in SUBJECT_LIMITS.items():
            value = getattr(item, name, None)
            if not isinstance(value, str):
                raise TypeError(f"audit subject {name} must be str, got {type(value).__name__}")
            if len(value) > limit:
                raise ValueError(f"audit subject {name} longer than {limit} characters")
        if not item.uscc:
            raise ValueError("audit subject uscc must not be empty")
        out.append(SubjectAccess(item.uscc, item.auth_id, item.status))
    return out


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: one byte string per value, so hashes are reproducible."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def record_hash(prev_hash: str, content: Mapping[str, Any]) -> str:
    """``sha256(prev_hash || canonical JSON of the record's other fields)``, hex."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical_json(dict(content))).hexdigest()


@dataclass(frozen=True)
class AuditEntry:
    """One audit record as stored. ``counts`` holds sizes (rows, ciphertexts...), never data."""

    seq: int
    ts: float
    node_id: str
    direction: str
    peer: str
    operation: str
    purpose: str
    job_id: str
    model_id: str
    subject: str
    request_id: str
    counts: dict[str, int]
    decision: str
    reason: str
    prev_hash: str
    hash: str
    peer_head: str = ""
    subjects_sha256: str = ""

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["counts"] = dict(self.counts)
        return out

    def content(self) -> dict[str, Any]:
        """The fields the hash covers (everything but ``prev_hash`` and ``hash``)."""
        out = {name: getattr(self, name) for name in CONTENT_FIELDS}
        out.update({name: getattr(self, name) for name in OPTIONAL_FIELDS if getattr(self, name)})
        return out


@dataclass(frozen=True)
class AuditProblem:
    """One finding of ``verify``. ``kind`` is one of: edited, deleted, inserted, reordered,
    truncated, head. ``seq`` is where the record sits in the table (for deleted and truncated:
    the first missing seq; 0 for problems with the head itself)."""

    seq: int
    kind: str
    detail: str

    def __str__(self) -> str:
        where = "audit head" if self.seq == 0 else f"record {self.seq}"
        return f"{where}: {self.detail}"


@dataclass
class AuditVerification:
    """Result of ``AuditLog.verify``: ``ok`` only if every check passed."""

    ok: bool
    n_records: int
    head_hash: str
    problems: list[AuditProblem] = field(default_factory=list)
    head_seq: int = 0

    def raise_if_broken(self) -> None:
        """Raise ``AuditChainError`` naming the first problem (for start-up checks)."""
        if not self.ok:
            more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
            first = self.problems[0] if self.problems else "verification failed"
            raise AuditChainError(f"audit log failed verification: {first}{more}")


def clean_content(
    *,
    direction: str,
    fields: Mapping[str, Any],
    counts: Mapping[str, int] | None,
    reason: Any,
    ts: float | None,
) -> tuple[dict[str, int], float]:
    """Check one record's caller-given fields before anything is written.

    Returns the counts as a plain ``dict[str, int]`` and the timestamp to store. The checks
    are strict because a record, once chained, can never be corrected.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    for name, value in fields.items():
        if not isinstance(value, str):
            raise TypeError(f"audit field {name} must be str, got {type(value).__name__}")
        if len(value) > LIMITS[name]:
            raise ValueError(f"audit field {name} longer than {LIMITS[name]} characters")
    if not fields["operation"]:
        raise ValueError("audit field operation must not be empty")
    if not fields["decision"]:
        raise ValueError("audit field decision must not be empty")
    if not isinstance(reason, str):
        raise TypeError(f"audit field reason must be str, got {type(reason).__name__}")
    clean_counts: dict[str, int] = {}
    for key, number in (counts or {}).items():
        if not isinstance(key, str) or isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"audit counts must map str to int, got {key!r}: {number!r}")
        clean_counts[key] = int(number)
    stamp = time.time() if ts is None else float(ts)
    if not math.isfinite(stamp):
        raise ValueError(f"audit timestamp must be finite, got {ts!r}")
    return clean_counts, stamp
