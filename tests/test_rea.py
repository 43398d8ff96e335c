"""Regularised evolution (``--algo rea``) through the search harness."""
import json

import numpy as np
import pytest

from controller_policy.algorithms.rea import mutate
from controller_policy.spaces import build_space
from services.config import ConfigError, load_config
from services.search import run_search


@pytest.mark.parametrize("name,params", [("enas_macro", {"num_layers": 4}), ("enas_micro", {"num_nodes": 3}),
                                         ("nb201", {})])
def test_mutation_changes_exactly_one_decision_to_a_legal_choice(name, params):
    space, rng = build_space(name, **params), np.random.default_rng(0)
    for _ in range(200):
        parent = space.sample(rng)
        child = mutate(space, parent, rng)
        assert space.validate(child) == child  # legal under the masks (micro inputs: earlier nodes only)
        assert sum(a != b for a, b in zip(parent, child)) == 1


def table_config(out, table, **overrides):
    return load_config(None, {"algo": "rea", "seed": 2, "out": str(out), "space.name": "nb201",
                              "evaluator.type": "table", "evaluator.table": str(table),
                              "evaluator.reward_key": "valid", "episodes_per_iteration": 8,
                              "rea.population_size": 16, "rea.tournament_size": 4, **overrides})


def read(out):
    return [json.loads(line) for line in (out / "trajectory.jsonl").read_text().splitlines()]


def test_rea_on_a_table_evolves_resumes_and_beats_its_random_start(ray_session, additive_table, tmp_path):
    table, optimum = additive_table
    summary = run_search(table_config(tmp_path / "full", table, budget=200))
    rows = read(tmp_path / "full")
    assert summary["evaluated"] == 200 and summary["algo"] == "rea" and [r["sample"] for r in rows] == list(range(200))
    rewards = [r["reward"] for r in rows]
    assert np.mean(rewards[-40:]) > np.mean(rewards[:16]) + 0.1  # the population climbs
    # children after the random start are one mutation away from an earlier architecture
    space = build_space("nb201")
    seen = [space.from_string(r["arch"]) for r in rows]
    assert all(min(sum(a != b for a, b in zip(child, old)) for old in seen[:i]) <= 1 for i, child in
               enumerate(seen[16:], start=16))
    # interrupted and resumed: the same trajectory (population and RNG are checkpointed)
    run_search(table_config(tmp_path / "part", table, budget=200), stop_after=10)
    run_search(table_config(tmp_path / "part", table, budget=200), resume=True)
    assert read(tmp_path / "part") == rows


def test_rea_config_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="rea.tournament_size must be > 0"):
        load_config(None, {"algo": "rea", "rea.tournament_size": 0, "evaluator.type": "table", "evaluator.table": "t"})


def test_rea_with_weight_sharing_derives_from_its_population(ray_session, tmp_path):
    from tests.test_weight_sharing import tiny_config

    cfg = tiny_config(tmp_path, algo="rea", **{"rea.population_size": 4, "rea.tournament_size": 2})
    summary = run_search(cfg)
    assert summary["evaluated"] == 16
    rows = read(tmp_path)
    best = json.loads((tmp_path / "best_arch.json").read_text())
    top = json.loads((tmp_path / "top_archs.json").read_text())
    # the final population: the last 4 children; the derivation scores them on the whole split
    assert {t["arch"] for t in top} <= {r["arch"] for r in rows[-4:]} and best == top[0]
