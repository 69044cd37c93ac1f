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
