"""Searching under a budget: exact costs, MnasNet's soft reward and hard limits, pinned by hand and
run through a real tabular search whose constrained optimum is known by brute force."""
import itertools
import json

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from controller_policy.objective import Constraint, Constraints, feasible, shaped_reward
from controller_policy.spaces import build_space
from services.config import ConfigError, load_config
from services.search import run_search
from supernet_worker.costs import CostModel, Skeleton
from supernet_worker.supernets import SupernetConfig, build_child

SKELETONS = [
    Skeleton("nb201", {}, SupernetConfig(channels=8, num_cells=2)),
    Skeleton("enas_macro", {"num_layers": 6}, SupernetConfig(channels=8, widen_at_reduction=True, auxiliary=True)),
    Skeleton("enas_micro", {"num_nodes": 3}, SupernetConfig(channels=8, num_cells=1), in_channels=1, image_size=28,
             num_classes=7),
]


@pytest.mark.parametrize("skeleton", SKELETONS, ids=lambda s: s.space)
def test_costs_are_exact_on_every_space(skeleton):
    """Against the built child: its parameters (the auxiliary head excepted: it only trains) and
    torch's own FLOP counter on a real forward pass of one image."""
    model = CostModel(skeleton)
    space = build_space(skeleton.space, **skeleton.space_params)
    torch.manual_seed(0)
    for arch in space.sample_batch(np.random.default_rng(0), 4).tolist():
        child = build_child(space, arch, skeleton.supernet, skeleton.in_channels, skeleton.num_classes).eval()
        with FlopCounterMode(display=False) as counter:
            child(torch.randn(1, skeleton.in_channels, skeleton.image_size, skeleton.image_size))
        params = sum(p.numel() for name, p in child.named_parameters() if not name.startswith("aux_head"))
        assert model(arch) == {"params_m": params / 1e6, "flops_m": counter.get_total_flops() / 1e6}, arch


def test_nb201_costs_span_the_benchmarks_range():
    """NAS-Bench-201's skeleton (16 filters, 5 cells per stage): its paper gives 0.07 to 1.53 MB of
    parameters, the extremes being the cells of only 'none' and only 3x3 convolutions."""
    model = CostModel(Skeleton("nb201", {}, SupernetConfig(channels=16, num_cells=5)))
    assert round(model([0] * 6)["params_m"], 2) == 0.07
    assert round(model([3] * 6)["params_m"], 2) == 1.53
    assert model([3] * 6)["flops_m"] > model([2] * 6)["flops_m"] > model([1] * 6)["flops_m"]


def test_soft_and_hard_rewards_by_hand():
    soft = Constraints(flops_m=Constraint(target=100.0))
    assert shaped_reward(0.9, {"flops_m": 100.0}, soft, 0.0) == 0.9
    assert shaped_reward(0.9, {"flops_m": 200.0}, soft, 0.0) == pytest.approx(0.9 * 2 ** -0.07)  # ~4.7 % less
    assert shaped_reward(0.9, {"flops_m": 50.0}, soft, 0.0) == pytest.approx(0.9 * 2 ** 0.07)
    hard = Constraints(params_m=Constraint(target=1.0, mode="hard"))
    assert shaped_reward(0.9, {"params_m": 1.0}, hard, -1.0) == 0.9  # at the target is within it
    # above it: the penalty, lowered by the relative excess (the search is led back to the budget)
    assert shaped_reward(0.9, {"params_m": 1.01}, hard, -1.0) == pytest.approx(-1.01)
    assert shaped_reward(0.1, {"params_m": 3.0}, hard, 0.0) == pytest.approx(-2.0)
    two_hard = Constraints(params_m=Constraint(1.0, "hard"), flops_m=Constraint(10.0, "hard"))
    assert shaped_reward(0.9, {"params_m": 1.5, "flops_m": 30.0}, two_hard, 0.0) == pytest.approx(-2.0)  # the worst
    both = Constraints(params_m=Constraint(target=1.0, mode="hard"), flops_m=Constraint(target=10.0, weight=-0.5))
    assert shaped_reward(0.8, {"params_m": 0.5, "flops_m": 40.0}, both, 0.0) == pytest.approx(0.8 * 4 ** -0.5)
    assert feasible({"params_m": 0.5, "flops_m": 40.0}, both) and not feasible({"params_m": 2, "flops_m": 1}, both)


@pytest.mark.parametrize("overrides, message", [
    ({"objective.constraints.flops_m": {"mode": "hard"}}, "objective.constraints.flops_m.target is required"),
    ({"objective.constraints.flops_m": {"target": 0}}, r"flops_m.target must be a positive number, got 0"),
    ({"objective.constraints.params_m": {"target": 1, "mode": "strict"}}, "must be one of soft, hard, got 'strict'"),
    ({"objective.constraints.params_m": {"target": 1, "weight": 0.07}}, r"weight must be <= 0"),
    ({"objective.constraints.latency": {"target": 1}}, r"unknown key 'objective.constraints.latency' \(known: "),
    ({"objective.constraints.flops_m": 5}, r"flops_m must be a mapping or null, got 5 \(an integer\); "
                                           r"e.g. \{target: ...\}"),
    ({"objective.num_classes": 1}, "objective.num_classes must be >= 2 or null, got 1"),
])
def test_bad_objectives_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"evaluator.type": "table", "evaluator.table": "t.json", **overrides})


@pytest.fixture(scope="module")
def macro_table(tmp_path_factory):
    """Every architecture of a 2-layer macro space (72), with rewards unrelated to their cost."""
    space = build_space("enas_macro", num_layers=2)
    rng = np.random.default_rng(3)
    archs = [list(a) for a in itertools.product(*(range(d.num_choices) for d in space.decisions))]
    table = {space.to_string(a): {"valid": float(rng.uniform(50, 90))} for a in archs}
    path = tmp_path_factory.mktemp("objective") / "table.json"
    path.write_text(json.dumps(table))
    return path, space, archs, table


@pytest.mark.parametrize("algo", ["random", "ppo", "reinforce", "rea"])
def test_a_tabular_search_under_a_hard_flops_budget_keeps_to_it(ray_session, macro_table, tmp_path, algo):
    """Every algorithm sees the shaped reward and records what was measured; random search in
    budget_mode unique with the whole space as budget sees every child, so it must find the best
    one within the budget (brute force says which)."""
    path, space, archs, table = macro_table
    costs = CostModel(Skeleton("enas_macro", {"num_layers": 2}, SupernetConfig(channels=8)))
    flops = sorted(costs(a)["flops_m"] for a in archs)
    target = flops[len(flops) // 3]  # a third of the space meets it
    within = [space.to_string(a) for a in archs if costs(a)["flops_m"] <= target]
    optimum = max(within, key=lambda key: table[key]["valid"])
    assert optimum != max(table, key=lambda key: table[key]["valid"])  # the budget changes the answer

    extra = {"rea.population_size": 4, "rea.tournament_size": 2} if algo == "rea" else {}
    cfg = load_config(None, {"algo": algo, "seed": 0, "out": str(tmp_path), "budget": 72, "budget_mode": "unique",
                             "space.name": "enas_macro", "space.params": {"num_layers": 2},
                             "evaluator.type": "table", "evaluator.table": str(path), "evaluator.reward_key": "valid",
                             "supernet.channels": 8, "objective.penalty": -1.0,
                             "objective.constraints.flops_m": {"target": target, "mode": "hard"}, **extra})
    summary = run_search(cfg)
    rows = [json.loads(line) for line in (tmp_path / "trajectory.jsonl").read_text().splitlines()]
    for row in rows:  # what was measured, what it costs, what was shaped
        assert row["measured"] == table[row["arch"]]["valid"]
        assert row["costs"] == costs(space.from_string(row["arch"]))
        assert row["feasible"] == (row["costs"]["flops_m"] <= target)
        assert row["reward"] == pytest.approx(row["measured"] if row["feasible"] else
                                              -1.0 - (row["costs"]["flops_m"] / target - 1))
    best = json.loads((tmp_path / "best_arch.json").read_text())
    assert summary["best"]["feasible"] and best["costs"]["flops_m"] <= target and best["arch"] in within
    if algo == "random":
        assert len({r["arch"] for r in rows}) == 72 and best["arch"] == optimum
    assert summary["objective"] == {"constraints": {"flops_m": {"target": target, "mode": "hard", "weight": -0.07}},
                                    "penalty": -1.0}


def test_a_weight_sharing_search_derives_a_child_within_a_hard_params_budget(ray_session, tmp_path):
    from tests.test_weight_sharing import tiny_config

    space = build_space("enas_macro", num_layers=3)
    costs = CostModel(Skeleton("enas_macro", {"num_layers": 3}, SupernetConfig(channels=4), 3, 16, 10))
    params = sorted(costs(a)["params_m"] for a in space.sample_batch(np.random.default_rng(0), 200).tolist())
    target = params[len(params) // 2]
    cfg = tiny_config(tmp_path, **{"weight_sharing.derive_samples": 12,
                                   "objective.constraints.params_m": {"target": target, "mode": "hard"}})
    run_search(cfg)
    rows = [json.loads(line) for line in (tmp_path / "trajectory.jsonl").read_text().splitlines()]
    assert all(r["reward"] == pytest.approx(r["measured"] if r["costs"]["params_m"] <= target else
                                            -(r["costs"]["params_m"] / target - 1)) for r in rows)
    top = json.loads((tmp_path / "top_archs.json").read_text())
    assert top[0] == json.loads((tmp_path / "best_arch.json").read_text())
    assert top[0]["costs"] == costs(top[0]["actions"]) and top[0]["feasible"]  # the skeleton of the data searched
    ranks = [(c["feasible"], c["score"]) for c in top]
    assert ranks == sorted(ranks, reverse=True)  # within the budget first, then by score


@pytest.fixture(scope="module")
def tiny_latency_table(tmp_path_factory):
    from supernet_worker.latency import Timing, profile

    skeleton = Skeleton("nb201", {}, SupernetConfig(channels=4, num_cells=1), image_size=8)
    table = profile(skeleton, "cpu", Timing(warmup=1, repeats=3), fit_children=3)
    path = tmp_path_factory.mktemp("latency") / "lut.json"
    path.write_text(json.dumps(table))
    return skeleton, table, path


def test_a_latency_table_times_every_op_and_predicts_a_child_as_their_sum(tiny_latency_table):
    from supernet_worker.latency_table import LatencyTable

    skeleton, table, path = tiny_latency_table
    # 3 stages x 6 edges x 4 ops with a module ('none' has none); the stages after the first start
    # with their reduction block, so their cell is block 1
    ops = {f"stages.{s}.{int(s > 0)}.edges.{e}.{op}" for s in range(3) for e in range(6) for op in range(1, 5)}
    assert set(table["ops_ms"]) == ops and all(t > 0 for t in table["ops_ms"].values())
    assert table["device"] == "cpu" and table["timing"]["repeats"] == 3 and table["versions"]["torch"]
    assert len(table["fit"]["residuals_ms"]) == 3 and table["fixed_ms"] == sorted(table["fit"]["residuals_ms"])[1]
    latency = LatencyTable(path)
    latency.check(skeleton, "cpu")
    model = CostModel(skeleton, latency)
    arch = [0, 1, 2, 3, 4, 3]
    expected = table["fixed_ms"] + sum(table["ops_ms"][f"stages.{s}.{int(s > 0)}.edges.{e}.{op}"]
                                       for s in range(3) for e, op in enumerate(arch) if op)
    assert model(arch)["latency_ms"] == pytest.approx(expected)
    assert table["untimed"] == []  # every nb201 op was met while profiling
    with_gap = dict(table, untimed=["stages.0.0.edges.5.3"])
    gap_file = path.with_name("gap.json")
    gap_file.write_text(json.dumps(with_gap))
    with pytest.raises(ValueError, match="has no time for stages.0.0.edges.5.3, which this child holds"):
        CostModel(skeleton, LatencyTable(gap_file))(arch)


def test_a_latency_table_for_another_network_or_device_is_refused(tiny_latency_table, tmp_path):
    import dataclasses

    from services.inputs import check_inputs
    from supernet_worker.latency_table import LatencyTable

    skeleton, table, path = tiny_latency_table
    latency = LatencyTable(path)
    with pytest.raises(ValueError, match=r"profiled for supernet.channels 4, but this search counts costs for "
                                         r"supernet.channels 8: profile again"):
        latency.check(dataclasses.replace(skeleton, supernet=SupernetConfig(channels=8)), "cpu")
    with pytest.raises(ValueError, match="profiled for device 'cpu', but this search counts costs for device 'cuda'"):
        latency.check(skeleton, "cuda")
    with pytest.raises(ValueError, match="profiled for input"):
        latency.check(dataclasses.replace(skeleton, image_size=32), "cpu")
    (tmp_path / "other.json").write_text(json.dumps({"ops": {}}))
    with pytest.raises(ValueError, match="is not a latency table written by `raynas profile`"):
        LatencyTable(tmp_path / "other.json")
    # a search checks its table before anything starts: a table search counts at CIFAR-10's input
    table_file = tmp_path / "t.json"
    space = build_space("nb201")
    table_file.write_text(json.dumps({space.to_string(a): 1.0 for a in
                                      itertools.product(*(range(d.num_choices) for d in space.decisions))}))
    cfg = load_config(None, {"evaluator.type": "table", "evaluator.table": str(table_file),
                             "supernet.channels": 4, "objective.latency_table": str(path),
                             "objective.constraints.latency_ms": {"target": 1.0, "mode": "hard"}})
    with pytest.raises(ValueError, match="profiled for input \\[3, 8\\], but this search counts costs for input "
                                         "\\[3, 32\\]"):
        check_inputs(cfg)
    check_inputs(dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, image_size=8)))


def test_a_latency_constraint_without_a_table_is_refused_at_once(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "services.cli", "search", "--space", "nb201", "--evaluator", "table",
                           "--table", str(tmp_path / "t.json"), "--max-latency-ms", "2.5"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr == (
        "raynas: error: objective.constraints.latency_ms needs objective.latency_table (--latency-table FILE), a "
        "table of op latencies: raynas profile --space SPACE --out FILE\n")


def test_raynas_profile_writes_a_table_a_search_accepts(tmp_path):
    import subprocess
    import sys

    from services.cli.summary import compare_command
    from services.inputs import check_inputs
    from supernet_worker.latency_table import LatencyTable

    out = tmp_path / "lut.json"
    proc = subprocess.run([sys.executable, "-m", "services.cli", "profile", "--space", "nb201", "--set",
                           "supernet.channels=4", "--set", "objective.image_size=8", "--repeats", "2", "--warmup", "1",
                           "--threads", "1", "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "72 ops timed" in proc.stdout and str(out) in proc.stdout
    table = LatencyTable(out)
    assert table.data["timing"]["threads"] == 1 and table.skeleton() == Skeleton(
        "nb201", {}, SupernetConfig(channels=4), image_size=8)
    space = build_space("nb201")
    table_file = tmp_path / "t.json"
    table_file.write_text(json.dumps({space.to_string(a): 1.0 for a in
                                      itertools.product(*(range(d.num_choices) for d in space.decisions))}))
    cfg = load_config(None, {"evaluator.type": "table", "evaluator.table": str(table_file), "supernet.channels": 4,
                             "objective.image_size": 8, "objective.latency_table": str(out),
                             "objective.constraints.latency_ms": {"target": 1.5, "mode": "hard"}})
    check_inputs(cfg)
    # the next command a search prints counts costs the same way
    assert compare_command(cfg).endswith(f"--max-latency-ms 1.5 --latency-table {out} --set objective.image_size=8 "
                                         "--set supernet.channels=4")
