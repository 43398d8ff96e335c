"""Ctrl-C as a terminal sends it (SIGINT to the command's whole process group, Ray's own processes
included) at several points of a command: one line on stderr saying how to go on, exit 130, what was
written kept and resumable; a second Ctrl-C ends the command at once."""
import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller_policy.landscapes import nb201_landscape
from tests.test_progress import TINY_SEARCH

ROOT = Path(__file__).resolve().parents[1]
RAYNAS = [sys.executable, "-m", "services.cli"]


class Command:
    """A raynas command in a session of its own, as in a terminal; stdout read line by line."""

    def __init__(self, *argv: str, cwd: Path = ROOT) -> None:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.proc = subprocess.Popen([*RAYNAS, *argv], cwd=cwd, env=env, start_new_session=True, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines: list[str] = []

    def wait_for_line(self, words: str, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while not any(words in line for line in self.lines):
            line = self.proc.stdout.readline()
            assert line and time.time() < deadline, f"no {words!r} in: {''.join(self.lines)[-3000:]}"
            self.lines.append(line)

    def wait_for_file(self, pattern: str, timeout: float = 240) -> None:
        deadline = time.time() + timeout
        while not glob.glob(pattern):
            assert self.proc.poll() is None and time.time() < deadline, self.proc.stderr.read()[-3000:]
            time.sleep(0.1)

    def interrupt(self) -> float:
        os.killpg(self.proc.pid, signal.SIGINT)
        return time.time()

    def finish(self, timeout: float = 120) -> tuple[int, str, str]:
        try:
            out, err = self.proc.communicate(timeout=timeout)
        finally:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of its embedded Ray
            except ProcessLookupError:
                pass
        return self.proc.returncode, "".join(self.lines) + out, err


@pytest.fixture
def table_search(tmp_path):
    table = tmp_path / "landscape.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    out = tmp_path / "out"
    return out, ["search", "--space", "nb201", "--evaluator", "table", "--table", str(table), "--reward-key", "valid",
                 "--budget", "800", "--out", str(out)]


def test_a_search_interrupted_before_ray_started_says_there_is_nothing_to_resume(table_search):
    out, argv = table_search
    command = Command(*argv)
    time.sleep(0.5)  # still importing
    command.interrupt()
    code, stdout, stderr = command.finish()
    assert code == 130, stderr
    assert stderr in ("raynas: interrupted; no checkpoint was written yet: run the same command again to start over\n",
                      "raynas: interrupted; nothing had started: run the same command again\n"), stderr


def test_a_search_interrupted_mid_way_says_how_to_resume_and_resumes(table_search):
    out, argv = table_search
    command = Command(*argv)
    command.wait_for_file(str(out / "checkpoints" / "iter_*[0-9]"))  # complete: not iter_N.tmp
    command.interrupt()
    code, stdout, stderr = command.finish()
    assert code == 130, stderr
    assert stderr == f"raynas: interrupted; resume with: raynas search --resume {out}\n", stderr
    rows = (out / "trajectory.jsonl").read_text().splitlines()
    assert 0 < len(rows) < 800
    resumed = subprocess.run([*RAYNAS, "search", "--resume", str(out)], capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    samples = [json.loads(line)["sample"] for line in (out / "trajectory.jsonl").read_text().splitlines()]
    assert samples == list(range(800))  # the rows after the checkpoint were written again, none twice


def test_a_second_interrupt_ends_the_command_at_once(table_search):
    out, argv = table_search
    command = Command(*argv)
    command.wait_for_file(str(out / "checkpoints" / "iter_*[0-9]"))  # complete: not iter_N.tmp
    command.interrupt()
    time.sleep(0.1)
    second = command.interrupt()
    code, stdout, stderr = command.finish()
    assert code == 130 and time.time() - second < 5, stderr
    assert "raynas: interrupted again: exiting now" in stderr and "Traceback" not in stderr, stderr
    from services.inputs import latest_checkpoint

    assert latest_checkpoint(out) is not None  # only complete checkpoints count


def test_a_weight_sharing_search_interrupted_during_the_derivation(tmp_path):
    """The derivation is the last epoch's end: the search resumes from the previous epoch's checkpoint."""
    out = tmp_path / "out"
    slow_derivation = ["--set", "weight_sharing.derive_samples=200", "--set", "data.synthetic_train=480",
                       "--set", "data.valid_size=320"]
    command = Command("search", *TINY_SEARCH, *slow_derivation, "--out", str(out))
    command.wait_for_line("[raynas] deriving")
    command.interrupt()
    code, stdout, stderr = command.finish()
    assert code == 130, stdout[-3000:] + stderr
    assert stderr.endswith(f"raynas: interrupted; resume with: raynas search --resume {out}\n"), stderr
    assert "Traceback" not in stderr and not (out / "best_arch.json").exists()
    resumed = subprocess.run([*RAYNAS, "search", "--resume", str(out)], capture_output=True, text=True, timeout=300,
                             cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr
    assert "[raynas] resumed from" in resumed.stdout and (out / "best_arch.json").is_file()


def test_a_compare_interrupted_while_trials_wait(tmp_path):
    """One CPU for three trials: two wait (no results at all) when Ctrl-C comes."""
    table = tmp_path / "landscape.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    command = Command("compare", "--space", "nb201", "--evaluator", "table", "--table", str(table), "--reward-key",
                      "valid", "--budget", "2000", "--algos", "ppo,random,rea", "--seeds", "1", "--set", "num_cpus=1",
                      "--storage", str(tmp_path / "tune"), "--name", "waiting")
    command.wait_for_line(" started; trials: 0 done, 1 running")
    command.interrupt()
    code, stdout, stderr = command.finish()
    assert code == 130, stdout[-3000:] + stderr
    assert "[raynas] stopping: Tune saves the experiment's state (Ctrl-C again to end at once)" in stdout
    assert stderr.splitlines()[-1] == (f"raynas: interrupted with 3 of 3 trials unfinished; resume with: raynas "
                                       f"compare --resume {tmp_path / 'tune' / 'waiting'}"), stderr
    assert "Traceback" not in stderr and "Tuner.restore" not in stdout + stderr


def test_an_interrupted_retrain_keeps_its_checkpoints_and_says_how_to_go_on(tmp_path):
    import numpy as np
    import yaml

    from controller_policy.spaces import build_space

    space = build_space("enas_macro", num_layers=3)
    (tmp_path / "arch.json").write_text(json.dumps({"arch": space.to_string(space.sample(np.random.default_rng(0))),
                                                    "space": "enas_macro", "space_params": {"num_layers": 3}}))
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump({
        "space": {"name": "enas_macro", "params": {"num_layers": 3}},
        "supernet": {"channels": 4, "bn_track_running_stats": True},
        "data": {"source": "synthetic", "synthetic_train": 320, "synthetic_test": 40, "synthetic_image_size": 16,
                 "train_size": 320, "batch_size": 16, "eval_batch_size": 40},
        "train": {"epochs": 40}, "out": "out"}))
    argv = ["retrain", "arch.json", "--config", "retrain.yaml"]
    command = Command(*argv, cwd=tmp_path)
    command.wait_for_file(str(tmp_path / "out" / "ray_train" / "retrain" / "checkpoint_*"))
    command.interrupt()
    code, stdout, stderr = command.finish()
    assert code == 130, stdout[-3000:] + stderr
    assert "[raynas] stopping: Ray Train aborts the run" in stdout
    assert stderr == ("raynas: interrupted; resume with (it goes on from its newest checkpoint): raynas retrain "
                      "arch.json --config retrain.yaml\n"), stderr
    done = len((tmp_path / "out" / "metrics.csv").read_text().splitlines()) - 1
    assert 0 < done < 40  # the same command goes on from there (test_retrain.py: resuming)
    assert glob.glob(str(tmp_path / "out" / "ray_train" / "retrain" / "checkpoint_*"))
