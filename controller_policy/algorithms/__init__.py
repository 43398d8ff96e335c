"""Controller-training algorithms on RLlib's new API stack, one per file (as RLlib's own)."""
from .ppo import PPOSearch, PPOSearchConfig
from .random_search import RandomSearch, RandomSearchConfig
from .rea import REAConfig, RegularizedEvolution
from .reinforce import Reinforce, ReinforceConfig
from .search import (
    CONTROLLER_PHASES, SEARCH, SearchAlgorithmMixin, SearchConfigMixin, build_evaluator, check_budget_mode,
    check_reward_scale,
)

ALGORITHMS = {"ppo": PPOSearchConfig, "reinforce": ReinforceConfig, "rea": REAConfig, "random": RandomSearchConfig}

__all__ = [
    "ALGORITHMS", "CONTROLLER_PHASES", "PPOSearch", "PPOSearchConfig", "REAConfig", "RandomSearch", "RandomSearchConfig",
    "RegularizedEvolution", "Reinforce", "ReinforceConfig", "SEARCH", "SearchAlgorithmMixin", "SearchConfigMixin",
    "build_evaluator", "check_budget_mode", "check_reward_scale",
]
