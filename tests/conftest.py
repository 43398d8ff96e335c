import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from controller_policy.spaces import NB201Space

torch.set_num_threads(1)

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


@pytest.fixture
def arrays_dir(tmp_path):
    """A small dataset in the arrays format: the shared CIFAR-10 copy when present, else generated."""
    out = tmp_path / "arrays"
    out.mkdir()
    if (SHARED_CIFAR / "train.npz").is_file():
        for split, n in (("train", 600), ("test", 200)):
            with np.load(SHARED_CIFAR / f"{split}.npz") as f:
                np.savez(out / f"{split}.npz", x=f["x"][:n], y=f["y"][:n])
    else:
        from supernet_worker.data import make_synthetic

        d = make_synthetic(600, 200, 32, 3, 10, seed=0)
        np.savez(out / "train.npz", x=d.x_train, y=d.y_train)
        np.savez(out / "test.npz", x=d.x_test, y=d.y_test)
    return out


@pytest.fixture(scope="module")
def additive_table(tmp_path_factory):
    """Reward = mean over edges of a per-(edge, op) value: a unique, known optimum."""
    space = NB201Space()
    values = np.random.default_rng(123).uniform(0, 1, (6, 5))
    table = {space.to_string(list(a)): {"valid": float(values[np.arange(6), list(a)].mean()), "test": 0.5}
             for a in itertools.product(range(5), repeat=6)}
    path = tmp_path_factory.mktemp("table") / "table.json"
    path.write_text(json.dumps(table))
    return path, space.to_string(values.argmax(1).tolist())


@pytest.fixture(scope="session")
def _shutdown_ray_at_end():
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_session(_shutdown_ray_at_end):
    """One local Ray instance shared by the session's tests (a start costs seconds); started again
    only after a test that needed a cluster of its own shut it down."""
    import ray

    if not ray.is_initialized():
        # "local": never attach to a cluster someone started on this machine.
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory):
    """A real head (`ray start --head`, dashboard and Jobs API on 127.0.0.1), stopped at the end."""
    from tests.ray_head import RayHead

    head = RayHead(tmp_path_factory.mktemp("head"))
    try:
        head.start()
        yield head
    finally:
        head.stop()
