"""What a node may say about itself and its own data to a peer (``Hello``).

Column names are HMAC-SHA256'd with a secret that never leaves the node, so a peer can notice that a
schema changed (the digest moves) without learning the names of the columns it cannot see. Banks
and holders answer ``Hello`` the same way (``hello_reply``); a holder adds its consent counts.

Each feature column also has an **alias** (``feature_aliases``), the name peers, notes and
reports use: ``tax:f03`` (the node and the column's position among its features), or a label the
node chose to publish (``data.labels`` in ``node.yaml``). Why not the keyed hash: the secret is
made per node directory, so a fresh experiment federation showed the same column under a new
hash every run; an alias stays the same for the same column and says no more than the position.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from federation.errors import ConfigError
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


ALIAS_MAX = 64
"""Longest published label (it travels in every Hello and training reply)."""


def feature_aliases(
    node_id: str, schema: PartySchema, labels: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Feature column -> the name this node publishes for it: ``labels[column]`` when the node
    chose one, else ``<node>:fNN`` with NN the column's 1-based position among the schema's
    features (the same for the same column in every run of the same configuration)."""
    features = list(schema.feature_columns)
    chosen = dict(labels or {})
    unknown = sorted(set(chosen) - set(features))
    if unknown:
        raise ConfigError(
            f"node '{node_id}': data.labels names {', '.join(map(repr, unknown))}, not among "
            "its feature columns"
        )
    width = max(2, len(str(len(features))))
    out = {c: chosen.get(c) or f"{node_id}:f{i:0{width}d}" for i, c in enumerate(features, 1)}
    for column, alias in out.items():
        if len(alias) > ALIAS_MAX or not alias.isprintable() or alias != alias.strip():
            raise ConfigError(
                f"node '{node_id}': the label for {column!r} must be 1-{ALIAS_MAX} printable "
                "characters without surrounding spaces"
            )
    seen: dict[str, str] = {}
    for column, alias in out.items():
        if alias in seen:
            raise ConfigError(
                f"node '{node_id}': {seen[alias]!r} and {column!r} would both be published as "
                f"{alias!r}"
            )
        seen[alias] = column
    return out


def node_aliases(config: NodeConfig, schema: PartySchema) -> dict[str, str]:
    """``feature_aliases`` of a node's table with the labels its ``node.yaml`` publishes."""
    labels = config.data.labels if config.data is not None else None
    return feature_aliases(config.node_id, schema, labels)


def table_summary(
    table: pd.DataFrame,
    schema: PartySchema,
    key: bytes,
    *,
    aliases: Mapping[str, str] | None = None,
) -> common_pb2.TableSummary:
    """What a node says about its table: per column its keyed hash, type, category, grade and
    (features) its alias (``feature_aliases``, computed here unless given)."""
    summary = common_pb2.TableSummary(table=schema.role, n_rows=len(table))
    names = aliases if aliases is not None else feature_aliases(schema.role, schema)
    for column in schema.columns:
        if column.name == schema.key:
            continue
        name_hash = hmac.new(key, column.name.encode(), hashlib.sha256).hexdigest()[:16]
        summary.columns.add(
            name_hash=name_hash,
            dtype=column.dtype,
            category=column.category,
            grade=column.grade,
            alias=names.get(column.name, ""),
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
