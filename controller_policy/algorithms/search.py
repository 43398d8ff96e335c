"""What PPO, REINFORCE and random search share: one iteration samples exactly the episodes the
budget allows, scores their architectures in one batch, records them, then (if the algorithm
learns) updates the controller on RLlib's learners.

Budget = number of architectures evaluated; every sampled architecture counts, repeats included.
"""
from __future__ import annotations

import math
import random
import time
from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.metrics import (
    ALL_MODULES, ENV_RUNNER_RESULTS, ENV_RUNNER_SAMPLING_TIMER, LEARNER_RESULTS, LEARNER_UPDATE_TIMER,
    NUM_ENV_STEPS_SAMPLED_LIFETIME, NUM_MODULE_STEPS_TRAINED_LIFETIME, SYNCH_WORKER_WEIGHTS_TIMER, TIMERS,
)

from ..controller import ControllerConfig, ENASController
from ..env import ArchitectureEnv
from ..env_runner import ArchitectureEnvRunner
from ..evaluators import Evaluation, Evaluator, TableEvaluator
from ..health import PolicyMonitor
from ..logs import quiet_ray_logs
from ..objective import Objective
from ..rl_module import ControllerRLModule, controller_model_config
from ..settings import RUNNING, check_budget_mode, check_elite_replay, check_reward_scale
from ..spaces import SearchSpace, build_space
from ..trajectory import TrajectoryRecorder

SEARCH = "search"
#: with budget_mode unique, a search whose policy proposes only repeats stops after this many
#: proposals per unit of budget (the summary says so)
MAX_PROPOSALS_PER_BUDGET = 20
#: where a controller iteration's time goes (seconds per iteration / epoch in the metrics)
CONTROLLER_PHASES = ("sampling", "evaluation", "update")


class SearchConfigMixin:
    """Search settings of an ``AlgorithmConfig`` (set them with ``.search(...)``)."""

    uniform_policy = False  # random search samples uniformly instead of from the controller
    #: ``training()`` settings that replace the (table-tuned) defaults when rewards are noisy, as a
    #: supernet's one-minibatch accuracies are: tuned by bench/tune_controllers.py --noisy
    noisy_reward_defaults: dict[str, Any] = {}

    def _init_search(self) -> None:
        self.space_name = "nb201"
        self.space_params: dict[str, Any] = {}
        self.controller_config: dict[str, Any] = {}
        self.evaluator_config: dict[str, Any] | None = None
        self.budget = 100
        self.budget_mode = "all"  # or "unique": repeats are answered from a cache and spend nothing
        self.episodes_per_iteration = 8
        self.out_dir: str | None = None
        self.reward_scale: float | str = RUNNING
        self.skip_weight = 0.0
        self.elite_replay = 0  # set by a learning algorithm's training(elite_replay=...)
        self.weight_sharing: dict[str, Any] | None = None  # set by the weight-sharing driver (services)
        self.objective: Objective | None = None  # rewards shaped by the children's costs (objective.py)
        self.quiet_ray_logs = True  # drop RLlib/Tune messages that tell a user nothing (controller_policy.logs)
        self.batch_mode = "complete_episodes"
        self.num_env_runners = 0
        self._sync_env()

    def search(self, *, space: str = NotProvided, space_params: dict = NotProvided, controller: dict = NotProvided,
               evaluator: dict | None = NotProvided, budget: int = NotProvided,
               episodes_per_iteration: int = NotProvided, out_dir: str | None = NotProvided,
               reward_scale: float | str = NotProvided, skip_weight: float = NotProvided,
               budget_mode: str = NotProvided, quiet_ray_logs: bool = NotProvided,
               objective: Objective | None = NotProvided):
        """``evaluator``: ``{"type": "table", "path": FILE, "reward_key": KEY}``, or None when a
        subclass scores architectures itself (weight sharing). ``reward_scale``: multiplies rewards
        before learning; ``"running"``: 1 / the largest |reward| observed so far (the current
        batch included), so rewards on any scale (accuracy in [0, 1] or [0, 100]) reach the
        learner in [-1, 1] without knowledge of the optimum. ``objective``: every evaluation's
        reward shaped by the child's costs (accuracy under a budget; see objective.py)."""
        for key, value in [("space_name", space), ("space_params", space_params), ("controller_config", controller),
                           ("evaluator_config", evaluator), ("budget", budget),
                           ("episodes_per_iteration", episodes_per_iteration), ("out_dir", out_dir),
                           ("reward_scale", reward_scale), ("skip_weight", skip_weight),
                           ("budget_mode", budget_mode), ("quiet_ray_logs", quiet_ray_logs),
                           ("objective", objective)]:
            if value is not NotProvided:
                setattr(self, key, value)
        self._sync_env()
        return self

    def _sync_env(self) -> None:
        self.env = ArchitectureEnv
        self.env_config = {"space": self.space_name, "space_params": dict(self.space_params)}
        # Whole architectures in one batched controller walk (see env_runner.py).
        self.env_runner_cls = ArchitectureEnvRunner
        # Rows the learner sees per iteration: T decisions + the one artificial timestep RLlib
        # adds per episode, as sequences of max_seq_len = T + 1 (see rl_module.py).
        self.rows_per_episode = build_space(self.space_name, **self.space_params).num_decisions + 1
        self.train_batch_size_per_learner = self.episodes_per_iteration * self.rows_per_episode

    def minibatch_size_for(self, num_episodes: int) -> int | None:
        """RLlib's ``minibatch_size`` (rows) for an update on ``num_episodes`` episodes."""
        return self.minibatch_size

    def get_default_rl_module_spec(self) -> RLModuleSpec:
        return RLModuleSpec(
            module_class=ControllerRLModule,
            model_config=controller_model_config(self.space_name, self.space_params, self.controller_config,
                                                 uniform=self.uniform_policy),
        )

    def validate(self) -> None:
        if self.quiet_ray_logs:  # before RLlib's validation, which logs the first of them
            quiet_ray_logs()
        super().validate()
        if not isinstance(self.budget, int) or self.budget < 1:
            raise ValueError(f"budget must be a positive integer, got {self.budget!r}")
        if self.episodes_per_iteration < 1:
            raise ValueError(f"episodes_per_iteration must be >= 1, got {self.episodes_per_iteration}")
        check_reward_scale(self.reward_scale)
        check_elite_replay(self.elite_replay)
        check_budget_mode(self.budget_mode, weight_sharing=self.weight_sharing is not None)


def build_evaluator(space: SearchSpace, spec: dict[str, Any] | None, seed: int = 0) -> Evaluator | None:
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "table":
        return TableEvaluator(space, spec["path"], spec.get("reward_key"), spec.get("noise", 0.0), seed)
    raise ValueError(f"unknown evaluator type {kind!r}; available here: 'table'")


def _episode_entropy(episode) -> float:
    """Entropy of the policy that sampled the architecture, summed over its decisions."""
    logits = np.asarray(episode.get_extra_model_outputs(Columns.ACTION_DIST_INPUTS), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(-(np.exp(logp) * logp).sum())


class SearchAlgorithmMixin:
    """``training_step`` of every search algorithm; subclasses may override ``evaluate_architectures``."""

    learns = True

    def setup(self, config) -> None:
        super().setup(config)
        self.space = build_space(self.config.space_name, **self.config.space_params)
        self.evaluator = build_evaluator(self.space, self.config.evaluator_config, seed=self.config.seed or 0)
        self.max_abs_reward = 0.0  # over the rewards observed so far (reward_scale: running)
        self.elites: dict[tuple[int, ...], float] = {}  # the best rewards found so far (elite_replay)
        self.phase_seconds = dict.fromkeys(CONTROLLER_PHASES, 0.0)  # of the current iteration (epoch)
        meta = {"algo": self.search_algo_name, "seed": self.config.seed, "budget": self.config.budget,
                "budget_mode": self.config.budget_mode, "space": self.space.name}
        if self.config.objective is not None:
            meta["objective"] = self.config.objective.describe()
        self.recorder = TrajectoryRecorder(self.config.out_dir or self.logdir, self.space, meta,
                                           keep_answers=self.config.budget_mode == "unique",
                                           best_file=self.evaluator is not None)
        # A controller that learns reports its policy's health after every update (health.py).
        self.policy_monitor = None
        if self.learns:
            initial = self.controller()
            self.policy_monitor = PolicyMonitor(initial, seed=self.config.seed or 0)
            self.policy_monitor.measure(initial)  # the first update's change is measured against this

    def scaled_rewards(self, evaluations: list[Evaluation], observe: bool = True) -> list[float]:
        """The rewards the learner sees (``reward_scale``; ``running`` sees only observed rewards;
        ``observe`` False: rewards seen before, which do not move the running scale)."""
        rewards = [ev.reward for ev in evaluations]
        if self.config.reward_scale != RUNNING:
            return [r * float(self.config.reward_scale) for r in rewards]
        if observe:
            self.max_abs_reward = max([self.max_abs_reward, *map(abs, rewards)])
        return [r / self.max_abs_reward if self.max_abs_reward > 0 else r for r in rewards]

    @property
    def search_done(self) -> bool:
        return self.recorder.spent >= self.config.budget or self.only_repeats

    @property
    def only_repeats(self) -> bool:
        """budget_mode unique: proposals ran out of new architectures (the search stops)."""
        return self.recorder.count >= MAX_PROPOSALS_PER_BUDGET * self.config.budget

    def evaluate_architectures(self, archs: list[list[int]]) -> list[Evaluation]:
        if self.evaluator is None:
            raise ValueError("no evaluator configured: pass search(evaluator=...) or override evaluate_architectures")
        return self.evaluator.evaluate(archs)

    def training_step(self) -> None:
        self.phase_seconds = dict.fromkeys(CONTROLLER_PHASES, 0.0)
        self.controller_iteration(min(self.config.episodes_per_iteration, self.config.budget - self.recorder.spent))
        for phase, seconds in self.phase_seconds.items():
            self.metrics.log_value((SEARCH, f"{phase}_s"), seconds, window=1)

    def controller_iteration(self, n: int) -> list[dict[str, Any]]:
        """Propose exactly ``n`` architectures, score them in one batch, record, learn.
        Returns the recorded rows (``trajectory.jsonl``'s)."""
        if n <= 0:
            return []
        started = time.perf_counter()
        with self.metrics.log_time((TIMERS, ENV_RUNNER_SAMPLING_TIMER)):
            archs, episodes = self.propose(n)
        sampled = time.perf_counter()
        evaluations, cached = self._evaluate_or_answer(archs)
        evaluated = time.perf_counter()
        rows = self.recorder.record(archs, evaluations, cached)
        if self.only_repeats and self.recorder.spent < self.config.budget:
            self.recorder.meta["stopped_early"] = (
                f"only repeats: {self.recorder.count} proposals found {self.recorder.spent} new architectures "
                f"of a budget of {self.config.budget}")
            self.recorder.write_summary()
        self._log_search_metrics(evaluations)
        self.observe(archs, evaluations, episodes)
        self.phase_seconds["sampling"] += sampled - started
        self.phase_seconds["evaluation"] += evaluated - sampled
        self.phase_seconds["update"] += time.perf_counter() - evaluated
        return rows

    def _evaluate_or_answer(self, archs: list[list[int]]) -> tuple[list[Evaluation], list[bool]]:
        """Evaluate ``archs`` in one batch, and which answers came from the cache: with budget_mode
        unique, an architecture evaluated before (earlier in this batch too) is not evaluated again."""
        answers = self.recorder.answers
        if answers is None:  # budget_mode all
            return self._evaluate(archs), [False] * len(archs)
        keys = [self.space.to_string(a) for a in archs]
        first: dict[str, int] = {}  # new architectures: where each first occurs
        for i, key in enumerate(keys):
            if key not in answers and key not in first:
                first[key] = i
        new = dict(zip(first, self._evaluate([archs[i] for i in first.values()]))) if first else {}
        return [new[k] if k in new else answers[k] for k in keys], [first.get(k) != i for i, k in enumerate(keys)]

    def _evaluate(self, archs: list[list[int]]) -> list[Evaluation]:
        """``evaluate_architectures``, then each reward shaped by the objective when there is one."""
        evaluations = self.evaluate_architectures(archs)
        objective = self.config.objective
        if objective is None:
            return evaluations
        for arch, ev in zip(archs, evaluations):
            ev.measured = ev.reward
            ev.reward, ev.costs, ev.feasible = objective.shape(arch, ev.reward)
        return evaluations

    def propose(self, n: int) -> tuple[list[list[int]], list]:
        """``n`` architectures to evaluate next, and the RLlib episodes that sampled them."""
        episodes = self._sample_episodes(n)
        self.last_entropies = [_episode_entropy(ep) for ep in episodes]
        return [[int(a) for a in ep.get_actions()] for ep in episodes], episodes

    def observe(self, archs: list[list[int]], evaluations: list[Evaluation], episodes: list) -> None:
        """Learn from the scored architectures: rewards into the episodes, a controller update."""
        if not self.learns:
            return
        for ep, reward in zip(episodes, self.scaled_rewards(evaluations)):
            ep.set_rewards(new_data=np.asarray(reward, np.float32), at_indices=-1)
        self._update_controller(episodes + self._elite_episodes(archs, evaluations))
        self._check_policy()

    def _elite_episodes(self, archs: list[list[int]], evaluations: list[Evaluation]) -> list:
        """Self-imitation (``elite_replay`` K): episodes for the K best architectures found before
        this batch and not in it, as the current policy would take them, with their rewards (scaled
        as the batch's). They join the update like sampled episodes, so an algorithm's own loss and
        baseline treat them: PPO's ratio starts at 1 on them and its batch standardisation ranks them
        with the new ones. Without it the controller forgets a good architecture once its batch has
        been learned from; regularised evolution keeps mutating its best."""
        k = self.config.elite_replay
        if k <= 0:
            return []
        fresh = {tuple(a) for a in archs}
        chosen = sorted(((r, key) for key, r in self.elites.items() if key not in fresh), reverse=True)[:k]
        for arch, ev in zip(archs, evaluations):
            key = tuple(arch)
            self.elites[key] = max(ev.reward, self.elites.get(key, -math.inf))
        # a later batch excludes at most its own architectures: the rest of the list can never be chosen
        ranked = sorted(self.elites.items(), key=lambda item: item[1], reverse=True)
        self.elites = dict(ranked[:k + self.config.episodes_per_iteration])
        if not chosen:
            return []
        scaled = self.scaled_rewards([Evaluation(r) for r, _ in chosen], observe=False)
        return self.env_runner.replay([list(key) for _, key in chosen], scaled)

    # -- the controller's weights and health ---------------------------------------------------
    def controller_weights(self) -> dict[str, torch.Tensor]:
        weights = self.learner_group.get_weights()["default_policy"]
        return {k[len("controller."):]: torch.as_tensor(v) for k, v in weights.items() if k.startswith("controller.")}

    def controller(self) -> ENASController:
        """A copy of the learners' current controller."""
        c = ENASController(self.space, ControllerConfig(**self.config.controller_config))
        c.load_state_dict(self.controller_weights())
        return c

    def _check_policy(self) -> None:
        health = self.policy_monitor.measure(self.controller())
        for key, value in health.as_metrics().items():
            self.metrics.log_value((SEARCH, key), value, window=1)
        warning = self.policy_monitor.warning()
        if warning:
            print(warning, flush=True)

    # Checkpoints carry the recorder and this process's RNGs (the local EnvRunner samples with
    # torch's global generator), so a resumed search samples what the uninterrupted one would.
    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state[SEARCH] = {"recorder": self.recorder.state(), "max_abs_reward": self.max_abs_reward,
                         "elites": [[list(key), reward] for key, reward in self.elites.items()],
                         "evaluator_rng": self.evaluator.rng.bit_generator.state
                         if isinstance(self.evaluator, TableEvaluator) else None,
                         "torch_rng": torch.get_rng_state(),
                         "numpy_rng": np.random.get_state(), "python_rng": random.getstate()}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if SEARCH in state:
            self.recorder.restore(state[SEARCH]["recorder"])
            self.max_abs_reward = state[SEARCH].get("max_abs_reward", 0.0)
            self.elites = {tuple(arch): reward for arch, reward in state[SEARCH].get("elites", [])}
            if state[SEARCH].get("evaluator_rng") is not None:
                self.evaluator.rng.bit_generator.state = state[SEARCH]["evaluator_rng"]
            torch.set_rng_state(state[SEARCH]["torch_rng"])
            np.random.set_state(state[SEARCH]["numpy_rng"])
            random.setstate(state[SEARCH]["python_rng"])

    def _sample_episodes(self, n: int) -> list:
        group = self.env_runner_group
        if group.num_remote_workers() <= 0:
            sampled = [(self.env_runner.sample(num_episodes=n), self.env_runner.get_metrics())]
        else:
            per_runner = math.ceil(n / group.num_remote_workers())
            sampled = group.foreach_env_runner(
                lambda runner: (runner.sample(num_episodes=per_runner), runner.get_metrics()),
                local_env_runner=False,
            )
        self.metrics.aggregate([metrics for _, metrics in sampled], key=ENV_RUNNER_RESULTS)
        return [ep for episodes, _ in sampled for ep in episodes][:n]

    def _log_search_metrics(self, evaluations: list[Evaluation]) -> None:
        rewards = np.array([e.reward for e in evaluations])
        for key, value in [("archs_sampled", self.recorder.spent), ("reward_mean", rewards.mean()),
                           ("entropy", np.mean(self.last_entropies)),
                           ("reward_max", rewards.max()), ("best_reward", self.recorder.best["reward"]),
                           ("done", float(self.search_done))]:
            self.metrics.log_value((SEARCH, key), float(value), window=1)

    def _update_controller(self, episodes: list) -> None:
        with self.metrics.log_time((TIMERS, LEARNER_UPDATE_TIMER)):
            learner_results = self.learner_group.update(
                episodes=episodes,
                timesteps={
                    NUM_ENV_STEPS_SAMPLED_LIFETIME: self.metrics.peek(
                        (ENV_RUNNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME), default=0),
                    NUM_MODULE_STEPS_TRAINED_LIFETIME: self.metrics.peek(
                        (LEARNER_RESULTS, ALL_MODULES, NUM_MODULE_STEPS_TRAINED_LIFETIME), default=0),
                },
                num_epochs=self.config.num_epochs,
                minibatch_size=self.config.minibatch_size_for(len(episodes)),
                shuffle_batch_per_epoch=self.config.shuffle_batch_per_epoch,
            )
            self.metrics.aggregate(learner_results, key=LEARNER_RESULTS)
        with self.metrics.log_time((TIMERS, SYNCH_WORKER_WEIGHTS_TIMER)):
            self.env_runner_group.sync_weights(from_worker_or_learner_group=self.learner_group, inference_only=True)
