"""``raynas retrain``, ``export`` and ``show``: what to do with a found architecture; ``profile``: what
its ops cost on a device."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from .common import SPACE_NAMES, fail, parse_sets, run_again


def retrain_config(args: argparse.Namespace):
    """The ``RetrainConfig`` a ``retrain`` command line means (ConfigError when invalid)."""
    from ..config import RetrainConfig, load_config

    if args.gpus and args.workers is not None:  # --workers would be silently ignored
        fail("--gpus N runs N workers with a GPU each; --workers counts CPU workers: give one of them")
    overrides = parse_sets(args.set)
    for key, value in (("data.data_dir", args.data_dir), ("out", args.out), ("gpus", args.gpus),
                       ("workers", args.workers), ("train.epochs", args.epochs), ("ray_address", args.address),
                       ("verbose", args.verbose)):
        if value is not None:
            overrides[key] = value
    return load_config(args.config, overrides, RetrainConfig)


def cmd_retrain(args: argparse.Namespace) -> None:
    from ..config import ConfigError
    from ..retrain import load_architecture, outputs, run_retrain

    try:
        cfg = retrain_config(args)
        load_architecture(cfg, args.arch)  # a bad file fails here, before Ray starts
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    try:
        metrics = run_retrain(cfg, args.arch)
    except (RuntimeError, ValueError) as exc:
        fail(str(exc))
    from supernet_worker.retrain import describe_test_split

    files = outputs(cfg)
    model_json = json.loads(files["model_json"].read_text())
    print(f"[raynas] found  {model_json['architecture']['string']} ({model_json['space']['name']}), retrained from "
          "scratch")
    print(f"[raynas]        {metrics['epoch']} epochs: test accuracy {metrics['test_accuracy']:.4f} on "
          f"{describe_test_split(cfg.data)} (train {metrics['train_accuracy']:.4f}, {metrics['wall_time']:.0f} s)")
    written = [path.name for key, path in files.items() if key != "metrics" and path.exists()]
    print(f"[raynas] files  {files['model'].parent}/: metrics.csv, {', '.join(written)}")
    for fmt, entry in model_json["files"].items():
        if entry.get("file") is None:
            print(f"[raynas]        {fmt}: {entry['reason']}")
    print(f"[raynas] next   load {files['model'].parent / 'model.pt2'} with torch.export.load, or model.onnx with "
          "onnxruntime (README: Deploy the found network)")


def cmd_export(args: argparse.Namespace) -> None:
    from supernet_worker.export import FORMATS
    from supernet_worker.retrain import export_model, load_model

    model = Path(args.model)
    if not model.is_file():
        fail(f"{model}: no such file (a model.pt that raynas retrain wrote)")
    out = Path(args.out) if args.out else model.parent / FORMATS[args.format]
    if out.is_dir():
        out = out / FORMATS[args.format]
    try:
        load_model(model)
    except Exception as exc:  # torch.load of an arbitrary file raises anything from pickle to zip errors
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        fail(f"{model}: not a model.pt written by raynas retrain ({type(exc).__name__}: {reason})")
    written = export_model(model, [args.format], out.parent, names={args.format: out.name})
    if written[args.format].startswith("not written"):
        fail(written[args.format][len("not written: "):])
    print(f"[raynas] {written[args.format]}")


def cmd_profile(args: argparse.Namespace) -> None:
    """Time every candidate op of the space's skeleton on the device: a latency table for
    ``objective.constraints.latency_ms`` (see supernet_worker/latency.py)."""
    from ..config import ConfigError, load_config

    overrides = parse_sets(args.set)
    for key, value in (("space.name", args.space), ("data.data_dir", args.data_dir), ("objective.device", args.device)):
        if value is not None:
            overrides[key] = value
    try:
        # validated as a table search's config (no dataset required), then read for its skeleton
        cfg = load_config(args.config, overrides | {"evaluator.type": "table", "evaluator.table": "(profiling)"})
        if cfg.data.data_dir or cfg.data.source == "synthetic":  # the input of the dataset named
            cfg = dataclasses.replace(cfg, evaluator=dataclasses.replace(cfg.evaluator, type="supernet"))
        skeleton = cfg.cost_skeleton()  # else CIFAR-10's, as for a table
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if args.repeats < 1 or args.warmup < 0 or (args.threads is not None and args.threads < 1):
        fail("--repeats must be >= 1, --warmup >= 0 and --threads >= 1")
    out = Path(args.out)
    from supernet_worker.latency import Timing, profile

    print(f"[raynas] profiling {skeleton.space} ops ({skeleton.supernet.channels} filters, "
          f"{skeleton.in_channels}x{skeleton.image_size}x{skeleton.image_size} input) on {cfg.objective.device}",
          flush=True)
    try:
        table = profile(skeleton, cfg.objective.device, Timing(args.warmup, args.repeats, 1, args.threads),
                        log=lambda message: print(f"[raynas] {message}", flush=True))
    except ValueError as exc:
        fail(str(exc))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(table, indent=1) + "\n")
    print(f"[raynas] {len(table['ops_ms'])} ops timed, fixed part {table['fixed_ms']:.3f} ms "
          f"({table['device_name']}): {out}")
    print(f"[raynas] next   raynas search ... --latency-table {out} --max-latency-ms MS")


def cmd_show(args: argparse.Namespace) -> None:
    from ..config import ConfigError
    from ..show import draw

    try:
        path = draw(args.arch, args.format, args.out, args.space, parse_sets(args.set), rank=args.rank)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    if path is not None:  # not to stdout
        print(f"[raynas] {path}")


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    retrain = sub.add_parser("retrain", help="train a found architecture from scratch (Ray Train)")
    retrain.add_argument("arch", help="architecture file (best_arch.json, JSON structure or string)")
    retrain.add_argument("--config", required=True, help="retrain preset, e.g. configs/retrain-micro.yaml")
    retrain.add_argument("--data-dir")
    retrain.add_argument("--out", help="output directory; the same --out again resumes")
    retrain.add_argument("--gpus", type=int, help="data-parallel workers with one GPU each")
    retrain.add_argument("--workers", type=int, help="data-parallel CPU workers (without --gpus)")
    retrain.add_argument("--epochs", type=int)
    retrain.add_argument("--address", help="Ray cluster address")
    retrain.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    retrain.add_argument("--verbose", action="store_true", default=None,
                         help="also show Ray Train's own messages (resources, process groups, checkpoints)")
    retrain.set_defaults(func=cmd_retrain, config_of=retrain_config,
                         on_interrupt=run_again("resume with (it goes on from its newest checkpoint)"))

    export = sub.add_parser("export", help="re-export a retrained model.pt (torch.export, ONNX or TorchScript)")
    export.add_argument("model", help="model.pt written by raynas retrain")
    export.add_argument("--format", required=True, choices=["pt2", "onnx", "torchscript"],
                        help="pt2: torch.export program; onnx: ONNX (opset 18, needs raynas[export]); "
                             "torchscript: deprecated upstream")
    export.add_argument("--out", help="file (or directory) to write; default: beside MODEL as model.<format>")
    export.set_defaults(func=cmd_export)

    prof = sub.add_parser("profile", help="time every candidate op on a device: a latency table for "
                                          "--max-latency-ms")
    prof.add_argument("--config", help="the search config whose skeleton (supernet, data) to profile")
    prof.add_argument("--space", choices=SPACE_NAMES)
    prof.add_argument("--data-dir", help="the dataset the search reads (its image size and classes)")
    prof.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key (repeatable)")
    prof.add_argument("--device", choices=["cpu", "cuda"], help="default: the config's objective.device (cpu)")
    prof.add_argument("--threads", type=int, help="torch CPU threads while timing (default: torch's)")
    prof.add_argument("--repeats", type=int, default=50, help="timed calls per op (the median is kept)")
    prof.add_argument("--warmup", type=int, default=10, help="untimed calls first")
    prof.add_argument("--out", required=True, help="the latency table to write (JSON)")
    prof.set_defaults(func=cmd_profile)

    show = sub.add_parser("show", help="draw an architecture (png, svg or Graphviz dot)")
    show.add_argument("arch", help="best_arch.json, top_archs.json, summary.json (its best), a line of "
                                    "trajectory.jsonl in a file, or an architecture's JSON structure or string")
    show.add_argument("--rank", type=int, default=1, help="top_archs.json: the architecture of this rank (default 1)")
    show.add_argument("--format", choices=["png", "svg", "dot"], default="png")
    show.add_argument("--out", help="output file (default: beside the architecture file); - writes to stdout")
    show.add_argument("--space", help="the space, when the file does not say (a string or a bare list)")
    show.add_argument("--set", action="append", metavar="KEY=VALUE", help="space.params.*, e.g. space.params.num_layers=12")
    show.set_defaults(func=cmd_show)
