"""ENAS micro space: a normal and a reduction cell of B nodes each.

Node j of a cell takes two inputs among the two cell inputs (0, 1) and earlier nodes (2..j+1),
and applies one op to each. Decisions follow the ENAS controller's sampling order per node:
input x, input y, op x, op y. The canonical string uses ENAS's ``fixed_arc`` order per node
(``x_id x_op y_id y_op``), nodes separated by ``|`` and cells by ``||``:
``"0 0 1 4 | 2 1 0 2 || 1 3 0 3 | 2 0 2 4"``.
"""
from __future__ import annotations

from typing import Any, Sequence

from .base import INPUT, OP, Arch, Decision, SearchSpace

MICRO_OPS = ("sep_conv_3x3", "sep_conv_5x5", "avg_pool_3x3", "max_pool_3x3", "identity")
CELLS = ("normal", "reduce")

Node = tuple[int, int, int, int]  # x_id, x_op, y_id, y_op


class EnasMicroSpace(SearchSpace):
    name = "enas_micro"
    ops = MICRO_OPS
    cell_inputs = 2

    def __init__(self, num_nodes: int = 5) -> None:
        if num_nodes < 1:
            raise ValueError(f"enas_micro: num_nodes must be >= 1, got {num_nodes}")
        self.num_nodes = num_nodes
        decisions = []
        for c, cell in enumerate(CELLS):
            for j in range(num_nodes):
                block = c * num_nodes + j
                n_in = self.cell_inputs + j
                decisions += [
                    Decision(f"{cell}/node{j}/input_x", INPUT, n_in, block=block, cell=c),
                    Decision(f"{cell}/node{j}/input_y", INPUT, n_in, block=block, cell=c),
                    Decision(f"{cell}/node{j}/op_x", OP, len(MICRO_OPS), block=block, cell=c),
                    Decision(f"{cell}/node{j}/op_y", OP, len(MICRO_OPS), block=block, cell=c),
                ]
        super().__init__(decisions)

    def params(self) -> dict[str, Any]:
        return {"num_nodes": self.num_nodes}

    def cells(self, arch: Sequence[int]) -> dict[str, list[Node]]:
        """``{"normal": [(x_id, x_op, y_id, y_op), ...], "reduce": [...]}``."""
        out: dict[str, list[Node]] = {}
        for c, cell in enumerate(CELLS):
            nodes = []
            for j in range(self.num_nodes):
                x_id, y_id, x_op, y_op = arch[4 * (c * self.num_nodes + j) : 4 * (c * self.num_nodes + j) + 4]
                nodes.append((x_id, x_op, y_id, y_op))
            out[cell] = nodes
        return out

    def _from_nodes(self, cells: dict[str, list[Node]]) -> Arch:
        arch: Arch = []
        for cell in CELLS:
            for x_id, x_op, y_id, y_op in cells[cell]:
                arch += [x_id, y_id, x_op, y_op]
        return arch

    def to_json(self, arch: Sequence[int]) -> dict[str, Any]:
        arch = self.validate(arch)
        return {
            "space": self.name,
            **{
                cell: [
                    {"inputs": [x_id, y_id], "ops": [self.ops[x_op], self.ops[y_op]]}
                    for x_id, x_op, y_id, y_op in nodes
                ]
                for cell, nodes in self.cells(arch).items()
            },
        }

    def from_json(self, obj: Any) -> Arch:
        obj = self._check_space_field(obj)
        cells: dict[str, list[Node]] = {}
        for cell in CELLS:
            nodes = obj.get(cell)
            if not isinstance(nodes, list) or len(nodes) != self.num_nodes:
                raise ValueError(f"enas_micro: {cell!r} must be a list of {self.num_nodes} nodes")
            parsed = []
            for j, node in enumerate(nodes):
                where = f"{cell}[{j}]"
                if not isinstance(node, dict) or not isinstance(node.get("inputs"), list) \
                        or not isinstance(node.get("ops"), list) or len(node["inputs"]) != 2 or len(node["ops"]) != 2:
                    raise ValueError(f"enas_micro: {where} must be {{'inputs': [x, y], 'ops': [op_x, op_y]}}")
                x_op = self._op_index(node["ops"][0], f"{where}.ops[0]")
                y_op = self._op_index(node["ops"][1], f"{where}.ops[1]")
                parsed.append((node["inputs"][0], x_op, node["inputs"][1], y_op))
            cells[cell] = parsed
        return self.validate(self._from_nodes(cells))

    def to_string(self, arch: Sequence[int]) -> str:
        arch = self.validate(arch)
        return " || ".join(
            " | ".join(" ".join(str(v) for v in node) for node in nodes) for nodes in self.cells(arch).values()
        )

    def from_string(self, text: str) -> Arch:
        ints = self._parse_ints(text)  # ENAS order: x_id x_op y_id y_op per node
        if len(ints) != self.num_decisions:
            raise ValueError(f"enas_micro: expected {self.num_decisions} integers (4 per node), got {len(ints)}")
        nodes = [tuple(ints[i : i + 4]) for i in range(0, len(ints), 4)]
        return self.validate(self._from_nodes({"normal": nodes[: self.num_nodes], "reduce": nodes[self.num_nodes :]}))
