"""Random search through the same harness: uniform legal architectures, no learning."""
from __future__ import annotations

from ray.rllib.algorithms.algorithm import Algorithm

from .reinforce import ReinforceConfig
from .search import SearchAlgorithmMixin


class RandomSearchConfig(ReinforceConfig):
    uniform_policy = True
    noisy_reward_defaults: dict = {}  # nothing learns

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or RandomSearch)
        self.episodes_per_iteration = 8  # nothing learns: it only sets how often the search reports
        self._sync_env()


class RandomSearch(SearchAlgorithmMixin, Algorithm):
    search_algo_name = "random"
    learns = False

    @classmethod
    def get_default_config(cls) -> RandomSearchConfig:
        return RandomSearchConfig()
