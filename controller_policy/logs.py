"""Ray, RLlib, Tune and gymnasium messages that tell a raynas user nothing, silenced at their source
(a filter on the logger that emits each, a warnings filter scoped to gymnasium); ``--verbose`` skips this."""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterator, Sequence

# (logger, words of the message): each was seen on every run and is about RLlib's internals.
NOISE = (
    ("ray.rllib.algorithms.algorithm_config", "on the new API stack!"),  # our algorithms are built for it
    ("ray._common.deprecation", "RLModule(config=[RLModuleConfig"),  # RLlib builds that config itself
    ("ray.tune.utils.util", "Install gputil for GPU system monitoring"),
    ("ray.tune.trainable.trainable", "Trainable.setup took"),  # a trial's imports on a busy machine
    ("ray.train._internal.storage", "Checkpoint successfully created at"),  # every Tune trial iteration
    # Tune snapshots the experiment whenever a trial has written keep_checkpoints checkpoints (so a
    # restore never points at a deleted one): with one checkpoint per iteration, that is by design
    ("ray.tune.execution.experiment_state", "Experiment state snapshotting has been triggered multiple times"),
    # a failed trial's traceback, again at each retry: `compare` says why in one line and where
    # the trial's error.txt holds it
    ("ray.tune.execution.tune_controller", "Trial task failed"),
    ("ray.tune.tune", "Trials did not complete"),  # `compare` lists them, one line each
)


class _DropNoise(logging.Filter):
    def __init__(self, words: str) -> None:
        super().__init__()
        self.words = words

    def filter(self, record: logging.LogRecord) -> bool:
        return self.words not in record.getMessage()


def _drop(name: str, words: str) -> None:
    logger = logging.getLogger(name)
    if not any(isinstance(f, _DropNoise) and f.words == words for f in logger.filters):
        logger.addFilter(_DropNoise(words))


def quiet_ray_logs() -> None:
    """Idempotent; in every process that builds a search algorithm (driver, Tune trials, Ray jobs)."""
    for name, words in NOISE:
        _drop(name, words)
    # RLlib registers its env wrapper again for every env runner it builds.
    warnings.filterwarnings("ignore", message=r".*Overriding environment rllib-", category=UserWarning,
                            module=r"gymnasium\..*")


#: what Ray logs while it packages and uploads a job's working directory: every file it skips,
#: every package it creates (INFO and WARNING, one line each)
UPLOAD_LOGGERS = ("ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir",
                  "ray.dashboard.modules.dashboard_sdk")


@contextlib.contextmanager
def quieted(names: Sequence[str], level: int = logging.ERROR) -> Iterator[None]:
    """Within: the loggers ``names`` pass only records of ``level`` and above (their levels are
    restored after)."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def quiet_ray_train_worker() -> None:
    """In a Ray Train worker: Ray Train logs every ``report()`` at INFO ("Reporting training result
    1: TrainingReport(...)") on a logger named after its file, which its own ``LoggingConfig`` level
    misses, and a worker's root logger prints INFO. raynas's progress already shows each epoch."""
    from ray.train.v2._internal.execution import context

    _drop(context.logger.name, "Reporting training result")
