import json

import pytest

from controller_policy.env import ArchitectureEnv
from controller_policy.evaluators import TableEvaluator
from controller_policy.spaces import EnasMicroSpace, NB201Space

EX = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def write(tmp_path, obj, name="t.json"):
    path = tmp_path / name
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_env_episode_masks_and_terminal_reward(tmp_path):
    space = NB201Space()
    evaluator = TableEvaluator(space, write(tmp_path, {EX: {"valid": 91.2, "test": 93.9}}), "valid")
    env = ArchitectureEnv({"space": "nb201"}, evaluator=evaluator)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    arch = space.from_string(EX)
    for t, a in enumerate(arch):
        assert obs["step"][0] == t and obs["prefix"][:t].tolist() == arch[:t]
        obs, reward, terminated, truncated, info = env.step(a)
        assert not truncated and terminated == (t == len(arch) - 1)
        assert reward == (91.2 if terminated else 0.0)
    assert info == {"arch": arch, "metrics": {"valid": 91.2, "test": 93.9}}
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)


def test_env_masks_depend_on_position_and_reject_illegal_actions():
    env = ArchitectureEnv({"space": "enas_micro", "space_params": {"num_nodes": 2}})
    obs, _ = env.reset()
    assert obs["action_mask"].tolist() == [1, 1, 0, 0, 0]  # node 0 chooses among the 2 cell inputs
    with pytest.raises(ValueError, match=r"illegal action 3 at decision 0 \(normal/node0/input_x\); legal: \[0, 1\]"):
        env.step(3)
    for a in [0, 1, 4, 4]:
        obs, *_ = env.step(a)
    assert obs["action_mask"].tolist() == [1, 1, 1, 0, 0]  # node 1 may also take node 0
    assert env.action_space.n == EnasMicroSpace(2).max_choices


def test_env_without_evaluator_leaves_reward_to_the_search():
    env = ArchitectureEnv({"space": "nb201"})
    env.reset()
    for a in [0, 1, 2, 3, 4]:
        env.step(a)
    _, reward, terminated, _, info = env.step(0)
    assert terminated and reward == 0.0 and info == {"arch": [0, 1, 2, 3, 4, 0]}


def test_table_evaluator_numbers_objects_and_canonical_keys(tmp_path):
    space = NB201Space()
    other = space.to_string([1, 1, 1, 1, 1, 1])
    path = write(tmp_path, {EX: {"valid": 91.2, "test": 93.9}, other: {"valid": 50.0, "test": 49.0}})
    evals = TableEvaluator(space, path, "test").evaluate([space.from_string(EX), [1] * 6])
    assert [e.reward for e in evals] == [93.9, 49.0] and evals[0].metrics == {"valid": 91.2, "test": 93.9}
    plain = TableEvaluator(space, write(tmp_path, {EX: 0.5}, "p.json"))
    assert plain.evaluate([space.from_string(EX)])[0].reward == 0.5
    with pytest.raises(KeyError, match=r"not in table"):
        plain.evaluate([[0] * 6])
    macro_key = TableEvaluator(__import__("controller_policy").build_space("enas_macro", num_layers=2),
                               write(tmp_path, {"1 0 1": 0.7}, "m.json"))  # flat ENAS form, re-keyed
    assert macro_key.lookup([1, 0, 1]) == {"reward": 0.7}


@pytest.mark.parametrize("content,message", [
    ("{not json", "is not valid JSON"),
    ("[1, 2]", "must be a non-empty JSON object"),
    ({}, "must be a non-empty JSON object"),
    ({"|foo~0|": 1.0}, "entry 1 of 1: its key is not a nb201 architecture string"),
    ({EX: "high"}, "value must be a number or an object"),
    ({EX: {"valid": "x"}}, "metric 1 of 1 is not a number"),
    ({EX: {"test": 1.0}}, r"has no metric named 'valid' \(it has 'test'\)"),
    ({EX: {"valid": float("nan")}}, "must be finite"),
])
def test_table_evaluator_malformed_files(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        TableEvaluator(NB201Space(), write(tmp_path, content), "valid")
    with pytest.raises(ValueError, match="cannot read table"):
        TableEvaluator(NB201Space(), tmp_path / "absent.json", "valid")


def test_table_without_reward_key_needs_a_single_metric(tmp_path):
    with pytest.raises(ValueError, match=r"has 2 metrics \(.valid., .test.\): name the reward with evaluator.reward_key"):
        TableEvaluator(NB201Space(), write(tmp_path, {EX: {"valid": 1.0, "test": 2.0}}))


@pytest.mark.parametrize("content", [
    {"aws_secret_access_key": "s3cr3t-value"},              # a credentials file named as a table
    {EX: {"s3cr3t-name": "s3cr3t-value"}},
    {EX: {"aws_secret_access_key": 1.0, "s3cr3t": "s3cr3t-value"}},
])
def test_table_errors_never_quote_the_file(tmp_path, content):
    """The service names table paths for clients: an error must not become a way to read a file."""
    with pytest.raises(ValueError) as info:
        TableEvaluator(NB201Space(), write(tmp_path, content), "valid")
    assert "s3cr3t" not in str(info.value) and "aws" not in str(info.value), str(info.value)


def test_a_table_entry_names_its_metrics_for_the_reward_key(tmp_path):
    """Only an entry that is a table's (an architecture of the space, numbers only) has its metric
    names shown: the user picks --reward-key among them."""
    with pytest.raises(ValueError, match=r"no metric named 'accuracy' \(it has 'valid', 'test'\)"):
        TableEvaluator(NB201Space(), write(tmp_path, {EX: {"valid": 1.0, "test": 2.0}}), "accuracy")


def test_stacked_observations_are_what_stepping_sees():
    """ArchitectureEnvRunner lays episodes out from ``observations``: they must equal the env's own steps."""
    from controller_policy.env import ArchitectureEnv

    env = ArchitectureEnv({"space": "enas_micro", "space_params": {"num_nodes": 2}})
    arch = [0, 1, 2, 3, 1, 2, 4, 0] * 2
    stacked = env.observations(arch)
    obs, _ = env.reset()
    for t, action in enumerate(arch + [None]):
        for key in obs:
            assert (obs[key] == stacked[key][t]).all(), (t, key)
        if action is not None:
            obs, *_ = env.step(action)
