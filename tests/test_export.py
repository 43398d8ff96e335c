"""Deployable files: a retrained child of every space as torch.export, ONNX and TorchScript, each run
by its own runtime in an interpreter that cannot import raynas or Ray; `raynas export`; model.json."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from services.config import load_config, RetrainConfig
from services.retrain import run_retrain
from supernet_worker.costs import CostModel, Skeleton
from supernet_worker.export import FORMATS, ExportError, ExportedClassifier, export_classifier, sha256
from supernet_worker.retrain import load_model
from supernet_worker.supernets import SupernetConfig
from tests.test_retrain import arch_file

SPACES = [("enas_macro", {"num_layers": 3}, {"auxiliary": True, "widen_at_reduction": True}),
          ("enas_micro", {"num_nodes": 3}, {"auxiliary": True, "drop_path": 0.2}),
          ("nb201", {}, {})]
DATA = {"source": "synthetic", "synthetic_train": 96, "synthetic_test": 32, "synthetic_image_size": 16,
        "train_size": 96, "batch_size": 32, "eval_batch_size": 32}

# Runs in `python -I` with raynas's packages and Ray blocked: only torch, onnxruntime and the files.
RUNTIMES = """
import sys, importlib.abc, json
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split('.')[0] in ('controller_policy', 'supernet_worker', 'services', 'ray'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import numpy as np, onnxruntime, torch
cases = json.loads(sys.argv[1])
worst = 0.0
for case in cases:
    batches = torch.load(case['images'])
    expected = torch.load(case['expected'])
    programs = {'pt2': torch.export.load(case['pt2']).module(), 'torchscript': torch.jit.load(case['torchscript'])}
    session = onnxruntime.InferenceSession(case['onnx'], providers=['CPUExecutionProvider'])
    for images, want in zip(batches, expected):
        got = {fmt: program(images).detach() for fmt, program in programs.items()}
        got['onnx'] = torch.from_numpy(session.run(['logits'], {'images': images.numpy()})[0])
        for fmt, logits in got.items():
            assert logits.shape == want.shape, (case['pt2'], fmt, logits.shape)
            error = float((logits - want).abs().max())
            assert error < 1e-4, (case['pt2'], fmt, images.shape[0], error)
            worst = max(worst, error)
print('ok', len(cases), worst)
"""


def run_isolated(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-I", "-c", script, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_every_space_exports_to_every_format_and_runs_without_raynas(ray_session, tmp_path):
    cases = []
    for name, params, net in SPACES:
        path, space, arch = arch_file(tmp_path, name, params)
        out = tmp_path / name
        cfg = load_config(None, {"space.name": name, "space.params": params, "out": str(out), "train.epochs": 1,
                                 "supernet": {"channels": 4, "bn_track_running_stats": True, **net},
                                 "data": dict(DATA)}, RetrainConfig)
        metrics = run_retrain(cfg, path)
        assert {p.name for p in out.iterdir()} >= {"model.pt", "model.json", *FORMATS.values()}
        info = json.loads((out / "model.json").read_text())
        assert info["architecture"]["string"] == space.to_string(arch) and info["space"]["name"] == name
        assert info["input"] == {"shape": ["batch", 3, 16, 16], "dtype": "float32", "range": [0.0, 1.0],
                                 "layout": "NCHW", "dynamic_batch": [1, 4096]}
        assert info["output"]["num_classes"] == 10 and info["onnx_opset"] == 18
        assert info["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
        assert info["test_split"] == "the generated test split (32 images)"
        assert len(info["normalisation"]["mean"]) == 3 and "inside the exported model" in info["normalisation"]["applied"]
        for fmt, file in FORMATS.items():
            assert info["files"][fmt] == {"file": file, "sha256": sha256(out / file), "bytes": (out / file).stat().st_size}
        assert info["files"]["model"]["sha256"] == sha256(out / "model.pt")

        child, saved = load_model(out / "model.pt")
        # its costs: counted for this network, latency measured under torch and onnxruntime
        counted = CostModel(Skeleton(name, params, SupernetConfig(**saved["supernet"]), 3, 16, 10))(arch)
        assert {k: info["costs"][k] for k in ("params_m", "flops_m")} == counted
        assert set(info["costs"]["latency_ms"]) == {"torch_cpu", "onnxruntime_cpu"}
        assert all(ms > 0 for ms in info["costs"]["latency_ms"].values()) and "batch 1" in info["costs"]["measured_on"]
        reference = ExportedClassifier(child, saved["mean"], saved["std"]).eval()
        batches = [torch.rand(n, 3, 16, 16) for n in (1, 7)]  # the batch dimension is dynamic
        with torch.no_grad():
            expected = [reference(x) for x in batches]
        torch.save(batches, out / "images.pt")
        torch.save(expected, out / "expected.pt")
        cases.append({"images": str(out / "images.pt"), "expected": str(out / "expected.pt"),
                      **{fmt: str(out / file) for fmt, file in FORMATS.items()}})
    done = run_isolated(RUNTIMES, json.dumps(cases), cwd=tmp_path)
    assert done.stdout.startswith("ok 3"), done.stderr[-3000:]


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    """A model.pt as retrain writes it (weights trained a few steps here, without Ray)."""
    from controller_policy.spaces import build_space
    from supernet_worker.data import DataConfig
    from supernet_worker.retrain import save_model
    from supernet_worker.supernets import SupernetConfig, build_child

    out = tmp_path_factory.mktemp("model")
    space = build_space("nb201")
    arch = [3, 1, 2, 4, 3, 0]
    net_cfg = SupernetConfig(channels=4, bn_track_running_stats=True)
    child = build_child(space, arch, net_cfg, 3, 10)
    optimizer = torch.optim.SGD(child.parameters(), lr=0.1)
    for _ in range(3):
        loss = nn.functional.cross_entropy(child(torch.randn(8, 3, 16, 16)), torch.randint(0, 10, (8,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    (out / "metrics.csv").write_text("epoch,train_loss,train_accuracy,test_accuracy,lr,wall_time\n1,2,0.1,0.125,0.1,1\n")
    config = {"space": "nb201", "space_params": {}, "arch": arch, "supernet": net_cfg,
              "data": DataConfig(source="synthetic", synthetic_test=40)}
    save_model(out, child, config, space, (16, 16, 3), 10, [0.5] * 3, [0.25] * 3)
    return out / "model.pt"


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "torchscript"])
def test_raynas_export_writes_one_format_where_asked(model_pt, tmp_path, capsys, fmt):
    from services.cli import main

    target = tmp_path / f"exported.{fmt}"
    main(["export", str(model_pt), "--format", fmt, "--out", str(target)])
    assert capsys.readouterr().out.strip() == f"[raynas] {target}"
    child, saved = load_model(model_pt)
    images = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        want = ExportedClassifier(child, saved["mean"], saved["std"]).eval()(images)
    if fmt == "pt2":
        got = torch.export.load(str(target)).module()(images)
    elif fmt == "torchscript":
        got = torch.jit.load(str(target))(images)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    assert torch.allclose(got, want, atol=1e-4)
    info = json.loads((model_pt.parent / "model.json").read_text())
    assert info["test_accuracy"] == 0.125 and info["test_split"] == "the generated test split (40 images)"


@pytest.mark.parametrize("argv, said", [
    (["export", "{missing}", "--format", "pt2"], "no such file"),
    (["export", "{not_a_model}", "--format", "pt2"], "not a model.pt written by raynas retrain"),
])
def test_raynas_export_refuses_what_it_cannot_read(tmp_path, capsys, argv, said):
    from services.cli import main

    (tmp_path / "arch.json").write_text('{"arch": "x"}')
    argv = [a.format(missing=tmp_path / "nope.pt", not_a_model=tmp_path / "arch.json") for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and said in err and len(err.splitlines()) == 1, err


class DataDependent(nn.Module):
    """Branches on the values of its input: no exporter can trace it into one graph."""

    def forward(self, images):
        if images.sum() > 0:
            return images.flatten(1)[:, :10]
        return -images.flatten(1)[:, :10]


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_what_cannot_be_exported_is_refused_naming_the_problem(tmp_path, fmt):
    target = tmp_path / f"m.{fmt}"
    with pytest.raises(ExportError, match=rf"cannot export to {fmt}: .*data-dependent.*"
                                          r"\(in module DataDependent, test_export.py:\d+ forward\)") as exc:
        export_classifier(DataDependent(), torch.rand(2, 3, 4, 4), fmt, target)
    assert len(str(exc.value).splitlines()) == 1
    assert not target.exists()


def test_a_format_that_fails_is_recorded_in_model_json_and_the_others_are_written(model_pt, tmp_path, monkeypatch):
    import shutil

    import supernet_worker.retrain as retrain

    model = tmp_path / "model.pt"
    shutil.copy(model_pt, model)
    real = retrain.export_classifier

    def no_onnx(model_, example, fmt, path):
        if fmt == "onnx":
            raise ExportError("cannot export to onnx: UnsupportedOperatorError: aten::made_up (in module X)")
        return real(model_, example, fmt, path)

    monkeypatch.setattr(retrain, "export_classifier", no_onnx)
    written = retrain.export_model(model, FORMATS, tmp_path)
    assert written["onnx"].startswith("not written: cannot export to onnx") and (tmp_path / "model.pt2").is_file()
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["files"]["onnx"] == {"file": None, "reason": "cannot export to onnx: UnsupportedOperatorError: "
                                                             "aten::made_up (in module X)"}
    assert info["files"]["pt2"]["sha256"] == sha256(tmp_path / "model.pt2")
