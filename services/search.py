"""The search driver: build the configured algorithm and run it until the budget is spent."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import ray
import torch

from controller_policy.algorithms import ALGORITHMS, SEARCH

from .config import SearchConfig, to_dict
from .ray_cluster import connect


def algorithm_config(cfg: SearchConfig, out_dir: str):
    """The RLlib ``AlgorithmConfig`` of a search."""
    algo = ALGORITHMS[cfg.algo]()
    evaluator = {"type": cfg.evaluator.type, "path": cfg.evaluator.table, "reward_key": cfg.evaluator.reward_key}
    algo.search(space=cfg.space.name, space_params=cfg.space.params,
                controller={k: v for k, v in vars(cfg.controller).items()}, evaluator=evaluator, budget=cfg.budget,
                episodes_per_iteration=cfg.episodes_per_iteration, out_dir=out_dir, reward_scale=cfg.reward_scale,
                skip_weight=cfg.skip_weight)
    if cfg.algo == "ppo":
        p = cfg.ppo
        algo.training(lr=p.lr, entropy_coeff=p.entropy_coeff, clip_param=p.clip_param, num_epochs=p.num_epochs,
                      vf_loss_coeff=p.vf_loss_coeff, ppo_minibatches=p.minibatches)
    else:
        r = cfg.reinforce
        algo.training(lr=r.lr, entropy_weight=r.entropy_weight, baseline_decay=r.baseline_decay,
                      baseline_init=r.baseline_init)
    return algo.debugging(seed=cfg.seed, log_level="ERROR")


def print_progress(result: dict[str, Any], budget: int, started: float) -> None:
    s = result[SEARCH]
    print(f"[raynas] {int(s['archs_sampled'])}/{budget} architectures  mean reward {s['reward_mean']:.4f}  "
          f"best {s['best_reward']:.4f}  ({time.time() - started:.0f}s)", flush=True)


def run_search(cfg: SearchConfig, on_result: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Run one search; return its summary (also in ``<out>/summary.json``)."""
    torch.set_num_threads(1)  # the controller is tiny; extra driver threads only contend with Ray's
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    started_ray = connect(cfg.ray_address, cfg.num_cpus)
    algo = algorithm_config(cfg, str(out.resolve())).build_algo()
    started = time.time()
    try:
        while not algo.search_done:
            result = algo.train()
            print_progress(result, cfg.budget, started)
            if on_result:
                on_result(result)
        return algo.recorder.summary()
    finally:
        algo.stop()
        if started_ray:
            ray.shutdown()


def fail(message: str) -> None:
    print(f"raynas: error: {message}", file=sys.stderr)
    raise SystemExit(2)
