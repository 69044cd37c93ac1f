"""Node configuration (``node.yaml``), validated with pydantic.

One file per node: who it is, where it listens, its TLS identity, its data, its stores and its peers.
Relative paths are relative to the file. Every embedded default has a production counterpart reached
by configuration only: ``address``/``peers`` for remote nodes, ``audit_url``/``consent_url`` for
PostgreSQL (``postgresql+psycopg://...``) instead of the SQLite files in the node directory.
"""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from federation.compute import ComputeSpec
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
    role: Literal["bank", "holder", "platform"]


class PlatformLink(_Strict):
    """Where a holder (or bank) follows the platform's feed (``node.yaml`` ``platform:``;
    docs/platform.md). Absent: dev mode, authorisations only from ``xinyidai consent grant``."""

    address: str = Field(description="the platform node's host:port")
    node_id: str = Field(default="platform", description="the platform's certificate identity")
    poll_s: float = Field(default=1.0, gt=0, le=3600, description="seconds between feed polls")


class PortalAuthConfig(_Strict):
    """How people sign in to the platform's portal (``portal.auth``; docs/platform.md).

    ``embedded`` (default): accounts in ``PLATFORM_DIR/portal.db`` (``xinyidai platform account
    create``), argon2-hashed passwords. ``oidc``: the province's identity service through
    Authlib's Starlette client; the enterprise's USCC comes from the ``uscc_claim`` of the ID
    token, never from the browser."""

    kind: Literal["embedded", "oidc"] = "embedded"
    issuer: str | None = Field(default=None, description="oidc: the issuer URL (https://...)")
    client_id: str | None = Field(default=None, description="oidc: this portal's client id")
    client_secret_file: Path | None = Field(
        default=None, description="oidc: a 0600 file holding the client secret"
    )
    uscc_claim: str = Field(default="uscc", description="oidc: the claim carrying the USCC")

    @model_validator(mode="after")
    def _complete(self) -> PortalAuthConfig:
        if self.kind == "oidc":
            missing = [
                name
                for name in ("issuer", "client_id", "client_secret_file")
                if getattr(self, name) in (None, "")
            ]
            if missing:
                raise ValueError(f"auth kind 'oidc' needs {', '.join(missing)}")
            if not str(self.issuer).startswith("https://"):
                raise ValueError("oidc issuer must be an https:// URL")
        elif any(v is not None for v in (self.issuer, self.client_id, self.client_secret_file)):
            raise ValueError("issuer, client_id and client_secret_file belong to kind 'oidc'")
        return self


class PortalConfig(_Strict):
    """The platform's web portal for people (``portal:`` in a platform's ``node.yaml``), served
    by the platform node's process on its own port (``xinyidai/portal``, docs/platform.md)."""

    address: str = Field(default="127.0.0.1:0", description="host:port of the portal's HTTP server")
    tls_cert: Path | None = Field(default=None, description="serve HTTPS with this certificate")
    tls_key: Path | None = Field(default=None, description="... and this key (0600)")
    secure_cookies: bool = Field(
        default=False,
        description="mark cookies Secure (always when tls_cert is set; set it behind a TLS proxy)",
    )
    auth: PortalAuthConfig = Field(default_factory=lambda: PortalAuthConfig())
    session_minutes: float = Field(default=30.0, gt=0, le=24 * 60, description="idle sign-out")
    holder_timeout_s: float = Field(
        default=3.0, gt=0, le=60, description="deadline of each Subject call to a holder"
    )
    max_failures: int = Field(
        default=5, ge=1, le=1000, description="failed sign-ins per login and per address ..."
    )
    failure_window_s: float = Field(default=300.0, gt=0, description="... in this window")
    lineage_dir: Path | None = Field(
        default=None,
        description="a folder of lineage reports (*-lineage.html/.md) the auditor page lists",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> PortalConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both tls_cert and tls_key, or neither")
        return self

    @property
    def cookies_secure(self) -> bool:
        return self.secure_cookies or self.tls_cert is not None


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
    categorical: list[str] | None = None  # features holding categories (text or codes)
    category: str = "bank"  # the data category of the features (tax, electricity, ...)
    # column -> the label this node publishes for it in Hello and training (default: a stable
    # alias "<node>:fNN" by the column's position; the column name itself never leaves the node)
    labels: dict[str, str] | None = None

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
            categorical=[c for c in self.categorical or [] if c in features],
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
    obfuscator_pool: int = Field(
        default=100_000,
        ge=0,
        le=1_000_000,
        description="bank: obfuscators of the ready key that a process running several jobs "
        "keeps (parties.bank.secureboost.bank_key_reserve), made ahead at low priority (0 = "
        "off; ~540 B each at 2048 bits; federation/crypto/reserve.py)",
    )
    obfuscator_batch: int = Field(
        default=1024, ge=1, le=65_536, description="obfuscators made per background fill step"
    )
    rerandomise_pool: int = Field(
        default=64,
        ge=0,
        le=100_000,
        description="holder: textbook obfuscators per SecureBoost job, made from Start on at "
        "low priority while it waits for the bank (0 = made when needed; ~9 ms each at 2048 "
        "bits)",
    )
    job_idle_s: float = Field(
        default=3600.0, gt=0, description="drop a training job no call touched for this long"
    )


def round_grid() -> list[float]:
    """The default threshold grid: 0 and +/- 1, 2, 5 x 10^k for k = -2..9 (0.01 .. 5e9).

    Why round values on a roughly geometric grid: a bank's real questions use round figures
    ("VAT paid at least 1,000,000 yuan"), and a grid bounds what any number of answers can tell
    to the grid interval holding the value (a factor of 2 to 2.5), however many are asked.
    """
    steps = [m * 10.0**k for k in range(-2, 10) for m in (1, 2, 5)]
    return sorted({0.0, *steps, *(-v for v in steps)})


def _grid(values: list[float], what: str) -> list[float]:
    if not values:
        raise ValueError(f"{what} must list at least one value")
    if len(values) > 1000:
        raise ValueError(f"{what} lists {len(values)} values (limit 1000)")
    if any(not math.isfinite(v) for v in values):
        raise ValueError(f"{what} must hold finite numbers")
    return sorted(set(values))


class VerificationConfig(_Strict):
    """Limits of yes/no verification at a holder (``parties.holder.verify``): the only
    thresholds a bank may ask, and how many different questions per (bank, enterprise, column)."""

    max_distinct: int = Field(
        default=3, ge=1, le=100, description="new questions per column per window"
    )
    window_h: float = Field(default=24.0, gt=0, le=24 * 366, description="the sliding window")
    lifetime: int = Field(
        default=12, ge=1, le=1000, description="different questions per column, ever"
    )
    grid: list[float] | None = Field(
        default=None,
        description="thresholds allowed on any number column (default: ``round_grid()``)",
    )
    columns: dict[str, list[float]] = Field(
        default_factory=lambda: {"consecutive_normal_months": [3.0, 6.0, 12.0, 24.0, 36.0]},
        description="per-column grids, replacing `grid` for that column",
    )
    ratios: list[float] = Field(
        default_factory=lambda: [0.5, 0.8, 0.9, 0.95, 1.0],
        description="the ratios a paid_at_least question may use",
    )

    @field_validator("grid")
    @classmethod
    def _check_grid(cls, value: list[float] | None) -> list[float] | None:
        return None if value is None else _grid(value, "grid")

    @property
    def resolved_grid(self) -> list[float]:
        return round_grid() if self.grid is None else self.grid

    @field_validator("columns")
    @classmethod
    def _check_columns(cls, value: dict[str, list[float]]) -> dict[str, list[float]]:
        return {name: _grid(v, f"grid of column {name!r}") for name, v in value.items()}

    @field_validator("ratios")
    @classmethod
    def _check_ratios(cls, value: list[float]) -> list[float]:
        ratios = _grid(value, "ratios")
        if ratios[0] <= 0 or ratios[-1] > 1:
            raise ValueError("ratios must lie in (0, 1]")
        return ratios


class PolicyConfig(_Strict):
    """A data holder's limits on what one bank may make it compute (``models.limits``).

    Why: the bank chooses each training job's shape and which of the holder's splits it takes,
    so a dishonest bank could train a "probe model" whose splits read out every row's bin of
    the holder's features. Each limit is checked before any work; a refusal names the limit and
    its value (``PERMISSION_DENIED``, refusal code ``limit``). Defaults fit every shipped
    experiment (5 trees, depth 3, 32 bins)."""

    max_trees: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="trees per SecureBoost job (each tree is "
        "another round of encrypted histograms and partitions)",
    )
    max_depth: int = Field(
        default=8,
        ge=1,
        le=16,
        description="tree depth per SecureBoost job (deeper nodes are "
        "smaller: their answers describe fewer rows)",
    )
    max_bins: int = Field(
        default=64,
        ge=2,
        le=255,
        description="bins per feature in SecureBoost and WOE jobs: "
        "the finest resolution any answer gives of a value",
    )
    max_thresholds_per_feature: int = Field(
        default=32,
        ge=1,
        le=254,
        description="distinct split thresholds on one of this "
        "holder's features in one SecureBoost model, resumes included; the bank learns a row's "
        "value only up to the intervals between them. Crossing it refuses the split and writes "
        "an audit alert (a probe model crosses it; an honest model rarely needs that many)",
    )
    max_jobs_per_alignment_per_day: int = Field(
        default=24,
        ge=1,
        le=10_000,
        description="training jobs (SecureBoost, WOE, LR) one bank "
        "may start on one alignment in any 24 h; counted in NODE_DIR/limits.json, so a restart "
        "does not reset it",
    )
    max_resumes_per_job: int = Field(
        default=10,
        ge=0,
        le=1000,
        description="resumes of one SecureBoost job (each re-grows "
        "trees with fresh gradients); counted in NODE_DIR/limits.json",
    )
    max_answers_per_enterprise_per_day: int = Field(
        default=200,
        ge=1,
        le=1_000_000,
        description="answers about one enterprise (scores, points, predictions: ScoreReach, "
        "PrivateScore, Predict, ScorePoints) one bank may have in any 24 h; past it the "
        "enterprise is refused (code limit) and an audit alert is written. Bounds how often a "
        "bank serving crafted models can ask about one enterprise; counted again from the "
        "audit log at start (parties.holder.quota)",
    )
    min_holders: int = Field(
        default=1,
        ge=1,
        le=100,
        description="fewest holders an LR job may have for this "
        "holder to join: with 1 the bank computes that holder's linear predictor; 2 keeps it "
        "masked (1 admits two-party scorecards)",
    )
    paillier_min_bits: int = Field(
        default=2048,
        ge=2048,
        le=16_384,
        description="smallest Paillier modulus accepted "
        "from a bank (2048 is the crypto layer's floor)",
    )
    paillier_max_bits: int = Field(
        default=4096,
        ge=2048,
        le=16_384,
        description="largest Paillier modulus accepted from "
        "a bank, checked from the key's header before it is verified (a 32,768-bit key costs "
        "a holder seconds per step)",
    )

    @model_validator(mode="after")
    def _bits_in_order(self) -> PolicyConfig:
        if self.paillier_min_bits > self.paillier_max_bits:
            raise ValueError("paillier_min_bits must not exceed paillier_max_bits")
        return self


class MlflowConfig(_Strict):
    """Where a bank node finds its model registry (MLflow), in ``node.yaml`` ``mlflow:``.

    Why in the node's file: the bank resolves ``credit-sbt@champion`` in this store on every
    score, so which store it is must not depend on the directory the node was started from.
    ``MLFLOW_TRACKING_URI`` in the node's environment overrides it (as MLflow's own tools do).
    Neither set: ``NODE_DIR/mlflow`` (``mlflow.db`` + ``artifacts/``), logged at start."""

    tracking_uri: str | None = Field(
        default=None,
        description="an MLflow server (http://...) or database URL (sqlite:///..., "
        "postgresql://...); credentials in it are never logged",
    )
    registry_uri: str | None = Field(
        default=None, description="the model registry, if not the tracking store"
    )
    dir: Path | None = Field(
        default=None,
        description="a local store folder (mlflow.db + artifacts/), relative to node.yaml",
    )

    @model_validator(mode="after")
    def _one_store(self) -> MlflowConfig:
        if self.tracking_uri is not None and self.dir is not None:
            raise ValueError("give either tracking_uri or dir, not both")
        if self.registry_uri is not None and self.tracking_uri is None:
            raise ValueError("registry_uri needs tracking_uri (a local dir is its own registry)")
        return self


class ComputeConfig(_Strict):
    """Where this node's heavy work runs (``node.yaml`` ``compute:``; docs/scale.md).

    ``local`` (default): this host's warm process pool of ``limits.compute_workers``.
    ``ray``: the party's own Ray cluster (``pip install 'xinyidai[ray]'``) — never another
    party's: Ray is internal to one party, gRPC stays the only wire between parties."""

    engine: Literal["local", "ray"] = "local"
    address: str | None = Field(
        default=None,
        description="'auto' (a cluster started on this host), host:port of the head, or "
        "ray://host:10001",
    )
    num_cpus: int | None = Field(
        default=None, ge=1, le=100_000, description="tasks kept in flight (default: every CPU)"
    )
    head_timeout_s: float = Field(
        default=15.0, ge=1, le=600, description="a lost head node fails the work after this"
    )
    max_retries: int = Field(
        default=3, ge=0, le=20, description="retries of a chunk whose worker process died"
    )

    @model_validator(mode="after")
    def _address_for_ray(self) -> ComputeConfig:
        if self.engine == "ray" and not self.address:
            raise ValueError("engine 'ray' needs an address ('auto', host:port or ray://...)")
        if self.engine == "local" and (self.address or self.num_cpus):
            raise ValueError("address and num_cpus apply to engine 'ray' only")
        return self

    def spec(self) -> ComputeSpec:
        return ComputeSpec(
            engine=self.engine,
            address=self.address,
            num_cpus=self.num_cpus,
            head_timeout_s=self.head_timeout_s,
            max_retries=self.max_retries,
        )


class NodeConfig(_Strict):
    node_id: str
    role: Literal["bank", "holder", "platform"]
    address: str = "127.0.0.1:0"
    node_dir: Path = Path(".")
    tls: TlsConfig
    data: TableConfig | None = None
    audit_url: str | None = None
    consent_url: str | None = None
    platform_public_key: Path | None = None
    platform_signing_key: Path | None = None  # role platform: its Ed25519 key (0600)
    platform: PlatformLink | None = None  # holders/banks: follow this platform's feed
    portal: PortalConfig | None = None  # role platform: the web portal (PortalConfig)
    allowed_purposes: list[str] = Field(default_factory=lambda: ["financing"])
    peers: list[PeerConfig] = Field(default_factory=list)
    operators: list[str] = Field(default_factory=list)
    mlflow: MlflowConfig | None = None  # the bank's model registry (MlflowConfig)
    limits: LimitsConfig = Field(default_factory=lambda: LimitsConfig())
    compute: ComputeConfig = Field(default_factory=lambda: ComputeConfig())
    verification: VerificationConfig = Field(default_factory=lambda: VerificationConfig())
    policy: PolicyConfig = Field(default_factory=lambda: PolicyConfig())

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
        if self.platform_signing_key is not None:
            self.platform_signing_key = fix(self.platform_signing_key)
        if self.mlflow is not None and self.mlflow.dir is not None:
            self.mlflow = self.mlflow.model_copy(update={"dir": fix(self.mlflow.dir)})
        if self.portal is not None:
            portal, auth = self.portal, self.portal.auth
            self.portal = portal.model_copy(
                update={
                    "tls_cert": fix(portal.tls_cert) if portal.tls_cert else None,
                    "tls_key": fix(portal.tls_key) if portal.tls_key else None,
                    "lineage_dir": fix(portal.lineage_dir) if portal.lineage_dir else None,
                    "auth": auth.model_copy(
                        update={
                            "client_secret_file": fix(auth.client_secret_file)
                            if auth.client_secret_file
                            else None
                        }
                    ),
                }
            )
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
    if config.role == "platform" and config.platform_signing_key is None:
        raise ConfigError(f"{path}: field 'platform_signing_key' is required for a platform node")
    if config.portal is not None and config.role != "platform":
        raise ConfigError(f"{path}: field 'portal' belongs to a platform node's node.yaml")
    if config.platform is not None and config.platform_public_key is None:
        raise ConfigError(
            f"{path}: field 'platform' needs 'platform_public_key' (to verify the feed)"
        )
    return config
