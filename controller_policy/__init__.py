"""Search spaces, the ENAS controller and (on top of them) the RL layer.

Nothing in this package imports a supernet or a service. The controller (torch) is imported on
first use, so that spaces and settings load in a fraction of a second (a command line refusing a
bad config never waits for torch).
"""
from typing import Any

from .settings import ControllerConfig
from .spaces import SearchSpace, build_space, load_arch_file, parse_arch

__all__ = [
    "ControllerConfig", "ControllerOutput", "ENASController", "SearchSpace", "build_space",
    "load_arch_file", "parse_arch",
]


def __getattr__(name: str) -> Any:
    if name in ("ControllerOutput", "ENASController"):
        from . import controller

        return getattr(controller, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
