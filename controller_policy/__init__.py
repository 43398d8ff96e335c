"""Search spaces, the ENAS controller and (on top of them) the RL layer.

Nothing in this package imports a supernet or a service.
"""
from .controller import ControllerConfig, ControllerOutput, ENASController
from .spaces import SearchSpace, build_space, load_arch_file, parse_arch

__all__ = [
    "ControllerConfig", "ControllerOutput", "ENASController", "SearchSpace", "build_space",
    "load_arch_file", "parse_arch",
]
