"""The SupernetWorker Ray actor: one replica of the shared weights, its optimiser and its data.

Workers train data-parallel in one ``torch.distributed`` process group (NCCL when every rank
has a GPU of its own, gloo on CPU or when ranks share a GPU, which NCCL refuses): each rank trains on its own disjoint share of every epoch, with its own child per step (a
supernet phase's children are drawn in one batched controller call); the gradients some rank
produced are averaged with one all-reduce per step, so every replica applies the same update and
stays identical. How K ranks share ENAS's recipe is ``OptimConfig.data_parallel``.
"""
from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import ray
import torch
import torch.distributed as dist

from controller_policy import ControllerConfig, ENASController, build_space

from .data import DataConfig, make_splits
from .settings import SAMPLINGS, OptimConfig, ScoringConfig, data_parallel_plan  # noqa: F401 (also imported from here)
from .supernets import SupernetConfig, build_supernet, recalibrated_batch_norm


@dataclass
class WorkerSpec:
    """Everything a worker needs to build its replica (identical on every rank)."""

    space: str
    space_params: dict = field(default_factory=dict)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    seed: int = 0
    threads: int = 1  # torch CPU threads per worker
    sampling: str = "uniform"  # the children of a phase without controller (SAMPLINGS)
    drop_path: float = 0.0  # while the supernet trains: each sample drops each edge's op output with this probability

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"drop_path must lie in [0, 1), got {self.drop_path}")


SAMPLE_CHUNK = 1024  # architectures per batched controller walk on a worker


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class SupernetWorker:
    """Use as a Ray actor: ``ray.remote(SupernetWorker).options(num_gpus=...)``."""

    def __init__(self, spec: WorkerSpec, rank: int, world_size: int = 1) -> None:
        torch.set_num_threads(spec.threads)
        self.spec, self.rank = spec, rank
        use_cuda = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_cuda else "cpu")
        torch.manual_seed(spec.seed)  # identical initial weights on every rank
        self.space = build_space(spec.space, **spec.space_params)
        o = spec.optim
        rank_batch, _, self.lr_factor = data_parallel_plan(o, spec.data.batch_size, world_size, spec.data.train_size)
        # Every rank draws the same order of each pass and trains on its own share of it.
        self.splits = make_splits(spec.data, self.device, seed=spec.seed * 7919 + rank, shard=(rank, world_size),
                                  train_batch_size=rank_batch, order_seed=spec.seed * 7919)
        data = self.splits.data
        self.net = build_supernet(self.space, spec.supernet, data.channels, data.num_classes).to(self.device)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=o.lr_max * self.lr_factor, momentum=o.momentum,
                                         nesterov=True, weight_decay=o.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=o.restart_period, T_mult=o.restart_mult, eta_min=o.lr_min * self.lr_factor)
        self.controller = ENASController(self.space, spec.controller)
        self.uniform = True  # until controller weights arrive: uniform architectures
        self.sampler = torch.Generator().manual_seed(spec.seed * 104729 + rank)
        self.np_rng = np.random.default_rng(spec.seed * 104729 + rank)
        self.global_step = 0
        self.world_size = 1
        self.meta_group = None  # a CPU (gloo) group for which-gradients-exist bookkeeping
        self._calibration: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # see _calibration_batches

    # -- process group ---------------------------------------------------------------------
    def address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), _free_port()

    def join(self, master: str, port: int, world_size: int, backend: str = "gloo") -> None:
        """(Re-)join the process group of ``world_size`` workers (after a restart too)."""
        if dist.is_initialized():
            dist.destroy_process_group()
        self.world_size = world_size
        if world_size > 1:
            dist.init_process_group(backend, init_method=f"tcp://{master}:{port}", rank=self.rank,
                                    world_size=world_size, timeout=datetime.timedelta(seconds=120))
            # Which parameters got a gradient is host-side knowledge: exchanging it over gloo
            # keeps the NCCL stream (and the GPU) free of a per-step device-to-host sync.
            self.meta_group = dist.new_group(backend="gloo") if backend != "gloo" else None

    def ping(self) -> dict[str, Any]:
        return {"rank": self.rank, "global_step": self.global_step, "pid": os.getpid(), "device": str(self.device),
                "gpu_ids": [str(g) for g in ray.get_gpu_ids()] if self.device.type == "cuda" else [],
                "node_id": ray.get_runtime_context().get_node_id(),
                "train_images": self.splits.train.num_images, "valid_images": self.splits.valid.num_images}

    # -- controller ------------------------------------------------------------------------
    def set_controller(self, state: dict[str, torch.Tensor] | None) -> None:
        """Controller weights to sample training architectures from; None: uniform sampling."""
        self.uniform = state is None
        if state is not None:
            self.controller.load_state_dict(state)

    def sample_archs(self, n: int) -> list[list[int]]:
        """The ``n`` training architectures of a supernet phase, drawn in one batched call from
        the (frozen) controller, or uniformly; seeded per rank and checkpointed."""
        if self.uniform:
            draw = self.space.sample_balanced if self.spec.sampling == "fair" else self.space.sample_batch
            return draw(self.np_rng, n).tolist()
        archs: list[list[int]] = []
        with torch.no_grad():
            for start in range(0, n, SAMPLE_CHUNK):  # bounds the walk's memory on long phases
                archs += self.controller.sample(min(SAMPLE_CHUNK, n - start), self.sampler).actions.tolist()
        return archs

    def set_scoring(self, scoring: ScoringConfig) -> None:
        """Score children this way from now on (``bench/ranking.py`` compares the options)."""
        self.spec = replace(self.spec, scoring=scoring)
        self._calibration = None

    # -- training and evaluation -----------------------------------------------------------
    def train(self, until_step: int, steps_per_epoch: int) -> dict[str, float]:
        """Train until the global step ``until_step``; the cosine schedule runs in epochs.
        Loss and accuracy stay on the device until the phase ends."""
        self.net.train()
        self.net.set_drop_path(self.spec.drop_path)
        archs = self.sample_archs(max(0, until_step - self.global_step))
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        for arch in archs:
            self._set_lr(self.global_step / steps_per_epoch)
            x, y = self.splits.train.next_batch()
            logits = self.net(x, arch)
            loss = torch.nn.functional.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._average_gradients()
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.spec.optim.grad_clip)
            self.optimizer.step()
            self.global_step += 1
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
        self.net.set_drop_path(0.0)  # scoring and batch-norm re-calibration see every path
        return {"loss": loss_sum.item() / seen if seen else float("nan"),
                "accuracy": correct.item() / seen if seen else float("nan"), "images": seen,
                "global_step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"]}

    def _set_lr(self, epoch: float) -> None:
        self.scheduler.step(epoch)
        warmup = self.spec.optim.warmup_epochs
        if self.lr_factor > 1 and epoch < warmup:  # scale_lr: ramp up from the unscaled rate
            ramp = (1 + (self.lr_factor - 1) * epoch / warmup) / self.lr_factor
            for group in self.optimizer.param_groups:
                group["lr"] *= ramp

    def _average_gradients(self) -> None:
        """Average gradients over the ranks. Each rank trained its own child, so most weights got
        no gradient anywhere: only the union of the parameters some rank used travels, as one
        flat all-reduce; a weight no rank used keeps no gradient (weight decay leaves it alone)."""
        if self.world_size <= 1:
            return
        params = list(self.net.parameters())
        used = torch.tensor([p.grad is not None for p in params], dtype=torch.uint8)
        dist.all_reduce(used, op=dist.ReduceOp.MAX, group=self.meta_group)
        union = [p for p, u in zip(params, used.tolist()) if u]
        if not union:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in union])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in union:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n

    @torch.no_grad()
    def evaluate(self, archs: list[list[int]], full: bool = False, batch_seed: int | None = None) -> list[float]:
        """Validation accuracy of each architecture: the controller's reward (on
        ``scoring.reward_batches`` minibatches, each architecture its own unless ``batch_seed``
        picks the same ones for all, alike on every rank) or, with ``full``, on the whole
        validation split."""
        self.net.eval()
        scoring = self.spec.scoring
        valid = self.splits.valid
        same = None if full or batch_seed is None else valid.fixed_batches(batch_seed, scoring.reward_batches)
        accs = []
        for arch in archs:
            if full:
                batches = iter(valid)
            else:
                batches = same if same is not None else [valid.next_batch() for _ in range(scoring.reward_batches)]
            with recalibrated_batch_norm(self.net, arch, self._calibration_batches()):
                correct = torch.zeros((), dtype=torch.long, device=self.device)
                seen = 0
                for x, y in batches:
                    correct += (self.net(x, arch).argmax(1) == y).sum()
                    seen += len(y)
            accs.append(correct.item() / seen)
        return accs

    def _calibration_batches(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The fixed training minibatches that re-estimate a child's batch-norm statistics."""
        n = self.spec.scoring.bn_calibration_batches
        if not n:
            return None
        if self._calibration is None:
            self._calibration = self.splits.train.fixed_batches(self.spec.seed, n, self.spec.data.batch_size)
        return self._calibration

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
