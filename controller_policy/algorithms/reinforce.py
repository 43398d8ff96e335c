"""REINFORCE with an exponential-moving-average baseline: how ENAS trains its controller."""
from __future__ import annotations

from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig, NotProvided

from .search import SearchAlgorithmMixin, SearchConfigMixin


class ReinforceConfig(SearchConfigMixin, AlgorithmConfig):
    """ENAS's loss with Adam, one gradient step per iteration of 4 episodes; lr 0.069,
    entropy_coeff 0.0003, baseline decay 0.99, no gradient clipping, the 4 best architectures found
    so far replayed in every update (``elite_replay``, screened as PPO's on seeds 1300-1319 and
    1400-1419; on the reporting seeds one search of 10 locked onto a cell with it: README). Tuned by
    bench/tune_controllers.py on NAS-Bench-201's ImageNet16-120 table, as PPO (the same trials and
    seeds). ``noisy_reward_defaults`` replace them when rewards are noisy (weight sharing, a table
    with ``evaluator.noise``): the former lr 0.097 froze the policy there (every squashed logit at
    exactly ±1 within 40 updates)."""

    # bench/tune_controllers.py --noisy, as PPO's: -3.00 against the table defaults' -3.14
    noisy_reward_defaults = {"lr": 0.016, "entropy_coeff": 0.0015, "baseline_decay": 0.99,
                             "episodes_per_iteration": 16, "elite_replay": 0}

    def __init__(self, algo_class=None) -> None:
        super().__init__(algo_class=algo_class or Reinforce)
        self.lr = 0.069
        self.gamma = 1.0
        self.entropy_coeff = 0.0003
        self.baseline_decay = 0.99
        self.baseline_init: float | None = None  # None: the first batch's mean reward; ENAS used 0
        self.num_epochs = 1
        self.minibatch_size = None
        self.grad_clip = None
        self._init_search()
        self.episodes_per_iteration = 4
        self.elite_replay = 4
        self._sync_env()

    def training(self, *, entropy_coeff: float = NotProvided, baseline_decay: float = NotProvided,
                 baseline_init: float | None = NotProvided, elite_replay: int = NotProvided,
                 **kwargs) -> "ReinforceConfig":
        """``elite_replay`` K: every update also learns from the K best architectures found so far
        (see ``SearchAlgorithmMixin._elite_episodes``)."""
        super().training(**kwargs)
        for key, value in [("entropy_coeff", entropy_coeff), ("baseline_decay", baseline_decay),
                           ("baseline_init", baseline_init), ("elite_replay", elite_replay)]:
            if value is not NotProvided:
                setattr(self, key, value)
        return self

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ValueError(f"baseline_decay must lie in [0, 1), got {self.baseline_decay}")

    def get_default_learner_class(self):
        from .reinforce_learner import ReinforceTorchLearner

        return ReinforceTorchLearner


class Reinforce(SearchAlgorithmMixin, Algorithm):
    search_algo_name = "reinforce"

    @classmethod
    def get_default_config(cls) -> ReinforceConfig:
        return ReinforceConfig()
