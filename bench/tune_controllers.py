"""Equal tuning budgets for every search algorithm, done with Ray Tune, on a real benchmark table.

PPO, REINFORCE and REA each get the same number of Tune trials, drawn by the same search
algorithm (Tune's random search over each algorithm's own space, below) with the same budget per
trial. A trial runs one search of ``--budget`` evaluations (every evaluation counted, repeats
included) per tuning seed on the tuning table (default: NAS-Bench-201's ImageNet16-120 table in
``../shared/data/nb201-imagenet16``), and on each of ``--landscapes`` generated NAS-Bench-201-shaped
landscapes (seeds 1000+) as a second opinion. Its score is the mean over those searches and over
the budgets 100 and 200 of -log10(rank of the best architecture found among the table's 15,625,
by the reward): 0 is the optimum, -1 the 10th best, -2 the 100th. Tuning seeds (1000+) are
disjoint from the seeds ``bench/search_strategies.py`` reports (0-9). Random search has nothing to tune.

A setting must also keep its controller alive: every learning trial runs one more search on a noisy
landscape (noise 2x the reward spread, like a supernet's one-minibatch reward; tanh constant 2.5, as
the weight-sharing presets; 40 updates) and is disqualified when its policy froze there (half of
the squashed logits at exactly ±1, or no probe log-probability moved over the last 3 updates).

    python bench/tune_controllers.py [--trials 16] [--seeds 3] [--landscapes 1] [--budget 200]

``--noisy``: the weight-sharing case. Every search sees the table through noise of 2x its reward
spread with tanh 2.5 (what a supernet's one-minibatch rewards and the presets give a controller),
and a trial is scored by what the final policy proposes, since that is what the derivation
samples: the mean -log10(true rank) of the architectures sampled in the last 20% of the budget
(default budget 400, about the nb201-ws-cpu preset's controller phase).

Stage 1 draws ``--trials`` settings per algorithm; stage 2 scores its ``--finalists`` best qualified
settings again on ``--confirm-seeds`` fresh tuning seeds of the table (1100+), and the best there
wins (stage 1's best is the luckiest of many noisy draws). Prints every trial of both stages and
each algorithm's winner; the shipped defaults come from that table.
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

from controller_policy.health import FROZEN_CHANGE, FROZEN_UPDATES
from controller_policy.landscapes import nb201_landscape
from landscape_search import rank_of, table_search, test_of_best_curve

TUNING_SEEDS = 1000  # search seeds and landscapes 1000, 1001, ...: never reported by bench/search_strategies.py
CONFIRM_SEEDS = 1100  # stage 2's search seeds, also tuning seeds
SCORED_BUDGETS = (100, 200)
IMAGENET16 = Path(__file__).resolve().parents[2] / "shared" / "data" / "nb201-imagenet16" / "table.json"
NOISY = {"evaluator.noise": 2.0, "controller.tanh_constant": 2.5}
NOISY_UPDATES = 40

SPACES = {
    # num_epochs x minibatches <= 8 gradient passes per iteration: the controller's time budget at
    # paper scale (bench/controller_throughput.py: <= 10 ms per macro-12 architecture)
    "ppo": {"lr": tune.loguniform(1e-4, 3e-2), "entropy_coeff": tune.loguniform(1e-3, 1e-1),
            "clip_param": tune.choice([0.1, 0.2, 0.3]),
            "passes": tune.choice([(2, 1), (2, 2), (2, 4), (4, 1), (4, 2), (8, 1)]),
            "grad_clip": tune.choice([0.0, 1.0, 5.0]),  # 0: no clipping
            "baseline": tune.choice(["value", "batch"]),  # a learned value vs the batch's mean reward
            "entropy_coeff_final": tune.choice([None, 0.0]),  # None: constant; 0.0: falls to 0 over the budget
            "elite_replay": tune.choice([0, 4]),  # the K best so far in every update (self-imitation)
            "episodes_per_iteration": tune.choice([4, 8, 16])},
    "reinforce": {"lr": tune.loguniform(1e-4, 1e-1), "entropy_coeff": tune.loguniform(1e-4, 1e-1),
                  "baseline_decay": tune.choice([0.8, 0.9, 0.95, 0.99]),
                  "grad_clip": tune.choice([0.0, 1.0, 5.0]),
                  "elite_replay": tune.choice([0, 4]),
                  "episodes_per_iteration": tune.choice([4, 8, 16])},
    "rea": {"population_size": tune.choice([5, 10, 20, 50]),
            "tournament_size": tune.sample_from(lambda spec: int(np.random.choice(
                [s for s in (2, 3, 5, 10) if s <= spec.config.setting.population_size]))),
            "episodes_per_iteration": tune.choice([4, 8, 16])},
}


def algorithm_setting(setting: dict) -> dict:
    setting = {k: v for k, v in setting.items() if v is not None}
    if "passes" in setting:  # PPO: (num_epochs, minibatches)
        setting["num_epochs"], setting["minibatches"] = setting.pop("passes")
    return setting


def frozen_on_noise(algo: str, table: str, setting: dict) -> dict:
    """The policy's health after NOISY_UPDATES updates on a noisy landscape."""
    results: list[dict] = []
    episodes = setting.get("episodes_per_iteration") or {"ppo": 8, "reinforce": 4}[algo]
    table_search(algo, table, NOISY_UPDATES * episodes, TUNING_SEEDS, setting=setting, overrides=NOISY,
                 on_result=lambda _algo, result: results.append(result["search"]))
    changes = [r["policy_change"] for r in results[-FROZEN_UPDATES:]]
    exact = results[-1]["policy_exactly_saturated"]
    return {"exactly_saturated": exact, "last_change": min(changes),
            "frozen": bool(exact >= 0.5 or max(changes) < FROZEN_CHANGE)}


def trial(config: dict) -> None:
    import torch

    torch.set_num_threads(1)
    algo, setting = config["algo"], algorithm_setting(config["setting"])
    scores, tests = [], []
    for table, seed in config["searches"]:
        rows = table_search(algo, table, config["budget"], seed, setting=setting,
                            overrides=NOISY if config["noisy"] else None)
        values = np.sort([m["valid"] for m in json.loads(Path(table).read_text()).values()])
        real_table = table == config["searches"][0][0]  # the test figure: the real table's only
        if config["noisy"]:  # the final policy's proposals, judged by the table's true values
            late = rows[-max(1, len(rows) // 5):]
            scores.append(float(np.mean([-np.log10(rank_of(values, r["metrics"]["valid"])) for r in late])))
            if real_table:
                tests.append(float(np.mean([r["metrics"]["test"] for r in late])))
            continue
        best = np.maximum.accumulate([r["reward"] for r in rows])
        scores += [-np.log10(rank_of(values, best[b - 1])) for b in SCORED_BUDGETS if b <= len(best)]
        if real_table:
            test = test_of_best_curve(rows)
            tests += [test[b - 1] for b in SCORED_BUDGETS if b <= len(test)]
    health = frozen_on_noise(algo, config["noisy_table"], setting) if algo != "rea" else {"frozen": False}
    tune.report({"score": float(np.mean(scores)), "test_of_best": float(np.mean(tests)), **health})


def run_trials(storage: Path, param_space: dict, num_samples: int) -> list[dict]:
    """One Tune experiment of ``trial``; its results, best score first."""
    tuner = tune.Tuner(tune.with_resources(trial, {"cpu": 1}), param_space=param_space,
                       tune_config=tune.TuneConfig(num_samples=num_samples),
                       run_config=tune.RunConfig(storage_path=str(storage), name=param_space["algo"], verbose=0))
    grid = tuner.fit()
    if grid.errors:
        raise RuntimeError(f"{param_space['algo']}: {len(grid.errors)} trials failed; first: {grid.errors[0]}")
    keys = ("score", "test_of_best", "frozen", "exactly_saturated")
    return sorted(({"setting": algorithm_setting(r.config["setting"]), **{k: r.metrics.get(k) for k in keys}}
                   for r in grid), key=lambda r: -r["score"])


def show(algo: str, stage: str, rows: list[dict]) -> None:
    for r in rows:
        health = f"  frozen {r['frozen']!s:<5} exact±1 {r['exactly_saturated']:.2f}" if r.get("exactly_saturated") \
            is not None else ""
        print(f"{algo:<10} {stage} score {r['score']:.4f}  test {r['test_of_best']:.2f}{health}  "
              f"{json.dumps(r['setting'])}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="Tune trials per algorithm (the same for all)")
    parser.add_argument("--table", default=str(IMAGENET16), help="the real tuning table")
    parser.add_argument("--seeds", type=int, default=3, help="search seeds on the tuning table")
    parser.add_argument("--landscapes", type=int, default=1, help="generated landscapes, a second opinion")
    parser.add_argument("--budget", type=int, default=None, help="default: 200, or 400 with --noisy")
    parser.add_argument("--noisy", action="store_true", help="tune for the weight-sharing case (see above)")
    parser.add_argument("--algos", nargs="+", default=list(SPACES), choices=list(SPACES))
    parser.add_argument("--finalists", type=int, default=3, help="stage 1's best, scored again on fresh seeds")
    parser.add_argument("--confirm-seeds", type=int, default=8, help="fresh search seeds on the table (1100+)")
    parser.add_argument("--stage1", default=None, help="read stage 1 from an earlier --out file (its algorithms)")
    parser.add_argument("--out", default=None, help="where to write every trial and the winners as JSON")
    args = parser.parse_args()
    args.budget = args.budget or (400 if args.noisy else max(SCORED_BUDGETS))
    if not Path(args.table).is_file():
        parser.error(f"--table {args.table}: no such file")
    # Trials import landscape_search.py from this folder.
    bench = str(Path(__file__).resolve().parent)
    pythonpath = os.pathsep.join(p for p in (bench, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
    work = Path(tempfile.mkdtemp(prefix="raynas-tune-"))
    searches = [(str(Path(args.table).resolve()), TUNING_SEEDS + i) for i in range(args.seeds)]
    for seed in range(TUNING_SEEDS, TUNING_SEEDS + args.landscapes):
        path = work / f"landscape{seed}.json"
        path.write_text(json.dumps(nb201_landscape(seed)))
        searches.append((str(path), seed))
    noisy_table = work / f"landscape{TUNING_SEEDS}-noisy.json"
    noisy_table.write_text(json.dumps(nb201_landscape(TUNING_SEEDS)))
    score = ("mean -log10(true rank) of the last 20% of the proposals, on tables seen through noise 2x their "
             "spread, tanh 2.5" if args.noisy else
             f"mean -log10(rank of the best found) at {', '.join(map(str, SCORED_BUDGETS))} evaluations")
    print(f"{args.trials} Tune trials per algorithm (random search); each: {args.seeds} searches on {args.table} "
          f"and {args.landscapes} on generated landscapes, budget {args.budget}; score = {score}; a policy that "
          "freezes on a noisy landscape disqualifies its setting", flush=True)
    confirm = [(str(Path(args.table).resolve()), CONFIRM_SEEDS + i) for i in range(args.confirm_seeds)]
    previous = json.loads(Path(args.stage1).read_text()) if args.stage1 else {}
    everything = {}
    for algo in args.algos:
        config = {"algo": algo, "budget": args.budget, "noisy_table": str(noisy_table), "noisy": args.noisy}
        if algo in previous:
            rows = previous[algo]["trials"]
            print(f"{algo:<10} stage 1 read from {args.stage1}: {len(rows)} trials", flush=True)
        else:
            rows = run_trials(work / "stage1", {**config, "setting": SPACES[algo], "searches": searches}, args.trials)
            show(algo, "stage 1", rows)
        # Stage 1's best score is the luckiest of many draws: the finalists are scored again on
        # fresh seeds, and the winner is the best there (the same for every algorithm). The shipped
        # defaults ({}) run beside them, so a change of defaults is measured, not assumed.
        finalists = [r["setting"] for r in rows if not r["frozen"]][:args.finalists] + [{}]
        confirmed = run_trials(work / "stage2", {**config, "setting": tune.grid_search(finalists),
                                                 "searches": confirm}, 1)
        show(algo, "stage 2", confirmed)
        best = next((r for r in confirmed if not r["frozen"]), None)  # {}: the shipped defaults
        print(f"{algo:<10} BEST {best['score'] if best else float('nan'):.4f} on {args.confirm_seeds} fresh seeds "
              f"(test {best['test_of_best'] if best else float('nan'):.2f})  "
              f"{json.dumps(best['setting']) if best else 'none qualified'}", flush=True)
        everything[algo] = {"best": best, "finalists": confirmed, "trials": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(everything, indent=2, default=str) + "\n")
        print(f"trials and winners: {args.out}")
    ray.shutdown()


if __name__ == "__main__":
    main()
