import math
from pathlib import Path

import numpy as np
import pytest
import torch

from controller_policy import ControllerConfig, ENASController, build_space

SPACES = [("enas_macro", {"num_layers": 6}), ("enas_micro", {"num_nodes": 3}), ("nb201", {})]


@pytest.fixture(params=SPACES, ids=[s for s, _ in SPACES])
def controller(request):
    torch.manual_seed(0)
    name, params = request.param
    return ENASController(build_space(name, **params))


def test_samples_are_legal(controller):
    space = controller.space
    out = controller.sample(64, torch.Generator().manual_seed(1))
    for arch in out.actions.tolist():
        assert space.validate(arch) == arch
    assert torch.isfinite(out.log_probs).all() and (out.entropies >= 0).all()


def test_reported_log_prob_equals_evaluate(controller):
    out = controller.sample(32, torch.Generator().manual_seed(2))
    again = controller.evaluate(out.actions)
    torch.testing.assert_close(out.log_prob, again.log_prob, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.entropy, again.entropy, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.skip_kl, again.skip_kl, rtol=0, atol=1e-6)
    assert torch.allclose(controller.log_prob(out.actions[:1].tolist()), again.log_prob[:1], atol=1e-5)


def test_log_probs_are_a_distribution_on_nb201():
    controller = ENASController(build_space("nb201"), ControllerConfig(tanh_constant=2.5, temperature=0.7))
    space = controller.space
    rng = np.random.default_rng(0)
    archs = torch.tensor([space.sample(rng) for _ in range(4)])
    # Sum over one decision's choices (others fixed) must be 1: teacher forcing is causal.
    for t in range(space.num_decisions):
        variants = archs.repeat_interleave(space.max_choices, 0)
        variants[:, t] = torch.arange(space.max_choices).repeat(len(archs))
        step_lp = controller.evaluate(variants).log_probs[:, t].view(len(archs), -1)
        torch.testing.assert_close(step_lp.exp().sum(1), torch.ones(len(archs)))


def test_illegal_actions_have_zero_probability():
    controller = ENASController(build_space("enas_micro", num_nodes=2))
    arch = controller.sample_archs(1, torch.Generator().manual_seed(0))[0]
    arch[0] = 4  # node0 input: only 0 or 1 exist
    assert controller.log_prob([arch]).item() == -math.inf


def test_seeded_sampling_is_reproducible(controller):
    a = controller.sample_archs(8, torch.Generator().manual_seed(7))
    b = controller.sample_archs(8, torch.Generator().manual_seed(7))
    c = controller.sample_archs(8, torch.Generator().manual_seed(8))
    assert a == b and a != c


def test_gradients_reach_every_parameter_and_learning_moves_the_distribution():
    torch.manual_seed(0)
    controller = ENASController(build_space("nb201"))
    opt = torch.optim.Adam(controller.parameters(), lr=0.05)
    target = torch.tensor([[3, 3, 3, 3, 3, 3]])
    before = controller.log_prob(target).item()
    for _ in range(30):
        loss = -controller.log_prob(target).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert controller.log_prob(target).item() > before + 3


def test_skip_penalty_pulls_skip_density_to_target():
    torch.manual_seed(0)
    controller = ENASController(build_space("enas_macro", num_layers=6), ControllerConfig(skip_target=0.4))
    # lr 0.05 can overshoot into tanh saturation, where the gradient vanishes, on some sample streams.
    opt = torch.optim.Adam(controller.parameters(), lr=0.02)
    for _ in range(60):
        out = controller.sample(16)
        opt.zero_grad()
        out.skip_kl.mean().backward()
        opt.step()
    skip_steps = [t for t, d in enumerate(controller.space.decisions) if d.kind == "skip"]
    density = controller.sample(256).actions[:, skip_steps].float().mean().item()
    assert abs(density - 0.4) < 0.08


def test_config_validation():
    with pytest.raises(ValueError, match="controller.skip_target"):
        ControllerConfig(skip_target=1.5)
    with pytest.raises(ValueError, match="controller.hidden_size"):
        ControllerConfig(hidden_size=0)
    with pytest.raises(ValueError, match="expected 6 decisions"):
        ENASController(build_space("nb201")).evaluate([[0, 1, 2]])


ENAS_MICRO = ControllerConfig(temperature=5.0, tanh_constant=1.1, op_tanh_reduce=2.5, op_bias=True,
                              zero_input_anchors=True)


def test_enas_micro_op_head_is_enas_s():
    """With every weight zero but the op bias, the LSTM outputs 0 and each op decision's logits are
    ENAS micro's: (1.1 / 2.5) * tanh([10, 10, 0, 0, 0] / 5), plus [.25, .25, -.25, -.25, -.25] in the
    first (normal) cell only."""
    controller = ENASController(build_space("enas_micro", num_nodes=2), ENAS_MICRO)
    bias = controller.heads["op"].bias
    assert bias.tolist() == [10.0, 10.0, 0.0, 0.0, 0.0]
    with torch.no_grad():
        for name, p in controller.named_parameters():
            if name != "heads.op.bias":
                p.zero_()
        out = controller.evaluate([[0, 1, 0, 4, 2, 0, 3, 1] * 2])
    squashed = 1.1 / 2.5 * torch.tanh(torch.tensor([10.0, 10, 0, 0, 0]) / 5.0)
    fixed = torch.tensor([0.25, 0.25, -0.25, -0.25, -0.25])
    for t, d in enumerate(controller.space.decisions):
        if d.kind == "op":
            expected = squashed + fixed if d.cell == 0 else squashed
            torch.testing.assert_close(out.logits[0, t, :5], expected)


def test_enas_micro_cell_inputs_feed_zeros():
    """Selecting cell input 0 or 1 feeds the same (zero) vector to the LSTM, so what follows does not
    depend on which; without the option it does."""
    torch.manual_seed(0)
    space = build_space("enas_micro", num_nodes=2)
    for zero, same in ((True, True), (False, False)):
        controller = ENASController(space, ControllerConfig(zero_input_anchors=zero))
        a, b = [0] * 16, [0] * 16
        b[0] = 1  # node 0's input_x: cell input 1 instead of 0
        with torch.no_grad():
            la, lb = controller.evaluate([a]).logits[0, 1:4], controller.evaluate([b]).logits[0, 1:4]
        assert torch.allclose(la, lb) == same


def test_enas_micro_options_keep_sampling_and_scoring_one_distribution():
    controller = ENASController(build_space("enas_micro", num_nodes=3), ENAS_MICRO)
    out = controller.sample(32, torch.Generator().manual_seed(2))
    again = controller.evaluate(out.actions)
    torch.testing.assert_close(out.log_prob, again.log_prob, rtol=0, atol=1e-5)
    # the bias [10, 10, 0, 0, 0] makes the two separable convolutions likelier than the other
    # three ops together (0.63 in the normal cell, 0.50 in the reduction cell): 0.57 against 0.4 uniform
    with torch.no_grad():
        many = controller.sample(2000, torch.Generator().manual_seed(3))
    ops = many.actions[:, [t for t, d in enumerate(controller.space.decisions) if d.kind == "op"]]
    assert abs((ops < 2).float().mean().item() - 0.566) < 0.02


def test_the_enas_micro_preset_turns_enas_s_options_on():
    from services.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "enas-micro.yaml", {"data.source": "synthetic"})
    c = cfg.controller
    assert (c.op_tanh_reduce, c.op_bias, c.zero_input_anchors, c.temperature, c.tanh_constant) == (2.5, True, True, 5.0, 1.1)
