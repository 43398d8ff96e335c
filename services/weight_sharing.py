"""ENAS with weight sharing as RLlib algorithms: one ``train()`` call is one ENAS epoch.

    epoch = supernet phase  (push the controller to the workers; they train the shared weights
                             on children they sample from it)
          + controller phase (RLlib iterations; each samples architectures, the workers score
                             them on validation minibatches in one batch, the learner updates)

PPO, REINFORCE and random search get the same two phases by mixing ``WeightSharingMixin`` into
the RL layer's algorithm classes; Tune can run, report and checkpoint them like any Algorithm.
"""
from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import ray
import torch
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.tune.execution.placement_groups import PlacementGroupFactory

from controller_policy.algorithms import CONTROLLER_PHASES, SEARCH, PPOSearch, RandomSearch, RegularizedEvolution, Reinforce
from controller_policy.evaluators import Evaluation
from supernet_worker.pool import SupernetPool
from supernet_worker.worker import WorkerSpec, data_parallel_plan

SUPERNET = "supernet"
METRICS_COLUMNS = ["epoch", "shared_loss", "shared_accuracy", "controller_reward_mean", "controller_entropy",
                   # the policy's health after the epoch's last update (controller_policy/health.py)
                   "controller_saturated", "controller_exactly_saturated", "controller_max_pre_tanh",
                   "controller_policy_change",
                   "best_reward", "archs_sampled", "lr", "wall_time",
                   # seconds of the epoch in each phase; derive_s only on the last epoch's row
                   "supernet_s", "sampling_s", "evaluation_s", "update_s", "derive_s"]
HEALTH_COLUMNS = {"controller_saturated": "policy_saturated", "controller_exactly_saturated": "policy_exactly_saturated",
                  "controller_max_pre_tanh": "policy_max_pre_tanh", "controller_policy_change": "policy_change"}
# Each phase reports its progress about this often: the supernet phase trains in this many calls
# (a round trip each, nothing next to a phase's minutes) and the derivation scores in as many chunks.
PHASE_UPDATES = 20


class WeightSharingMixin:
    """Needs ``config.weight_sharing``: a dict with ``worker_spec`` (``WorkerSpec``) and the
    ``WeightSharingSection`` fields (epochs, archs_per_epoch, train_steps, workers, ...).

    ``phase_listener(phase, done, total)``, when the driver sets one, hears the phases inside an
    epoch: "supernet" (steps), "controller" and "derive" (architectures)."""

    phase_listener: Callable[[str, int, int], None] | None = None

    def setup(self, config) -> None:
        super().setup(config)
        ws = self.ws = dict(self.config.weight_sharing)
        spec: WorkerSpec = ws["worker_spec"]
        # Under Tune the trial's placement group ends with one bundle per worker (see below).
        pg = ray.util.get_current_placement_group()
        self.pool = SupernetPool(spec, ws["workers"], ws["gpus_per_worker"], ws["cpus_per_worker"],
                                 ws["max_restarts"], placement_group=pg,
                                 first_bundle=len(pg.bundle_specs) - ws["workers"] if pg else 0)
        _, steps, _ = data_parallel_plan(spec.optim, spec.data.batch_size, self.pool.size,
                                         self.pool.info[0]["train_images"])
        self.steps_per_epoch = ws["train_steps"] or steps
        self.epoch = 0
        self.started = time.time()
        self.out_dir = Path(self.recorder.out_dir)
        self._tb = None

    @classmethod
    def default_resource_request(cls, config):
        """RLlib's bundles (driver, learners, env runners) plus one per supernet worker, so a
        Tune trial reserves its workers' CPUs/GPUs and trials never oversubscribe GPUs."""
        request = super().default_resource_request(config)
        ws = config.weight_sharing if isinstance(config, AlgorithmConfig) else config["weight_sharing"]
        workers = worker_bundles(ws["workers"], ws["cpus_per_worker"], ws["gpus_per_worker"])
        return PlacementGroupFactory(request.bundles + workers, strategy=request.strategy)

    # -- one ENAS epoch ------------------------------------------------------------------
    def training_step(self) -> None:
        self.phase_seconds = dict.fromkeys(CONTROLLER_PHASES, 0.0)
        warming_up = self.epoch < self.ws["warmup_epochs"]
        started = time.perf_counter()
        shared = self.supernet_phase(uniform=warming_up)
        self.phase_seconds["supernet"] = time.perf_counter() - started
        self.epoch_entropies: list[float] = []
        rows = [] if warming_up else self.controller_phase()
        self.epoch += 1
        if self.epoch == self.ws["epochs"]:
            started = time.perf_counter()
            self.derive()
            self.phase_seconds["derive"] = time.perf_counter() - started
        self.end_epoch(shared, rows)

    def report_phase(self, phase: str, done: int, total: int) -> None:
        if self.phase_listener is not None:
            self.phase_listener(phase, done, total)
        elif phase == "derive" and done == 0:  # Tune trials and Ray jobs: their logs say it
            print(derive_message(total), flush=True)

    def supernet_phase(self, uniform: bool = False) -> dict[str, float]:
        self.pool.set_controller(None if uniform or self.uniform_policy else self.controller_weights())
        steps = self.steps_per_epoch
        start, chunk = self.epoch * steps, max(1, -(-steps // PHASE_UPDATES))
        stats: list[dict[str, float]] = []
        self.report_phase("supernet", 0, steps)
        for done in range(chunk, steps + chunk, chunk):
            stats += self.pool.train(start + min(done, steps), steps)
            self.report_phase("supernet", min(done, steps), steps)
        seen = [s for s in stats if s["images"]]
        images = sum(s["images"] for s in seen)
        return {"loss": sum(s["loss"] * s["images"] for s in seen) / images if images else float("nan"),
                "accuracy": sum(s["accuracy"] * s["images"] for s in seen) / images if images else float("nan"),
                "lr": stats[-1]["lr"], "images": float(images)}

    def controller_phase(self) -> list[dict[str, Any]]:
        target = min(self.config.budget, (self.epoch + 1 - self.ws["warmup_epochs"]) * self.ws["archs_per_epoch"])
        first = self.recorder.count
        rows: list[dict[str, Any]] = []
        self.report_phase("controller", 0, target - first)
        while self.recorder.count < target:
            rows += self.controller_iteration(min(self.config.episodes_per_iteration, target - self.recorder.count))
            self.epoch_entropies += self.last_entropies
            self.report_phase("controller", self.recorder.count - first, target - first)
        return rows

    def evaluate_architectures(self, archs: list[list[int]]) -> list[Evaluation]:
        # scoring.same_batches: one draw of minibatches per controller iteration, seeded by the
        # architectures recorded so far (so a resumed search draws the same ones)
        seed = self.config.seed * 1_000_003 + self.recorder.count if self.ws["scoring"]["same_batches"] else None
        return [Evaluation(acc, {"valid_acc": acc}) for acc in self.pool.evaluate(archs, batch_seed=seed)]

    # -- controller access ---------------------------------------------------------------
    @property
    def uniform_policy(self) -> bool:
        return bool(self.config.uniform_policy)

    # -- outputs ---------------------------------------------------------------------------
    def end_epoch(self, shared: dict[str, float], rows: list[dict[str, Any]]) -> None:
        rewards = [r["reward"] for r in rows]
        row = {"epoch": self.epoch, "shared_loss": shared["loss"], "shared_accuracy": shared["accuracy"],
               "controller_reward_mean": float(np.mean(rewards)) if rewards else float("nan"),
               "controller_entropy": float(np.mean(self.epoch_entropies)) if self.epoch_entropies else float("nan"),
               **self.epoch_policy_health(bool(rows)),
               "best_reward": self.recorder.best["reward"] if self.recorder.best else float("nan"),
               "archs_sampled": self.recorder.count,
               "lr": shared["lr"], "wall_time": time.time() - self.started,
               **{f"{phase}_s": seconds for phase, seconds in self.phase_seconds.items()}}
        path = self.out_dir / "metrics.csv"
        fresh = not path.exists() or self.epoch == 1
        with path.open("w" if fresh else "a", newline="") as f:
            writer = csv.DictWriter(f, METRICS_COLUMNS)
            if fresh:
                writer.writeheader()
            writer.writerow(row)
        for key, value in row.items():
            if key != "epoch":
                self.metrics.log_value((SUPERNET, key), float(value), window=1)
        if not rows:  # a warm-up epoch: no controller iteration logged the search's progress
            for key, value in (("archs_sampled", self.recorder.spent), ("best_reward", row["best_reward"]),
                               ("done", self.search_done)):
                self.metrics.log_value((SEARCH, key), float(value), window=1)
        # Workers restarted after a crash or a lost node, since the search began.
        self.metrics.log_value((SUPERNET, "worker_recoveries"), float(self.pool.recoveries), window=1)
        for key, value in row.items():
            if key != "epoch" and np.isfinite(value):  # a warm-up epoch has no controller figures
                self.tensorboard().add_scalar(f"raynas/{key}", value, self.epoch)
        self.tensorboard().flush()
        write_report_png(path, self.out_dir / "report.png")

    def epoch_policy_health(self, updated: bool) -> dict[str, float]:
        """metrics.csv's health columns: the last update's, NaN in an epoch without one."""
        health = self.policy_monitor.last.as_metrics() if updated and self.policy_monitor else {}
        return {column: health.get(key, float("nan")) for column, key in HEALTH_COLUMNS.items()}

    def tensorboard(self):
        if self._tb is None:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))
        return self._tb

    def derive(self) -> dict[str, Any]:
        """ENAS's final step: sample M children from the final controller, score each on the
        whole validation split, keep the best (and the top k)."""
        m, k = self.ws["derive_samples"], self.ws["top_k"]
        archs = self.derivation_candidates(m)
        unique = list({self.space.to_string(a): a for a in archs}.values())
        # chunks of whole rounds (a multiple of the pool's size), so no worker idles within one
        chunk = self.pool.size * max(1, -(-len(unique) // (PHASE_UPDATES * self.pool.size)))
        accs: list[float] = []
        self.report_phase("derive", 0, len(unique))
        for start in range(0, len(unique), chunk):
            accs += self.pool.evaluate(unique[start:start + chunk], full=True)
            self.report_phase("derive", len(accs), len(unique))
        scored = [{"arch": self.space.to_string(a), "json": self.space.to_json(a), "actions": a,
                   "valid_accuracy": acc, "space": self.space.name, "space_params": self.space.params(),
                   **self.objective_fields(a, acc)} for a, acc in zip(unique, accs)]
        # under an objective: children meeting every hard constraint first, then by the shaped score
        # (the accuracy itself with hard constraints only); otherwise by accuracy
        top = sorted(scored, key=lambda c: (c.get("feasible", True), c.get("score", c["valid_accuracy"])),
                     reverse=True)[:k]
        (self.out_dir / "best_arch.json").write_text(json.dumps(top[0], indent=2) + "\n")
        (self.out_dir / "top_archs.json").write_text(json.dumps(top, indent=2) + "\n")
        self.metrics.log_value((SUPERNET, "derived_valid_accuracy"), top[0]["valid_accuracy"], window=1)
        return top[0]

    def objective_fields(self, arch: list[int], accuracy: float) -> dict[str, Any]:
        """A derived child's shaped score, costs and feasibility under the search's objective."""
        objective = self.config.objective
        if objective is None:
            return {}
        score, costs, feasible = objective.shape(arch, accuracy)
        return {"score": score, "costs": costs, "feasible": feasible}

    def derivation_candidates(self, m: int) -> list[list[int]]:
        """ENAS: ``m`` children sampled from the final controller (uniform ones without one)."""
        if self.uniform_policy:
            return self.space.sample_batch(np.random.default_rng(self.config.seed), m).tolist()
        return self.controller().sample_archs(m, torch.Generator().manual_seed(self.config.seed))

    # -- checkpoints -----------------------------------------------------------------------
    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state[SUPERNET] = {"epoch": self.epoch, "pool": self.pool.get_state(),
                           "elapsed": time.time() - self.started}
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if SUPERNET in state:
            self.epoch = state[SUPERNET]["epoch"]
            self.started = time.time() - state[SUPERNET]["elapsed"]
            self.pool.set_state(state[SUPERNET]["pool"])
            truncate_metrics(self.out_dir / "metrics.csv", self.epoch)

    def cleanup(self) -> None:
        if getattr(self, "pool", None) is not None:
            self.pool.shutdown()
        if getattr(self, "_tb", None) is not None:
            self._tb.close()
        super().cleanup()


def derive_message(candidates: int) -> str:
    return f"[raynas] deriving: {candidates} sampled architectures, each scored on the whole validation split"


def worker_bundles(workers: int, cpus_per_worker: float, gpus_per_worker: float) -> list[dict[str, float]]:
    """One placement-group bundle per supernet worker."""
    worker = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
    return [dict(worker) for _ in range(workers)]


def truncate_metrics(path: Path, epochs: int) -> None:
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[: epochs + 1]))


def write_report_png(metrics_csv: Path, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    epochs = [int(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [float(r["controller_reward_mean"]) for r in rows], marker="o", label="controller mean reward")
    ax1.plot(epochs, [float(r["best_reward"]) for r in rows], marker=".", label="best reward so far")
    ax1.set_xlabel("epoch"), ax1.set_ylabel("validation accuracy (one minibatch)"), ax1.legend()
    ax2.plot(epochs, [float(r["shared_loss"]) for r in rows], marker="o", color="tab:red", label="shared loss")
    ax2.set_xlabel("epoch"), ax2.set_ylabel("training loss"), ax2.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


class WeightSharingPPO(WeightSharingMixin, PPOSearch):
    pass


class WeightSharingReinforce(WeightSharingMixin, Reinforce):
    pass


class WeightSharingRandom(WeightSharingMixin, RandomSearch):
    pass


class WeightSharingREA(WeightSharingMixin, RegularizedEvolution):
    derivation_candidates = RegularizedEvolution.derivation_candidates  # the final population


WS_ALGORITHMS = {"ppo": WeightSharingPPO, "reinforce": WeightSharingReinforce, "rea": WeightSharingREA,
                 "random": WeightSharingRandom}


def weight_sharing_settings(section: Any, spec: WorkerSpec) -> dict[str, Any]:
    return {**asdict(section), "worker_spec": spec}
