"""Connecting to Ray: the cluster the user names, the one running here, or an embedded one."""
from __future__ import annotations

import logging

import ray


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Initialise Ray unless it already is; return True when this call started it."""
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
        return True
    try:
        ray.init(address="auto", logging_level=logging.WARNING)
    except ConnectionError:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.WARNING)
    return True
