"""Every evaluated architecture, written as the search goes: ``trajectory.jsonl`` and ``summary.json``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from .evaluators import Evaluation
from .spaces import SearchSpace


class TrajectoryRecorder:
    """Appends one line per evaluation (flushed at once) and keeps the best so far.

    ``state()``/``restore()`` let a checkpoint resume it: lines written after the checkpoint
    are cut off, so a resumed search neither loses nor duplicates a sample.
    """

    def __init__(self, out_dir: str | Path, space: SearchSpace, meta: dict[str, Any]) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.space, self.meta = space, dict(meta)
        self.path = self.out_dir / "trajectory.jsonl"
        self.count = 0
        self.best: dict[str, Any] | None = None
        self._opened = False  # the first write of a fresh search starts the file anew

    def record(self, archs: Sequence[Sequence[int]], evaluations: Sequence[Evaluation]) -> list[dict[str, Any]]:
        rows = []
        with self.path.open("a" if self._opened else "w") as f:
            self._opened = True
            for arch, ev in zip(archs, evaluations):
                row = {"sample": self.count, "arch": self.space.to_string(arch), "reward": ev.reward,
                       "metrics": ev.metrics}
                f.write(json.dumps(row) + "\n")
                if self.best is None or ev.reward > self.best["reward"]:
                    self.best = {"arch": row["arch"], "reward": ev.reward, "metrics": ev.metrics, "sample": self.count}
                self.count += 1
                rows.append(row)
            f.flush()
            os.fsync(f.fileno())
        self.write_summary()
        return rows

    def summary(self) -> dict[str, Any]:
        return {**self.meta, "evaluated": self.count, "best": self.best}

    def write_summary(self) -> None:
        tmp = self.out_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(self.summary(), indent=2) + "\n")
        tmp.replace(self.out_dir / "summary.json")

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "best": self.best}

    def restore(self, state: dict[str, Any]) -> None:
        lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        if len(lines) < state["count"]:
            raise ValueError(f"{self.path} holds {len(lines)} samples, the checkpoint expects {state['count']}")
        self.path.write_text("".join(lines[: state["count"]]))
        self.count, self.best = state["count"], state["best"]
        self._opened = True
        self.write_summary()
