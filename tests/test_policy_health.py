"""The controller's health (controller_policy/health.py): saturation of its squashed logits, its
policy's change on probe architectures, the frozen-policy warning, and the shipped defaults kept
out of saturation on a noisy table (the supernet's case)."""
import csv
import json
import math

import numpy as np
import pytest
import torch

from controller_policy import ControllerConfig, ENASController, build_space
from controller_policy.evaluators import TableEvaluator
from controller_policy.health import FROZEN_UPDATES, PolicyMonitor
from controller_policy.landscapes import nb201_landscape
from services.config import ConfigError, load_config
from services.search import run_search


def test_pre_tanh_is_what_the_squash_reads():
    torch.manual_seed(0)
    c = ENASController(build_space("nb201"), ControllerConfig(temperature=5.0, tanh_constant=2.5))
    out = c.sample(8)
    legal = torch.isfinite(out.logits)
    assert torch.allclose(out.logits[legal], 2.5 * torch.tanh(out.pre_tanh[legal]))


def test_monitor_sees_saturation_and_a_frozen_policy_and_warns_once():
    space = build_space("nb201")
    c = ENASController(space, ControllerConfig(tanh_constant=2.5))
    monitor = PolicyMonitor(c, seed=0)
    fresh = monitor.measure(c)
    assert fresh.saturated == 0 and fresh.exactly_saturated == 0 and fresh.max_pre_tanh < 1
    assert math.isnan(fresh.policy_change)
    with torch.no_grad():  # what Adam did to REINFORCE's op head: pre-tanh values far past ~9
        c.heads["edge_op"].weight.mul_(2000.0)
    health = monitor.measure(c)
    assert health.exactly_saturated > 0.5 and health.saturated >= health.exactly_saturated
    assert health.max_pre_tanh > 9 and health.policy_change > 0.1
    assert not monitor.frozen and monitor.warning() is None
    for _ in range(FROZEN_UPDATES):
        assert monitor.measure(c).policy_change == 0.0
    assert monitor.frozen
    warning = monitor.warning()
    assert "stopped moving" in warning and "exactly ±1" in warning and "reinforce.lr" in warning
    assert monitor.warning() is None  # once


def test_noisy_table_adds_seeded_noise_of_the_spread_and_keeps_the_metrics(tmp_path):
    space = build_space("nb201")
    path = tmp_path / "t.json"
    table = nb201_landscape(3)
    path.write_text(json.dumps(table))
    spread = np.std([m["valid"] for m in table.values()])
    archs = [space.sample(np.random.default_rng(i)) for i in range(400)]
    noisy = TableEvaluator(space, path, "valid", noise=2.0, seed=1).evaluate(archs)
    again = TableEvaluator(space, path, "valid", noise=2.0, seed=1).evaluate(archs)
    assert [e.reward for e in noisy] == [e.reward for e in again]
    residual = np.array([e.reward - e.metrics["valid"] for e in noisy])
    assert abs(residual.std() / spread - 2.0) < 0.2 and abs(residual.mean()) < 0.3 * spread
    assert all(e.metrics == table[space.to_string(a)] for e, a in zip(noisy, archs))
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        TableEvaluator(space, path, "valid", noise=-1)
    with pytest.raises(ConfigError, match="evaluator.noise must be a finite number >= 0"):
        load_config(None, {"evaluator.type": "table", "evaluator.table": str(path), "evaluator.noise": -0.5})
    with pytest.raises(ConfigError, match="evaluator.noise applies to a table"):
        load_config(None, {"evaluator.noise": 1.0, "data.source": "synthetic"})


@pytest.fixture(scope="module")
def landscape(tmp_path_factory):
    path = tmp_path_factory.mktemp("noisy") / "landscape.json"
    path.write_text(json.dumps(nb201_landscape(7)))
    return path


@pytest.mark.parametrize("algo", ["reinforce", "ppo"])
@pytest.mark.parametrize("seed", [1, 3])
def test_shipped_defaults_do_not_freeze_on_a_noisy_table(ray_session, landscape, tmp_path, algo, seed, capsys):
    """The supernet's case on a table: rewards with 2x the spread as noise, tanh 2.5 as the
    weight-sharing presets use, 40 controller updates with the shipped defaults. REINFORCE's old
    lr (0.097) put every squashed logit of seed 3 at exactly ±1 here and the policy stopped."""
    cfg = load_config(None, {"algo": algo, "seed": seed, "out": str(tmp_path), "space.name": "nb201",
                             "evaluator.type": "table", "evaluator.table": str(landscape),
                             "evaluator.reward_key": "valid", "evaluator.noise": 2.0,
                             "controller.tanh_constant": 2.5, "budget": 1_000_000})
    results = []
    run_search(cfg, on_result=lambda _algo, result: results.append(result["search"]), stop_after=40)
    assert len(results) == 40
    last = results[-1]
    assert last["policy_exactly_saturated"] < 0.5, last
    assert min(r["policy_change"] for r in results[-FROZEN_UPDATES:]) > 1e-3, [r["policy_change"] for r in results]
    assert "stopped moving" not in capsys.readouterr().out


def test_weight_sharing_metrics_carry_the_policy_health(ray_session, tmp_path):
    from tests.test_weight_sharing import tiny_config

    cfg = tiny_config(tmp_path, algo="reinforce", **{"weight_sharing.warmup_epochs": 1})
    run_search(cfg)
    with (tmp_path / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    warm = cfg.weight_sharing.warmup_epochs
    for row in rows[warm:]:
        assert 0 <= float(row["controller_saturated"]) <= 1 and float(row["controller_max_pre_tanh"]) > 0
        assert float(row["controller_policy_change"]) > 0
    for row in rows[:warm]:
        assert math.isnan(float(row["controller_saturated"]))


def _metrics_csv(out, **last):
    row = {"epoch": 3, "controller_entropy": 3.2, "controller_saturated": 0.1, "controller_exactly_saturated": 0.0,
           "controller_max_pre_tanh": 2.0, "controller_policy_change": 0.2, **last}
    with (out / "metrics.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, list(row))
        writer.writeheader()
        writer.writerow(row)


def test_the_closing_summary_shows_the_policy_and_warns_of_a_frozen_one_and_a_parameter_free_cell(tmp_path):
    from services.cli.summary import controller_lines

    cfg = load_config(None, {"out": str(tmp_path), "space.name": "nb201", "data.source": "synthetic"})
    space = build_space("nb201")
    convs = space.to_string([3, 2, 3, 1, 3, 2])
    pools = space.to_string([1, 4, 0, 1, 4, 1])
    _metrics_csv(tmp_path)
    (line,) = controller_lines(cfg, convs)
    assert line.startswith("policy final entropy 3.20; 10% of its squashed logits") and "0% at exactly ±1" in line
    _metrics_csv(tmp_path, controller_exactly_saturated=0.8, controller_saturated=0.9, controller_policy_change=0.0)
    lines = controller_lines(cfg, pools)
    assert len(lines) == 3 and "80% at exactly ±1" in lines[0]
    assert lines[1].startswith("WARNING the controller's policy froze")
    assert lines[2].startswith("WARNING the derived architecture is parameter-free")


@pytest.mark.parametrize("algo", ["ppo", "reinforce"])
def test_noisy_rewards_get_their_own_defaults_and_the_user_still_wins(tmp_path, algo):
    from controller_policy.algorithms import ALGORITHMS
    from services.search import algorithm_config
    from tests.test_weight_sharing import tiny_config

    noisy = ALGORITHMS[algo].noisy_reward_defaults
    table = {"algo": algo, "evaluator.type": "table", "evaluator.table": "t.json"}
    clean = algorithm_config(load_config(None, table), str(tmp_path))
    assert clean.lr == ALGORITHMS[algo]().lr  # a noise-free table: the table-tuned defaults
    for cfg in (load_config(None, {**table, "evaluator.noise": 2.0}), tiny_config(tmp_path, algo=algo)):
        built = algorithm_config(cfg, str(tmp_path))
        mine = {("ppo_minibatches" if k == "minibatches" else k): v for k, v in vars(getattr(cfg, algo)).items()}
        assert noisy and all(getattr(built, k) == (v if mine.get(k) is None else mine[k])  # tiny_config sets some
                             for k, v in noisy.items() if k != "episodes_per_iteration")
        if "episodes_per_iteration" in noisy and cfg.episodes_per_iteration is None:
            assert built.episodes_per_iteration == noisy["episodes_per_iteration"]
    mine = algorithm_config(load_config(None, {**table, "evaluator.noise": 2.0, f"{algo}.lr": 0.123}), str(tmp_path))
    assert mine.lr == 0.123


def test_grad_clip_zero_means_no_clipping_and_negative_is_refused(tmp_path):
    from services.search import algorithm_config

    table = {"algo": "ppo", "evaluator.type": "table", "evaluator.table": "t.json"}
    assert algorithm_config(load_config(None, {**table, "ppo.grad_clip": 0}), str(tmp_path)).grad_clip is None
    assert algorithm_config(load_config(None, {**table, "ppo.grad_clip": 2.5}), str(tmp_path)).grad_clip == 2.5
    with pytest.raises(ConfigError, match=r"reinforce.grad_clip must be a finite number >= 0 \(0: no clipping\)"):
        load_config(None, {**table, "reinforce.grad_clip": -1})


def test_ppo_baseline_and_entropy_schedule_reach_the_algorithm_and_are_checked(tmp_path):
    from services.search import algorithm_config

    table = {"algo": "ppo", "evaluator.type": "table", "evaluator.table": "t.json", "budget": 50}
    built = algorithm_config(load_config(None, {**table, "ppo.baseline": "batch", "ppo.entropy_coeff": 0.05,
                                                "ppo.entropy_coeff_final": 0.01}), str(tmp_path))
    assert built.baseline == "batch" and built.use_critic is False
    assert built.get_default_rl_module_spec().model_config["learned_value"] is False
    assert built.entropy_schedule() == [[0, 0.05], [50 * 6, 0.01]]  # NAS-Bench-201: 6 decisions per cell
    default = algorithm_config(load_config(None, table), str(tmp_path))
    assert default.baseline == "batch" and not default.use_critic
    assert default.entropy_schedule() == default.entropy_coeff
    # noisy rewards keep the learned value (their own tuned defaults)
    noisy = algorithm_config(load_config(None, {**table, "evaluator.noise": 2.0}), str(tmp_path))
    assert noisy.baseline == "value" and noisy.use_critic
    with pytest.raises(ConfigError, match=r"ppo.baseline must be one of value, batch .*got 'ema'"):
        load_config(None, {**table, "ppo.baseline": "ema"})
    with pytest.raises(ConfigError, match=r"ppo.entropy_coeff_final must be >= 0"):
        load_config(None, {**table, "ppo.entropy_coeff_final": -0.1})
