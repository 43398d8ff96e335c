"""`raynas retrain`: the found architecture trained from scratch as a Ray Train ``TorchTrainer``,
data-parallel over the cluster's GPUs (or CPU workers) with the same command.

Ray Train keeps the run's checkpoints under ``<out>/ray_train/retrain``; running the same command
with the same ``--out`` again continues from the last one.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from controller_policy.spaces import build_space, load_arch_file
from supernet_worker.retrain import MODEL_FILE, TORCHSCRIPT_FILE, train_child

from .config import RetrainConfig
from .ray_cluster import connect

RUN_NAME = "retrain"


def load_architecture(cfg: RetrainConfig, arch_file: str | Path) -> list[int]:
    """The architecture in ``arch_file``, checked against the config's space (errors name the position)."""
    space = build_space(cfg.space.name, **cfg.space.params)
    return list(load_arch_file(space, arch_file))


def run_retrain(cfg: RetrainConfig, arch_file: str | Path) -> dict[str, Any]:
    """Train; return the last epoch's metrics. Files: metrics.csv, model.pt, model.torchscript.pt."""
    arch = load_architecture(cfg, arch_file)
    out = Path(cfg.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started_ray = connect(cfg.ray_address, cfg.num_cpus)
    try:
        use_gpu = cfg.gpus > 0
        scaling = ScalingConfig(num_workers=cfg.num_workers, use_gpu=use_gpu,
                                resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})})
        loop_config = {"space": cfg.space.name, "space_params": cfg.space.params, "arch": arch,
                       "supernet": cfg.supernet, "data": cfg.data, "train": cfg.train, "out": str(out),
                       "seed": cfg.seed}
        trainer = TorchTrainer(train_child, train_loop_config=loop_config, scaling_config=scaling,
                               run_config=RunConfig(name=RUN_NAME, storage_path=str(out / "ray_train"),
                                                    checkpoint_config=CheckpointConfig(num_to_keep=2)))
        result = trainer.fit()
        if result.error:
            raise RuntimeError(f"retraining failed: {result.error}")
        return dict(result.metrics)
    finally:
        if started_ray:
            ray.shutdown()


def outputs(cfg: RetrainConfig) -> dict[str, Path]:
    out = Path(cfg.out).resolve()
    return {"metrics": out / "metrics.csv", "model": out / MODEL_FILE, "torchscript": out / TORCHSCRIPT_FILE}


