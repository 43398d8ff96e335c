"""ENAS macro network: a stem, L layers of chosen ops with skip concatenation, two reductions."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from controller_policy.spaces import EnasMacroSpace

from ..ops import FactorizedReduce, batch_norm, build_macro_op, stem
from .base import Supernet, SupernetConfig


class MacroNet(Supernet):
    """Layer i: ``op(x_{i-1})`` concatenated with the selected earlier outputs, then 1x1 + BN.

    Concatenation followed by a 1x1 conv equals a sum of per-input 1x1 convs, so each source
    (``op`` or ``skip{j}``) owns its slice of the 1x1 weights and a child keeps only its slices.
    After layers L/3-1 and 2L/3-1 every earlier output is factorized-reduced (stride 2), so skips
    across a reduction still line up; the width stays constant during search, as in ENAS.
    """

    def __init__(self, space: EnasMacroSpace, config: SupernetConfig, in_channels: int, num_classes: int,
                 arch: Sequence[int] | None = None) -> None:
        super().__init__(space, config, arch)
        c, track, n = config.channels, config.bn_track_running_stats, space.num_layers
        self.pool_layers = sorted({p for p in (n // 3 - 1, 2 * n // 3 - 1) if 0 <= p < n - 1})
        fixed = space.layers(self.fixed_arch) if self.fixed_arch is not None else None
        # Filters per layer: constant during search; doubled after each reduction when widening.
        widths, width = [], c
        for i in range(n):
            widths.append(width)
            if i in self.pool_layers and config.widen_at_reduction:
                width *= 2
        self.stem = stem(in_channels, c, track)
        self.ops = nn.ModuleList()
        self.combine = nn.ModuleList()
        self.combine_bn = nn.ModuleList(batch_norm(widths[i], track) for i in range(n))
        for i in range(n):
            op_choice = fixed[i][0] if fixed else 0
            self.ops.append(nn.ModuleDict({
                str(o): build_macro_op(space.ops[o], widths[i], track)
                for o in self._candidates(op_choice, len(space.ops))
            }))
            sources = ["op"] + [f"skip{j}" for j in range(i) if fixed is None or fixed[i][1][j]]
            self.combine.append(nn.ModuleDict({s: nn.Conv2d(widths[i], widths[i], 1, bias=False) for s in sources}))
        self.reduce = nn.ModuleDict({
            f"pool{p}_layer{j}": FactorizedReduce(widths[p], widths[p + 1], track)
            for p in self.pool_layers for j in range(p + 1) if fixed is None or self._reduced_output_used(fixed, p, j)
        })
        self.aux_after = self.pool_layers[-1] if self.pool_layers else n - 1
        self._aux_head(widths[min(self.aux_after + 1, n - 1)], num_classes)
        self._head(widths[-1], num_classes)

    @staticmethod
    def _reduced_output_used(layers: list, pool: int, j: int) -> bool:
        return j == pool or any(layers[i][1][j] for i in range(pool + 1, len(layers)))

    def forward(self, x: Tensor, arch: Sequence[int] | None = None) -> Tensor | tuple[Tensor, Tensor]:
        layers = self.space.layers(self._arch(arch))
        outs: list[Tensor | None] = []
        inp = self.stem(x)
        aux = None
        for i, (op, skips) in enumerate(layers):
            combine = self.combine[i]
            z = combine["op"](torch.relu(self.ops[i][str(op)](inp)))
            for j, bit in enumerate(skips):
                if bit:
                    z = z + combine[f"skip{j}"](torch.relu(outs[j]))
            outs.append(self.combine_bn[i](z))
            if i in self.pool_layers:
                outs = [self.reduce[k](o) if (k := f"pool{i}_layer{j}") in self.reduce else None
                        for j, o in enumerate(outs)]
            inp = outs[-1]
            if i == self.aux_after:
                aux = self._aux(inp)
        return self._classify(torch.relu(inp), aux)
