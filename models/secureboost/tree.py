"""SecureBoost trees as every party sees them: heap-numbered nodes, and which leaves a row can
reach when only some splits are known.

Why its own module: the bank, each holder, the plaintext reference and the bank's scoring
service all walk the same tree structure; a party knows the meaning of its own splits only, so
"reachable leaves under my splits" (ANDed over the parties) is how every one of them scores.
Nodes are numbered heap-style: root 0, children of i are 2i+1 (left) and 2i+2 (right).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "ReachProgram",
    "Tree",
    "TreeNode",
    "depth_of",
    "is_descendant",
    "leaf_reachability",
    "left_child",
    "parent_of",
    "right_child",
    "sibling_of",
]


def left_child(node: int) -> int:
    return 2 * node + 1


def right_child(node: int) -> int:
    return 2 * node + 2


def parent_of(node: int) -> int:
    return (node - 1) // 2


def sibling_of(node: int) -> int:
    return node + 1 if node % 2 == 1 else node - 1


def depth_of(node: int) -> int:
    return int(node + 1).bit_length() - 1


def is_descendant(node: int, ancestor: int) -> bool:
    """``node`` lies in the subtree of ``ancestor`` (or is it)."""
    while node > ancestor:
        node = parent_of(node)
    return node == ancestor


@dataclass
class TreeNode:
    """One node. For a split, ``owner`` is the party; ``feature``/``threshold`` are known only to
    the owner (−1 in a party's copy of another party's split)."""

    node_id: int
    is_leaf: bool
    weight: float = 0.0
    owner: str = ""
    feature: int = -1
    threshold: int = -1
    gain: float = 0.0
    n_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"node": self.node_id, "n_samples": self.n_samples}
        if self.is_leaf:
            out["weight"] = self.weight
        else:
            out.update(owner=self.owner, gain=self.gain)
            if self.feature >= 0:
                out.update(feature=self.feature, threshold=self.threshold)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeNode:
        leaf = "weight" in data
        return cls(
            node_id=int(data["node"]),
            is_leaf=leaf,
            weight=float(data.get("weight", 0.0)),
            owner=str(data.get("owner", "")),
            feature=int(data.get("feature", -1)),
            threshold=int(data.get("threshold", -1)),
            gain=float(data.get("gain", 0.0)),
            n_samples=int(data.get("n_samples", 0)),
        )


@dataclass
class Tree:
    nodes: dict[int, TreeNode] = field(default_factory=dict)

    def leaves(self) -> list[int]:
        return sorted(i for i, node in self.nodes.items() if node.is_leaf)

    def splits(self) -> list[int]:
        return sorted(i for i, node in self.nodes.items() if not node.is_leaf)

    def leaf_weights(self) -> np.ndarray:
        return np.array([self.nodes[i].weight for i in self.leaves()], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"nodes": [self.nodes[i].to_dict() for i in sorted(self.nodes)]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tree:
        nodes = [TreeNode.from_dict(d) for d in data["nodes"]]
        return cls(nodes={n.node_id: n for n in nodes})


def leaf_reachability(
    leaves: Sequence[int], go_left: Mapping[int, np.ndarray], n_rows: int
) -> np.ndarray:
    """bool[n_rows, len(leaves)]: leaf reachable when only the splits in ``go_left`` are known.

    Every party computes this with its own splits (a split it does not own lets a row reach
    both sides); the AND over all parties leaves exactly one leaf per row.
    """
    reach = np.ones((n_rows, len(leaves)), dtype=bool)
    for j, leaf in enumerate(leaves):
        child = int(leaf)
        while child > 0:
            par = parent_of(child)
            mask = go_left.get(par)
            if mask is not None:
                reach[:, j] &= mask if child == left_child(par) else ~mask
            child = par
    return reach


@dataclass(frozen=True)
class ReachProgram:
    """Every leaf of every tree as its root path over one party's splits: reach in one step.

    Why: scoring asks "which leaves can this row reach under my splits" for all trees at once;
    walking trees leaf by leaf costs thousands of small numpy calls per request. Compiled once
    per model part, ``reach`` is one gather and one comparison over rows x leaves x depth.
    ``splits``: the (tree, node) this party resolves, the columns of ``go_left``. Leaves are
    numbered globally: tree 0's leaves ascending, then tree 1's... (``tree_starts``).
    """

    splits: tuple[tuple[int, int], ...]
    tree_starts: np.ndarray  # first global leaf of each tree
    n_leaves: int
    steps: np.ndarray  # int (n_leaves, depth): 1 + column of go_left; 0 = no constraint
    left: np.ndarray  # bool (n_leaves, depth): the path goes left there (True at padding)

    @classmethod
    def compile(
        cls, leaves: Sequence[Sequence[int]], owned: Iterable[tuple[int, int]]
    ) -> ReachProgram:
        """``leaves[t]``: tree t's leaf heap ids; ``owned``: the (tree, node) splits known."""
        splits = tuple(sorted(set(owned)))
        column = {key: j + 1 for j, key in enumerate(splits)}
        paths: list[list[tuple[int, bool]]] = []
        starts: list[int] = []
        for t, tree_leaves in enumerate(leaves):
            starts.append(len(paths))
            for leaf in sorted(int(x) for x in tree_leaves):
                path: list[tuple[int, bool]] = []
                child = leaf
                while child > 0:
                    par = parent_of(child)
                    j = column.get((t, par))
                    if j is not None:
                        path.append((j, child == left_child(par)))
                    child = par
                paths.append(path)
        depth = max((len(p) for p in paths), default=0) or 1
        steps = np.zeros((len(paths), depth), dtype=np.int64)
        left = np.ones((len(paths), depth), dtype=bool)
        for i, path in enumerate(paths):
            for d, (j, goes_left) in enumerate(path):
                steps[i, d], left[i, d] = j, goes_left
        return cls(splits, np.asarray(starts, dtype=np.int64), len(paths), steps, left)

    def reach(self, go_left: np.ndarray) -> np.ndarray:
        """bool (rows, n_leaves) from ``go_left``: bool (rows, len(splits))."""
        n = go_left.shape[0]
        ext = np.empty((n, len(self.splits) + 1), dtype=bool)
        ext[:, 0] = True
        ext[:, 1:] = go_left
        out = np.empty((n, self.n_leaves), dtype=bool)
        for start in range(0, n, 4096):  # bounded memory: rows x leaves x depth per block
            block = ext[start : start + 4096][:, self.steps]
            out[start : start + 4096] = ~(block ^ self.left).any(axis=2)
        return out
