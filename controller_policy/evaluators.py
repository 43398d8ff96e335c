"""Evaluators turn architectures into rewards, in batches.

The RL layer only sees this interface; the weight-sharing search plugs its supernet actors in
behind it (``supernet_worker``), the tabular mode reads a benchmark table.
"""
from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from .spaces import SearchSpace

#: spaces up to this size are enumerated to check that a table covers them
MAX_ENUMERATED = 1_000_000


@dataclass
class Evaluation:
    reward: float
    metrics: dict[str, float] = field(default_factory=dict)
    # under an objective (objective.py): the reward before shaping, the child's costs and whether
    # it meets every hard constraint
    measured: float | None = None
    costs: dict[str, float] | None = None
    feasible: bool | None = None


class Evaluator(Protocol):
    def evaluate(self, archs: Sequence[Sequence[int]]) -> list[Evaluation]:
        """One evaluation per architecture, in order."""
        ...


def _names(metrics: dict[str, float], most: int = 8) -> str:
    names = [repr(name) for name in list(metrics)[:most]]
    return ", ".join(names) + (f" and {len(metrics) - most} more" if len(metrics) > most else "")


class TableEvaluator:
    """Rewards looked up in a JSON table: ``{"<canonical arch>": number | {"metric": number, ...}}``.

    This is how NAS-Bench-style tabular benchmarks are searched without training anything.
    Keys are parsed with the space (so any accepted spelling works) and re-keyed canonically.

    ``noise`` > 0 adds Gaussian noise to every reward (the metrics stay the table's), its standard
    deviation ``noise`` times the spread (std) of the rewards over the whole table: a noisy table
    stands in for a supernet's one-minibatch rewards (bench/ranking.py measured their noise at about
    2x the spread between children) when tuning a controller in seconds instead of hours.
    """

    def __init__(self, space: SearchSpace, path: str | Path, reward_key: str | None = None, noise: float = 0.0,
                 seed: int = 0) -> None:
        if not (isinstance(noise, (int, float)) and math.isfinite(noise) and noise >= 0):
            raise ValueError(f"evaluator noise must be a finite number >= 0, got {noise!r}")
        self.space, self.path, self.reward_key = space, Path(path), reward_key
        try:
            raw = json.loads(self.path.read_text())
        except OSError as exc:
            raise ValueError(f"cannot read table {self.path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"table {self.path} is not valid JSON: {exc}") from None
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"table {self.path} must be a non-empty JSON object mapping architectures to results")
        # Errors name entries by position and quote no key or value: a service must not turn a
        # table path into a way of reading files. Metric names are quoted (a user picks the reward
        # among them), and a service reads tables only below the data roots its operator named.
        self.table: dict[str, dict[str, float]] = {}
        for i, (key, value) in enumerate(raw.items(), start=1):
            where = f"table {self.path}: entry {i} of {len(raw)}"
            try:
                canonical = space.to_string(space.from_string(key))
            except ValueError:
                example = space.to_string(space.sample(np.random.default_rng(0)))
                raise ValueError(f"{where}: its key is not a {space.name} architecture string "
                                 f"(such as {example})") from None
            self.table[canonical] = self._metrics(where, value)
        spread = float(np.std([self._reward(m) for m in self.table.values()])) if noise else 0.0
        self.noise_std = noise * spread
        self.rng = np.random.default_rng(seed)  # its state is checkpointed with the search

    def _metrics(self, where: str, value: Any) -> dict[str, float]:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics = {self.reward_key or "reward": float(value)}
        elif isinstance(value, dict):
            metrics = {}
            for j, (name, v) in enumerate(value.items(), start=1):
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise ValueError(f"{where}: metric {j} of {len(value)} is not a number")
                metrics[name] = float(v)
        else:
            raise ValueError(f"{where}: value must be a number or an object of named metrics")
        if self.reward_key is not None and self.reward_key not in metrics:
            raise ValueError(f"{where} has no metric named {self.reward_key!r} (it has {_names(metrics)})")
        if self.reward_key is None and len(metrics) != 1:
            raise ValueError(f"{where} has {len(metrics)} metrics ({_names(metrics)}): name the reward with "
                             "evaluator.reward_key (--reward-key)")
        if any(not math.isfinite(v) for v in metrics.values()):
            raise ValueError(f"{where}: metrics must be finite numbers")
        return metrics

    def check_complete(self) -> None:
        """ValueError naming an architecture of the space the table lacks (a search can sample any).
        A space too large to enumerate is taken as it is: a lookup names what is missing."""
        size = self.space.size()
        if len(self.table) >= size or size > MAX_ENUMERATED:
            return
        for arch in itertools.product(*(range(d.num_choices) for d in self.space.decisions)):
            key = self.space.to_string(arch)
            if key not in self.table:
                raise ValueError(f"table {self.path} has {len(self.table)} of the {size} architectures of the "
                                 f"{self.space.name} space; a search can sample any of them, and {key} is missing")

    def lookup(self, arch: Sequence[int]) -> dict[str, float]:
        key = self.space.to_string(arch)
        if key not in self.table:
            raise KeyError(f"architecture {key} is not in table {self.path}")
        return self.table[key]

    def _reward(self, metrics: dict[str, float]) -> float:
        return metrics[self.reward_key] if self.reward_key else next(iter(metrics.values()))

    def evaluate(self, archs: Sequence[Sequence[int]]) -> list[Evaluation]:
        out = []
        for arch in archs:
            metrics = self.lookup(arch)
            reward = self._reward(metrics)
            if self.noise_std:
                reward += float(self.rng.normal(0.0, self.noise_std))
            out.append(Evaluation(reward, dict(metrics)))
        return out
