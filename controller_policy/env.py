"""The RLlib environment: one episode samples one architecture, one step per decision."""
from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from .evaluators import Evaluator
from .spaces import SearchSpace, build_space


class ArchitectureEnv(gym.Env):
    """Observation: the decision index ``step``, the actions taken so far (``prefix``, zeros
    after ``step``; the previous action is ``prefix[step - 1]``) and the legality mask of the
    current decision. Reward is 0 until the terminal step.

    The terminal reward comes from an evaluator. Given one (``env_config["evaluator"]`` or the
    ``evaluator`` argument), the env scores the architecture itself, as a plain gymnasium env
    does. Without one, the reward is left at 0 and the search algorithm fills it in: it scores
    all architectures of an iteration in one batch (several supernet workers at once) and
    writes the rewards into the episodes before the learner sees them.
    """

    metadata: dict[str, Any] = {}

    def __init__(self, env_config: dict[str, Any] | None = None, *, space: SearchSpace | None = None,
                 evaluator: Evaluator | None = None) -> None:
        env_config = dict(env_config or {})
        self.space = space or build_space(env_config.get("space", "nb201"), **env_config.get("space_params", {}))
        self.evaluator = evaluator or env_config.get("evaluator")
        n, k = self.space.num_decisions, self.space.max_choices
        self.observation_space = gym.spaces.Dict({
            "step": gym.spaces.Box(0, n - 1, shape=(1,), dtype=np.int64),
            "prefix": gym.spaces.Box(0, k - 1, shape=(n,), dtype=np.int64),
            "action_mask": gym.spaces.Box(0.0, 1.0, shape=(k,), dtype=np.float32),
        })
        self.action_space = gym.spaces.Discrete(k)
        self._arch: list[int] = []

    def _obs(self) -> dict[str, np.ndarray]:
        return {key: rows[0] for key, rows in self.observations(self._arch, start=len(self._arch)).items()}

    def observations(self, arch: Sequence[int], start: int = 0) -> dict[str, np.ndarray]:
        """The observations an episode taking ``arch`` (or a prefix of it) sees after ``start``
        .. ``len(arch)`` actions, stacked (from the reset by default, through the observation after
        the last action). After the last decision ``step`` stays at the last index and ``prefix``
        is the architecture."""
        n, taken = self.space.num_decisions, len(arch)
        counts = np.arange(start, taken + 1)  # actions taken before each row
        steps = np.minimum(counts, n - 1)
        prefix = np.zeros((len(counts), n), np.int64)
        if taken:
            prefix[:, :taken] = np.asarray(arch, np.int64)
            prefix[np.arange(n)[None, :] >= counts[:, None]] = 0
        masks = np.stack([self.space.mask(int(s), arch[:c]) for c, s in zip(counts, steps)]).astype(np.float32)
        return {"step": steps[:, None].astype(np.int64), "prefix": prefix, "action_mask": masks}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._arch = []
        return self._obs(), {}

    def step(self, action):
        step = len(self._arch)
        if step >= self.space.num_decisions:
            raise RuntimeError("step() called after the architecture was complete; call reset()")
        action = int(action)
        if not self.space.mask(step, self._arch)[action]:
            d = self.space.decisions[step]
            raise ValueError(f"illegal action {action} at decision {step} ({d.name}); "
                             f"legal: {np.flatnonzero(self.space.mask(step, self._arch)).tolist()}")
        self._arch.append(action)
        done = len(self._arch) == self.space.num_decisions
        reward, info = 0.0, {}
        if done:
            info["arch"] = list(self._arch)
            if self.evaluator is not None:
                evaluation = self.evaluator.evaluate([self._arch])[0]
                reward, info["metrics"] = evaluation.reward, evaluation.metrics
        return self._obs(), float(reward), done, False, info
