"""One seeded raynas search on a tabular landscape, through the real harness (``run_search``):
shared by ``tune_controllers.py`` and ``search_strategies.py``."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np


def best_curve(algo: str, table: str | Path, budget: int, seed: int, budget_mode: str = "all",
               setting: dict | None = None) -> np.ndarray:
    """Best reward so far after each budget-spending evaluation (``budget`` values; with
    ``budget_mode: unique`` answers from the cache spend nothing and are left out)."""
    from services.config import load_config
    from services.search import run_search

    setting = dict(setting or {})
    overrides = {"algo": algo, "seed": seed, "out": tempfile.mkdtemp(prefix=f"raynas-{algo}-"), "budget": budget,
                 "budget_mode": budget_mode, "space.name": "nb201", "evaluator.type": "table",
                 "evaluator.table": str(table), "evaluator.reward_key": "valid"}
    if "episodes_per_iteration" in setting:
        overrides["episodes_per_iteration"] = setting.pop("episodes_per_iteration")
    if setting:
        overrides[algo] = setting
    run_search(load_config(None, overrides))
    rows = [json.loads(line) for line in (Path(overrides["out"]) / "trajectory.jsonl").read_text().splitlines()]
    spent = [r["reward"] for r in rows if not r.get("cached", False)]
    return np.maximum.accumulate(spent)


def rank_of(values: np.ndarray, reward: float) -> int:
    """1 + the number of the landscape's architectures that score better than ``reward``."""
    return 1 + int((np.asarray(values) > reward).sum())
