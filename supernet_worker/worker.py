"""The SupernetWorker Ray actor: one replica of the shared weights, its optimiser and its data.

Workers train data-parallel in one ``torch.distributed`` process group (gloo on CPU, NCCL on
GPU): each samples its own child from the controller for its minibatch, gradients are averaged
with one all-reduce per step, so every replica applies the same update and stays identical.
"""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist

from controller_policy import ControllerConfig, ENASController, build_space

from .data import DataConfig, make_splits
from .supernets import SupernetConfig, build_supernet


@dataclass
class OptimConfig:
    """ENAS's shared-weight optimiser: SGD (momentum 0.9, nesterov), cosine with warm restarts."""

    lr_max: float = 0.05
    lr_min: float = 0.0005
    momentum: float = 0.9
    weight_decay: float = 0.00025
    restart_period: int = 10  # epochs of the first cosine cycle (ENAS lr_T_0)
    restart_mult: int = 2  # each cycle this many times longer (ENAS lr_T_mul)
    grad_clip: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.lr_min <= self.lr_max:
            raise ValueError(f"optim: need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")
        if self.restart_period < 1 or self.restart_mult < 1:
            raise ValueError("optim.restart_period and optim.restart_mult must be >= 1")
        if self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be > 0, got {self.grad_clip}")


@dataclass
class WorkerSpec:
    """Everything a worker needs to build its replica (identical on every rank)."""

    space: str
    space_params: dict = field(default_factory=dict)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    seed: int = 0
    threads: int = 1  # torch CPU threads per worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class SupernetWorker:
    """Use as a Ray actor: ``ray.remote(SupernetWorker).options(num_gpus=...)``."""

    def __init__(self, spec: WorkerSpec, rank: int) -> None:
        torch.set_num_threads(spec.threads)
        self.spec, self.rank = spec, rank
        use_cuda = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        torch.manual_seed(spec.seed)  # identical initial weights on every rank
        self.space = build_space(spec.space, **spec.space_params)
        self.splits = make_splits(spec.data, self.device, seed=spec.seed * 7919 + rank)
        data = self.splits.data
        self.net = build_supernet(self.space, spec.supernet, data.channels, data.num_classes).to(self.device)
        o = spec.optim
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=o.lr_max, momentum=o.momentum, nesterov=True,
                                         weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=o.restart_period, T_mult=o.restart_mult, eta_min=o.lr_min)
        self.controller = ENASController(self.space, spec.controller)
        self.uniform = True  # until controller weights arrive: uniform architectures
        self.sampler = torch.Generator().manual_seed(spec.seed * 104729 + rank)
        self.np_rng = np.random.default_rng(spec.seed * 104729 + rank)
        self.global_step = 0
        self.world_size = 1

    # -- process group ---------------------------------------------------------------------
    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), _free_port()

    def join(self, master: str, port: int, world_size: int) -> None:
        """(Re-)join the process group of ``world_size`` workers (after a restart too)."""
        if dist.is_initialized():
            dist.destroy_process_group()
        self.world_size = world_size
        if world_size > 1:
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=self.rank,
                                    world_size=world_size, timeout=datetime.timedelta(seconds=120))

    def ping(self) -> dict[str, Any]:
        return {"rank": self.rank, "global_step": self.global_step, "pid": os.getpid(), "device": str(self.device),
                "node_id": ray.get_runtime_context().get_node_id(),
                "train_images": self.splits.train.num_images, "valid_images": self.splits.valid.num_images}

    # -- controller ------------------------------------------------------------------------
    def set_controller(self, state: dict[str, torch.Tensor] | None) -> None:
        """Controller weights to sample training architectures from; None: uniform sampling."""
        self.uniform = state is None
        if state is not None:
            self.controller.load_state_dict(state)

    def _sample_arch(self) -> list[int]:
        if self.uniform:
            return self.space.sample(self.np_rng)
        with torch.no_grad():
            return self.controller.sample(1, self.sampler).actions[0].tolist()

    # -- training and evaluation -----------------------------------------------------------
    def train(self, until_step: int, steps_per_epoch: int) -> dict[str, float]:
        """Train until the global step ``until_step``; the cosine schedule runs in epochs."""
        self.net.train()
        losses, correct, seen = [], 0, 0
        while self.global_step < until_step:
            self.scheduler.step(self.global_step / steps_per_epoch)
            x, y = self.splits.train.next_batch()
            logits = self.net(x, self._sample_arch())
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._average_gradients()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.spec.optim.grad_clip)
            self.optimizer.step()
            self.global_step += 1
            losses.append(loss.item())
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        return {"loss": float(np.mean(losses)) if losses else float("nan"),
                "accuracy": correct / seen if seen else float("nan"), "images": seen,
                "global_step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"]}

    def _average_gradients(self) -> None:
        if self.world_size <= 1:
            return
        params = list(self.net.parameters())
        has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=self.device)
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
        dist.all_reduce(has_grad)
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, used in zip(params, has_grad.tolist()):
            n = p.numel()
            # A weight no rank's child used keeps no gradient, so weight decay leaves it alone.
            p.grad = flat[offset : offset + n].view_as(p).clone() if used else None
            offset += n

    @torch.no_grad()
    def evaluate(self, archs: list[list[int]], full: bool = False) -> list[float]:
        """Validation accuracy of each architecture: on one minibatch (the controller's reward,
        as ENAS) or, with ``full``, on the whole validation split."""
        self.net.eval()
        accs = []
        for arch in archs:
            batches = iter(self.splits.valid) if full else [self.splits.valid.next_batch()]
            correct = seen = 0
            for x, y in batches:
                correct += (self.net(x, arch).argmax(1) == y).sum().item()
                seen += len(y)
            accs.append(correct / seen)
        return accs

    # -- state -----------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        return {
            "shared": {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                       "scheduler": self.scheduler.state_dict(), "global_step": self.global_step},
            "rank": {"sampler": self.sampler.get_state(), "np_rng": self.np_rng.bit_generator.state,
                     "train": self.splits.train.state_dict(), "valid": self.splits.valid.state_dict(),
                     "torch_rng": torch.get_rng_state()},
        }

    def set_state(self, shared: dict[str, Any], rank_state: dict[str, Any] | None = None) -> None:
        """Take the shared weights/optimiser (from a live replica or a checkpoint) and, when
        given, this rank's RNG and data positions; without them they are re-derived from the step."""
        self.net.load_state_dict(shared["net"])
        self.optimizer.load_state_dict(shared["optimizer"])
        self.scheduler.load_state_dict(shared["scheduler"])
        self.global_step = shared["global_step"]
        if rank_state is None:
            seed = (self.spec.seed * 104729 + self.rank) * 1_000_003 + self.global_step
            self.sampler.manual_seed(seed)
            self.np_rng = np.random.default_rng(seed)
            return
        self.sampler.set_state(rank_state["sampler"])
        self.np_rng.bit_generator.state = rank_state["np_rng"]
        self.splits.train.load_state_dict(rank_state["train"])
        self.splits.valid.load_state_dict(rank_state["valid"])
        torch.set_rng_state(rank_state["torch_rng"])

    def weights_checksum(self) -> float:
        return float(sum(p.detach().double().sum().item() for p in self.net.parameters()))
