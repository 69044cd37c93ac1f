"""Node files are private from their first byte (issue 10, item 6): folders 0700, files 0600,
whatever umask the process started with; a node refuses a folder others can write and warns
about one others can read."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from federation.audit import AuditLog, sqlite_url
from federation.errors import ConfigError
from federation.files import (
    exposure,
    make_files_private,
    open_private_append,
    private_dir,
    write_atomic,
)
from parties.node import check_node_dir
from xinyidai.launcher import MARKER, prepare_workdir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most careless umask there is (0): whatever is private below is so by itself."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def test_private_helpers_ignore_a_careless_umask(tmp_path: Path, open_umask: None) -> None:
    folder = private_dir(tmp_path / "a" / "node")
    assert _mode(folder) == 0o700
    with open_private_append(folder / "node.log") as log:
        log.write(b"one line\n")
    with open_private_append(folder / "node.log") as log:  # appends, keeps the mode
        log.write(b"two\n")
    assert (folder / "node.log").read_bytes() == b"one line\ntwo\n"
    assert _mode(folder / "node.log") == 0o600
    write_atomic(folder / "models" / "m.json", b"{}")
    assert _mode(folder / "models") == 0o700 and _mode(folder / "models" / "m.json") == 0o600


def test_after_make_files_private_every_library_writes_private_files(
    tmp_path: Path, open_umask: None
) -> None:
    assert make_files_private() == 0  # returns the umask it replaced
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tax.csv").write_text("uscc\n")
    log = AuditLog(sqlite_url(tmp_path / "audit.db"), "tax")
    try:
        log.append(direction="local", peer="tax", operation="node.start")
        files = {p.name: _mode(p) for p in tmp_path.iterdir()}
    finally:
        log.close()
    assert files["data"] == 0o700 and _mode(tmp_path / "data" / "tax.csv") == 0o600
    assert {"audit.db", "audit.db-wal", "audit.db-shm"} <= set(files)
    assert all(files[n] == 0o600 for n in ("audit.db", "audit.db-wal", "audit.db-shm"))


def test_the_launcher_makes_a_private_workdir(tmp_path: Path, open_umask: None) -> None:
    workdir = tmp_path / "demo"
    prepare_workdir(workdir)
    assert _mode(workdir) == 0o700 and _mode(workdir / MARKER) == 0o600
    (workdir / "bank").mkdir()  # as the demo and the experiment builders do, plainly
    (workdir / "bank" / "node.yaml").write_text("node_id: bank\n")
    assert _mode(workdir / "bank") == 0o700 and _mode(workdir / "bank" / "node.yaml") == 0o600


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        (0o700, None),
        (0o755, "readable by others, enterable by others, readable by group"),
        (0o770, "writable by group"),
    ],
)
def test_exposure_names_who_else_may_read_or_write(
    tmp_path: Path, mode: int, expected: str | None
) -> None:
    os.chmod(tmp_path, mode)
    try:
        found = exposure(tmp_path)
    finally:
        os.chmod(tmp_path, 0o700)
    if expected is None:
        assert found is None
    else:
        assert found is not None and found.startswith(expected) and f"{mode:04o}" in found


def test_node_serve_refuses_a_folder_others_can_write_and_warns_on_one_they_can_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node_dir = tmp_path / "tax"
    node_dir.mkdir()
    os.chmod(node_dir, 0o700)
    with caplog.at_level(logging.WARNING, logger="parties.node"):
        check_node_dir(node_dir)
    assert not caplog.records
    os.chmod(node_dir, 0o755)
    with caplog.at_level(logging.WARNING, logger="parties.node"):
        check_node_dir(node_dir)
    assert any("readable by others" in r.getMessage() for r in caplog.records)
    assert any("chmod 700" in r.getMessage() for r in caplog.records)
    for mode in (0o777, 0o770, 0o702):
        os.chmod(node_dir, mode)
        with pytest.raises(ConfigError, match=r"writable by .*chmod 700"):
            check_node_dir(node_dir)
    os.chmod(node_dir, 0o700)
    check_node_dir(tmp_path / "missing")  # the node makes it, 0700
