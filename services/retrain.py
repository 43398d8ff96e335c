"""`raynas retrain`: the found architecture trained from scratch as a Ray Train ``TorchTrainer``,
data-parallel over the cluster's GPUs (or CPU workers) with the same command.

Ray Train keeps the run's checkpoints under ``<out>/ray_train/retrain``; running the same command
with the same ``--out`` again continues from the last one.
"""
from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, LoggingConfig, RunConfig, ScalingConfig, TrainingFailedError
from ray.train.torch import TorchTrainer
from ray.util.queue import Empty, Queue

from controller_policy.spaces import build_space, load_arch_file
from supernet_worker.export import FORMATS, MODEL_JSON
from supernet_worker.retrain import MODEL_FILE, train_child

from .config import RetrainConfig
from .interrupts import exit_now
from .progress import RetrainProgress, status
from .ray_cluster import connect

RUN_NAME = "retrain"


def load_architecture(cfg: RetrainConfig, arch_file: str | Path) -> list[int]:
    """The architecture in ``arch_file``, checked against the config's space (errors name the position)."""
    space = build_space(cfg.space.name, **cfg.space.params)
    return list(load_arch_file(space, arch_file))


class InterruptibleTrainer(TorchTrainer):
    """Ray Train's Ctrl-C, raynas's way. Ray Train aborts the run gracefully on the first Ctrl-C
    but then exits the driver (status 1, nothing said); here the abort is the same and ``fit``
    returns, ``interrupted`` tells the caller, and a second Ctrl-C ends the process at once."""

    interrupted = False

    def _register_sigint_handler(self, controller) -> None:  # called by fit() in the main thread
        def abort(signum: int, frame: Any) -> None:
            self.interrupted = True
            signal.signal(signal.SIGINT, exit_now)
            print("[raynas] stopping: Ray Train aborts the run; its checkpoints stay (Ctrl-C again to end at once)",
                  flush=True)
            controller.abort.remote()

        signal.signal(signal.SIGINT, abort)


def run_retrain(cfg: RetrainConfig, arch_file: str | Path) -> dict[str, Any]:
    """Train; return the last epoch's metrics. Files: metrics.csv, model.pt, its exports, model.json."""
    arch = load_architecture(cfg, arch_file)
    data = cfg.data
    if data.data_dir:  # the workers run elsewhere (their own directory, maybe another node)
        data = dataclasses.replace(data, data_dir=str(Path(data.data_dir).expanduser().resolve()))
        if not Path(data.data_dir).exists() and not data.download:
            raise ValueError(f"data.data_dir: {data.data_dir} does not exist")
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started_ray = connect(cfg.ray_address, cfg.num_cpus, include_dashboard=True, verbose=cfg.verbose,
                          # rank 0 reports through the queue; the rest is Ray Train's own chatter
                          worker_output=cfg.verbose)
    queue = reader = None
    try:
        use_gpu = cfg.gpus > 0
        scaling = ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})})
        queue = Queue(actor_options={"num_cpus": 0})  # rank 0's progress; placed before the workers need CPUs
        reader = ProgressReader(queue, RetrainProgress())
        loop_config = {"space": cfg.space.name, "space_params": cfg.space.params, "arch": arch,
                       "supernet": cfg.supernet, "data": data, "train": cfg.train, "out": str(out),
                       "seed": cfg.seed, "progress": queue, "verbose": cfg.verbose}
        trainer = InterruptibleTrainer(train_child, train_loop_config=loop_config, scaling_config=scaling,
                               run_config=RunConfig(name=RUN_NAME, storage_path=str(out / "ray_train"),
                                                    checkpoint_config=CheckpointConfig(num_to_keep=2),
                                                    # its INFO lines repeat what the progress shows
                                                    logging_config=LoggingConfig(
                                                        log_level="INFO" if cfg.verbose else "WARNING")))
        status(f"starting {cfg.num_workers} Ray Train worker(s){' with a GPU each' if use_gpu else ''}: each loads "
               "the data and builds the network")
        try:
            result = trainer.fit()
            reader.stop()  # after the last events
        except Exception as exc:
            if trainer.interrupted:  # the aborted controller exits: its run() ends in an ActorDiedError
                raise KeyboardInterrupt from None
            if not isinstance(exc, TrainingFailedError):
                raise
            raise RuntimeError(f"retraining failed: {_root_cause(exc)} (checkpoints kept in {out}/ray_train; "
                               "the same command resumes)") from None
        if trainer.interrupted:
            raise KeyboardInterrupt
        return dict(result.metrics)
    finally:
        if reader is not None:
            reader.stop()
        if queue is not None:
            queue.shutdown()
        if started_ray:
            ray.shutdown()


class ProgressReader(threading.Thread):
    """Hands rank 0's events from the queue to the display while ``fit()`` runs."""

    def __init__(self, queue: Queue, progress: RetrainProgress) -> None:
        super().__init__(name="retrain-progress", daemon=True)
        self.queue, self.progress = queue, progress
        self.stopping = threading.Event()
        self.start()

    def run(self) -> None:
        while True:
            try:
                self.progress.event(self.queue.get(timeout=0.5))
            except Empty:
                if self.stopping.is_set():
                    break
            except ray.exceptions.RayError:  # the queue's actor is gone: the run is over
                break

    def stop(self) -> None:
        if self.is_alive():
            self.stopping.set()
            self.join()
        self.progress.close()


def _root_cause(exc: BaseException) -> str:
    """The innermost error's last line: what a worker actually raised."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def outputs(cfg: RetrainConfig) -> dict[str, Path]:
    out = Path(cfg.out).resolve()
    return {"metrics": out / "metrics.csv", "model": out / MODEL_FILE,
            **{fmt: out / name for fmt, name in FORMATS.items()}, "model_json": out / MODEL_JSON}


