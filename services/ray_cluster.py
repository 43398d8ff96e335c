"""Connecting to Ray: the cluster the user names, the one running here, or an embedded one."""
from __future__ import annotations

import logging

import ray


def connect(address: str | None = None, num_cpus: int | None = None, include_dashboard: bool = False) -> bool:
    """Initialise Ray unless it already is; return True when this call started it.

    ``address``: a cluster (``HOST:PORT``, ``ray://…``), ``local`` for an embedded instance even
    when a cluster runs here, or None for Ray's "auto" (a running one, else embedded).
    ``include_dashboard``: an embedded instance with the dashboard (and so the State API, which
    Ray Train uses to clean up after its controller)."""
    if ray.is_initialized():
        return False
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                 logging_level=logging.WARNING)
        return True
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return True
    try:
        ray.init(address="auto", logging_level=logging.WARNING)
    except ConnectionError:
        ray.init(num_cpus=num_cpus, include_dashboard=include_dashboard, logging_level=logging.WARNING)
    return True


def check_resources(workers: int, gpus_per_worker: float, cpus_per_worker: float) -> None:
    """Refuse, before anything starts, a request the cluster can never satisfy."""
    total = ray.cluster_resources()
    need_gpus, have_gpus = workers * gpus_per_worker, total.get("GPU", 0.0)
    if need_gpus > have_gpus:
        raise ValueError(f"weight_sharing.gpus_per_worker: {workers} workers x {gpus_per_worker:g} GPUs = {need_gpus:g} "
                         f"GPUs, but the cluster has {have_gpus:g}")
    need_cpus, have_cpus = workers * cpus_per_worker, total.get("CPU", 0.0)
    if need_cpus > have_cpus:
        raise ValueError(f"weight_sharing.cpus_per_worker: {workers} workers x {cpus_per_worker:g} CPUs = "
                         f"{need_cpus:g} CPUs, but the cluster has {have_cpus:g}")
