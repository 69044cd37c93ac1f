"""Shared fixtures. The federation fixture starts three real node processes (mTLS on loopback)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def local_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, dict]]:
    """A running three-node federation built exactly as `xinyidai demo` builds it."""
    from xinyidai.demo import build_federation
    from xinyidai.launcher import start_nodes, stop_nodes

    workdir = tmp_path_factory.mktemp("federation")
    fed, examples = build_federation(workdir, enterprises=600, seed=11, deadline_s=10.0)
    try:
        start_nodes(fed)
        yield fed, examples
    finally:
        stop_nodes(fed)
