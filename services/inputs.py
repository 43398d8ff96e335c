"""What a command checks before it imports torch or Ray, so that a bad input is refused in a
fraction of a second: the paths a user named, made absolute against the caller's directory (trials
and jobs run elsewhere), and the table, dataset or experiment they point to."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from controller_policy.evaluators import TableEvaluator
from controller_policy.spaces import build_space
from supernet_worker.latency_table import LatencyTable

from .config import SearchConfig

#: the file that makes a directory a ``raynas compare`` experiment (written before trials start)
COMPARE_CONFIG = "raynas_compare.json"
CHECKPOINTS = "checkpoints"  # a search's, below its output directory


def absolute(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def resolve_paths(cfg: SearchConfig) -> SearchConfig:
    """``cfg`` with its table, data directory and latency table absolute, as the caller meant them."""
    if cfg.evaluator.table:
        cfg = dataclasses.replace(cfg, evaluator=dataclasses.replace(cfg.evaluator, table=absolute(cfg.evaluator.table)))
    if cfg.data.data_dir:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, data_dir=absolute(cfg.data.data_dir)))
    if cfg.objective.latency_table:
        cfg = dataclasses.replace(cfg, objective=dataclasses.replace(
            cfg.objective, latency_table=absolute(cfg.objective.latency_table)))
    return cfg


def check_inputs(cfg: SearchConfig) -> None:
    """ValueError naming the problem when the table cannot serve the search (unreadable, malformed,
    or lacking an architecture of the space) or the dataset directory holds no dataset. The
    dataset's contents are read, and checked, when the search loads them."""
    if cfg.uses_supernet:
        cfg.data.locate()
    else:
        space = build_space(cfg.space.name, **cfg.space.params)
        TableEvaluator(space, cfg.evaluator.table, cfg.evaluator.reward_key).check_complete()
    if cfg.objective.latency_table:  # profiled for this network, on the device the search means
        LatencyTable(cfg.objective.latency_table).check(cfg.cost_skeleton(), cfg.objective.device)


def check_experiment(location: str) -> None:
    """ValueError unless the local directory ``location`` is a compare experiment (a URI is checked
    when it is opened)."""
    if "://" not in location and not (Path(location) / COMPARE_CONFIG).is_file():
        raise ValueError(f"{location} is not a raynas compare experiment (no {COMPARE_CONFIG})")


def complete_checkpoints(out: Path) -> list[Path]:
    """``iter_NNNNNN`` directories, oldest first; never an ``iter_NNNNNN.tmp`` a killed save left."""
    if not (out / CHECKPOINTS).is_dir():
        return []
    return sorted(p for p in (out / CHECKPOINTS).glob("iter_*") if re.fullmatch(r"iter_\d+", p.name))


def latest_checkpoint(out: Path) -> Path | None:
    ckpts = complete_checkpoints(out)
    return ckpts[-1] if ckpts else None
