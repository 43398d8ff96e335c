"""Controller throughput: ms of controller work per architecture (sampling + learner update).

The evaluator is free (a fixed random linear score of the architecture, computed in numpy), so
what is timed is the controller alone: RLlib's EnvRunner sampling the episodes, and the learner
update (PPO: GAE's value pass + 4 epochs x 2 minibatches; REINFORCE: one step). Each setting runs
``--warmup`` iterations, then ``--iters`` timed ones; the per-iteration figures' median and spread
(min-max) are printed. The projection multiplies the median by the architectures the paper
presets sample per epoch (``enas-macro``: 1,000; ``enas-micro``: 300).

    python bench/controller_throughput.py [--threads 2] [--iters 5] [--algos ppo reinforce]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import ray
import torch

from controller_policy.algorithms import ALGORITHMS, PPOSearch, Reinforce
from controller_policy.evaluators import Evaluation
from controller_policy.spaces import build_space

#: (label, space, params, controller settings of the paper preset, skip_weight, archs per paper epoch)
SETTINGS = [
    ("enas_macro-12", "enas_macro", {"num_layers": 12}, {"tanh_constant": 1.5, "skip_target": 0.4}, 0.073, 1000),
    ("enas_micro-5", "enas_micro", {"num_nodes": 5}, {"temperature": 5.0, "tanh_constant": 1.1}, 0.0, 300),
    ("nb201", "nb201", {}, {"tanh_constant": 2.5}, 0.0, None),
]


class TimedFreeEvaluation:
    """Free rewards plus a split of each iteration's time into sampling and learner update."""

    def setup(self, config) -> None:
        super().setup(config)
        rng = np.random.default_rng(0)
        self.weights = rng.uniform(0, 1, size=(self.space.num_decisions, self.space.max_choices))
        self.timings: list[tuple[float, float]] = []

    def evaluate_architectures(self, archs):
        scores = self.weights[np.arange(self.space.num_decisions), np.asarray(archs)].mean(1)
        return [Evaluation(float(s)) for s in scores]

    def _sample_episodes(self, n):
        start = time.perf_counter()
        episodes = super()._sample_episodes(n)
        self._sample_s = time.perf_counter() - start
        return episodes

    def _update_controller(self, episodes):
        start = time.perf_counter()
        super()._update_controller(episodes)
        self.timings.append((self._sample_s, time.perf_counter() - start))


class TimedPPO(TimedFreeEvaluation, PPOSearch):
    pass


class TimedReinforce(TimedFreeEvaluation, Reinforce):
    pass


TIMED = {"ppo": TimedPPO, "reinforce": TimedReinforce}


def measure(algo: str, space: str, params: dict, controller: dict, skip_weight: float, episodes: int,
            warmup: int, iters: int) -> np.ndarray:
    """[iters, 2] seconds (sampling, update) per timed iteration."""
    config = ALGORITHMS[algo](algo_class=TIMED[algo])
    config.search(space=space, space_params=params, controller=controller, evaluator=None, budget=10**9,
                  episodes_per_iteration=episodes, out_dir=tempfile.mkdtemp(), reward_scale=1.0,
                  skip_weight=skip_weight)
    built = config.debugging(seed=0, log_level="ERROR").build_algo()
    try:
        for _ in range(warmup + iters):
            built.train()
        return np.array(built.timings[warmup:])
    finally:
        built.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--episodes", type=int, default=20, help="architectures per RLlib iteration")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--algos", nargs="+", default=["ppo", "reinforce"], choices=sorted(TIMED))
    parser.add_argument("--spaces", nargs="+", default=[s[0] for s in SETTINGS], choices=[s[0] for s in SETTINGS])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ray.init(address="local", num_cpus=args.threads, include_dashboard=False, log_to_driver=False)
    print(f"{args.episodes} architectures per iteration, {args.threads} torch threads, free evaluator; "
          f"median over {args.iters} iterations (min-max)")
    print(f"{'space':<15}{'T':>4}{'algo':>11}{'ms/arch':>20}{'sampling':>11}{'update':>9}{'paper epoch':>13}")
    for label, space, params, controller, skip_weight, per_epoch in SETTINGS:
        if label not in args.spaces:
            continue
        num_decisions = build_space(space, **params).num_decisions
        for algo in args.algos:
            t = measure(algo, space, params, controller, skip_weight, args.episodes, args.warmup, args.iters)
            per_arch = t.sum(1) * 1000 / args.episodes
            med = float(np.median(per_arch))
            sample_ms, update_ms = (np.median(t, 0) * 1000 / args.episodes).tolist()
            epoch = f"{med * per_epoch / 1000:.1f} s" if per_epoch else "-"
            print(f"{label:<15}{num_decisions:>4}{algo:>11}{med:>9.1f} ({per_arch.min():.1f}-{per_arch.max():.1f})"
                  f"{sample_ms:>11.1f}{update_ms:>9.1f}{epoch:>13}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
