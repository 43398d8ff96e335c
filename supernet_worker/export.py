"""Deployable files of a retrained child: a ``torch.export`` program (``model.pt2``), ONNX
(``model.onnx``), TorchScript (``model.torchscript.pt``, deprecated upstream: kept for one release)
and ``model.json``, which says what they expect and hold.

Every export wraps the child in ``ExportedClassifier``: float32 images in [0, 1], [N, C, H, W],
normalised inside, -> class logits; the batch dimension is dynamic.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import re
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from controller_policy.logs import quieted

from .settings import Skeleton, SupernetConfig

FORMATS = {"pt2": "model.pt2", "onnx": "model.onnx", "torchscript": "model.torchscript.pt"}
MODEL_JSON = "model.json"
ONNX_OPSET = 18  # onnxruntime, TensorRT and OpenVINO all run opset 18
MAX_BATCH = 4096  # the dynamic batch dimension's upper bound in the exported programs


class ExportError(RuntimeError):
    """A network that cannot be exported in a format; the message names the op or module."""


class ExportedClassifier(nn.Module):
    """What the exported files hold: float images in [0, 1], [N, C, H, W] -> class logits."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: Tensor) -> Tensor:
        return self.net((images - self.mean) / self.std)


def export_classifier(model: nn.Module, example: Tensor, fmt: str, path: str | Path) -> Path:
    """Write ``model`` (eval mode, one image batch ``example``) as ``fmt`` to ``path``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")
    path = Path(path)
    model = model.eval()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        if fmt == "pt2":
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
            torch.export.save(program, str(path))
        elif fmt == "onnx":
            _require_onnx()
            with warnings.catch_warnings(), quieted(ONNX_OPTIMIZER_LOGGERS, logging.WARNING):
                warnings.simplefilter("ignore")
                program = torch.onnx.export(model, (example,), dynamo=True, opset_version=ONNX_OPSET, verbose=False,
                                            input_names=["images"], output_names=["logits"],
                                            dynamic_shapes=({0: batch},))
            program.save(str(path))
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream, still supported
                torch.jit.trace(model, example).save(str(path))
    except ExportError:
        raise
    except Exception as exc:  # torch's exporters raise many types; the first line names the op/module
        path.unlink(missing_ok=True)
        raise ExportError(f"cannot export to {fmt}: {_first_line(exc)}") from exc
    return path


# The ONNX exporter's optimizer logs every rewrite at INFO ("Removed 74 unused nodes"), which a Ray
# worker's root logger prints: diagnostics of its own passes, not of the model.
ONNX_OPTIMIZER_LOGGERS = ("onnxscript", "onnx_ir")


def _require_onnx() -> None:
    absent = [name for name in ("onnx", "onnxscript") if importlib.util.find_spec(name) is None]
    if absent:
        raise ExportError(f"ONNX export needs the export extra (pip install 'raynas[export]'): "
                          f"{', '.join(absent)} not installed")


def _first_line(exc: BaseException) -> str:
    """The root cause's type and first line (the ONNX exporter wraps torch.export's error in a
    generic one), without terminal colours."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}{_where(exc)}"


def _where(exc: BaseException) -> str:
    """Which module's code the exporter stopped in: the innermost frame outside torch, the
    standard library and this file."""
    stdlib = os.path.dirname(os.__file__)
    library = (os.path.dirname(torch.__file__), os.path.abspath(__file__))
    found = ""
    for frame, line in traceback.walk_tb(exc.__traceback__):
        name = frame.f_code.co_filename
        if not name.startswith(library) and not (name.startswith(stdlib) and "-packages" not in name):
            owner = frame.f_locals.get("self")
            module = type(owner).__name__ if isinstance(owner, nn.Module) else "?"
            found = f" (in module {module}, {os.path.basename(name)}:{line} {frame.f_code.co_name})"
    return found


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def measured_costs(out: Path, saved: dict[str, Any]) -> dict[str, Any]:
    """This network's parameters and FLOPs (counted exactly: supernet_worker.costs) and its latency
    for one image, measured here on CPU: model.pt under torch and, when written, model.onnx under
    onnxruntime (the median of 50 calls after 10, with torch's thread count)."""
    from .costs import CostModel
    from .latency import Timing, time_call
    from .retrain import load_model  # retrain imports this module

    skeleton = Skeleton(saved["space"], saved["space_params"], SupernetConfig(**saved["supernet"]),
                        saved["in_channels"], saved["image_size"][0], saved["num_classes"])
    costs: dict[str, Any] = CostModel(skeleton)(saved["arch"])
    child, _ = load_model(out / "model.pt")
    image = torch.rand(1, saved["in_channels"], *saved["image_size"])
    timing = Timing()
    with torch.inference_mode():
        latency = {"torch_cpu": time_call(lambda: child(image), timing, "cpu")}
    if (out / FORMATS["onnx"]).is_file() and importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(out / FORMATS["onnx"]), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: image.numpy()}
        latency["onnxruntime_cpu"] = time_call(lambda: session.run(None, feed), timing, "cpu")
    costs["latency_ms"] = latency
    costs["measured_on"] = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s), batch 1"
    return costs


def write_model_json(out: Path, saved: dict[str, Any], missing: dict[str, str] | None = None) -> Path:
    """``model.json`` beside ``model.pt``: what the exported files compute and expect, and each
    file's sha256. ``saved`` is ``model.pt``'s metadata; ``missing``: format -> why it was not written."""
    channels = saved["in_channels"]
    height, width = saved["image_size"]
    listing: dict[str, Any] = {}
    for fmt, name in FORMATS.items():
        path = out / name
        listing[fmt] = ({"file": name, "sha256": sha256(path), "bytes": path.stat().st_size} if path.is_file()
                        else {"file": None, "reason": (missing or {}).get(fmt, "not exported")})
    info = {
        "architecture": {"string": saved["arch_string"], "json": saved["arch_json"], "actions": saved["arch"]},
        "space": {"name": saved["space"], "params": saved["space_params"]},
        "input": {"shape": ["batch", channels, height, width], "dtype": "float32", "range": [0.0, 1.0],
                  "layout": "NCHW", "dynamic_batch": [1, MAX_BATCH]},
        "normalisation": {"applied": "inside the exported model: (images - mean) / std, per channel",
                          "mean": saved["mean"], "std": saved["std"]},
        "output": {"name": "logits", "shape": ["batch", saved["num_classes"]], "num_classes": saved["num_classes"]},
        "test_accuracy": saved.get("test_accuracy"),
        "test_split": saved.get("test_split"),
        "costs": measured_costs(out, saved),
        "onnx_opset": ONNX_OPSET,
        "torch": torch.__version__,
        "files": {"model": {"file": "model.pt", "sha256": sha256(out / "model.pt"),
                            "bytes": (out / "model.pt").stat().st_size}, **listing},
        "notes": "model.torchscript.pt is deprecated upstream (torch.jit); prefer model.pt2 or model.onnx.",
    }
    path = out / MODEL_JSON
    path.write_text(json.dumps(info, indent=2) + "\n")
    return path
