"""Where an alignment lives once PSI is done, and the PSI jobs still open at a holder.

Why here, next to the protocol: both halves end by writing their side of the common set, and a
training job later trusts those rows blindly. Each side therefore stores its rows with their
sha256 and the digest of the table they index (``codes_digest``), so a half-written, edited or
stale alignment is refused rather than silently misaligning features with labels.

- ``AlignmentStore``: a holder's rows of each (bank, job), under ``NODE_DIR/alignments/<bank>/``.
- ``PsiSessions``: a holder's open PSI jobs, one ``federation.psi.PsiHolder`` per (bank, job).
The bank's side (``Alignment``) is stored by ``models.psi.active``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from federation.errors import XinyidaiError
from federation.files import write_atomic
from federation.ids import name_problem
from federation.psi import PsiHolder

__all__ = [
    "AlignmentError",
    "AlignmentStore",
    "PsiSessions",
    "check_name",
    "codes_digest",
    "rows_to_bytes",
]


class AlignmentError(XinyidaiError):
    """An alignment is missing, damaged, or was made on a different table."""


def check_name(value: str, what: str) -> str:
    """``value`` if it is a safe identifier (``federation.ids``), else ``AlignmentError``: ids
    become file names here, so a bad one must never reach the file system."""
    problem = name_problem(value, what)
    if problem is not None:
        raise AlignmentError(problem)
    return value


def codes_digest(codes: Sequence[str]) -> str:
    """sha256 over the table's codes in row order: an alignment is valid only for this table."""
    h = hashlib.sha256(b"xinyidai-alignment-table|")
    for code in codes:
        h.update(code.encode("ascii", "replace") + b"\n")
    return h.hexdigest()


def rows_to_bytes(rows: np.ndarray) -> bytes:
    return np.asarray(rows, dtype="<u4").tobytes()


class AlignmentStore:
    """``<root>/<bank>/<job>.rows`` (uint32 LE table rows, common order) + ``<job>.json``.

    The JSON is written last and carries the rows' sha256, the row count and the digest of the
    table's codes, so a half-written, edited or stale alignment is refused, never used.
    """

    def __init__(self, root: Path, *, node_id: str, table_codes: Sequence[str]):
        self.root = root
        self.node_id = node_id
        self.n_table = len(table_codes)
        self.digest = codes_digest(table_codes)

    def _paths(self, bank: str, job_id: str) -> tuple[Path, Path]:
        base = self.root / check_name(bank, "bank") / check_name(job_id, "alignment id")
        return base.with_suffix(".rows"), base.with_suffix(".json")

    def exists(self, bank: str, job_id: str) -> bool:
        return self._paths(bank, job_id)[1].exists()

    def save(self, bank: str, job_id: str, rows: np.ndarray, **extra: Any) -> None:
        rows_path, meta_path = self._paths(bank, job_id)
        data = rows_to_bytes(rows)
        write_atomic(rows_path, data)
        meta = {
            "format": "xinyidai.alignment/1",
            "node_id": self.node_id,
            "bank": bank,
            "job_id": job_id,
            "size": len(rows),
            "rows_sha256": hashlib.sha256(data).hexdigest(),
            "table_rows": self.n_table,
            "table_digest": self.digest,
            "created": time.time(),
            **extra,
        }
        write_atomic(meta_path, json.dumps(meta, indent=1).encode())

    def load(self, bank: str, job_id: str) -> np.ndarray:
        rows_path, meta_path = self._paths(bank, job_id)
        where = f"alignment '{job_id}' of bank '{bank}'"
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            data = rows_path.read_bytes()
        except FileNotFoundError:
            raise AlignmentError(f"{where} does not exist (run PSI first)") from None
        except (OSError, ValueError) as exc:
            raise AlignmentError(f"{where} cannot be read: {exc}") from None
        if meta.get("table_digest") != self.digest:
            raise AlignmentError(f"{where} was made on a different table; align again")
        if hashlib.sha256(data).hexdigest() != meta.get("rows_sha256"):
            raise AlignmentError(f"{where} is damaged (rows do not match their digest)")
        rows = np.frombuffer(data, dtype="<u4").astype(np.int64)
        if rows.size != meta.get("size") or (rows.size and rows.max() >= self.n_table):
            raise AlignmentError(f"{where} is damaged (size or row out of range)")
        return rows


class PsiSessions:
    """Open PSI jobs per (bank, job), at most ``max_open`` per bank (each holds a set in memory)."""

    def __init__(self, *, max_open: int = 8):
        self.max_open = max_open
        self._open: dict[tuple[str, str], PsiHolder] = {}
        self._lock = threading.Lock()

    def add(self, bank: str, job_id: str, holder: PsiHolder) -> None:
        with self._lock:
            if (bank, job_id) in self._open:
                raise AlignmentError(f"PSI job '{job_id}' is already open for bank '{bank}'")
            if sum(1 for b, _ in self._open if b == bank) >= self.max_open:
                raise AlignmentError(
                    f"bank '{bank}' has {self.max_open} PSI jobs open; finish or abort one first"
                )
            self._open[(bank, job_id)] = holder

    def get(self, bank: str, job_id: str) -> PsiHolder:
        with self._lock:
            found = self._open.get((bank, job_id))
        if found is None:
            raise AlignmentError(f"no open PSI job '{job_id}' for bank '{bank}' (PsiStart first)")
        return found

    def drop(self, bank: str, job_id: str) -> bool:
        with self._lock:
            return self._open.pop((bank, job_id), None) is not None
