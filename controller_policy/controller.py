"""The ENAS LSTM controller (Pham et al. 2018), in plain PyTorch.

It walks the decisions of a search space in order. Each decision is one LSTM step fed the
embedding of the previous choice, except skip bits: all bits of one macro layer are read off a
single LSTM step by attention, as in ENAS. Op choices use a softmax head per decision kind;
skip bits (macro) and input indices (micro) use attention over the LSTM outputs of earlier
layers/nodes, ``v^T tanh(W_prev h_j + W_curr h_i)``. Logits get ENAS's temperature and
``tanh_constant * tanh(.)``.

One routine (``_walk``) both samples and scores given architectures, so the log-probability a
sample reports and ``evaluate(arch)`` agree exactly. Every consumer (RLlib modules, supernet
training, tests) goes through it. The walk is O(T): it carries the LSTM state, the anchors and
the next input from decision to decision, and scores every decision of a batch in one
vectorised pass at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Sequence

import torch
from torch import Tensor, nn

from .settings import ControllerConfig
from .spaces import EDGE_OP, INPUT, OP, SKIP, SearchSpace


@dataclass
class ControllerOutput:
    """Per-decision results for a batch of B architectures over T decisions. Log-probs,
    entropies and skip KLs are derived from the logits when first read (one vectorised pass),
    so a consumer that needs only the logits (RLlib's losses) does not pay for them."""

    actions: Tensor  # [B, T] long
    logits: Tensor  # [B, T, max_choices], illegal choices at -inf
    hidden: Tensor  # [B, T, hidden_size]: the LSTM output each decision was read from
    skip_steps: Tensor  # decision indices of skip bits
    skip_target: float
    pre_tanh: Tensor  # [B, T, max_choices]: raw scores / temperature, what the squash's tanh reads

    @cached_property
    def _log_p(self) -> Tensor:
        return torch.log_softmax(self.logits, -1)

    @cached_property
    def log_probs(self) -> Tensor:  # [B, T]; -inf for an illegal or out-of-range action
        k = self.logits.shape[-1]
        picked = self._log_p.gather(-1, self.actions.clamp(0, k - 1).unsqueeze(-1)).squeeze(-1)
        return picked.masked_fill((self.actions < 0) | (self.actions >= k), -math.inf)

    @cached_property
    def entropies(self) -> Tensor:  # [B, T]
        p = self._log_p.exp()
        return -torch.where(torch.isfinite(self.logits), p * self._log_p, torch.zeros_like(p)).sum(-1)

    @cached_property
    def skip_kls(self) -> Tensor:  # [B, T]: ENAS skip penalty KL(skip prob || skip_target) at skip bits, else 0
        kls = torch.zeros(self.actions.shape, dtype=self.logits.dtype, device=self.logits.device)
        if not self.skip_steps.numel():
            return kls
        p_skip = torch.softmax(self.logits[:, self.skip_steps], -1)[..., 1].clamp(1e-6, 1 - 1e-6)
        tgt = self.skip_target
        kl = p_skip * torch.log(p_skip / tgt) + (1 - p_skip) * torch.log((1 - p_skip) / (1 - tgt))
        return kls.index_copy(1, self.skip_steps, kl)

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
        self.heads = nn.ModuleDict({k: nn.Linear(h, len(space.ops), bias=self.config.op_bias) for k in op_kinds})
        self.embeddings = nn.ModuleDict({k: nn.Embedding(len(space.ops), h) for k in op_kinds})
        self.uses_anchors = any(d.kind in (SKIP, INPUT) for d in space.decisions)
        if self.uses_anchors:
            self.w_attn_prev = nn.Linear(h, h, bias=False)
            self.w_attn_curr = nn.Linear(h, h, bias=False)
            self.v_attn = nn.Linear(h, 1, bias=False)
        self.register_buffer("masks", torch.as_tensor(space.static_masks()), persistent=False)
        skip_steps = [t for t, d in enumerate(space.decisions) if d.kind == SKIP]
        self.register_buffer("skip_steps", torch.tensor(skip_steps, dtype=torch.long), persistent=False)
        self.register_buffer("num_choices", torch.tensor([d.num_choices for d in space.decisions]),
                             persistent=False)
        self.plan = walk_plan(space)
        self.scoring = ScoringIndex(space, self.plan)
        tanh_scale, offsets = self._op_logit_terms(space)
        self.register_buffer("tanh_scale", tanh_scale, persistent=False)
        self.register_buffer("logit_offsets", offsets, persistent=False)
        for p in self.parameters():
            nn.init.uniform_(p, -self.config.init_range, self.config.init_range)
        if self.config.op_bias:  # ENAS micro: a strong initial preference for the first two ops
            for head in self.heads.values():
                nn.init.constant_(head.bias, 0.0)
                head.bias.data[:2] = 10.0

    def _op_logit_terms(self, space: SearchSpace) -> tuple[Tensor, Tensor]:
        """Per decision: the tanh constant of its squash, and the fixed term added after it."""
        c = self.config
        scale, offsets = [], torch.zeros(space.num_decisions, space.max_choices)
        for t, d in enumerate(space.decisions):
            is_op = d.kind in (OP, EDGE_OP)
            scale.append((c.tanh_constant or 0.0) / (c.op_tanh_reduce if is_op else 1.0))
            if is_op and c.op_bias and d.cell == 0:
                offsets[t, : len(space.ops)] = torch.tensor([0.25, 0.25] + [-0.25] * (len(space.ops) - 2))
        return torch.tensor(scale), offsets

    # -- public API -----------------------------------------------------------------------
    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> ControllerOutput:
        """Sample ``batch_size`` legal architectures with their log-probs and entropies."""
        return self._walk(batch_size, None, generator)

    def evaluate(self, actions: Tensor | Sequence[Sequence[int]],
                 lstm_state: list[tuple[Tensor, Tensor]] | None = None) -> ControllerOutput:
        """Score given architectures (teacher forcing): the same numbers ``sample`` reports.
        ``lstm_state``: the LSTM's (h, c) per layer at the first decision (default: zeros)."""
        actions = torch.as_tensor(actions, dtype=torch.long, device=self.g_emb.device)
        if actions.dim() == 1:
            actions = actions.unsqueeze(0)
        if actions.dim() != 2 or actions.shape[1] != self.space.num_decisions:
            raise ValueError(f"expected {self.space.num_decisions} decisions per architecture, "
                             f"got shape {tuple(actions.shape)}")
        return self._walk(actions.shape[0], actions, None, lstm_state)

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

    def _squash(self, raw: Tensor, t0: int = 0, t1: int | None = None) -> Tensor:
        """ENAS's logits of decisions t0..t1-1 from raw scores [B, n, k]: temperature, then
        ``tanh_constant * tanh(.)`` (op decisions: divided by ``op_tanh_reduce``), then the fixed
        op offsets of ``op_bias``."""
        t1 = raw.shape[1] + t0 if t1 is None else t1
        logits = self._pre_tanh(raw)
        if self.config.tanh_constant is not None:
            logits = self.tanh_scale[t0:t1, None] * torch.tanh(logits)
        return logits + self.logit_offsets[t0:t1, : raw.shape[-1]] if self.config.op_bias else logits

    def _pre_tanh(self, raw: Tensor) -> Tensor:
        return raw / self.config.temperature if self.config.temperature is not None else raw

    def _attention(self, anchors_prev: Tensor, h: Tensor) -> Tensor:
        """Scores [B, N] of N anchors (pre-projected, [B, N, H]) against query h [B, H]."""
        return self.v_attn(torch.tanh(anchors_prev + self.w_attn_curr(h).unsqueeze(1))).squeeze(-1)

    def _draw(self, kind: str, h: Tensor, anchors: list[Tensor], t0: int, t1: int, targets: tuple[int, ...],
              generator: torch.Generator | None) -> Tensor:
        """Sampling: actions [B, n] of decisions t0..t1-1, drawn from the same squashed, masked
        logits that ``_score`` computes in bulk for the reported numbers."""
        if kind in (OP, EDGE_OP):
            raw = self.heads[kind](h).unsqueeze(1)
        else:
            keys = self.w_attn_prev(torch.stack([anchors[j] for j in targets] if kind == SKIP else anchors, 1))
            q = self._attention(keys, h)
            raw = torch.stack([-q, q], -1) if kind == SKIP else q.unsqueeze(1)
        k = raw.shape[-1]
        logits = self._squash(raw, t0, t1).masked_fill(~self.masks[t0:t1, :k], -math.inf)
        probs = torch.softmax(logits, -1).reshape(-1, k)
        return torch.multinomial(probs, 1, generator=generator).view(raw.shape[0], t1 - t0)

    def _walk(self, batch: int, given: Tensor | None, generator: torch.Generator | None,
              lstm_state: list[tuple[Tensor, Tensor]] | None = None) -> ControllerOutput:
        """One pass over the segments of ``self.plan`` carrying the LSTM state, the anchors and
        the next input from step to step: O(T) LSTM steps per architecture. All skip bits of a
        macro layer are one segment (one LSTM step). The logits of every decision are then
        computed in bulk from the recorded LSTM outputs (``_score``); sampling also scores each
        segment on the way, since the next input depends on the drawn action."""
        device, hsz = self.g_emb.device, self.config.hidden_size
        state = list(lstm_state) if lstm_state is not None else [
            (torch.zeros(batch, hsz, device=device), torch.zeros(batch, hsz, device=device)) for _ in self.lstm]
        g_emb = self.g_emb.expand(batch, hsz)
        inp = g_emb
        anchors: list[Tensor] = []  # LSTM outputs of earlier blocks of the current cell
        all_anchors: list[Tensor] = []  # of every cell, in order (the bulk scoring's keys)
        outputs: list[Tensor] = []  # the LSTM output of every decision segment, in order
        actions = []
        rows = torch.arange(batch, device=device)
        if given is not None:
            # An illegal given action scores -inf (``_finish``); the walk goes on with a legal one.
            walked = torch.minimum(given.clamp(min=0), self.num_choices - 1)
            ops = walked.clamp(max=len(self.space.ops) - 1)
            embedded = {kind: emb(ops) for kind, emb in self.embeddings.items()}  # all at once

        inputs: list[Tensor] = []  # what selecting each anchor of the cell feeds the LSTM next

        def add_anchor(h: Tensor, as_input: Tensor | None = None) -> None:
            anchors.append(h)
            all_anchors.append(h)
            inputs.append(h if as_input is None else as_input)

        for kind, t0, t1, targets in self.plan:
            if kind == _CELL:
                anchors.clear()
                inputs.clear()
                for _ in range(self.space.cell_inputs):
                    h = self._lstm_step(g_emb, state)
                    add_anchor(h, torch.zeros_like(h) if self.config.zero_input_anchors else None)
                inp = g_emb
                continue
            if kind == _ANCHOR:  # a block without skip bits ends with a dedicated anchor step
                add_anchor(self._lstm_step(inp, state))
                inp = g_emb
                continue
            h = self._lstm_step(inp, state)
            outputs.append(h)
            if given is None:
                a = self._draw(kind, h, anchors, t0, t1, targets, generator)
                walk = a
            else:
                a, walk = given[:, t0:t1], walked[:, t0:t1]
            actions.append(a)
            if kind == SKIP:  # ENAS macro: the next input averages the anchors the skips selected
                bits = walk.to(h.dtype)
                chosen = torch.stack([anchors[j] for j in targets], 1)
                inp = torch.bmm(bits.unsqueeze(1), chosen).squeeze(1) / (1.0 + bits.sum(1, keepdim=True))
                add_anchor(h)
            elif kind == INPUT:
                inp = torch.stack(inputs, 1)[rows, walk[:, 0]]
            elif given is None:
                inp = self.embeddings[kind](walk[:, 0])
            else:
                inp = embedded[kind][:, t0]
        outputs_t = torch.stack(outputs, 1)
        raw = self._score(outputs_t, torch.stack(all_anchors, 1) if all_anchors else None)
        return self._finish(raw, outputs_t[:, self.scoring.segment_of], torch.cat(actions, 1))

    def _score(self, outputs: Tensor, anchors: Tensor | None) -> Tensor:
        """Raw logits [B, T, K] (0 at padding) of every decision from the segments' LSTM outputs
        [B, S, H] and all anchors [B, A, H], a few batched ops for the whole architecture."""
        ix, batch = self.scoring, outputs.shape[0]
        k_max = self.space.max_choices
        raw = outputs.new_zeros(batch, self.space.num_decisions * k_max)
        for kind, (segments, positions) in ix.heads.items():
            head = self.heads[kind](outputs[:, segments])  # [B, n, num_ops]
            raw = raw.index_copy(1, positions, head.reshape(batch, -1))
        if anchors is not None and ix.pair_query.numel():
            keys = self.w_attn_prev(anchors)[:, ix.pair_anchor]
            queries = self.w_attn_curr(outputs)[:, ix.pair_query]
            scores = self.v_attn(torch.tanh(keys + queries)).squeeze(-1)  # [B, pairs]
            raw = raw.index_copy(1, ix.attention_positions, scores[:, ix.attention_pairs] * ix.attention_signs)
        return raw.view(batch, self.space.num_decisions, k_max)

    def _finish(self, raw: Tensor, hidden: Tensor, actions: Tensor) -> ControllerOutput:
        """The squashed, masked logits from the raw ones [B, T, K], for sampled and given
        architectures alike (``ControllerOutput`` derives the rest)."""
        logits = self._squash(raw).masked_fill(~self.masks, -math.inf)
        return ControllerOutput(actions=actions, logits=logits, hidden=hidden, skip_steps=self.skip_steps,
                                skip_target=self.config.skip_target, pre_tanh=self._pre_tanh(raw))


_CELL, _ANCHOR = "cell", "anchor"  # plan segments that make anchors and take no decision


def walk_plan(space: SearchSpace) -> list[tuple[str, int, int, tuple[int, ...]]]:
    """The controller's walk as segments ``(kind, t0, t1, skip targets)``: a cell start (its
    input anchors), one decision (op / edge op / input), all skip bits of a block, or the
    dedicated anchor step that ends a block without skip bits."""
    decisions, plan, t = space.decisions, [], 0
    uses_anchors = any(d.kind in (SKIP, INPUT) for d in decisions)
    while t < len(decisions):
        d = decisions[t]
        if t == 0 or d.cell != decisions[t - 1].cell:
            plan.append((_CELL, t, t, ()))
        t1 = t + 1
        if d.kind == SKIP:
            while t1 < len(decisions) and decisions[t1].kind == SKIP and decisions[t1].block == d.block:
                t1 += 1
        plan.append((d.kind, t, t1, tuple(decisions[i].target for i in range(t, t1))))
        block_ends = t1 == len(decisions) or decisions[t1].block != d.block
        if d.kind == SKIP and not block_ends:
            raise ValueError(f"{space.name}: the skip bits of a block must be its last decisions ({d.name})")
        if block_ends and uses_anchors and d.kind != SKIP:
            plan.append((_ANCHOR, t1, t1, ()))
        t = t1
    return plan


class ScoringIndex(nn.Module):
    """Where each decision's raw logits come from in ``ENASController._score``: which segment's
    LSTM output feeds which op head, which (query segment, anchor) pairs the attention scores,
    and where each score lands in the flat [T * K] logits (skip bits take ``[-q, q]``).
    Index tensors are buffers, so they follow the controller to its device."""

    def __init__(self, space: SearchSpace, plan: list[tuple[str, int, int, tuple[int, ...]]]) -> None:
        super().__init__()
        k_max = space.max_choices
        segment_of = [0] * space.num_decisions
        heads: dict[str, tuple[list[int], list[int]]] = {}
        pair_query: list[int] = []
        pair_anchor: list[int] = []
        positions: list[int] = []
        pairs: list[int] = []
        signs: list[float] = []
        num_anchors, cell_anchors, segment = 0, [], 0

        def new_anchor() -> None:
            nonlocal num_anchors
            cell_anchors.append(num_anchors)
            num_anchors += 1

        def add_pair(anchor: int, *entries: tuple[int, float]) -> None:
            pair_query.append(segment)
            pair_anchor.append(anchor)
            for position, sign in entries:
                positions.append(position)
                pairs.append(len(pair_query) - 1)
                signs.append(sign)

        for kind, t0, t1, targets in plan:
            if kind == _CELL:
                cell_anchors = []
                for _ in range(space.cell_inputs):
                    new_anchor()
                continue
            if kind == _ANCHOR:
                new_anchor()
                continue
            segment_of[t0:t1] = [segment] * (t1 - t0)
            if kind in (OP, EDGE_OP):
                seg_list, pos_list = heads.setdefault(kind, ([], []))
                seg_list.append(segment)
                pos_list.extend(t0 * k_max + c for c in range(len(space.ops)))
            elif kind == INPUT:
                for c in range(space.decisions[t0].num_choices):
                    add_pair(cell_anchors[c], (t0 * k_max + c, 1.0))
            else:  # SKIP: one score per bit, logits [-q, q]; the block's output becomes an anchor
                for t, target in zip(range(t0, t1), targets):
                    add_pair(cell_anchors[target], (t * k_max, -1.0), (t * k_max + 1, 1.0))
                new_anchor()
            segment += 1
        self.kinds = tuple(heads)

        def buffer(name: str, values: list, dtype: torch.dtype = torch.long) -> None:
            self.register_buffer(name, torch.tensor(values, dtype=dtype), persistent=False)

        buffer("segment_of", segment_of)
        for kind, (seg_list, pos_list) in heads.items():
            buffer(f"{kind}_segments", seg_list)
            buffer(f"{kind}_positions", pos_list)
        buffer("pair_query", pair_query)
        buffer("pair_anchor", pair_anchor)
        buffer("attention_positions", positions)
        buffer("attention_pairs", pairs)
        buffer("attention_signs", signs, torch.float32)

    @property
    def heads(self) -> dict[str, tuple[Tensor, Tensor]]:
        return {k: (getattr(self, f"{k}_segments"), getattr(self, f"{k}_positions")) for k in self.kinds}
