"""The search's progress on the terminal: a bar with ETA on a terminal, one plain line per iteration
(epoch) otherwise, so CI and Ray job logs stay readable."""
from __future__ import annotations

import shutil
import sys
import time
from typing import Any, TextIO

from ray import tune
from tqdm import tqdm

from controller_policy.algorithms import SEARCH

from .weight_sharing import SUPERNET, derive_message

# Columns of a bar's line that are not its postfix, the bar (>= 20 columns) included:
# "[raynas] search 100/100 archs |<bar>| 12:34<56:07, " ...
BAR_FRAME = 64


def fit(parts: list[str], width: int) -> str:
    """The leading ``parts`` that fit ``width`` columns, joined by spaces."""
    shown = ""
    for part in parts:
        if len(shown) + len(part) + bool(shown) > width:
            break
        shown = f"{shown} {part}" if shown else part
    return shown


# What a terminal's second line says during each phase of an epoch, and what it counts.
PHASES = {"supernet": ("training shared weights", "steps"), "controller": ("controller", "archs"),
          "derive": ("deriving", "archs")}


def status(message: str) -> None:
    """A phase that prints nothing for a while (Ray start-up, data, derivation) says it is running."""
    print(f"[raynas] {message}", flush=True)


class SearchProgress:
    """``update(result)`` after every iteration, ``phase(...)`` within one (weight sharing: a second
    bar on a terminal for the epoch's supernet, controller and derivation phases); ``close()`` at
    the end."""

    def __init__(self, cfg: Any, done: int = 0, stream: TextIO | None = None) -> None:
        self.cfg, self.stream = cfg, stream or sys.stdout
        self.started = time.time()
        self.supernet = cfg.uses_supernet
        self.total = cfg.weight_sharing.epochs if self.supernet else cfg.budget
        self.bar = self.phase_bar = None
        self.phase_name = ""
        self.width = shutil.get_terminal_size((100, 24)).columns  # a terminal that reports no size gets 100
        if self.stream.isatty():
            self.bar = tqdm(total=self.total, initial=done, file=self.stream, ncols=self.width, leave=True,
                            unit="epoch" if self.supernet else "arch", desc="[raynas] search",
                            bar_format="{desc} {n_fmt}/{total_fmt} {unit}s |{bar}| {elapsed}<{remaining}{postfix}")

    def update(self, result: dict[str, Any]) -> None:
        line = self.describe(result)
        if self.bar is None:
            print(f"[raynas] {line}  ({time.time() - self.started:.0f}s)", file=self.stream, flush=True)
            return
        done = int(result["training_iteration"]) if self.supernet else int(result[SEARCH]["archs_sampled"])
        self.bar.set_postfix_str(fit(self.figures(result), self.width - BAR_FRAME), refresh=False)
        self.bar.update(done - self.bar.n)

    def figures(self, result: dict[str, Any]) -> list[str]:
        """The bar's postfix: what the bar itself does not show, most telling first."""
        s = result[SEARCH]
        parts = [f"best {s['best_reward']:.4f}"]
        if SUPERNET in result:
            w = result[SUPERNET]
            if int(result["training_iteration"]) > self.cfg.weight_sharing.warmup_epochs:
                parts += [f"reward {w['controller_reward_mean']:.4f}", f"entropy {w['controller_entropy']:.2f}"]
            else:
                parts.append("warm-up")
            parts += [f"loss {w['shared_loss']:.3f}", f"acc {w['shared_accuracy']:.3f}"]
        else:
            parts.append(f"mean {s['reward_mean']:.4f}")
        return parts

    def phase(self, name: str, done: int, total: int) -> None:
        """A phase inside an epoch: on a terminal a second bar with its own ETA; otherwise only the
        derivation's start (its candidates take long: a plain log says why nothing comes)."""
        if self.bar is None:
            if name == "derive" and done == 0:
                print(derive_message(total), file=self.stream, flush=True)
            return
        label, unit = PHASES[name]
        desc = f"[raynas]   {label}"
        if self.phase_bar is None:
            self.phase_bar = tqdm(total=total, file=self.stream, ncols=self.width, position=1, leave=False, unit=unit,
                                  desc=desc, bar_format="{desc} {n_fmt}/{total_fmt} {unit} |{bar}| {elapsed}<{remaining}")
        elif name != self.phase_name or done == 0:
            self.phase_bar.unit = unit
            self.phase_bar.set_description_str(desc, refresh=False)
            self.phase_bar.reset(total=total)  # its clock too: the ETA is this phase's
        self.phase_name = name
        self.phase_bar.update(done - self.phase_bar.n)

    def describe(self, result: dict[str, Any]) -> str:
        s, cfg = result[SEARCH], self.cfg
        line = f"{int(s['archs_sampled'])}/{cfg.budget} architectures  best {s['best_reward']:.4f}"
        if SUPERNET not in result:
            return line + f"  mean reward {s['reward_mean']:.4f}"
        w, epoch = result[SUPERNET], int(result["training_iteration"])
        warm_up = epoch <= cfg.weight_sharing.warmup_epochs
        controller = (f"warm-up: {cfg.weight_sharing.sampling} children, no controller" if warm_up
                      else f"controller reward {w['controller_reward_mean']:.4f} entropy "
                           f"{w['controller_entropy']:.2f}  " + line)
        return (f"epoch {epoch}/{cfg.weight_sharing.epochs}  shared loss {w['shared_loss']:.3f} "
                f"acc {w['shared_accuracy']:.3f}  {controller}")

    def close(self) -> None:
        if self.phase_bar is not None:
            self.phase_bar.close()
        if self.bar is not None:
            self.bar.close()


class RetrainProgress:
    """``raynas retrain``'s epochs as rank 0 reports them (``supernet_worker.retrain`` events): on a
    terminal a bar over the epochs (train loss/acc, test acc, ETA) and one over the epoch's
    minibatches; otherwise one plain line per epoch."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.width = shutil.get_terminal_size((100, 24)).columns
        self.bar = self.step_bar = None
        self.epochs = 0

    def event(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            self.epochs = event["epochs"]
            if event["epoch"]:
                self.say(f"retrain resumed after epoch {event['epoch']}")
            if self.tty:
                self.bar = tqdm(total=self.epochs, initial=event["epoch"], file=self.stream, ncols=self.width,
                                desc="[raynas] retrain", unit="epoch", leave=True,
                                bar_format="{desc} {n_fmt}/{total_fmt} {unit}s |{bar}| {elapsed}<{remaining}{postfix}")
        elif kind == "step" and self.bar is not None:
            if self.step_bar is None:
                self.step_bar = tqdm(total=event["total"], file=self.stream, ncols=self.width, position=1,
                                     leave=False, desc=f"[raynas]   epoch {event['epoch']}", unit="batches",
                                     bar_format="{desc} {n_fmt}/{total_fmt} {unit} |{bar}| {elapsed}<{remaining}")
            elif event["done"] == 0:
                self.step_bar.set_description_str(f"[raynas]   epoch {event['epoch']}", refresh=False)
                self.step_bar.reset(total=event["total"])
            self.step_bar.update(event["done"] - self.step_bar.n)
        elif kind == "epoch":
            figures = (f"train loss {event['train_loss']:.3f} acc {event['train_accuracy']:.4f}  "
                       f"test acc {event['test_accuracy']:.4f}  lr {event['lr']:.4g}")
            if self.bar is None:
                self.say(f"retrain epoch {event['epoch']}/{self.epochs}  {figures}  ({event['wall_time']:.0f}s, "
                         f"about {event['left']:.0f}s left)")
            else:
                parts = [f"test acc {event['test_accuracy']:.4f}", f"train loss {event['train_loss']:.3f}",
                         f"acc {event['train_accuracy']:.4f}", f"lr {event['lr']:.4g}"]
                self.bar.set_postfix_str(fit(parts, self.width - BAR_FRAME), refresh=False)
                self.bar.update(event["epoch"] - self.bar.n)

    def say(self, line: str) -> None:
        (tqdm.write if self.bar is not None else print)(f"[raynas] {line}", file=self.stream)
        self.stream.flush()

    def close(self) -> None:
        for bar in (self.step_bar, self.bar):
            if bar is not None:
                bar.close()
        self.bar = self.step_bar = None


class TrialProgress(tune.Callback):
    """A compare's trials as they start, finish and fail: one line per change (instead of Tune's
    periodic status table, which ``verbose: true`` brings back)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.started: set[str] = set()
        self.running: set[str] = set()
        self.done: set[str] = set()
        self.failed: set[str] = set()

    def _say(self, trial: Any, what: str) -> None:
        config = getattr(trial, "config", {}) or {}
        print(f"[raynas] trial {config.get('algo', '?')} seed {config.get('seed', '?')} {what}; trials: "
              f"{len(self.done)} done, {len(self.running)} running, {len(self.failed)} failed of {self.total}",
              flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        again = trial.trial_id in self.started
        self.started.add(trial.trial_id)
        self.running.add(trial.trial_id)
        self._say(trial, "restarted after a failure (from its last checkpoint, if any)" if again else "started")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.done.add(trial.trial_id)
        self._say(trial, "finished")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running.discard(trial.trial_id)
        self.failed.add(trial.trial_id)
        self._say(trial, "failed")
