"""The RLlib side of the O(T) controller: what the EnvRunner samples and what the learner
optimises are exactly the controller's own distribution, on all three spaces."""
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from controller_policy.algorithms import PPOSearch, PPOSearchConfig, Reinforce, ReinforceConfig
from controller_policy.evaluators import Evaluation

SPACES = [("enas_macro", {"num_layers": 4}), ("enas_micro", {"num_nodes": 3}), ("nb201", {})]


class FreePPO(PPOSearch):
    def evaluate_architectures(self, archs):
        return [Evaluation(reward=float(np.mean(arch)) / self.space.max_choices) for arch in archs]


class FreeReinforce(Reinforce):
    evaluate_architectures = FreePPO.evaluate_architectures


def build(config, space, params, tmp_path, **search):
    config.search(space=space, space_params=params, evaluator=None, budget=10**6, episodes_per_iteration=6,
                  out_dir=str(tmp_path), skip_weight=0.5,
                  controller={"temperature": 2.0, "tanh_constant": 1.5}, **search)
    return config.debugging(seed=3, log_level="ERROR").build_algo()


def rewarded_batch(algorithm, rewards):
    """Sample one episode per reward, set the terminal rewards, run RLlib's learner connector:
    (the architectures, the learner, its module, the batch the loss sees)."""
    episodes = algorithm.env_runner.sample(num_episodes=len(rewards))
    for ep, r in zip(episodes, rewards):
        ep.set_rewards(new_data=np.float32(r), at_indices=-1)
    archs = torch.tensor([[int(a) for a in ep.get_actions()] for ep in episodes])
    module, batch = learner_batch(algorithm, episodes)
    return archs, algorithm.learner_group._learner, module, batch


def learner_batch(algorithm, episodes):
    """What RLlib's learner connector hands the module: one padded sequence per episode."""
    learner = algorithm.learner_group._learner
    batch = learner._learner_connector(rl_module=learner.module, batch={}, episodes=episodes, shared_data={})
    return learner.module["default_policy"], batch["default_policy"]


@pytest.mark.parametrize("space,params", SPACES, ids=[s for s, _ in SPACES])
def test_sampled_and_optimised_distribution_is_the_controllers(ray_session, tmp_path, space, params):
    algorithm = build(PPOSearchConfig(algo_class=FreePPO), space, params, tmp_path)
    try:
        algorithm.train()  # the controller moves away from its initialisation first
        episodes = algorithm.env_runner.sample(num_episodes=5)
        archs = torch.tensor([[int(a) for a in ep.get_actions()] for ep in episodes])
        # The runner records the log-prob each decision was drawn with.
        sampled = torch.tensor(np.stack([ep.get_extra_model_outputs(Columns.ACTION_LOGP) for ep in episodes]))
        module, batch = learner_batch(algorithm, episodes)  # (PPO's connector extends the episodes)
        controller = module.controller
        num_decisions = archs.shape[1]
        with torch.no_grad():
            expected = controller.evaluate(archs)
            torch.testing.assert_close(sampled, expected.log_probs, rtol=0, atol=1e-5)
            # One sequence per architecture: T decisions + PPO's artificial timestep.
            assert batch[Columns.OBS]["step"].shape[:2] == (5, num_decisions + 1)
            out = module.forward_train(batch)
            dist = module.get_train_action_dist_cls().from_logits(out[Columns.ACTION_DIST_INPUTS])
            real = batch[Columns.LOSS_MASK].bool()
            assert real.sum(1).tolist() == [num_decisions] * 5
            rows = lambda x: x[real].view(5, num_decisions, *x.shape[2:])  # noqa: E731
            torch.testing.assert_close(rows(dist.logp(batch[Columns.ACTIONS])), expected.log_probs,
                                       rtol=0, atol=1e-5)
            torch.testing.assert_close(rows(dist.entropy()), expected.entropies, rtol=0, atol=1e-5)
            torch.testing.assert_close(rows(out["skip_kl"]), expected.skip_kls, rtol=0, atol=1e-5)
            torch.testing.assert_close(rows(out[Columns.EMBEDDINGS]), expected.hidden, rtol=0, atol=1e-5)
    finally:
        algorithm.stop()


def test_sequences_must_start_at_the_first_decision(ray_session, tmp_path):
    algorithm = build(PPOSearchConfig(algo_class=FreePPO), "nb201", {}, tmp_path)
    try:
        module, batch = learner_batch(algorithm, algorithm.env_runner.sample(num_episodes=2))
        batch[Columns.OBS]["step"] = batch[Columns.OBS]["step"][:, 1:]
        batch[Columns.OBS]["prefix"] = batch[Columns.OBS]["prefix"][:, 1:]
        with pytest.raises(ValueError, match="must start at an episode's first decision"):
            module.forward_train(batch)
    finally:
        algorithm.stop()


def test_reinforce_loss_counts_only_real_decisions(ray_session, tmp_path):
    """REINFORCE's sequences are zero-padded (no artificial timestep): the loss must equal the
    per-architecture hand calculation on the controller's own log-probs."""
    algorithm = build(ReinforceConfig(algo_class=FreeReinforce), "enas_macro", {"num_layers": 3}, tmp_path)
    try:
        rewards = [0.2, 0.4, 0.6, 0.9]
        archs, learner, module, batch = rewarded_batch(algorithm, rewards)
        config = learner.config
        with torch.no_grad():
            loss = learner.compute_loss_for_module(module_id="default_policy", config=config, batch=batch,
                                                   fwd_out=module.forward_train(batch))
            expected = module.controller.evaluate(archs)
        reward = torch.tensor(rewards)
        baseline = reward.mean()  # baseline_init None: the first batch's mean (the EMA of it stays there)
        hand = (-((reward - baseline) * expected.log_prob).mean() - config.entropy_coeff * expected.entropy.mean()
                + config.skip_weight * expected.skip_kl.mean())
        torch.testing.assert_close(loss, hand, rtol=0, atol=1e-5)
    finally:
        algorithm.stop()


@pytest.mark.parametrize("baseline", ["value", "batch"])
def test_ppo_loss_is_per_architecture(ray_session, tmp_path, baseline):
    """RLlib's PPO loss with every term summed over an architecture's decisions (mean over
    architectures), plus ENAS's skip penalty per architecture: pinned by hand on a tiny batch
    (with the batch baseline there is no value loss)."""
    algorithm = build(PPOSearchConfig(algo_class=FreePPO).training(baseline=baseline), "enas_macro",
                      {"num_layers": 3}, tmp_path)
    try:
        archs, learner, module, batch = rewarded_batch(algorithm, [0.2, 0.4, 0.6, 0.9])
        config = learner.config
        with torch.no_grad():
            fwd = module.forward_train(batch)
            loss = learner.compute_loss_for_module(module_id="default_policy", config=config, batch=batch, fwd_out=fwd)
            expected = module.controller.evaluate(archs)
            real = batch[Columns.LOSS_MASK].bool()
            rows = lambda x: x[real].view(4, -1)  # noqa: E731  [architecture, decision]
            advantages, targets = rows(batch["advantages"]), rows(batch["value_targets"])
            values = rows(module.compute_values(batch, embeddings=fwd[Columns.EMBEDDINGS]))
        # the first minibatch step: the policy is the sampling one, ratio 1, nothing clipped
        value_loss = ((values - targets) ** 2).sum(1) if baseline == "value" else 0
        per_arch = -advantages.sum(1) - config.entropy_coeff * expected.entropy + config.vf_loss_coeff * value_loss
        hand = per_arch.mean() + config.skip_weight * expected.skip_kl.mean()
        torch.testing.assert_close(loss, hand, rtol=1e-5, atol=1e-5)
    finally:
        algorithm.stop()


def test_running_reward_scale_sees_only_observed_rewards(ray_session, tmp_path):
    from services.config import ConfigError, load_config

    algorithm = build(PPOSearchConfig(algo_class=FreePPO), "nb201", {}, tmp_path)
    try:
        scaled = algorithm.scaled_rewards
        assert scaled([Evaluation(50.0), Evaluation(-20.0)]) == [1.0, -0.4]
        assert scaled([Evaluation(100.0)]) == [1.0]  # a new maximum: the scale follows
        assert scaled([Evaluation(25.0)]) == [0.25]  # ... and keeps what it has seen
    finally:
        algorithm.stop()
    fixed = build(PPOSearchConfig(algo_class=FreePPO), "nb201", {}, tmp_path, reward_scale=2.0)
    try:
        assert fixed.scaled_rewards([Evaluation(25.0)]) == [50.0]
    finally:
        fixed.stop()
    with pytest.raises(ConfigError, match="'auto' was removed"):
        load_config(None, {"reward_scale": "auto", "evaluator.type": "table", "evaluator.table": "t.json"})


def test_ppo_batch_baseline_is_the_standardised_terminal_reward(ray_session, tmp_path):
    """PPO's baseline "batch" (no critic): every decision of an architecture gets the same advantage,
    its reward standardised over the batch, and no value loss is learned; "value" (the noisy-reward
    default) gives each decision R - V(s_t), which differs along an architecture."""
    rewards = [0.2, 0.4, 0.6, 0.9]
    for baseline in ("batch", "value"):
        algorithm = build(PPOSearchConfig(algo_class=FreePPO).training(baseline=baseline), "nb201", {}, tmp_path)
        try:
            _, learner, module, batch = rewarded_batch(algorithm, rewards)
            real = batch[Columns.LOSS_MASK].bool()
            advantages = batch["advantages"][real].view(len(rewards), -1)
            spread = (advantages.max(1).values - advantages.min(1).values).max().item()
            if baseline == "value":
                assert spread > 1e-3
                continue
            assert spread < 1e-6 and not learner.config.use_critic
            assert torch.equal(module.compute_values(batch), torch.zeros(batch[Columns.REWARDS].shape))
            # an increasing affine function of the reward (RLlib's GAE step standardises over all
            # rows, PPO's artificial bootstrap rows included, so the shift is not the rewards' mean)
            first, r = advantages[:, 0].double(), torch.tensor(rewards, dtype=torch.float64)
            slopes = torch.diff(first) / torch.diff(r)
            assert slopes.min() > 0 and torch.allclose(slopes, slopes[0].expand(3), rtol=1e-4)
        finally:
            algorithm.stop()
    with pytest.raises(ValueError, match="baseline must be one of value, batch"):
        PPOSearchConfig().training(baseline="ema")
    # RLlib's own switch is the one state: set either way, the module follows it
    assert PPOSearchConfig().training(use_critic=True).baseline == "value"
    assert PPOSearchConfig().training(use_critic=True).get_default_rl_module_spec().model_config["learned_value"]


def test_ppo_entropy_coefficient_falls_linearly_over_the_budget(ray_session, tmp_path):
    config = PPOSearchConfig(algo_class=FreePPO).training(entropy_coeff=0.08, entropy_coeff_final=0.0)
    config.search(space="nb201", evaluator=None, budget=24, episodes_per_iteration=6, out_dir=str(tmp_path))
    algorithm = config.debugging(seed=3, log_level="ERROR").build_algo()
    try:
        coeffs = [algorithm.train()["learners"]["default_policy"]["curr_entropy_coeff"] for _ in range(4)]
        # after k of 4 iterations, k quarters of the budget's decisions are sampled
        assert coeffs == pytest.approx([0.06, 0.04, 0.02, 0.0], abs=1e-6)
    finally:
        algorithm.stop()
    assert PPOSearchConfig().training(entropy_coeff=0.08).entropy_schedule() == 0.08


@pytest.mark.parametrize("config_class,algo_class", [(PPOSearchConfig, FreePPO), (ReinforceConfig, FreeReinforce)],
                         ids=["ppo", "reinforce"])
def test_elite_replay_learns_from_the_best_architectures_found_before(ray_session, tmp_path, config_class,
                                                                      algo_class):
    """``elite_replay`` K: every update also sees the K best architectures of earlier batches (not
    those of its own batch), taken as the current policy would take them, with their rewards scaled
    as the batch's; the list survives a checkpoint."""
    algorithm = build(config_class(algo_class=algo_class).training(elite_replay=2), "nb201", {}, tmp_path)
    updates, update = [], algorithm._update_controller

    def record(episodes):
        controller = algorithm.env_runner.module.controller
        archs = [[int(a) for a in ep.get_actions()] for ep in episodes]
        with torch.no_grad():
            current = controller.evaluate(archs).log_probs
        updates.append({"archs": archs, "rewards": [float(ep.get_rewards()[-1]) for ep in episodes],
                        "logp": torch.tensor(np.stack([ep.get_extra_model_outputs(Columns.ACTION_LOGP)
                                                       for ep in episodes])),
                        "current": current, "scale": algorithm.max_abs_reward})
        update(episodes)

    algorithm._update_controller = record
    try:
        for _ in range(4):
            algorithm.train()
        assert [len(u["archs"]) for u in updates] == [6, 8, 8, 8]  # 6 sampled, then 2 elites each
        raw = lambda arch: float(np.mean(arch)) / 5  # noqa: E731  (FreePPO's reward)
        for i in range(1, 4):
            fresh, elites = updates[i]["archs"][:6], updates[i]["archs"][6:]
            before = {tuple(a) for u in updates[:i] for a in u["archs"][:6]} - {tuple(a) for a in fresh}
            best = sorted((raw(a) for a in before), reverse=True)[:2]
            assert [raw(a) for a in elites] == pytest.approx(best)
            assert all(tuple(a) in before for a in elites) and len({tuple(a) for a in elites}) == 2
            assert updates[i]["rewards"][6:] == pytest.approx([raw(a) / updates[i]["scale"] for a in elites])
            # drawn-with log-probs of a replayed architecture are the current policy's
            torch.testing.assert_close(updates[i]["logp"][6:], updates[i]["current"][6:], rtol=0, atol=1e-5)
        resumed = build(config_class(algo_class=algo_class).training(elite_replay=2), "nb201", {}, tmp_path)
        try:
            resumed.set_state(algorithm.get_state())
            assert resumed.elites == algorithm.elites and len(algorithm.elites) == 2 + 6
        finally:
            resumed.stop()
        # an architecture of the current batch is never replayed beside itself
        algorithm.elites = {}
        a, b, c = [0] * 6, [1] * 6, [2] * 6
        assert algorithm._elite_episodes([a, b, c], [Evaluation(0.1), Evaluation(0.9), Evaluation(0.5)]) == []
        replayed = algorithm._elite_episodes([b], [Evaluation(0.9)])
        assert [[int(x) for x in ep.get_actions()] for ep in replayed] == [c, a]
    finally:
        algorithm.stop()


def test_elite_replay_is_refused_where_it_cannot_apply():
    from services.config import ConfigError, load_config

    table = {"evaluator.type": "table", "evaluator.table": "t.json"}
    with pytest.raises(ConfigError, match=r"ppo.elite_replay must be an integer >= 0"):
        load_config(None, {**table, "ppo.elite_replay": -1})
    with pytest.raises(ConfigError, match=r"reinforce.elite_replay must be an integer"):
        load_config(None, {**table, "algo": "reinforce", "reinforce.elite_replay": 1.5})
    with pytest.raises(ValueError, match="^elite_replay must be an integer >= 0"):
        PPOSearchConfig().training(elite_replay=-2).search(evaluator=None).validate()
