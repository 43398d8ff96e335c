"""The settings of supernets, data, shared-weight training and retraining, without torch or Ray:
a command line validates a config with them before anything heavy is imported."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

SOURCES = ("auto", "arrays", "cifar10", "synthetic")
CIFAR10_FOLDER = "cifar-10-batches-py"


@dataclass
class DataConfig:
    source: str = "auto"
    data_dir: str | None = None
    download: bool = False  # torchvision may fetch CIFAR-10 into data_dir
    train_size: int = 45000  # taken from the training set ...
    valid_size: int = 5000  # ... disjoint from these (ENAS: 45,000 / 5,000)
    split_seed: int = 0
    batch_size: int = 128
    eval_batch_size: int = 256
    augment: bool = True
    cutout: int = 0  # side of the cutout square in pixels, 0 = off (retraining option)
    # generated data (source: synthetic)
    synthetic_train: int = 1200
    synthetic_test: int = 200
    synthetic_image_size: int = 32
    synthetic_channels: int = 3
    synthetic_classes: int = 10

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"data.source must be one of {SOURCES}, got {self.source!r}")
        for key in ("train_size", "valid_size", "batch_size", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"data.{key} must be >= 1, got {getattr(self, key)}")
        if self.cutout < 0:
            raise ValueError(f"data.cutout must be >= 0, got {self.cutout}")

    def locate(self) -> str:
        """The source this config reads, ``auto`` resolved by what ``data_dir`` holds (``arrays``,
        ``cifar10`` or ``synthetic``); ValueError when the directory holds no dataset."""
        if self.source == "synthetic":
            return self.source
        if not self.data_dir:
            raise ValueError(f"data.data_dir is required for data.source={self.source!r}")
        data_dir = Path(self.data_dir).expanduser()
        if self.source == "arrays" or (self.source == "auto" and (data_dir / "train.npz").is_file()):
            for split in ("train", "test"):
                if not (data_dir / f"{split}.npz").is_file():
                    raise ValueError(f"{data_dir / f'{split}.npz'} is missing: an arrays dataset directory holds "
                                     "train.npz and test.npz, each with uint8 x [N,H,W,C] and integer y [N]")
            return "arrays"
        if (data_dir / CIFAR10_FOLDER).is_dir() or self.download:
            return "cifar10"
        if self.source == "cifar10":
            raise ValueError(f"CIFAR-10 not found in {data_dir} (expected {CIFAR10_FOLDER}/, or data.download: true)")
        raise ValueError(
            f"no dataset found in {data_dir}: expected train.npz and test.npz (uint8 x [N,H,W,C], "
            f"int y [N]) or CIFAR-10's original '{CIFAR10_FOLDER}/' folder (or set data.download: true)")

    def shape(self) -> tuple[int, int, int]:
        """(channels, image size, classes) of the images this config reads: a network's input and
        output (an arrays dataset's are read from its files)."""
        source = self.locate()
        if source == "synthetic":
            return self.synthetic_channels, self.synthetic_image_size, self.synthetic_classes
        if source == "cifar10":
            return 3, 32, 10
        import zipfile

        import numpy as np

        classes, shape = 0, None
        for split in ("train", "test"):
            path = Path(self.data_dir).expanduser() / f"{split}.npz"
            try:
                with np.load(path) as f:
                    labels = f["y"]
                # the images' shape from their header alone: a search reads it twice before it starts
                with zipfile.ZipFile(path) as archive, archive.open("x.npy") as images:
                    version = np.lib.format.read_magic(images)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape = read_header(images)[0]
            except Exception as exc:  # np.load raises OSError, ValueError, KeyError and zip errors alike
                raise ValueError(f"{path} is not a readable arrays dataset (x and y): {exc}") from None
            classes = max(classes, int(labels.max()) + 1 if len(labels) else 0)
        return int(shape[3]), int(shape[1]), classes


@dataclass
class SupernetConfig:
    """Widths and depths of the shared-weight network (tiny on CPU presets, paper-sized on GPU)."""

    channels: int = 16  # macro: filters of every layer; micro/nb201: filters of the first stage
    num_cells: int = 1  # micro: normal cells per stage; nb201: cells per stage (5 in NAS-Bench-201)
    dropout: float = 0.0  # before the classifier
    bn_track_running_stats: bool = False  # True for retraining a child (eval uses running averages)
    # Final-training options (ENAS's retraining of the found architecture):
    drop_path: float = 0.0  # micro, nb201: drop probability of each non-identity op path (ramped up by the trainer)
    auxiliary: bool = False  # an auxiliary classifier at 2/3 depth (training returns (logits, aux_logits))
    widen_at_reduction: bool = False  # macro: double the filters at each reduction (ENAS's final macro nets)

    def __post_init__(self) -> None:
        if self.channels < 2:
            raise ValueError(f"supernet.channels must be >= 2, got {self.channels}")
        if self.num_cells < 1:
            raise ValueError(f"supernet.num_cells must be >= 1, got {self.num_cells}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"supernet.dropout must lie in [0, 1), got {self.dropout}")
        if not 0.0 <= self.drop_path < 1.0:
            raise ValueError(f"supernet.drop_path must lie in [0, 1), got {self.drop_path}")


@dataclass(frozen=True)
class Skeleton:
    """The network a child's costs are counted at (supernet_worker.costs, .latency): a space, its
    supernet config and the input it classifies."""

    space: str
    space_params: dict = field(default_factory=dict)
    supernet: SupernetConfig = field(default_factory=SupernetConfig)
    in_channels: int = 3
    image_size: int = 32
    num_classes: int = 10

    def describe(self) -> dict:
        """What a latency table records of the network it was profiled for (JSON, compared as such)."""
        return {"space": self.space, "space_params": dict(self.space_params), "supernet": asdict(self.supernet),
                "input": [self.in_channels, self.image_size], "num_classes": self.num_classes}


DEVICES = ("cpu", "cuda")  # what a latency table can be profiled on (supernet_worker.latency)
DATA_PARALLEL_RULES = ("split_batch", "scale_lr")
#: how a supernet phase without controller (the warm-up) draws its children: each uniformly, or
#: "fair": every op of each decision trained equally often (Space.sample_balanced)
SAMPLINGS = ("uniform", "fair")
#: the spaces whose supernets drop paths (``drop_path``: NB201's edges, ENAS micro's op paths)
PATH_DROPOUT_SPACES = ("nb201", "enas_micro")


@dataclass
class OptimConfig:
    """ENAS's shared-weight optimiser: SGD (momentum 0.9, nesterov), cosine with warm restarts.

    With K > 1 supernet workers every rank trains on its own disjoint shard of each epoch (one
    epoch is still one pass over the training split) and ``data_parallel`` says how the recipe
    scales:

    - ``split_batch`` (default): the global minibatch stays ``data.batch_size``, split evenly over
      the K ranks; the number of optimizer steps per epoch and the learning rates are ENAS's,
      unchanged. Each step trains K children (one per rank) on batch_size / K images each.
    - ``scale_lr``: every rank takes ``data.batch_size`` images per step (global batch K x
      batch_size, K times fewer steps per epoch); ``lr_max`` and ``lr_min`` are scaled by K
      (linear scaling, Goyal et al. 2017) and the learning rate ramps linearly from the unscaled
      value over the first ``warmup_epochs`` epochs. Faster per epoch on GPUs, no longer ENAS's recipe.
    """

    lr_max: float = 0.05
    lr_min: float = 0.0005
    momentum: float = 0.9
    weight_decay: float = 0.00025
    restart_period: int = 10  # epochs of the first cosine cycle (ENAS lr_T_0)
    restart_mult: int = 2  # each cycle this many times longer (ENAS lr_T_mul)
    grad_clip: float = 5.0
    data_parallel: str = "split_batch"  # or "scale_lr": how K > 1 workers share an epoch (see above)
    warmup_epochs: float = 1.0  # scale_lr only

    def __post_init__(self) -> None:
        if self.data_parallel not in DATA_PARALLEL_RULES:
            raise ValueError(f"optim.data_parallel must be one of {', '.join(DATA_PARALLEL_RULES)}, "
                             f"got {self.data_parallel!r}")
        if self.warmup_epochs < 0:
            raise ValueError(f"optim.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0 < self.lr_min <= self.lr_max:
            raise ValueError(f"optim: need 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")
        if self.restart_period < 1 or self.restart_mult < 1:
            raise ValueError("optim.restart_period and optim.restart_mult must be >= 1")
        if self.grad_clip <= 0:
            raise ValueError(f"optim.grad_clip must be > 0, got {self.grad_clip}")


@dataclass
class ScoringConfig:
    """How the shared weights score a child (``weight_sharing.scoring``). Defaults are ENAS's.

    - ``reward_batches``: validation minibatches whose accuracy is averaged into one reward
      (ENAS: 1). More batches, less noise, proportionally more evaluation time.
    - ``same_batches``: every architecture of one controller iteration is scored on the same
      minibatches (drawn anew each iteration), so rewards compared with each other (the
      baseline, PPO's advantages) differ by architecture, not by batch difficulty.
    - ``bn_calibration_batches``: 0 normalises with the scored batch's own statistics (the
      supernet has no running averages: they would mix every child). N > 0 re-estimates each
      child's batch-norm statistics on N fixed training minibatches before scoring it in eval
      mode (as SPOS, Guo et al. 2020), for rewards and the derivation alike; N forward passes
      per child.
    """

    reward_batches: int = 1
    same_batches: bool = False
    bn_calibration_batches: int = 0

    def __post_init__(self) -> None:
        if self.reward_batches < 1:
            raise ValueError(f"weight_sharing.scoring.reward_batches must be >= 1, got {self.reward_batches}")
        if self.bn_calibration_batches < 0:
            raise ValueError("weight_sharing.scoring.bn_calibration_batches must be >= 0, got "
                             f"{self.bn_calibration_batches}")


def data_parallel_plan(optim: OptimConfig, batch_size: int, workers: int, train_images: int) -> tuple[int, int, float]:
    """(minibatch per rank, optimizer steps per epoch, learning-rate factor) for ``workers`` ranks
    under ``optim.data_parallel``; every epoch is one pass over the ``train_images``."""
    if workers == 1 or optim.data_parallel == "split_batch":
        if batch_size % workers:
            raise ValueError(f"data.batch_size ({batch_size}) must be divisible by the {workers} supernet workers "
                             "with optim.data_parallel: split_batch (or use scale_lr)")
        return batch_size // workers, math.ceil(train_images / batch_size), 1.0
    return batch_size, math.ceil(train_images / (batch_size * workers)), float(workers)


@dataclass
class TrainSettings:
    """SGD (nesterov) with a cosine schedule from lr_max to lr_min over the epochs."""

    epochs: int = 10
    lr_max: float = 0.05
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    aux_weight: float = 0.4  # with supernet.auxiliary
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"train.epochs must be >= 1, got {self.epochs}")
        if not 0 <= self.lr_min <= self.lr_max or self.lr_max <= 0:
            raise ValueError(f"train: need 0 <= lr_min <= lr_max and lr_max > 0, got {self.lr_min}, {self.lr_max}")
        if self.grad_clip <= 0 or self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError("train: grad_clip must be > 0, weight_decay >= 0, label_smoothing in [0, 1)")

    def lr(self, epoch: int) -> float:
        return self.lr_min + 0.5 * (self.lr_max - self.lr_min) * (1 + math.cos(math.pi * epoch / self.epochs))
