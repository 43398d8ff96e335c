"""PPO vs REINFORCE vs regularised evolution vs random search on NAS-Bench-201 tables.

Every algorithm runs through the real harness (``raynas search`` with a table evaluator) with its
shipped defaults, one run per (algorithm, seed, budget mode) at the largest budget; smaller budgets
read the same run's prefix (sampling is sequential and seeded, so the prefix is what a shorter run
would do). The real table (default: NAS-Bench-201's ImageNet16-120 table in
``../shared/data/nb201-imagenet16``) is searched with seeds 0..N-1; ``bench/tune_controllers.py``
tuned on seeds 1000+, so these runs were never tuned on. ``--landscapes N`` adds N generated
NAS-Bench-201-shaped landscapes (seeds 0..N-1) as a second opinion. Reward = ``valid``; the figure
is the ``test`` accuracy of the best-by-reward cell (what a user gets), mean ± std over seeds, and
the rank of the best-by-reward cell's reward among the table's 15,625 (1 = optimum), median [min-max].
With ``--noise N`` the searches see every reward through Gaussian noise of N x the table's reward
spread, with tanh 2.5 (a supernet's one-minibatch rewards, as the weight-sharing presets see them;
the algorithms' noisy-reward defaults apply), and the figures are what the policy proposes at the
end, as the derivation samples it: the mean true test accuracy of the proposals in the last 20% of
each budget, and the median true rank of their valid accuracy.

Two budget conventions:

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
from landscape_search import rank_of, table_search, test_of_best_curve

ALGOS = ["ppo", "reinforce", "rea", "random"]
MODES = ["all", "unique"]
IMAGENET16 = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-imagenet16" / "table.json"


def report(name: str, tables: list[tuple[Path, int]], args: argparse.Namespace, started: float) -> dict:
    budget = max(args.budgets)
    tests = {(a, m): [] for a in args.algos for m in args.modes}  # per run: test of best at each budget
    ranks = {(a, m): [] for a in args.algos for m in args.modes}
    curves = {(a, m): [] for a in args.algos for m in args.modes}
    for table, seed in tables:
        values = np.array([m["valid"] for m in json.loads(table.read_text()).values()])
        for mode in args.modes:
            for algo in args.algos:
                overrides = {"evaluator.noise": args.noise, "controller.tanh_constant": 2.5} if args.noise else {}
                overrides.update({k: v for k, v in args.sets.items() if not k.startswith(tuple(a + "." for a in ALGOS))
                                  or k.startswith(algo + ".")})  # ppo.* keys apply to PPO only
                rows = [r for r in table_search(algo, table, budget, seed, budget_mode=mode, overrides=overrides)
                        if not r.get("cached")]
                if args.noise:  # the policy's late proposals, judged by the table's true values
                    late = [rows[b - max(1, b // 5):b] for b in args.budgets]
                    tests[algo, mode].append([np.mean([r["metrics"]["test"] for r in w]) for w in late])
                    ranks[algo, mode].append([np.median([rank_of(values, r["metrics"]["valid"]) for r in w])
                                              for w in late])
                    test = np.array([r["metrics"]["test"] for r in rows])
                else:
                    best = np.maximum.accumulate([r["reward"] for r in rows])
                    test = test_of_best_curve(rows)
                    tests[algo, mode].append([test[b - 1] for b in args.budgets])
                    ranks[algo, mode].append([rank_of(values, best[b - 1]) for b in args.budgets])
                curves[algo, mode].append(test)
                print(f"  {name} seed {seed} {mode:<6} {algo:<10} @{budget} {tests[algo, mode][-1][-1]:.2f}  "
                      f"[{time.time() - started:.0f}s]", flush=True)
    for mode in args.modes:
        what = (f"noise {args.noise:g}x the spread: mean true test accuracy of the last 20% of the proposals"
                if args.noise else "test accuracy of the best-by-valid cell")
        print(f"\n{name}, budget mode '{mode}': {what}, mean ± std over {len(tables)} seeds")
        print(f"{'algorithm':<12}" + "".join(f"{'@' + str(b):>18}" for b in args.budgets))
        for algo in args.algos:
            t = np.array(tests[algo, mode])
            print(f"{algo:<12}" + "".join(f"{t[:, i].mean():>10.2f} ± {t[:, i].std():.2f}"
                                          for i in range(len(args.budgets))))
        print(("median true rank of those proposals' valid" if args.noise else "rank of the best-by-valid cell's valid")
              + " among the 15,625 (1 = optimum), median [min-max] over seeds")
        print(f"{'algorithm':<12}" + "".join(f"{'@' + str(b):>18}" for b in args.budgets))
        for algo in args.algos:
            r = np.array(ranks[algo, mode])
            print(f"{algo:<12}" + "".join(f"{np.median(r[:, i]):>10.0f} [{r[:, i].min():.0f}-{r[:, i].max():.0f}]"
                                          for i in range(len(args.budgets))))
    return curves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(IMAGENET16), help="a real table ('' for none)")
    parser.add_argument("--seeds", type=int, default=10, help="search seeds on the real table")
    parser.add_argument("--landscapes", type=int, default=0, help="generated landscapes, a second opinion")
    parser.add_argument("--budgets", type=int, nargs="+", default=[50, 100, 200, 500])
    parser.add_argument("--algos", nargs="+", default=ALGOS, choices=ALGOS)
    parser.add_argument("--modes", nargs="+", default=["all"], choices=MODES)
    parser.add_argument("--noise", type=float, default=0.0, help="rewards seen through noise (see above)")
    parser.add_argument("--plot", default=None, help="a PNG of the test-of-best curves")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", dest="sets",
                        help="a config key for every run (ppo.*, reinforce.*, rea.* keys: that algorithm's runs "
                             "only), to explore a setting before tuning it in")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST..FIRST+N-1 (0: the reporting seeds; 1000+: tuning seeds, to explore on)")
    args = parser.parse_args()
    from services.cli.common import parse_sets

    args.sets = parse_sets(args.sets)
    if args.noise and args.plot:
        parser.error("--plot draws best-so-far curves, which noisy rewards do not give: leave it out with --noise")
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.time()
    curves = {}
    if args.table:
        if not Path(args.table).is_file():
            parser.error(f"--table {args.table}: no such file")
        curves[Path(args.table).parent.name] = report(
            Path(args.table).parent.name, [(Path(args.table), args.first_seed + s) for s in range(args.seeds)], args,
            started)
    if args.landscapes:
        work = Path(tempfile.mkdtemp(prefix="raynas-bench-"))
        tables = []
        for seed in range(args.landscapes):
            path = work / f"table{seed}.json"
            path.write_text(json.dumps(nb201_landscape(seed)))
            tables.append((path, seed))
        curves["generated landscapes"] = report("generated landscapes", tables, args, started)
    if args.plot:
        plot(curves, args)
    ray.shutdown()


def plot(curves: dict, args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(name, mode) for name in curves for mode in args.modes]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.5), squeeze=False)
    x = np.arange(1, max(args.budgets) + 1)
    for ax, (name, mode) in zip(axes[0], panels):
        for algo in args.algos:
            c = np.stack(curves[name][algo, mode])
            ax.plot(x, c.mean(0), label=algo)
            ax.fill_between(x, c.mean(0) - c.std(0), c.mean(0) + c.std(0), alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("architectures evaluated" + (" (repeats free)" if mode == "unique" else ""))
        ax.set_ylabel("test accuracy of the best-by-valid cell (%)")
        ax.set_title(f"{name}, budget mode '{mode}' (band: ± std over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=110)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
