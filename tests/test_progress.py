"""The search's progress as a user sees it: a bar with ETA on a real pseudo-terminal, plain lines
(one per iteration) when stdout is a pipe, as in CI and Ray job logs."""
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time

import pytest

from controller_policy.landscapes import nb201_landscape


@pytest.fixture
def search_argv(tmp_path):
    table = tmp_path / "landscape.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    return [sys.executable, "-m", "services.cli", "search", "--space", "nb201", "--evaluator", "table", "--table",
            str(table), "--reward-key", "valid", "--budget", "24", "--out", str(tmp_path / "out")]


def run_on_terminal(argv: list[str], timeout: float = 240, columns: int = 160) -> str:
    """Run ``argv`` on a real pseudo-terminal ``columns`` wide; return everything it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the terminal's size counts
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True, env=env)
    os.close(slave)
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.wait(30) == 0, screen[-3000:]
    return screen


def test_a_terminal_gets_a_bar_with_eta(search_argv):
    screen = run_on_terminal(search_argv, columns=80)
    assert "\r" in screen  # redrawn in place
    assert "[raynas] search 24/24 archs |" in screen and "<00:00" in screen  # done, elapsed<remaining
    assert "best " in screen
    bars = re.findall(r"\[raynas\] search \d+/24 archs \|([^|]*)\|", screen)
    assert bars and all(len(bar) >= 12 for bar in bars), bars  # a bar, not 0-1 characters, at 80 columns
    drawn = [line for chunk in screen.split("\r") for line in chunk.split("\n") if "[raynas] search " in line]
    assert all(len(line.rstrip()) <= 80 for line in drawn), drawn
    assert "[raynas] 8/24 architectures" not in screen  # no plain lines on a terminal
    assert "[raynas] found  |" in screen


def test_a_pipe_gets_one_plain_line_per_iteration(search_argv):
    result = subprocess.run(search_argv, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout
    lines = [line for line in result.stdout.splitlines() if " architectures  best " in line]
    assert [line.split()[1] for line in lines] == ["8/24", "16/24", "24/24"]
    assert result.stdout.startswith("[raynas] connecting to Ray")  # said before the slow start-up


TINY_SEARCH = ["--space", "enas_macro", "--set", "space.params.num_layers=3", "--set", "supernet.channels=4",
               "--set", "data.source=synthetic", "--set", "data.synthetic_train=160", "--set", "data.synthetic_test=40",
               "--set", "data.synthetic_image_size=16", "--set", "data.train_size=128", "--set", "data.valid_size=32",
               "--set", "data.batch_size=16", "--set", "data.eval_batch_size=16", "--epochs", "2", "--workers", "1",
               "--set", "weight_sharing.archs_per_epoch=8", "--set", "weight_sharing.train_steps=3",
               "--set", "weight_sharing.derive_samples=6", "--set", "episodes_per_iteration=4"]


def test_a_terminal_sees_the_phases_inside_an_epoch(tmp_path):
    """Weight sharing: a second line follows the supernet steps, the controller's architectures
    and the derivation, each with its own count; the epoch bar stays above it."""
    screen = run_on_terminal([sys.executable, "-m", "services.cli", "search", *TINY_SEARCH,
                              "--out", str(tmp_path / "out")])
    assert "[raynas] loading the data to check it: generated images (128 training / 32 validation" in screen
    assert "[raynas] starting 1 supernet worker(s)" in screen
    assert "[raynas]   training shared weights 0/3 steps |" in screen
    assert "[raynas]   controller 0/8 archs |" in screen
    assert re.search(r"\[raynas\]   deriving 0/[1-6] archs \|", screen)  # the unique ones of the 6 sampled
    assert "[raynas] search 2/2 epochs |" in screen
    assert "[raynas] deriving: " not in screen  # the bar says it on a terminal
    assert "[raynas] epoch 1/2 " not in screen and "[raynas] found  " in screen


def test_retrain_progress_on_a_terminal_and_in_plain_lines(tmp_path):
    """Rank 0's events drawn by the driver: a bar over the epochs and one over the minibatches on a
    terminal; one line per epoch through a pipe (the resume test checks those)."""
    import numpy as np
    import yaml

    from controller_policy.spaces import build_space

    space = build_space("enas_macro", num_layers=3)
    arch = space.sample(np.random.default_rng(0))
    (tmp_path / "arch.json").write_text(json.dumps({"arch": space.to_string(arch), "space": "enas_macro",
                                                    "space_params": {"num_layers": 3}}))
    (tmp_path / "retrain.yaml").write_text(yaml.safe_dump({
        "space": {"name": "enas_macro", "params": {"num_layers": 3}},
        "supernet": {"channels": 4, "bn_track_running_stats": True},
        "data": {"source": "synthetic", "synthetic_train": 320, "synthetic_test": 40, "synthetic_image_size": 16,
                 "train_size": 320, "batch_size": 16, "eval_batch_size": 40},
        "train": {"epochs": 2}, "out": str(tmp_path / "out")}))
    screen = run_on_terminal([sys.executable, "-m", "services.cli", "retrain", str(tmp_path / "arch.json"),
                              "--config", str(tmp_path / "retrain.yaml")])
    assert "[raynas] retrain 0/2 epochs |" in screen and "[raynas] retrain 2/2 epochs |" in screen
    assert "[raynas]   epoch 1 0/20 batches |" in screen and "[raynas]   epoch 2 " in screen
    assert "test acc " in screen and "<00:00" in screen
    assert "[raynas] retrain epoch 1/2 " not in screen  # no plain lines on a terminal
    assert "Reporting training result" not in screen and "Removed " not in screen  # Ray Train's, ONNX's
    assert f"[raynas] found  {space.to_string(arch)} (enas_macro), retrained" in screen
    assert "[raynas]        2 epochs: test accuracy " in screen and " on the generated test split (40 images)" in screen
