"""A real Ray head for end-to-end tests: the one `raynas serve` starts, with test-sized resources."""
from __future__ import annotations

from pathlib import Path

from services.ray_cluster import LocalRayHead, free_port

__all__ = ["RayHead", "free_port"]


class RayHead(LocalRayHead):
    def __init__(self, root: Path | None = None, num_cpus: int = 2) -> None:
        super().__init__(root, num_cpus=num_cpus, num_gpus=0, object_store_mb=300)
