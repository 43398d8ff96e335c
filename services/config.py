"""The one typed search configuration: loaded from YAML, overridden by flags, validated, passed down."""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller_policy import ControllerConfig
from controller_policy.algorithms import ALGORITHMS
from controller_policy.spaces import SPACES, build_space

EVALUATORS = ("table",)


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass
class SpaceSection:
    name: str = "nb201"
    params: dict = field(default_factory=dict)


@dataclass
class EvaluatorSection:
    type: str = "table"
    table: str | None = None  # JSON file: {"<canonical arch>": number | {"metric": number}}
    reward_key: str | None = None


@dataclass
class PPOSection:
    lr: float = 0.0035
    entropy_coeff: float = 0.01
    clip_param: float = 0.2
    num_epochs: int = 10
    minibatches: int = 2
    vf_loss_coeff: float = 0.5


@dataclass
class ReinforceSection:
    lr: float = 0.0035
    entropy_weight: float = 0.01
    baseline_decay: float = 0.99
    baseline_init: float | None = None


@dataclass
class SearchConfig:
    algo: str = "ppo"
    seed: int = 0
    budget: int = 100  # architectures evaluated, repeats included
    episodes_per_iteration: int = 16  # architectures per controller update
    out: str = "runs/search"
    reward_scale: float | str = "auto"
    skip_weight: float = 0.0
    ray_address: str | None = None  # None: the running cluster if any, else an embedded one
    num_cpus: int | None = None  # of an embedded cluster
    space: SpaceSection = field(default_factory=SpaceSection)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)
    ppo: PPOSection = field(default_factory=PPOSection)
    reinforce: ReinforceSection = field(default_factory=ReinforceSection)

    def validate(self) -> "SearchConfig":
        if self.algo not in ALGORITHMS:
            raise ConfigError(f"algo: unknown algorithm {self.algo!r} (choose {', '.join(ALGORITHMS)})")
        if self.space.name not in SPACES:
            raise ConfigError(f"space.name: unknown search space {self.space.name!r} (choose {', '.join(SPACES)})")
        try:
            build_space(self.space.name, **self.space.params)
        except ValueError as exc:
            raise ConfigError(f"space.params: {exc}") from None
        if self.budget < 1:
            raise ConfigError(f"budget must be >= 1, got {self.budget}")
        if self.episodes_per_iteration < 1:
            raise ConfigError(f"episodes_per_iteration must be >= 1, got {self.episodes_per_iteration}")
        if self.evaluator.type not in EVALUATORS:
            raise ConfigError(f"evaluator.type: unknown evaluator {self.evaluator.type!r} (choose {', '.join(EVALUATORS)})")
        if self.evaluator.type == "table" and not self.evaluator.table:
            raise ConfigError("evaluator.table: a table file is required with evaluator.type 'table' (--table FILE)")
        if self.reward_scale != "auto" and not (isinstance(self.reward_scale, (int, float)) and self.reward_scale > 0):
            raise ConfigError(f"reward_scale must be 'auto' or a positive number, got {self.reward_scale!r}")
        for section, keys in (("ppo", ("lr", "num_epochs", "minibatches")), ("reinforce", ("lr",))):
            for key in keys:
                if getattr(getattr(self, section), key) <= 0:
                    raise ConfigError(f"{section}.{key} must be > 0")
        return self


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, where)
            except ConfigError:
                continue
        names = " or ".join(getattr(a, "__name__", str(a)) for a in typing.get_args(hint))
        raise ConfigError(f"{where} must be {names}, got {value!r}")
    if hint is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where} must be null, got {value!r}")
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool, dict, list):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key {path!r} (known: {', '.join(sorted(fields))})")
        kwargs[key] = _check_type(value, hints[key], path)
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> SearchConfig:
    """YAML file (optional) + dotted overrides (``{"evaluator.table": "t.json"}``), validated."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config {path} must be a YAML mapping")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    try:
        return from_dict(SearchConfig, data).validate()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def to_dict(config: SearchConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
