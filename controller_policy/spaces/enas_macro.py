"""ENAS macro space: L layers, each an op plus one skip bit to every earlier layer.

Decision order per layer i (0-based): the op, then bits for layers 0..i-1 (i bits), which is
ENAS's ``fixed_arc`` order. The canonical string groups ENAS's flat integers by layer:
``"1 | 0 1 | 3 0 1"``; the flat form ``"1 0 1 3 0 1"`` is accepted too.
"""
from __future__ import annotations

from typing import Any, Sequence

from .base import OP, SKIP, Arch, Decision, SearchSpace

MACRO_OPS = ("conv_3x3", "conv_5x5", "sep_conv_3x3", "sep_conv_5x5", "max_pool_3x3", "avg_pool_3x3")


class EnasMacroSpace(SearchSpace):
    name = "enas_macro"
    ops = MACRO_OPS

    def __init__(self, num_layers: int = 12, ops: Sequence[str] | None = None) -> None:
        if num_layers < 1:
            raise ValueError(f"enas_macro: num_layers must be >= 1, got {num_layers}")
        if ops is not None:
            unknown = [o for o in ops if o not in MACRO_OPS]
            if unknown or not ops:
                raise ValueError(f"enas_macro: unknown ops {unknown}; allowed: {', '.join(MACRO_OPS)}")
            self.ops = tuple(ops)
        self.num_layers = num_layers
        decisions = []
        for i in range(num_layers):
            decisions.append(Decision(f"layer{i}/op", OP, len(self.ops), block=i))
            decisions += [Decision(f"layer{i}/skip{j}", SKIP, 2, block=i, target=j) for j in range(i)]
        super().__init__(decisions)

    def params(self) -> dict[str, Any]:
        return {"num_layers": self.num_layers, "ops": list(self.ops)}

    def layers(self, arch: Sequence[int]) -> list[tuple[int, list[int]]]:
        """``[(op, [skip bit per earlier layer]), ...]``: the view the supernet uses."""
        out, t = [], 0
        for i in range(self.num_layers):
            out.append((arch[t], list(arch[t + 1 : t + 1 + i])))
            t += 1 + i
        return out

    def to_json(self, arch: Sequence[int]) -> dict[str, Any]:
        arch = self.validate(arch)
        return {
            "space": self.name,
            "layers": [{"op": self.ops[op], "skips": skips} for op, skips in self.layers(arch)],
        }

    def from_json(self, obj: Any) -> Arch:
        obj = self._check_space_field(obj)
        layers = obj.get("layers")
        if not isinstance(layers, list) or len(layers) != self.num_layers:
            raise ValueError(f"enas_macro: 'layers' must be a list of {self.num_layers} layers")
        arch: Arch = []
        for i, layer in enumerate(layers):
            if not isinstance(layer, dict) or "op" not in layer:
                raise ValueError(f"enas_macro: layers[{i}] must be an object with 'op' and 'skips'")
            skips = layer.get("skips", [])
            if not isinstance(skips, list) or len(skips) != i:
                raise ValueError(f"enas_macro: layers[{i}].skips must be a list of {i} bits (one per earlier layer)")
            arch.append(self._op_index(layer["op"], f"layers[{i}].op"))
            arch += skips
        return self.validate(arch)

    def to_string(self, arch: Sequence[int]) -> str:
        arch = self.validate(arch)
        return " | ".join(" ".join(str(v) for v in [op, *skips]) for op, skips in self.layers(arch))

    def from_string(self, text: str) -> Arch:
        return self.validate(self._parse_ints(text))
