"""The ENAS LSTM controller (Pham et al. 2018), in plain PyTorch.

It walks the decisions of a search space in order. Each decision is one LSTM step fed the
embedding of the previous choice, except skip bits: all bits of one macro layer are read off a
single LSTM step by attention, as in ENAS. Op choices use a softmax head per decision kind;
skip bits (macro) and input indices (micro) use attention over the LSTM outputs of earlier
layers/nodes, ``v^T tanh(W_prev h_j + W_curr h_i)``. Logits get ENAS's temperature and
``tanh_constant * tanh(.)``.

One routine (``_walk``) both samples and scores given architectures, so the log-probability a
sample reports and ``evaluate(arch)`` agree exactly. Every consumer (RLlib modules, supernet
training, tests) goes through it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.distributions import Categorical

from .spaces import EDGE_OP, INPUT, OP, SKIP, SearchSpace


@dataclass
class ControllerConfig:
    """ENAS controller hyper-parameters (defaults: ENAS macro search)."""

    hidden_size: int = 64
    num_lstm_layers: int = 1
    temperature: float | None = None
    tanh_constant: float | None = 1.5
    skip_target: float = 0.4
    init_range: float = 0.1

    def __post_init__(self) -> None:
        if self.hidden_size < 1:
            raise ValueError(f"controller.hidden_size must be >= 1, got {self.hidden_size}")
        if self.num_lstm_layers < 1:
            raise ValueError(f"controller.num_lstm_layers must be >= 1, got {self.num_lstm_layers}")
        if self.temperature is not None and self.temperature <= 0:
            raise ValueError(f"controller.temperature must be > 0 or null, got {self.temperature}")
        if self.tanh_constant is not None and self.tanh_constant <= 0:
            raise ValueError(f"controller.tanh_constant must be > 0 or null, got {self.tanh_constant}")
        if not 0.0 < self.skip_target < 1.0:
            raise ValueError(f"controller.skip_target must lie in (0, 1), got {self.skip_target}")


@dataclass
class ControllerOutput:
    """Per-decision results for a batch of B architectures over T decisions."""

    actions: Tensor  # [B, T] long
    log_probs: Tensor  # [B, T]
    entropies: Tensor  # [B, T]
    logits: Tensor  # [B, T, max_choices], illegal choices at -inf
    hidden: Tensor  # [B, T, hidden_size]: the LSTM output each decision was read from
    skip_kls: Tensor  # [B, T]: ENAS skip penalty KL(skip prob || skip_target) at skip bits, else 0

    @property
    def log_prob(self) -> Tensor:
        return self.log_probs.sum(-1)

    @property
    def entropy(self) -> Tensor:
        return self.entropies.sum(-1)

    @property
    def skip_kl(self) -> Tensor:
        return self.skip_kls.sum(-1)


class ENASController(nn.Module):
    def __init__(self, space: SearchSpace, config: ControllerConfig | None = None) -> None:
        super().__init__()
        self.space = space
        self.config = config or ControllerConfig()
        h = self.config.hidden_size
        self.lstm = nn.ModuleList(nn.LSTMCell(h, h) for _ in range(self.config.num_lstm_layers))
        self.g_emb = nn.Parameter(torch.zeros(1, h))
        op_kinds = sorted({d.kind for d in space.decisions if d.kind in (OP, EDGE_OP)})
        self.heads = nn.ModuleDict({k: nn.Linear(h, len(space.ops), bias=False) for k in op_kinds})
        self.embeddings = nn.ModuleDict({k: nn.Embedding(len(space.ops), h) for k in op_kinds})
        self.uses_anchors = any(d.kind in (SKIP, INPUT) for d in space.decisions)
        if self.uses_anchors:
            self.w_attn_prev = nn.Linear(h, h, bias=False)
            self.w_attn_curr = nn.Linear(h, h, bias=False)
            self.v_attn = nn.Linear(h, 1, bias=False)
        self.register_buffer("masks", torch.as_tensor(space.static_masks()), persistent=False)
        for p in self.parameters():
            nn.init.uniform_(p, -self.config.init_range, self.config.init_range)

    # -- public API -----------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ControllerOutput:
        """Sample ``batch_size`` legal architectures with their log-probs and entropies."""
        return self._walk(batch_size, None, generator)

    def evaluate(self, actions: Tensor | Sequence[Sequence[int]], upto: int | None = None) -> ControllerOutput:
        """Score given architectures (teacher forcing): the same numbers ``sample`` reports.

        With ``upto``, only the first ``upto`` decisions are walked; later entries of ``actions``
        are ignored (the walk is causal), so a padded prefix is enough.
        """
        actions = torch.as_tensor(actions, dtype=torch.long, device=self.g_emb.device)
        if actions.dim() == 1:
            actions = actions.unsqueeze(0)
        if actions.shape[1] != self.space.num_decisions:
            raise ValueError(f"expected {self.space.num_decisions} decisions per architecture, got {actions.shape[1]}")
        return self._walk(actions.shape[0], actions, None, upto)

    def sample_archs(self, n: int, generator: torch.Generator | None = None) -> list[list[int]]:
        with torch.no_grad():
            return self.sample(n, generator).actions.tolist()

    def log_prob(self, actions: Tensor | Sequence[Sequence[int]]) -> Tensor:
        return self.evaluate(actions).log_prob

    # -- the one walk over the decisions ----------------------------------------------------
    def _lstm_step(self, inp: Tensor, state: list[tuple[Tensor, Tensor]]) -> Tensor:
        x = inp
        for layer, cell in enumerate(self.lstm):
            state[layer] = cell(x, state[layer])
            x = state[layer][0]
        return x

    def _squash(self, logits: Tensor) -> Tensor:
        if self.config.temperature is not None:
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        return logits

    def _attention(self, anchors_prev: Tensor, h: Tensor) -> Tensor:
        """Scores [B, N] of N anchors (pre-projected, [B, N, H]) against query h [B, H]."""
        return self.v_attn(torch.tanh(anchors_prev + self.w_attn_curr(h).unsqueeze(1))).squeeze(-1)

    def _walk(self, batch: int, given: Tensor | None, generator: torch.Generator | None,
              upto: int | None = None) -> ControllerOutput:
        space, device = self.space, self.g_emb.device
        decisions, k_max = space.decisions[: upto or None], space.max_choices
        hsz = self.config.hidden_size
        state = [(torch.zeros(batch, hsz, device=device), torch.zeros(batch, hsz, device=device)) for _ in self.lstm]
        g_emb = self.g_emb.expand(batch, hsz)
        inp = g_emb
        anchors: list[Tensor] = []  # LSTM outputs of earlier blocks of the current cell
        anchors_prev: list[Tensor] = []  # the same, projected by W_prev
        block_h: Tensor | None = None  # the anchor step's output of the current block (skip bits)
        block_skips: list[tuple[int, Tensor]] = []
        actions, log_probs, entropies, logits_out, hidden, skip_kls = [], [], [], [], [], []
        no_kl = torch.zeros(batch, device=device)

        def add_anchor(h: Tensor) -> None:
            anchors.append(h)
            anchors_prev.append(self.w_attn_prev(h))

        for t, d in enumerate(decisions):
            if t == 0 or d.cell != decisions[t - 1].cell:
                anchors.clear()
                anchors_prev.clear()
                for _ in range(space.cell_inputs):
                    add_anchor(self._lstm_step(g_emb, state))
                inp = g_emb
            if d.kind in (OP, EDGE_OP):
                h = self._lstm_step(inp, state)
                logits = self._squash(self.heads[d.kind](h))
            elif d.kind == INPUT:
                h = self._lstm_step(inp, state)
                logits = self._squash(self._attention(torch.stack(anchors_prev, 1), h))
            else:  # SKIP: every bit of the block is read from one LSTM step
                if block_h is None:
                    block_h = self._lstm_step(inp, state)
                h = block_h
                q = self._squash(self._attention(anchors_prev[d.target].unsqueeze(1), h)).squeeze(1)
                logits = torch.stack([-q, q], dim=-1)
            padded = logits.new_full((batch, k_max), -math.inf)
            padded[:, : logits.shape[1]] = logits
            padded = padded.masked_fill(~self.masks[t], -math.inf)
            dist = Categorical(logits=padded)
            if given is None:
                a = torch.multinomial(dist.probs, 1, generator=generator).squeeze(1)
            else:
                a = given[:, t]
            actions.append(a)
            log_probs.append(dist.log_prob(a))
            entropies.append(dist.entropy())
            logits_out.append(padded)
            hidden.append(h)
            a = a.clamp(0, d.num_choices - 1)  # an illegal given action already scored -inf; walk on
            if d.kind in (OP, EDGE_OP):
                inp = self.embeddings[d.kind](a)
            elif d.kind == INPUT:
                inp = torch.stack(anchors, 1)[torch.arange(batch, device=device), a]
            else:
                p_skip = dist.probs[:, 1].clamp(1e-6, 1 - 1e-6)
                tgt = self.config.skip_target
                skip_kls.append(p_skip * torch.log(p_skip / tgt) + (1 - p_skip) * torch.log((1 - p_skip) / (1 - tgt)))
                block_skips.append((d.target, a))
            if d.kind != SKIP:
                skip_kls.append(no_kl)
            block_ends = t + 1 == len(decisions) or decisions[t + 1].block != d.block
            if block_ends and self.uses_anchors:
                if block_h is None:  # no skip bits in this block: a dedicated anchor step
                    add_anchor(self._lstm_step(inp, state))
                    inp = g_emb
                else:  # ENAS macro: the next input averages the anchors the skips selected
                    bits = torch.stack([a.float() for _, a in block_skips], 1)
                    chosen = torch.stack([anchors[j] for j, _ in block_skips], 1)
                    inp = (bits.unsqueeze(-1) * chosen).sum(1) / (1.0 + bits.sum(1, keepdim=True))
                    add_anchor(block_h)
                block_h, block_skips = None, []
        return ControllerOutput(
            actions=torch.stack(actions, 1),
            log_probs=torch.stack(log_probs, 1),
            entropies=torch.stack(entropies, 1),
            logits=torch.stack(logits_out, 1),
            hidden=torch.stack(hidden, 1),
            skip_kls=torch.stack(skip_kls, 1),
        )
