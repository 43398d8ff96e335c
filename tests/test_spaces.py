import itertools
import json

import numpy as np
import pytest

from controller_policy.spaces import (
    EDGE_OP, INPUT, OP, SKIP, EnasMacroSpace, EnasMicroSpace, NB201Space, build_space, load_arch_file, parse_arch,
)

SPACES = [EnasMacroSpace(), EnasMacroSpace(num_layers=3), EnasMicroSpace(), EnasMicroSpace(num_nodes=2), NB201Space()]
NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.name}-{s.num_decisions}")
def test_masks_match_decisions(space):
    for t, d in enumerate(space.decisions):
        mask = space.mask(t)
        assert mask.shape == (space.max_choices,)
        assert mask.sum() == d.num_choices and mask[: d.num_choices].all()


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.name}-{s.num_decisions}")
def test_round_trips_and_legal_samples(space):
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        assert space.validate(arch) == arch
        for t, a in enumerate(arch):
            assert space.mask(t, arch[:t])[a]
        assert space.from_string(space.to_string(arch)) == arch
        obj = json.loads(json.dumps(space.to_json(arch)))
        assert space.from_json(obj) == arch
        assert parse_arch(space, obj) == parse_arch(space, space.to_string(arch)) == arch


@pytest.mark.parametrize("space", SPACES, ids=lambda s: f"{s.name}-{s.num_decisions}")
def test_balanced_samples_train_every_choice_equally_often(space):
    archs = space.sample_balanced(np.random.default_rng(0), 23)
    for arch in archs.tolist():
        assert space.validate(arch) == arch
    for t, d in enumerate(space.decisions):
        counts = np.bincount(archs[:, t], minlength=d.num_choices)
        assert counts.max() - counts.min() <= 1, (t, counts)
    assert len({tuple(a) for a in archs.tolist()}) > 1  # decisions shuffled independently, not in lockstep
    assert not np.array_equal(archs, space.sample_balanced(np.random.default_rng(1), 23))


def test_macro_layout_and_size():
    space = EnasMacroSpace(num_layers=12)
    assert space.num_decisions == 12 + sum(range(12))
    kinds = [d.kind for d in space.decisions[:4]]
    assert kinds == [OP, OP, SKIP, OP]  # layer0 op; layer1 op, skip0; layer2 op ...
    assert space.size() == 6**12 * 2**66
    small = EnasMacroSpace(num_layers=3)
    assert small.to_string(small.from_string("1 0 1 3 0 1")) == "1 | 0 1 | 3 0 1"
    assert small.to_json([1, 0, 1, 3, 0, 1])["layers"][2] == {"op": "sep_conv_5x5", "skips": [0, 1]}


def test_micro_layout_and_enas_order():
    space = EnasMicroSpace(num_nodes=2)
    assert [d.kind for d in space.decisions[:4]] == [INPUT, INPUT, OP, OP]
    assert [d.num_choices for d in space.decisions if d.kind == INPUT] == [2, 2, 3, 3, 2, 2, 3, 3]
    assert space.size() == (2 * 2 * 25 * 3 * 3 * 25) ** 2
    # ENAS fixed_arc order per node is x_id x_op y_id y_op
    arch = space.from_string("0 4 1 0 2 1 0 3 1 2 1 2 2 0 0 4")
    js = space.to_json(arch)
    assert js["normal"][0] == {"inputs": [0, 1], "ops": ["identity", "sep_conv_3x3"]}
    assert js["reduce"][1] == {"inputs": [2, 0], "ops": ["sep_conv_3x3", "identity"]}
    assert space.to_string(arch) == "0 4 1 0 | 2 1 0 3 || 1 2 1 2 | 2 0 0 4"


def test_nb201_canonical_string_exact():
    space = NB201Space()
    arch = space.from_string(NB201_EXAMPLE)
    assert arch == [3, 3, 4, 1, 3, 1]
    assert space.to_string(arch) == NB201_EXAMPLE
    assert space.size() == 5**6
    assert all(d.kind == EDGE_OP for d in space.decisions)
    assert space.to_json(arch)["nodes"][1] == [["nor_conv_3x3", 0], ["avg_pool_3x3", 1]]


def test_size_matches_enumeration_on_a_tiny_space():
    space = EnasMicroSpace(num_nodes=1)
    legal = [a for a in itertools.product(*(range(space.max_choices),) * space.num_decisions)
             if all(space.mask(t)[v] for t, v in enumerate(a))]
    assert len(legal) == space.size()


@pytest.mark.parametrize("space,bad,message", [
    (NB201Space(), "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|conv_7x7~1|skip_connect~2|",
     "unknown op 'conv_7x7'"),
    (NB201Space(), "|nor_conv_3x3~0|+|nor_conv_3x3~1|avg_pool_3x3~1|+|skip_connect~0|none~1|none~2|", "'op~0'"),
    (NB201Space(), "|none~0|+|none~0|none~1|", "3 '+'-separated nodes"),
    (NB201Space(), [0, 1, 2, 3, 4, 5], "decision 5 (edge2->3) has value 5; allowed values are 0 (none)"),
    (EnasMacroSpace(3), "1 | 0 2 | 3 0 1", "decision 2 (layer1/skip0) has value 2; allowed values are 0, 1"),
    (EnasMacroSpace(3), "1 | 0 1", "expected 6 decisions, got 3"),
    (EnasMacroSpace(3), "1 | x 1 | 3 0 1", "token 'x'"),
    (EnasMicroSpace(2), "0 0 5 0 | 0 0 0 0 || 0 0 0 0 | 0 0 0 0", "decision 1 (normal/node0/input_y) has value 5"),
    (EnasMicroSpace(2), {"space": "nb201", "nodes": []}, "belongs to space 'nb201'"),
    (EnasMicroSpace(2), {"normal": "x"}, "'normal' must be a list of 2 nodes"),
    (EnasMacroSpace(3), {"layers": [{"op": "conv_3x3", "skips": []}] * 3}, "layers[1].skips must be a list of 1 bits"),
    (EnasMacroSpace(3), 3.5, "cannot read an architecture from float"),
])
def test_invalid_architectures_rejected_with_position(space, bad, message):
    with pytest.raises(ValueError) as err:
        parse_arch(space, bad)
    assert message in str(err.value)


def test_build_space_errors_and_params():
    with pytest.raises(ValueError, match="unknown search space 'nope'"):
        build_space("nope")
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        build_space("enas_macro", num_layers=0)
    with pytest.raises(ValueError, match="bad parameters"):
        build_space("nb201", num_layers=3)
    macro = build_space("enas_macro", num_layers=4, ops=["conv_3x3", "max_pool_3x3"])
    assert macro.ops == ("conv_3x3", "max_pool_3x3")
    assert build_space("enas_macro", **macro.params()).decisions == macro.decisions


def test_load_arch_file(tmp_path):
    space = NB201Space()
    (tmp_path / "a.json").write_text(json.dumps({"arch": NB201_EXAMPLE, "reward": 0.9}))
    (tmp_path / "b.txt").write_text(NB201_EXAMPLE + "\n")
    (tmp_path / "c.json").write_text(json.dumps(space.to_json(space.from_string(NB201_EXAMPLE))))
    for name in ("a.json", "b.txt", "c.json"):
        assert space.to_string(load_arch_file(space, tmp_path / name)) == NB201_EXAMPLE
    (tmp_path / "bad.json").write_text("{\"layers\": 3}")
    with pytest.raises(ValueError, match="bad.json"):
        load_arch_file(space, tmp_path / "bad.json")
    with pytest.raises(ValueError, match="cannot read architecture file"):
        load_arch_file(space, tmp_path / "missing.json")
