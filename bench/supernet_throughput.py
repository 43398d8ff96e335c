"""Training throughput (images/second) of each shared-weight supernet.

Each step samples a uniform architecture, runs forward + backward + an SGD step on one minibatch.
Runs on CUDA when available (``--device cuda``), on CPU otherwise.

    python bench/supernet_throughput.py                 # small CPU-sized networks
    python bench/supernet_throughput.py --preset paper  # ENAS / NAS-Bench-201 sizes (GPU)
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from controller_policy import build_space
from supernet_worker.supernets import SupernetConfig, build_supernet

PRESETS = {
    "cpu": [
        ("enas_macro", {"num_layers": 6}, SupernetConfig(channels=16), 64),
        ("enas_micro", {"num_nodes": 5}, SupernetConfig(channels=8, num_cells=1), 64),
        ("nb201", {}, SupernetConfig(channels=16, num_cells=1), 64),
    ],
    "paper": [
        ("enas_macro", {"num_layers": 12}, SupernetConfig(channels=36), 128),
        ("enas_micro", {"num_nodes": 5}, SupernetConfig(channels=20, num_cells=2), 128),
        ("nb201", {}, SupernetConfig(channels=16, num_cells=5), 64),
    ],
}


def measure(name: str, params: dict, config: SupernetConfig, batch: int, steps: int, device: torch.device,
            channels_last: bool) -> tuple[float, float, int]:
    space = build_space(name, **params)
    net = build_supernet(space, config, 3, 10).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    rng = np.random.default_rng(0)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(net(x, space.sample(rng)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    mem = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return steps * batch / elapsed, mem, sum(p.numel() for p in net.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} preset={args.preset} steps={args.steps}")
    print(f"{'space':<12}{'network':<34}{'batch':>6}{'params':>11}{'images/s':>11}{'peak MiB':>10}")
    for name, params, config, batch in PRESETS[args.preset]:
        rate, mem, n_params = measure(name, params, config, batch, args.steps, device, args.channels_last)
        desc = f"{params} C={config.channels} N={config.num_cells}"
        print(f"{name:<12}{desc:<34}{batch:>6}{n_params:>11,}{rate:>11.1f}{mem:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
