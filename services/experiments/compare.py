"""One Ray Tune experiment comparing algorithms over seeds: a trial per (algorithm, seed).

Every trial runs the same search (same config, same budget) with its own algorithm and seed,
reports per-iteration metrics (epochs with weight sharing) to Tune, and checkpoints through Tune,
so an interrupted experiment resumes (``Tuner.restore``) and a failed trial is retried.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from ray import tune
from ray.tune import Checkpoint
from ray.tune.execution.placement_groups import PlacementGroupFactory

from controller_policy.logs import quiet_ray_logs

from . import storage
from ..config import SearchConfig, from_dict, to_dict
from ..inputs import COMPARE_CONFIG
from ..progress import TrialProgress
from ..search import algorithm_config, preflight
from ..weight_sharing import worker_bundles

TRIAL_METRICS = ("search", "supernet")


def trial_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The search's own metrics, flattened as ``search/best_reward``, ``supernet/shared_loss``..."""
    return {f"{group}/{key}": float(value) for group in TRIAL_METRICS for key, value in result.get(group, {}).items()}


# Files Tune writes itself into a trial's directory; everything else there is the search's own.
TUNE_FILES = ("params.json", "params.pkl", "result.json", "progress.csv", "events.out.tfevents", "error.",
              "checkpoint_")


def fetch_artifacts(dest: Path) -> int:
    """Bring the trial's synced files (trajectory, metrics, ...) back from the experiment's storage
    into a fresh working directory, as after ``--resume`` in a new Ray session; files already
    here are kept. Returns how many files were copied."""
    from ray.train._internal.session import get_storage

    ctx = get_storage()
    return storage.download(ctx.storage_filesystem, ctx.trial_fs_path, dest,
                            accept=lambda rel: not rel.startswith(TUNE_FILES))


def search_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: one search, reported and checkpointed every iteration."""
    cfg = from_dict(SearchConfig, config["search"]).validate()
    cfg = dataclasses.replace(cfg, algo=config["algo"], seed=config["seed"]).validate()
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        fetch_artifacts(Path.cwd())
    algo = algorithm_config(cfg, out_dir=os.getcwd()).build_algo()  # the trial's working dir: artifacts
    try:
        if checkpoint is not None:
            with checkpoint.as_directory() as path:
                algo.restore_from_path(path)
        while not algo.search_done:
            metrics = trial_metrics(algo.train())
            with tempfile.TemporaryDirectory() as tmp:
                algo.save_to_path(tmp)
                tune.report(metrics, checkpoint=Checkpoint.from_directory(tmp))
    finally:
        algo.stop()


def trial_resources(cfg: SearchConfig) -> PlacementGroupFactory:
    """The controller's CPU plus, with weight sharing, one bundle per supernet worker."""
    bundles: list[dict[str, float]] = [{"CPU": 1.0}]
    if cfg.uses_supernet:
        ws = cfg.weight_sharing
        bundles += worker_bundles(ws.workers, ws.cpus_per_worker, ws.gpus_per_worker)
    return PlacementGroupFactory(bundles)


def make_tuner(cfg: SearchConfig, algos: list[str], seeds: int, storage_path: str, name: str,
               max_failures: int = 1, callbacks: list[tune.Callback] | None = None) -> tune.Tuner:
    preflight(cfg)
    trainable = tune.with_resources(search_trial, trial_resources(cfg))
    param_space = {"search": to_dict(cfg), "algo": tune.grid_search(algos), "seed": tune.grid_search(list(range(seeds)))}
    run_config = tune.RunConfig(
        name=name, storage_path=storage_path if storage.is_uri(storage_path) else storage.resolve(storage_path)[1],
        failure_config=tune.FailureConfig(max_failures=max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
        sync_config=tune.SyncConfig(sync_artifacts=True), verbose=1 if cfg.verbose else 0,
        callbacks=[*([] if cfg.verbose else [TrialProgress(len(algos) * seeds)]), *(callbacks or [])],
    )
    return tune.Tuner(trainable, param_space=param_space, run_config=run_config)


class _SayWhenStopping(logging.Filter):
    """Tune's messages on a Ctrl-C, in raynas's words: it stops the experiment and saves its state
    (its advice to call ``Tuner.restore`` names no raynas command; ``compare`` says what to run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "Stop signal received" in message:
            print("[raynas] stopping: Tune saves the experiment's state (Ctrl-C again to end at once)", flush=True)
            return False
        return "Resume experiment with" not in message


@contextlib.contextmanager
def tune_output(verbose: bool) -> Iterator[None]:
    """Tune's own terminal output only when ``verbose``. Its current output engine prints an
    experiment header (a configuration box, a TensorBoard hint into Ray's temp dir) at any
    verbosity; its legacy engine, which Ray selects with ``RAY_AIR_NEW_OUTPUT=0``, prints nothing
    at verbosity 0 and leaves the trials' lines to ``TrialProgress``. Set for this run only."""
    if verbose:
        yield
        return
    quiet_ray_logs()  # Tune's own messages in this (the driver's) process
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    stopping = _SayWhenStopping()
    logging.getLogger("ray.tune.tune").addFilter(stopping)
    try:
        yield
    finally:
        logging.getLogger("ray.tune.tune").removeFilter(stopping)
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = before


def run_compare(cfg: SearchConfig, algos: list[str], seeds: int, storage_path: str, name: str,
                max_failures: int = 1, callbacks: list[tune.Callback] | None = None) -> tune.ResultGrid:
    """``max_failures``: retries of a failed trial (from its last checkpoint) before it is
    reported as errored; the other trials go on either way."""
    tuner = make_tuner(cfg, algos, seeds, storage_path, name, max_failures, callbacks)
    fs, root = storage.resolve(storage_path)
    storage.write_text(fs, f"{root}/{name}/{COMPARE_CONFIG}", json.dumps(to_dict(cfg), indent=2) + "\n")
    print(f"[raynas] experiment {name}: {len(algos) * seeds} trials ({', '.join(algos)} × {seeds} seeds) in "
          f"{storage_path.rstrip('/')}/{name}", flush=True)
    with tune_output(cfg.verbose):
        return tuner.fit()


def resume_compare(path: str) -> tune.ResultGrid:
    """Tune's restore: unfinished trials continue from their checkpoints, finished ones are kept."""
    fs, root = storage.resolve(path)
    saved = storage.read_text(fs, f"{root}/{COMPARE_CONFIG}")
    if saved is None:
        raise ValueError(f"{path} is not a raynas compare experiment (no {COMPARE_CONFIG})")
    cfg = from_dict(SearchConfig, json.loads(saved)).validate()
    trainable = tune.with_resources(search_trial, trial_resources(cfg))
    tuner = tune.Tuner.restore(path if storage.is_uri(path) else root, trainable, resume_unfinished=True,
                               resume_errored=True)
    print(f"[raynas] resuming the experiment in {path}: unfinished trials continue from their checkpoints",
          flush=True)
    with tune_output(cfg.verbose):
        return tuner.fit()
