"""Hash-chained audit log: one record per RPC a node serves or makes, and per local action.

Why a chain: the log is the evidence that a node only ever answered authorised questions, so it
must be hard to doctor quietly. Each record's hash covers its content *and* the previous record's
hash, so editing, deleting, inserting or reordering any record breaks every later link - and
``verify`` names which record and how. A separately stored *head* (seq and hash of the last
record), written in the same transaction as each append, catches truncation of the tail, which
a chain alone cannot see.

What it does not do: anyone who can write the database *and* recompute hashes (the algorithm is
public, there is no key) can rewrite the whole tail consistently, head included. Catching that
needs the head published somewhere the node cannot rewrite (peers, a notary) - ``verify``
accepts such an ``anchor``. See ``docs/security.md``.

Modules: ``records`` (the record and its hash), ``schema`` (tables), ``chain`` (append, scan,
heads and anchors), ``diagnose`` (naming what was tampered with), ``log`` (``AuditLog``). The
database plumbing every node store shares is ``federation.store``; ``sqlite_url`` is also
exported here because most callers only need it to open a log.
"""

from federation.audit.chain import ChainHead
from federation.audit.log import AuditLog
from federation.audit.records import (
    GENESIS_HASH,
    AuditEntry,
    AuditProblem,
    AuditVerification,
    Direction,
    canonical_json,
    record_hash,
)
from federation.store import sqlite_url

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "AuditProblem",
    "AuditVerification",
    "ChainHead",
    "Direction",
    "canonical_json",
    "record_hash",
    "sqlite_url",
]
