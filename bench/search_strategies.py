"""PPO vs REINFORCE vs regularised evolution vs random search on generated NAS-Bench-201-shaped tables.

Each seed draws its own landscape (``controller_policy.landscapes.nb201_landscape``; seeds 0-99
are the reporting landscapes, ``bench/tune_controllers.py`` tunes on 1000+) and seeds every
algorithm. Every algorithm runs through the real harness (``raynas search`` with a table
evaluator) with its shipped defaults, one run per (algorithm, seed, budget mode) at the largest
budget; smaller budgets read the same run's prefix (sampling is sequential and seeded, so the
prefix is what a shorter run would do). Two budget conventions:

- ``all``: every evaluation counts, repeats included;
- ``unique``: a repeated architecture is answered from a cache and spends no budget.

    python bench/search_strategies.py --seeds 10 --budgets 50 100 200 500 --plot bench/search_strategies.png
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import ray
import torch

from controller_policy.landscapes import nb201_landscape
from landscape_search import best_curve, rank_of

ALGOS = ["ppo", "reinforce", "rea", "random"]
MODES = ["all", "unique"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    parser.add_argument("--modes", nargs="+", default=MODES, choices=MODES)
    parser.add_argument("--plot", default="bench/search_strategies.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    budget = max(args.budgets)
    curves = {(a, m): [] for a in args.algos for m in args.modes}
    ranks = {(a, m): [] for a in args.algos for m in args.modes}  # per run: rank of the best found at each budget
    work = Path(tempfile.mkdtemp(prefix="raynas-bench-"))
    started = time.time()
    for seed in range(args.seeds):
        table = nb201_landscape(seed)
        table_path = work / f"table{seed}.json"
        table_path.write_text(json.dumps(table))
        values = np.array([m["valid"] for m in table.values()])
        optimum = values.max()
        for mode in args.modes:
            for algo in args.algos:
                best = best_curve(algo, table_path, budget, seed, budget_mode=mode)
                curves[algo, mode].append(best / optimum)  # 1.0 is the landscape's optimum
                ranks[algo, mode].append([rank_of(values, best[b - 1]) for b in args.budgets])
                print(f"  seed {seed} {mode:<6} {algo:<10} best@{budget} {best[-1]:.3f} (optimum {optimum:.3f})  "
                      f"[{time.time() - started:.0f}s]", flush=True)
    for mode in args.modes:
        print(f"\nbudget mode '{mode}': best reward found / landscape optimum, mean ± std over {args.seeds} "
              f"landscapes (nb201-shaped, seeds 0-{args.seeds - 1})")
        print(f"{'algorithm':<12}" + "".join(f"{'@' + str(b):>18}" for b in args.budgets))
        for algo in args.algos:
            c = np.stack(curves[algo, mode])
            print(f"{algo:<12}" + "".join(f"{c[:, b - 1].mean():>10.4f} ± {c[:, b - 1].std():.4f}" for b in args.budgets))
        print("rank of the best architecture found among the 15,625 (1 = optimum), median [min-max] over landscapes")
        print(f"{'algorithm':<12}" + "".join(f"{'@' + str(b):>18}" for b in args.budgets))
        for algo in args.algos:
            r = np.array(ranks[algo, mode])
            print(f"{algo:<12}" + "".join(f"{np.median(r[:, i]):>10.0f} [{r[:, i].min()}-{r[:, i].max()}]"
                                          for i in range(len(args.budgets))))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.modes), figsize=(6.5 * len(args.modes), 4.5), squeeze=False)
    x = np.arange(1, budget + 1)
    for ax, mode in zip(axes[0], args.modes):
        for algo in args.algos:
            c = np.stack(curves[algo, mode])
            ax.plot(x, c.mean(0), label=algo)
            ax.fill_between(x, c.mean(0) - c.std(0), c.mean(0) + c.std(0), alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("architectures evaluated" + (" (repeats free)" if mode == "unique" else ""))
        ax.set_ylabel("best reward / optimum")
        ax.set_title(f"budget mode '{mode}', {args.seeds} landscapes (mean ± std)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")
    ray.shutdown()


if __name__ == "__main__":
    main()
