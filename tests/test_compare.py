"""`raynas compare`: one real Tune experiment, a trial per (algorithm, seed)."""
import json
from pathlib import Path

from controller_policy.landscapes import nb201_landscape
from services.compare import resume_compare, run_compare
from services.config import load_config


def test_compare_runs_a_trial_per_algorithm_and_seed(ray_session, tmp_path):
    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    cfg = load_config(None, {"space.name": "nb201", "evaluator.type": "table", "evaluator.table": str(table),
                             "evaluator.reward_key": "valid", "budget": 16})
    grid = run_compare(cfg, ["ppo", "random"], seeds=2, storage=str(tmp_path / "tune"), name="cmp")
    assert len(grid) == 4 and not grid.errors
    seen = set()
    for result in grid:
        seen.add((result.config["algo"], result.config["seed"]))
        assert result.metrics["search/archs_sampled"] == 16
        rows = (Path(result.path) / "trajectory.jsonl").read_text().splitlines()
        assert len(rows) == 16 and result.checkpoint is not None
        summary = json.loads((Path(result.path) / "summary.json").read_text())
        assert (summary["algo"], summary["seed"]) == (result.config["algo"], result.config["seed"])
    assert seen == {("ppo", 0), ("ppo", 1), ("random", 0), ("random", 1)}
    again = resume_compare(str(tmp_path / "tune" / "cmp"))  # all finished: kept, nothing re-run
    assert len(again) == 4 and all(r.metrics["search/archs_sampled"] == 16 for r in again)


def test_compare_weight_sharing_trial_places_its_workers(ray_session, tmp_path):
    from tests.test_weight_sharing import tiny_config

    cfg = tiny_config(tmp_path / "unused")
    grid = run_compare(cfg, ["reinforce"], seeds=1, storage=str(tmp_path / "tune"), name="ws")
    (result,) = list(grid)
    assert result.error is None and result.metrics["supernet/archs_sampled"] == 16
    assert (Path(result.path) / "best_arch.json").exists() and (Path(result.path) / "metrics.csv").exists()
