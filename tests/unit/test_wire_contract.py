"""The wire contract: generated code matches the .proto files; nothing but protobuf crosses."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_the_proto_files():
    out = subprocess.run(
        [sys.executable, "-m", "protos.generate", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_drift_is_detected(tmp_path):
    """Editing a .proto without regenerating must fail the check."""
    import shutil

    fake_root = tmp_path / "root"
    shutil.copytree(ROOT / "protos", fake_root / "protos")
    proto = fake_root / "protos" / "common.proto"
    proto.write_text(
        proto.read_text().replace(
            "string request_id = 4;", "string request_id = 4;\n  string extra = 5;"
        )
    )
    # The copied generator resolves its root from its own path, so it checks the edited copy.
    out = subprocess.run(
        [sys.executable, "-m", "protos.generate", "--check"],
        cwd=fake_root,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "common_pb2.py" in out.stdout


def test_protoc_never_runs_inside_the_test_process():
    """grpcio-tools bundles its own C++ protobuf; loaded next to TenSEAL's it aborts the process
    (``__pthread_tpp_change_priority`` assertion, seen in CI). Tests run protoc in a subprocess."""
    offenders = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").rglob("*.py")
        if re.search(r"^\s*(from grpc_tools\b|import grpc_tools\b)", path.read_text(), re.M)
        or re.search(r"\bgen(erate)?\.(main|generate)\(", path.read_text())
    ]
    assert offenders == []


def test_every_request_carries_meta():
    """The runtime refuses requests without purpose/job scope, so every request type must have it."""
    from protos import bank_pb2, holder_pb2

    for module in (holder_pb2, bank_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                fields = {f.name for f in method.input_type.fields}
                assert "meta" in fields, f"{service.name}.{method.name} request has no meta"


def test_no_pickle_in_node_or_model_code():
    pattern = re.compile(r"\b(c?pickle|dill|cloudpickle|marshal)\b")
    offenders = []
    for package in ("federation", "parties", "models", "protos"):
        for path in (ROOT / package).rglob("*.py"):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                code = line.split("#", 1)[0]
                if pattern.search(code) and "import" in code:
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == []
