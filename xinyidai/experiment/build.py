"""The throwaway federation of one experiment: a development PKI and one node directory per party.

Why node configs point at the party files in place (never copies): an experiment over a large
public data set should not duplicate it per run, and the result names the files it read.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from xinyidai.experiment.config import ExperimentConfig, PartyConfig


def table_config(party: PartyConfig, *, label: str | None) -> Any:
    from parties.config import TableConfig

    if party.schema_role is not None:
        return TableConfig(path=party.path, schema_role=party.schema_role, labels=party.labels)
    return TableConfig(
        path=party.path,
        id_column=party.id_column,
        id_kind=party.id_kind,
        label_column=label,
        features=party.features,
        categorical=party.categorical,
        category=party.category,
        labels=party.labels,
    )


def build_experiment(config: ExperimentConfig, workdir: Path) -> Any:
    """PKI and one node directory per party (configs pointing at the files in place)."""
    from federation.pki import init_pki
    from parties.config import ComputeConfig, LimitsConfig, NodeConfig, PeerConfig, TlsConfig
    from xinyidai.launcher import Federation, free_ports, prepare_workdir

    prepare_workdir(workdir, made_by="xinyidai experiment run")
    names = list(config.parties())
    pki = init_pki(workdir / "pki", names)
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    configs: dict[str, Path] = {}
    limits = LimitsConfig(
        deadline_s=config.run.deadline_s,
        compute_workers=config.crypto.workers,
        max_message_mb=64,
    )
    for name, party in config.parties().items():
        node_dir = workdir / name
        node_dir.mkdir(parents=True)
        shutil.copyfile(pki.node_cert(name), node_dir / "node.pem")
        shutil.copyfile(pki.ca_cert, node_dir / "ca.pem")
        shutil.copyfile(pki.node_key(name), node_dir / "node.key")
        os.chmod(node_dir / "node.key", 0o600)
        is_bank = name == "bank"
        if is_bank:
            peers = [
                PeerConfig(node_id=h, address=f"127.0.0.1:{ports[h]}", role="holder")
                for h in config.holders
            ]
            platform_key = None
        else:
            peers = [PeerConfig(node_id="bank", role="bank")]
            shutil.copyfile(pki.platform_signing_pub, node_dir / "platform_signing.pub")
            platform_key = Path("platform_signing.pub")
        node = NodeConfig(
            node_id=name,
            role="bank" if is_bank else "holder",
            address=f"127.0.0.1:{ports[name]}",
            tls=TlsConfig(ca=Path("ca.pem"), cert=Path("node.pem"), key=Path("node.key")),
            data=table_config(party, label=config.bank.label_column if is_bank else None),
            platform_public_key=platform_key,
            peers=peers,
            limits=limits,
            compute=party.compute or ComputeConfig(),
        )
        configs[name] = node_dir / "node.yaml"
        configs[name].write_text(node.to_yaml())
    return Federation(workdir=workdir, pki=pki, configs=configs)
