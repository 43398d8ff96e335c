"""Equal tuning budgets for every search algorithm, done with Ray Tune.

PPO, REINFORCE and REA each get the same number of Tune trials, drawn by the same search
algorithm (Tune's random search over each algorithm's own space, below) with the same budget per
trial: one search of ``--budget`` evaluations on each of the tuning landscapes. A trial's score is
the mean, over those landscapes and over the budgets 100 and 200 (the ones the comparison is
judged at), of -log10(rank of the best architecture found among the landscape's 15,625): 0 is the
optimum, -1 the 10th best, -2 the 100th. (Best reward / optimum saturates near 0.99 for every
algorithm, random search included, so it cannot tell settings apart.) The tuning landscapes
(seeds 1000+) are disjoint from the ones ``bench/search_strategies.py`` reports (seeds 0-99).
Random search has nothing to tune.

    python bench/tune_controllers.py [--trials 16] [--landscapes 4] [--budget 200]

Prints each algorithm's best setting with its score; the shipped defaults come from that table.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import ray
from ray import tune

from controller_policy.landscapes import nb201_landscape
from landscape_search import best_curve, rank_of

TUNING_SEEDS = 1000  # landscapes 1000, 1001, ...: never reported by bench/search_strategies.py
SCORED_BUDGETS = (100, 200)

SPACES = {
    # num_epochs x minibatches <= 8 gradient passes per iteration: the controller's time budget at
    # paper scale (bench/controller_throughput.py: <= 10 ms per macro-12 architecture)
    "ppo": {"lr": tune.loguniform(1e-3, 3e-2), "entropy_coeff": tune.loguniform(1e-3, 1e-1),
            "clip_param": tune.choice([0.1, 0.2, 0.3]),
            "passes": tune.choice([(2, 1), (2, 2), (2, 4), (4, 1), (4, 2), (8, 1)]),
            "episodes_per_iteration": tune.choice([4, 8, 16])},
    "reinforce": {"lr": tune.loguniform(1e-3, 1e-1), "entropy_coeff": tune.loguniform(1e-4, 1e-1),
                  "baseline_decay": tune.choice([0.8, 0.9, 0.95, 0.99]),
                  "episodes_per_iteration": tune.choice([4, 8, 16])},
    "rea": {"population_size": tune.choice([5, 10, 20, 50]),
            "tournament_size": tune.sample_from(lambda spec: int(np.random.choice(
                [s for s in (2, 3, 5, 10) if s <= spec.config.setting.population_size]))),
            "episodes_per_iteration": tune.choice([4, 8, 16])},
}


def trial(config: dict) -> None:
    import torch

    torch.set_num_threads(1)
    setting = dict(config["setting"])
    if "passes" in setting:  # PPO: (num_epochs, minibatches)
        setting["num_epochs"], setting["minibatches"] = setting.pop("passes")
    scores = []
    for i, table in enumerate(config["landscapes"]):
        best = best_curve(config["algo"], table, config["budget"], seed=i, setting=setting)
        values = np.array([m["valid"] for m in json.loads(Path(table).read_text()).values()])
        scores += [-np.log10(rank_of(values, best[b - 1])) for b in SCORED_BUDGETS if b <= len(best)]
    tune.report({"score": float(np.mean(scores))})



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="Tune trials per algorithm (the same for all)")
    parser.add_argument("--landscapes", type=int, default=4)
    parser.add_argument("--budget", type=int, default=max(SCORED_BUDGETS))
    parser.add_argument("--algos", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--out", default=None, help="where to write the winners as JSON")
    args = parser.parse_args()
    # Trials import landscape_search.py from this folder.
    bench = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(p for p in (bench, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    work = Path(tempfile.mkdtemp(prefix="raynas-tune-"))
    landscapes = []
    for seed in range(TUNING_SEEDS, TUNING_SEEDS + args.landscapes):
        table = nb201_landscape(seed)
        path = work / f"landscape{seed}.json"
        path.write_text(json.dumps(table))
        landscapes.append(str(path))
    winners = {}
    print(f"{args.trials} Tune trials per algorithm (random search), {args.landscapes} tuning landscapes "
          f"(seeds {TUNING_SEEDS}-{TUNING_SEEDS + args.landscapes - 1}), budget {args.budget} per search; "
          f"score = mean -log10(rank of the best found) at {', '.join(map(str, SCORED_BUDGETS))} evaluations")
    for algo in args.algos:
        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": 1}),
            param_space={"algo": algo, "setting": SPACES[algo], "landscapes": landscapes, "budget": args.budget},
            tune_config=tune.TuneConfig(num_samples=args.trials, metric="score", mode="max"),
            run_config=tune.RunConfig(storage_path=str(work / "tune"), name=algo, verbose=0),
        )
        grid = tuner.fit()
        if grid.errors:
            raise RuntimeError(f"{algo}: {len(grid.errors)} trials failed; first: {grid.errors[0]}")
        scores = sorted((r.metrics["score"] for r in grid), reverse=True)
        best = grid.get_best_result()
        winners[algo] = {"setting": best.config["setting"], "score": best.metrics["score"],
                         "median_trial_score": float(np.median(scores))}
        print(f"{algo:<10} best {best.metrics['score']:.4f} (median trial {np.median(scores):.4f})  "
              f"{json.dumps(best.config['setting'])}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(winners, indent=2) + "\n")
        print(f"winners: {args.out}")
    ray.shutdown()


if __name__ == "__main__":
    main()
