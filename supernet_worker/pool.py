"""A pool of SupernetWorker actors: one process group, training in lockstep, spread evaluations,
and recovery when a worker dies (Ray restarts it; it re-joins and takes a live replica's weights).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence, TypeVar

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from .worker import SupernetWorker, WorkerSpec

log = logging.getLogger(__name__)
T = TypeVar("T")
# A dead peer surfaces as RayActorError on its own calls and as a gloo/NCCL error (RayTaskError)
# on the survivors' collective calls.
WORKER_FAILURES = (RayActorError, RayTaskError)


def collective_backend(pings: list[dict]) -> str:
    """NCCL when every rank holds a GPU no other rank holds; otherwise gloo: NCCL refuses two
    ranks on one GPU ("Duplicate GPU detected"), as with ``gpus_per_worker: 0.5``."""
    held = [(p["node_id"], gpu) for p in pings for gpu in p["gpu_ids"]]
    own_gpu = all(p["gpu_ids"] for p in pings) and len(set(held)) == len(held)
    return "nccl" if own_gpu else "gloo"


class SupernetPool:
    def __init__(self, spec: WorkerSpec, num_workers: int, num_gpus_per_worker: float = 0.0,
                 num_cpus_per_worker: float = 1.0, max_restarts: int = 3,
                 placement_group: PlacementGroup | None = None, first_bundle: int = 0) -> None:
        if num_workers < 1:
            raise ValueError(f"workers must be >= 1, got {num_workers}")
        self.spec, self.max_restarts = spec, max_restarts
        actor = ray.remote(SupernetWorker)
        self.workers = []
        for rank in range(num_workers):
            options: dict[str, Any] = {"num_cpus": num_cpus_per_worker, "num_gpus": num_gpus_per_worker,
                                       "max_restarts": max_restarts, "max_task_retries": 0}
            if placement_group is not None:
                options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                    placement_group, placement_group_bundle_index=first_bundle + rank)
            self.workers.append(actor.options(**options).remote(spec, rank, num_workers))
        self.recoveries = 0
        self.last_checkpoint: dict[str, Any] | None = None  # what get_state() last returned
        self.info = ray.get([w.ping.remote() for w in self.workers])
        self._form_group()

    @property
    def size(self) -> int:
        return len(self.workers)

    def _form_group(self) -> None:
        if self.size == 1:
            return
        master, port = ray.get(self.workers[0].address.remote())
        backend = collective_backend(ray.get([w.ping.remote() for w in self.workers]))
        ray.get([w.join.remote(master, port, self.size, backend) for w in self.workers])

    # -- failure handling --------------------------------------------------------------------
    def _with_recovery(self, call: Callable[[], T]) -> T:
        for attempt in range(self.max_restarts + 1):
            try:
                return call()
            except WORKER_FAILURES as exc:
                if attempt == self.max_restarts:
                    raise
                log.warning("supernet worker failed (%s); recovering", type(exc).__name__)
                self.recover()
        raise AssertionError("unreachable")

    def recover(self, timeout_s: float = 300.0) -> None:
        """Wait for restarted workers, hand them a live replica's state (or, when every replica
        was lost, the last checkpointed one), re-form the group."""
        deadline = time.time() + timeout_s
        while True:
            pings = self._ping_all(deadline)
            # Survivors kept their step; a restarted worker starts again at 0.
            source = max(range(self.size), key=lambda i: pings[i]["global_step"])
            if pings[source]["global_step"] == 0 and self.last_checkpoint is not None:
                self.set_state(self.last_checkpoint)  # no survivor: back to the last checkpoint
                break
            try:
                shared = ray.get(self.workers[source].get_state.remote())["shared"]
                if ray.get(self.workers[source].ping.remote())["pid"] != pings[source]["pid"]:
                    continue  # the source died meanwhile: look again
            except RayActorError:
                continue
            shared_ref = ray.put(shared)
            ray.get([w.set_state.remote(shared_ref) for i, w in enumerate(self.workers) if i != source])
            break
        self._form_group()
        self.recoveries += 1

    def _ping_all(self, deadline: float) -> list[dict]:
        pings: list[dict | None] = [None] * self.size
        while None in pings:
            for i, w in enumerate(self.workers):
                if pings[i] is None:
                    try:
                        pings[i] = ray.get(w.ping.remote(), timeout=10)
                    except (RayActorError, GetTimeoutError):
                        if time.time() > deadline:
                            raise
                        time.sleep(0.5)
        return pings

    # -- the work --------------------------------------------------------------------------
    def set_controller(self, state: dict | None) -> None:
        ref = ray.put(state)
        self._with_recovery(lambda: ray.get([w.set_controller.remote(ref) for w in self.workers]))

    def train(self, until_step: int, steps_per_epoch: int) -> list[dict[str, float]]:
        """All workers step in lockstep (one all-reduce per step) up to global step ``until_step``."""
        return self._with_recovery(
            lambda: ray.get([w.train.remote(until_step, steps_per_epoch) for w in self.workers]))

    def evaluate(self, archs: Sequence[Sequence[int]], full: bool = False, batch_seed: int | None = None) -> list[float]:
        """Spread architectures over the workers (all score at once); a dead worker's share is
        re-run once the pool has recovered, so every architecture gets exactly one result.
        ``batch_seed``: all are scored on the same validation minibatches (``SupernetWorker.evaluate``)."""
        archs = [list(a) for a in archs]
        results: list[float | None] = [None] * len(archs)
        for attempt in range(self.max_restarts + 1):
            todo = [i for i, r in enumerate(results) if r is None]
            if not todo:
                break
            shares = [todo[k :: self.size] for k in range(self.size)]
            refs = {k: self.workers[k].evaluate.remote([archs[i] for i in share], full, batch_seed)
                    for k, share in enumerate(shares) if share}
            failed = False
            for k, ref in refs.items():
                try:
                    for i, acc in zip(shares[k], ray.get(ref)):
                        results[i] = acc
                except WORKER_FAILURES:
                    failed = True
            if failed:
                if attempt == self.max_restarts:
                    raise RuntimeError("supernet workers kept failing during evaluation")
                self.recover()
        return [float(r) for r in results]

    def get_state(self) -> dict[str, Any]:
        """Shared weights (rank 0) and every rank's RNG/data positions, for checkpoints."""
        states = self._with_recovery(lambda: ray.get([w.get_state.remote() for w in self.workers]))
        self.last_checkpoint = {"shared": states[0]["shared"], "ranks": [s["rank"] for s in states]}
        return self.last_checkpoint

    def set_state(self, state: dict[str, Any]) -> None:
        ranks = state.get("ranks") or []
        shared = ray.put(state["shared"])
        ray.get([w.set_state.remote(shared, ranks[i] if i < len(ranks) else None)
                 for i, w in enumerate(self.workers)])

    def checksums(self) -> list[float]:
        return ray.get([w.weights_checksum.remote() for w in self.workers])

    def shutdown(self) -> None:
        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
