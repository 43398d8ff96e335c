"""Every evaluated architecture, written as the search goes: ``trajectory.jsonl``, ``summary.json``
and (for a search whose rewards are final, as a table's) ``best_arch.json``."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from .evaluators import Evaluation
from .spaces import SearchSpace


BEST_ARCH = "best_arch.json"


def _write_atomically(path: Path, content: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)


def _rank(row: dict[str, Any]) -> tuple:
    """The best row is the one with the highest reward; under an objective, one meeting every hard
    constraint comes first (among those that do not, the highest reward is the closest to the budget)."""
    return row.get("feasible") is not False, row["reward"], row.get("measured", row["reward"])


class TrajectoryRecorder:
    """Appends one line per evaluation (flushed at once) and keeps the best so far.

    ``count`` is the number of rows, ``spent`` the evaluations that spent budget: with
    ``keep_answers`` (``budget_mode: unique``) ``answers`` maps every evaluated architecture to its
    evaluation, so a repeat is answered from it, recorded with ``"cached": true`` and spends nothing.
    ``state()``/``restore()`` let a checkpoint resume it: lines written after the checkpoint
    are cut off, so a resumed search neither loses nor duplicates a sample. ``best_file``: the best
    so far is also ``best_arch.json``, in the layout of a weight-sharing search's derived one
    (``raynas show``, ``retrain`` and ``export`` read it); a supernet's rewards are not final, so
    its search writes that file from its derivation instead.
    """

    def __init__(self, out_dir: str | Path, space: SearchSpace, meta: dict[str, Any],
                 keep_answers: bool = False, best_file: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.space, self.meta = space, dict(meta)
        self.path = self.out_dir / "trajectory.jsonl"
        self.count = 0
        self.spent = 0
        self.best: dict[str, Any] | None = None
        self.answers: dict[str, Evaluation] | None = {} if keep_answers else None
        self.best_file = best_file
        self._opened = False  # the first write of a fresh search starts the file anew

    def record(self, archs: Sequence[Sequence[int]], evaluations: Sequence[Evaluation],
               cached: Sequence[bool] | None = None) -> list[dict[str, Any]]:
        rows = []
        cached = cached or [False] * len(archs)
        with self.path.open("a" if self._opened else "w") as f:
            self._opened = True
            for arch, ev, from_cache in zip(archs, evaluations, cached):
                row = {"sample": self.count, "arch": self.space.to_string(arch), "reward": ev.reward,
                       "metrics": ev.metrics}
                if ev.costs is not None:  # searched under an objective: what was measured, what it costs
                    row.update(measured=ev.measured, costs=ev.costs, feasible=ev.feasible)
                if from_cache:
                    row["cached"] = True
                else:
                    self.spent += 1
                    if self.answers is not None:
                        self.answers[row["arch"]] = ev
                f.write(json.dumps(row) + "\n")
                if self.best is None or _rank(row) > _rank(self.best):
                    self.best = {k: row[k] for k in ("arch", "reward", "metrics", "measured", "costs", "feasible")
                                 if k in row} | {"sample": self.count}
                self.count += 1
                rows.append(row)
            f.flush()
            os.fsync(f.fileno())
        self.write_summary()
        return rows

    def summary(self) -> dict[str, Any]:
        out = {**self.meta, "evaluated": self.spent, "best": self.best}
        if self.answers is not None:
            out["answered_from_cache"] = self.count - self.spent
        return out

    def write_summary(self) -> None:
        _write_atomically(self.out_dir / "summary.json", self.summary())
        if self.best_file and self.best is not None:
            arch = self.space.from_string(self.best["arch"])
            _write_atomically(self.out_dir / BEST_ARCH, {
                "arch": self.best["arch"], "json": self.space.to_json(arch), "actions": arch, "space": self.space.name,
                "space_params": self.space.params(), "reward": self.best["reward"], "metrics": self.best["metrics"],
                "sample": self.best["sample"],
                **{k: self.best[k] for k in ("measured", "costs", "feasible") if k in self.best}})

    def state(self) -> dict[str, Any]:
        return {"count": self.count, "spent": self.spent, "best": self.best}

    def restore(self, state: dict[str, Any]) -> None:
        lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        if len(lines) < state["count"]:
            raise ValueError(f"{self.path} holds {len(lines)} samples, the checkpoint expects {state['count']}")
        kept = lines[: state["count"]]
        self.path.write_text("".join(kept))
        self.count, self.best = state["count"], state["best"]
        self.spent = state.get("spent", self.count)
        if self.answers is not None:  # the cache is what the kept rows evaluated
            self.answers = {}
            for line in kept:
                row = json.loads(line)
                if not row.get("cached"):
                    self.answers[row["arch"]] = Evaluation(row["reward"], row["metrics"], row.get("measured"),
                                                           row.get("costs"), row.get("feasible"))
        self._opened = True
        self.write_summary()
