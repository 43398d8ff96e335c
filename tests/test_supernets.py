import numpy as np
import pytest
import torch

from controller_policy import build_space
from supernet_worker.supernets import SupernetConfig, build_child, build_supernet, load_shared_weights

CASES = [
    ("enas_macro", {"num_layers": 6}, SupernetConfig(channels=8)),
    ("enas_macro", {"num_layers": 2}, SupernetConfig(channels=8)),
    ("enas_micro", {"num_nodes": 3}, SupernetConfig(channels=6, num_cells=1)),
    ("nb201", {}, SupernetConfig(channels=8, num_cells=1)),
]
IDS = [f"{name}-{params}" for name, params, _ in CASES]


@pytest.mark.parametrize("name,params,config", CASES, ids=IDS)
@pytest.mark.parametrize("shape", [(3, 32), (1, 28)], ids=["rgb32", "gray28"])
def test_forward_backward_random_architectures(name, params, config, shape):
    torch.manual_seed(0)
    channels, size = shape
    space = build_space(name, **params)
    net = build_supernet(space, config, in_channels=channels, num_classes=10)
    x, y = torch.randn(4, channels, size, size), torch.randint(0, 10, (4,))
    rng = np.random.default_rng(0)
    for _ in range(4):
        arch = space.sample(rng)
        net.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x, arch), y)
        loss.backward()
        assert torch.isfinite(loss)
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        # only the sampled path is run: some candidate weights get no gradient
        assert len(grads) < len(list(net.parameters()))


@pytest.mark.parametrize("name,params,config", CASES, ids=IDS)
def test_child_with_copied_weights_matches_supernet(name, params, config):
    torch.manual_seed(0)
    space = build_space(name, **params)
    net = build_supernet(space, config, 3, 10)
    x = torch.randn(6, 3, 32, 32)
    rng = np.random.default_rng(1)
    for _ in range(3):
        arch = space.sample(rng)
        child = build_child(space, arch, config, 3, 10)
        assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in net.parameters())
        load_shared_weights(child, net)
        torch.testing.assert_close(child(x), net(x, arch))
        net.eval(), child.eval()
        torch.testing.assert_close(child(x), net(x, arch))
        net.train()


def test_child_is_independent_and_fixed():
    space = build_space("nb201")
    config = SupernetConfig(channels=8)
    arch = space.from_string("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_1x1~1|none~2|")
    child = build_child(space, arch, config, 3, 10)
    names = {k for k, _ in child.named_parameters()}
    assert any("edges.0.3" in k for k in names) and not any("edges.0.2" in k for k in names)
    with pytest.raises(ValueError, match="fixed to another architecture"):
        child(torch.randn(1, 3, 32, 32), [0] * 6)
    with pytest.raises(ValueError, match="needs an architecture"):
        build_supernet(space, config, 3, 10)(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="decision 0"):
        build_child(space, [9] * 6, config, 3, 10)
    with pytest.raises(ValueError, match="supernet.channels"):
        SupernetConfig(channels=1)


@pytest.mark.parametrize("name,params,config", CASES, ids=IDS)
def test_path_dropout_where_the_settings_say_and_a_clear_refusal_elsewhere(name, params, config):
    """PATH_DROPOUT_SPACES (checked by the config before torch loads) matches the networks: a
    supernet and a retrained child of those spaces drop paths in training; the others refuse."""
    from supernet_worker.settings import PATH_DROPOUT_SPACES

    torch.manual_seed(0)
    space = build_space(name, **params)
    arch = space.sample(np.random.default_rng(1))
    for net in (build_supernet(space, config, 3, 10), build_child(space, arch, config, 3, 10)):
        net.set_drop_path(0.0)  # always allowed
        if name not in PATH_DROPOUT_SPACES:
            with pytest.raises(ValueError, match=f"the {name} network has no droppable paths"):
                net.set_drop_path(0.3)
            continue
        x = torch.randn(16, 3, 32, 32)
        net.eval()
        with torch.no_grad():
            plain = net(x, arch)
            net.set_drop_path(0.5)
            assert torch.equal(net(x, arch), plain)  # scoring sees every path
            net.train()
            outs = [net(x, arch) for _ in range(3)]
        outs = [o[0] if isinstance(o, tuple) else o for o in outs]
        assert not all(torch.equal(outs[0], o) for o in outs[1:])  # training drops
