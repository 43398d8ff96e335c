"""Latency lookup tables: every candidate op of a supernet timed on the target device, so that a
child's latency is predicted without running it (``raynas profile``; ``bench/latency_model.py``
measures how good the prediction is).

A child's predicted latency = the sum of its chosen ops' times + a fixed part. The ops are the
supernet's modules that not every child holds (nb201: each edge's op; macro: each layer's op, its
skip convolutions and the reductions they need; micro: each node's ops and the cell's output
convolutions), each timed alone on the input shape it gets in the network. The fixed part (stem,
reductions, head, and the glue no module owns: ReLUs, sums, concatenations, Python overhead) is
fitted: the median over a few children of their measured latency minus their ops' sum.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from controller_policy.spaces import build_space

from .latency_table import LATENCY_FORMAT
from .settings import DEVICES, Skeleton
from .supernets import build_child, build_supernet

ROUNDS = 2  # passes over all ops while profiling


@dataclass
class Timing:
    warmup: int = 10
    repeats: int = 50
    batch: int = 1
    threads: int | None = None  # torch CPU threads while timing (None: torch's default)


def time_call(fn: Callable[[], Any], timing: Timing, device: str) -> float:
    """Median milliseconds of ``fn()`` over ``timing.repeats`` calls after ``timing.warmup``."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(timing.warmup):
        fn()
    sync()
    times = []
    for _ in range(timing.repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def choice_modules(net: nn.Module, space, skeleton: Skeleton, samples: int = 64) -> set[str]:
    """The outermost modules of ``net`` (a supernet) that some child lacks: the ones a choice adds."""
    everywhere: set[str] | None = None
    rng = np.random.default_rng(0)
    for arch in space.sample_balanced(rng, samples).tolist():
        with torch.device("meta"):
            names = {n for n, _ in build_child(space, arch, skeleton.supernet, skeleton.in_channels,
                                               skeleton.num_classes).named_modules()}
        everywhere = names if everywhere is None else everywhere & names
    variable = {n for n, _ in net.named_modules() if n and n not in everywhere}
    return {n for n in variable if not any(n.startswith(v + ".") for v in variable)}


def profile(skeleton: Skeleton, device: str = "cpu", timing: Timing = Timing(), fit_children: int = 10,
            seed: int = 0, log: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """The latency table of ``skeleton`` on ``device`` (see the module docstring)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: no CUDA device is visible here")
    if timing.threads:
        torch.set_num_threads(timing.threads)
    torch.manual_seed(seed)
    space = build_space(skeleton.space, **skeleton.space_params)
    net = build_supernet(space, skeleton.supernet, skeleton.in_channels, skeleton.num_classes).to(device).eval()
    ops = choice_modules(net, space, skeleton)
    modules = dict(net.named_modules())
    inputs: dict[str, Tensor] = {}  # each op's input, recorded in forward passes of children
    hooks = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: inputs.setdefault(name, i[0].detach().clone())) for name in ops]
    image = torch.randn(timing.batch, skeleton.in_channels, skeleton.image_size, skeleton.image_size, device=device)
    rng = np.random.default_rng(seed)
    with torch.inference_mode():
        for _ in range(200):
            for arch in space.sample_balanced(rng, space.max_choices).tolist():
                net(image, arch)
            if len(inputs) == len(ops):
                break
    for hook in hooks:
        hook.remove()
    # every op timed in ROUNDS passes over all of them, the fastest pass's median kept: a burst of
    # load elsewhere on the machine then spoils one pass of an op, not its entry
    table: dict[str, float] = {}
    with torch.inference_mode():
        for round_ in range(ROUNDS):
            for name in sorted(inputs):
                module, x = modules[name], inputs[name]
                ms = time_call(lambda: module(x), timing, device)
                table[name] = min(ms, table.get(name, ms))
            log(f"timed {len(inputs)} ops (pass {round_ + 1} of {ROUNDS})")
    # the fixed part, fitted on children measured whole
    residuals = []
    for arch in space.sample_batch(np.random.default_rng(seed + 1), fit_children).tolist():
        measured = measure_child(skeleton, arch, device, timing)
        residuals.append(measured - sum(table[n] for n in child_ops(skeleton, space, arch, table)))
    return {
        "format": LATENCY_FORMAT, **skeleton.describe(), "device": device, "device_name": device_name(device),
        "timing": asdict(timing) | {"threads": torch.get_num_threads() if device == "cpu" else None},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "ops_ms": table, "fixed_ms": float(statistics.median(residuals)),
        # ops no sampled child used (micro: a cell input's output convolution, which no child has)
        "untimed": sorted(set(ops) - set(inputs)),
        "fit": {"children": fit_children, "residuals_ms": residuals},
    }


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} ({platform.system()})"


def child_ops(skeleton: Skeleton, space, arch: Sequence[int], table: dict[str, float]) -> list[str]:
    """The ops of the latency table that child ``arch`` holds."""
    with torch.device("meta"):
        child = build_child(space, arch, skeleton.supernet, skeleton.in_channels, skeleton.num_classes)
    return [name for name, _ in child.named_modules() if name in table]


def measure_child(skeleton: Skeleton, arch: Sequence[int], device: str, timing: Timing) -> float:
    """Milliseconds of one forward pass of child ``arch`` (a network of its own): the fastest of
    ROUNDS medians, as the ops are timed."""
    space = build_space(skeleton.space, **skeleton.space_params)
    child = build_child(space, arch, skeleton.supernet, skeleton.in_channels, skeleton.num_classes).to(device).eval()
    image = torch.randn(timing.batch, skeleton.in_channels, skeleton.image_size, skeleton.image_size, device=device)
    with torch.inference_mode():
        return min(time_call(lambda: child(image), timing, device) for _ in range(ROUNDS))
