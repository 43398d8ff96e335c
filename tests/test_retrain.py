"""`raynas retrain` (a real Ray Train TorchTrainer), its files, resuming, and `raynas show`."""
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from controller_policy.spaces import build_space
from services.config import ConfigError, RetrainConfig, load_config
from services.retrain import run_retrain
from services.show import draw
from supernet_worker.retrain import load_model

ROOT = Path(__file__).resolve().parents[1]
TINY = {"space.name": "enas_macro", "space.params": {"num_layers": 3},
        "supernet": {"channels": 4, "bn_track_running_stats": True, "auxiliary": True, "widen_at_reduction": True},
        "data": {"source": "synthetic", "synthetic_train": 160, "synthetic_test": 40, "synthetic_image_size": 16,
                 "train_size": 160, "batch_size": 32, "eval_batch_size": 40, "cutout": 4},
        "train.epochs": 2, "train.lr_max": 0.05}


def arch_file(tmp_path, space_name="enas_macro", params=None, seed=0):
    params = params if params is not None else {"num_layers": 3}
    space = build_space(space_name, **params)
    arch = space.sample(np.random.default_rng(seed))
    path = tmp_path / f"{space_name}_arch.json"
    # as the search's derivation writes best_arch.json
    path.write_text(json.dumps({"arch": space.to_string(arch), "json": space.to_json(arch), "actions": arch,
                                "valid_accuracy": 0.5, "space": space_name, "space_params": params}))
    return path, space, arch


def test_retrain_writes_metrics_model_and_a_torchscript_that_needs_no_raynas(ray_session, tmp_path):
    path, space, arch = arch_file(tmp_path)
    # Two data-parallel workers (DDP over gloo): each trains and tests on its shard.
    cfg = load_config(None, {**TINY, "out": str(tmp_path / "out"), "workers": 2}, RetrainConfig)
    metrics = run_retrain(cfg, path)
    assert metrics["epoch"] == 2 and 0.0 <= metrics["test_accuracy"] <= 1.0
    rows = list(csv.DictReader((tmp_path / "out" / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert set(rows[0]) == {"epoch", "train_loss", "train_accuracy", "test_accuracy", "lr", "wall_time"}
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine

    child, saved = load_model(tmp_path / "out" / "model.pt")
    assert saved["arch"] == list(arch) and saved["arch_string"] == space.to_string(arch)
    images = torch.rand(3, 3, 16, 16)
    mean, std = torch.tensor(saved["mean"]).view(1, -1, 1, 1), torch.tensor(saved["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        expected = child((images - mean) / std)
    torch.save(images, tmp_path / "images.pt")
    torch.save(expected, tmp_path / "expected.pt")
    # A fresh interpreter in which raynas's packages cannot be imported at all.
    script = f"""
import sys, importlib.abc
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('controller_policy', 'supernet_worker', 'services', 'ray'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import torch
model = torch.jit.load({str(tmp_path / 'out' / 'model.torchscript.pt')!r})
logits = model(torch.load({str(tmp_path / 'images.pt')!r}))
assert torch.allclose(logits, torch.load({str(tmp_path / 'expected.pt')!r}), atol=1e-4), (logits,)
print('ok', tuple(logits.shape))
"""
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "ok (3, 10)", done.stderr[-2000:]


def test_an_interrupted_retrain_resumes(ray_session, tmp_path, capfd):
    path, _, _ = arch_file(tmp_path)
    settings = {**TINY, "train.epochs": 4, "out": str(tmp_path / "out")}
    settings["data"] = {**TINY["data"], "synthetic_train": 1200, "train_size": 1200}  # epochs of a few seconds
    config = tmp_path / "retrain.yaml"
    nested: dict = {}
    for key, value in settings.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    config.write_text(yaml.safe_dump(nested))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "retrain", str(path), "--config", str(config),
                             "--address", "local"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics_csv = tmp_path / "out" / "metrics.csv"
    try:
        deadline = time.time() + 300
        while not (metrics_csv.exists() and len(metrics_csv.read_text().splitlines()) >= 2):  # header + epoch 1
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()[-3000:]
            time.sleep(0.2)
        time.sleep(2.0)  # Ray forwards the workers' lines to the driver's output asynchronously
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray Train workers and its embedded cluster
        proc.wait()
    done_before = len(list(csv.DictReader(metrics_csv.open())))
    assert 1 <= done_before < 4
    printed = proc.stdout.read().decode()
    assert re.search(r"\[raynas\] retrain epoch 1/4  train loss [\d.]+ acc [\d.]+  test acc [\d.]+  lr \S+  "
                     r"\(\d+s, about \d+s left\)", printed), printed[-3000:]
    assert printed.startswith("[raynas] connecting to Ray") and "[raynas] starting 1 Ray Train worker(s)" in printed
    # Ray Train's own INFO lines (resources, process group, every report and checkpoint) stay out
    for noise in ("Reporting training result", "Checkpoint successfully created", "Setting up process group",
                  "Requesting resources", "Moving model to device"):
        assert noise not in printed, printed[-3000:]

    cfg = load_config(config, {}, RetrainConfig)
    capfd.readouterr()
    metrics = run_retrain(cfg, path)
    resumed = capfd.readouterr().out
    after = int(re.search(r"\[raynas\] retrain resumed after epoch (\d)\n", resumed).group(1))
    assert 1 <= after <= done_before  # (a kill between a metrics row and its checkpoint redoes that epoch)
    assert re.findall(r"\[raynas\] retrain epoch (\d)/4 ", resumed) == [str(e) for e in range(after + 1, 5)]
    rows = list(csv.DictReader(metrics_csv.open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4] and metrics["epoch"] == 4
    assert float(rows[-1]["wall_time"]) > float(rows[0]["wall_time"])  # time carried over the restart


@pytest.mark.parametrize("bad, said", [
    ({"arch": "|conv_3x3|+|bogus|"}, "enas_macro"),
    ({"arch": [0, 1]}, "expected 6 decisions, got 2"),
    ({"space": "nb201", "nodes": []}, "belongs to space 'nb201'"),
    ("not an architecture at all", "enas_macro"),
])
def test_retrain_rejects_what_is_not_an_architecture_of_the_space(tmp_path, capsys, bad, said):
    from services.cli import main

    path = tmp_path / "arch.json"
    path.write_text(json.dumps(bad) if not isinstance(bad, str) else bad)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"space": {"name": "enas_macro", "params": {"num_layers": 3}},
                                      "supernet": {"bn_track_running_stats": True}, "data": {"source": "synthetic"}}))
    with pytest.raises(SystemExit) as exc:
        main(["retrain", str(path), "--config", str(config)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and said in err and len(err.splitlines()) == 1, err


SHOW_CASES = [("enas_macro", {"num_layers": 5}), ("enas_micro", {"num_nodes": 3}), ("nb201", {})]


def expected_labels(space, arch):
    if space.name == "enas_macro":
        return [f"layer {i}: {space.ops[op]}" for i, (op, _) in enumerate(space.layers(arch))]
    if space.name == "enas_micro":
        cells = space.cells(arch)
        return ["normal cell", "reduce cell"] + [space.ops[n[1]] for n in cells["normal"]]
    return ["node 0 (input)", "node 3 (output)"] + [op for inputs in space.to_json(arch)["nodes"]
                                                    for op, _ in inputs if op != "none"]


@pytest.mark.parametrize("name, params", SHOW_CASES)
@pytest.mark.parametrize("renderer", ["matplotlib", "graphviz"])
def test_show_draws_every_space(tmp_path, name, params, renderer):
    import shutil

    if renderer == "graphviz" and shutil.which("dot") is None:
        if os.environ.get("RAYNAS_REQUIRE_GRAPHVIZ"):  # .ci/run installs it and sets this
            pytest.fail("RAYNAS_REQUIRE_GRAPHVIZ is set but Graphviz's dot is not on PATH")
        pytest.skip("Graphviz is not installed (apt-get install graphviz; .ci/run does)")
    path, space, arch = arch_file(tmp_path, name, params, seed=4)
    labels = expected_labels(space, arch)
    dot = draw(path, "dot").read_text()
    assert dot.startswith("digraph") and all(f'"{label}"' in dot for label in labels), (labels, dot)
    svg = draw(path, "svg", tmp_path / "a.svg", renderer=renderer).read_text()
    assert "<svg" in svg and all(label in svg for label in labels), labels
    png = draw(path, "png", tmp_path / "a.png", renderer=renderer).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 2000


def test_show_needs_a_space_for_a_bare_string_and_names_bad_positions(tmp_path):
    path = tmp_path / "cell.txt"
    path.write_text("|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|zzz~2|")
    with pytest.raises(ValueError, match="pass --space"):
        draw(path)
    with pytest.raises(ValueError, match="edge 2->3: unknown op 'zzz'"):
        draw(path, space_name="nb201")


def test_a_failing_worker_is_one_error_line_and_a_missing_data_dir_is_caught_first(ray_session, tmp_path, capsys):
    from services.cli import main

    path, _, _ = arch_file(tmp_path)
    cfg = load_config(None, {**TINY, "out": str(tmp_path / "out"), "data.source": "arrays",
                             "data.data_dir": str(tmp_path / "nowhere")}, RetrainConfig)
    with pytest.raises(ValueError, match="nowhere does not exist"):
        run_retrain(cfg, path)
    empty = tmp_path / "empty"
    empty.mkdir()  # exists, but holds no dataset: the workers fail
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"space": {"name": "enas_macro", "params": {"num_layers": 3}},
                                      "supernet": {"channels": 4, "bn_track_running_stats": True},
                                      "data": {"source": "arrays", "data_dir": str(empty)},
                                      "out": str(tmp_path / "out2")}))
    with pytest.raises(SystemExit) as exc:
        main(["retrain", str(path), "--config", str(config)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "retraining failed:" in err and "train.npz" in err, err
    with pytest.raises(SystemExit) as exc:
        main(["retrain", str(path), "--config", str(config), "--gpus", "2", "--workers", "4"])
    assert exc.value.code == 2 and "--gpus N runs N workers with a GPU each" in capsys.readouterr().err


def test_path_dropout_on_a_network_without_droppable_paths_is_refused():
    with pytest.raises(ConfigError, match="supernet.drop_path: the enas_macro network has no droppable paths"):
        load_config(None, {**TINY, "supernet": {**TINY["supernet"], "drop_path": 0.2}}, RetrainConfig)
    cfg = load_config(None, {**TINY, "space.name": "nb201", "space.params": {},
                             "supernet": {"channels": 4, "bn_track_running_stats": True, "drop_path": 0.2}}, RetrainConfig)
    assert cfg.supernet.drop_path == 0.2  # accepted: NB201 children drop paths (test_supernets checks they do)
