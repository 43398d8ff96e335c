"""PPO vs REINFORCE vs random search (vs regularised evolution) on generated NAS-Bench-201-shaped tables.

Each seed draws its own landscape (``controller_policy.landscapes.nb201_landscape``) and seeds
every algorithm. One run per (algorithm, seed) with the largest budget; smaller budgets read the
same run's prefix (sampling is sequential and seeded, so the prefix is what a shorter run samples).

    python bench/search_strategies.py --seeds 10 --budgets 100 200 500 --plot bench/search_strategies.png
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

from controller_policy.algorithms import ALGORITHMS
from controller_policy.landscapes import nb201_landscape
from controller_policy.spaces import NB201Space


def regularized_evolution(table: dict, budget: int, seed: int, population: int = 20, sample: int = 5) -> list[float]:
    """Real et al. 2019, as NAS-Bench papers run it: mutate one decision of the best of a sample."""
    space, rng = NB201Space(), np.random.default_rng(seed)
    rewards: list[float] = []
    pop: list[tuple[list[int], float]] = []

    def score(arch: list[int]) -> float:
        r = table[space.to_string(arch)]["valid"]
        rewards.append(r)
        return r

    while len(rewards) < min(population, budget):
        arch = space.sample(rng)
        pop.append((arch, score(arch)))
    while len(rewards) < budget:
        parent = max((pop[i] for i in rng.choice(len(pop), sample, replace=False)), key=lambda p: p[1])[0]
        child = list(parent)
        t = int(rng.integers(space.num_decisions))
        child[t] = int(rng.choice([a for a in np.flatnonzero(space.mask(t)) if a != parent[t]]))
        pop.append((child, score(child)))
        pop.pop(0)
    return rewards


def rl_rewards(algo: str, table_path: str, budget: int, seed: int, out: str) -> list[float]:
    cfg = ALGORITHMS[algo]().search(space="nb201", evaluator={"type": "table", "path": table_path,
                                                               "reward_key": "valid"},
                                    budget=budget, out_dir=out).debugging(seed=seed, log_level="ERROR")
    algorithm = cfg.build_algo()
    try:
        while not algorithm.search_done:
            algorithm.train()
    finally:
        algorithm.stop()
    return [json.loads(line)["reward"] for line in open(Path(out) / "trajectory.jsonl")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", type=int, nargs="+", default=[100, 200, 500])
    parser.add_argument("--algos", nargs="+", default=["ppo", "reinforce", "random", "evolution"])
    parser.add_argument("--plot", default="bench/search_strategies.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    budget = max(args.budgets)
    curves: dict[str, list[np.ndarray]] = {a: [] for a in args.algos}
    hits: dict[str, list[float]] = {a: [] for a in args.algos}
    work = Path(tempfile.mkdtemp(prefix="raynas-bench-"))
    started = time.time()
    for seed in range(args.seeds):
        table = nb201_landscape(seed)
        table_path = work / f"table{seed}.json"
        table_path.write_text(json.dumps(table))
        values = np.array([m["valid"] for m in table.values()])
        optimum, top = values.max(), np.quantile(values, 0.999)
        for algo in args.algos:
            if algo == "evolution":
                rewards = regularized_evolution(table, budget, seed)
            else:
                rewards = rl_rewards(algo, str(table_path), budget, seed, str(work / f"{algo}{seed}"))
            best = np.maximum.accumulate(rewards)
            curves[algo].append(best / optimum)  # regret-free scale: 1.0 is the landscape's optimum
            reached = np.flatnonzero(np.asarray(rewards) >= top)
            hits[algo].append(float(reached[0] + 1) if len(reached) else np.nan)
            print(f"  seed {seed} {algo:<10} best@{budget} {best[-1]:.3f} (optimum {optimum:.3f}) "
                  f"top-0.1% at {hits[algo][-1]}  [{time.time() - started:.0f}s]", flush=True)
    print(f"\nbest reward found / landscape optimum, mean ± std over {args.seeds} seeds "
          f"(nb201-shaped generated landscapes)")
    print(f"{'algorithm':<12}" + "".join(f"{'@' + str(b):>17}" for b in args.budgets) + f"{'queries to top 0.1%':>26}")
    for algo in args.algos:
        c = np.stack(curves[algo])
        cells = "".join(f"{c[:, b - 1].mean():>10.4f} ± {c[:, b - 1].std():.4f}" for b in args.budgets)
        h = np.array(hits[algo])
        found = np.isfinite(h)
        q = f"{np.nanmean(h):.0f} ± {np.nanstd(h):.0f} ({found.sum()}/{len(h)} runs)" if found.any() else "never"
        print(f"{algo:<12}{cells}{q:>26}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    x = np.arange(1, budget + 1)
    for algo in args.algos:
        c = np.stack(curves[algo])
        ax.plot(x, c.mean(0), label=algo)
        ax.fill_between(x, c.mean(0) - c.std(0), c.mean(0) + c.std(0), alpha=0.2)
    ax.set_xlabel("architectures evaluated")
    ax.set_ylabel("best reward / optimum")
    ax.set_title(f"nb201-shaped landscapes, {args.seeds} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"plot: {args.plot}")
    ray.shutdown()


if __name__ == "__main__":
    main()
