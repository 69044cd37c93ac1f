"""Shared end-to-end fixtures: local federations of real node processes (mTLS on loopback).

Each test module that needs running nodes asks ``start_federation`` for them, with its own city
size, seed and deadlines; the nodes live as long as the module (module scope, as before) and are
stopped at its end, even when the module's own fixture fails halfway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from xinyidai.launcher import Federation

StartFederation = Callable[..., "tuple[Federation, dict[str, Any]]"]


@pytest.fixture(scope="module")
def start_federation() -> Iterator[StartFederation]:
    """``start_federation(workdir, enterprises=, seed=, deadline_s=, workers=)``: build a
    federation exactly as ``xinyidai demo`` does (``build_federation``), start every node as its
    own OS process and wait until each serves; returns ``(fed, examples)``.

    Every federation started in the module is stopped when the module ends. Environment the
    nodes must inherit (``MLFLOW_TRACKING_URI``) is set by the caller before calling."""
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes

    started: list[Federation] = []

    def start(workdir: Path, **build: Any) -> tuple[Federation, dict[str, Any]]:
        fed, examples = build_federation(workdir, **build)
        started.append(fed)  # before start_nodes: a node that fails to come up is stopped too
        start_nodes(fed)
        return fed, examples

    try:
        yield start
    finally:
        for fed in reversed(started):
            stop_nodes(fed)


@pytest.fixture(scope="module")
def local_federation(
    start_federation: StartFederation, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Federation, dict[str, Any]]:
    """A running three-node federation built exactly as `xinyidai demo` builds it."""
    workdir = tmp_path_factory.mktemp("federation")
    return start_federation(workdir, enterprises=600, seed=11, deadline_s=10.0)
