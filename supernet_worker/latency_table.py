"""A latency table written by ``raynas profile`` (``supernet_worker.latency``), read without torch:
a search checks it against its skeleton and device before anything heavy starts."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from .settings import Skeleton, SupernetConfig

LATENCY_FORMAT = 1  # of the file; bumped when its layout changes


class LatencyTable:
    """Per op module (by its name in the network) its median time in ms on the profiled device,
    and the fixed part every child pays."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.data: dict[str, Any] = json.loads(self.path.read_text())
        except OSError as exc:
            raise ValueError(f"cannot read latency table {self.path}: {exc.strerror}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"latency table {self.path} is not valid JSON: {exc}") from None
        if (not isinstance(self.data, dict) or self.data.get("format") != LATENCY_FORMAT
                or not isinstance(self.data.get("ops_ms"), dict) or not isinstance(self.data.get("fixed_ms"), float)):
            raise ValueError(f"{self.path} is not a latency table written by `raynas profile` (format "
                             f"{LATENCY_FORMAT})")
        self.ops: dict[str, float] = self.data["ops_ms"]

    def check(self, skeleton: Skeleton, device: str) -> None:
        """ValueError naming what differs when the table was profiled for another network or device."""
        wanted = {**skeleton.describe(), "device": device}
        for key, value in wanted.items():
            found = self.data.get(key)
            if found == value:
                continue
            if isinstance(value, dict) and isinstance(found, dict):  # name the field that differs
                key, found, value = next((f"{key}.{k}", found.get(k), value.get(k))
                                         for k in sorted(set(found) | set(value)) if found.get(k) != value.get(k))
            raise ValueError(f"latency table {self.path} was profiled for {key} {found!r}, but this search counts "
                             f"costs for {key} {value!r}: profile again (raynas profile)")

    def skeleton(self) -> Skeleton:
        """The network the table was profiled for."""
        d = self.data
        return Skeleton(d["space"], d["space_params"], SupernetConfig(**d["supernet"]), d["input"][0], d["input"][1],
                        d["num_classes"])

    def predict(self, module_names: Iterable[str]) -> float:
        """A child's latency in ms from the names of its modules: its ops' times + the fixed part."""
        names = list(module_names)
        untimed = set(self.data.get("untimed", ())).intersection(names)
        if untimed:  # never silently free: a child holding an op the profile never met
            raise ValueError(f"latency table {self.path} has no time for {sorted(untimed)[0]}, which this child "
                             "holds: no child sampled while profiling used it; profile again")
        return self.data["fixed_ms"] + sum(self.ops[name] for name in names if name in self.ops)
