"""Node configuration (``node.yaml``), validated with pydantic.

One file per node: who it is, where it listens, its TLS identity, its data, its stores and its peers.
Relative paths are relative to the file. Every embedded default has a production counterpart reached
by configuration only: ``address``/``peers`` for remote nodes, ``audit_url``/``consent_url`` for
PostgreSQL (``postgresql+psycopg://...``) instead of the SQLite files in the node directory.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from federation.errors import ConfigError
from federation.ids import is_node_id
from federation.store import sqlite_url
from parties.data.loader import read_header
from parties.data.schema import PartySchema, generic_schema, schema_for

M = TypeVar("M", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TlsConfig(_Strict):
    ca: Path
    cert: Path
    key: Path


class PeerConfig(_Strict):
    node_id: str
    address: str = ""  # host:port; empty for a peer that only calls us (a bank, at a holder)
    role: Literal["bank", "holder"]


class TableConfig(_Strict):
    """A node's table: either a role of the platform's sharing lists (``schema_role``) or, for
    experiments on public benchmark files, a generic one (key, label and numeric features)."""

    path: Path
    schema_role: Literal["bank", "tax", "utility"] | None = None
    # The date the table describes; date columns enter models as "days before as_of".
    # Default: the latest date in the table's date columns.
    as_of: date | None = None
    # -- generic tables (no schema_role) ------------------------------------------------------
    id_column: str = "uscc"
    id_kind: Literal["uscc", "plain"] = "uscc"
    label_column: str | None = None
    features: list[str] | None = None  # None: every other column of the file
    category: str = "bank"  # the data category of the features (tax, electricity, ...)

    def table_schema(self, node_id: str) -> PartySchema:
        """The schema the node's file is validated against (errors name the node and file)."""
        if self.schema_role is not None:
            return schema_for(self.schema_role)
        header = read_header(self.path)
        features = self.features
        if features is None:
            features = [c for c in header if c not in (self.id_column, self.label_column)]
        wanted = [self.id_column, *([self.label_column] if self.label_column else []), *features]
        absent = [c for c in wanted if c not in header]
        if absent:
            raise ConfigError(
                f"node '{node_id}': {self.path.name} has no column(s) {', '.join(absent)}"
            )
        if not features:
            raise ConfigError(f"node '{node_id}': {self.path.name} has no feature columns")
        return generic_schema(
            node_id,
            id_column=self.id_column,
            id_kind=self.id_kind,
            features=features,
            label_column=self.label_column,
            category=self.category,
        )


class LimitsConfig(_Strict):
    deadline_s: float = Field(default=30.0, gt=0, description="deadline of every outgoing call")
    max_message_mb: int = Field(
        default=16, ge=1, le=1024, description="largest single gRPC message"
    )
    chunk_kb: int = Field(default=1024, ge=16, description="chunk size of streamed payloads")
    max_blob_mb: int = Field(
        default=4096, ge=1, description="largest streamed payload a node stores"
    )
    max_workers: int = Field(default=16, ge=1, le=256, description="server threads")
    compute_workers: int = Field(
        default=2, ge=1, le=256, description="worker processes for PSI and Paillier work"
    )
    job_idle_s: float = Field(
        default=3600.0, gt=0, description="drop a training job no call touched for this long"
    )


class NodeConfig(_Strict):
    node_id: str
    role: Literal["bank", "holder"]
    address: str = "127.0.0.1:0"
    node_dir: Path = Path(".")
    tls: TlsConfig
    data: TableConfig | None = None
    audit_url: str | None = None
    consent_url: str | None = None
    platform_public_key: Path | None = None
    allowed_purposes: list[str] = Field(default_factory=lambda: ["financing"])
    peers: list[PeerConfig] = Field(default_factory=list)
    operators: list[str] = Field(default_factory=list)
    limits: LimitsConfig = Field(default_factory=lambda: LimitsConfig())

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, value: str) -> str:
        if not is_node_id(value):
            raise ValueError("must be a DNS label: lowercase letters, digits and '-', 1-63 chars")
        return value

    # -- derived settings --------------------------------------------------------------------------
    @property
    def resolved_audit_url(self) -> str:
        return self.audit_url or sqlite_url(self.node_dir / "audit.db")

    @property
    def resolved_consent_url(self) -> str:
        return self.consent_url or sqlite_url(self.node_dir / "consent.db")

    @property
    def holders(self) -> list[PeerConfig]:
        return [p for p in self.peers if p.role == "holder"]

    @property
    def banks(self) -> list[PeerConfig]:
        return [p for p in self.peers if p.role == "bank"]

    def _resolve(self, base: Path) -> NodeConfig:
        def fix(p: Path) -> Path:
            return p if p.is_absolute() else (base / p).resolve()

        self.node_dir = fix(self.node_dir)
        self.tls = TlsConfig(ca=fix(self.tls.ca), cert=fix(self.tls.cert), key=fix(self.tls.key))
        if self.data is not None:
            self.data = self.data.model_copy(update={"path": fix(self.data.path)})
        if self.platform_public_key is not None:
            self.platform_public_key = fix(self.platform_public_key)
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


def validate_yaml(text: str | bytes, model: type[M], path: Path) -> M:
    """Parse YAML ``text`` (read from ``path``) into a pydantic ``model``; every error is one
    ``ConfigError`` naming the file and each bad field."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"field '{'.'.join(str(x) for x in err['loc'])}': {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None


def load_node_config(path: Path) -> NodeConfig:
    """Read and validate ``node.yaml``; every error names the file and the field."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    config = validate_yaml(text, NodeConfig, path)._resolve(path.parent.resolve())
    if config.role == "holder" and config.platform_public_key is None:
        raise ConfigError(f"{path}: field 'platform_public_key' is required for a holder (consent)")
    return config
