"""Candidate operations shared by the supernets (ReLU-Conv-BN ordering, as ENAS and NAS-Bench-201)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from controller_policy.spaces import EDGE_OP, OP, SearchSpace

#: candidate ops without weights, in every space: a child made only of these learns nothing
PARAMETER_FREE_OPS = frozenset({"none", "skip_connect", "identity", "avg_pool_3x3", "max_pool_3x3"})


def parameter_free(space: SearchSpace, arch: Sequence[int]) -> bool:
    """Whether every op the architecture chooses is parameter-free (a young supernet's favourite)."""
    return all(space.ops[a] in PARAMETER_FREE_OPS for d, a in zip(space.decisions, arch) if d.kind in (OP, EDGE_OP))


def batch_norm(channels: int, track_running_stats: bool) -> nn.BatchNorm2d:
    # Weight-sharing search uses batch statistics (track_running_stats=False): running averages
    # mixed over many sampled children describe none of them.
    return nn.BatchNorm2d(channels, affine=True, track_running_stats=track_running_stats)


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, track: bool = False) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            batch_norm(c_out, track),
        )


class SepConv(nn.Sequential):
    """ReLU, depthwise kxk, pointwise 1x1, BN; ``repeats`` times (ENAS micro stacks two)."""

    def __init__(self, channels: int, kernel: int, repeats: int = 1, track: bool = False) -> None:
        layers: list[nn.Module] = []
        for _ in range(repeats):
            layers += [
                nn.ReLU(inplace=False),
                nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False),
                nn.Conv2d(channels, channels, 1, bias=False),
                batch_norm(channels, track),
            ]
        super().__init__(*layers)


def pool(kind: str) -> nn.Module:
    if kind == "max":
        return nn.MaxPool2d(3, stride=1, padding=1)
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


class FactorizedReduce(nn.Module):
    """ENAS's stride-2 reduction: two 1x1 convs on pixel grids offset by one, concatenated."""

    def __init__(self, c_in: int, c_out: int, track: bool = False) -> None:
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.path1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.path2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = batch_norm(c_out, track)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        shifted = nn.functional.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.path1(x), self.path2(shifted)], dim=1))


class ResNetBasicBlock(nn.Module):
    """NAS-Bench-201's residual reduction block between stages."""

    def __init__(self, c_in: int, c_out: int, track: bool = False) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride=2, track=track)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, stride=1, track=track)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


def stem(c_in: int, c_out: int, track: bool) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), batch_norm(c_out, track))


def build_macro_op(name: str, channels: int, track: bool) -> nn.Module:
    builders = {
        "conv_3x3": lambda: ReLUConvBN(channels, channels, 3, track=track),
        "conv_5x5": lambda: ReLUConvBN(channels, channels, 5, track=track),
        "sep_conv_3x3": lambda: SepConv(channels, 3, track=track),
        "sep_conv_5x5": lambda: SepConv(channels, 5, track=track),
        "max_pool_3x3": lambda: pool("max"),
        "avg_pool_3x3": lambda: pool("avg"),
    }
    return builders[name]()


def build_micro_op(name: str, channels: int, track: bool) -> nn.Module:
    builders = {
        "sep_conv_3x3": lambda: SepConv(channels, 3, repeats=2, track=track),
        "sep_conv_5x5": lambda: SepConv(channels, 5, repeats=2, track=track),
        "avg_pool_3x3": lambda: pool("avg"),
        "max_pool_3x3": lambda: pool("max"),
        "identity": nn.Identity,
    }
    return builders[name]()


def build_nb201_op(name: str, channels: int, track: bool) -> nn.Module | None:
    """``None`` for NAS-Bench-201's ``none`` (the edge carries nothing)."""
    builders = {
        "none": lambda: None,
        "skip_connect": nn.Identity,
        "nor_conv_1x1": lambda: ReLUConvBN(channels, channels, 1, track=track),
        "nor_conv_3x3": lambda: ReLUConvBN(channels, channels, 3, track=track),
        "avg_pool_3x3": lambda: pool("avg"),
    }
    return builders[name]()


class AuxiliaryHead(nn.Module):
    """A classifier on an intermediate feature map (ENAS/DARTS final training): its loss, weighted,
    joins the main one during training and is ignored at test time."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False), nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(channels, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).flatten(1))


def drop_path(x: Tensor, drop_prob: float) -> Tensor:
    """Zero whole samples of one path with probability ``drop_prob``, rescaling the kept ones."""
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask
