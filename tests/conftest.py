from pathlib import Path

import numpy as np
import pytest
import torch

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


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (a start costs seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
