"""Search spaces as ordered lists of discrete decisions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .base import EDGE_OP, INPUT, KINDS, OP, SKIP, Arch, Decision, SearchSpace
from .enas_macro import MACRO_OPS, EnasMacroSpace
from .enas_micro import MICRO_OPS, EnasMicroSpace
from .nb201 import NB201_EDGES, NB201_OPS, NB201Space

SPACES: dict[str, type[SearchSpace]] = {
    EnasMacroSpace.name: EnasMacroSpace,
    EnasMicroSpace.name: EnasMicroSpace,
    NB201Space.name: NB201Space,
}


def build_space(name: str, **params: Any) -> SearchSpace:
    """Build a search space by name (``enas_macro``, ``enas_micro``, ``nb201``)."""
    if name not in SPACES:
        raise ValueError(f"unknown search space {name!r}; available: {', '.join(sorted(SPACES))}")
    try:
        return SPACES[name](**params)
    except TypeError as exc:
        raise ValueError(f"search space {name!r}: bad parameters {params}: {exc}") from None


def parse_arch(space: SearchSpace, value: Any) -> Arch:
    """Accept an architecture as a canonical string, a JSON structure or a list of actions."""
    if isinstance(value, str):
        return space.from_string(value)
    if isinstance(value, dict):
        return space.from_json(value)
    if isinstance(value, (list, tuple)):
        return space.validate(value)
    raise ValueError(f"{space.name}: cannot read an architecture from {type(value).__name__}")


def read_arch_file(path: str | Path) -> Any:
    """An architecture file's content: for best_arch.json / top_archs.json entries (which carry the
    structure and the string) the JSON structure, else the JSON value or the stripped text."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read architecture file {path}: {exc.strerror}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()
    if isinstance(obj, dict):
        if isinstance(obj.get("json"), dict):
            return obj["json"]
        if "arch" in obj:
            return obj["arch"]
    return obj


def load_arch_file(space: SearchSpace, path: str | Path) -> Arch:
    """Read an architecture file (JSON structure, ``{"arch": ...}``, or a canonical string)."""
    try:
        return parse_arch(space, read_arch_file(path))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


__all__ = [
    "EDGE_OP", "INPUT", "KINDS", "OP", "SKIP", "Arch", "Decision", "SearchSpace",
    "EnasMacroSpace", "EnasMicroSpace", "NB201Space", "MACRO_OPS", "MICRO_OPS", "NB201_OPS",
    "NB201_EDGES", "SPACES", "build_space", "parse_arch", "load_arch_file", "read_arch_file",
]
