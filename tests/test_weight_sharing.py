"""Weight-sharing ENAS on a real local Ray instance: workers, the search driver, resume, faults."""
import csv
import json
import time
from pathlib import Path

import pytest
import ray
import torch

from services.config import ConfigError, load_config
from services.search import run_search
from supernet_worker.data import DataConfig
from supernet_worker.pool import SupernetPool, collective_backend
from supernet_worker.supernets import SupernetConfig
from supernet_worker.worker import WorkerSpec

TINY_DATA = {"source": "synthetic", "synthetic_train": 160, "synthetic_test": 40, "synthetic_image_size": 16,
             "train_size": 128, "valid_size": 32, "batch_size": 16, "eval_batch_size": 16}


def test_collective_backend_uses_nccl_only_when_no_two_ranks_share_a_gpu():
    def ranks(*held):
        return [{"node_id": node, "gpu_ids": gpus} for node, gpus in held]

    assert collective_backend(ranks(("a", ["0"]), ("a", ["1"]), ("b", ["0"]))) == "nccl"
    # gpus_per_worker 0.5: NCCL would fail with "Duplicate GPU detected"
    assert collective_backend(ranks(("a", ["0"]), ("a", ["0"]))) == "gloo"
    assert collective_backend(ranks(("a", ["0", "1"]), ("a", ["1"]))) == "gloo"
    assert collective_backend(ranks(("a", ["0"]), ("a", []))) == "gloo"  # one rank on CPU
    assert collective_backend(ranks(("a", []), ("a", []))) == "gloo"


def tiny_config(out, **overrides):
    base = {
        "seed": 0, "out": str(out), "episodes_per_iteration": 4,
        "space.name": "enas_macro", "space.params": {"num_layers": 3},
        "supernet.channels": 4, "data": dict(TINY_DATA),
        "weight_sharing.epochs": 2, "weight_sharing.archs_per_epoch": 8, "weight_sharing.train_steps": 3,
        "weight_sharing.workers": 1, "weight_sharing.derive_samples": 6, "weight_sharing.top_k": 3,
        "ppo.num_epochs": 2,
    }
    base.update(overrides)
    return load_config(None, base)


def test_two_workers_stay_identical_after_every_step(ray_session):
    spec = WorkerSpec(space="enas_macro", space_params={"num_layers": 3}, supernet=SupernetConfig(channels=4),
                      data=DataConfig(**TINY_DATA))
    pool = SupernetPool(spec, num_workers=2)
    try:
        for step in range(1, 4):
            pool.train(until_step=step, steps_per_epoch=4)
            a, b = ray.get([w.get_state.remote() for w in pool.workers])
            for key, value in a["shared"]["net"].items():
                assert torch.equal(value, b["shared"]["net"][key]), (step, key)
            assert a["shared"]["global_step"] == b["shared"]["global_step"] == step
            # the children differ per rank: the data-parallel batch mixes architectures
        archs = [[i % 6, 0, i % 6, 1, 0, i % 2] for i in range(5)]
        accs = pool.evaluate(archs)
        assert len(accs) == 5 and all(0.0 <= a <= 1.0 for a in accs)
    finally:
        pool.shutdown()


@pytest.mark.parametrize("algo", ["ppo", "reinforce", "random"])
def test_search_end_to_end(ray_session, tmp_path, algo):
    cfg = tiny_config(tmp_path, algo=algo)
    reported = []
    summary = run_search(cfg, on_result=lambda algorithm, result: reported.append(result["supernet"]))
    assert summary["evaluated"] == cfg.budget == 16
    rows = [json.loads(line) for line in (tmp_path / "trajectory.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in rows] == list(range(16))
    assert all(0.0 <= r["reward"] <= 1.0 and r["metrics"] == {"valid_acc": r["reward"]} for r in rows)
    with (tmp_path / "metrics.csv").open() as f:
        metrics = list(csv.DictReader(f))
    assert [int(m["epoch"]) for m in metrics] == [1, 2]
    assert [int(m["archs_sampled"]) for m in metrics] == [8, 16]
    # where each epoch's time went, in metrics.csv and in the results Tune and TensorBoard get
    for m, r in zip(metrics, reported):
        assert float(m["supernet_s"]) > 0 and float(m["sampling_s"]) > 0 and float(m["evaluation_s"]) > 0
        assert float(m["update_s"]) >= 0
        assert r["supernet_s"] == pytest.approx(float(m["supernet_s"]))
    assert metrics[0]["derive_s"] == "" and float(metrics[-1]["derive_s"]) > 0
    assert reported[-1]["derive_s"] == pytest.approx(float(metrics[-1]["derive_s"]))
    best = json.loads((tmp_path / "best_arch.json").read_text())
    top = json.loads((tmp_path / "top_archs.json").read_text())
    assert best == top[0] and 1 <= len(top) <= 3
    assert [t["valid_accuracy"] for t in top] == sorted((t["valid_accuracy"] for t in top), reverse=True)
    assert (tmp_path / "report.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents*"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["iter_000001", "iter_000002"]


def test_phases_report_their_progress_and_chunking_trains_exactly_one_epoch(ray_session, tmp_path):
    """The supernet phase trains in PHASE_UPDATES calls (steps not divisible by it too), the
    controller phase reports each iteration, the derivation each chunk; nothing is lost in chunks."""
    from services.search import algorithm_config
    from services.weight_sharing import PHASE_UPDATES

    steps = 2 * PHASE_UPDATES + 3
    cfg = tiny_config(tmp_path, **{"weight_sharing.train_steps": steps, "weight_sharing.workers": 2,
                                   "weight_sharing.derive_samples": 50, "weight_sharing.epochs": 1})
    algo = algorithm_config(cfg, str(tmp_path)).build_algo()
    heard = []
    algo.phase_listener = lambda phase, done, total: heard.append((phase, done, total))
    try:
        algo.train()
        assert {p["global_step"] for p in ray.get([w.ping.remote() for w in algo.pool.workers])} == {steps}
        supernet = [(done, total) for phase, done, total in heard if phase == "supernet"]
        assert supernet[0] == (0, steps) and supernet[-1] == (steps, steps)
        assert PHASE_UPDATES // 2 < len(supernet) - 1 <= PHASE_UPDATES and all(t == steps for _, t in supernet)
        assert [d for d, _ in supernet] == sorted({d for d, _ in supernet})  # strictly increasing
        controller = [(done, total) for phase, done, total in heard if phase == "controller"]
        assert controller == [(0, 8), (4, 8), (8, 8)]  # two iterations of 4 episodes
        derive = [(done, total) for phase, done, total in heard if phase == "derive"]
        unique = derive[0][1]
        assert derive[0] == (0, unique) and derive[-1] == (unique, unique) and 1 < len(derive) <= PHASE_UPDATES + 1
        assert all(done % 2 == 0 for done, _ in derive[:-1])  # whole rounds of the two workers
        assert len(json.loads((tmp_path / "top_archs.json").read_text())) == 3
        with (tmp_path / "metrics.csv").open() as f:
            row = next(csv.DictReader(f))
        assert 0 < float(row["shared_loss"]) < 10 and 0 <= float(row["shared_accuracy"]) <= 1
    finally:
        algo.stop()


def test_resume_reaches_the_same_result(ray_session, tmp_path):
    full = tiny_config(tmp_path / "full", **{"weight_sharing.epochs": 3})
    run_search(full)
    part = tiny_config(tmp_path / "part", **{"weight_sharing.epochs": 3})
    run_search(part, stop_after=2)
    assert len((tmp_path / "part" / "trajectory.jsonl").read_text().splitlines()) == 16
    run_search(part, resume=True)
    for name in ("trajectory.jsonl", "best_arch.json", "top_archs.json"):
        assert (tmp_path / "part" / name).read_text() == (tmp_path / "full" / name).read_text(), name

    def without_time(path):
        with path.open() as f:
            return [{k: v for k, v in row.items() if k != "wall_time" and not k.endswith("_s")}
                    for row in csv.DictReader(f)]

    assert without_time(tmp_path / "part" / "metrics.csv") == without_time(tmp_path / "full" / "metrics.csv")


def test_killed_worker_is_restarted_and_nothing_is_lost(ray_session, tmp_path):
    cfg = tiny_config(tmp_path, **{"weight_sharing.workers": 2, "weight_sharing.epochs": 3})
    killed = []

    def kill_after_first_epoch(algorithm, result):
        if not killed:  # Ray restarts the actor; the next epoch's calls find it dead, then restarted
            ray.kill(algorithm.pool.workers[1], no_restart=False)
            killed.append(True)

    summary = run_search(cfg, on_result=kill_after_first_epoch)
    assert killed and summary["evaluated"] == 24
    rows = [json.loads(line) for line in (tmp_path / "trajectory.jsonl").read_text().splitlines()]
    assert [r["sample"] for r in rows] == list(range(24))
    assert (tmp_path / "best_arch.json").exists()


def _pings_after_restart(pool):
    while True:
        try:
            return ray.get([w.ping.remote() for w in pool.workers])
        except ray.exceptions.RayActorError:
            time.sleep(0.2)


def test_all_workers_lost_falls_back_to_the_last_checkpoint(ray_session):
    spec = WorkerSpec(space="enas_macro", space_params={"num_layers": 3}, supernet=SupernetConfig(channels=4),
                      data=DataConfig(**TINY_DATA))
    pool = SupernetPool(spec, num_workers=2)
    try:
        pool.train(until_step=2, steps_per_epoch=4)
        checkpoint = pool.get_state()
        pool.train(until_step=4, steps_per_epoch=4)
        pids = [w.ping.remote() for w in pool.workers]
        pids = [p["pid"] for p in ray.get(pids)]
        for worker in pool.workers:  # no replica survives to hand its weights on
            ray.kill(worker, no_restart=False)
        while any(p == q for p, q in zip(pids, (x["pid"] for x in _pings_after_restart(pool)))):
            time.sleep(0.2)
        pool.recover()
        states = ray.get([w.get_state.remote() for w in pool.workers])
        for state in states:
            assert state["shared"]["global_step"] == 2
            for key, value in checkpoint["shared"]["net"].items():
                assert torch.equal(state["shared"]["net"][key], value), key
        pool.train(until_step=3, steps_per_epoch=4)  # the re-formed group trains on
        assert len(set(pool.checksums())) == 1
    finally:
        pool.shutdown()


@pytest.mark.parametrize("overrides,message", [
    ({"weight_sharing.epochs": -1}, "weight_sharing.epochs must be >= 1"),
    ({"weight_sharing.epoks": 3}, "unknown key 'weight_sharing.epoks'"),
    ({"supernet.channels": "wide"}, r"supernet.channels must be an integer, got .wide. \(a string\); e.g. 16"),
    ({"data.source": "imagenet"}, "data.source must be one of"),
])
def test_bad_configs_rejected_before_start(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, **overrides)
    assert not (tmp_path / "trajectory.jsonl").exists()


def test_more_gpus_than_the_cluster_has(ray_session, tmp_path):
    cfg = tiny_config(tmp_path, **{"weight_sharing.gpus_per_worker": 1.0})
    with pytest.raises(ValueError, match="weight_sharing.gpus_per_worker: 1 workers x 1 GPUs = 1 GPUs, but the cluster has 0"):
        run_search(cfg)
    assert not (tmp_path / "trajectory.jsonl").exists()


@pytest.mark.parametrize("preset", ["quick-cpu", "enas-macro", "enas-micro", "nb201-ws", "nb201-ws-cpu", "seed-macro3", "tabular-nb201"])
def test_presets_load(preset):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{preset}.yaml")
    assert cfg.budget >= 1


def test_tune_runs_a_weight_sharing_trial_in_its_placement_group(ray_session, tmp_path):
    """The algorithm is a Tune trainable: its trial reserves the driver and one bundle per worker."""
    from ray import tune

    from services.search import algorithm_config
    from services.weight_sharing import WeightSharingRandom

    cfg = tiny_config(tmp_path / "unused", algo="random")
    config = algorithm_config(cfg, out_dir=None)
    request = WeightSharingRandom.default_resource_request(config)
    assert request.bundles[-1] == {"CPU": 1.0} and len(request.bundles) == 2
    tuner = tune.Tuner(WeightSharingRandom, param_space=config,
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="ws",
                                                 stop={"training_iteration": 2}, verbose=0,
                                                 sync_config=tune.SyncConfig(sync_artifacts=True)))
    result = tuner.fit().get_best_result(metric="search/best_reward", mode="max")
    assert result.error is None and result.metrics["search"]["archs_sampled"] == 16
    trial_dir = Path(result.path)  # the search's files are trial artifacts (its working directory)
    assert len((trial_dir / "trajectory.jsonl").read_text().splitlines()) == 16
    assert (trial_dir / "best_arch.json").exists() and (trial_dir / "metrics.csv").exists()


def test_data_parallel_rules():
    from supernet_worker.worker import OptimConfig, data_parallel_plan

    # split_batch: ENAS's global batch and steps per epoch, lr unchanged
    assert data_parallel_plan(OptimConfig(), 128, 4, 45000) == (32, 352, 1.0)
    # scale_lr: every rank a full batch, K times fewer steps, lr x K
    assert data_parallel_plan(OptimConfig(data_parallel="scale_lr"), 128, 4, 45000) == (128, 88, 4.0)
    with pytest.raises(ValueError, match="divisible by the 3 supernet workers"):
        data_parallel_plan(OptimConfig(), 128, 3, 45000)
    with pytest.raises(ConfigError, match="divisible"):
        tiny_config("unused", **{"weight_sharing.workers": 3})
    with pytest.raises(ConfigError, match="optim.data_parallel"):
        tiny_config("unused", **{"optim.data_parallel": "bogus"})


@pytest.mark.parametrize("rule,lr", [("split_batch", 0.05), ("scale_lr", 0.1)])
def test_one_epoch_with_two_workers_is_one_pass(ray_session, rule, lr):
    """Each rank trains on its own half of every epoch; together one pass over the training split."""
    from supernet_worker.worker import OptimConfig

    spec = WorkerSpec(space="enas_macro", space_params={"num_layers": 3}, supernet=SupernetConfig(channels=4),
                      data=DataConfig(**TINY_DATA),
                      optim=OptimConfig(data_parallel=rule, warmup_epochs=1.0, restart_period=100))
    pool = SupernetPool(spec, num_workers=2)
    try:
        steps = 128 // (16 if rule == "split_batch" else 32)  # train_size / global batch
        first = pool.train(until_step=steps, steps_per_epoch=steps)
        assert [s["images"] for s in first] == [64, 64]  # 128 training images, half per rank
        second = pool.train(until_step=2 * steps, steps_per_epoch=steps)
        # scale_lr warms up from the unscaled rate over the first epoch, then runs at K x lr_max
        if rule == "scale_lr":
            assert first[0]["lr"] < lr
        assert second[0]["lr"] == pytest.approx(lr, rel=0.01)
        states = ray.get([w.get_state.remote() for w in pool.workers])
        assert [s["rank"]["train"]["passes"] for s in states] == [2, 2]  # both ranks: two passes of their shard
    finally:
        pool.shutdown()


def test_training_children_are_drawn_in_one_seeded_batch(ray_session):
    from controller_policy import ENASController
    from supernet_worker.worker import SupernetWorker

    spec = WorkerSpec(space="nb201", supernet=SupernetConfig(channels=4, num_cells=1), data=DataConfig(**TINY_DATA))
    controller = ENASController(SupernetWorker(spec, 0).space)
    with torch.no_grad():
        controller.g_emb.fill_(0.5)  # a non-uniform distribution
    workers = [SupernetWorker(spec, 0, 2), SupernetWorker(spec, 0, 2), SupernetWorker(spec, 1, 2)]
    for w in workers:
        w.set_controller(controller.state_dict())
    a, b, c = (w.sample_archs(2000) for w in workers)
    assert a == b and a != c  # seeded per rank, reproducible
    # the controller's own distribution: first-decision frequencies match its probabilities
    probs = controller.evaluate(torch.tensor(a[:1])).logits[0, 0].softmax(-1)
    freq = torch.bincount(torch.tensor(a)[:, 0], minlength=len(probs)).float() / 2000
    torch.testing.assert_close(freq, probs.detach(), atol=0.03, rtol=0)
    uniform = SupernetWorker(spec, 0).sample_archs(3)  # no controller yet: uniform
    assert len(uniform) == 3 and all(len(arch) == 6 for arch in uniform)
