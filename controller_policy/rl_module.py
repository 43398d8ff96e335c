"""The RLModule that wraps the ENAS controller for RLlib's new API stack.

History-conditioned rather than stateful: the observation carries the actions taken so far,
and the module re-walks the controller over that prefix (teacher forcing) to get the logits of
the current decision. The ENAS controller attends over the LSTM outputs of *all* earlier
layers/nodes, so an RLlib recurrent state would have to carry every anchor; re-walking the
prefix is exact, keeps the module stateless (no ``max_seq_len``, no zero-padded sequences) and
makes the distribution RLlib optimises literally ``ENASController``'s, the one the supernet
workers sample from. The cost is O(T) LSTM steps per decision, small for these controllers.

The value head (PPO) reads the controller's LSTM output at the current decision, detached, so
the value loss never reshapes the policy.
"""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis.value_function_api import ValueFunctionAPI
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchRLModule
from ray.rllib.utils.annotations import override
from torch import Tensor, nn

from .controller import ControllerConfig, ControllerOutput, ENASController
from .spaces import build_space

# Finite stand-in for -inf: RLlib's KL and entropy terms stay finite on masked choices.
MASKED_LOGIT = -1e9
SKIP_KL = "skip_kl"


def controller_model_config(space: str, space_params: dict | None = None, controller: dict | None = None,
                            uniform: bool = False) -> dict[str, Any]:
    """The ``model_config`` of ``ControllerRLModule``."""
    return {"space": space, "space_params": dict(space_params or {}), "controller": dict(controller or {}),
            "uniform": uniform}


class ControllerRLModule(TorchRLModule, ValueFunctionAPI):
    """``model_config``: see ``controller_model_config``. With ``uniform`` the policy ignores the
    controller and picks uniformly among legal choices (random search through the same harness)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        mc = self.model_config
        space = build_space(mc["space"], **mc.get("space_params", {}))
        self.controller = ENASController(space, ControllerConfig(**mc.get("controller", {})))
        self.uniform = bool(mc.get("uniform", False))
        h = self.controller.config.hidden_size
        self.value_head = nn.Sequential(nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 1))

    def _walk(self, batch: dict[str, Any]) -> tuple[ControllerOutput, Tensor]:
        obs = batch[Columns.OBS]
        step = obs["step"].long().view(-1)
        out = self.controller.evaluate(obs["prefix"].long(), upto=int(step.max()) + 1)
        return out, step

    @staticmethod
    def _at(values: Tensor, step: Tensor) -> Tensor:
        return values[torch.arange(len(step), device=step.device), step]

    def _logits(self, out: ControllerOutput, step: Tensor) -> Tensor:
        return self._at(out.logits, step).clamp(min=MASKED_LOGIT)

    @staticmethod
    def _uniform_logits(batch: dict[str, Any]) -> Tensor:
        mask = batch[Columns.OBS]["action_mask"]
        return torch.where(mask > 0, torch.zeros_like(mask), torch.full_like(mask, MASKED_LOGIT))

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        if self.uniform:
            return {Columns.ACTION_DIST_INPUTS: self._uniform_logits(batch)}
        out, step = self._walk(batch)
        return {Columns.ACTION_DIST_INPUTS: self._logits(out, step)}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out, step = self._walk(batch)
        return {
            Columns.ACTION_DIST_INPUTS: self._uniform_logits(batch) if self.uniform else self._logits(out, step),
            Columns.EMBEDDINGS: self._at(out.hidden, step),
            SKIP_KL: self._at(out.skip_kls, step),
        }

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Tensor | None = None) -> Tensor:
        if embeddings is None:
            out, step = self._walk(batch)
            embeddings = self._at(out.hidden, step)
        return self.value_head(embeddings.detach()).squeeze(-1)
