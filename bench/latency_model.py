"""How well a latency table predicts a child's latency: predicted (the table's op times + its fixed
part) against measured end-to-end, for ``--children`` random children of the table's skeleton:
torch on the table's device, and the child exported to ONNX under onnxruntime on CPU (same thread
count). Printed: Pearson r, the mean absolute % error, and the worst children.

    python bench/latency_model.py --table lut.json [--children 30] [--repeats 50] [--no-onnx]

Make the table first on the same quiet machine, e.g.
    raynas profile --space nb201 --set supernet.num_cells=5 --threads 1 --out runs/lut-nb201-cpu.json
(a busy machine times noise: run this several times and report the spread).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from controller_policy.spaces import build_space
from supernet_worker.costs import CostModel
from supernet_worker.latency import Timing, measure_child, time_call
from supernet_worker.latency_table import LatencyTable
from supernet_worker.supernets import build_child


def onnx_latency(skeleton, arch, timing: Timing, threads: int, work: Path) -> float:
    """Median ms of the child exported to ONNX, under onnxruntime on CPU."""
    import onnxruntime as ort

    from supernet_worker.export import export_classifier

    space = build_space(skeleton.space, **skeleton.space_params)
    child = build_child(space, arch, skeleton.supernet, skeleton.in_channels, skeleton.num_classes).eval()
    example = torch.randn(timing.batch, skeleton.in_channels, skeleton.image_size, skeleton.image_size)
    path = export_classifier(child, example, "onnx", work / "child.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: example.numpy()}
    return time_call(lambda: session.run(None, feed), timing, "cpu")


def report(name: str, predicted: np.ndarray, measured: np.ndarray, labels: list[str]) -> None:
    r = float(np.corrcoef(predicted, measured)[0, 1])
    error = np.abs(predicted - measured) / measured * 100
    print(f"{name}: Pearson r {r:.3f}; mean absolute error {error.mean():.1f} % (median {np.median(error):.1f} %, "
          f"max {error.max():.1f} %); measured {measured.min():.3f}-{measured.max():.3f} ms, predicted "
          f"{predicted.min():.3f}-{predicted.max():.3f} ms")
    for i in np.argsort(-error)[:3]:
        print(f"   worst: {labels[i]}  predicted {predicted[i]:.3f} ms, measured {measured[i]:.3f} ms "
              f"({error[i]:.0f} %)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True, help="a latency table written by raynas profile")
    parser.add_argument("--children", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-onnx", action="store_true", help="torch only")
    args = parser.parse_args()
    table = LatencyTable(args.table)
    skeleton, device = table.skeleton(), table.data["device"]
    threads = table.data["timing"]["threads"] or torch.get_num_threads()
    torch.set_num_threads(threads)
    timing = Timing(warmup=10, repeats=args.repeats)
    space = build_space(skeleton.space, **skeleton.space_params)
    costs = CostModel(skeleton, table)
    archs = space.sample_batch(np.random.default_rng(args.seed), args.children).tolist()
    labels = [space.to_string(a) for a in archs]
    started = time.time()
    predicted = np.array([costs(a)["latency_ms"] for a in archs])
    measured = np.array([measure_child(skeleton, a, device, timing) for a in archs])
    print(f"{len(archs)} random {skeleton.space} children, {skeleton.supernet.channels} filters, "
          f"{skeleton.supernet.num_cells} cell(s) per stage, {skeleton.in_channels}x{skeleton.image_size}"
          f"x{skeleton.image_size} input, batch 1, {threads} thread(s); table {args.table} "
          f"({table.data['device_name']}, fixed part {table.data['fixed_ms']:.3f} ms)  [{time.time() - started:.0f}s]")
    report(f"torch ({device})", predicted, measured, labels)
    if not args.no_onnx:
        with tempfile.TemporaryDirectory() as tmp:
            onnx = np.array([onnx_latency(skeleton, a, timing, threads, Path(tmp)) for a in archs])
        report("onnxruntime (cpu), predicted from the torch table", predicted, onnx, labels)
        scale = float(np.median(onnx / predicted))
        report(f"onnxruntime (cpu), the torch table scaled by its median ratio {scale:.2f}", predicted * scale, onnx,
               labels)
    print(json.dumps({"children": len(archs), "seconds": round(time.time() - started, 1)}))


if __name__ == "__main__":
    main()
