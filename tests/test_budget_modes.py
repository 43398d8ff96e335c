"""budget_mode: every evaluation counts ("all"), or repeats are answered from a cache ("unique")."""
import json

import pytest

from controller_policy.spaces import build_space
from services.config import ConfigError, load_config
from services.search import run_search


@pytest.fixture
def six_arch_table(tmp_path):
    """A 1-layer macro space has 6 architectures: repeats are certain."""
    space = build_space("enas_macro", num_layers=1)
    table = {space.to_string([op]): {"valid": 0.1 * (op + 1)} for op in range(6)}
    path = tmp_path / "table.json"
    path.write_text(json.dumps(table))
    return path


def config(out, table, algo, mode, budget, **extra):
    return load_config(None, {"algo": algo, "seed": 1, "out": str(out), "budget": budget, "budget_mode": mode,
                              "space.name": "enas_macro", "space.params": {"num_layers": 1},
                              "evaluator.type": "table", "evaluator.table": str(table),
                              "evaluator.reward_key": "valid", "episodes_per_iteration": 4, **extra})


def rows(out):
    return [json.loads(line) for line in (out / "trajectory.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo", ["ppo", "reinforce", "rea", "random"])
def test_unique_mode_answers_repeats_from_the_cache_for_free(ray_session, six_arch_table, tmp_path, algo):
    extra = {"rea.population_size": 2, "rea.tournament_size": 1} if algo == "rea" else {}
    summary = run_search(config(tmp_path, six_arch_table, algo, "unique", budget=5, **extra))
    trajectory = rows(tmp_path)
    fresh = [r for r in trajectory if not r.get("cached")]
    assert len(fresh) == 5 == summary["evaluated"]  # the budget counts new architectures only
    assert len({r["arch"] for r in fresh}) == 5
    assert summary["answered_from_cache"] == len(trajectory) - 5
    first, seen = {r["arch"]: r["reward"] for r in fresh}, set()
    for r in trajectory:  # a repeat is marked and answered with the first evaluation's result
        assert r["reward"] == first[r["arch"]] and r.get("cached", False) == (r["arch"] in seen)
        seen.add(r["arch"])


def test_all_mode_counts_every_evaluation(ray_session, six_arch_table, tmp_path):
    summary = run_search(config(tmp_path, six_arch_table, "random", "all", budget=12))
    trajectory = rows(tmp_path)
    assert len(trajectory) == 12 == summary["evaluated"] and not any("cached" in r for r in trajectory)
    assert len({r["arch"] for r in trajectory}) <= 6


def test_unique_mode_resumes_with_its_cache(ray_session, six_arch_table, tmp_path):
    run_search(config(tmp_path / "full", six_arch_table, "ppo", "unique", budget=6))
    run_search(config(tmp_path / "part", six_arch_table, "ppo", "unique", budget=6), stop_after=1)
    run_search(config(tmp_path / "part", six_arch_table, "ppo", "unique", budget=6), resume=True)
    assert rows(tmp_path / "part") == rows(tmp_path / "full")


def test_unique_mode_stops_when_nothing_new_can_be_proposed(ray_session, six_arch_table, tmp_path):
    summary = run_search(config(tmp_path, six_arch_table, "random", "unique", budget=7))
    assert summary["evaluated"] == 6  # all there is; the search ends instead of looping
    assert "only repeats" in summary["stopped_early"]
    assert len(rows(tmp_path)) >= 20 * 7


def test_unique_mode_is_refused_with_a_supernet(tmp_path):
    with pytest.raises(ConfigError, match="budget_mode 'unique' needs a fixed evaluator"):
        load_config(None, {"budget_mode": "unique", "data.source": "synthetic"})
    with pytest.raises(ConfigError, match="budget_mode must be one of all, unique"):
        load_config(None, {"budget_mode": "some", "evaluator.type": "table", "evaluator.table": "t.json"})
