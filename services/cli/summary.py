"""What a finished ``raynas search`` tells its user: what was found, how good and on which split,
where the files are, the picture, and the exact next command."""
from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path
from typing import Any

import yaml

from ..config import PRESETS_DIR


def retrain_command(space: str, params: dict[str, Any], arch_file: Path, data_dir: str | None) -> str:
    """``raynas retrain`` with the preset of the same space (its size set where it differs)."""
    presets = []
    for path in sorted(PRESETS_DIR.glob("retrain-*.yaml")):
        preset = yaml.safe_load(path.read_text()) or {}
        section = preset.get("space") or {}
        if section.get("name") == space:
            differs = {k: v for k, v in params.items() if (section.get("params") or {}).get(k) != v}
            presets.append((len(differs), path.name != f"retrain-{space}.yaml", path, differs))
    if not presets:
        return ""
    _, _, path, differs = min(presets, key=lambda p: (p[0], p[1]))
    words = ["raynas", "retrain", str(arch_file), "--config", str(path.relative_to(PRESETS_DIR.parent))]
    if data_dir:
        words += ["--data-dir", data_dir]
    for key, value in sorted(differs.items()):
        words += ["--set", f"space.params.{key}={value}"]
    return " ".join(shlex.quote(w) for w in words)


def compare_command(cfg: Any) -> str:
    words = ["raynas", "compare", "--space", cfg.space.name, "--evaluator", "table", "--table", cfg.evaluator.table,
             "--budget", str(cfg.budget), "--algos", "ppo,reinforce,rea,random", "--seeds", "3"]
    if cfg.evaluator.reward_key:
        words[8:8] = ["--reward-key", cfg.evaluator.reward_key]
    return " ".join(shlex.quote(w) for w in words + objective_words(cfg))


def objective_words(cfg: Any) -> list[str]:
    """The options that make another search count costs as this one did: its constraints (a hard one
    as its flag) and the skeleton and input they are counted at, where they differ from the defaults."""
    import dataclasses

    section = cfg.objective
    if not section.constraints.items():
        return []
    words = []
    for key, c in section.constraints.items():
        if c.mode == "hard":
            words += [f"--max-{key.replace('_', '-')}", f"{c.target:g}"]
        else:
            soft = f"{{target: {c.target:g}, mode: soft, weight: {c.weight:g}}}"
            words += ["--set", f"objective.constraints.{key}={soft}"]
    defaults = type(section)()
    if section.latency_table:
        words += ["--latency-table", section.latency_table]
    for key in ("penalty", "in_channels", "image_size", "num_classes", "device"):
        if getattr(section, key) != getattr(defaults, key):
            words += ["--set", f"objective.{key}={getattr(section, key)}"]
    for f in dataclasses.fields(cfg.supernet):
        value = getattr(cfg.supernet, f.name)
        if value != f.default:
            words += ["--set", f"supernet.{f.name}={json.dumps(value)}"]
    return words


def search_summary(cfg: Any, summary: dict[str, Any]) -> list[str]:
    out = Path(cfg.out)
    best = summary["best"]
    lines = []
    if cfg.uses_supernet:
        derived = json.loads((out / "best_arch.json").read_text())
        lines += [f"found  {derived['arch']}",
                  f"       validation accuracy {derived['valid_accuracy']:.4f} on the whole validation split "
                  f"({cfg.data.valid_size} images) with the supernet's shared weights: retrain it for its own "
                  "accuracy",
                  f"       (the search's best reward: {best['reward']:.4f}, on "
                  f"{cfg.weight_sharing.scoring.reward_batches} validation minibatch(es) per child)"]
        lines += objective_lines(cfg, derived)
        lines += controller_lines(cfg, derived["arch"])
        picture = _draw(out / "best_arch.json")
        lines.append(f"files  {out}/: best_arch.json{picture}, top_archs.json, metrics.csv, trajectory.jsonl, "
                     "report.png, tensorboard/")
        retrain = retrain_command(cfg.space.name, cfg.space.params, out / "best_arch.json", cfg.data.data_dir)
        lines.append(f"next   {retrain}" if retrain else f"next   raynas show {out / 'best_arch.json'}")
    else:
        metrics = best.get("metrics") or {}
        extra = ", ".join(f"{k} {v:g}" for k, v in metrics.items() if k != cfg.evaluator.reward_key)
        lines += [f"found  {best['arch']}",
                  f"       reward {best['reward']:.4f} ({cfg.evaluator.reward_key or 'the table'}'s value"
                  f"{'; ' + extra if extra else ''}), architecture {best['sample'] + 1} of {summary['evaluated']}",
                  *objective_lines(cfg, best),
                  f"files  {out}/: best_arch.json, summary.json, trajectory.jsonl, progress.json, config.json, "
                  "checkpoints/",
                  "next   " + compare_command(cfg) + "   # all four algorithms, three seeds each"]
    return ["[raynas] " + line for line in lines]


def objective_lines(cfg: Any, best: dict[str, Any]) -> list[str]:
    """A child found under an objective: its costs against the targets, and a warning when it
    does not meet every hard constraint (no child the search saw did)."""
    if "costs" not in best:
        return []
    targets = dict(cfg.objective.constraints.items())
    costs = ", ".join(f"{key} {value:.4g}" + (f" (target {targets[key].target:g}, {targets[key].mode})"
                                              if key in targets else "") for key, value in best["costs"].items())
    lines = [f"       costs {costs}" + (f"; reward shaped from {best['measured']:.4f} measured"
                                        if "measured" in best and best["measured"] != best["reward"] else "")]
    if not best["feasible"]:
        lines.append("WARNING no child the search saw meets every hard constraint: this one is the closest to the "
                     "targets of those it saw (raise the targets, or search longer)")
    return lines


def controller_lines(cfg: Any, arch: str) -> list[str]:
    """The controller's final state (metrics.csv's last epoch) and what deserves a warning."""
    from controller_policy import build_space
    from controller_policy.health import FROZEN_CHANGE, SATURATION
    from supernet_worker.ops import parameter_free

    lines = []
    with (Path(cfg.out) / "metrics.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    saturated = float(last.get("controller_saturated") or "nan")
    if math.isfinite(saturated):
        exact, change = float(last["controller_exactly_saturated"]), float(last["controller_policy_change"])
        lines.append(f"policy final entropy {float(last['controller_entropy']):.2f}; {saturated:.0%} of its squashed "
                     f"logits at |tanh| > {SATURATION}, {exact:.0%} at exactly ±1; last update moved it by "
                     f"{change:.2g} (max |Δ log π|)")
        if exact >= 0.5 or change < FROZEN_CHANGE:
            lines.append("WARNING the controller's policy froze: the derivation sampled a fixed policy, not a "
                         "learned one (lower the algorithm's lr; see metrics.csv's controller_* columns)")
    space = build_space(cfg.space.name, **cfg.space.params)
    if parameter_free(space, space.from_string(arch)):
        hard = any(c.mode == "hard" for _, c in cfg.objective.constraints.items())
        lines.append("WARNING the derived architecture is parameter-free (only skip, pooling or none ops): "
                     + ("this search's hard targets may allow nothing else (see its costs), or " if hard else "")
                     + "a young supernet scores such children best; more warm-up epochs (weight_sharing.warmup_epochs) "
                     "help")
    return lines


def _draw(arch_file: Path) -> str:
    """``best_arch.png`` beside the file (Graphviz when installed, else matplotlib)."""
    from ..show import draw

    try:
        draw(arch_file, "png")
    except (OSError, ValueError, RuntimeError) as exc:  # a picture must not fail a finished search
        return f" (no picture: {exc})"
    return " + best_arch.png"
