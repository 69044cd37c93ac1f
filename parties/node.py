"""A node process: load config, data and stores; serve mTLS gRPC until told to stop.

``xinyidai node serve --config node.yaml`` runs ``serve``. A node refuses to start on invalid data or
configuration (clear error, exit code 2) rather than serve half of what it should. On SIGTERM/SIGINT
it reports NOT_SERVING, finishes calls in flight (grace period), and records its stop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation import compute
from federation.audit import AuditLog
from federation.blobs import BlobStore
from federation.errors import ConfigError
from federation.files import exposure, make_files_private, private_dir
from federation.transport.base import PeerBase, ServiceRuntime
from federation.transport.grpc_transport import GrpcPeer, GrpcServer, TlsIdentity
from federation.transport.policy import PurposePolicy
from federation.usage import write_usage
from models.limits import HolderLimits, JobLedger
from parties.compute import use_compute
from parties.config import NodeConfig, PeerConfig, load_node_config
from parties.consent import ConsentRegistry
from parties.data.loader import load_table
from parties.summary import node_secret
from protos import (
    bank_pb2,
    holder_pb2,
    linear_pb2,
    platform_pb2,
    scorecard_pb2,
    secureboost_pb2,
    woe_pb2,
)

if TYPE_CHECKING:
    from parties.platform.service import PlatformNode

log = logging.getLogger(__name__)

HOLDER_SERVICE = holder_pb2.DESCRIPTOR.services_by_name["DataHolder"]
BANK_SERVICE = bank_pb2.DESCRIPTOR.services_by_name["Bank"]
SECUREBOOST_SERVICE = secureboost_pb2.DESCRIPTOR.services_by_name["SecureBoostHolder"]
WOE_SERVICE = woe_pb2.DESCRIPTOR.services_by_name["WoeHolder"]
LINEAR_SERVICE = linear_pb2.DESCRIPTOR.services_by_name["LinearHolder"]
SCORECARD_SERVICE = scorecard_pb2.DESCRIPTOR.services_by_name["ScorecardHolder"]
PLATFORM_SERVICE = platform_pb2.DESCRIPTOR.services_by_name["Platform"]
SERVICES = {
    s.name: s
    for s in (
        HOLDER_SERVICE,
        BANK_SERVICE,
        SECUREBOOST_SERVICE,
        WOE_SERVICE,
        LINEAR_SERVICE,
        SCORECARD_SERVICE,
        PLATFORM_SERVICE,
    )
}
"""The services a client can ask ``connect`` for, by name (holders serve DataHolder,
SecureBoostHolder, WoeHolder, LinearHolder and ScorecardHolder on one port; banks serve Bank)."""


def identity_of(config: NodeConfig) -> TlsIdentity:
    return TlsIdentity.from_files(config.tls.ca, config.tls.cert, config.tls.key)


def connect(
    config: NodeConfig,
    peer: PeerConfig,
    *,
    audit: AuditLog | None,
    deadline_s: float | None = None,
    service: str | None = None,
) -> GrpcPeer:
    """A client for ``peer`` acting as ``config``'s node (its certificate, its audit log).

    ``service``: the service to call by name (``SecureBoostHolder``...); default the peer's
    main one (``DataHolder`` at a holder, ``Bank`` at a bank).
    """
    if service is None:
        main = {"holder": HOLDER_SERVICE, "platform": PLATFORM_SERVICE}
        descriptor = main.get(peer.role, BANK_SERVICE)
    elif service in SERVICES:
        descriptor = SERVICES[service]
    else:
        raise ConfigError(f"unknown service {service!r}; known: {', '.join(sorted(SERVICES))}")
    return GrpcPeer(
        node_id=peer.node_id,
        address=peer.address,
        identity=identity_of(config),
        max_message_bytes=config.limits.max_message_mb << 20,
        service=descriptor,
        self_id=config.node_id,
        audit=audit,
        deadline_s=deadline_s or config.limits.deadline_s,
        chunk_bytes=config.limits.chunk_kb * 1024,
    )


def operator_client(config: NodeConfig, *, deadline_s: float | None = None) -> GrpcPeer:
    """A client of a bank node's own service, for its operators (the CLI, the demo)."""
    me = PeerConfig(node_id=config.node_id, address=config.address, role=config.role)
    audit = AuditLog(config.resolved_audit_url, config.node_id)
    return connect(config, me, audit=audit, deadline_s=deadline_s)


def holder_limits(config: NodeConfig, *, audit: AuditLog | None) -> HolderLimits:
    """The holder's policy limits (``node.yaml`` ``policy:``) as the models layer takes them:
    job and resume counts kept in ``NODE_DIR/limits.json`` (0600; a restart keeps them), limit
    alerts written to the node's audit log. One instance per node, shared by every protocol."""
    policy = config.policy
    return HolderLimits(
        max_trees=policy.max_trees,
        max_depth=policy.max_depth,
        max_bins=policy.max_bins,
        max_thresholds_per_feature=policy.max_thresholds_per_feature,
        max_jobs_per_alignment_per_day=policy.max_jobs_per_alignment_per_day,
        max_resumes_per_job=policy.max_resumes_per_job,
        min_holders=policy.min_holders,
        paillier_min_bits=policy.paillier_min_bits,
        paillier_max_bits=policy.paillier_max_bits,
        ledger=JobLedger(config.node_dir / "limits.json"),
        audit=audit,
    )


@contextmanager
def holder_peers(
    config: NodeConfig,
    *,
    audit: AuditLog | None,
    service: str = "DataHolder",
    deadline_s: float | None = None,
) -> Iterator[dict[str, PeerBase]]:
    """gRPC clients of every configured holder, acting as the bank (its certificate and log)."""
    peers: dict[str, PeerBase] = {
        p.node_id: connect(config, p, audit=audit, service=service, deadline_s=deadline_s)
        for p in config.holders
    }
    try:
        yield peers
    finally:
        for peer in peers.values():
            peer.close()


class Node:
    """Everything one node process runs; ``start``/``stop`` are also used in-process by tests."""

    def __init__(self, config: NodeConfig):
        self.config = config
        private_dir(config.node_dir)
        if config.data is None:
            raise ConfigError(f"node '{config.node_id}': no data table configured")
        self.schema = config.data.table_schema(config.node_id)
        self.table = load_table(config.data.path, self.schema)
        self.audit = AuditLog(config.resolved_audit_url, config.node_id)
        self.purposes = PurposePolicy(config.allowed_purposes)
        column_key = node_secret(config.node_dir / "column_key")
        self.peers: dict[str, PeerBase] = {}
        servicer: Any
        extra: list[Any] = []
        if config.role == "holder":
            servicer, extra = self._holder_services(config, column_key)
        else:
            servicer = self._bank_service(config, column_key)
        self.runtime = ServiceRuntime(
            servicer, node_id=config.node_id, audit=self.audit, purposes=self.purposes
        )
        self.runtimes = [self.runtime] + [
            ServiceRuntime(
                s,
                node_id=config.node_id,
                audit=self.audit,
                # a service with its own purpose (the holder's Subject service) brings its policy
                purposes=getattr(s, "purposes", None) or self.purposes,
            )
            for s in extra
        ]
        for rt in self.runtimes:
            rt.certificate_check = getattr(self, "certificate_check", None)
        self.server = GrpcServer(
            self.runtimes,
            address=config.address,
            identity=identity_of(config),
            max_message_bytes=config.limits.max_message_mb << 20,
            max_workers=config.limits.max_workers,
        )

    def _bank_service(self, config: NodeConfig, column_key: bytes) -> Any:
        """The ``Bank`` service, with persistent clients of every configured holder."""
        from parties.bank.registry import TrackingConfig
        from parties.bank.scoring import BankScorer
        from parties.bank.service import BankServicer

        self.peers = {p.node_id: connect(config, p, audit=self.audit) for p in config.holders}
        if config.platform is not None:  # the operator's copy of its status, authorisations,
            # whitelists (docs/platform.md); holders stay the authority on every authorisation
            from federation.pki import load_platform_public_key
            from parties.platform.follower import FeedFollower

            if config.platform_public_key is None:
                raise ConfigError(f"bank '{config.node_id}': platform needs platform_public_key")
            self.follower: FeedFollower | None = FeedFollower(
                config=config,
                consent=None,
                public_key=load_platform_public_key(config.platform_public_key),
                audit=self.audit,
            )
        # The registry the node resolves versions in: named in its log at start, so "no
        # registered model" can be checked against the store an operator meant.
        self.registry = TrackingConfig.for_node(config)
        log.info("node %s: model registry: %s", config.node_id, self.registry.describe())
        scorer = BankScorer(
            node_id=config.node_id,
            table=self.table,
            schema=self.schema,
            holders=self.peers,
            models_dir=config.node_dir / "models",
            as_of=config.data.as_of if config.data is not None else None,
            tracking=self.registry.tracking,
        )
        return BankServicer(
            config=config,
            table=self.table,
            schema=self.schema,
            holders=self.peers,
            column_key=column_key,
            scorer=scorer,
        )

    def _holder_services(self, config: NodeConfig, column_key: bytes) -> tuple[Any, list[Any]]:
        """``DataHolder`` and, on the same port with one mTLS identity, audit log and purpose
        policy, every protocol's holder half (SecureBoost, WOE, LR, scorecard points)."""
        from federation.pki import load_platform_public_key
        from models.psi.store import AlignmentStore
        from parties.holder.quota import QUOTA_OPERATIONS, AnswerQuota
        from parties.holder.service import HolderGate, HolderServicer
        from parties.holder.views import TrainingView
        from parties.summary import data_categories

        if config.platform_public_key is None:
            raise ConfigError(f"holder '{config.node_id}': no platform_public_key configured")
        public_key = load_platform_public_key(config.platform_public_key)
        self.consent = ConsentRegistry(
            config.resolved_consent_url, public_key, node_id=config.node_id
        )
        blobs = BlobStore(config.node_dir / "blobs", max_bytes=config.limits.max_blob_mb << 20)
        alignments = AlignmentStore(
            config.node_dir / "alignments",
            node_id=config.node_id,
            table_codes=list(self.table.index),
        )
        as_of = config.data.as_of if config.data is not None else None
        view = TrainingView(self.table, self.schema, alignments, as_of=as_of)
        protocols = self._protocol_services(config, view, blobs, column_key)
        parts = self._scoring_parts(config, protocols[0], view)
        # One holder gate (consent, alignments, disputes) for DataHolder's per-enterprise
        # answers and every protocol's answers about named rows (models.base.HolderModule.gate).
        gate = HolderGate(
            node_id=config.node_id,
            table_codes=list(self.table.index),
            consent=self.consent,
            alignments=alignments,
            categories=data_categories(self.schema),
            column_categories={c.name: c.category for c in self.schema.columns},
            disputes=parts["disputes"],
        )
        gate.answers = AnswerQuota(config.policy.max_answers_per_enterprise_per_day)
        gate.answers.seed(
            self.audit.admitted_since(time.time() - gate.answers.window_s, QUOTA_OPERATIONS)
        )
        gate.alerts = self.audit
        for protocol in protocols:
            protocol.use_gate(gate)
        from parties.holder.feed import attach_follower  # the platform's feed (docs/platform.md)

        self.follower = attach_follower(
            config, consent=self.consent, gate=gate, public_key=public_key, audit=self.audit
        )
        # every holder service compares an admitted bank's certificate with the registry's
        self.certificate_check = gate.check_certificate
        servicer = HolderServicer(
            config=config,
            table=self.table,
            schema=self.schema,
            consent=self.consent,
            blobs=blobs,
            column_key=column_key,
            alignments=alignments,
            psi_cache=config.node_dir / "psi-cache",
            workers=config.limits.compute_workers,
            gate=gate,
            **parts,
        )
        # Subject rights through the platform (protos/subject.proto, docs/platform.md)
        from parties.holder.subject_service import SubjectServicer

        subject = SubjectServicer(
            config=config,
            table=self.table,
            schema=self.schema,
            audit=self.audit,
            consent=self.consent,
            disputes=parts["disputes"],
            public_key=public_key,
        )
        return servicer, [*protocols, subject]

    def _protocol_services(
        self, config: NodeConfig, view: Any, blobs: BlobStore, column_key: bytes
    ) -> list[Any]:
        """The holder halves of SecureBoost, WOE, LR and scorecard points (SecureBoost first)."""
        from models.linear.passive import LinearHolderServicer
        from models.scorecard.passive import ScorecardHolderServicer
        from models.secureboost.passive import SecureBoostHolderServicer
        from models.woe.passive import WoeHolderServicer
        from parties.holder.views import feature_views
        from parties.summary import node_aliases

        limits = holder_limits(config, audit=self.audit)
        common: dict[str, Any] = {
            "node_id": config.node_id,
            "banks": [p.node_id for p in config.banks],
            "blobs": blobs,
            "workers": config.limits.compute_workers,
            "chunk_bytes": config.limits.chunk_kb * 1024,
            "models_dir": config.node_dir / "models",
            "limits": limits,
        }
        secureboost = SecureBoostHolderServicer(
            features_for=view.features_for,
            obfuscator_pool=config.limits.rerandomise_pool,  # made while waiting for the bank
            **common,
        )
        woe = WoeHolderServicer(
            features_for=view.features_for,
            min_bin_samples=20,
            column_key=column_key,
            aliases=node_aliases(config, self.schema),  # the names the bank's reports show
            **common,
        )
        # LR features: the holder's table, or its own WOE values of a WOE job (scorecards)
        views = feature_views(
            view, woe, categories={c.name: c.category for c in self.schema.columns}
        )
        linear = LinearHolderServicer(features_for=views, **common)
        points = ScorecardHolderServicer(
            node_id=config.node_id,
            linear=linear,
            source=views,
            banks=[p.node_id for p in config.banks],
            models_dir=config.node_dir / "models",
        )
        # Columns the experiment declared (or inferred) categorical: category bins, native set
        # splits in SecureBoost, a bin per category in WOE (docs/secureboost.md).
        for service in (secureboost, woe, linear):
            service.use_categorical(self.schema.categorical_features)
        return [secureboost, woe, linear, points]

    def _scoring_parts(self, config: NodeConfig, secureboost: Any, view: Any) -> dict[str, Any]:
        """What a holder's scoring and verification need (docs/scoring.md): its model parts,
        its encoded table, its disputes and a predicate evaluator with a threshold budget."""
        from parties.disputes import DisputeRegistry
        from parties.holder.verify import ThresholdBudget, ThresholdGrid, Verifier
        from parties.summary import data_categories

        disputes = DisputeRegistry.for_config(
            config, audit=self.audit, categories=data_categories(self.schema)
        )
        verifier = Verifier(
            table=self.table,
            schema=self.schema,
            disputes=disputes,
            budget=ThresholdBudget.for_config(config),
            grid=ThresholdGrid.for_config(config),
            audit=self.audit,
        )
        return {
            "secureboost": secureboost,
            "view": view,
            "disputes": disputes,
            "verifier": verifier,
        }

    @property
    def address(self) -> str:
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.server.port}"

    def start(self) -> None:
        from federation.crypto.paillier import prestart_workers
        from federation.crypto.pool import start_pool

        prestart_workers()  # the forkserver imports the crypto kernels once
        engine = use_compute(self.config)  # a cluster it cannot reach: an error now, not mid-job
        if engine is not None:
            self.audit.append(
                direction="local",
                peer=self.config.node_id,
                operation="compute.connect",
                counts={"cpus": engine.workers},
            )
        # The warm pool starts with the node, in the background, and serves every job.
        workers = self.config.limits.compute_workers
        threading.Thread(target=start_pool, args=(workers,), name="pools", daemon=True).start()
        self.server.start()
        follower = getattr(self, "follower", None)  # a holder following a platform
        if follower is not None:
            follower.start()
        self._housekeeping = threading.Event()
        threading.Thread(target=self._sweep_loop, name="housekeeping", daemon=True).start()
        self.audit.append(
            direction="local",
            peer=self.config.node_id,
            operation="node.start",
            counts={"rows": len(self.table), "port": self.server.port},
        )
        state = {"address": self.address, "pid": os.getpid(), "started_at": time.time()}
        (self.config.node_dir / "serving.json").write_text(json.dumps(state))
        log.info("node %s (%s) serving on %s", self.config.node_id, self.config.role, self.address)

    def _sweep_loop(self) -> None:
        """Drop training jobs a bank abandoned (keys, ciphertexts, blobs), now and then."""
        idle = self.config.limits.job_idle_s
        while not self._housekeeping.wait(min(300.0, idle / 4)):
            for runtime in self.runtimes:
                sweep = getattr(runtime.servicer, "sweep", None)
                if sweep is None:
                    continue
                try:
                    dropped = sweep(idle_s=idle)
                except Exception:  # housekeeping must never take the node down
                    log.exception("housekeeping failed on %s", self.config.node_id)
                    continue
                if any(dropped.values()):
                    self.audit.append(
                        direction="local",
                        peer=self.config.node_id,
                        operation="housekeeping.sweep",
                        counts=dropped,
                    )

    def stop(self, grace: float = 5.0) -> None:
        if hasattr(self, "_housekeeping"):
            self._housekeeping.set()
        self.server.stop(grace)
        follower = getattr(self, "follower", None)  # a holder following a platform
        if follower is not None:
            follower.stop()
        for peer in self.peers.values():
            peer.close()
        engine = compute.current()
        if engine is not None:  # what ran on the party's cluster during this node's life
            ran = engine.describe()
            self.audit.append(
                direction="local",
                peer=self.config.node_id,
                operation="compute.stop",
                counts={"tasks": ran["tasks_sent"], "lost_chunks": ran["lost_chunks"]},
            )
        self.audit.append(direction="local", peer=self.config.node_id, operation="node.stop")
        write_usage(self.config.node_dir)  # CPU, peak memory, bytes: the tree, pools included
        from federation.crypto.pool import shutdown_pools
        from federation.psi.workers import shutdown_workers

        shutdown_pools()
        shutdown_workers()
        compute.shutdown()
        (self.config.node_dir / "serving.json").unlink(missing_ok=True)
        log.info("node %s stopped", self.config.node_id)


def check_node_dir(node_dir: Path) -> None:
    """Refuse a node folder others can write (they could swap its data, keys or audit log); warn
    about one others can read (its data, keys and logs would be theirs too).

    Why only a warning for readable: group or other read access may be an operator's deliberate
    choice (a backup agent's group), and refusing would turn an upgrade of a node whose folder
    an older version made 0755 into an outage; the warning names the fix.
    """
    if not node_dir.is_dir():
        return  # the node makes it, 0700
    mode = stat.S_IMODE(node_dir.stat().st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"node folder {node_dir} is {exposure(node_dir)}: anyone able to write it can replace "
            f"the node's data, keys or audit log; run `chmod 700 {node_dir}` and start again"
        )
    problem = exposure(node_dir)
    if problem is not None:
        log.warning(
            "node folder %s is %s: its data, keys and logs are not private; run `chmod 700 %s`",
            node_dir,
            problem,
            node_dir,
        )


def serve(config_path: Path, *, attach: Callable[[Any], Callable[[], None]] | None = None) -> None:
    """Run a node until SIGTERM/SIGINT; everything it creates is private (umask 077).

    ``attach(node)``, called just before the node starts serving, starts what the application
    layer runs in the same process (the platform's portal) and returns how to stop it (called
    before the node stops)."""
    make_files_private()
    config = load_node_config(config_path)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {config.node_id} %(levelname)s %(name)s: %(message)s",
    )
    check_node_dir(config.node_dir)
    node: Node | PlatformNode
    if config.role == "platform":
        from parties.platform.service import PlatformNode

        node = PlatformNode(config)
    else:
        node = Node(config)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("node %s: signal %s, stopping", config.node_id, signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # attached first: once the node reports SERVING, what runs with it serves too
    detach = attach(node) if attach is not None else None
    node.start()
    stopping.wait()
    if detach is not None:
        detach()
    node.stop()
