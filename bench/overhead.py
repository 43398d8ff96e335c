"""raynas's overhead over a bare PyTorch loop doing the same ENAS epoch.

(a) one epoch of a real search: ``raynas search`` machinery on a local Ray cluster (one supernet
    worker actor, RLlib PPO on the controller, trajectory/metrics/checkpoint written as it goes);
(b) the same work in one process: the same supernet and data, the same number of shared-weight
    steps on controller-sampled children, the same number of children scored on one validation
    minibatch each, and a PPO update per batch of children (same clip, epochs, minibatches, lr).
The second epoch of each is timed (the first pays start-up; the third, in (a), the final
derivation). (a) includes writing its outputs and a checkpoint. Target: a/b <= 1.10.

    python bench/overhead.py [--config configs/quick-cpu.yaml] [--data-dir DIR]
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

from controller_policy import ENASController, build_space
from controller_policy.algorithms import PPOSearchConfig
from services.config import load_config
from services.search import run_search
from supernet_worker.data import make_splits
from supernet_worker.supernets import build_supernet


def raynas_epoch_seconds(cfg) -> tuple[float, dict[str, float]]:
    """The second epoch's wall time, and its seconds per phase (metrics.csv)."""
    run_search(cfg)
    with open(Path(cfg.out) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    phases = {k: float(rows[1][k]) for k in ("supernet_s", "sampling_s", "evaluation_s", "update_s")}
    return float(rows[1]["wall_time"]) - float(rows[0]["wall_time"]), phases


def bare_epochs(cfg, epochs: int = 2) -> list[tuple[float, float]]:
    """(shared-weight phase, controller phase) seconds per epoch."""
    torch.set_num_threads(max(1, int(cfg.weight_sharing.cpus_per_worker)))  # as many as the worker gets
    torch.manual_seed(cfg.seed)
    space = build_space(cfg.space.name, **cfg.space.params)
    splits = make_splits(cfg.data, "cpu", seed=cfg.seed)
    net = build_supernet(space, cfg.supernet, splits.data.channels, splits.data.num_classes)
    o = cfg.optim
    opt = torch.optim.SGD(net.parameters(), lr=o.lr_max, momentum=o.momentum, nesterov=True, weight_decay=o.weight_decay)
    controller = ENASController(space, cfg.controller)
    defaults = PPOSearchConfig()
    ppo_epochs = cfg.ppo.num_epochs or defaults.num_epochs
    minibatches = cfg.ppo.minibatches or defaults.ppo_minibatches
    clip = cfg.ppo.clip_param or defaults.clip_param
    copt = torch.optim.Adam(controller.parameters(), lr=cfg.ppo.lr or defaults.lr)
    ws, eps = cfg.weight_sharing, cfg.episodes_per_iteration or defaults.episodes_per_iteration
    durations = []
    for _ in range(epochs):
        start = time.perf_counter()
        net.train()
        with torch.no_grad():  # the phase's children in one batched call, as the workers do
            archs = controller.sample(ws.train_steps).actions.tolist()
        for arch in archs:
            x, y = splits.train.next_batch()
            loss = torch.nn.functional.cross_entropy(net(x, arch), y)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), o.grad_clip)
            opt.step()
        shared_done = time.perf_counter()
        net.eval()
        for _ in range(ws.archs_per_epoch // eps):
            with torch.no_grad():
                out = controller.sample(eps)
                rewards = []
                for arch in out.actions.tolist():
                    x, y = splits.valid.next_batch()
                    rewards.append((net(x, arch).argmax(1) == y).float().mean().item())
            adv = torch.tensor(rewards)
            adv = (adv - adv.mean()) / adv.std().clamp(min=1e-4)
            old = out.log_prob.detach()
            for _ in range(ppo_epochs):
                for mb in torch.randperm(eps).chunk(minibatches):
                    ratio = torch.exp(controller.evaluate(out.actions[mb]).log_prob - old[mb])
                    loss = -torch.min(ratio * adv[mb], ratio.clamp(1 - clip, 1 + clip) * adv[mb]).mean()
                    copt.zero_grad()
                    loss.backward()
                    copt.step()
        durations.append((shared_done - start, time.perf_counter() - shared_done))
    return durations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/quick-cpu.yaml")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    overrides = {"weight_sharing.epochs": 3, "weight_sharing.derive_samples": 1, "out": tempfile.mkdtemp()}
    if args.data_dir:
        overrides["data.data_dir"] = args.data_dir
    cfg = load_config(args.config, overrides)
    shared, controller = bare_epochs(cfg)[1]
    bare = shared + controller
    a, phases = raynas_epoch_seconds(cfg)
    ws = cfg.weight_sharing
    print(f"one ENAS epoch: {ws.train_steps} shared-weight steps (batch {cfg.data.batch_size}), "
          f"{ws.archs_per_epoch} children scored, PPO updates every "
          f"{cfg.episodes_per_iteration or PPOSearchConfig().episodes_per_iteration}")
    print(f"(a) raynas on local Ray: {a:.2f} s   (b) bare PyTorch loop: {bare:.2f} s "
          f"(shared weights {shared:.2f} s, controller {controller:.2f} s)   ratio a/b = {a / bare:.2f}")
    print("(a) by phase: " + ", ".join(f"{k[:-2]} {v:.2f} s" for k, v in phases.items())
          + f", the rest (checkpoint, outputs, Ray calls) {a - sum(phases.values()):.2f} s")


if __name__ == "__main__":
    main()
