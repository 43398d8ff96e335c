"""What every supernet shares: its config, the fixed-architecture (child) mode and the head."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import Tensor, nn

from controller_policy.spaces import Arch, SearchSpace

from ..ops import AuxiliaryHead
from ..settings import SupernetConfig


class Supernet(nn.Module):
    """A network over a search space. With ``arch`` given it is a standalone child: only the
    modules of that architecture exist (own weights, same parameter names as the supernet, so
    ``load_shared_weights`` can copy them over)."""

    def __init__(self, space: SearchSpace, config: SupernetConfig, arch: Sequence[int] | None) -> None:
        super().__init__()
        self.space = space
        self.config = config
        self.fixed_arch: Arch | None = space.validate(arch) if arch is not None else None

    def _candidates(self, chosen: int, num: int) -> list[int]:
        """Choices that get modules: all in the supernet, the chosen one in a child."""
        return [chosen] if self.fixed_arch is not None else list(range(num))

    def _arch(self, arch: Sequence[int] | None) -> Sequence[int]:
        if arch is None:
            if self.fixed_arch is None:
                raise ValueError("a supernet's forward needs an architecture")
            return self.fixed_arch
        if self.fixed_arch is not None and list(arch) != self.fixed_arch:
            raise ValueError("this child network is fixed to another architecture")
        return arch

    def _head(self, channels: int, num_classes: int) -> None:
        self.dropout = nn.Dropout(self.config.dropout)
        self.classifier = nn.Linear(channels, num_classes)

    def _aux_head(self, channels: int, num_classes: int) -> None:
        """Call where the auxiliary head's input has ``channels``; ``_aux`` then feeds it."""
        self.aux_head = AuxiliaryHead(channels, num_classes) if self.config.auxiliary else None

    def _aux(self, x: Tensor) -> Tensor | None:
        return self.aux_head(x) if self.config.auxiliary and self.training else None

    def _classify(self, x: Tensor, aux: Tensor | None = None) -> Tensor | tuple[Tensor, Tensor]:
        logits = self.classifier(self.dropout(x.mean(dim=(2, 3))))
        return logits if aux is None else (logits, aux)

    def set_drop_path(self, prob: float) -> None:
        """The drop-path probability from now on (the trainer ramps it up over the epochs)."""
        droppable = [module for module in self.modules() if hasattr(module, "drop_prob")]
        if prob > 0 and not droppable:
            raise ValueError(f"drop_path {prob}: the {self.space.name} network has no droppable paths")
        for module in droppable:
            module.drop_prob = prob


@contextmanager
def recalibrated_batch_norm(net: nn.Module, arch: Sequence[int],
                            batches: Sequence[tuple[Tensor, Tensor]] | None) -> Iterator[None]:
    """Inside, ``net`` (in eval mode) normalises with the statistics of child ``arch`` measured on
    ``batches``; afterwards its batch norms are as before (no running averages). ``None``: no
    calibration, each batch normalises with its own statistics."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d) and not m.track_running_stats] if batches else []
    was_training, momenta = net.training, [m.momentum for m in bns]
    try:
        for m in bns:
            device = m.weight.device if m.weight is not None else None
            m.running_mean = torch.zeros(m.num_features, device=device)
            m.running_var = torch.ones(m.num_features, device=device)
            m.num_batches_tracked = torch.zeros((), dtype=torch.long, device=device)
            m.track_running_stats, m.momentum = True, None  # momentum None: the plain average over the batches
        if bns:
            net.train()
            with torch.no_grad():
                for x, _ in batches:
                    net(x, arch)
            net.eval()
        yield
    finally:
        for m, momentum in zip(bns, momenta):
            m.running_mean = m.running_var = m.num_batches_tracked = None
            m.track_running_stats, m.momentum = False, momentum
        net.train(was_training)
