"""What a child costs at inference, counted exactly at a configured skeleton: its parameters
(``params_m``, millions) and its FLOPs for one image (``flops_m``, millions; a multiply-add counts
2, as ``torch.utils.flop_counter.FlopCounterMode`` counts: convolutions and the classifier, not
batch norm, pooling or additions).

Counted from the child's modules, not measured: its network is built on the meta device (no
memory, no weights initialised, no arithmetic), one forward pass there gives every convolution's and
linear layer's input shape, and their FLOPs follow from the layers' sizes. The auxiliary head
trains only: it is not counted. ``latency_ms`` is predicted from a latency table
(``supernet_worker.latency``): the child's ops' times plus a fixed part.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from controller_policy.spaces import build_space

from .latency_table import LatencyTable
from .settings import Skeleton
from .supernets import build_child

__all__ = ["CostModel", "Skeleton", "conv_or_linear_flops"]

AUXILIARY = "aux_head"


def conv_or_linear_flops(module: nn.Module, input_shape: Sequence[int], output_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass of a Conv2d or Linear layer on one image (2 per multiply-add)."""
    if isinstance(module, nn.Conv2d):
        out_channels, out_h, out_w = output_shape[1:]
        kernel = module.kernel_size[0] * module.kernel_size[1]
        return 2 * out_channels * out_h * out_w * (module.in_channels // module.groups) * kernel
    return 2 * module.in_features * module.out_features


class CostModel:
    """``cost_model(arch)`` -> ``{"params_m": ..., "flops_m": ...}`` for any child of the space
    (cached per architecture), and ``latency_ms`` predicted from a latency table when given one
    (profiled for this skeleton: ``LatencyTable.check``)."""

    def __init__(self, skeleton: Skeleton, latency: LatencyTable | None = None) -> None:
        self.skeleton, self.latency = skeleton, latency
        self.space = build_space(skeleton.space, **skeleton.space_params)
        self._cache: dict[tuple[int, ...], dict[str, float]] = {}

    def __call__(self, arch: Sequence[int]) -> dict[str, float]:
        key = tuple(self.space.validate(arch))
        if key not in self._cache:
            self._cache[key] = self._count(key)
        return dict(self._cache[key])

    def _count(self, arch: tuple[int, ...]) -> dict[str, float]:
        s = self.skeleton
        flops = [0]

        def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            flops[0] += conv_or_linear_flops(module, inputs[0].shape, output.shape)

        with torch.device("meta"):
            child = build_child(self.space, arch, s.supernet, s.in_channels, s.num_classes).eval()
            counted = [m for name, m in child.named_modules()
                       if isinstance(m, (nn.Conv2d, nn.Linear)) and not name.startswith(AUXILIARY)]
            hooks = [m.register_forward_hook(count) for m in counted]
            child(torch.empty(1, s.in_channels, s.image_size, s.image_size))
        for hook in hooks:
            hook.remove()
        params = sum(p.numel() for name, p in child.named_parameters() if not name.startswith(AUXILIARY))
        costs = {"params_m": params / 1e6, "flops_m": flops[0] / 1e6}
        if self.latency is not None:  # the table's ops this child holds, plus the fixed part
            costs["latency_ms"] = self.latency.predict(name for name, _ in child.named_modules())
        return costs
