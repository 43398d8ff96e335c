"""`raynas compare`: one real Tune experiment, a trial per (algorithm, seed)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray import tune

from controller_policy.landscapes import nb201_landscape
from services.experiments.compare import resume_compare, run_compare
from services.config import load_config
from services.experiments.report import report_at


def test_compare_runs_a_trial_per_algorithm_and_seed(ray_session, tmp_path):
    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    cfg = load_config(None, {"space.name": "nb201", "evaluator.type": "table", "evaluator.table": str(table),
                             "evaluator.reward_key": "valid", "budget": 16})
    # A URI (as s3://... would be on a cluster): storage goes through pyarrow's filesystems.
    grid = run_compare(cfg, ["ppo", "rea", "random"], seeds=2, storage_path=(tmp_path / "tune").as_uri(), name="cmp")
    assert len(grid) == 6 and not grid.errors
    seen = set()
    for result in grid:
        seen.add((result.config["algo"], result.config["seed"]))
        assert result.metrics["search/archs_sampled"] == 16 and result.metrics["search/done"] == 1  # what compare reads
        rows = (Path(result.path) / "trajectory.jsonl").read_text().splitlines()
        assert len(rows) == 16 and result.checkpoint is not None
        assert len(list(Path(result.path).glob("checkpoint_*"))) <= 2  # keep_checkpoints (rea: 4 iterations)
        summary = json.loads((Path(result.path) / "summary.json").read_text())
        assert (summary["algo"], summary["seed"]) == (result.config["algo"], result.config["seed"])
    assert seen == {(a, s) for a in ("ppo", "rea", "random") for s in (0, 1)}
    again = resume_compare((tmp_path / "tune" / "cmp").as_uri())  # all finished: kept, nothing re-run
    assert len(again) == 6 and all(r.metrics["search/archs_sampled"] == 16 for r in again)
    where = report_at((tmp_path / "tune" / "cmp").as_uri()).location
    report = (tmp_path / "tune" / "cmp" / "report.md").read_text()
    assert where.endswith("/cmp/report.md") and "ppo reached" in report
    header, rows = report.split("| algorithm |")[1].split("\n", 1)
    entropy = ["| algorithm |" + header].pop().split(" | ").index("final entropy")
    cells = {row.split(" | ")[0].strip("| "): row.split(" | ") for row in rows.splitlines() if row.startswith("| ")}
    assert float(cells["ppo"][entropy].split(" ± ")[0]) > 0  # a table's trials: from their Tune results
    assert cells["rea"][entropy] == "n/a"  # REA samples from no policy
    assert (tmp_path / "tune" / "cmp" / "report.html").stat().st_size > 10_000


def test_compare_weight_sharing_trial_places_its_workers(ray_session, tmp_path):
    from tests.test_weight_sharing import tiny_config

    cfg = tiny_config(tmp_path / "unused")
    grid = run_compare(cfg, ["reinforce"], seeds=1, storage_path=str(tmp_path / "tune"), name="ws")
    (result,) = list(grid)
    assert result.error is None and result.metrics["supernet/archs_sampled"] == 16 and result.metrics["search/done"] == 1
    assert (Path(result.path) / "best_arch.json").exists() and (Path(result.path) / "metrics.csv").exists()


def table_config(tmp_path, budget):
    table = tmp_path / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    return load_config(None, {"space.name": "nb201", "evaluator.type": "table", "evaluator.table": str(table),
                              "evaluator.reward_key": "valid", "budget": budget, "episodes_per_iteration": 8})


class KillTrialProcess(tune.Callback):
    """SIGKILLs a trial's process when it reports: a crash, as when a node's process dies.
    From the second iteration on, so that the first one's checkpoint is registered with Tune."""

    def __init__(self, times_per_algo, from_iteration=2):
        self.times, self.kills, self.from_iteration = dict(times_per_algo), {}, from_iteration

    def on_trial_result(self, iteration, trials, trial, result, **info):
        algo = trial.config["algo"]
        if result["training_iteration"] >= self.from_iteration and self.kills.get(algo, 0) < self.times.get(algo, 0):
            self.kills[algo] = self.kills.get(algo, 0) + 1
            os.kill(result["pid"], signal.SIGKILL)


def assert_complete(result, budget):
    """Every architecture recorded once, in order, whatever restarts happened."""
    samples = [json.loads(line)["sample"] for line in (Path(result.path) / "trajectory.jsonl").read_text().splitlines()]
    assert samples == list(range(budget)) and result.metrics["search/archs_sampled"] == budget


def test_a_crashed_trial_is_retried_from_its_checkpoint_while_others_finish(ray_session, tmp_path):
    cfg = table_config(tmp_path, budget=24)  # 3 iterations of 8
    killer = KillTrialProcess({"ppo": 1, "reinforce": 99})  # ppo crashes once, reinforce every time
    grid = run_compare(cfg, ["ppo", "reinforce", "random"], seeds=1, storage_path=str(tmp_path / "tune"), name="faults",
                       max_failures=1, callbacks=[killer])
    by_algo = {r.config["algo"]: r for r in grid}
    assert killer.kills == {"ppo": 1, "reinforce": 2}  # the first run and its one retry
    ppo = by_algo["ppo"]
    assert ppo.error is None and ppo.metrics["training_iteration"] == 3
    assert ppo.metrics["iterations_since_restore"] == 2  # continued from iteration 1's checkpoint
    assert_complete(ppo, 24)
    assert by_algo["random"].error is None and by_algo["random"].metrics["iterations_since_restore"] == 3
    assert_complete(by_algo["random"], 24)
    failed = by_algo["reinforce"]
    assert failed.error is not None and "died" in str(failed.error).lower()
    assert len(grid.errors) == 1


def test_an_interrupted_experiment_resumes_mid_way(ray_session, tmp_path, capsys):
    # 60 iterations: long enough that Ctrl-C after the first checkpoint lands mid-way
    table_config(tmp_path, budget=480)
    storage, name = tmp_path / "tune", "interrupted"
    cmd = [sys.executable, "-m", "services.cli", "compare", "--algos", "ppo,random", "--seeds", "1",
           "--space", "nb201", "--evaluator", "table", "--table", str(tmp_path / "table.json"),
           "--reward-key", "valid", "--budget", "480", "--storage", str(storage), "--name", name, "--address", "local"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1], env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while not list((storage / name).glob("search_trial_*/checkpoint_*")):  # older ones are pruned
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
            time.sleep(0.5)
        os.kill(proc.pid, signal.SIGINT)  # Ctrl-C: Tune saves the experiment's state and stops
        output = proc.communicate(timeout=120)[0].decode()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the embedded cluster the CLI started
        except ProcessLookupError:
            pass
    assert "raynas compare --resume" in output, output[-3000:]
    assert re.search(r"\[raynas\] trial (ppo|random) seed 0 started; trials: 0 done, [12] running, 0 failed of 2",
                     output), output[-3000:]
    assert "Trial status:" not in output  # Tune's periodic table: only with --verbose
    assert output.startswith("[raynas] connecting to Ray: an embedded instance")  # said before the slow start
    assert f"[raynas] experiment {name}: 2 trials (ppo, random × 1 seeds) in {storage}/{name}" in output
    for noise in ("Configuration for experiment", "To visualize your results with TensorBoard",
                  "Checkpoint successfully created", "View detailed results here", "Experiment state snapshotting"):
        assert noise not in output, output[-3000:]
    before = {p.parent.name: len(list(p.parent.glob("checkpoint_*")))
              for p in (storage / name).glob("search_trial_*/params.json")}
    assert any(0 < n for n in before.values())

    grid = resume_compare(str(storage / name))
    assert len(grid) == 2 and not grid.errors
    for result in grid:
        assert_complete(result, 480)
        assert result.metrics["training_iteration"] == 60
    assert any(r.metrics["iterations_since_restore"] < 60 for r in grid)  # continued, not started over

    # `raynas compare --resume` of the finished experiment: its closing lines name the report and what next.
    from tests.test_jobs import run_cli

    code, out, err = run_cli(capsys, "compare", "--resume", str(storage / name))
    assert code == 0, err
    assert f"[raynas] report {storage / name}/report.md" in out
    assert "[raynas] Ranked by the test metric of the best-by-validation architecture (mean ± std over seeds): " in out
    found = re.search(r"\[raynas\] found  (\S.*)\n\[raynas\]        ([\d.]+): the test metric of the "
                      r"best-by-validation architecture \((ppo|random) seed 0, trial (search_trial_\S+)\)", out)
    assert found, out
    best = max((json.loads(line) for line in (storage / name / found.group(4) / "trajectory.jsonl").open()),
               key=lambda row: row["reward"])
    assert found.group(1) == best["arch"] and float(found.group(2)) == pytest.approx(best["metrics"]["test"], abs=1e-4)
    assert f"[raynas] next   open {storage / name}/report.html (the verdict, curves and table)" in out
