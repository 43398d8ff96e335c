"""Image datasets as uint8 arrays, a seeded train/valid split and on-device augmented minibatches.

Sources: CIFAR-10 through torchvision (original files in ``data_dir`` or ``download``), a
directory of ``train.npz``/``test.npz`` arrays (uint8 ``x`` [N,H,W,C], ``y`` [N]), or generated
data for tests. Whole splits live on the training device as uint8 tensors; augmentation (random
crop with padding 4, horizontal flip, cutout) runs batched there, which is far cheaper than a
per-image DataLoader for 32x32 images.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from .settings import CIFAR10_FOLDER, DataConfig

@dataclass
class ImageData:
    """A labelled image set as uint8 arrays (``x``: [N, H, W, C])."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[3])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])


def describe_data(config: DataConfig) -> str:
    """Which data ``load_dataset`` reads, in words (said while it loads)."""
    sizes = f"{config.train_size} training / {config.valid_size} validation images"
    if config.source == "synthetic":
        return f"generated images ({sizes})"
    return f"{'the' if config.source == 'auto' else config.source} dataset in {config.data_dir} ({sizes})"


def load_dataset(config: DataConfig) -> ImageData:
    source = config.locate()
    if source == "synthetic":
        return make_synthetic(config.synthetic_train, config.synthetic_test, config.synthetic_image_size,
                              config.synthetic_channels, config.synthetic_classes, seed=config.split_seed)
    data_dir = Path(config.data_dir).expanduser()
    if source == "arrays":
        return load_arrays(data_dir)
    return load_cifar10(data_dir, download=config.download)


def load_arrays(data_dir: str | Path) -> ImageData:
    """Read ``train.npz`` and ``test.npz`` (keys ``x``, ``y``) from ``data_dir``."""
    data_dir = Path(data_dir)
    parts = {}
    for split in ("train", "test"):
        path = data_dir / f"{split}.npz"
        if not path.is_file():
            raise ValueError(f"{path} is missing: an arrays dataset directory holds train.npz and test.npz, "
                             f"each with uint8 x [N,H,W,C] and integer y [N]")
        try:
            with np.load(path) as f:
                x, y = (f[k] if k in f.files else None for k in ("x", "y"))
        except Exception as exc:  # np.load raises OSError, ValueError, zip and pickle errors alike
            raise ValueError(f"{path} is not a readable .npz archive: {exc}") from None
        if x is None or y is None:
            raise ValueError(f"{path} must contain arrays 'x' and 'y'")
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3):
            raise ValueError(f"{path}: x must be uint8 [N,H,W,C] with C in (1, 3), got {x.dtype} {list(x.shape)}")
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: y must be integer [N] with N={len(x)}, got {y.dtype} {list(y.shape)}")
        if len(y) and y.min() < 0:
            raise ValueError(f"{path}: labels must be >= 0")
        parts[split] = (x, y.astype(np.int64))
    if parts["train"][0].shape[1:] != parts["test"][0].shape[1:]:
        raise ValueError(f"{data_dir}: train and test images differ in shape")
    num_classes = int(max(parts["train"][1].max(), parts["test"][1].max())) + 1
    return ImageData(data_dir.name, *parts["train"], *parts["test"], num_classes)


def load_cifar10(root: str | Path, download: bool = False) -> ImageData:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10`` (original python-pickle files)."""
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as exc:
        raise ValueError(f"CIFAR-10 not found or corrupt in {root} (expected {CIFAR10_FOLDER}/): {exc}") from None
    except OSError as exc:  # no network (URLError), no space, no permission
        raise ValueError(
            f"no dataset found in {root} and downloading CIFAR-10 failed ({exc}); put train.npz and test.npz "
            f"(uint8 x [N,H,W,C], int y [N]) or CIFAR-10's '{CIFAR10_FOLDER}/' folder there"
        ) from None
    return ImageData("cifar10", train.data, np.asarray(train.targets, np.int64),
                     test.data, np.asarray(test.targets, np.int64), 10)


def make_synthetic(num_train: int, num_test: int, image_size: int = 32, channels: int = 3,
                   num_classes: int = 10, seed: int = 0) -> ImageData:
    """A learnable generated set: per-class smooth random patterns plus noise, as uint8 images."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(num_classes, 4, 4, channels))
    protos = coarse.repeat(image_size // 4 + 1, 1).repeat(image_size // 4 + 1, 2)[:, :image_size, :image_size]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, size=n)
        x = protos[y] + rng.normal(0, 40, size=(n, image_size, image_size, channels))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    return ImageData("synthetic", *draw(num_train), *draw(num_test), num_classes)


def split_train_valid(num_images: int, train_size: int, valid_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, seeded index sets of the training images."""
    if train_size + valid_size > num_images:
        raise ValueError(f"data.train_size ({train_size}) + data.valid_size ({valid_size}) exceed the "
                         f"{num_images} training images")
    perm = np.random.default_rng(seed).permutation(num_images)
    return np.sort(perm[:train_size]), np.sort(perm[train_size : train_size + valid_size])


def channel_stats(x: np.ndarray) -> tuple[list[float], list[float]]:
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
    return flat.mean(0).tolist(), (flat.std(0) + 1e-8).tolist()


class Batches:
    """Minibatches of one split, held on ``device`` as uint8, augmented and normalised per batch.

    Iterating gives one pass (shuffled when ``shuffle``). With ``shard=(rank, world)`` a pass is
    this rank's share of one permutation that every rank draws alike (``order_seed``, pass
    number): the ranks' shares of a pass are disjoint and together cover the split, reshuffled
    every pass (as ``DistributedSampler``). Augmentation draws from a generator of its own
    (``seed``). Orders and positions are reproducible and checkpointable (``state_dict``).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, mean: list[float], std: list[float],
                 *, augment: bool = False, cutout: int = 0, shuffle: bool = False, seed: int = 0,
                 order_seed: int | None = None, shard: tuple[int, int] = (0, 1),
                 device: str | torch.device = "cpu") -> None:
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard rank {rank} must lie in [0, {world})")
        self.device = torch.device(device)
        self.x = torch.as_tensor(x).permute(0, 3, 1, 2).contiguous().to(self.device)  # uint8 NCHW
        self.y = torch.as_tensor(y, dtype=torch.long).to(self.device)
        self.batch_size, self.augment, self.cutout, self.shuffle = batch_size, augment, cutout, shuffle
        self.rank, self.world = rank, world
        self.order_seed = seed if order_seed is None else order_seed
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1)
        self.generator = torch.Generator().manual_seed(seed)  # augmentation
        self._passes = 0  # orders drawn so far
        self._order: Tensor | None = None  # the current pass of next_batch()
        self._pos = 0

    def __len__(self) -> int:
        return (self.num_shard_images + self.batch_size - 1) // self.batch_size

    @property
    def num_images(self) -> int:
        return len(self.y)

    @property
    def num_shard_images(self) -> int:
        return len(range(self.rank, len(self.y), self.world))

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """One full pass (of this rank's shard) from the start, in a fresh order."""
        order = self._new_order()
        for start in range(0, len(order), self.batch_size):
            yield self._batch(order[start : start + self.batch_size])

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next minibatch of an endless sequence of passes; its position is part of the state."""
        if self._order is None or self._pos >= len(self._order):
            self._order, self._pos = self._new_order(), 0
        idx = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self._batch(idx)

    def fixed_batches(self, seed: int, count: int, batch_size: int | None = None) -> list[tuple[Tensor, Tensor]]:
        """``count`` minibatches drawn without replacement from the whole split (every shard
        alike) by ``seed`` alone, without augmentation: the same on every rank and every call,
        and the positions of ``next_batch`` untouched."""
        size = batch_size or self.batch_size
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))[: count * size]
        if len(order) < count * size:
            raise ValueError(f"{count} minibatches of {size} need {count * size} images; the split holds {len(self.y)}")
        return [(self.normalise(self.x[idx.to(self.device)]), self.y[idx.to(self.device)])
                for idx in order.split(size)]

    def _new_order(self) -> Tensor:
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.order_seed * 1_000_003 + self._passes))
        else:
            order = torch.arange(n)
        self._passes += 1
        return order[self.rank :: self.world]

    def _batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        idx = idx.to(self.device)
        return self.transform(self.x[idx]), self.y[idx]

    def transform(self, images: Tensor) -> Tensor:
        x = images.float().div_(255.0)
        if self.augment:
            x = self._random_crop_flip(x)
        x = (x - self.mean) / self.std
        if self.cutout:
            x = self._cutout(x)
        return x

    def normalise(self, images: Tensor) -> Tensor:
        """uint8 NCHW images as the network sees them, without augmentation."""
        return (images.float().div_(255.0) - self.mean) / self.std

    def _rand(self, high: int, size: int) -> Tensor:
        return torch.randint(0, high, (size,), generator=self.generator).to(self.device)

    def _random_crop_flip(self, x: Tensor, pad: int = 4) -> Tensor:
        b, c, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (self._rand(2 * pad + 1, b)[:, None] + torch.arange(h, device=self.device))[:, None, :, None]
        cols = (self._rand(2 * pad + 1, b)[:, None] + torch.arange(w, device=self.device))[:, None, None, :]
        out = padded[torch.arange(b, device=self.device)[:, None, None, None],
                     torch.arange(c, device=self.device)[None, :, None, None], rows, cols]
        flip = self._rand(2, b).bool()[:, None, None, None]
        return torch.where(flip, out.flip(3), out)

    def _cutout(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        cy, cx = self._rand(h, b)[:, None], self._rand(w, b)[:, None]
        ys, xs = torch.arange(h, device=self.device)[None], torch.arange(w, device=self.device)[None]
        in_y = ((ys - cy).abs() <= self.cutout // 2)[:, :, None]
        in_x = ((xs - cx).abs() <= self.cutout // 2)[:, None, :]
        return x * (~(in_y & in_x)).unsqueeze(1)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "order": self._order, "pos": self._pos,
                "passes": self._passes}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        # "passes" is missing from checkpoints written before orders were drawn per pass
        self._order, self._pos, self._passes = state["order"], state["pos"], state.get("passes", 0)


@dataclass
class DataSplits:
    data: ImageData
    train: Batches
    valid: Batches
    test: Batches


def make_splits(config: DataConfig, device: str | torch.device = "cpu", seed: int = 0,
                data: ImageData | None = None, shard: tuple[int, int] = (0, 1),
                train_batch_size: int | None = None, order_seed: int | None = None) -> DataSplits:
    """Load the dataset, split train/valid disjointly and wrap each split in ``Batches``.

    ``shard=(rank, world)``: this rank trains on its disjoint share of every pass over the
    training split (the order drawn alike on every rank from ``order_seed``), with minibatches
    of ``train_batch_size`` (default ``config.batch_size``)."""
    data = data if data is not None else load_dataset(config)
    train_idx, valid_idx = split_train_valid(len(data.y_train), config.train_size, config.valid_size, config.split_seed)
    mean, std = channel_stats(data.x_train[train_idx])
    common = dict(mean=mean, std=std, device=device)
    return DataSplits(
        data=data,
        train=Batches(data.x_train[train_idx], data.y_train[train_idx], train_batch_size or config.batch_size,
                      augment=config.augment, cutout=config.cutout, shuffle=True, seed=seed, order_seed=order_seed,
                      shard=shard, **common),
        valid=Batches(data.x_train[valid_idx], data.y_train[valid_idx], config.eval_batch_size, shuffle=True,
                      seed=seed + 1, **common),
        test=Batches(data.x_test, data.y_test, config.eval_batch_size, **common),
    )
