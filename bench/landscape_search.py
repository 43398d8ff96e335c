"""One seeded raynas search on a tabular landscape, through the real harness (``run_search``):
shared by ``tune_controllers.py`` and ``search_strategies.py``."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def table_search(algo: str, table: str | Path, budget: int, seed: int, budget_mode: str = "all",
                 setting: dict | None = None, overrides: dict[str, Any] | None = None,
                 on_result=None) -> list[dict]:
    """The trajectory rows of one search (``setting``: the algorithm's section, plus
    ``episodes_per_iteration``; ``overrides``: any other dotted config keys)."""
    from services.config import load_config
    from services.search import run_search

    setting = dict(setting or {})
    out = tempfile.mkdtemp(prefix=f"raynas-{algo}-")
    keys = {"algo": algo, "seed": seed, "out": out, "budget": budget, "budget_mode": budget_mode,
            "space.name": "nb201", "evaluator.type": "table", "evaluator.table": str(table),
            "evaluator.reward_key": "valid", **(overrides or {})}
    if "episodes_per_iteration" in setting:
        keys["episodes_per_iteration"] = setting.pop("episodes_per_iteration")
    if setting:
        keys[algo] = setting
    run_search(load_config(None, keys), on_result=on_result)
    return [json.loads(line) for line in (Path(out) / "trajectory.jsonl").read_text().splitlines()]


def test_of_best_curve(rows: list[dict], metric: str = "test") -> np.ndarray:
    """After each budget-spending evaluation: ``metric`` of the best-by-reward architecture so far
    (what a user gets: the cell the search picks, judged on data it never saw)."""
    rows = [r for r in rows if not r.get("cached", False)]
    best = np.maximum.accumulate([r["reward"] for r in rows])
    out, current = [], None
    for r, b in zip(rows, best):
        if current is None or r["reward"] >= b:
            current = r["metrics"][metric]
        out.append(current)
    return np.asarray(out)


def rank_of(values: np.ndarray, reward: float) -> int:
    """1 + the number of the landscape's architectures that score better than ``reward``."""
    return 1 + int((np.asarray(values) > reward).sum())
