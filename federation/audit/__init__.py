"""Hash-chained audit log: one record per RPC a node serves or makes, and per local action.

Why a chain: the log is the evidence that a node only ever answered authorised questions, so it
must be hard to doctor quietly. Each record's hash covers its content *and* the previous record's
hash, so editing, deleting, inserting or reordering any record breaks every later link - and
``verify`` names which record and how. A separately stored *head* (seq and hash of the last
record), written in the same transaction as each append, catches truncation of the tail, which
a chain alone cannot see.

What the chain alone does not do: anyone who can write the database *and* recompute hashes
(the algorithm is public, there is no key) can rewrite the whole tail consistently, head
included. Peers catch that: every request carries the caller's head and every reply the
callee's, and each side records the head it received (hashed, in its own chain). ``verify``
checks every head a ``Witness`` saw (a peer's log; later the platform) and any ``anchor`` an
operator published: a head whose record is gone or changed names the witness and the seq. See
``docs/security.md``.

Modules: ``records`` (the record and its hash), ``schema`` (tables), ``chain`` (append, scan,
heads and anchors), ``diagnose`` (naming what was tampered with), ``witness`` (who can vouch
for a chain), ``log`` (``AuditLog``). The
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
    SubjectAccess,
    canonical_json,
    record_hash,
)
from federation.audit.witness import Witness
from federation.store import sqlite_url

__all__ = [
    "GENESIS_HASH",
    "AuditEntry",
    "AuditLog",
    "AuditProblem",
    "AuditVerification",
    "ChainHead",
    "Direction",
    "SubjectAccess",
    "Witness",
    "canonical_json",
    "record_hash",
    "sqlite_url",
]
