"""Supernet-worker scaling: training images/s and architectures evaluated/s with 1..N workers.

Training runs each data-parallel rule (``optim.data_parallel``): ``split_batch`` keeps the
global minibatch (each of K ranks takes batch / K images per step), ``scale_lr`` gives every
rank a full minibatch. Either way each rank trains on its own disjoint shard of the epoch.
Evaluations are sent as one batch spread over all workers (how the search scores an
iteration's children) and, for comparison, one blocking call per architecture.

    python bench/scaling.py --workers 1 2                         # CPU here
    python bench/scaling.py --workers 1 2 4 --gpus-per-worker 1   # GPU cluster
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import ray

from controller_policy import build_space
from supernet_worker.data import DataConfig
from supernet_worker.pool import SupernetPool
from supernet_worker.supernets import SupernetConfig
from supernet_worker.settings import DATA_PARALLEL_RULES
from supernet_worker.worker import OptimConfig, WorkerSpec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--data-dir", default=None, help="arrays/CIFAR-10 directory (default: generated data)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--archs", type=int, default=64)
    parser.add_argument("--rules", nargs="+", default=list(DATA_PARALLEL_RULES), choices=DATA_PARALLEL_RULES)
    parser.add_argument("--address", default=None)
    args = parser.parse_args()
    ray.init(address=args.address, include_dashboard=False, log_to_driver=False) if args.address else ray.init(
        num_cpus=max(2, int(max(args.workers) * args.cpus_per_worker)), include_dashboard=False, log_to_driver=False)
    data = (DataConfig(source="auto", data_dir=args.data_dir, train_size=5000, valid_size=1000)
            if args.data_dir else DataConfig(source="synthetic", synthetic_train=6000, synthetic_test=100,
                                             train_size=5000, valid_size=1000))
    data.batch_size, data.eval_batch_size = args.batch_size, 128
    space = build_space("enas_macro", num_layers=args.layers)
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(args.archs)]
    print(f"enas_macro L={args.layers} C={args.channels} batch {args.batch_size}, "
          f"{args.gpus_per_worker:g} GPU and {args.cpus_per_worker:g} CPU per worker")
    print(f"{'workers':>8}{'rule':>13}{'train images/s':>18}{'archs/s (batched)':>20}{'archs/s (1 call each)':>24}")
    base = None
    for n in args.workers:
        for rule in args.rules if n > 1 else args.rules[:1]:
            spec = WorkerSpec(space="enas_macro", space_params={"num_layers": args.layers},
                              supernet=SupernetConfig(channels=args.channels), data=data,
                              optim=OptimConfig(data_parallel=rule), threads=max(1, int(args.cpus_per_worker)))
            pool = SupernetPool(spec, n, args.gpus_per_worker, args.cpus_per_worker)
            try:
                pool.train(3, args.steps)  # warm-up
                start = time.perf_counter()
                stats = pool.train(3 + args.steps, args.steps)
                train_rate = sum(s["images"] for s in stats) / (time.perf_counter() - start)
                pool.evaluate(archs[:n])
                start = time.perf_counter()
                pool.evaluate(archs)
                batched = len(archs) / (time.perf_counter() - start)
                start = time.perf_counter()
                for arch in archs[:16]:
                    pool.evaluate([arch])
                single = 16 / (time.perf_counter() - start)
            finally:
                pool.shutdown()
            base = base or (train_rate, batched)
            print(f"{n:>8}{rule if n > 1 else '-':>13}{train_rate:>13.0f} ({train_rate / base[0]:.2f}x)"
                  f"{batched:>13.1f} ({batched / base[1]:.2f}x){single:>20.1f}", flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
