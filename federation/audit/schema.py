"""The audit log's tables: the records, the one-row head written with each append, and the
subject rows of records about several enterprises.

The head is a separate row (not ``max(seq)``) so that truncating the tail of the records is
visible: the head still names the last record that was ever appended. Subject rows live in a
side table (one per enterprise a batch request was about) whose digest the record's hash covers.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, Index, Integer, MetaData, String, Table, Text

from federation.audit.records import LIMITS, SUBJECT_LIMITS

metadata = MetaData()

records = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", Double, nullable=False),
    Column("node_id", String(LIMITS["node_id"]), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("peer", String(LIMITS["peer"]), nullable=False),
    Column("operation", String(LIMITS["operation"]), nullable=False),
    Column("purpose", String(LIMITS["purpose"]), nullable=False),
    Column("job_id", String(LIMITS["job_id"]), nullable=False),
    Column("model_id", String(LIMITS["model_id"]), nullable=False),
    Column("subject", String(LIMITS["subject"]), nullable=False),
    Column("request_id", String(LIMITS["request_id"]), nullable=False),
    Column("counts", Text, nullable=False),
    Column("decision", String(LIMITS["decision"]), nullable=False),
    Column("reason", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # Added later; hashed only when non-empty (see records.OPTIONAL_FIELDS).
    Column("peer_head", String(LIMITS["peer_head"]), nullable=False, server_default=""),
    Column("subjects_sha256", String(64), nullable=False, server_default=""),
)

LATER_COLUMNS = ("peer_head", "subjects_sha256")
"""Columns an older log lacks; ``chain.upgrade`` adds them (empty) when a node opens it."""

subjects = Table(
    "audit_subjects",
    metadata,
    Column("seq", BigInteger, nullable=False),
    Column("uscc", String(SUBJECT_LIMITS["uscc"]), nullable=False),
    Column("auth_id", String(SUBJECT_LIMITS["auth_id"]), nullable=False),
    Column("status", String(SUBJECT_LIMITS["status"]), nullable=False),
)

head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

indexes = (
    Index("ix_audit_log_ts", records.c.ts),
    Index("ix_audit_log_peer", records.c.peer),
    Index("ix_audit_log_job_id", records.c.job_id),
    Index("ix_audit_log_subject", records.c.subject),
    Index("ix_audit_subjects_uscc", subjects.c.uscc),
    Index("ix_audit_subjects_seq", subjects.c.seq),
)
