"""NAS-Bench-201 cell space: 4 nodes, 6 edges j -> i (j < i), each one of 5 ops.

Edge order is NAS-Bench-201's: (1<-0), (2<-0), (2<-1), (3<-0), (3<-1), (3<-2), so the canonical
string is exactly the benchmark's key, e.g.
``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|``.
"""
from __future__ import annotations

from typing import Any, Sequence

from .base import EDGE_OP, Arch, Decision, SearchSpace

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4
#: (to_node, from_node) per decision, in NAS-Bench-201 order
NB201_EDGES = tuple((i, j) for i in range(1, NB201_NODES) for j in range(i))


class NB201Space(SearchSpace):
    name = "nb201"
    ops = NB201_OPS

    def __init__(self) -> None:
        super().__init__(
            [Decision(f"edge{j}->{i}", EDGE_OP, len(NB201_OPS), block=e) for e, (i, j) in enumerate(NB201_EDGES)]
        )

    def nodes(self, arch: Sequence[int]) -> list[list[tuple[str, int]]]:
        """NAS-Bench-201's ``str2lists`` view: per node 1..3, ``[(op, from_node), ...]``."""
        out: list[list[tuple[str, int]]] = [[] for _ in range(1, NB201_NODES)]
        for (i, j), op in zip(NB201_EDGES, arch):
            out[i - 1].append((self.ops[op], j))
        return out

    def to_json(self, arch: Sequence[int]) -> dict[str, Any]:
        arch = self.validate(arch)
        return {"space": self.name, "nodes": [[[op, j] for op, j in node] for node in self.nodes(arch)]}

    def from_json(self, obj: Any) -> Arch:
        obj = self._check_space_field(obj)
        nodes = obj.get("nodes")
        if not isinstance(nodes, list) or len(nodes) != NB201_NODES - 1:
            raise ValueError(f"nb201: 'nodes' must be a list of {NB201_NODES - 1} nodes of [op, from] pairs")
        arch: Arch = []
        for i, node in enumerate(nodes, start=1):
            if not isinstance(node, list) or len(node) != i:
                raise ValueError(f"nb201: nodes[{i - 1}] must list {i} [op, from] pairs (from = 0..{i - 1})")
            for j, edge in enumerate(node):
                if not isinstance(edge, list) or len(edge) != 2 or edge[1] != j:
                    raise ValueError(f"nb201: nodes[{i - 1}][{j}] must be [op, {j}], got {edge!r}")
                arch.append(self._op_index(edge[0], f"edge {j}->{i}"))
        return self.validate(arch)

    def to_string(self, arch: Sequence[int]) -> str:
        arch = self.validate(arch)
        return "+".join("|" + "|".join(f"{op}~{j}" for op, j in node) + "|" for node in self.nodes(arch))

    def from_string(self, text: str) -> Arch:
        if not isinstance(text, str):
            raise ValueError(f"nb201: architecture string expected, got {type(text).__name__}")
        parts = text.strip().split("+")
        if len(parts) != NB201_NODES - 1:
            raise ValueError(f"nb201: {text!r} must have {NB201_NODES - 1} '+'-separated nodes")
        arch: Arch = []
        for i, part in enumerate(parts, start=1):
            if not (part.startswith("|") and part.endswith("|")):
                raise ValueError(f"nb201: node {i} {part!r} must look like |op~0|op~1|")
            edges = part[1:-1].split("|")
            if len(edges) != i:
                raise ValueError(f"nb201: node {i} must have {i} edges, got {len(edges)} in {part!r}")
            for j, edge in enumerate(edges):
                op, sep, src = edge.partition("~")
                if sep != "~" or src != str(j):
                    raise ValueError(f"nb201: edge {edge!r} of node {i} must be 'op~{j}'")
                arch.append(self._op_index(op, f"edge {j}->{i}"))
        return self.validate(arch)
