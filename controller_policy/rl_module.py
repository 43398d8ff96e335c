"""The RLModule that wraps the ENAS controller for RLlib's new API stack.

One architecture is one episode of T decisions, and the controller reads it in one O(T) walk
(``ENASController._walk``) that carries the LSTM state and the anchors its attention reads from
decision to decision. Two pieces of RLlib machinery make that walk the unit of work:

- **Sampling** goes through ``ArchitectureEnvRunner`` (``env_runner.py``), which draws a batch of
  whole architectures with one batched walk (``sample_architectures``) instead of one module
  call per decision and environment.
- **Learning** uses RLlib's stateful-module machinery: the module declares the controller's LSTM
  state as its recurrent state and ``max_seq_len = T + 1`` (PPO's learner adds one artificial
  timestep per episode), so RLlib's learner connectors hand it each episode as one zero-padded
  sequence ``[B, T + 1]`` and minibatches slice whole episodes. ``_forward_train`` then walks each
  episode's architecture once (teacher-forced, from ``STATE_IN``) and gathers the per-decision
  outputs for every row: policy logits, the value head's input and ENAS's skip KL. The walk is
  exact, so the distribution RLlib optimises is literally the one the runner sampled (and the one
  the supernet workers sample from).

Every sequence must start at an episode's first decision (the anchors of earlier decisions are
not part of the recurrent state); a batch that does not is refused with a clear error rather
than scored wrongly.

The value head (PPO) reads the controller's LSTM output at each decision, detached, so the value
loss never reshapes the policy. With ``learned_value`` False (PPO's baseline "batch") the values are
0 and the advantage is the terminal reward, standardised over the batch by RLlib's GAE step.
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
    num_decisions = build_space(space, **(space_params or {})).num_decisions
    return {"space": space, "space_params": dict(space_params or {}), "controller": dict(controller or {}),
            "uniform": uniform, "max_seq_len": num_decisions + 1}


class ControllerRLModule(TorchRLModule, ValueFunctionAPI):
    """``model_config``: see ``controller_model_config``. With ``uniform`` the policy ignores the
    controller and picks uniformly among legal choices (random search through the same harness)."""

    @override(TorchRLModule)
    def setup(self) -> None:
        mc = self.model_config
        space = build_space(mc["space"], **mc.get("space_params", {}))
        self.controller = ENASController(space, ControllerConfig(**mc.get("controller", {})))
        self.uniform = bool(mc.get("uniform", False))
        # False: PPO with baseline "batch" (no critic); GAE then reads values of 0
        self.learned_value = bool(mc.get("learned_value", True))
        h = self.controller.config.hidden_size
        self.value_head = nn.Sequential(nn.Linear(h, h), nn.Tanh(), nn.Linear(h, 1))

    @override(TorchRLModule)
    def get_initial_state(self) -> dict[str, Tensor]:
        layers, h = self.controller.config.num_lstm_layers, self.controller.config.hidden_size
        return {"h": torch.zeros(layers, h), "c": torch.zeros(layers, h)}

    # -- sampling (ArchitectureEnvRunner) ---------------------------------------------------
    @torch.no_grad()
    def sample_architectures(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``n`` whole architectures in one batched walk: ``actions`` [n, T], the action-distribution
        inputs each decision was drawn from (``logits`` [n, T, K]) and their ``log_probs`` [n, T]."""
        if self.uniform:
            masks = self.controller.masks
            probs = masks.float().unsqueeze(0).expand(n, -1, -1).reshape(-1, masks.shape[1])
            actions = torch.multinomial(probs, 1, generator=generator).view(n, -1)
            logits = self._uniform_logits(masks.float()).unsqueeze(0).expand(n, -1, -1)
            log_probs = -torch.log(masks.sum(-1).float()).unsqueeze(0).expand(n, -1)
            return {"actions": actions, "logits": logits, "log_probs": log_probs}
        out = self.controller.sample(n, generator)
        return {"actions": out.actions, "logits": out.logits.clamp(min=MASKED_LOGIT), "log_probs": out.log_probs}

    # -- one walk per episode (learner, inference) -------------------------------------------
    def _walk(self, batch: dict[str, Any]) -> tuple[ControllerOutput, Tensor]:
        """Walk every sequence's architecture once; return the walk and each row's decision index."""
        obs = batch[Columns.OBS]
        step = obs["step"].long()
        if step.dim() != 3:
            raise ValueError("ControllerRLModule takes sequences [B, T, ...] (RLlib adds the time axis to "
                             f"stateful modules' batches); got a step column of shape {tuple(step.shape)}")
        if bool((step[:, 0, 0] != 0).any()):
            raise ValueError("ControllerRLModule: every sequence must start at an episode's first decision; "
                             "sample with ArchitectureEnvRunner and keep max_seq_len = T + 1")
        # Row t's prefix holds a_0..a_{t-1} (zeros after), so the row-wise max is the architecture
        # (complete when the sequence reaches the terminal observation; the walk is causal anyway).
        arch = obs["prefix"].long().amax(1)
        state = batch.get(Columns.STATE_IN)
        lstm_state = None if state is None else [(state["h"][:, i], state["c"][:, i])
                                                 for i in range(state["h"].shape[1])]
        return self.controller.evaluate(arch, lstm_state), step[..., 0]

    @staticmethod
    def _at(values: Tensor, step: Tensor) -> Tensor:
        """Per-row values [B, L, ...] of per-decision values [B, T, ...] at each row's decision."""
        index = step.view(*step.shape, *([1] * (values.dim() - 2))).expand(*step.shape, *values.shape[2:])
        return values.gather(1, index)

    def _logits(self, out: ControllerOutput, step: Tensor) -> Tensor:
        return self._at(out.logits, step).clamp(min=MASKED_LOGIT)

    @staticmethod
    def _uniform_logits(mask: Tensor) -> Tensor:
        return torch.where(mask > 0, torch.zeros_like(mask), torch.full_like(mask, MASKED_LOGIT))

    @override(TorchRLModule)
    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        if self.uniform:
            return {Columns.ACTION_DIST_INPUTS: self._uniform_logits(batch[Columns.OBS]["action_mask"])}
        out, step = self._walk(batch)
        return {Columns.ACTION_DIST_INPUTS: self._logits(out, step)}

    @override(TorchRLModule)
    def _forward_train(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        out, step = self._walk(batch)
        logits = self._uniform_logits(batch[Columns.OBS]["action_mask"]) if self.uniform else self._logits(out, step)
        return {Columns.ACTION_DIST_INPUTS: logits, Columns.EMBEDDINGS: self._at(out.hidden, step),
                SKIP_KL: self._at(out.skip_kls, step)}

    @override(ValueFunctionAPI)
    def compute_values(self, batch: dict[str, Any], embeddings: Tensor | None = None) -> Tensor:
        if not self.learned_value:
            return torch.zeros(batch[Columns.OBS]["step"].shape[:2], device=self.value_head[0].weight.device)
        if embeddings is None:  # GAE's value pass: the value head never trains the controller
            with torch.no_grad():
                out, step = self._walk(batch)
                embeddings = self._at(out.hidden, step)
        return self.value_head(embeddings.detach()).squeeze(-1)

