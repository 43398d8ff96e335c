"""Supernet ranking quality: does shared-weight accuracy rank children as stand-alone training does?

1. A supernet trains for ``--epochs`` epochs on uniformly sampled children (the supernet phase of
   the search, ``SupernetPool``/``SupernetWorker``, one worker).
2. ``--children`` children drawn uniformly (seeded) are scored with the shared weights on the
   whole validation split (as the derivation scores them).
3. Each child is trained stand-alone with the retrain code (``raynas retrain``: a Ray Train
   ``TorchTrainer``) on a short schedule and scored on the test split.
4. Printed: both accuracies per child, Kendall's tau and Spearman's rho between them, and the
   stand-alone rank of the supernet's top 3.

    python bench/ranking.py --data-dir ../shared/data/cifar10 [--space nb201] [--epochs 15] [--children 16]

Sized for a 2-core CPU (about 25 minutes with the defaults).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
from scipy.stats import kendalltau, spearmanr

from controller_policy.spaces import build_space
from services.config import RetrainConfig, SpaceSection
from services.retrain import run_retrain
from supernet_worker.data import DataConfig
from supernet_worker.pool import SupernetPool
from supernet_worker.retrain import TrainSettings
from supernet_worker.supernets import SupernetConfig
from supernet_worker.worker import OptimConfig, WorkerSpec, data_parallel_plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 (arrays or torchvision); default: generated")
    parser.add_argument("--space", default="nb201", choices=["nb201", "enas_macro", "enas_micro"])
    parser.add_argument("--epochs", type=int, default=15, help="supernet epochs (uniform sampling)")
    parser.add_argument("--children", type=int, default=16)
    parser.add_argument("--child-epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--valid-size", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    params = {"num_layers": 4} if args.space == "enas_macro" else {"num_nodes": 3} if args.space == "enas_micro" else {}
    space = build_space(args.space, **params)
    data = (DataConfig(source="auto", data_dir=args.data_dir, train_size=args.train_size, valid_size=args.valid_size,
                       batch_size=64, eval_batch_size=250)
            if args.data_dir else DataConfig(source="synthetic", synthetic_train=args.train_size + args.valid_size,
                                             synthetic_test=1000, train_size=args.train_size,
                                             valid_size=args.valid_size, batch_size=64, eval_batch_size=250))
    net = SupernetConfig(channels=args.channels, num_cells=1)
    optim = OptimConfig(lr_max=0.05, lr_min=0.001, restart_period=args.epochs, restart_mult=1)
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)  # Ray Train needs the dashboard
    started = time.time()

    spec = WorkerSpec(space=args.space, space_params=params, supernet=net, data=data, optim=optim, seed=args.seed,
                      threads=2)
    pool = SupernetPool(spec, 1, num_cpus_per_worker=2)
    _, steps, _ = data_parallel_plan(optim, data.batch_size, 1, args.train_size)
    for epoch in range(args.epochs):
        stats = pool.train((epoch + 1) * steps, steps)[0]
        print(f"supernet epoch {epoch + 1}/{args.epochs}: loss {stats['loss']:.3f} acc {stats['accuracy']:.3f} "
              f"[{time.time() - started:.0f}s]", flush=True)
    children = space.sample_batch(np.random.default_rng(args.seed + 1), args.children).tolist()
    shared = pool.evaluate(children, full=True)
    pool.shutdown()

    work = Path(tempfile.mkdtemp(prefix="raynas-ranking-"))
    alone = []
    for i, arch in enumerate(children):
        arch_file = work / f"child{i}.json"
        arch_file.write_text(json.dumps({"arch": space.to_string(arch), "space": space.name, "space_params": params}))
        cfg = RetrainConfig(seed=args.seed, out=str(work / f"child{i}"), workers=1, cpus_per_worker=2,
                            space=SpaceSection(name=args.space, params=params),
                            supernet=SupernetConfig(channels=args.channels, num_cells=1, bn_track_running_stats=True),
                            data=dataclasses.replace(data, augment=True),
                            train=TrainSettings(epochs=args.child_epochs, lr_max=0.05, lr_min=0.001)).validate()
        alone.append(float(run_retrain(cfg, arch_file)["test_accuracy"]))
        print(f"child {i + 1}/{len(children)} {space.to_string(arch)}: shared {shared[i]:.4f}  "
              f"stand-alone {alone[-1]:.4f}  [{time.time() - started:.0f}s]", flush=True)
    ray.shutdown()

    tau, rho = kendalltau(shared, alone), spearmanr(shared, alone)
    alone_rank = {i: r + 1 for r, i in enumerate(np.argsort(alone)[::-1])}
    top3 = np.argsort(shared)[::-1][:3]
    print(f"\n{args.space}: supernet {args.epochs} epochs (uniform sampling), {args.children} uniform children, "
          f"stand-alone {args.child_epochs} epochs on {args.train_size} images")
    print(f"Kendall tau {tau.statistic:.3f} (p {tau.pvalue:.2g})   Spearman rho {rho.statistic:.3f} (p {rho.pvalue:.2g})")
    print("stand-alone rank of the supernet's top 3: "
          + ", ".join(f"#{alone_rank[i]} of {len(children)}" for i in top3))
    print(f"shared-weight accuracy {np.mean(shared):.3f} ± {np.std(shared):.3f}, stand-alone {np.mean(alone):.3f} ± "
          f"{np.std(alone):.3f}  [{time.time() - started:.0f}s]")


if __name__ == "__main__":
    main()
