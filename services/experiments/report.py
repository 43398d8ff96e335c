"""The comparison report of a ``raynas compare`` experiment, computed from its trials' files.

Each trial directory holds ``params.json`` (its algorithm and seed) and ``trajectory.jsonl``
(every evaluated architecture, in order); weight-sharing trials also hold ``metrics.csv`` (the
controller's entropy per epoch) and ``best_arch.json`` (the derived architecture and its accuracy
on the whole validation split). Curves are per algorithm, mean ± std over seeds, against the
number of architectures evaluated.

Algorithms are ranked by what a user keeps, per seed: with weight sharing the derived
architecture's accuracy on the whole validation split (the one-minibatch rewards, each measured
on that trial's own supernet, are shown as curves only); with a table, the test metric of the
best-by-validation architecture when the table has one, else the best reward found. The verdict
says which differences are within noise (a paired t-test over the seeds the algorithms share).

Trials searched under an objective (``objective.constraints``) also get, per cost, accuracy against
that cost with every algorithm's children and each algorithm's Pareto front (``pareto_<cost>.png``),
and a column with the best measured reward among the children within every hard target.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import storage

FRACTIONS = (0.9, 0.95, 0.99)


@dataclass
class Trial:
    algo: str
    seed: int
    rewards: np.ndarray
    best_row: dict[str, Any]
    entropy: float | None = None
    path: Path = field(default_factory=Path)
    derived: float | None = None  # weight sharing: the derived architecture's full-validation accuracy
    saturated: float | None = None  # weight sharing: share of squashed logits at exactly ±1 after the last update
    # under an objective: every child's costs, measured reward and feasibility; and the hard targets
    children: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, float] = field(default_factory=dict)


def last_result(trial_dir: Path) -> dict[str, Any]:
    """The last result Tune recorded for a trial (``result.json``: a JSON line per iteration)."""
    path = trial_dir / "result.json"
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a crash
            continue
    return {}


def load_trials(experiment: Path) -> list[Trial]:
    trials = []
    for params_path in sorted(experiment.glob("*/params.json")):
        trial_dir = params_path.parent
        trajectory = trial_dir / "trajectory.jsonl"
        if not trajectory.is_file():
            continue
        params = json.loads(params_path.read_text())
        rows = [json.loads(line) for line in trajectory.read_text().splitlines() if line.strip()]
        if not rows:
            continue
        entropy = saturated = None
        if (trial_dir / "metrics.csv").is_file():
            with (trial_dir / "metrics.csv").open() as f:
                epochs = list(csv.DictReader(f))
            entropy = float(epochs[-1]["controller_entropy"]) if epochs else None
            saturated = float(epochs[-1].get("controller_exactly_saturated") or "nan") if epochs else None
        else:  # a table: the policy's entropy of the last iteration, from the trial's Tune results
            entropy = last_result(trial_dir).get("search/entropy")
        derived = None
        if (trial_dir / "best_arch.json").is_file():  # a table's search writes one too: its best, not derived
            derived = json.loads((trial_dir / "best_arch.json").read_text()).get("valid_accuracy")
        children = [{"costs": r["costs"], "measured": r["measured"], "feasible": r["feasible"]}
                    for r in rows if "costs" in r and not r.get("cached")]
        constraints = (params.get("search") or {}).get("objective", {}).get("constraints") or {}
        targets = {key: c["target"] for key, c in constraints.items() if c and c.get("mode") == "hard"}
        trials.append(Trial(params["algo"], int(params["seed"]), np.array([r["reward"] for r in rows], float),
                            max(rows, key=lambda r: r["reward"]), entropy, trial_dir, derived, saturated,
                            children, targets))
    if not trials:
        raise ValueError(f"{experiment} holds no trials with a trajectory.jsonl (is it a raynas compare experiment?)")
    return trials


def _mean_std(values: list[float]) -> str:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    return f"{np.mean(finite):.4g} ± {np.std(finite):.2g}"


def ranking_criterion(trials: list[Trial]) -> str:
    if all(t.derived is not None for t in trials):
        return "derived"
    if all(t.best_row["metrics"].get("test") is not None for t in trials):
        return "test"
    return "best"


CRITERIA = {"derived": "the derived architecture's accuracy on the whole validation split",
            "test": "the test metric of the best-by-validation architecture",
            "best": "the best reward found"}


def _score(trial: Trial, criterion: str) -> float:
    if criterion == "derived":
        return float(trial.derived)
    if criterion == "test":
        return float(trial.best_row["metrics"]["test"])
    return float(trial.rewards.max())


def summarise(trials: list[Trial]) -> dict[str, dict[str, Any]]:
    """Per algorithm: the ranking score per seed, final best, architectures to reach each fraction
    of the experiment's best, entropy."""
    overall = max(t.rewards.max() for t in trials)
    criterion = ranking_criterion(trials)
    table: dict[str, dict[str, Any]] = {}
    for algo in sorted({t.algo for t in trials}):
        group = [t for t in trials if t.algo == algo]
        reach = {}
        for frac in FRACTIONS:
            hits = [int(np.argmax(t.rewards >= frac * overall)) + 1 if (t.rewards >= frac * overall).any() else None
                    for t in group]
            reach[frac] = [h for h in hits if h is not None]
        table[algo] = {
            "seeds": len(group),
            "final_best": [float(t.rewards.max()) for t in group],
            "reach": reach,
            "entropy": [t.entropy for t in group],
            "saturated": [t.saturated for t in group],
            "test": [t.best_row["metrics"].get("test") for t in group],
            "derived": [t.derived for t in group],
            "score": {t.seed: _score(t, criterion) for t in group},
            # under an objective: the best measured reward among each seed's children within every hard target
            "constrained": [max((c["measured"] for c in t.children if c["feasible"]), default=None) for t in group],
        }
    return table


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both counts (lower cost, higher accuracy), by cost."""
    front: list[tuple[float, float]] = []
    for cost, acc in sorted(points, key=lambda p: (p[0], -p[1])):
        if not front or acc > front[-1][1]:
            front.append((cost, acc))
    return front


def _pareto_plots(trials: list[Trial], out: Path) -> list[Path]:
    """Per cost: every algorithm's children (all seeds), accuracy against cost, and its Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    costs = sorted({key for t in trials for c in t.children for key in c["costs"]})
    paths = []
    for key in costs:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for algo in sorted({t.algo for t in trials}):
            points = [(c["costs"][key], c["measured"]) for t in trials if t.algo == algo for c in t.children]
            if not points:
                continue
            x, y = zip(*points)
            dots = ax.scatter(x, y, s=10, alpha=0.35, label=f"{algo}: {len(points)} children")
            fx, fy = zip(*pareto_front(points))
            ax.step(fx, fy, where="post", color=dots.get_facecolor()[0][:3], linewidth=1.5)
        target = next((t.targets[key] for t in trials if key in t.targets), None)
        if target is not None:
            ax.axvline(target, color="grey", linestyle="--", linewidth=1, label=f"hard target {target:g}")
        ax.set_xlabel(key.replace("_m", " (millions)"))
        ax.set_ylabel("measured reward (accuracy)")
        ax.set_title(f"accuracy against {key}; lines: each algorithm's Pareto front")
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = out / f"pareto_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def compare_pair(a: dict[int, float], b: dict[int, float]) -> tuple[float, float | None, int]:
    """(mean difference a - b, two-sided p of a paired t-test over the shared seeds or None
    when fewer than two are shared, number of shared seeds)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return float(np.mean(list(a.values())) - np.mean(list(b.values()))), None, len(seeds)
    diffs = np.array([a[s] - b[s] for s in seeds])
    if np.allclose(diffs, diffs[0]):  # no spread: the t statistic is undefined
        return float(diffs.mean()), (1.0 if np.isclose(diffs[0], 0) else 0.0), len(seeds)
    from scipy.stats import ttest_rel

    return float(diffs.mean()), float(ttest_rel([a[s] for s in seeds], [b[s] for s in seeds]).pvalue), len(seeds)


def ranking(table: dict[str, dict[str, Any]], criterion: str, alpha: float = 0.05) -> str:
    """The algorithms ranked by the per-seed score, and whether the leader's margin over each
    other algorithm is beyond noise."""
    order = sorted(table, key=lambda algo: -np.mean(list(table[algo]["score"].values())))
    ranked = ", ".join(f"{algo} {_mean_std(list(table[algo]['score'].values()))}" for algo in order)
    parts = [f"Ranked by {CRITERIA[criterion]} (mean ± std over seeds): {ranked}."]
    leader = order[0]
    for other in order[1:]:
        diff, p, n = compare_pair(table[leader]["score"], table[other]["score"])
        if min(len(table[leader]["score"]), len(table[other]["score"])) < 2:
            # one seed has no spread: a difference of any size could be noise
            parts.append(f"{leader} vs {other}: {diff:+.4g}, no verdict (one seed: the noise is unknown; "
                         "run several seeds).")
            continue
        if p is None:
            lo = [np.mean(list(table[x]["score"].values())) - np.std(list(table[x]["score"].values()))
                  for x in (leader, other)]
            hi = [np.mean(list(table[x]["score"].values())) + np.std(list(table[x]["score"].values()))
                  for x in (leader, other)]
            noise = lo[0] <= hi[1]
            how = "mean ± std overlap" if noise else "mean ± std apart"
        else:
            noise = p >= alpha
            how = f"paired t-test over {n} seeds, p = {p:.2g}"
        word = "within noise" if noise else f"{leader} better"
        parts.append(f"{leader} vs {other}: {diff:+.4g}, {word} ({how}).")
    return " ".join(parts)


def verdict(table: dict[str, dict[str, Any]], overall: float) -> str:
    """One paragraph from the numbers: who reached 99% of the best reward first, and the spread."""
    frac = FRACTIONS[-1]

    def speed(algo: str) -> tuple[int, float]:
        hits = table[algo]["reach"][frac]
        return (-len(hits), float(np.mean(hits)) if hits else math.inf)

    order = sorted(table, key=speed)
    parts = []
    for algo in order:
        row, hits = table[algo], table[algo]["reach"][frac]
        got = (f"after {_mean_std(hits)} architectures ({len(hits)}/{row['seeds']} seeds)"
               if hits else f"in none of its {row['seeds']} seeds")
        parts.append(f"{algo} reached {frac:.0%} of the best reward ({overall:.4g}) {got}, final best "
                     f"{_mean_std(row['final_best'])}")
    return "; ".join(parts) + "."


def _curves(trials: list[Trial], out: Path, window: int) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = (out / "reward_curves.png", out / "best_curves.png")
    for path, title, transform in (
        (paths[0], f"controller mean reward (blocks of {window})", lambda r: _block_means(r, window)),
        (paths[1], "best reward found", np.maximum.accumulate),
    ):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for algo in sorted({t.algo for t in trials}):
            series = [transform(t.rewards) for t in trials if t.algo == algo]
            n = min(len(s) for s in series)
            stack = np.stack([s[:n] for s in series])
            x = (np.arange(n) + 1) * (window if path == paths[0] else 1)
            ax.plot(x, stack.mean(0), label=f"{algo} ({len(series)} seeds)")
            ax.fill_between(x, stack.mean(0) - stack.std(0), stack.mean(0) + stack.std(0), alpha=0.2)
        ax.set_xlabel("architectures evaluated")
        ax.set_ylabel("reward (mean over seeds)")
        ax.set_title(f"{title}; band: ± 1 std over seeds")
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return paths


def _block_means(rewards: np.ndarray, window: int) -> np.ndarray:
    n = len(rewards) // window
    return rewards[: n * window].reshape(n, window).mean(1) if n else rewards[:1]


@dataclass
class Written:
    """What a report says in short: where it is, its ranking and verdict, and the best architecture
    of all trials by the ranking's criterion (``best_architecture``)."""

    location: str
    ranking: str
    best: dict[str, Any]


def best_architecture(trials: list[Trial], criterion: str) -> dict[str, Any]:
    """The architecture a user would keep from the whole experiment, with whose it is and why."""
    top = max(trials, key=lambda t: _score(t, criterion))
    arch = (json.loads((top.path / "best_arch.json").read_text())["arch"] if criterion == "derived"
            else top.best_row["arch"])
    return {"arch": arch, "score": _score(top, criterion), "criterion": CRITERIA[criterion], "algo": top.algo,
            "seed": top.seed, "trial": top.path.name}


def write_report(experiment: str | Path, window: int | None = None) -> Path:
    """Write reward_curves.png, best_curves.png, report.md and a self-contained report.html."""
    return Path(_write(Path(experiment), window).location)


def _write(experiment: Path, window: int | None) -> Written:
    trials = load_trials(experiment)
    overall = max(t.rewards.max() for t in trials)
    window = window or max(1, min(len(t.rewards) for t in trials) // 20)
    table = summarise(trials)
    criterion = ranking_criterion(trials)
    plots = (*_curves(trials, experiment, window), *_pareto_plots(trials, experiment))
    has_test = any(v is not None for row in table.values() for v in row["test"])
    constrained = any(t.children for t in trials)
    if criterion == "derived":  # one-minibatch rewards on each trial's own supernet: curves only
        header = ["algorithm", "seeds", "derived architecture: valid accuracy (whole split)", "final entropy",
                  "final logits at exactly ±1 (a frozen policy)"]
    else:
        header = ["algorithm", "seeds", "final best"] + [f"archs to {f:.0%} of best" for f in FRACTIONS]
        header += ["final entropy"] + (["test metric of best"] if has_test else [])
    if constrained:
        header.append("best measured within the hard targets")
    rows = []
    for algo, row in table.items():
        if criterion == "derived":
            cells = [algo, str(row["seeds"]), _mean_std(row["derived"]), _mean_std(row["entropy"]),
                     _mean_std(row["saturated"])]
        else:
            cells = [algo, str(row["seeds"]), _mean_std(row["final_best"])]
            cells += [f"{_mean_std(row['reach'][f])} ({len(row['reach'][f])}/{row['seeds']})" for f in FRACTIONS]
            cells += [_mean_std(row["entropy"])] + ([_mean_std(row["test"])] if has_test else [])
        if constrained:
            found = [v for v in row["constrained"] if v is not None]
            cells.append(f"{_mean_std(found)} ({len(found)}/{row['seeds']} seeds found one)")
        rows.append(cells)
    text = ranking(table, criterion)
    if criterion != "derived":
        text += " " + verdict(table, overall)
    md = [f"# raynas comparison: {experiment.name}", "", text, "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", f"![controller mean reward]({plots[0].name})", f"![best reward]({plots[1].name})"]
    md += [f"![{p.stem.replace('_', ' ')}]({p.name})" for p in plots[2:]] + [""]
    (experiment / "report.md").write_text("\n".join(md))
    images = "".join(f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                     for p in plots)
    table_html = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    (experiment / "report.html").write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>raynas comparison</title>"
        f"<style>body{{font-family:sans-serif;max-width:60em;margin:auto}}td,th{{border:1px solid #ccc;"
        f"padding:4px 8px}}table{{border-collapse:collapse}}img{{max-width:100%}}</style></head><body>"
        f"<h1>raynas comparison: {html.escape(experiment.name)}</h1><p id='verdict'>{html.escape(text)}</p>"
        f"{table_html}{images}</body></html>\n")
    return Written(str(experiment / "report.md"), text, best_architecture(trials, criterion))


# best_arch.json too: without it a weight-sharing experiment at a URI would be ranked by its
# one-minibatch rewards instead of its derived architectures
REPORT_INPUTS = ("params.json", "trajectory.jsonl", "metrics.csv", "best_arch.json", "result.json")
REPORT_OUTPUTS = ("report.md", "report.html", "reward_curves.png", "best_curves.png", "pareto_params_m.png",
                  "pareto_flops_m.png")


def report_at(location: str | Path, window: int | None = None) -> Written:
    """``write_report`` for an experiment in a local directory or at a URI (s3://...): for a URI the
    trials' inputs are fetched into a local cache, and the report is uploaded beside them."""
    if not storage.is_uri(location):
        return _write(Path(location), window)
    fs, root = storage.resolve(location)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / Path(root).name
        storage.download(fs, root, local, accept=lambda rel: rel.count("/") == 1 and rel.endswith(REPORT_INPUTS))
        written = _write(local, window)
        storage.upload([local / name for name in REPORT_OUTPUTS if (local / name).exists()], fs, root)
    written.location = f"{str(location).rstrip('/')}/report.md"
    return written
