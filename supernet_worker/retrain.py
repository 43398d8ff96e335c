"""Training a found architecture from scratch (ENAS's final step), one Ray Train worker's share.

``train_child`` is the per-worker loop of a ``TorchTrainer``: every worker builds the child,
``prepare_model`` wraps it in DDP (gloo on CPU, NCCL on GPU), each trains on its shard of the
training set and scores its shard of the test set (sums all-reduced). Rank 0 writes
``metrics.csv`` and a checkpoint every epoch, and at the end ``model.pt`` and its exports
(``supernet_worker.export``: ``model.pt2``, ``model.onnx``, ``model.torchscript.pt``, ``model.json``).
Rank 0 also sends its progress (start, minibatches, epochs) to the driver's queue, which draws it.
"""
from __future__ import annotations

import csv
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from controller_policy.logs import quiet_ray_train_worker
from controller_policy.spaces import build_space

from .data import Batches, DataConfig, channel_stats, load_dataset
from .export import FORMATS, ExportedClassifier, ExportError, export_classifier, write_model_json
from .settings import TrainSettings
from .supernets import SupernetConfig, build_child

METRICS_COLUMNS = ["epoch", "train_loss", "train_accuracy", "test_accuracy", "lr", "wall_time"]
MODEL_FILE = "model.pt"


def training_indices(num_images: int, config: DataConfig) -> np.ndarray:
    """The whole training set, or a seeded subset of ``data.train_size`` images when smaller."""
    if config.train_size >= num_images:
        return np.arange(num_images)
    return np.sort(np.random.default_rng(config.split_seed).permutation(num_images)[: config.train_size])


def _sum_over_workers(values: list[float], device: torch.device) -> list[float]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t.tolist()


# Rank 0 reports its minibatches about this often per epoch.
STEP_UPDATES = 20


class ProgressSender:
    """Rank 0's progress events into the driver's ``ray.util.queue.Queue`` (None: no events). The
    driver going away must not stop the training: after one failed put it stops sending."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue

    def __call__(self, event: str, **fields: Any) -> None:
        if self.queue is None:
            return
        try:
            self.queue.put_nowait({"event": event, **fields})
        except Exception as exc:  # noqa: BLE001 - any Ray error of a gone queue actor
            print(f"[raynas] progress no longer reaches the driver ({type(exc).__name__}); training goes on",
                  flush=True)
            self.queue = None


def train_child(config: dict[str, Any]) -> None:
    """Ray Train per-worker loop. ``config``: space, space_params, arch, supernet, data, train
    (dataclasses), out (rank 0 writes there), seed, progress (a queue for rank 0's events, or None),
    verbose (keep Ray Train's INFO messages)."""
    import ray.train
    import ray.train.torch

    if not config.get("verbose"):
        quiet_ray_train_worker()
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    net_cfg: SupernetConfig = config["supernet"]
    data_cfg: DataConfig = config["data"]
    train: TrainSettings = config["train"]
    out = Path(config["out"])
    torch.manual_seed(config["seed"] + rank)

    data = load_dataset(data_cfg)
    idx = training_indices(len(data.y_train), data_cfg)
    mean, std = channel_stats(data.x_train[idx])
    mine = idx[rank::world]
    batches = Batches(data.x_train[mine], data.y_train[mine], data_cfg.batch_size, mean, std,
                      augment=data_cfg.augment, cutout=data_cfg.cutout, shuffle=True, device=device)
    test_idx = np.arange(len(data.y_test))[rank::world]
    test = Batches(data.x_test[test_idx], data.y_test[test_idx], data_cfg.eval_batch_size, mean, std, device=device)

    space = build_space(config["space"], **config["space_params"])
    child = build_child(space, config["arch"], net_cfg, data.channels, data.num_classes)
    optimizer = torch.optim.SGD(child.parameters(), lr=train.lr_max, momentum=train.momentum, nesterov=True,
                                weight_decay=train.weight_decay)
    start, elapsed = 0, 0.0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as path:
            state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=False)
        child.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = state["epoch"], state["elapsed"]
    send = ProgressSender(config.get("progress") if rank == 0 else None)
    send("start", epoch=start, epochs=train.epochs)
    steps, every = len(batches), max(1, -(-len(batches) // STEP_UPDATES))
    model = ray.train.torch.prepare_model(child)
    criterion = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)

    this_run = time.time()  # the time left is estimated from this run's epochs (a resumed run's too)
    for epoch in range(start, train.epochs):
        started = time.time()
        lr = train.lr(epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        child.set_drop_path(net_cfg.drop_path * epoch / train.epochs)  # ramped up, as in ENAS/DARTS
        batches.generator.manual_seed(config["seed"] * 100_003 + epoch * 1_009 + rank)
        model.train()
        # summed on the device: a float() per minibatch would wait for the GPU at every step
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        send("step", epoch=epoch + 1, done=0, total=steps)
        for step, (x, y) in enumerate(batches, 1):
            output = model(x)
            logits, aux = output if isinstance(output, tuple) else (output, None)
            loss = criterion(logits, y) + (train.aux_weight * criterion(aux, y) if aux is not None else 0.0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if step % every == 0 or step == steps:
                send("step", epoch=epoch + 1, done=step, total=steps)
        model.eval()
        test_correct = torch.zeros((), dtype=torch.long, device=device)
        test_seen = 0
        with torch.no_grad():
            for x, y in test:
                test_correct += (child(x).argmax(1) == y).sum()
                test_seen += len(y)
        loss_sum, correct, seen, test_correct, test_seen = _sum_over_workers(
            [loss_sum.item(), correct.item(), seen, test_correct.item(), test_seen], device)
        elapsed += time.time() - started
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "test_accuracy": test_correct / test_seen, "lr": lr, "wall_time": elapsed}
        if rank == 0:
            send("epoch", **row, left=(time.time() - this_run) / (epoch + 1 - start) * (train.epochs - epoch - 1))
            _append_metrics(out / "metrics.csv", row)
            with tempfile.TemporaryDirectory() as tmp:
                torch.save({"model": child.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1,
                            "elapsed": elapsed}, Path(tmp) / "state.pt")
                ray.train.report(row, checkpoint=ray.train.Checkpoint.from_directory(tmp))
        else:
            ray.train.report(row)
    if rank == 0:
        save_model(out, child.cpu(), config, space, data.x_train.shape[1:4], data.num_classes, mean, std)


def _append_metrics(path: Path, row: dict[str, float]) -> None:
    """One row per epoch; a resumed run first drops the rows after its checkpoint."""
    rows = []
    if path.exists():
        with path.open() as f:
            rows = [r for r in csv.DictReader(f) if int(r["epoch"]) < row["epoch"]]
    rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def save_model(out: Path, child: nn.Module, config: dict[str, Any], space: Any, image_shape: tuple[int, int, int],
               num_classes: int, mean: list[float], std: list[float]) -> dict[str, str]:
    """``model.pt`` (weights + everything ``load_model`` needs, and the last epoch's test accuracy
    from ``metrics.csv``) and its exports; returns format -> file written or why not."""
    child.eval()
    height, width, in_channels = image_shape
    with (out / "metrics.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    torch.save({"state_dict": child.state_dict(), "space": config["space"], "space_params": config["space_params"],
                "arch": list(config["arch"]), "arch_string": space.to_string(config["arch"]),
                "arch_json": space.to_json(config["arch"]), "supernet": asdict(config["supernet"]),
                "in_channels": in_channels, "image_size": [height, width], "num_classes": num_classes,
                "mean": list(mean), "std": list(std), "test_accuracy": float(last["test_accuracy"]),
                "test_split": describe_test_split(config["data"])},
               out / MODEL_FILE)
    return export_model(out / MODEL_FILE, FORMATS, out)


def describe_test_split(data: DataConfig) -> str:
    """Which images ``test_accuracy`` was measured on."""
    if data.source == "synthetic":
        return f"the generated test split ({data.synthetic_test} images)"
    return "the dataset's test split (all of it; never used for training or selection)"


def export_model(model_file: str | Path, formats: Any, out: str | Path,
                 names: dict[str, str] | None = None) -> dict[str, str]:
    """Export the network saved in ``model_file`` in each of ``formats`` into ``out`` and, when
    ``out`` holds ``model_file``, (re)write ``model.json`` there. Returns format -> the file
    written, or "not written: <why>" (an export failure is reported, not raised, so a retrain
    still ends with every file that could be written; ``raynas export`` turns it into an error)."""
    out = Path(out)
    child, saved = load_model(model_file)
    model = ExportedClassifier(child, saved["mean"], saved["std"]).eval()
    example = torch.rand(2, saved["in_channels"], *saved["image_size"])
    written: dict[str, str] = {}
    missing: dict[str, str] = {}
    for fmt in formats:
        target = out / (names or FORMATS)[fmt]
        try:
            written[fmt] = str(export_classifier(model, example, fmt, target))
        except ExportError as exc:
            missing[fmt] = str(exc)
            print(f"[raynas] {target.name} not written: {exc}", flush=True)
    if Path(model_file).resolve().parent == out.resolve():  # model.json describes the files beside model.pt
        write_model_json(out, saved, missing)
    return {**written, **{fmt: f"not written: {why}" for fmt, why in missing.items()}}


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a retrained child from ``model.pt``; returns (network in eval mode, saved metadata)."""
    saved = torch.load(Path(path), map_location="cpu", weights_only=False)
    space = build_space(saved["space"], **saved["space_params"])
    child = build_child(space, saved["arch"], SupernetConfig(**saved["supernet"]), saved["in_channels"],
                        saved["num_classes"])
    child.load_state_dict(saved["state_dict"])
    return child.eval(), saved
