"""An EnvRunner that samples whole architectures in one batched controller walk.

RLlib's ``SingleAgentEnvRunner`` steps its vector env once per decision and calls the RLModule
(plus its connector pipelines) at every step: for a 78-decision ENAS macro architecture that is
78 module calls and ~3 ms of connector and episode bookkeeping per step, whatever the module
costs. Here the RLModule draws ``n`` architectures at once (``sample_architectures``: one O(T)
walk of the controller with batch ``n``) and the episodes are laid out from them as
``SingleAgentEpisode`` objects with exactly what the stepping runner records: the
``ArchitectureEnv``'s observations, actions, rewards (0 until the terminal step; the env's
evaluator, when it has one, scores the batch in one call), infos with the architecture, and the
action-distribution inputs and log-probabilities each action was drawn with. Learners, connectors
and metrics are RLlib's own. ``replay`` lays out the same episodes for architectures found earlier
(elite replay), scored by the current policy.
"""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.env.utils.infinite_lookback_buffer import InfiniteLookbackBuffer

from .env import ArchitectureEnv
from .evaluators import Evaluation
from .rl_module import MASKED_LOGIT


class ArchitectureEnvRunner(SingleAgentEnvRunner):
    def __init__(self, *, config, **kwargs) -> None:
        super().__init__(config=config, **kwargs)
        self.arch_env = ArchitectureEnv(config.env_config)

    def sample(self, *, num_timesteps: int | None = None, num_episodes: int | None = None,
               explore: bool | None = None, random_actions: bool = False,
               force_reset: bool = False) -> list[SingleAgentEpisode]:
        """``num_episodes`` complete architectures (``num_timesteps``: enough whole architectures
        to cover that many decisions). Sampling always explores: the architecture is drawn from
        the controller's distribution, as ENAS does."""
        num_decisions = self.arch_env.space.num_decisions
        if num_episodes is None:
            if num_timesteps is None:
                raise ValueError("ArchitectureEnvRunner.sample needs num_episodes or num_timesteps")
            num_episodes = -(-num_timesteps // num_decisions)
        if num_episodes < 1:
            return []
        started = time.time()
        drawn = self.module.sample_architectures(num_episodes)
        actions = drawn["actions"].cpu().numpy()
        logits = drawn["logits"].cpu().numpy().astype(np.float32)
        log_probs = drawn["log_probs"].cpu().numpy().astype(np.float32)
        archs = actions.tolist()
        evaluations = self.arch_env.evaluator.evaluate(archs) if self.arch_env.evaluator is not None else None
        episodes = self._episodes(actions, logits, log_probs, evaluations, started)
        self._done_episodes_for_metrics.extend(episodes)
        self._increase_sampled_metrics(num_episodes * num_decisions, num_episodes)
        return episodes

    def replay(self, archs: list[list[int]], rewards: list[float]) -> list[SingleAgentEpisode]:
        """Episodes for architectures found earlier, as the current policy would take them (its
        logits and log-probabilities of those actions), with their terminal rewards: PPO's ratio
        starts at 1 on them. Not counted as sampled."""
        with torch.no_grad():
            out = self.module.controller.evaluate(archs)
        actions = out.actions.cpu().numpy()
        logits = out.logits.clamp(min=MASKED_LOGIT).cpu().numpy().astype(np.float32)
        log_probs = out.log_probs.cpu().numpy().astype(np.float32)
        return self._episodes(actions, logits, log_probs, [Evaluation(r, {}) for r in rewards], time.time())

    def _episodes(self, actions: np.ndarray, logits: np.ndarray, log_probs: np.ndarray,
                  evaluations: list | None, started: float) -> list[SingleAgentEpisode]:
        num_decisions = self.arch_env.space.num_decisions
        episodes = []
        for i, arch in enumerate(actions.tolist()):
            rewards = np.zeros(num_decisions, np.float32)
            info: dict[str, Any] = {"arch": list(arch)}
            if evaluations is not None:
                rewards[-1], info["metrics"] = evaluations[i].reward, evaluations[i].metrics
            episode = SingleAgentEpisode(
                observations=InfiniteLookbackBuffer(self.arch_env.observations(arch),
                                                    space=self.arch_env.observation_space),
                observation_space=self.arch_env.observation_space,
                actions=InfiniteLookbackBuffer(actions[i], space=self.arch_env.action_space),
                action_space=self.arch_env.action_space,
                rewards=InfiniteLookbackBuffer(rewards),
                infos=[{} for _ in range(num_decisions)] + [info],
                extra_model_outputs={Columns.ACTION_DIST_INPUTS: InfiniteLookbackBuffer(logits[i]),
                                     Columns.ACTION_LOGP: InfiniteLookbackBuffer(log_probs[i])},
                terminated=True,
                len_lookback_buffer=0,
            )
            # What a stepping runner's env steps would have set; get_metrics() reads the duration.
            episode._start_time, episode._last_step_time = started, time.time()
            episodes.append(episode)
        return episodes
