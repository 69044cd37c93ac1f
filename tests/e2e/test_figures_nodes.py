"""Issue 16 over real node processes: the bank finds its store from its own folder and says
which; a holder digests the authorisation set of an alignment for the consent snapshot; a
client built from ``protos/`` alone (the shipped health proto) reaches a node by host name.

The federation is built as ``xinyidai demo`` builds it, then the bank's ``node.yaml`` loses its
``mlflow:`` setting and the nodes start from an empty working directory with no
``MLFLOW_TRACKING_URI``: exactly "a bank node started as the README says".
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.audit import AuditLog
from federation.errors import PeerError
from federation.pki import issue_node_certificate
from federation.transport.base import new_meta
from parties.config import load_node_config
from parties.consent import ConsentRegistry
from parties.node import holder_peers, operator_client
from protos import bank_pb2

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
HOLDERS = ("tax", "utility")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes

    workdir = tmp_path_factory.mktemp("figures")
    cwd = tmp_path_factory.mktemp("cwd")
    fed, examples = build_federation(workdir, enterprises=300, seed=16, deadline_s=20.0, workers=1)
    bank_yaml = fed.configs["bank"]
    settings = yaml.safe_load(bank_yaml.read_text())
    settings.pop("mlflow", None)  # the README's node.yaml: no store named
    bank_yaml.write_text(yaml.safe_dump(settings, sort_keys=False))
    # Outside clients reach the bank as localhost: IP SANs 127.0.0.1 and ::1.
    issue_node_certificate(fed.pki.directory, "bank", overwrite=True, hosts=["localhost"])
    shutil.copyfile(fed.pki.node_cert("bank"), fed.node_dir("bank") / "node.pem")
    shutil.copyfile(fed.pki.node_key("bank"), fed.node_dir("bank") / "node.key")
    issue_node_certificate(fed.pki.directory, "officer-li")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        mp.chdir(cwd)  # the node processes inherit it
        try:
            start_nodes(fed)
            yield {"fed": fed, "examples": examples, "cwd": cwd}
        finally:
            stop_nodes(fed)


def test_the_bank_logs_its_store_and_a_missing_model_names_it(world: dict[str, Any]) -> None:
    fed, cwd = world["fed"], world["cwd"]
    store = fed.node_dir("bank").resolve() / "mlflow"
    log = (fed.node_dir("bank") / "node.log").read_text(errors="replace")
    assert f"model registry: MLflow store {store} (from the default in the node folder" in log
    bank = load_node_config(fed.configs["bank"])
    request = bank_pb2.ScoreRequest(
        meta=new_meta("financing"),
        uscc=world["examples"]["tax"]["authorised"],
        model_name="credit-sbt",
        model_ref="champion",
    )
    with operator_client(bank) as client, pytest.raises(PeerError) as missing:
        client.call("Score", request)
    assert "no registered model 'credit-sbt'" in missing.value.detail
    assert f"in the MLflow store {store}" in missing.value.detail
    assert (store / "mlflow.db").is_file()
    assert sorted(p.name for p in cwd.iterdir()) == []  # nothing created where it was started


@pytest.fixture(scope="module")
def aligned(world: dict[str, Any]) -> dict[str, Any]:
    """One PSI alignment of bank ∩ tax ∩ utility and each party's evidence for it."""
    from parties.bank.alignment import align
    from xinyidai.tracking.register import party_evidence

    bank = load_node_config(world["fed"].configs["bank"])
    with (
        AuditLog(bank.resolved_audit_url, "bank") as audit,
        holder_peers(bank, audit=audit) as peers,
    ):
        alignment = align(
            bank, peers, job_id="figures-align", salt=b"figures", min_overlap=0.2, audit=audit
        )
        datasets, consent = party_evidence(
            bank, peers, job_id="figures-align-sb", alignment_id=alignment.job_id
        )
    return {"bank": bank, "alignment": alignment, "datasets": datasets, "consent": consent}


def test_each_holder_digests_the_authorisation_set_of_the_alignment(
    world: dict[str, Any], aligned: dict[str, Any]
) -> None:
    from federation.pki import load_platform_public_key
    from parties.bank.table import BankTable

    bank, alignment = aligned["bank"], aligned["alignment"]
    assert sorted(d.party for d in aligned["datasets"]) == ["bank", "tax", "utility"]
    table_codes = list(BankTable.load(bank).codes)
    codes = {str(table_codes[int(i)]) for i in alignment.bank_rows}
    for holder in HOLDERS:
        config = load_node_config(world["fed"].configs[holder])
        assert config.platform_public_key is not None
        registry = ConsentRegistry(
            config.resolved_consent_url,
            load_platform_public_key(config.platform_public_key),
            node_id=holder,
        )
        ids = sorted(
            r.auth.auth_id
            for r in registry.list(bank_id="bank", include_inactive=False)
            if r.auth.purpose == "financing" and r.auth.uscc in codes
        )
        assert ids, f"{holder}: the demo city authorises most applicants"
        snapshot = aligned["consent"][holder]
        assert snapshot["auth_set_sha256"] == hashlib.sha256("\n".join(ids).encode()).hexdigest()
        assert snapshot["auth_set_size"] == len(ids) and snapshot["alignment"] == "figures-align"
        assert snapshot["auth_set_size"] <= snapshot["active"]


def test_run_lasts_the_training_and_lineage_counts_requests_not_records(
    world: dict[str, Any], aligned: dict[str, Any]
) -> None:
    """Train in the node processes (run opened at the start), register in the bank's own
    store, serve one Score and one ScoreBatch, then read the lineage of the version."""
    from parties.bank.registry import TrackingConfig
    from parties.bank.secureboost import train_secureboost
    from xinyidai.lineage import build_lineage
    from xinyidai.tracking import mlflow_client, promote
    from xinyidai.tracking.record import open_training_run
    from xinyidai.tracking.register import register_secureboost

    fed, bank, alignment = world["fed"], aligned["bank"], aligned["alignment"]
    tracking = TrackingConfig.for_node(bank).tracking  # the store the bank node serves from
    job_id = "figures-align-sb"
    run_id = open_training_run(job_id, tracking=tracking)
    with AuditLog(bank.resolved_audit_url, "bank") as audit:
        with holder_peers(bank, audit=audit, service="SecureBoostHolder") as peers:
            clf, report = train_secureboost(
                bank,
                alignment,
                holders=peers,
                params={"n_trees": 2, "max_depth": 2, "key_bits": 2048, "workers": 1},
                job_id=job_id,
                audit=audit,
            )
        run = register_secureboost(
            bank,
            clf,
            report,
            datasets=aligned["datasets"],
            consent=aligned["consent"],
            tracking=tracking,
            audit=audit,
        )
        promote(run.model_name, str(run.version), by="officer-li", tracking=tracking, audit=audit)
    assert run.run_id == run_id
    info = mlflow_client(tracking).get_run(run_id).info
    assert abs((info.end_time - info.start_time) - report.seconds * 1000) <= 1
    client = mlflow_client(tracking)
    tags = client.get_run(run_id).data.tags
    assert {k for k in tags if k.startswith("xinyidai.dataset.")} == {
        f"xinyidai.dataset.{p}" for p in ("bank", *HOLDERS)
    }

    code = world["examples"]["tax"]["authorised"]
    with operator_client(bank) as operator:
        one = operator.call(
            "Score",
            bank_pb2.ScoreRequest(
                meta=new_meta("financing"), uscc=code, model_name="credit-sbt", model_ref="champion"
            ),
        )
        batch = operator.call(
            "ScoreBatch",
            bank_pb2.ScoreBatchRequest(
                meta=new_meta("financing"),
                model_name="credit-sbt",
                model_ref="champion",
                usccs=[code],
            ),
        )
    assert one.uscc == code and len(batch.enterprises) == 1

    logs = {
        n: AuditLog(load_node_config(fed.configs[n]).resolved_audit_url, n) for n in fed.configs
    }
    try:
        lineage = build_lineage("credit-sbt", "champion", audit_logs=logs, tracking=tracking)
    finally:
        for log in logs.values():
            log.close()
    assert lineage.requests_by_kind == {"one": 1, "batch": 1, "verify": 0}
    assert len(lineage.score_requests) > 2  # each request leaves records at every node
    snapshot = lineage.consent["tax"]
    assert snapshot["auth_set_sha256"] == aligned["consent"]["tax"]["auth_set_sha256"]


CLIENT = """
import sys
import grpc
sys.path.insert(0, sys.argv[1])
from grpc.health.v1 import health_pb2, health_pb2_grpc

pki, address = sys.argv[2], sys.argv[3]
creds = grpc.ssl_channel_credentials(
    root_certificates=open(pki + "/ca.pem", "rb").read(),
    private_key=open(pki + "/officer-li.key", "rb").read(),
    certificate_chain=open(pki + "/officer-li.pem", "rb").read(),
)
with grpc.secure_channel(address, creds) as channel:  # no ssl_target_name_override
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
print(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
"""


def test_a_client_built_from_the_protos_alone_reaches_the_bank_by_its_address(
    world: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "gen"
    out.mkdir()
    # protoc runs in its own process: its bundled C++ protobuf must never share one with TenSEAL's.
    generated = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "grpc/health/v1/health.proto",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert generated.returncode == 0, generated.stderr
    for folder in ("grpc", "grpc/health", "grpc/health/v1"):
        (out / folder / "__init__.py").touch()
    # The generated package is also called "grpc": load it beside the real one under a new root.
    shutil.move(out / "grpc", out / "wire")
    (out / "wire" / "__init__.py").touch()
    script = tmp_path / "client.py"
    script.write_text(
        textwrap.dedent(CLIENT).replace("from grpc.health.v1 import", "from wire.health.v1 import")
    )
    for name in ("health_pb2_grpc.py",):
        path = out / "wire" / "health" / "v1" / name
        path.write_text(
            path.read_text().replace("from grpc.health.v1 import", "from wire.health.v1 import")
        )
    fed = world["fed"]
    port = load_node_config(fed.configs["bank"]).address.rsplit(":", 1)[1]
    done = subprocess.run(
        [sys.executable, str(script), str(out), str(fed.pki.directory), f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "SERVING"
