"""How long `raynas` takes to refuse a bad command line (the target: <= 1 s each), as a user runs it:
a fresh process per refusal, repeated, median and range printed.

    python bench/refusals.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from controller_policy.landscapes import nb201_landscape

TARGET_S = 1.0


def refusals(tmp: Path) -> list[tuple[str, list[str]]]:
    table = nb201_landscape(0)
    (tmp / "landscape.json").write_text(json.dumps(table))
    del table[next(iter(table))]
    (tmp / "partial.json").write_text(json.dumps(table))
    tabular = ["--space", "nb201", "--evaluator", "table", "--reward-key", "valid"]
    return [
        ("--budget -5", ["search", *tabular, "--table", "landscape.json", "--budget", "-5"]),
        ("--set ppo.entropy_coef=0.1 (unknown key)", ["search", *tabular, "--table", "landscape.json", "--set",
                                                      "ppo.entropy_coef=0.1"]),
        ("--set ppo.lr=abc (wrong type)", ["search", "--set", "ppo.lr=abc"]),
        ("a table search without --table", ["search", "--space", "nb201", "--evaluator", "table"]),
        ("--table that does not exist", ["search", *tabular, "--table", "absent.json"]),
        ("a table lacking an architecture (15,624 of 15,625)", ["search", *tabular, "--table", "partial.json"]),
        ("--data-dir without a dataset", ["search", "--data-dir", "."]),
        ("compare --resume runs/tune/nonexistent", ["compare", "--resume", "runs/tune/nonexistent"]),
        ("compare --algos ppo,foo", ["compare", *tabular, "--table", "landscape.json", "--algos", "ppo,foo"]),
        ("an unknown flag", ["search", "--bogus"]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'refusal':<52} {'median s':>8} {'min-max s':>12}  exit  message")
        for name, argv in refusals(Path(tmp)):
            times, result = [], None
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = subprocess.run([sys.executable, "-m", "services.cli", *argv], cwd=tmp, capture_output=True,
                                        text=True, timeout=120)
                times.append(time.perf_counter() - start)
            median = statistics.median(times)
            worst = max(worst, median)
            message = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "(nothing on stderr)"
            print(f"{name:<52} {median:8.2f} {min(times):5.2f}-{max(times):5.2f}  {result.returncode:>4}  "
                  f"{message[:90]}")
    print(f"slowest median {worst:.2f} s: {'within' if worst <= TARGET_S else 'OVER'} the {TARGET_S:g} s target")


if __name__ == "__main__":
    main()
