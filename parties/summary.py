"""What a node may say about itself and its own data to a peer (``Hello``).

Column names are HMAC-SHA256'd with a secret that never leaves the node, so a peer can notice that a
schema changed (the digest moves) without learning the names of the columns it cannot see. Banks
and holders answer ``Hello`` the same way (``hello_reply``); a holder adds its consent counts.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pandas as pd

from parties.config import NodeConfig
from parties.data.loader import table_digest
from parties.data.schema import PartySchema
from protos import common_pb2

PROTOCOL_VERSION = "1"
SOFTWARE_VERSION = "0.1.0"


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


def data_categories(schema: PartySchema) -> list[str]:
    """The data categories a node's table holds (what consent and disputes are about)."""
    return sorted({c.category for c in schema.columns} - {"identity", "label", ""})


def hello_reply(
    config: NodeConfig, caller: str, categories: list[str], summary: common_pb2.TableSummary
) -> common_pb2.HelloReply:
    """What any node says about itself in ``Hello`` (consent counts are the holder's addition)."""
    reply = common_pb2.HelloReply(
        node_id=config.node_id,
        role=config.role,
        caller_id=caller,
        software_version=SOFTWARE_VERSION,
        protocol_version=PROTOCOL_VERSION,
        allowed_purposes=config.allowed_purposes,
        categories=categories,
    )
    reply.tables.append(summary)
    return reply
