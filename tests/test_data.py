import numpy as np
import pytest
import torch

from supernet_worker.data import (
    Batches, DataConfig, load_arrays, load_dataset, make_splits, make_synthetic, split_train_valid,
)


def test_split_sizes_disjoint_and_seeded():
    train, valid = split_train_valid(1000, 700, 200, seed=3)
    assert len(train) == 700 and len(valid) == 200
    assert not set(train) & set(valid)
    again, _ = split_train_valid(1000, 700, 200, seed=3)
    other, _ = split_train_valid(1000, 700, 200, seed=4)
    assert (train == again).all() and not (train == other).all()
    with pytest.raises(ValueError, match="exceed the 1000 training images"):
        split_train_valid(1000, 900, 200, seed=0)


def test_arrays_directory(arrays_dir):
    config = DataConfig(source="auto", data_dir=str(arrays_dir), train_size=500, valid_size=100, batch_size=64)
    splits = make_splits(config)
    assert splits.train.num_images == 500 and splits.valid.num_images == 100 and splits.test.num_images == 200
    x, y = next(iter(splits.train))
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
    assert abs(x.mean().item()) < 0.5  # normalised with the training split's channel statistics
    assert sum(len(yb) for _, yb in splits.valid) == 100


def test_grayscale_arrays(tmp_path):
    data = make_synthetic(50, 10, image_size=28, channels=1, num_classes=4)
    np.savez(tmp_path / "train.npz", x=data.x_train, y=data.y_train)
    np.savez(tmp_path / "test.npz", x=data.x_test, y=data.y_test)
    loaded = load_arrays(tmp_path)
    assert loaded.channels == 1 and loaded.image_size == 28 and loaded.num_classes == 4
    # the config's shape (what costs are counted at) agrees, read from the files' headers
    assert DataConfig(data_dir=str(tmp_path)).shape() == (1, 28, 4)
    np.savez_compressed(tmp_path / "test.npz", x=data.x_test, y=np.full_like(data.y_test, 6))
    assert DataConfig(data_dir=str(tmp_path)).shape() == (1, 28, 7)


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "train.npz is missing"),
    (lambda d: (d / "train.npz").write_text("garbage"), "not a readable .npz"),
    (lambda d: np.savez(d / "train.npz", a=np.zeros(3)), "must contain arrays 'x' and 'y'"),
    (lambda d: np.savez(d / "train.npz", x=np.zeros((2, 8, 8, 3), np.float32), y=np.zeros(2, int)), "x must be uint8"),
    (lambda d: np.savez(d / "train.npz", x=np.zeros((2, 8, 8, 3), np.uint8), y=np.zeros(3, int)), "y must be integer"),
])
def test_malformed_arrays_rejected(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ValueError, match=message):
        load_arrays(tmp_path)


def test_missing_directory_message(tmp_path):
    with pytest.raises(ValueError, match="no dataset found in .*train.npz and test.npz.*cifar-10-batches-py"):
        load_dataset(DataConfig(data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="data.source must be one of"):
        DataConfig(source="imagenet")


def test_torchvision_cifar10_format(tmp_path, monkeypatch):
    """The original python-pickle CIFAR-10 layout is read through torchvision."""
    import pickle

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), "labels": list(range(4))}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["c"] * 10}, f)
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *args: True)  # not the originals' md5s
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)
    data = load_dataset(DataConfig(data_dir=str(tmp_path)))
    assert data.name == "cifar10" and data.x_train.shape == (20, 32, 32, 3) and data.x_test.shape == (4, 32, 32, 3)


def test_augmentation_and_cutout():
    x = np.full((8, 16, 16, 3), 200, np.uint8)
    plain = Batches(x, np.zeros(8), 8, [0.0] * 3, [1.0] * 3)
    aug = Batches(x, np.zeros(8), 8, [0.0] * 3, [1.0] * 3, augment=True, seed=0)
    cut = Batches(x, np.zeros(8), 8, [0.0] * 3, [1.0] * 3, cutout=6, seed=0)
    xb, _ = next(iter(plain))
    assert torch.allclose(xb, torch.full_like(xb, 200 / 255))
    xa, _ = next(iter(aug))
    assert (xa == 0).any()  # padding shows up after random crops
    xc, _ = next(iter(cut))
    zeros = (xc == 0).all(1).sum((1, 2))
    assert ((zeros > 0) & (zeros <= 49)).all()


def test_batches_order_resumes_from_state():
    x = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1).repeat(2, 1).repeat(2, 2)
    b = Batches(x, np.arange(20), 5, [0.0], [1.0], shuffle=True, seed=0)
    next(iter(b))
    state = b.state_dict()
    first = [yb.tolist() for _, yb in b]
    b.load_state_dict(state)
    assert [yb.tolist() for _, yb in b] == first


def test_next_batch_position_is_checkpointed():
    x = np.arange(20, dtype=np.uint8).reshape(20, 1, 1, 1)
    b = Batches(x, np.arange(20), 6, [0.0], [1.0], shuffle=True, seed=0)
    b.next_batch()
    state = b.state_dict()
    ahead = [b.next_batch()[1].tolist() for _ in range(5)]  # crosses into the next pass
    b.load_state_dict(state)
    assert [b.next_batch()[1].tolist() for _ in range(5)] == ahead


def test_shards_of_a_pass_are_disjoint_cover_the_split_and_reshuffle():
    x = np.zeros((21, 1, 1, 1), np.uint8)
    ranks = [Batches(x, np.arange(21), 4, [0.0], [1.0], shuffle=True, seed=r, order_seed=7, shard=(r, 3))
             for r in range(3)]
    passes = []
    for _ in range(2):
        seen = [[int(i) for _, yb in b for i in yb] for b in ranks]
        assert sorted(sum(seen, [])) == list(range(21))  # disjoint, and together the whole split
        assert [len(s) for s in seen] == [7, 7, 7]
        passes.append(seen)
    assert passes[0] != passes[1]  # each pass draws a new order
    with pytest.raises(ValueError, match="shard rank 3"):
        Batches(x, np.arange(21), 4, [0.0], [1.0], shard=(3, 3))
