"""The search's progress as a user sees it: a bar with ETA on a real pseudo-terminal, plain lines
(one per iteration) when stdout is a pipe, as in CI and Ray job logs."""
import fcntl
import json
import os
import pty
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


def test_a_terminal_gets_a_bar_with_eta(search_argv):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # 160 columns, as a terminal
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}  # the terminal's size counts
    proc = subprocess.Popen(search_argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True, env=env)
    os.close(slave)
    chunks, deadline = [], time.time() + 240
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
    assert proc.wait(30) == 0
    screen = b"".join(chunks).decode(errors="replace")
    assert "\r" in screen  # redrawn in place
    assert "[raynas] search 24/24 archs |" in screen and "<00:00" in screen  # done, elapsed<remaining
    assert "best " in screen and "mean reward" in screen
    assert "[raynas] 8/24 architectures" not in screen  # no plain lines on a terminal
    assert "[raynas] found  |" in screen


def test_a_pipe_gets_one_plain_line_per_iteration(search_argv):
    result = subprocess.run(search_argv, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stdout
    lines = [line for line in result.stdout.splitlines() if " architectures  best " in line]
    assert [line.split()[1] for line in lines] == ["8/24", "16/24", "24/24"]
    assert result.stdout.startswith("[raynas] connecting to Ray")  # said before the slow start-up
