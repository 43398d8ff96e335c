"""Shared-weight supernets, one file per search-space family, and standalone children."""
from __future__ import annotations

from typing import Sequence

from controller_policy.spaces import SearchSpace

from .base import Supernet, SupernetConfig, recalibrated_batch_norm
from .macro import MacroNet
from .micro import MicroNet
from .nb201 import NB201Net

NETWORKS: dict[str, type[Supernet]] = {"enas_macro": MacroNet, "enas_micro": MicroNet, "nb201": NB201Net}


def build_supernet(space: SearchSpace, config: SupernetConfig, in_channels: int, num_classes: int) -> Supernet:
    """The weight-sharing network over every architecture of ``space``."""
    return NETWORKS[space.name](space, config, in_channels, num_classes)


def build_child(space: SearchSpace, arch: Sequence[int], config: SupernetConfig, in_channels: int,
                num_classes: int) -> Supernet:
    """A standalone network of one architecture, with its own weights (for retraining)."""
    return NETWORKS[space.name](space, config, in_channels, num_classes, arch=arch)


def load_shared_weights(child: Supernet, supernet: Supernet) -> None:
    """Copy the supernet's weights of the child's architecture into the child."""
    shared = supernet.state_dict()
    missing = [k for k in child.state_dict() if k not in shared]
    if missing:
        raise ValueError(f"the supernet has no weights for {missing[:5]}: was it built with the same config?")
    child.load_state_dict({k: shared[k] for k in child.state_dict()})


__all__ = ["Supernet", "SupernetConfig", "MacroNet", "MicroNet", "NB201Net", "build_supernet", "build_child",
           "load_shared_weights", "recalibrated_batch_norm"]
