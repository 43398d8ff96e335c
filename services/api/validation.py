"""Everything a request carries is checked here, before anything is stored or submitted; a problem
is a ``RequestError`` with the gRPC status and a message naming the field."""
from __future__ import annotations

import base64
import dataclasses
import math
import re
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import grpc
import yaml
from google.protobuf.json_format import MessageToDict

from ..config import ConfigError, SearchConfig, build_config, deep_merge, read_yaml, to_dict
from .proto import raynas_pb2 as pb

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,128}")
SEARCH_ID = re.compile(r"s-[0-9a-f]{16}")
PRESET = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
MAX_PATH = 4096
MAX_YAML = 64 * 1024
MAX_PAGE = 500
MAX_GPUS_PER_WORKER = 16.0
# Every numeric field of a search config a client may set, with the range the service accepts
# (inclusive; tests check that no numeric field lacks one). Checked on the final, merged config.
BOUNDS: dict[str, tuple[float, float]] = {
    "seed": (0, 2**31 - 1), "budget": (1, 100_000), "episodes_per_iteration": (1, 10_000), "skip_weight": (0, 100),
    "num_cpus": (1, 4096), "reward_scale": (1e-9, 1e9), "keep_checkpoints": (1, 1000),
    "controller.hidden_size": (1, 1024), "controller.num_lstm_layers": (1, 8), "controller.temperature": (1e-3, 100),
    "controller.tanh_constant": (0, 100), "controller.skip_target": (0, 1), "controller.init_range": (0, 10),
    "controller.op_tanh_reduce": (1e-3, 100),
    "ppo.lr": (0, 10), "ppo.entropy_coeff": (0, 100), "ppo.clip_param": (0, 10), "ppo.num_epochs": (1, 100),
    "ppo.minibatches": (1, 1000), "ppo.vf_loss_coeff": (0, 100), "ppo.grad_clip": (0, 1e6),
    "ppo.entropy_coeff_final": (0, 100), "ppo.elite_replay": (0, 1000), "reinforce.elite_replay": (0, 1000),
    "reinforce.lr": (0, 10), "reinforce.entropy_coeff": (0, 100), "reinforce.baseline_decay": (0, 1),
    "reinforce.baseline_init": (-1e6, 1e6), "reinforce.grad_clip": (0, 1e6), "evaluator.noise": (0, 100),
    "rea.population_size": (1, 100_000), "rea.tournament_size": (1, 100_000),
    "weight_sharing.epochs": (1, 10_000), "weight_sharing.warmup_epochs": (0, 10_000),
    "weight_sharing.archs_per_epoch": (1, 100_000), "weight_sharing.train_steps": (1, 10_000_000),
    "weight_sharing.workers": (1, 256), "weight_sharing.gpus_per_worker": (0, MAX_GPUS_PER_WORKER),
    "weight_sharing.cpus_per_worker": (0, 256), "weight_sharing.max_restarts": (0, 100),
    "weight_sharing.derive_samples": (1, 100_000), "weight_sharing.top_k": (1, 1000),
    "weight_sharing.checkpoint_every": (1, 10_000), "weight_sharing.scoring.reward_batches": (1, 1000),
    "weight_sharing.scoring.bn_calibration_batches": (0, 1000), "weight_sharing.drop_path": (0, 1),
    "supernet.channels": (2, 1024), "supernet.num_cells": (1, 64), "supernet.dropout": (0, 1),
    "supernet.drop_path": (0, 1),
    "data.train_size": (1, 10_000_000), "data.valid_size": (1, 10_000_000), "data.split_seed": (0, 2**31 - 1),
    "data.batch_size": (1, 8192), "data.eval_batch_size": (1, 16_384), "data.cutout": (0, 1024),
    "data.synthetic_train": (1, 1_000_000), "data.synthetic_test": (1, 1_000_000),
    "data.synthetic_image_size": (1, 512), "data.synthetic_channels": (1, 16), "data.synthetic_classes": (2, 10_000),
    "optim.lr_max": (0, 10), "optim.lr_min": (0, 10), "optim.momentum": (0, 1), "optim.weight_decay": (0, 1),
    "optim.restart_period": (1, 10_000), "optim.restart_mult": (1, 100), "optim.grad_clip": (0, 1e6),
    "optim.warmup_epochs": (0, 10_000),
    "objective.penalty": (-1e9, 1e9), "objective.in_channels": (1, 64), "objective.image_size": (1, 4096),
    "objective.num_classes": (2, 100_000),
    **{f"objective.constraints.{cost}.{key}": bounds for cost in ("params_m", "flops_m", "latency_ms")
       for key, bounds in (("target", (1e-9, 1e9)), ("weight", (-100, 0)))},
}
# Space parameters, checked before the space is built (a space's size is set by them).
SPACE_PARAM_BOUNDS = {"num_layers": (1, 64), "num_nodes": (1, 16)}
MAX_SPACE_OPS = 16
# the spec's typed fields, by their names in the spec
LIMITS = {"budget": BOUNDS["budget"], "epochs": BOUNDS["weight_sharing.epochs"],
          "workers": BOUNDS["weight_sharing.workers"], "seed": BOUNDS["seed"]}
SERVICE_OWNED = ("out", "ray_address", "num_cpus")  # the service decides where and how a search runs

SPACES = {pb.ENAS_MACRO: "enas_macro", pb.ENAS_MICRO: "enas_micro", pb.NB201: "nb201"}
ALGORITHMS = {pb.PPO: "ppo", pb.REINFORCE: "reinforce", pb.RANDOM: "random", pb.REA: "rea"}
EVALUATORS = {pb.SUPERNET: "supernet", pb.TABLE: "table"}


class RequestError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def invalid(message: str) -> RequestError:
    return RequestError(grpc.StatusCode.INVALID_ARGUMENT, message)


def check_search_id(search_id: str, field: str = "id") -> str:
    if not search_id:
        raise invalid(f"{field}: required")
    if not SEARCH_ID.fullmatch(search_id):
        raise invalid(f"{field}: {_show(search_id)} is not a search id (s- and 16 hex digits)")
    return search_id


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise invalid(f"name: {_show(name)} must be 1-64 of A-Z a-z 0-9 . _ -")
    if name in (".", ".."):
        raise invalid(f"name: {name!r} is not a name")
    return name


def check_idempotency_key(key: str) -> str | None:
    if not key:
        return None
    if not IDEMPOTENCY_KEY.fullmatch(key):
        raise invalid(f"idempotency_key: {_show(key)} must be 1-128 of A-Z a-z 0-9 . _ : -")
    return key


@dataclass(frozen=True)
class PathPolicy:
    """Where a spec's paths may point: below these directories (resolved, symlinks included);
    tables are regular files of at most ``max_table_bytes``."""

    roots: tuple[Path, ...]
    max_table_bytes: int = 256 << 20

    @classmethod
    def of(cls, roots: Sequence[str | Path], max_table_bytes: int = 256 << 20) -> "PathPolicy":
        return cls(tuple(Path(r).resolve() for r in roots), max_table_bytes)


def check_path(value: str, field: str, policy: PathPolicy, kind: str) -> str:
    """An absolute path, no '..', that resolves (symlinks followed) below one of the policy's
    roots to an existing regular file under the size cap (``kind`` "file") or a directory.
    Returns the resolved path; messages never show what a file holds."""
    if len(value) > MAX_PATH or "\x00" in value:
        raise invalid(f"{field}: not a usable path ({len(value)} characters)")
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise invalid(f"{field}: {_show(value)} must be an absolute path (the job runs in a directory of its own)")
    if ".." in path.parts:
        raise invalid(f"{field}: {_show(value)} must not contain '..'")
    resolved = Path(value).resolve()
    if not any(resolved.is_relative_to(root) for root in policy.roots):
        # the same answer whether or not the path exists: nothing outside the roots can be probed
        raise invalid(f"{field}: {_show(value)} is outside the directories this service reads "
                      "(its --data-root and --runs-dir)")
    try:
        info = resolved.stat()
    except OSError:
        raise invalid(f"{field}: {_show(value)} does not exist") from None
    if kind == "file":
        if not stat.S_ISREG(info.st_mode):
            raise invalid(f"{field}: {_show(value)} is not a regular file")
        if info.st_size > policy.max_table_bytes:
            raise invalid(f"{field}: {_show(value)} holds {info.st_size} bytes, more than this service's "
                          f"{policy.max_table_bytes}")
    elif not stat.S_ISDIR(info.st_mode):
        raise invalid(f"{field}: {_show(value)} is not a directory")
    return str(resolved)


def spec_to_config(spec: pb.SearchSpec, presets_dir: Path, paths: PathPolicy) -> tuple[SearchConfig, dict[str, Any]]:
    """The search config a spec asks for (preset, then yaml_overrides, then typed fields), and the
    spec as a dict (what idempotent resubmits are compared by). Service searches never download
    datasets, and every path they name obeys ``paths``."""
    data: dict[str, Any] = {}
    if spec.preset:
        if not PRESET.fullmatch(spec.preset):
            raise invalid(f"spec.preset: {_show(spec.preset)} is not a preset name")
        path = presets_dir / f"{spec.preset}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in presets_dir.glob("*.yaml")))
            raise invalid(f"spec.preset: unknown preset {spec.preset!r} (known: {known})")
        data = read_yaml(path)
    if spec.yaml_overrides:
        data = deep_merge(data, _parse_overrides(spec.yaml_overrides))
    for key in SERVICE_OWNED:
        data.pop(key, None)
    space_section = data.get("space")
    if isinstance(space_section, dict) and isinstance(space_section.get("params"), dict):
        _check_space_params(space_section["params"])

    overrides: dict[str, Any] = {}
    for field, table, key in (("space", SPACES, "space.name"), ("algorithm", ALGORITHMS, "algo"),
                              ("evaluator", EVALUATORS, "evaluator.type")):
        value = getattr(spec, field)
        if value not in table and value != 0:
            raise invalid(f"spec.{field}: unknown value {value}")
        if value:
            overrides[key] = table[value]
    for field, key in (("budget", "budget"), ("seed", "seed"), ("epochs", "weight_sharing.epochs"),
                       ("workers", "weight_sharing.workers")):
        if spec.HasField(field):
            overrides[key] = _in_range(getattr(spec, field), field)
    if spec.HasField("gpus_per_worker"):
        gpus = spec.gpus_per_worker
        if not (math.isfinite(gpus) and 0 <= gpus <= MAX_GPUS_PER_WORKER):
            raise invalid(f"spec.gpus_per_worker: {gpus} is outside [0, {MAX_GPUS_PER_WORKER:g}]")
        overrides["weight_sharing.gpus_per_worker"] = gpus
    if spec.table:
        overrides["evaluator.table"] = check_path(spec.table, "spec.table", paths, "file")
    if spec.reward_key:
        if len(spec.reward_key) > 64:
            raise invalid("spec.reward_key: longer than 64 characters")
        overrides["evaluator.reward_key"] = spec.reward_key
    if spec.data_dir:
        overrides["data.data_dir"] = check_path(spec.data_dir, "spec.data_dir", paths, "dir")
    overrides["data.download"] = False  # a client must not make torchvision write into the cluster's disks
    try:
        cfg = build_config(data, overrides)
    except ConfigError as exc:
        raise invalid(f"spec: {exc}") from None
    _check_final(cfg, paths)
    return cfg, MessageToDict(spec, preserving_proto_field_name=True)


def _parse_overrides(text: str) -> dict[str, Any]:
    if len(text.encode()) > MAX_YAML:
        raise invalid(f"spec.yaml_overrides: {len(text.encode())} bytes, at most {MAX_YAML}")
    try:
        # Anchors and aliases could expand a small document into a huge one.
        if any(isinstance(t, (yaml.AliasToken, yaml.AnchorToken)) for t in yaml.scan(text)):
            raise invalid("spec.yaml_overrides: YAML anchors and aliases are not accepted")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise invalid(f"spec.yaml_overrides: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise invalid("spec.yaml_overrides: must be a YAML mapping (the layout of configs/*.yaml)")
    return data


def _in_range(value: int, field: str, label: str | None = None) -> int:
    low, high = LIMITS[field]
    if not low <= value <= high:
        raise invalid(f"{label or 'spec.' + field}: {value} is outside [{low}, {high}]")
    return value


def _check_space_params(params: dict[str, Any]) -> None:
    """Bounds on what sizes a space, before anything is built from it."""
    for key, value in params.items():
        if key in SPACE_PARAM_BOUNDS:
            low, high = SPACE_PARAM_BOUNDS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise invalid(f"space.params.{key}: {_show(str(value))} is outside [{low}, {high}]")
        elif key == "ops":
            if (not isinstance(value, list) or not 1 <= len(value) <= MAX_SPACE_OPS
                    or not all(isinstance(op, str) and len(op) <= 64 for op in value)):
                raise invalid(f"space.params.ops: a list of 1-{MAX_SPACE_OPS} op names")


def numeric_fields(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Every int/float field of a config dataclass by its dotted key (bools are not numbers here)."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            found.update(numeric_fields(value, f"{prefix}{f.name}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[prefix + f.name] = value
    return found


def _check_final(cfg: SearchConfig, paths: PathPolicy) -> None:
    """Every number the merged config holds (presets and yaml_overrides included) within BOUNDS."""
    for key, value in numeric_fields(cfg).items():
        low, high = BOUNDS.get(key, (0, 0))
        if key not in BOUNDS or not (math.isfinite(value) and low <= value <= high):
            raise invalid(f"{key}: {value} is outside [{low:g}, {high:g}]" if key in BOUNDS
                          else f"{key}: this service accepts no value here")
    if cfg.uses_supernet:
        if cfg.data.source != "synthetic" and cfg.data.data_dir:
            cfg.data.data_dir = check_path(cfg.data.data_dir, "data.data_dir", paths, "dir")
    elif cfg.evaluator.table:
        cfg.evaluator.table = check_path(cfg.evaluator.table, "evaluator.table", paths, "file")
    if cfg.objective.latency_table:  # read by the search: only below the data roots, as tables are
        cfg.objective.latency_table = check_path(cfg.objective.latency_table, "objective.latency_table", paths, "file")


def config_for_job(cfg: SearchConfig, output_dir: str) -> dict[str, Any]:
    data = to_dict(cfg)
    data["out"], data["ray_address"] = output_dir, None  # a job connects to the cluster it runs on
    return data


def encode_page_token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"after:{seq}".encode()).decode()


def decode_page_token(token: str) -> int:
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        prefix, seq = text.split(":")
        if prefix != "after" or not seq.isdigit():
            raise ValueError
        return int(seq)
    except (ValueError, UnicodeError):
        raise invalid(f"page_token: {_show(token)} is not a token this service gave out") from None


def check_list_request(request: pb.ListSearchesRequest) -> tuple[list[str], int, int]:
    states = []
    for value in request.states:
        if value not in pb.SearchState.values() or value == pb.SEARCH_STATE_UNSPECIFIED:
            raise invalid(f"states: unknown value {value}")
        states.append(pb.SearchState.Name(value))
    if not 0 <= request.page_size <= MAX_PAGE:
        raise invalid(f"page_size: {request.page_size} is outside [0, {MAX_PAGE}]")
    if len(request.name_prefix) > 64:
        raise invalid("name_prefix: longer than 64 characters")
    return states, request.page_size or 50, decode_page_token(request.page_token)


def _show(value: str, limit: int = 60) -> str:
    return repr(value if len(value) <= limit else value[:limit] + "…")
