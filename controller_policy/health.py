"""Is the controller still learning? What a search reports about its policy after every update.

ENAS squashes logits as ``tanh_constant * tanh(raw / temperature)``. When Adam drives the raw
values far enough (|x| > ~9), float32 tanh returns exactly ±1: every gradient through it is zero,
the entropy bonus cannot act, and the policy is frozen while the search goes on (seen on an H200
with REINFORCE's old defaults). These figures make that visible, measured on a fixed set of probe
architectures drawn uniformly once per search:

- ``saturated``: the fraction of squashed values (legal choices) with |tanh| > 0.99;
- ``exactly_saturated``: the fraction at exactly ±1 (no gradient at all);
- ``max_pre_tanh``: the largest |raw / temperature|;
- ``policy_change``: max |Δ log π| of the probes since the previous measurement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .controller import ENASController

SATURATION = 0.99
#: the policy counts as frozen when no probe's log-probability moved by more than this ...
FROZEN_CHANGE = 1e-5
#: ... over this many consecutive updates
FROZEN_UPDATES = 3
PROBES = 64


@dataclass
class PolicyHealth:
    saturated: float
    exactly_saturated: float
    max_pre_tanh: float
    policy_change: float  # NaN at the first measurement

    def as_metrics(self) -> dict[str, float]:
        return {"policy_saturated": self.saturated, "policy_exactly_saturated": self.exactly_saturated,
                "policy_max_pre_tanh": self.max_pre_tanh, "policy_change": self.policy_change}


class PolicyMonitor:
    """``measure(controller)`` after every controller update; ``frozen`` once the policy has not moved
    for ``FROZEN_UPDATES`` updates in a row (``warning()`` says so, once)."""

    def __init__(self, controller: ENASController, seed: int = 0, probes: int = PROBES) -> None:
        rng = np.random.default_rng(seed)
        self.probes = torch.as_tensor([controller.space.sample(rng) for _ in range(probes)], dtype=torch.long)
        self.previous: torch.Tensor | None = None
        self.still = 0
        self.warned = False
        self.last: PolicyHealth | None = None

    @torch.no_grad()
    def measure(self, controller: ENASController) -> PolicyHealth:
        out = controller.evaluate(self.probes.to(controller.g_emb.device))
        legal = controller.masks.unsqueeze(0).expand_as(out.pre_tanh)
        x = out.pre_tanh[legal].float()
        squashed = torch.tanh(x).abs() if controller.config.tanh_constant is not None else torch.zeros_like(x)
        log_prob = out.log_prob.cpu()
        change = math.nan if self.previous is None else float((log_prob - self.previous).abs().max())
        self.previous = log_prob
        self.still = self.still + 1 if change < FROZEN_CHANGE else 0  # NaN compares False
        self.last = PolicyHealth(saturated=float((squashed > SATURATION).float().mean()),
                                 exactly_saturated=float((squashed == 1.0).float().mean()),
                                 max_pre_tanh=float(x.abs().max()), policy_change=change)
        return self.last

    @property
    def frozen(self) -> bool:
        return self.still >= FROZEN_UPDATES

    def warning(self) -> str | None:
        """The one warning line for a frozen policy (None before it froze, and after it was given)."""
        if not self.frozen or self.warned:
            return None
        self.warned = True
        h = self.last
        return (f"[raynas] warning: the controller's policy has stopped moving (max |Δ log π| < {FROZEN_CHANGE:g} "
                f"over {FROZEN_UPDATES} updates; {h.exactly_saturated:.0%} of its squashed logits sit at exactly "
                f"±1, {h.saturated:.0%} at |tanh| > {SATURATION}, largest |pre-tanh| {h.max_pre_tanh:.1f}): the "
                "search goes on sampling a fixed policy. Lower the algorithm's lr (ppo.lr / reinforce.lr), clip "
                "its gradients (ppo.grad_clip / reinforce.grad_clip) or raise controller.temperature")
