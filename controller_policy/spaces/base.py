"""The one search-space abstraction: an ordered list of discrete decisions.

An architecture is the list of actions taken at each decision (``list[int]``). Everything else
(the JSON structure, the canonical string, the supernet's view of it) is derived from that list,
so the controller, the RLlib environment and the supernets agree on one representation.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# Decision kinds the ENAS controller knows how to drive.
OP = "op"  # a categorical choice of operation (softmax head per space vocabulary)
EDGE_OP = "edge_op"  # the operation on one edge of a cell DAG (nb201)
SKIP = "skip"  # one skip-connection bit (macro), scored by attention against an earlier layer
INPUT = "input"  # which earlier node feeds this node (micro), scored by attention over anchors
KINDS = (OP, EDGE_OP, SKIP, INPUT)


@dataclass(frozen=True)
class Decision:
    """One discrete decision of a search space.

    ``block`` groups the decisions of one layer (macro), node (micro) or edge (nb201); the
    controller emits one anchor (an LSTM output attention can point at) per block.
    ``cell`` separates independently wired cells (micro: normal, reduce).
    ``target`` is, for a skip bit, the earlier block it connects to.
    """

    name: str
    kind: str
    num_choices: int
    block: int
    cell: int = 0
    target: int = -1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"decision {self.name!r}: unknown kind {self.kind!r}, expected one of {KINDS}")
        if self.num_choices < 1:
            raise ValueError(f"decision {self.name!r}: num_choices must be >= 1")


Arch = list[int]


class SearchSpace(ABC):
    """Base class: subclasses fill ``decisions`` and implement the structure/string encodings.

    Masks of the spaces shipped here depend only on the position (e.g. a micro node may take as
    input any earlier node), so sampling each decision uniformly among its legal choices samples
    uniformly among legal architectures. A subclass whose legality depends on earlier actions
    overrides ``mask`` and must also override ``sample``, ``sample_batch`` and ``size``.
    """

    name: str = "base"
    #: number of cell inputs that exist before the first decision of each cell (micro: 2)
    cell_inputs: int = 0
    #: names of the ops of the OP / EDGE_OP vocabulary, index = action
    ops: tuple[str, ...] = ()

    def __init__(self, decisions: Sequence[Decision]) -> None:
        self.decisions: tuple[Decision, ...] = tuple(decisions)
        self.max_choices: int = max(d.num_choices for d in self.decisions)
        self._static_masks = np.zeros((len(self.decisions), self.max_choices), dtype=bool)
        for t, d in enumerate(self.decisions):
            self._static_masks[t, : d.num_choices] = True

    # -- decisions and legality ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.decisions)

    @property
    def num_decisions(self) -> int:
        return len(self.decisions)

    def params(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this space (``build_space(name, **params)``)."""
        return {}

    def mask(self, step: int, prefix: Sequence[int] = ()) -> np.ndarray:
        """Legal choices of decision ``step`` (bool array of length ``max_choices``)."""
        del prefix
        return self._static_masks[step].copy()

    def static_masks(self) -> np.ndarray:
        """[num_decisions, max_choices] legality, valid because masks depend on position only."""
        return self._static_masks.copy()

    def size(self) -> int:
        """Number of legal architectures."""
        return math.prod(d.num_choices for d in self.decisions)

    def sample(self, rng: np.random.Generator) -> Arch:
        """One architecture drawn uniformly among legal ones."""
        arch: Arch = []
        for t in range(self.num_decisions):
            legal = np.flatnonzero(self.mask(t, arch))
            arch.append(int(rng.choice(legal)))
        return arch

    def sample_batch(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` architectures ([n, T] ints) drawn uniformly among legal ones, one vectorised draw
        per decision (valid because masks depend on the position only; see the class docstring)."""
        out = np.empty((n, self.num_decisions), np.int64)
        for t in range(self.num_decisions):
            out[:, t] = rng.choice(np.flatnonzero(self.mask(t)), size=n)
        return out

    def sample_balanced(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` architectures in which every legal choice of each decision appears equally often
        (to within one): each decision runs through shuffled rounds of its choices, independently
        of the others (FairNAS's strict fairness, Chu et al. 2021, without its gradient accumulation)."""
        out = np.empty((n, self.num_decisions), np.int64)
        for t in range(self.num_decisions):
            legal = np.flatnonzero(self.mask(t))
            rounds = -(-n // len(legal))
            out[:, t] = np.concatenate([rng.permutation(legal) for _ in range(rounds)])[:n]
        return out

    def validate(self, arch: Sequence[int]) -> Arch:
        """Return ``arch`` as a list of ints or raise ValueError naming the offending position."""
        try:
            actions = [int(a) for a in arch]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{self.name}: an architecture is a sequence of integers ({exc})") from None
        if len(actions) != self.num_decisions:
            raise ValueError(
                f"{self.name}: expected {self.num_decisions} decisions, got {len(actions)}"
            )
        for t, a in enumerate(actions):
            if 0 <= a < self.max_choices and self._static_masks[t, a]:  # masks depend on the position only
                continue
            legal = np.flatnonzero(self.mask(t, actions[:t]))
            if a not in legal:
                d = self.decisions[t]
                raise ValueError(
                    f"{self.name}: decision {t} ({d.name}) has value {a}; allowed values are "
                    f"{self._describe_choices(t, legal)}"
                )
        return actions

    def _describe_choices(self, step: int, legal: np.ndarray) -> str:
        d = self.decisions[step]
        if d.kind in (OP, EDGE_OP) and self.ops:
            return ", ".join(f"{i} ({self.ops[i]})" for i in legal)
        return ", ".join(str(i) for i in legal)

    # -- encodings (subclasses) -------------------------------------------------------------
    @abstractmethod
    def to_json(self, arch: Sequence[int]) -> dict[str, Any]:
        ...

    @abstractmethod
    def from_json(self, obj: Any) -> Arch:
        ...

    @abstractmethod
    def to_string(self, arch: Sequence[int]) -> str:
        ...

    @abstractmethod
    def from_string(self, text: str) -> Arch:
        ...

    # -- helpers shared by the subclasses ---------------------------------------------------
    def _check_space_field(self, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise ValueError(f"{self.name}: an architecture JSON must be an object, got {type(obj).__name__}")
        space = obj.get("space", self.name)
        if space != self.name:
            raise ValueError(f"architecture belongs to space {space!r}, not {self.name!r}")
        return obj

    def _op_index(self, op: Any, where: str) -> int:
        if isinstance(op, str):
            if op not in self.ops:
                raise ValueError(f"{self.name}: {where}: unknown op {op!r}; allowed: {', '.join(self.ops)}")
            return self.ops.index(op)
        if isinstance(op, int) and not isinstance(op, bool) and 0 <= op < len(self.ops):
            return op
        raise ValueError(f"{self.name}: {where}: op {op!r} is neither an op name nor an index 0..{len(self.ops) - 1}")

    def _parse_ints(self, text: str) -> list[int]:
        if not isinstance(text, str):
            raise ValueError(f"{self.name}: architecture string expected, got {type(text).__name__}")
        tokens = text.replace("|", " ").split()
        try:
            return [int(tok) for tok in tokens]
        except ValueError:
            bad = next(tok for tok in tokens if not tok.lstrip("-").isdigit())
            raise ValueError(f"{self.name}: token {bad!r} in {text!r} is not an integer") from None
