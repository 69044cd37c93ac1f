"""The audit log's two tables: the records, and the one-row head written with each append.

The head is a separate row (not ``max(seq)``) so that truncating the tail of the records is
visible: the head still names the last record that was ever appended.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Double, Index, Integer, MetaData, String, Table, Text

from federation.audit.records import LIMITS

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
)
