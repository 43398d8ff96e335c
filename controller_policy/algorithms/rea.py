"""Regularised (aging) evolution, Real et al. 2019, through the same harness as the RL searches.

    population: the last P evaluated architectures (the oldest dies when a child is added)
    child:      the best of S members drawn at random, with one decision mutated to another
                legal choice

Until P architectures have been evaluated, proposals are uniform. An iteration proposes its
``episodes_per_iteration`` children from the population as it stood before the iteration (the
batched form of aging evolution), so budgets, outputs, checkpoints and resume are those of the
other algorithms. With weight sharing the supernet trains on uniform children (as random search
does) and the derivation scores the final population.
"""
from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided

from ..evaluators import Evaluation
from ..spaces import SearchSpace
from .search import SearchAlgorithmMixin, SearchConfigMixin

REA = "rea"


class REAConfig(SearchConfigMixin, AlgorithmConfig):
    """``population_size`` P 5 and ``tournament_size`` S 5 (the best of the last 5 is mutated), 4
    children per iteration: tuned by bench/tune_controllers.py on NAS-Bench-201's ImageNet16-120
    table, as PPO and REINFORCE (the same trials and seeds). Set with
    ``.training(population_size=..., tournament_size=...)``."""

    uniform_policy = True  # no controller: the supernet trains on uniform children
    # bench/tune_controllers.py --noisy, as PPO's: -3.41 against the table defaults' -3.71
    noisy_reward_defaults = {"population_size": 20, "tournament_size": 10, "episodes_per_iteration": 8}

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or RegularizedEvolution)
        self.population_size = 5
        self.tournament_size = 5
        self._init_search()
        self.episodes_per_iteration = 4
        self._sync_env()

    def training(self, *, population_size: int = NotProvided, tournament_size: int = NotProvided,
                 **kwargs) -> "REAConfig":
        super().training(**kwargs)
        for key, value in [("population_size", population_size), ("tournament_size", tournament_size)]:
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def get_default_learner_class(self):
        # RLlib builds a learner group for every Algorithm; REA never updates it (learns = False).
        from .reinforce_learner import ReinforceTorchLearner

        return ReinforceTorchLearner

    def validate(self) -> None:
        super().validate()
        if not 1 <= self.tournament_size <= self.population_size:
            raise ValueError(f"rea: need 1 <= tournament_size ({self.tournament_size}) <= population_size "
                             f"({self.population_size})")


def mutate(space: SearchSpace, arch: list[int], rng: np.random.Generator) -> list[int]:
    """``arch`` with one decision changed to another choice that is legal there (decisions with a
    single legal choice are never picked)."""
    movable = [t for t in range(space.num_decisions) if space.mask(t, arch[:t]).sum() > 1]
    if not movable:
        raise ValueError(f"{space.name}: no decision has a second legal choice; nothing to mutate")
    for _ in range(100):
        child = list(arch)
        t = movable[int(rng.integers(len(movable)))]
        choices = [int(a) for a in np.flatnonzero(space.mask(t, arch[:t])) if a != arch[t]]
        child[t] = choices[int(rng.integers(len(choices)))]
        try:  # a space whose later masks depend on earlier actions may make the rest illegal
            return space.validate(child)
        except ValueError:
            continue
    raise ValueError(f"{space.name}: no legal one-decision mutation of {space.to_string(arch)} found")


class RegularizedEvolution(SearchAlgorithmMixin, Algorithm):
    search_algo_name = REA
    learns = False

    @classmethod
    def get_default_config(cls) -> REAConfig:
        return REAConfig()

    def setup(self, config) -> None:
        super().setup(config)
        self.population: deque[tuple[list[int], float]] = deque()
        self.rng = np.random.default_rng(self.config.seed)

    def propose(self, n: int) -> tuple[list[list[int]], list]:
        pop, size = list(self.population), self.config.population_size
        if len(pop) < size:
            archs = self.space.sample_batch(self.rng, n).tolist()
        else:
            archs = []
            for _ in range(n):
                drawn = self.rng.choice(len(pop), self.config.tournament_size, replace=False)
                parent = max((pop[i] for i in drawn), key=lambda member: member[1])[0]
                archs.append(mutate(self.space, parent, self.rng))
        self.last_entropies = [float("nan")] * n  # no sampling policy
        return archs, []

    def observe(self, archs: list[list[int]], evaluations: list[Evaluation], episodes: list) -> None:
        for arch, ev in zip(archs, evaluations):
            self.population.append((list(arch), ev.reward))
            while len(self.population) > self.config.population_size:
                self.population.popleft()  # aging: the oldest dies, however good

    def derivation_candidates(self, m: int) -> list[list[int]]:
        """The final population, best first (at most ``m``)."""
        ranked = sorted(self.population, key=lambda member: -member[1])
        return [arch for arch, _ in ranked[:m]]

    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state[REA] = {"population": list(self.population), "rng": self.rng.bit_generator.state}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if REA in state:
            self.population = deque((list(a), float(r)) for a, r in state[REA]["population"])
            self.rng.bit_generator.state = state[REA]["rng"]
