"""Supernet ranking quality: does shared-weight accuracy rank children as stand-alone training does?

1. A supernet trains for ``--epochs`` epochs on uniformly sampled children (the supernet phase of
   the search, ``SupernetPool``/``SupernetWorker``, one worker).
2. ``--children`` children drawn uniformly (seeded) are scored with the shared weights under every
   ``weight_sharing.scoring`` option worth comparing: the controller's reward (one minibatch per
   child as ENAS, several, the same minibatches for all children, batch norm re-calibrated) over
   ``--draws`` draws of minibatches, and the derivation's score on the whole validation split.
3. Each child is trained stand-alone with the retrain code (``raynas retrain``: a Ray Train
   ``TorchTrainer``) on a short schedule and scored on the test split. These results are kept in
   ``--cache`` (per setting), so a second run only trains the supernet again.
4. Printed: both accuracies per child; per scoring option Kendall's tau and Spearman's rho against
   the stand-alone accuracies (mean ± std over the draws) and the stand-alone rank of that
   option's top 3.

    python bench/ranking.py --data-dir ../shared/data/cifar10 [--space nb201] [--epochs 15] [--children 16]

Sized for a 2-core CPU (about 30 minutes with the defaults, 8 with the stand-alone results cached).

With ``--ground-truth FILE`` (NAS-Bench-201's stand-alone accuracies of cells, e.g.
``../shared/data/nb201-sample/cifar10_1000.json``) step 3 is replaced by the benchmark's 200-epoch
accuracies (``--truth-key``, default test): ``--children`` cells are drawn from the file (all of
them by default), and step 1-2 run once per ``--seeds`` supernet seed. Printed per scoring option:
Kendall tau, Spearman rho and the precision at the top 10% (the share of the supernet's top 10%
that is in the truth's top 10%), mean ± std over seeds and draws. The file is only measured
against, never searched with.

    python bench/ranking.py --data-dir ../shared/data/cifar10 --ground-truth ../shared/data/nb201-sample/cifar10_1000.json --seeds 3 --children 200

``--config PRESET`` trains and scores as that preset does (its supernet, data sizes, optimiser with its
cosine schedule, scoring: e.g. ``configs/nb201-ws-cpu.yaml`` with ``--epochs 18``, its warm-up);
``--score-at 6,12`` also scores after those epochs (the schedule is the preset's, not cut short);
``--only whole,same 2`` keeps the scoring options whose label contains one of the words (or is one);
``--sampling fair`` trains the supernet with every op of a decision equally often; ``--set KEY=VALUE``
changes the preset, ``--gpus-per-worker`` puts the supernet on a GPU.

``--few-shot-edge E --few-shot-at S`` adds few-shot NAS (Zhao et al. 2021) at the same compute: after S
epochs the supernet is copied into one sub-supernet per op of edge E, each trained on children with that
op on E for an equal share of the remaining epochs' steps (so S + the shares = ``--epochs``), and each
child is scored on the whole validation split by its own sub-supernet (row "few-shot …" at the last
epoch, beside the one-shot supernet trained all ``--epochs``).
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
from services.cli.common import parse_sets
from services.config import RetrainConfig, SpaceSection, load_config
from services.retrain import run_retrain
from supernet_worker.data import DataConfig
from supernet_worker.pool import SupernetPool
from supernet_worker.retrain import TrainSettings
from supernet_worker.supernets import SupernetConfig
from supernet_worker.worker import (
    SAMPLINGS, OptimConfig, ScoringConfig, SupernetWorker, WorkerSpec, data_parallel_plan,
)

CALIBRATION = 8  # training minibatches that re-estimate a child's batch-norm statistics
#: (label, scoring, whole validation split?) in the order printed
VARIANTS = [
    ("reward: 1 minibatch per child (ENAS)", ScoringConfig(), False),
    ("reward: 4 minibatches per child", ScoringConfig(reward_batches=4), False),
    ("reward: the same minibatch for all", ScoringConfig(same_batches=True), False),
    ("reward: the same 2 minibatches for all", ScoringConfig(reward_batches=2, same_batches=True), False),
    ("reward: the same 4 minibatches for all", ScoringConfig(reward_batches=4, same_batches=True), False),
    (f"reward: the same minibatch, BN re-calibrated ({CALIBRATION})",
     ScoringConfig(same_batches=True, bn_calibration_batches=CALIBRATION), False),
    ("whole validation split", ScoringConfig(), True),
    (f"whole validation split, BN re-calibrated ({CALIBRATION})", ScoringConfig(bn_calibration_batches=CALIBRATION),
     True),
]


def train_and_score(args, space, params, setup, seed: int, children: list[list[int]],
                    started: float) -> dict[int, dict[str, list[list[float]]]]:
    """Steps 1-2: a supernet trained on uniform (or fair) children (``seed``), then every scoring
    option after each of ``args.score_at`` epochs: {epoch: {label: [draws][children]}}."""
    net, data, optim = setup
    spec = WorkerSpec(space=args.space, space_params=params, supernet=net, data=data, optim=optim, seed=seed,
                      threads=2, sampling=args.sampling, drop_path=args.drop_path)
    pool = SupernetPool(spec, 1, num_gpus_per_worker=args.gpus_per_worker, num_cpus_per_worker=2)
    _, steps, _ = data_parallel_plan(optim, data.batch_size, 1, data.train_size)
    worker = pool.workers[0]
    scores: dict[int, dict[str, list[list[float]]]] = {}
    for epoch in range(1, args.epochs + 1):
        stats = pool.train(epoch * steps, steps)[0]
        print(f"seed {seed}: supernet epoch {epoch}/{args.epochs}: loss {stats['loss']:.3f} "
              f"acc {stats['accuracy']:.3f} [{time.time() - started:.0f}s]", flush=True)
        if epoch == args.few_shot_at:
            few_shot = few_shot_scores(args, spec, pool.get_state(), children, steps, started)
        if epoch not in args.score_at:
            continue
        scores[epoch] = {}
        for label, scoring, full in variants(args):
            ray.get(worker.set_scoring.remote(scoring))
            draws = 1 if full else args.draws
            scores[epoch][label] = [pool.evaluate(children, full=full, batch_seed=d if scoring.same_batches else None)
                                    for d in range(draws)]
            print(f"seed {seed}, epoch {epoch}: scored {len(children)} children: {label} "
                  f"[{time.time() - started:.0f}s]", flush=True)
    pool.shutdown()
    if args.few_shot_at:
        scores[args.epochs][few_shot_label(args)] = [few_shot]
    return scores


class EdgeFixedWorker(SupernetWorker):
    """A few-shot sub-supernet: trains only children whose decision ``edge`` is ``op``."""

    def __init__(self, spec: WorkerSpec, edge: int) -> None:
        super().__init__(spec, rank=0)
        self.edge, self.op = edge, 0

    def sample_archs(self, n: int) -> list[list[int]]:
        archs = super().sample_archs(n)
        for arch in archs:
            arch[self.edge] = self.op
        return archs


def few_shot_label(args) -> str:
    return f"few-shot: edge {args.few_shot_edge} split at epoch {args.few_shot_at}, whole split"


def few_shot_scores(args, spec: WorkerSpec, state: dict, children: list[list[int]], steps: int,
                    started: float) -> list[float]:
    """Each op of ``--few-shot-edge`` gets a copy of the supernet (``state``), trained for an equal
    share of the steps left to ``--epochs`` on children with that op, then scores its children."""
    worker = EdgeFixedWorker(spec, args.few_shot_edge)  # in the driver: one sub-supernet at a time
    ops = range(worker.space.decisions[args.few_shot_edge].num_choices)
    share = (args.epochs - args.few_shot_at) * steps // len(ops)
    scores: list[float | None] = [None] * len(children)
    for op in ops:
        worker.set_state(state["shared"], state["ranks"][0])
        worker.op = op
        stats = worker.train(args.few_shot_at * steps + share, steps)
        mine = [i for i, arch in enumerate(children) if arch[args.few_shot_edge] == op]
        for i, acc in zip(mine, worker.evaluate([children[i] for i in mine], full=True)):
            scores[i] = acc
        print(f"few-shot: sub-supernet {op} ({share} steps, loss {stats['loss']:.3f}) scored {len(mine)} children "
              f"[{time.time() - started:.0f}s]", flush=True)
    return [float(x) for x in scores]


def variants(args) -> list[tuple[str, ScoringConfig, bool]]:
    """The scoring options compared (``--only``), after the preset's own when ``--config`` names one."""
    labels = {v[0] for v in VARIANTS}
    chosen = [v for v in VARIANTS  # a word that is a whole label picks that one only
              if not args.only or any(v[0] == word or (word not in labels and word in v[0]) for word in args.only)]
    if args.preset_scoring is not None:
        chosen.insert(0, (f"reward: as {Path(args.config).name} scores", args.preset_scoring, False))
    return chosen


def standalone(args, space, params, data, children: list[list[int]], shared: list[float],
               started: float) -> list[float]:
    """Step 3: each child trained alone with the retrain code, cached per setting."""
    cache_file = Path(args.cache)
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    setting = (f"{args.space} {json.dumps(params)} data={args.data_dir or 'synthetic'} train={args.train_size} "
               f"channels={args.channels} epochs={args.child_epochs} seed={args.seed}")
    known = cache.setdefault(setting, {})
    work = Path(tempfile.mkdtemp(prefix="raynas-ranking-"))
    alone = []
    for i, arch in enumerate(children):
        name = space.to_string(arch)
        if name not in known:
            arch_file = work / f"child{i}.json"
            arch_file.write_text(json.dumps({"arch": name, "space": space.name, "space_params": params}))
            cfg = RetrainConfig(seed=args.seed, out=str(work / f"child{i}"), workers=1, cpus_per_worker=2,
                                space=SpaceSection(name=args.space, params=params),
                                supernet=SupernetConfig(channels=args.channels, num_cells=1,
                                                        bn_track_running_stats=True),
                                data=dataclasses.replace(data, augment=True),
                                train=TrainSettings(epochs=args.child_epochs, lr_max=0.05, lr_min=0.001)).validate()
            known[name] = float(run_retrain(cfg, arch_file)["test_accuracy"])
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            cache_file.write_text(json.dumps(cache, indent=1) + "\n")  # kept as they come
        alone.append(known[name])
        print(f"child {i + 1}/{len(children)} {name}: shared {shared[i]:.4f}  stand-alone {alone[-1]:.4f}  "
              f"[{time.time() - started:.0f}s]", flush=True)
    return alone


def precision_at_top(scores, truth, fraction: float = 0.1) -> float:
    """The share of the ``fraction`` best by ``scores`` that are among the ``fraction`` best by ``truth``."""
    k = max(1, round(fraction * len(truth)))
    top = set(np.argsort(-np.asarray(scores), kind="stable")[:k])
    return len(top & set(np.argsort(-np.asarray(truth), kind="stable")[:k])) / k


def setup(args, parser) -> tuple[SupernetConfig, DataConfig, OptimConfig]:
    """The supernet, data and optimiser: the preset's (``--config``) or the bench's own."""
    if args.config:
        overrides = parse_sets(args.set) | ({"data.data_dir": args.data_dir} if args.data_dir else {})
        cfg = load_config(args.config, overrides)
        if cfg.space.name != args.space:
            parser.error(f"{args.config} searches {cfg.space.name}, not --space {args.space}")
        args.preset_scoring = cfg.weight_sharing.scoring
        args.sampling = args.sampling or cfg.weight_sharing.sampling
        args.drop_path = cfg.weight_sharing.drop_path
        args.train_size, args.valid_size = cfg.data.train_size, cfg.data.valid_size
        return cfg.supernet, cfg.data, cfg.optim
    args.preset_scoring = None
    args.sampling = args.sampling or "uniform"
    args.drop_path = 0.0
    net = SupernetConfig(channels=args.channels, num_cells=1)
    optim = OptimConfig(lr_max=0.05, lr_min=0.001, restart_period=args.epochs, restart_mult=1)
    data = (DataConfig(source="auto", data_dir=args.data_dir, train_size=args.train_size, valid_size=args.valid_size,
                       batch_size=64, eval_batch_size=100)
            if args.data_dir else DataConfig(source="synthetic", synthetic_train=args.train_size + args.valid_size,
                                             synthetic_test=1000, train_size=args.train_size,
                                             valid_size=args.valid_size, batch_size=64, eval_batch_size=100))
    return net, data, optim


def print_table(label_scores: list[dict[str, list[list[float]]]], labels: list[str], truth: list[float],
                n_children: int) -> None:
    """Per scoring option: tau, rho, precision@10% (mean ± std over seeds and draws), the truth's
    rank of the option's top 3 (first seed) and the reward's noise relative to the children's spread."""
    alone_rank = {i: r + 1 for r, i in enumerate(np.argsort(truth)[::-1])}
    print(f"{'scoring':<58} {'Kendall tau':>16} {'Spearman rho':>16} {'precision@10%':>16}  "
          "truth's rank of its top 3  noise/spread")
    for label in labels:
        draws = [d for scores in label_scores for d in scores[label]]
        taus = [kendalltau(d, truth).statistic for d in draws]
        rhos = [spearmanr(d, truth).statistic for d in draws]
        precisions = [precision_at_top(d, truth) for d in draws]
        first = label_scores[0][label]
        mean = np.mean(first, axis=0)  # top 3 by the first seed's average over its draws
        top3 = ", ".join(f"#{alone_rank[i]}" for i in np.argsort(-mean, kind="stable")[:3])
        # how much of a reward is the draw of minibatches: a child's std over the draws (mean over
        # children), relative to the spread of the children's mean rewards
        noise = np.std(first, axis=0).mean() / np.std(mean) if len(first) > 1 else 0.0
        print(f"{label:<58} {np.mean(taus):>7.3f} ± {np.std(taus):<6.3f} {np.mean(rhos):>7.3f} ± {np.std(rhos):<6.3f}"
              f" {np.mean(precisions):>7.3f} ± {np.std(precisions):<6.3f}  {top3 + f' of {n_children}':<25} "
              f"{noise:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 (arrays or torchvision); default: generated")
    parser.add_argument("--space", default="nb201", choices=["nb201", "enas_macro", "enas_micro"])
    parser.add_argument("--epochs", type=int, default=15, help="supernet epochs (uniform sampling)")
    parser.add_argument("--children", type=int, default=None, help="default 16; with --ground-truth: all its cells")
    parser.add_argument("--child-epochs", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--valid-size", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="supernets trained (seeds seed, seed+1, ...)")
    parser.add_argument("--draws", type=int, default=10, help="draws of reward minibatches per scoring option")
    parser.add_argument("--cache", default="runs/ranking/standalone.json", help="stand-alone results per setting")
    parser.add_argument("--ground-truth", default=None, help="a table of stand-alone accuracies (nb201 cells)")
    parser.add_argument("--truth-key", default="test")
    parser.add_argument("--config", default=None, help="train and score as this search preset does")
    parser.add_argument("--score-at", default="", help="also score after these epochs (comma-separated)")
    parser.add_argument("--only", default="", help="scoring options whose label contains one of these (commas)")
    parser.add_argument("--sampling", choices=SAMPLINGS,
                        help="children the supernet trains on (default: --config's, else uniform)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="with --config: override a key")
    parser.add_argument("--gpus-per-worker", type=float, default=0.0, help="the supernet worker's GPU share")
    parser.add_argument("--few-shot-edge", type=int, default=0, help="the decision few-shot splits on")
    parser.add_argument("--few-shot-at", type=int, default=0, help="split after this epoch (0: no few-shot row)")
    args = parser.parse_args()
    args.score_at = sorted({int(e) for e in args.score_at.split(",") if e} | {args.epochs})
    if args.score_at[0] < 1 or args.score_at[-1] > args.epochs:
        parser.error(f"--score-at: epochs between 1 and --epochs ({args.epochs}), got {args.score_at}")
    args.only = [w for w in args.only.split(",") if w]
    if args.few_shot_at and not 0 < args.few_shot_at < args.epochs:
        parser.error(f"--few-shot-at: an epoch before --epochs ({args.epochs}), got {args.few_shot_at}")
    if args.few_shot_at and args.gpus_per_worker:
        parser.error("--few-shot-at trains its sub-supernets in this process, on its CPU: leave --gpus-per-worker out")
    params = {"num_layers": 4} if args.space == "enas_macro" else {"num_nodes": 3} if args.space == "enas_micro" else {}
    space = build_space(args.space, **params)
    if not 0 <= args.few_shot_edge < space.num_decisions:
        parser.error(f"--few-shot-edge: a decision of {args.space} (0-{space.num_decisions - 1}), got {args.few_shot_edge}")
    if args.set and not args.config:
        parser.error("--set overrides keys of --config's preset")
    net, data, optim = setup(args, parser)
    if args.config and not args.ground_truth:
        parser.error("--config measures against --ground-truth (the stand-alone retraining uses the bench's sizes)")
    truth = None
    if args.ground_truth:
        if args.space != "nb201":
            parser.error("--ground-truth holds NAS-Bench-201 cells: use --space nb201")
        table = json.loads(Path(args.ground_truth).read_text())
        names = sorted(table)
        if args.children:
            names = [names[i] for i in np.random.default_rng(args.seed).permutation(len(names))[:args.children]]
        children = [space.from_string(n) for n in names]
        truth = [float(table[n][args.truth_key]) for n in names]
    else:
        children = space.sample_batch(np.random.default_rng(args.seed + 1), args.children or 16).tolist()
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False)  # Ray Train needs the dashboard
    started = time.time()
    per_seed = [train_and_score(args, space, params, (net, data, optim), args.seed + i, children, started)
                for i in range(args.seeds)]
    final = [scores[args.epochs] for scores in per_seed]
    if truth is None:
        truth = standalone(args, space, params, data, children, final[0]["whole validation split"][0], started)
        what = f"stand-alone {args.child_epochs} epochs on {args.train_size} images"
    else:
        what = f"NAS-Bench-201's 200-epoch {args.truth_key} accuracy ({args.ground_truth})"
    ray.shutdown()

    labels = [label for label, _, _ in variants(args)] + ([few_shot_label(args)] if args.few_shot_at else [])
    how = f"as {args.config}" if args.config else f"{net.channels} channels, {data.train_size} training images"
    dropped = f", path dropout {args.drop_path}" if args.drop_path else ""
    print(f"\n{args.space}: supernet {args.epochs} epochs ({args.sampling} sampling{dropped}; {how}) x "
          f"{args.seeds} seed(s), {len(children)} children against {what}; rewards over {args.draws} draws of "
          f"{data.eval_batch_size}-image minibatches; mean ± std over seeds and draws")
    for epoch in args.score_at:
        print(f"\nafter {epoch} of {args.epochs} epochs:")
        print_table([scores[epoch] for scores in per_seed], labels, truth, len(children))
    whole = [label for label in labels if label.startswith("whole validation split")]
    if whole:
        shared = final[0][whole[0]][0]
        print(f"shared-weight accuracy ({whole[0]}) {np.mean(shared):.3f} ± {np.std(shared):.3f}, truth "
              f"{np.mean(truth):.3f} ± {np.std(truth):.3f}  [{time.time() - started:.0f}s]")

if __name__ == "__main__":
    main()
