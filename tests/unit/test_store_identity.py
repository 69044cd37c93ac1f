"""Issue 16: the right store and identity, and figures that are true.

The bank's MLflow store comes from ``node.yaml`` (``MLFLOW_TRACKING_URI`` overrides it; neither:
the node folder, never the current directory) and "no registered model" names the store it
looked in; ``pki issue --host`` adds host names without making identity ambiguous; the shipped
``grpc/health/v1/health.proto`` is the standard one; the lineage header counts requests, not
records; the MLflow run lasts as long as training and tags every party's dataset."""

from __future__ import annotations

import datetime as dt
import ipaddress
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from federation.audit.records import AuditEntry
from federation.errors import ConfigError
from federation.pki import certificate_identity, init_pki, issue_node_certificate
from parties.bank.registry import TrackingConfig, TrackingError, redact_uri, resolve
from parties.config import load_node_config
from xinyidai.lineage.model import Lineage, NodeAudit
from xinyidai.lineage.sections import headline

ROOT = Path(__file__).resolve().parents[2]

NODE_YAML = """\
node_id: bank
role: bank
tls: {ca: ca.pem, cert: node.pem, key: node.key}
data: {path: data/bank.csv, schema_role: bank}
"""


def _node(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "bank" / "node.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(NODE_YAML + extra)
    return path


# -- the bank's store --------------------------------------------------------------------------


def test_without_settings_the_store_is_in_the_node_folder_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = TrackingConfig.for_node(load_node_config(_node(tmp_path)))
    assert store.tracking.local_dir == (tmp_path / "bank" / "mlflow").resolve()
    assert "default in the node folder" in store.source
    assert str(tmp_path / "bank" / "mlflow") in store.describe()


def test_node_yaml_names_the_store_and_the_environment_overrides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    by_dir = load_node_config(_node(tmp_path, "mlflow: {dir: ../registry}\n"))
    store = TrackingConfig.for_node(by_dir)
    assert store.tracking.local_dir == (tmp_path / "registry").resolve()
    assert store.source == "node.yaml mlflow.dir"

    server = "postgresql://mlflow:s3cret@db.bank.example/mlflow"
    by_uri = load_node_config(_node(tmp_path, f"mlflow: {{tracking_uri: '{server}'}}\n"))
    store = TrackingConfig.for_node(by_uri)
    assert store.tracking.tracking_uri == server and store.source == "node.yaml mlflow.tracking_uri"
    assert "s3cret" not in store.describe() and "mlflow:***@db.bank.example" in store.describe()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ops:pw@mlflow.bank.example:5000")
    store = TrackingConfig.for_node(by_uri)
    assert store.tracking.tracking_uri == "http://ops:pw@mlflow.bank.example:5000"
    assert "MLFLOW_TRACKING_URI" in store.source and ":pw@" not in store.describe()


def test_an_ambiguous_mlflow_setting_names_the_file_and_field(tmp_path: Path) -> None:
    path = _node(tmp_path, "mlflow: {dir: x, tracking_uri: 'sqlite:///y.db'}\n")
    with pytest.raises(ConfigError, match=r"node\.yaml: field 'mlflow': .*either tracking_uri or"):
        load_node_config(path)


def test_passwords_and_tokens_are_redacted() -> None:
    assert redact_uri("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"
    assert redact_uri("http://token@h:5000") == "http://***@h:5000"
    assert redact_uri("http://u:p@ss@h/x") == "http://u:***@h/x"
    assert (
        redact_uri("sqlite:////srv/bank/mlflow/mlflow.db") == "sqlite:////srv/bank/mlflow/mlflow.db"
    )


def test_no_registered_model_names_the_store_it_looked_in(tmp_path: Path) -> None:
    store = TrackingConfig.resolve(tmp_path / "empty-store")
    with pytest.raises(TrackingError) as missing:
        resolve("credit-sbt", "champion", tracking=store)
    message = str(missing.value)
    assert "no registered model 'credit-sbt'" in message
    assert f"in the MLflow store {tmp_path / 'empty-store'}" in message


def test_model_commands_given_a_banks_config_use_the_store_that_bank_serves_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``xinyidai model list|show|promote --config BANK/node.yaml`` reads and writes the store the
    node serves from, not ``./.xinyidai/mlflow``: a promotion elsewhere never reaches a score."""
    from xinyidai.cli.main import app

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    node = _node(tmp_path, "mlflow: {dir: ../registry}\n")
    out = CliRunner().invoke(app, ["model", "list", "--config", str(node)])
    assert out.exit_code == 0, out.output
    assert str((tmp_path / "registry").resolve()) in out.output.replace("\n", "")
    assert not (tmp_path / ".xinyidai").exists()
    both = CliRunner().invoke(
        app, ["model", "list", "--config", str(node), "--mlflow-dir", str(tmp_path)]
    )
    assert both.exit_code != 0 and "not both" in both.output


# -- identity: node id plus host names -----------------------------------------------------------


def _sans(pem: bytes) -> x509.SubjectAlternativeName:
    cert = x509.load_pem_x509_certificate(pem)
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value


def test_pki_issue_host_adds_host_names_and_the_identity_stays_the_node_id(tmp_path: Path) -> None:
    layout = init_pki(tmp_path / "pki", ["bank"])
    issue_node_certificate(
        layout.directory, "tax", hosts=["tax.bureau.example", "localhost", "10.0.0.7"]
    )
    pem = layout.node_cert("tax").read_bytes()
    san = _sans(pem)
    assert san.get_values_for_type(x509.DNSName) == ["tax", "tax.bureau.example"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.7"),
    ]
    assert certificate_identity(pem) == "tax"
    for bad in ("taxhost", "*.bureau.example", "tax..example", "under_score.example"):
        with pytest.raises(ConfigError, match="fully qualified host name"):
            issue_node_certificate(layout.directory, "gas", hosts=[bad])
    assert not layout.node_cert("gas").exists()  # nothing written on a refusal


def test_cli_issue_host_is_repeatable_and_help_explains_operators(tmp_path: Path) -> None:
    from xinyidai.cli.pki import app

    runner = CliRunner()
    init_pki(tmp_path / "pki", ["bank"])
    result = runner.invoke(
        app,
        [
            *("issue", "--dir", str(tmp_path / "pki"), "--node", "officer-li"),
            *("--host", "ops.bank.example", "--host", "192.0.2.1"),
        ],
    )
    assert result.exit_code == 0, result.output
    san = _sans((tmp_path / "pki" / "officer-li.pem").read_bytes())
    assert san.get_values_for_type(x509.DNSName) == ["officer-li", "ops.bank.example"]
    help_text = " ".join(runner.invoke(app, ["issue", "--help"]).output.split())
    for needle in ("operators:", "--host", "ssl_target_name_override", "dot-free"):
        assert needle in help_text


def _cert(sans: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )


@pytest.mark.parametrize(
    ("sans", "outcome"),
    [
        ([x509.DNSName("bank"), x509.DNSName("bank.example.org")], "bank"),
        ([x509.DNSName("bank.example.org"), x509.DNSName("bank")], "bank"),
        ([x509.DNSName("bank"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))], "bank"),
        ([x509.DNSName("bank"), x509.DNSName("localhost")], "found 2"),  # two dot-free names
        ([x509.DNSName("bank.example.org")], "not a node id"),  # host names only
        ([x509.RFC822Name("bank"), x509.DNSName("tax.example.org")], "not a node id"),
        ([x509.RFC822Name("bank")], "no SAN DNS name"),
    ],
)
def test_identity_is_the_one_dot_free_dns_name(sans: list[x509.GeneralName], outcome: str) -> None:
    pem = _cert(sans)
    if outcome == "bank":
        assert certificate_identity(pem) == "bank"
    else:
        with pytest.raises(ConfigError, match=outcome):
            certificate_identity(pem)


# -- the wire contract: the standard health proto --------------------------------------------------


def test_the_shipped_health_proto_is_the_standard_one_and_is_not_generated(
    tmp_path: Path,
) -> None:
    from google.protobuf import descriptor_pb2
    from grpc_health.v1 import health_pb2

    import protos.generate as generate

    path = ROOT / "protos" / "grpc" / "health" / "v1" / "health.proto"
    assert path not in generate.proto_files()  # served by grpcio-health-checking's own code
    out = tmp_path / "health.pb"
    # protoc runs in its own process: its bundled C++ protobuf must never share one with TenSEAL's.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--descriptor_set_out={out}",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    shipped = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    served = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(served)
    assert shipped.name == "grpc/health/v1/health.proto"
    shipped.ClearField("name")
    served.ClearField("name")
    messages = list(shipped.message_type)
    while messages:  # protoc fills in json_name; the runtime's copy leaves it out
        message = messages.pop()
        messages.extend(message.nested_type)
        for f in message.field:
            f.ClearField("json_name")
    assert shipped == served


# -- lineage: requests, not records --------------------------------------------------------------


def _entry(seq: int, node: str, direction: str, operation: str, request_id: str) -> AuditEntry:
    return AuditEntry(
        seq=seq,
        ts=1_750_000_000.0 + seq,
        node_id=node,
        direction=direction,
        peer="bank",
        operation=operation,
        purpose="financing",
        job_id="",
        model_id="credit-sbt/1",
        subject="",
        request_id=request_id,
        counts={},
        decision="allow",
        reason="",
        prev_hash="",
        hash="",
    )


def test_lineage_header_counts_requests_by_kind_not_audit_records() -> None:
    bank = NodeAudit("bank", verified=True)
    tax = NodeAudit("tax", verified=True)
    utility = NodeAudit("utility", verified=True)
    seq = 0
    for op, rid in (("Score", "r1"), ("ScoreBatch", "r2"), ("Score", "r3")):
        for node, direction, operation in (
            (bank, "made", op),  # the operator's client, on the bank's log
            (bank, "served", op),
            (bank, "made", "ScoreReach"),
            (bank, "made", "ScoreReach"),
            (tax, "served", "ScoreReach"),
            (utility, "served", "ScoreReach"),
        ):
            seq += 1
            node.score_requests.append(_entry(seq, node.node_id, direction, operation, rid))
    seq += 1
    bank.score_requests.append(_entry(seq, "bank", "served", "Score", "r3"))  # a retry of r3
    lin = Lineage(
        name="credit-sbt",
        version="1",
        generated_at=time.time(),
        aliases=[],
        status="READY",
        created="",
        source="",
        run_id="run",
        tags={"xinyidai.parties": "bank,tax,utility"},
        nodes=[bank, tax, utility],
    )
    assert lin.requests_by_kind == {"one": 2, "batch": 1, "verify": 0}
    summary, _ = headline(lin)
    assert (
        "3 score request(s) served with this version (one: 2, batch: 1, verify: 0)" in (summary[1])
    )
    assert "19 audit record(s)" in summary[1]


# -- the MLflow run: training time, every party ------------------------------------------------


def test_the_run_opened_at_training_start_lasts_the_training_and_tags_every_party(
    tmp_path: Path,
) -> None:
    from xinyidai.tracking import PartyDataset, TrainingRecord, log_training, mlflow_client
    from xinyidai.tracking.record import open_training_run

    store = TrackingConfig.resolve(tmp_path / "store")
    run_id = open_training_run("job-7", tracking=store)
    client = mlflow_client(store)
    assert client.get_run(run_id).info.status == "RUNNING"
    datasets = [
        PartyDataset(party, party, f"{party[0]}" * 64, 10 + i)
        for i, party in enumerate(("bank", "tax", "utility"))
    ]
    record = TrainingRecord(
        job_id="job-7",
        model_name="credit-sbt",
        protocol="secureboost",
        parties=["bank", "tax", "utility"],
        bank_model_json="{}",
        datasets=datasets,
        consent={"tax": {"active": 3, "auth_set_sha256": "e" * 64, "auth_set_size": 3}},
        train_seconds=42.5,
        code_version="test",
    )
    tracked = log_training(record, tracking=store, register=False)
    assert tracked.run_id == run_id  # the run opened when training started, filled in
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.end_time - run.info.start_time == 42_500
    for dataset in datasets:
        tag = run.data.tags[f"xinyidai.dataset.{dataset.party}"]
        assert dataset.digest in tag and f"{dataset.n_rows} rows" in tag
    assert len(run.inputs.dataset_inputs) == 3

    # Without an opened run, the new run still spans the training time, not the registration.
    later = log_training(
        TrainingRecord(**{**record.__dict__, "job_id": "job-8"}), tracking=store, register=False
    )
    info = client.get_run(later.run_id).info
    assert later.run_id != run_id and info.end_time - info.start_time == 42_500


def test_a_failed_training_run_is_marked_failed(tmp_path: Path) -> None:
    from xinyidai.tracking import mlflow_client
    from xinyidai.tracking.record import fail_training_run, open_training_run

    store = TrackingConfig.resolve(tmp_path / "store")
    run_id = open_training_run("job-x", tracking=store)
    fail_training_run(run_id, tracking=store)
    assert mlflow_client(store).get_run(run_id).info.status == "FAILED"
