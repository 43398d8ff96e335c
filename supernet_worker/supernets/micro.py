"""ENAS micro network: stacked normal cells with a reduction cell after each of the first two stages."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from controller_policy.spaces import EnasMicroSpace
from controller_policy.spaces.enas_micro import CELLS, Node

from ..ops import FactorizedReduce, ReLUConvBN, batch_norm, build_micro_op, drop_path, stem
from .base import Supernet, SupernetConfig


class MicroCell(nn.Module):
    """One cell. Op weights are per (node, slot, input, op), as in ENAS's micro search; the cell
    output concatenates the nodes no other node consumed, then 1x1 + BN (per-node 1x1 slices)."""

    def __init__(self, space: EnasMicroSpace, c_prev_prev: int, c_prev: int, c: int, reduce_prev: bool,
                 reduction: bool, track: bool, fixed: list[Node] | None) -> None:
        super().__init__()
        self.num_nodes = space.num_nodes
        # Calibrate both inputs to c channels and s1's resolution, then halve both in a reduction cell.
        self.pre0 = FactorizedReduce(c_prev_prev, c, track) if reduce_prev else ReLUConvBN(c_prev_prev, c, 1, track=track)
        self.pre1 = ReLUConvBN(c_prev, c, 1, track=track)
        self.reduce = nn.ModuleList(FactorizedReduce(c, c, track) for _ in range(2)) if reduction else None
        self.ops = nn.ModuleDict()
        for j in range(space.num_nodes):
            for slot in ("x", "y"):
                for i in range(2 + j):
                    for o in range(len(space.ops)):
                        if fixed is None or self._chosen(fixed[j], slot) == (i, o):
                            self.ops[f"node{j}_{slot}{i}_op{o}"] = build_micro_op(space.ops[o], c, track)
        self.drop_prob = 0.0  # set through Supernet.set_drop_path while retraining
        outputs = range(2 + space.num_nodes) if fixed is None else self._loose_ends(fixed)
        self.out_convs = nn.ModuleDict({f"node{k}": nn.Conv2d(c, c, 1, bias=False) for k in outputs})
        self.out_bn = batch_norm(c, track)

    def _path(self, key: str, x: Tensor) -> Tensor:
        op = self.ops[key]
        h = op(x)
        if self.training and self.drop_prob > 0 and not isinstance(op, nn.Identity):
            h = drop_path(h, self.drop_prob)
        return h

    @staticmethod
    def _chosen(node: Node, slot: str) -> tuple[int, int]:
        x_id, x_op, y_id, y_op = node
        return (x_id, x_op) if slot == "x" else (y_id, y_op)

    def _loose_ends(self, nodes: list[Node]) -> list[int]:
        used = {n[0] for n in nodes} | {n[2] for n in nodes}
        return [2 + j for j in range(self.num_nodes) if 2 + j not in used]

    def forward(self, s0: Tensor, s1: Tensor, nodes: list[Node]) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        if self.reduce is not None:
            states = [r(s) for r, s in zip(self.reduce, states)]
        for j, (x_id, x_op, y_id, y_op) in enumerate(nodes):
            states.append(self._path(f"node{j}_x{x_id}_op{x_op}", states[x_id])
                          + self._path(f"node{j}_y{y_id}_op{y_op}", states[y_id]))
        out = sum(self.out_convs[f"node{k}"](torch.relu(states[k])) for k in self._loose_ends(nodes))
        return self.out_bn(out)


class MicroNet(Supernet):
    def __init__(self, space: EnasMicroSpace, config: SupernetConfig, in_channels: int, num_classes: int,
                 arch: Sequence[int] | None = None) -> None:
        super().__init__(space, config, arch)
        fixed = space.cells(self.fixed_arch) if self.fixed_arch is not None else None
        c, track, n = config.channels, config.bn_track_running_stats, config.num_cells
        self.stem = stem(in_channels, 3 * c, track)
        self.cell_types: list[str] = []
        self.cells = nn.ModuleList()
        c_pp, c_p, reduce_prev = 3 * c, 3 * c, False
        for stage in range(3):
            kinds = ["normal"] * n + (["reduce"] if stage < 2 else [])
            for kind in kinds:
                if kind == "reduce":
                    c *= 2
                self.cells.append(MicroCell(space, c_pp, c_p, c, reduce_prev, kind == "reduce", track,
                                            fixed[kind] if fixed else None))
                self.cell_types.append(kind)
                c_pp, c_p, reduce_prev = c_p, c, kind == "reduce"
                if kind == "reduce" and stage == 1:
                    self._aux_head(c, num_classes)
        self.aux_after = len(self.cells) - n - 1  # the second reduction cell: 2/3 of the depth
        self._head(c, num_classes)

    def forward(self, x: Tensor, arch: Sequence[int] | None = None) -> Tensor:
        cells = self.space.cells(self._arch(arch))
        s0 = s1 = self.stem(x)
        aux = None
        for i, (kind, cell) in enumerate(zip(self.cell_types, self.cells)):
            s0, s1 = s1, cell(s0, s1, cells[kind])
            if i == self.aux_after:
                aux = self._aux(s1)
        return self._classify(torch.relu(s1), aux)


__all__ = ["MicroNet", "MicroCell", "CELLS"]
