"""The demo's federation on disk: a development PKI, a synthetic city, one node directory per
party, and enterprises' authorisations recorded at the holders. No process is started here.

Why its own module: the end-to-end tests, the benchmarks and the notebooks build the same
federation and start it themselves (``xinyidai.launcher``); only ``xinyidai demo`` runs the story.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import date
from pathlib import Path

import numpy as np

from federation.audit import AuditLog, sqlite_url
from federation.pki import PkiLayout, init_pki
from parties.authorisation import PlatformSigner
from parties.config import (
    LimitsConfig,
    MlflowConfig,
    NodeConfig,
    PeerConfig,
    TableConfig,
    TlsConfig,
)
from parties.consent import ConsentRegistry
from parties.data.synth import DEFAULT_AS_OF, synthesize_city
from xinyidai.launcher import Federation, free_ports, prepare_workdir

HOLDERS = {"tax": ["tax"], "utility": ["electricity", "water", "gas"]}
DAY = 86_400.0


def build_federation(
    workdir: Path,
    *,
    enterprises: int,
    seed: int,
    deadline_s: float = 30.0,
    workers: int = 2,
) -> tuple[Federation, dict[str, object]]:
    """PKI, city, node directories, configs and consent records; no process started yet."""
    prepare_workdir(workdir)
    nodes = ["bank", *HOLDERS]
    pki = init_pki(workdir / "pki", nodes)
    tables = synthesize_city(n_enterprises=enterprises, seed=seed)
    ports = dict(zip(nodes, free_ports(len(nodes)), strict=True))
    configs: dict[str, Path] = {}
    for node_id in nodes:
        node_dir = workdir / node_id
        (node_dir / "data").mkdir(parents=True)
        data_path = node_dir / "data" / f"{node_id}.csv"
        tables[node_id].to_csv(data_path, index=False)
        shutil.copyfile(pki.node_cert(node_id), node_dir / "node.pem")
        shutil.copyfile(pki.ca_cert, node_dir / "ca.pem")
        key_copy = node_dir / "node.key"
        shutil.copyfile(pki.node_key(node_id), key_copy)
        os.chmod(key_copy, 0o600)
        if node_id == "bank":
            peers = [
                PeerConfig(node_id=h, address=f"127.0.0.1:{ports[h]}", role="holder")
                for h in HOLDERS
            ]
            platform_key = None
        else:
            peers = [PeerConfig(node_id="bank", role="bank")]
            shutil.copyfile(pki.platform_signing_pub, node_dir / "platform_signing.pub")
            platform_key = Path("platform_signing.pub")
        config = NodeConfig(
            node_id=node_id,
            role="bank" if node_id == "bank" else "holder",
            address=f"127.0.0.1:{ports[node_id]}",
            node_dir=Path("."),
            tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
            data=TableConfig(
                path=Path("data") / f"{node_id}.csv",
                schema_role=node_id,  # type: ignore[arg-type]
                as_of=date.fromisoformat(str(tables[node_id].attrs.get("as_of", DEFAULT_AS_OF))),
            ),
            platform_public_key=platform_key,
            peers=peers,
            limits=LimitsConfig(deadline_s=deadline_s, compute_workers=workers),
            # the bank serves models from the demo's one MLflow store (WORKDIR/mlflow)
            mlflow=MlflowConfig(dir=Path("..") / "mlflow") if node_id == "bank" else None,
        )
        configs[node_id] = node_dir / "node.yaml"
        configs[node_id].write_text(config.to_yaml())
    consent = record_consent(workdir, pki, tables, seed=seed)
    return Federation(workdir=workdir, pki=pki, configs=configs), consent


def record_consent(workdir: Path, pki: PkiLayout, tables: dict, *, seed: int) -> dict[str, object]:
    """Most of the bank's applicants authorise it at each holder; a few revoke, a few lapse."""
    rng = np.random.default_rng(seed + 1)
    signer = PlatformSigner.from_file(pki.platform_signing_key)
    applicants = tables["bank"]["uscc"].to_numpy()
    now = time.time()
    examples: dict[str, object] = {}
    for holder, categories in HOLDERS.items():
        held = set(tables[holder]["uscc"])
        codes = [c for c in applicants if c in held]
        granted = [c for c in codes if rng.random() < 0.8]
        registry = ConsentRegistry(
            sqlite_url(workdir / holder / "consent.db"),
            signer.public_key,
            node_id=holder,
        )
        audit = AuditLog(sqlite_url(workdir / holder / "audit.db"), holder)
        revoked, expired = [], []
        for i, code in enumerate(granted):
            lapsed = i % 50 == 7
            signed = signer.issue(
                uscc=code,
                bank_id="bank",
                purpose="financing",
                categories=categories,
                valid_from=now - 400 * DAY if lapsed else now - DAY,
                valid_until=now - 30 * DAY if lapsed else now + 365 * DAY,
            )
            registry.grant(signed)
            if lapsed:
                expired.append(code)
            elif i % 40 == 3:
                registry.revoke(signed.auth.auth_id, reason="enterprise withdrew consent")
                revoked.append(code)
        audit.append(
            direction="local",
            peer="platform",
            operation="consent.import",
            counts={"granted": len(granted), "revoked": len(revoked), "expired": len(expired)},
        )
        audit.close()
        lapsed_or_revoked = set(revoked) | set(expired)
        granted_set = set(granted)
        active = [c for c in granted if c not in lapsed_or_revoked]
        examples[holder] = {
            "authorised": active[0],
            "revoked": revoked[0] if revoked else None,
            "unauthorised": next(c for c in codes if c not in granted_set),
        }
    return examples


def add_platform(
    fed: Federation,
    *,
    poll_s: float = 0.5,
    portal: bool = True,
    holder_timeout_s: float = 3.0,
) -> Path:
    """Add the platform node (``role: platform``, with its portal) to a built federation: its
    folder and certificate, ``platform:`` links in every holder's ``node.yaml`` (they then follow
    its feed and serve only banks it admitted), the bank admitted, and the platform first in
    ``fed.configs`` so it starts first. Returns the platform's folder."""
    import yaml
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from federation.pki import issue_node_certificate, load_platform_signing_key
    from parties.config import PortalConfig
    from parties.platform.feed import FeedStore

    workdir = fed.workdir
    issue_node_certificate(fed.pki.directory, "platform")
    pdir = workdir / "platform"
    pdir.mkdir(mode=0o700)
    for src, dst in (
        (fed.pki.node_cert("platform"), "node.pem"),
        (fed.pki.ca_cert, "ca.pem"),
        (fed.pki.node_key("platform"), "node.key"),
        (fed.pki.platform_signing_key, "platform_signing.key"),
    ):
        shutil.copyfile(src, pdir / dst)
        os.chmod(pdir / dst, 0o600)
    port, portal_port = free_ports(2)
    holder_peers = []
    for holder in HOLDERS:
        path = fed.configs[holder]
        raw = yaml.safe_load(path.read_text())
        raw["platform"] = {"address": f"127.0.0.1:{port}", "poll_s": poll_s}
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        holder_peers.append(PeerConfig(node_id=holder, address=raw["address"], role="holder"))
    config = NodeConfig(
        node_id="platform",
        role="platform",
        address=f"127.0.0.1:{port}",
        tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
        platform_signing_key=Path("platform_signing.key"),
        peers=[*holder_peers, PeerConfig(node_id=fed.bank_id, role="bank")],
        portal=PortalConfig(
            address=f"127.0.0.1:{portal_port}",
            holder_timeout_s=holder_timeout_s,
            lineage_dir=(workdir / "lineage").resolve(),  # what the demo's lineage step writes
        )
        if portal
        else None,
    )
    (pdir / "node.yaml").write_text(config.to_yaml())
    fed.configs = {"platform": pdir / "node.yaml", **fed.configs}
    pem = (workdir / fed.bank_id / "node.pem").read_bytes()
    fingerprint = x509.load_pem_x509_certificate(pem).fingerprint(hashes.SHA256()).hex()
    feed = FeedStore.for_node_dir(pdir, load_platform_signing_key(pdir / "platform_signing.key"))
    feed.set_institution(
        fed.bank_id, status="admitted", reason="admitted (demo)", cert_sha256=fingerprint
    )
    feed.close()
    return pdir


def enrol_enterprise(platform_dir: Path, uscc: str, password: str) -> None:
    """A portal account for one enterprise (what ``xinyidai platform account create`` does)."""
    from parties.platform.accounts import AccountStore

    store = AccountStore.for_node_dir(platform_dir)
    try:
        store.create(uscc, password, kind="enterprise")
    finally:
        store.close()
