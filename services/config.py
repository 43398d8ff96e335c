"""The one typed search configuration: loaded from YAML, overridden by flags, validated, passed down."""
from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from controller_policy.objective import Constraints
from controller_policy.settings import (
    ALGORITHM_NAMES, PPO_BASELINES, ControllerConfig, check_budget_mode, check_elite_replay, check_reward_scale,
)
from controller_policy.spaces import SPACES, build_space
from supernet_worker.settings import (
    DEVICES, PATH_DROPOUT_SPACES, SAMPLINGS, DataConfig, OptimConfig, ScoringConfig, Skeleton, SupernetConfig,
    TrainSettings, data_parallel_plan,
)

PRESETS_DIR = Path(__file__).resolve().parents[1] / "configs"  # the search and retrain presets

EVALUATORS = ("supernet", "table")


class ConfigError(ValueError):
    """A configuration problem; the message names the key."""


@dataclass
class SpaceSection:
    name: str = "nb201"
    params: dict = field(default_factory=dict)

    def validate(self) -> None:
        if self.name not in SPACES:
            raise ConfigError(f"space.name: unknown search space {self.name!r} (choose {', '.join(SPACES)})")
        try:
            build_space(self.name, **self.params)
        except ValueError as exc:
            raise ConfigError(f"space.params: {exc}") from None


@dataclass
class EvaluatorSection:
    type: str = "supernet"  # weight sharing; "table": look rewards up in a JSON benchmark table
    table: str | None = None  # JSON file: {"<canonical arch>": number | {"metric": number}}
    reward_key: str | None = None
    # Gaussian noise on every table reward, in units of the table's reward spread (std over its
    # entries): 2 is about a supernet's one-minibatch reward (bench/ranking.py); 0: the table as it is
    noise: float = 0.0


@dataclass
class ObjectiveSection:
    """Searching under a budget (controller_policy/objective.py): each constraint a target and a mode."""

    constraints: Constraints = field(default_factory=Constraints)
    penalty: float = 0.0  # the reward of a child above a hard target, less its relative excess
    # the input the costs are counted at; null: the dataset's (weight sharing) or CIFAR-10's (a table)
    in_channels: int | None = None
    image_size: int | None = None
    num_classes: int | None = None
    latency_table: str | None = None  # `raynas profile`'s file: needed by a latency_ms constraint
    device: str = "cpu"  # the device latencies are for (the latency table's)

    def validate(self) -> None:
        if self.constraints.latency_ms is not None and not self.latency_table:
            raise ConfigError("objective.constraints.latency_ms needs objective.latency_table (--latency-table "
                              "FILE), a table of op latencies: raynas profile --space SPACE --out FILE")
        if self.device not in DEVICES:
            raise ConfigError(f"objective.device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        for key, constraint in self.constraints.items():
            try:
                constraint.check(f"objective.constraints.{key}")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        if not math.isfinite(self.penalty):
            raise ConfigError(f"objective.penalty must be a finite number, got {self.penalty}")
        for key, least in (("in_channels", 1), ("image_size", 1), ("num_classes", 2)):
            value = getattr(self, key)
            if value is not None and value < least:
                raise ConfigError(f"objective.{key} must be >= {least} or null, got {value}")


@dataclass
class PPOSection:
    """Overrides of PPOSearchConfig's defaults (null: keep the algorithm's default)."""

    lr: float | None = None
    entropy_coeff: float | None = None
    clip_param: float | None = None
    num_epochs: int | None = None
    minibatches: int | None = None
    vf_loss_coeff: float | None = None
    grad_clip: float | None = None  # clip the gradient's global norm at this; 0: no clipping; null: the default
    # "value": advantage from a learned value function; "batch": no critic, the batch's mean reward
    baseline: str | None = None
    entropy_coeff_final: float | None = None  # the entropy coefficient falls linearly to this over the budget
    elite_replay: int | None = None  # every update also learns from the K best architectures found so far


@dataclass
class ReinforceSection:
    """Overrides of ReinforceConfig's defaults (null: keep the algorithm's default)."""

    lr: float | None = None
    entropy_coeff: float | None = None
    baseline_decay: float | None = None
    baseline_init: float | None = None
    grad_clip: float | None = None  # clip the gradient's global norm at this; 0: no clipping; null: the default
    elite_replay: int | None = None  # every update also learns from the K best architectures found so far


@dataclass
class REASection:
    """Overrides of REAConfig's defaults (null: keep the algorithm's default)."""

    population_size: int | None = None
    tournament_size: int | None = None


@dataclass
class WeightSharingSection:
    """The supernet phase of each ENAS epoch and the final derivation."""

    epochs: int = 10
    # The first warmup_epochs of the epochs train the supernet on children drawn as ``sampling`` says
    # and run no controller phase (a young supernet's rewards favour parameter-free ops); 0: ENAS.
    warmup_epochs: int = 0
    # the children the supernet trains on without a controller (the warm-up; REA and random throughout):
    # each drawn uniformly, or "fair": every op of each decision equally often (FairNAS)
    sampling: str = "uniform"
    # path dropout while the supernet trains (Bender et al. 2018): each training sample loses each edge's
    # op output (not an identity) with this probability; 0: off. Scoring always sees every path.
    drop_path: float = 0.0
    archs_per_epoch: int = 64  # architectures the controller samples (and is rewarded for) per epoch
    train_steps: int | None = None  # shared-weight steps per epoch; None: one pass over the training split
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    max_restarts: int = 3  # per worker, by Ray
    derive_samples: int = 100  # architectures sampled from the final controller ...
    top_k: int = 5  # ... scored on the whole validation split; the best k are kept
    checkpoint_every: int = 1  # epochs
    scoring: ScoringConfig = field(default_factory=ScoringConfig)  # how the shared weights score a child


@dataclass
class SearchConfig:
    algo: str = "ppo"
    seed: int = 0
    budget_mode: str = "all"  # "unique": repeats answered from a cache spend no budget (tables only)
    budget: int | None = None  # architectures evaluated (table: default 100; weight sharing: epochs x archs_per_epoch)
    episodes_per_iteration: int | None = None  # architectures per controller update; None: the algorithm's default
    out: str = "runs/search"
    keep_checkpoints: int = 2  # the newest N checkpoints are kept (a search's checkpoints/, each Tune trial's)
    reward_scale: float | str = "running"  # or a fixed factor; see SearchConfigMixin.search
    skip_weight: float = 0.0
    ray_address: str | None = None  # None: RAY_ADDRESS, else the cluster `ray start` recorded here, else embedded
    num_cpus: int | None = None  # of an embedded cluster
    verbose: bool = False  # keep the Ray/RLlib/Tune messages raynas drops by default (controller_policy.logs)
    space: SpaceSection = field(default_factory=SpaceSection)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    evaluator: EvaluatorSection = field(default_factory=EvaluatorSection)
    ppo: PPOSection = field(default_factory=PPOSection)
    reinforce: ReinforceSection = field(default_factory=ReinforceSection)
    rea: REASection = field(default_factory=REASection)
    weight_sharing: WeightSharingSection = field(default_factory=WeightSharingSection)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    objective: ObjectiveSection = field(default_factory=ObjectiveSection)

    @property
    def uses_supernet(self) -> bool:
        return self.evaluator.type == "supernet"

    def cost_skeleton(self) -> Skeleton:
        """The network a child's costs are counted at: the configured supernet, for the input of the
        dataset searched on (a table, or no dataset named: CIFAR-10's), unless ``objective`` names another."""
        named = self.uses_supernet and (self.data.data_dir or self.data.source == "synthetic")
        shape = self.data.shape() if named else (3, 32, 10)
        given = (self.objective.in_channels, self.objective.image_size, self.objective.num_classes)
        channels, size, classes = (g or found for g, found in zip(given, shape))
        return Skeleton(self.space.name, dict(self.space.params), self.supernet, channels, size, classes)

    def validate(self) -> "SearchConfig":
        if self.algo not in ALGORITHM_NAMES:
            raise ConfigError(f"algo: unknown algorithm {self.algo!r} (choose {', '.join(ALGORITHM_NAMES)})")
        self.space.validate()
        ws = self.weight_sharing
        if self.uses_supernet:
            for key in ("epochs", "archs_per_epoch", "workers", "derive_samples", "top_k", "checkpoint_every"):
                if getattr(ws, key) < 1:
                    raise ConfigError(f"weight_sharing.{key} must be >= 1, got {getattr(ws, key)}")
            if ws.train_steps is not None and ws.train_steps < 1:
                raise ConfigError(f"weight_sharing.train_steps must be >= 1 or null, got {ws.train_steps}")
            if ws.gpus_per_worker < 0 or ws.cpus_per_worker <= 0:
                raise ConfigError("weight_sharing.gpus_per_worker must be >= 0 and cpus_per_worker > 0")
            if ws.max_restarts < 0:
                raise ConfigError(f"weight_sharing.max_restarts must be >= 0, got {ws.max_restarts}")
            if self.data.source != "synthetic" and not self.data.data_dir:
                raise ConfigError("data.data_dir: a dataset directory is required (--data-dir DIR), "
                                  "or data.source: synthetic")
            try:
                data_parallel_plan(self.optim, self.data.batch_size, ws.workers, self.data.train_size)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if ws.sampling not in SAMPLINGS:
                raise ConfigError(f"weight_sharing.sampling must be one of {', '.join(SAMPLINGS)}, got {ws.sampling!r}")
            if not 0.0 <= ws.drop_path < 1.0:
                raise ConfigError(f"weight_sharing.drop_path must lie in [0, 1), got {ws.drop_path}")
            check_path_dropout("weight_sharing.drop_path", ws.drop_path, self.space.name)
            if not 0 <= ws.warmup_epochs < ws.epochs:
                raise ConfigError(f"weight_sharing.warmup_epochs must lie in [0, epochs = {ws.epochs}), "
                                  f"got {ws.warmup_epochs}")
            if ws.scoring.bn_calibration_batches * self.data.batch_size > self.data.train_size:
                raise ConfigError(f"weight_sharing.scoring.bn_calibration_batches ({ws.scoring.bn_calibration_batches}"
                                  f" x data.batch_size {self.data.batch_size}) exceeds data.train_size "
                                  f"({self.data.train_size})")
            if ws.scoring.same_batches and ws.scoring.reward_batches * self.data.eval_batch_size > self.data.valid_size:
                raise ConfigError(f"weight_sharing.scoring.reward_batches ({ws.scoring.reward_batches} x "
                                  f"data.eval_batch_size {self.data.eval_batch_size}) exceeds data.valid_size "
                                  f"({self.data.valid_size})")
            expected = (ws.epochs - ws.warmup_epochs) * ws.archs_per_epoch
            if self.budget is not None and self.budget != expected:
                raise ConfigError(f"budget ({self.budget}) must equal (weight_sharing.epochs - warmup_epochs) x "
                                  f"archs_per_epoch ({expected}) with the supernet evaluator; leave budget unset")
            self.budget = expected
        elif self.budget is None:
            self.budget = 100
        if self.budget < 1:
            raise ConfigError(f"budget must be >= 1, got {self.budget}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1 (resuming needs one), got {self.keep_checkpoints}")
        if self.episodes_per_iteration is not None and self.episodes_per_iteration < 1:
            raise ConfigError(f"episodes_per_iteration must be >= 1, got {self.episodes_per_iteration}")
        if self.evaluator.type not in EVALUATORS:
            raise ConfigError(f"evaluator.type: unknown evaluator {self.evaluator.type!r} (choose {', '.join(EVALUATORS)})")
        if self.evaluator.type == "table" and not self.evaluator.table:
            raise ConfigError("evaluator.table: a table file is required with evaluator.type 'table' (--table FILE)")
        if not self.evaluator.noise >= 0 or self.evaluator.noise == float("inf"):
            raise ConfigError(f"evaluator.noise must be a finite number >= 0, got {self.evaluator.noise}")
        if self.evaluator.noise and self.uses_supernet:
            raise ConfigError("evaluator.noise applies to a table; a supernet's rewards are noisy by themselves")
        try:
            check_reward_scale(self.reward_scale)
            check_budget_mode(self.budget_mode, weight_sharing=self.uses_supernet)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        for section, keys in (("ppo", ("lr", "num_epochs", "minibatches")), ("reinforce", ("lr",)),
                              ("rea", ("population_size", "tournament_size"))):
            for key in keys:
                value = getattr(getattr(self, section), key)
                if value is not None and value <= 0:
                    raise ConfigError(f"{section}.{key} must be > 0, got {value}")
        if self.ppo.baseline is not None and self.ppo.baseline not in PPO_BASELINES:
            raise ConfigError(f"ppo.baseline must be one of {', '.join(PPO_BASELINES)} (or null: the default), "
                              f"got {self.ppo.baseline!r}")
        if self.ppo.entropy_coeff_final is not None and self.ppo.entropy_coeff_final < 0:
            raise ConfigError(f"ppo.entropy_coeff_final must be >= 0 (or null: no schedule), "
                              f"got {self.ppo.entropy_coeff_final}")
        for section in ("ppo", "reinforce"):
            clip = getattr(self, section).grad_clip
            if clip is not None and not 0 <= clip < float("inf"):
                raise ConfigError(f"{section}.grad_clip must be a finite number >= 0 (0: no clipping), got {clip}")
            if getattr(self, section).elite_replay is not None:
                try:
                    check_elite_replay(getattr(self, section).elite_replay, f"{section}.elite_replay")
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        self.objective.validate()
        return self


def check_path_dropout(key: str, prob: float, space: str) -> None:
    """A drop probability only where the space's network has paths to drop (checked before torch loads;
    ``Supernet.set_drop_path`` refuses it too)."""
    if prob > 0 and space not in PATH_DROPOUT_SPACES:
        raise ConfigError(f"{key}: the {space} network has no droppable paths (only {', '.join(PATH_DROPOUT_SPACES)})")


@dataclass
class RetrainConfig:
    """Training a found architecture from scratch (``raynas retrain``)."""

    seed: int = 0
    out: str = "runs/retrain"
    ray_address: str | None = None  # None: RAY_ADDRESS, else the cluster `ray start` recorded here, else embedded
    num_cpus: int | None = None  # of an embedded cluster
    workers: int = 1  # data-parallel Ray Train workers; with gpus > 0 there are `gpus` workers, one GPU each
    gpus: int = 0
    cpus_per_worker: float = 1.0
    space: SpaceSection = field(default_factory=lambda: SpaceSection(name="enas_micro"))
    supernet: SupernetConfig = field(default_factory=lambda: SupernetConfig(bn_track_running_stats=True))
    data: DataConfig = field(default_factory=lambda: DataConfig(train_size=50000, cutout=16))
    train: TrainSettings = field(default_factory=TrainSettings)
    verbose: bool = False  # keep Ray Train's own INFO messages (resources, process groups, each checkpoint)

    def validate(self) -> "RetrainConfig":
        self.space.validate()
        if self.gpus < 0 or self.workers < 1 or self.cpus_per_worker <= 0:
            raise ConfigError("workers must be >= 1, gpus >= 0 and cpus_per_worker > 0")
        if not self.supernet.bn_track_running_stats:
            raise ConfigError("supernet.bn_track_running_stats must be true for retraining (test time uses "
                              "running averages)")
        check_path_dropout("supernet.drop_path", self.supernet.drop_path, self.space.name)
        if self.data.source != "synthetic" and not self.data.data_dir:
            raise ConfigError("data.data_dir: a dataset directory is required (--data-dir DIR), or data.source: synthetic")
        return self

    @property
    def num_workers(self) -> int:
        return self.gpus or self.workers


TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", dict: "a mapping",
              list: "a list", type(None): "null"}
EXAMPLES = {int: 1, float: 0.001, str: "name", bool: True}


def _wrong(where: str, hint: Any, value: Any, example: Any) -> ConfigError:
    """The error for a value of the wrong type, with the types accepted and an example, as in
    ``ppo.lr must be a number or null, got 'abc' (a string); e.g. 0.001``."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    words = " or ".join("a mapping" if dataclasses.is_dataclass(t)
                        else TYPE_WORDS.get(t, getattr(t, "__name__", str(t))) for t in options)
    given = TYPE_WORDS.get(type(value), type(value).__name__)
    if example is None:
        example = next((EXAMPLES[t] for t in options if t in EXAMPLES), None)
    if example is None:  # a section: its fields without defaults, as YAML's flow style spells them
        section = next((t for t in options if dataclasses.is_dataclass(t)), None)
        required = [f.name for f in dataclasses.fields(section)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING] if section else []
        example = "{" + ", ".join(f"{name}: ..." for name in required) + "}" if required else None
    if isinstance(example, bool):
        example = str(example).lower()  # YAML's spelling
    shown = "" if example is None else f"; e.g. {example}"
    return ConfigError(f"{where} must be {words}, got {value!r} ({given}){shown}")


def _check_type(value: Any, hint: Any, where: str, example: Any = None) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option, where)
            except ConfigError:
                if isinstance(value, dict) and dataclasses.is_dataclass(option):
                    raise  # a section with a problem inside: that problem, by its name
                continue
        raise _wrong(where, hint, value, example)
    if hint is type(None):
        if value is None:
            return None
        raise _wrong(where, hint, value, example)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool, dict, list):
        if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
            raise _wrong(where, hint, value, example)
        return value
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    return value


def from_dict(cls: type, data: Any, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types by name."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(f"unknown key {path!r} (known: {', '.join(sorted(fields))})")
        default = fields[key].default
        example = default if isinstance(default, (int, float, str)) and default is not dataclasses.MISSING else None
        kwargs[key] = _check_type(value, hints[key], path, example)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{where + '.' if where else ''}{name} is required")
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a YAML mapping")
    return data


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` laid over ``base``, section by section (a new dict)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_config(data: dict[str, Any], overrides: dict[str, Any] | None = None, cls: type = SearchConfig) -> Any:
    """A mapping in the YAML layout + dotted overrides (``{"evaluator.table": "t.json"}``), validated."""
    nested: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        node = nested
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return from_dict(cls, deep_merge(data, nested)).validate()


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                cls: type = SearchConfig) -> Any:
    """YAML file (optional) + dotted overrides, validated: a ``SearchConfig`` (or ``cls``)."""
    data = read_yaml(path) if path is not None else {}
    try:
        return build_config(data, overrides, cls)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def load_run_config(out: Path) -> SearchConfig:
    """The config a search saved in its output directory (``config.json``), validated."""
    path = out / "config.json"
    if not path.is_file():
        raise ValueError(f"{out} holds no search to resume (no config.json)")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a readable search config: {exc}") from None
    return from_dict(SearchConfig, data).validate()


def to_dict(config: SearchConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)
