"""The search driver: build the configured algorithm, run it epoch by epoch (or iteration by
iteration on a table), checkpoint as it goes, and resume an interrupted search."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import ray
import torch
from ray.rllib.algorithms.algorithm_config import NotProvided

from controller_policy.algorithms import ALGORITHMS
from controller_policy.objective import Objective
from supernet_worker.costs import CostModel
from supernet_worker.latency_table import LatencyTable
from supernet_worker.data import describe_data, load_dataset
from supernet_worker.worker import WorkerSpec

from .config import SearchConfig, to_dict
from .inputs import CHECKPOINTS, check_inputs, complete_checkpoints, latest_checkpoint
from .progress import SearchProgress, status
from .ray_cluster import check_resources, connect
from .weight_sharing import WS_ALGORITHMS, weight_sharing_settings

def algorithm_config(cfg: SearchConfig, out_dir: str):
    """The RLlib ``AlgorithmConfig`` of a search (tabular or weight sharing)."""
    if cfg.uses_supernet:
        algo = ALGORITHMS[cfg.algo](algo_class=WS_ALGORITHMS[cfg.algo])
        evaluator = None
        spec = WorkerSpec(space=cfg.space.name, space_params=cfg.space.params, supernet=cfg.supernet, data=cfg.data,
                          optim=cfg.optim, controller=cfg.controller, scoring=cfg.weight_sharing.scoring, seed=cfg.seed,
                          threads=max(1, int(cfg.weight_sharing.cpus_per_worker)), sampling=cfg.weight_sharing.sampling,
                          drop_path=cfg.weight_sharing.drop_path)
        algo.weight_sharing = weight_sharing_settings(cfg.weight_sharing, spec)
    else:
        algo = ALGORITHMS[cfg.algo]()
        evaluator = {"type": cfg.evaluator.type, "path": cfg.evaluator.table, "reward_key": cfg.evaluator.reward_key,
                     "noise": cfg.evaluator.noise}
    # Noisy rewards (a supernet's one-minibatch accuracies, a table with noise) have defaults of their
    # own (bench/tune_controllers.py --noisy); unset keys take the algorithm's (tuned) defaults.
    defaults = dict(algo.noisy_reward_defaults) if cfg.uses_supernet or cfg.evaluator.noise else {}
    episodes = defaults.pop("episodes_per_iteration", NotProvided)
    algo.search(space=cfg.space.name, space_params=cfg.space.params, controller=dict(vars(cfg.controller)),
                evaluator=evaluator, budget=cfg.budget, out_dir=out_dir,
                episodes_per_iteration=episodes if cfg.episodes_per_iteration is None else cfg.episodes_per_iteration,
                reward_scale=cfg.reward_scale, skip_weight=cfg.skip_weight,
                budget_mode=cfg.budget_mode, quiet_ray_logs=not cfg.verbose, objective=build_objective(cfg))
    overrides = {"ppo": {("ppo_minibatches" if k == "minibatches" else k): v for k, v in vars(cfg.ppo).items()},
                 "reinforce": vars(cfg.reinforce), "rea": vars(cfg.rea), "random": {}}[cfg.algo]
    settings = {k: v for k, v in overrides.items() if v is not None}
    if settings.get("grad_clip") == 0:  # the config's "no clipping" is RLlib's None (a falsy non-None drops the gradients)
        settings["grad_clip"] = None
    algo.training(**{**defaults, **settings})
    return algo.debugging(seed=cfg.seed, log_level="ERROR")


def build_objective(cfg: SearchConfig) -> Objective | None:
    """The search's objective when it has constraints, its costs counted at ``cfg.cost_skeleton()``."""
    section = cfg.objective
    if not section.constraints.items():
        return None
    skeleton = cfg.cost_skeleton()
    latency = None
    if section.latency_table:
        latency = LatencyTable(section.latency_table)
        latency.check(skeleton, section.device)
    return Objective(section.constraints, section.penalty, CostModel(skeleton, latency))


def save_checkpoint(algo, out: Path, iteration: int, keep: int) -> Path:
    """``checkpoints/iter_NNNNNN``, written whole or not at all; only the newest ``keep`` stay."""
    path = out / CHECKPOINTS / f"iter_{iteration:06d}"
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    algo.save_to_path(str(tmp.resolve()))
    tmp.replace(path)  # a half-written checkpoint is never the latest
    for old in complete_checkpoints(out)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def preflight(cfg: SearchConfig) -> None:
    """Check the inputs that would otherwise fail after Ray started: the table, the dataset."""
    check_inputs(cfg)
    if cfg.uses_supernet:
        load_dataset(cfg.data)  # reads and checks the images


PROGRESS = "progress.json"


def write_progress(out: Path, algo: Any, budget: int) -> None:
    """``progress.json``: iterations (epochs with weight sharing) done, architectures, best so far;
    rewritten atomically after every iteration for whoever watches the search (the gRPC service)."""
    progress = {**algo.recorder.summary(), "iteration": algo.training_iteration, "budget": budget,
                "done": bool(algo.search_done), "updated_at": time.time()}
    tmp = out / (PROGRESS + ".tmp")
    tmp.write_text(json.dumps(progress) + "\n")
    tmp.replace(out / PROGRESS)


def run_search(cfg: SearchConfig, resume: bool = False, on_result: Callable[[Any, dict], None] | None = None,
               stop_after: int | None = None) -> dict[str, Any]:
    """Run (or with ``resume`` continue) one search; return its summary (also ``<out>/summary.json``).

    ``stop_after`` ends the run after that many iterations (epochs), as an interruption would.
    """
    torch.set_num_threads(1)  # the controller is tiny; extra driver threads only contend with Ray's
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = latest_checkpoint(out) if resume else None
    if resume and checkpoint is None:
        raise ValueError(f"no checkpoint in {out / CHECKPOINTS} to resume from")
    if cfg.uses_supernet:
        status(f"loading the data to check it: {describe_data(cfg.data)}")
    preflight(cfg)
    if not resume:
        shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)
        saved = to_dict(cfg)  # absolute paths, so --resume works from any directory
        saved["out"] = str(out.resolve())
        if cfg.data.data_dir:
            saved["data"]["data_dir"] = str(Path(cfg.data.data_dir).expanduser().resolve())
        if cfg.evaluator.table:
            saved["evaluator"]["table"] = str(Path(cfg.evaluator.table).resolve())
        (out / "config.json").write_text(json.dumps(saved, indent=2) + "\n")
    started_ray = connect(cfg.ray_address, cfg.num_cpus, verbose=cfg.verbose)
    algo = progress = None
    try:
        if cfg.uses_supernet:
            check_resources(cfg.weight_sharing.workers, cfg.weight_sharing.gpus_per_worker,
                            cfg.weight_sharing.cpus_per_worker)
            status(f"starting {cfg.weight_sharing.workers} supernet worker(s): each loads the data and builds the "
                   "supernet")
        algo = algorithm_config(cfg, str(out.resolve())).build_algo()
        if checkpoint is not None:
            algo.restore_from_path(str(checkpoint.resolve()))
            print(f"[raynas] resumed from {checkpoint}", flush=True)
        every = cfg.weight_sharing.checkpoint_every if cfg.uses_supernet else 1
        done = algo.training_iteration if cfg.uses_supernet else algo.recorder.spent  # > 0 when resumed
        progress = SearchProgress(cfg, done=done)
        if cfg.uses_supernet:
            algo.phase_listener = progress.phase
        done_now = 0
        while not algo.search_done and (stop_after is None or done_now < stop_after):
            result = algo.train()
            done_now += 1
            progress.update(result)
            if algo.training_iteration % every == 0 or algo.search_done:
                save_checkpoint(algo, out, algo.training_iteration, cfg.keep_checkpoints)
            write_progress(out, algo, cfg.budget)
            if on_result:
                on_result(algo, result)
        return algo.recorder.summary()
    finally:
        if progress is not None:
            progress.close()
        if algo is not None:
            algo.stop()
        if started_ray:
            ray.shutdown()

