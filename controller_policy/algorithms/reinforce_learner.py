"""ENAS's controller loss on RLlib's Learner API.

    b  <- decay^n * b + (1 - decay^n) * mean(R)          (EMA over the n new episodes)
    L  =  -mean_arch[(R - b) * sum_t log pi(a_t)]  -  entropy_coeff * mean_arch[sum_t H_t]
          + skip_weight * mean_arch[skip KL]

R is the terminal reward (every step's return-to-go, gamma = 1). Episodes arrive as zero-padded
sequences (one per architecture, see rl_module.py); padding rows are masked out.
"""
from __future__ import annotations

from typing import Any

import torch
from ray.rllib.connectors.learner import ComputeReturnsToGo
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.torch.torch_learner import TorchLearner

from ..rl_module import SKIP_KL


class ReinforceTorchLearner(TorchLearner):
    def build(self) -> None:
        super().build()
        if self.config.add_default_connectors_to_learner_pipeline:
            self._learner_connector.prepend(ComputeReturnsToGo(gamma=self.config.gamma))
        self.baselines: dict[str, float] = {}

    def compute_loss_for_module(self, *, module_id, config, batch, fwd_out):
        module = self.module[module_id]
        num_decisions = module.controller.space.num_decisions
        dist = module.get_train_action_dist_cls().from_logits(fwd_out[Columns.ACTION_DIST_INPUTS])
        log_probs = dist.logp(batch[Columns.ACTIONS])
        returns = batch[Columns.RETURNS_TO_GO]
        # Episodes arrive as zero-padded sequences (rl_module.py): only the real decisions count.
        mask = batch.get(Columns.LOSS_MASK)
        mask = torch.ones_like(returns, dtype=torch.bool) if mask is None else mask.bool()
        num_archs = mask.sum() / num_decisions

        def per_arch(values: torch.Tensor) -> torch.Tensor:  # sum over decisions, mean over architectures
            return torch.where(mask, values, torch.zeros_like(values)).sum() / num_archs

        baseline = self._update_baseline(module_id, returns[mask], num_decisions, config)
        policy_loss = -per_arch(log_probs * (returns - baseline))
        entropy = per_arch(dist.entropy())
        skip_kl = per_arch(fwd_out[SKIP_KL])
        loss = policy_loss - config.entropy_coeff * entropy + config.skip_weight * skip_kl
        for key, value in [("policy_loss", policy_loss), ("entropy", entropy), ("skip_kl", skip_kl),
                           ("baseline", baseline)]:
            self.metrics.log_value((module_id, key), float(value.detach()) if torch.is_tensor(value) else value,
                                  window=1)
        return loss

    def _update_baseline(self, module_id: str, returns: torch.Tensor, num_decisions: int, config) -> float:
        """``returns``: the return of every real decision (each architecture's T rows)."""
        n = max(1, round(returns.numel() / num_decisions))
        mean_r = float(returns.mean())
        if module_id not in self.baselines:
            self.baselines[module_id] = mean_r if config.baseline_init is None else float(config.baseline_init)
        keep = config.baseline_decay ** n
        self.baselines[module_id] = keep * self.baselines[module_id] + (1 - keep) * mean_r
        return self.baselines[module_id]

    # The baseline is learner state: checkpoint it with the weights and optimiser.
    def get_state(self, *args, **kwargs) -> dict[str, Any]:
        state = super().get_state(*args, **kwargs)
        state["reinforce_baselines"] = dict(self.baselines)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.baselines = dict(state.get("reinforce_baselines", self.baselines))
