"""Searching under a budget: the reward a child earns from its measured accuracy and its costs.

Per constraint (``params_m``, ``flops_m``, ``latency_ms``: see ``supernet_worker.costs``) a target and
a mode:

- ``soft``: MnasNet's reward (Tan et al. 2019), accuracy x (cost / target) ** weight with
  weight -0.07 by default: a child twice the target loses ~5 % of its reward, one at half the
  target gains as much, so the search trades accuracy for cost smoothly around the target.
- ``hard``: a child above the target earns ``penalty`` whatever its accuracy, lowered by how far
  it is above (``penalty - (cost / target - 1)``, the largest excess of its hard constraints): a
  flat penalty would give a search that has not met a child within the budget yet nothing to
  learn from (its every reward equal), this one leads it towards the budget.

Every algorithm and evaluator sees the same shaped reward; the measured one and the costs are
kept with it (``trajectory.jsonl``). Torch- and Ray-free: the costs come from a callable the caller
passes in (``supernet_worker.costs.CostModel``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Sequence

#: what a constraint can bound: millions of parameters, of FLOPs; milliseconds (from a latency table)
COSTS = ("params_m", "flops_m", "latency_ms")
MODES = ("soft", "hard")
MNASNET_WEIGHT = -0.07


@dataclass
class Constraint:
    target: float
    mode: str = "soft"
    weight: float = MNASNET_WEIGHT  # soft: the exponent of cost / target

    def check(self, where: str) -> None:
        if not (math.isfinite(self.target) and self.target > 0):
            raise ValueError(f"{where}.target must be a positive number, got {self.target}")
        if self.mode not in MODES:
            raise ValueError(f"{where}.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not (math.isfinite(self.weight) and self.weight <= 0):
            raise ValueError(f"{where}.weight must be <= 0 (a costlier child earns less), got {self.weight}")


@dataclass
class Constraints:
    params_m: Constraint | None = None
    flops_m: Constraint | None = None
    latency_ms: Constraint | None = None

    def items(self) -> list[tuple[str, Constraint]]:
        return [(f.name, getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None]


def shaped_reward(measured: float, costs: dict[str, float], constraints: Constraints, penalty: float) -> float:
    """The reward of a child that measured ``measured`` and costs ``costs``."""
    reward, excess = measured, 0.0
    for key, c in constraints.items():
        cost = costs[key]
        if cost <= 0:
            raise ValueError(f"a child's {key} must be positive to be shaped, got {cost}")
        if c.mode == "hard":
            excess = max(excess, cost / c.target - 1)
        else:
            reward *= (cost / c.target) ** c.weight
    return penalty - excess if excess > 0 else reward


def feasible(costs: dict[str, float], constraints: Constraints) -> bool:
    """Whether a child meets every hard constraint."""
    return all(costs[key] <= c.target for key, c in constraints.items() if c.mode == "hard")


class Objective:
    """Shapes a batch of evaluations (``Evaluation``-like: ``reward``, ``metrics``)."""

    def __init__(self, constraints: Constraints, penalty: float,
                 cost_model: Callable[[Sequence[int]], dict[str, float]]) -> None:
        self.constraints, self.penalty, self.cost_model = constraints, penalty, cost_model

    def costs(self, arch: Sequence[int]) -> dict[str, float]:
        return self.cost_model(arch)

    def describe(self) -> dict:
        """The constraints and penalty, as summaries and reports show them."""
        return {"constraints": {key: vars(c) for key, c in self.constraints.items()}, "penalty": self.penalty}

    def shape(self, arch: Sequence[int], measured: float) -> tuple[float, dict[str, float], bool]:
        """(shaped reward, costs, feasible)."""
        costs = self.costs(arch)
        return (shaped_reward(measured, costs, self.constraints, self.penalty), costs,
                feasible(costs, self.constraints))
