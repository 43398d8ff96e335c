"""How the shared weights score children: minibatches per reward, the same minibatches for one
controller iteration, batch-norm re-calibration per child, and uniform warm-up epochs."""
import csv
import json
import math

import pytest
import torch

from controller_policy import build_space
from services.config import ConfigError
from supernet_worker.data import Batches, DataConfig
from supernet_worker.supernets import SupernetConfig, build_supernet, recalibrated_batch_norm
from supernet_worker.worker import ScoringConfig, SupernetWorker, WorkerSpec
from tests.test_weight_sharing import TINY_DATA, tiny_config

ARCH = [3, 1, 2, 4, 3, 0]  # nb201: convolutions, pooling, skip and none on the six edges


def _net_and_batches():
    torch.manual_seed(0)
    space = build_space("nb201")
    net = build_supernet(space, SupernetConfig(channels=4), 3, 10)
    net.train()
    for _ in range(3):  # move the weights away from their init so statistics matter
        x = torch.randn(16, 3, 8, 8) * 2 + 1
        torch.nn.functional.cross_entropy(net(x, ARCH), torch.randint(0, 10, (16,))).backward()
        with torch.no_grad():
            for p in net.parameters():
                if p.grad is not None:
                    p -= 0.5 * p.grad
                    p.grad = None
    calibration = [(torch.randn(32, 3, 8, 8) * 2 + 1, torch.zeros(32, dtype=torch.long)) for _ in range(2)]
    return net, calibration


def test_recalibrated_batch_norm_scores_each_image_alone_and_leaves_the_net_as_it_was():
    net, calibration = _net_and_batches()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(6, 3, 8, 8) * 2 + 1
    net.eval()
    with torch.no_grad():
        batch_stats = net(x, ARCH)
        with recalibrated_batch_norm(net, ARCH, calibration):
            assert not net.training
            together = net(x, ARCH)
            alone = torch.cat([net(x[i : i + 1], ARCH) for i in range(len(x))])
            on_calibration = net(calibration[0][0], ARCH)
        after = net(x, ARCH)
    # running statistics: an image's logits no longer depend on the rest of its batch ...
    assert torch.allclose(together, alone, atol=1e-5)
    assert not torch.allclose(together, batch_stats, atol=1e-3)
    # ... and on the calibration data they are close to its own train-mode statistics (the average
    # of the two batches' statistics, unbiased variances, is not quite the pooled one)
    net.train()
    with torch.no_grad():
        own = net(torch.cat([b for b, _ in calibration]), ARCH)[:32]
    net.eval()
    assert torch.allclose(on_calibration, own, rtol=0.05, atol=0.05), (on_calibration - own).abs().max()
    # afterwards: batch statistics again, no buffers added, weights untouched
    assert torch.equal(after, batch_stats)
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(not m.track_running_stats and m.running_mean is None and m.momentum == 0.1
               for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_fixed_batches_are_the_same_on_every_shard_and_leave_the_position_alone():
    x = torch.randint(0, 255, (40, 4, 4, 3), dtype=torch.uint8).numpy()
    y = torch.arange(40).numpy()
    a = Batches(x, y, 8, [0.5] * 3, [0.25] * 3, shuffle=True, augment=True, seed=1, shard=(0, 2))
    b = Batches(x, y, 8, [0.5] * 3, [0.25] * 3, shuffle=True, augment=True, seed=2, shard=(1, 2))
    a.next_batch()
    position, augmentation = a.state_dict()["pos"], a.generator.get_state()
    first, second = a.fixed_batches(7, 3), b.fixed_batches(7, 3)
    assert len(first) == 3 and all(len(yb) == 8 for _, yb in first)
    assert all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in zip(first, second))
    assert len({int(i) for _, yb in first for i in yb}) == 24  # without replacement
    assert not torch.equal(a.fixed_batches(8, 1)[0][1], first[0][1])
    assert a.state_dict()["pos"] == position and torch.equal(a.generator.get_state(), augmentation)
    with pytest.raises(ValueError, match="6 minibatches of 8 need 48 images; the split holds 40"):
        a.fixed_batches(0, 6)


def _worker(scoring: ScoringConfig, drop_path: float = 0.0) -> SupernetWorker:
    spec = WorkerSpec(space="nb201", supernet=SupernetConfig(channels=4), scoring=scoring,
                      data=DataConfig(**{**TINY_DATA, "eval_batch_size": 8}), drop_path=drop_path)
    return SupernetWorker(spec, rank=0)


def test_nb201_path_dropout_zeroes_whole_samples_of_an_edge_in_training_only():
    net, _ = _net_and_batches()
    cell = net.stages[0][0]
    h = torch.randn(64, 4, 8, 8)  # what the first cell receives (4 channels)
    net.set_drop_path(0.5)
    with torch.no_grad():
        torch.manual_seed(2)
        dropped = cell._edge(0, "3", h)  # edge 0 is a 3x3 convolution in ARCH
        intact = cell.edges[0]["3"](h)
        lost = dropped.flatten(1).abs().sum(1) == 0
        assert 10 < int(lost.sum()) < 54  # about half of 64 samples lose the path ...
        assert torch.allclose(dropped[~lost], 2 * intact[~lost])  # ... the others are scaled by 1 / keep
        assert torch.equal(cell._edge(1, "1", h), h)  # a skip connection is never dropped
        assert not torch.equal(net(h.new_ones(8, 3, 8, 8), ARCH), net(h.new_ones(8, 3, 8, 8), ARCH))
        net.eval()  # scoring: every path, deterministic
        assert torch.allclose(cell._edge(0, "3", h), intact)
        assert torch.equal(net(h.new_ones(8, 3, 8, 8), ARCH), net(h.new_ones(8, 3, 8, 8), ARCH))


def test_worker_drops_paths_while_training_and_scores_with_every_path(ray_session):
    worker = _worker(ScoringConfig(), drop_path=0.3)
    seen = []  # the cell's drop probability at every forward
    cell = worker.net.stages[0][0]
    cell.register_forward_hook(lambda m, i, o: seen.append((m.training, m.drop_prob)))
    worker.train(until_step=2, steps_per_epoch=2)
    assert seen == [(True, 0.3)] * 2
    seen.clear()
    worker.evaluate([ARCH], full=True)
    assert seen and all(p == (False, 0.0) for p in seen)
    with pytest.raises(ValueError, match=r"drop_path must lie in \[0, 1\), got 1.0"):
        WorkerSpec(space="nb201", drop_path=1.0)


def test_worker_scores_on_several_or_the_same_minibatches(ray_session):
    worker = _worker(ScoringConfig(reward_batches=3))
    worker.train(until_step=2, steps_per_epoch=2)
    valid = worker.splits.valid

    def consumed() -> int:  # images next_batch has handed out (passes of 32 images)
        state = valid.state_dict()
        return (state["passes"] - 1) * 32 + state["pos"]

    worker.evaluate([ARCH])
    start = consumed()
    worker.evaluate([ARCH, ARCH])  # each architecture its own three minibatches
    assert consumed() - start == 6 * 8
    # the same minibatches for every architecture of a call: equal architectures, equal rewards,
    # and the accuracy is over 3 x 8 images
    rewards = worker.evaluate([ARCH, [0] * 6, ARCH], batch_seed=11)
    assert rewards[0] == rewards[2] and all(r * 24 == round(r * 24) for r in rewards)
    assert worker.evaluate([ARCH], batch_seed=11) == rewards[:1]
    assert consumed() - start == 6 * 8
    full = worker.evaluate([ARCH], full=True)[0]
    assert 0.0 <= full <= 1.0


def test_worker_recalibrates_each_child_only_when_asked(ray_session):
    plain, calibrated = _worker(ScoringConfig()), _worker(ScoringConfig(bn_calibration_batches=2))
    archs = [ARCH, [3] * 6, [1] * 6]
    for w in (plain, calibrated):
        w.train(until_step=3, steps_per_epoch=3)
        stem_bn = w.net.stem[1]
        w.seen = []  # (train mode?, running statistics?) of every pass through the stem's batch norm
        stem_bn.register_forward_hook(lambda m, i, o, w=w: w.seen.append((m.training, m.running_mean is not None)))
        keys = set(w.net.state_dict())
        accs = w.evaluate(archs, full=True)
        assert all(0.0 <= r <= 1.0 for r in accs) and set(w.net.state_dict()) == keys
    valid_batches = len(plain.splits.valid)
    assert plain.seen == [(False, False)] * (3 * valid_batches)
    # per child: two calibration passes in train mode, then the validation split with those statistics
    assert calibrated.seen == ([(True, True)] * 2 + [(False, True)] * valid_batches) * 3
    assert calibrated.evaluate(archs, full=True) == accs  # a fixed calibration set: deterministic


@pytest.mark.parametrize("overrides, message", [
    ({"weight_sharing.warmup_epochs": 2}, r"weight_sharing.warmup_epochs must lie in \[0, epochs = 2\), got 2"),
    ({"weight_sharing.warmup_epochs": -1}, r"must lie in \[0, epochs = 2\), got -1"),
    ({"weight_sharing.sampling": "fairnas"}, r"weight_sharing.sampling must be one of uniform, fair, got 'fairnas'"),
    ({"weight_sharing.drop_path": 1.0}, r"weight_sharing.drop_path must lie in \[0, 1\), got 1.0"),
    ({"weight_sharing.drop_path": 0.1, "space.name": "enas_macro"},
     "weight_sharing.drop_path: the enas_macro network has no droppable paths"),
    ({"weight_sharing.scoring": {"reward_batches": 0}}, "weight_sharing.scoring.reward_batches must be >= 1"),
    ({"weight_sharing.scoring": {"bn_calibration_batches": 9}},
     r"bn_calibration_batches \(9 x data.batch_size 16\) exceeds data.train_size \(128\)"),
    ({"weight_sharing.scoring": {"same_batches": True, "reward_batches": 3}},
     r"reward_batches \(3 x data.eval_batch_size 16\) exceeds data.valid_size \(32\)"),
    ({"weight_sharing.scoring": {"rewards": 2}}, "unknown key 'weight_sharing.scoring.rewards'"),
    ({"weight_sharing.warmup_epochs": 1, "budget": 16}, r"must equal \(weight_sharing.epochs - warmup_epochs\) x "
                                                        r"archs_per_epoch \(8\)"),
])
def test_bad_reward_signal_settings_are_named(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, **overrides)


def test_warm_up_epochs_then_the_controller_with_every_scoring_option(ray_session, tmp_path, capsys):
    cfg = tiny_config(tmp_path, **{
        "space.name": "nb201", "space.params": {}, "weight_sharing.epochs": 3, "weight_sharing.warmup_epochs": 1,
        "weight_sharing.sampling": "fair",
        "weight_sharing.scoring": {"reward_batches": 2, "same_batches": True, "bn_calibration_batches": 1}})
    assert cfg.budget == 16  # (3 - 1) x 8: warm-up epochs spend no budget
    from services.search import run_search

    reported = []
    summary = run_search(cfg, on_result=lambda algorithm, result: reported.append(result))
    assert summary["evaluated"] == 16
    with (tmp_path / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    assert [int(m["archs_sampled"]) for m in metrics] == [0, 8, 16]
    assert math.isnan(float(metrics[0]["controller_reward_mean"])) and float(metrics[0]["shared_loss"]) > 0
    assert float(metrics[0]["sampling_s"]) == 0 and float(metrics[1]["sampling_s"]) > 0
    assert [int(r["search"]["archs_sampled"]) for r in reported] == [0, 8, 16]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[raynas] epoch")]
    assert "warm-up: fair children, no controller" in lines[0] and "nan" not in lines[0]
    assert "controller reward" in lines[1] and "8/16 architectures" in lines[1]
    # one draw of validation minibatches per controller iteration (4 architectures): within an
    # iteration equal architectures got equal rewards, and every reward is a share of 2 x 16 images
    rows = [json.loads(line) for line in (tmp_path / "trajectory.jsonl").read_text().splitlines()]
    assert all(r["reward"] * 32 == round(r["reward"] * 32) for r in rows)
    for it in range(4):
        batch = rows[4 * it : 4 * it + 4]
        for a in batch:
            assert all(a["reward"] == b["reward"] for b in batch if b["arch"] == a["arch"])
    assert json.loads((tmp_path / "best_arch.json").read_text())["space"] == "nb201"
