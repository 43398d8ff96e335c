"""NAS-Bench-201 skeleton: stem, 3 stages of N cells, residual reduction blocks between stages."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from controller_policy.spaces import NB201Space
from controller_policy.spaces.nb201 import NB201_EDGES, NB201_NODES

from ..ops import ResNetBasicBlock, batch_norm, build_nb201_op, drop_path, stem
from .base import Supernet, SupernetConfig


class NB201Cell(nn.Module):
    def __init__(self, space: NB201Space, c: int, track: bool, fixed: Sequence[int] | None) -> None:
        super().__init__()
        self.edges = nn.ModuleList()
        for e in range(len(NB201_EDGES)):
            choices = range(len(space.ops)) if fixed is None else [fixed[e]]
            ops = {str(o): build_nb201_op(space.ops[o], c, track) for o in choices}
            self.edges.append(nn.ModuleDict({k: m for k, m in ops.items() if m is not None}))
        self.drop_prob = 0.0  # set through Supernet.set_drop_path (retraining; supernet training's drop_path)

    def _edge(self, e: int, op: str, x: Tensor) -> Tensor:
        module = self.edges[e][op]
        h = module(x)
        if self.training and self.drop_prob > 0 and not isinstance(module, nn.Identity):
            h = drop_path(h, self.drop_prob)
        return h

    def forward(self, x: Tensor, arch: Sequence[int]) -> Tensor:
        nodes = [x]
        for i in range(1, NB201_NODES):
            terms = [self._edge(e, str(arch[e]), nodes[j])
                     for e, (to, j) in enumerate(NB201_EDGES) if to == i and str(arch[e]) in self.edges[e]]
            nodes.append(sum(terms) if terms else torch.zeros_like(x))
        return nodes[-1]


class NB201Net(Supernet):
    def __init__(self, space: NB201Space, config: SupernetConfig, in_channels: int, num_classes: int,
                 arch: Sequence[int] | None = None) -> None:
        super().__init__(space, config, arch)
        c, track = config.channels, config.bn_track_running_stats
        self.stem = stem(in_channels, c, track)
        self.stages = nn.ModuleList()
        for s in range(3):
            blocks: list[nn.Module] = [ResNetBasicBlock(c // 2, c, track)] if s > 0 else []
            blocks += [NB201Cell(space, c, track, self.fixed_arch) for _ in range(config.num_cells)]
            self.stages.append(nn.ModuleList(blocks))
            if s == 1:
                self._aux_head(c, num_classes)
            c *= 2
        c //= 2
        self.last_bn = batch_norm(c, track)
        self._head(c, num_classes)

    def forward(self, x: Tensor, arch: Sequence[int] | None = None) -> Tensor:
        arch = self._arch(arch)
        x = self.stem(x)
        aux = None
        for s, stage in enumerate(self.stages):
            for block in stage:
                x = block(x, arch) if isinstance(block, NB201Cell) else block(x)
            if s == 1:
                aux = self._aux(x)
        return self._classify(torch.relu(self.last_bn(x)), aux)
