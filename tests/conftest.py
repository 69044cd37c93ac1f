"""Shared test constants and helpers. The fixtures that start node processes live in
tests/e2e/conftest.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


TreeShape = Callable[[Any], list[list[tuple[Any, ...]]]]


@pytest.fixture
def tree_shape() -> TreeShape:
    """``tree_shape(clf)``: a fitted SecureBoost model's trees as sorted (node, leaf?, owner,
    feature, threshold, weight) tuples — what "the same trees" means across runs whose Paillier
    randomness (keys, obfuscators, engines) differs."""

    def shape(clf: Any) -> list[list[tuple[Any, ...]]]:
        return [
            sorted(
                (i, n.is_leaf, n.owner, n.feature, n.threshold, round(n.weight, 12))
                for i, n in t.nodes.items()
            )
            for t in clf.trees_
        ]

    return shape
