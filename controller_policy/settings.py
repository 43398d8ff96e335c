"""What configures the controller and a search, without torch or Ray: a command line checks a
config with these in a fraction of a second, before anything heavy is imported."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: the algorithms a search can train the controller with (controller_policy.algorithms.ALGORITHMS)
ALGORITHM_NAMES = ("ppo", "reinforce", "rea", "random")
RUNNING = "running"
BUDGET_MODES = ("all", "unique")
#: where PPO's advantage comes from: "value", RLlib's learned value function (GAE, gamma = lambda = 1:
#: R - V(s_t) per decision); "batch", no critic: the terminal reward, which RLlib's GAE step
#: standardises over the iteration's batch, so the batch's mean reward is the baseline
PPO_BASELINES = ("value", "batch")


@dataclass
class ControllerConfig:
    """ENAS controller hyper-parameters (defaults: ENAS macro search)."""

    hidden_size: int = 64
    num_lstm_layers: int = 1
    temperature: float | None = None
    tanh_constant: float | None = 1.5
    skip_target: float = 0.4
    init_range: float = 0.1
    # ENAS micro's op head (off by default; the enas-micro preset turns them on):
    op_tanh_reduce: float = 1.0  # op logits use tanh_constant / op_tanh_reduce (ENAS micro: 2.5)
    op_bias: bool = False  # a learned op bias initialised [10, 10, 0, ...] plus, in the first cell,
    #                        the fixed [0.25, 0.25, -0.25, ...] ENAS adds after the squash
    zero_input_anchors: bool = False  # a selected cell input feeds zeros to the LSTM (its key stays)

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"controller.hidden_size must be >= 1, got {self.hidden_size}")
        if self.num_lstm_layers < 1:
            raise ValueError(f"controller.num_lstm_layers must be >= 1, got {self.num_lstm_layers}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"controller.temperature must be > 0 or null, got {self.temperature}")
        if self.tanh_constant is not None and self.tanh_constant <= 0:
            raise ValueError(f"controller.tanh_constant must be > 0 or null, got {self.tanh_constant}")
        if not 0.0 < self.skip_target < 1.0:
            raise ValueError(f"controller.skip_target must lie in (0, 1), got {self.skip_target}")
        if self.op_tanh_reduce <= 0:
            raise ValueError(f"controller.op_tanh_reduce must be > 0, got {self.op_tanh_reduce}")


def check_budget_mode(mode: Any, weight_sharing: bool) -> None:
    if mode not in BUDGET_MODES:
        raise ValueError(f"budget_mode must be one of {', '.join(BUDGET_MODES)}, got {mode!r}")
    if mode == "unique" and weight_sharing:
        raise ValueError("budget_mode 'unique' needs a fixed evaluator (a table): a training supernet scores the "
                         "same architecture differently as it learns, so a cache would answer with stale rewards")


def check_elite_replay(value: Any, key: str = "elite_replay") -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{key} must be an integer >= 0 (0: none), got {value!r}")


def check_reward_scale(value: Any) -> None:
    if value == "auto":
        raise ValueError("reward_scale 'auto' was removed: it divided by the table's optimum, knowledge a "
                         "search must not have; use 'running' (the largest |reward| observed so far) or a number")
    if value != RUNNING and not (isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"reward_scale must be 'running' or a positive number, got {value!r}")
