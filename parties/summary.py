"""What a node may say about its own data to a peer: keyed-hashed column names and row counts.

Column names are HMAC-SHA256'd with a secret that never leaves the node, so a peer can notice that a
schema changed (the digest moves) without learning the names of the columns it cannot see.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pandas as pd

from parties.data.loader import table_digest
from parties.data.schema import PartySchema
from protos import common_pb2


def node_secret(path: Path) -> bytes:
    """The node's column-hashing secret, created (mode 0600) on first use."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key


def table_summary(table: pd.DataFrame, schema: PartySchema, key: bytes) -> common_pb2.TableSummary:
    summary = common_pb2.TableSummary(table=schema.role, n_rows=len(table))
    for column in schema.columns:
        if column.name == schema.key:
            continue
        name_hash = hmac.new(key, column.name.encode(), hashlib.sha256).hexdigest()[:16]
        summary.columns.add(
            name_hash=name_hash, dtype=column.dtype, category=column.category, grade=column.grade
        )
    listing = "|".join(f"{c.name_hash}:{c.dtype}:{c.category}" for c in summary.columns)
    summary.schema_digest = hashlib.sha256(listing.encode()).hexdigest()[:16]
    summary.data_digest = table_digest(table)
    return summary
