"""``raynas search``, ``compare``, ``report`` and ``make-table``: searches run from here."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from controller_policy.settings import ALGORITHM_NAMES

from ..interrupts import tune_takes_the_first_interrupt
from .common import EVALUATORS, SPACE_NAMES, fail, parse_sets

# Options --resume cannot honour (it continues what config.json says), and compare's defaults.
RESUME_CONFLICTS = ("config", "set", "verbose", "space", "evaluator", "table", "reward_key", "algo", "budget",
                    "budget_mode", "seed", "out", "epochs", "workers", "gpus_per_worker", "data_dir", "algos", "seeds",
                    "storage", "name", "max_params_m", "max_flops_m", "max_latency_ms", "latency_table")
DEFAULTS = {"algos": "ppo,reinforce,random", "seeds": 3, "storage": "runs/tune", "name": "compare"}


def _search_options(parser: argparse.ArgumentParser) -> None:
    """What `search` and `compare` share: the config and what overrides it."""
    parser.add_argument("--config", help="YAML config, e.g. configs/quick-cpu.yaml")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override any config key, typed and checked like the YAML (repeatable), "
                             "e.g. --set weight_sharing.archs_per_epoch=32")
    parser.add_argument("--space", choices=SPACE_NAMES)
    parser.add_argument("--evaluator", choices=EVALUATORS, help="table: NAS-Bench-style lookups; supernet: ENAS")
    parser.add_argument("--table", help="JSON table for --evaluator table")
    parser.add_argument("--reward-key", help="metric of the table used as reward")
    parser.add_argument("--budget", type=int, help="architectures to evaluate")
    parser.add_argument("--budget-mode", choices=["all", "unique"],
                        help="all: every evaluation counts; unique: repeats are answered from a cache for free (tables)")
    parser.add_argument("--address", help="Ray cluster address (default: a running one, else embedded)")
    parser.add_argument("--epochs", type=int, help="ENAS epochs (weight sharing)")
    parser.add_argument("--workers", type=int, help="supernet workers (weight sharing)")
    parser.add_argument("--gpus-per-worker", type=float, help="GPUs per supernet worker")
    parser.add_argument("--data-dir", help="dataset directory (train.npz/test.npz or cifar-10-batches-py/)")
    parser.add_argument("--max-params-m", type=float, metavar="M",
                        help="only children with at most M million parameters (a hard constraint)")
    parser.add_argument("--max-flops-m", type=float, metavar="M",
                        help="only children of at most M million FLOPs per image (a hard constraint)")
    parser.add_argument("--max-latency-ms", type=float, metavar="MS",
                        help="only children predicted to run in at most MS milliseconds (a hard constraint; "
                             "needs --latency-table)")
    parser.add_argument("--latency-table", metavar="FILE", help="op latencies on the target device (raynas profile)")
    parser.add_argument("--verbose", action="store_true", default=None,
                        help="also show the Ray/RLlib/Tune messages raynas drops by default")


def _refuse_with_resume(args: argparse.Namespace, what: str, honoured: tuple[str, ...] = ()) -> None:
    """--resume continues what was configured: other options would be silently ignored, so refuse them
    (all but the ``honoured`` ones, which the resumed run applies)."""
    given = [f"--{key.replace('_', '-')}" for key in RESUME_CONFLICTS
             if key not in honoured and getattr(args, key, None) not in (None, [], DEFAULTS.get(key))]
    if given:
        fail(f"--resume continues the {what} as it was configured; drop {', '.join(given)} "
             "(or start a new one without --resume)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set pairs, then the flags; a key given both ways is refused (which one was meant?)."""
    overrides = parse_sets(args.set)
    for key, value in _search_overrides(args).items():
        given = [k for k in overrides if k == key or k.startswith(key + ".")]
        if given:
            fail(f"{key} is given twice (a flag and --set {given[0]}=...): keep one")
        overrides[key] = value
    return overrides


def _search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [("space.name", args.space), ("evaluator.type", args.evaluator), ("evaluator.table", args.table),
             ("evaluator.reward_key", args.reward_key), ("algo", args.algo), ("budget", args.budget),
             ("budget_mode", args.budget_mode),
             ("seed", args.seed), ("out", args.out), ("ray_address", args.address),
             ("weight_sharing.epochs", args.epochs), ("weight_sharing.workers", args.workers),
             ("weight_sharing.gpus_per_worker", args.gpus_per_worker), ("data.data_dir", args.data_dir),
             ("verbose", args.verbose),
             ("objective.latency_table", args.latency_table),
             *((f"objective.constraints.{cost}", None if limit is None else {"target": limit, "mode": "hard"})
               for cost, limit in (("params_m", args.max_params_m), ("flops_m", args.max_flops_m),
                                   ("latency_ms", args.max_latency_ms)))]
    return {key: value for key, value in pairs if value is not None}


def search_config(args: argparse.Namespace):
    """The ``SearchConfig`` a ``search``/``compare`` command line means (ConfigError when invalid), its
    table and data directory absolute: trials run in directories of their own."""
    from ..config import load_config
    from ..inputs import resolve_paths

    return resolve_paths(load_config(args.config, _overrides(args)))


def resume_config(args: argparse.Namespace):
    """The saved config of ``search --resume DIR``, on the cluster ``--address`` names (the machine
    may have changed) and as verbose as ``--verbose`` asks; nothing else changes."""
    import dataclasses

    from ..config import load_run_config

    cfg = load_run_config(Path(args.resume))
    if args.address is not None:
        cfg = dataclasses.replace(cfg, ray_address=args.address)
    if args.verbose:
        cfg = dataclasses.replace(cfg, verbose=True)
    return cfg


def _results_so_far(out: str) -> str:
    """What a failed search says of its output directory: where its results are, if it wrote any."""
    return f" (results so far are in {out})" if (Path(out) / "trajectory.jsonl").is_file() else ""


def search_interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    """How an interrupted search goes on: from its newest complete checkpoint, if it wrote one."""
    from ..inputs import latest_checkpoint

    try:
        out = Path(args.resume) if args.resume else Path(search_config(args).out)
    except ValueError:
        return ""
    if latest_checkpoint(out) is None:
        return "no checkpoint was written yet: run the same command again to start over"
    address = f" --address {args.address}" if args.address else ""
    return f"resume with: raynas search --resume {out}{address}"


def compare_interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    from ..inputs import COMPARE_CONFIG

    path = args.resume or f"{args.storage.rstrip('/')}/{args.name}"
    if "://" not in path and not (Path(path) / COMPARE_CONFIG).is_file():
        return "no experiment was started yet: run the same command again"
    return f"resume with: raynas compare --resume {path}"


def cmd_search(args: argparse.Namespace) -> None:
    # Everything a command line can get wrong is checked before torch and Ray are imported (seconds).
    from ..config import ConfigError
    from ..inputs import check_inputs

    if args.resume:
        _refuse_with_resume(args, "search", honoured=("verbose",))
    try:
        cfg = resume_config(args) if args.resume else search_config(args)
        check_inputs(cfg)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    from ..search import run_search

    try:
        summary = run_search(cfg, resume=bool(args.resume))
    except ConnectionError as exc:  # the named cluster does not answer
        fail(str(exc))
    except (KeyError, ValueError) as exc:  # e.g. an architecture missing from the table
        fail(f"{exc.args[0] if exc.args else exc}{_results_so_far(cfg.out)}")
    from .summary import search_summary

    print("\n".join(search_summary(cfg, summary)))


def cmd_compare(args: argparse.Namespace) -> None:
    from ..config import ConfigError, load_config
    from ..inputs import check_experiment, check_inputs

    if args.resume:
        _refuse_with_resume(args, "experiment")
    try:  # what a command line can get wrong, before torch and Ray are imported
        if args.resume:
            check_experiment(args.resume)
        else:
            cfg = search_config(args)
            algos = [a.strip() for a in args.algos.split(",") if a.strip()]
            if not algos:
                raise ConfigError(f"--algos names no algorithm, got {args.algos!r}")
            for algo in algos:
                load_config(args.config, {**_overrides(args), "algo": algo})  # names a bad one
            if args.seeds < 1:
                raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
            check_inputs(cfg)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    from ..experiments.compare import resume_compare, run_compare
    from ..ray_cluster import connect

    try:
        if args.resume:
            connect(args.address)
            with tune_takes_the_first_interrupt():
                grid = resume_compare(args.resume)
        else:
            connect(cfg.ray_address, cfg.num_cpus, verbose=cfg.verbose)
            with tune_takes_the_first_interrupt():
                grid = run_compare(cfg, algos, args.seeds, args.storage, args.name)
    except (ConfigError, ValueError, ConnectionError) as exc:
        fail(str(exc))
    from ..experiments.report import report_at

    # The search's own flag, reported with every result: Tune adds its `done` to a trial's last
    # result after the fact, and a restored experiment was seen in CI with a finished trial without it.
    unfinished = [r for r in grid if r.error is None and not (r.metrics or {}).get("search/done")]
    if unfinished:  # Ctrl-C: Tune saved the experiment's state (a trial not started yet has no metrics)
        print(f"raynas: interrupted with {len(unfinished)} of {len(grid)} trials unfinished; resume with: "
              f"raynas compare --resume {grid.experiment_path}", file=sys.stderr, flush=True)
        raise SystemExit(130)
    failed = [r for r in grid if r.error is not None]
    for result in grid:
        c = result.config
        if result.error is None:
            print(f"[raynas] {c['algo']:<10} seed {c['seed']}: best "
                  f"{result.metrics.get('search/best_reward', float('nan')):.4f}  ({result.path})")
        else:
            print(f"[raynas] {c['algo']:<10} seed {c['seed']}: failed: {error_line(result.error)}  "
                  f"(traceback: {result.path}/error.txt)")
    print(f"[raynas] experiment in {grid.experiment_path}")
    try:
        report = report_at(grid.experiment_path)  # a path or a URI (s3://...): kept a string
    except ValueError as exc:  # e.g. every trial failed before evaluating anything
        print(f"[raynas] no report: {exc}")
    else:
        print("\n".join(findings_lines(report)))
        print(f"[raynas] next   open {report.location.removesuffix('.md')}.html (the verdict, curves and table); "
              f"raynas report {grid.experiment_path} --window N redraws the curves")
    if failed:
        print(f"raynas: error: {len(failed)} of {len(grid)} trials failed (their lines above say why)", file=sys.stderr)
        raise SystemExit(1)


def error_line(error: BaseException) -> str:
    """A trial's error in one line: the exception raised in the trial, not Ray's wrapping of it."""
    cause = getattr(error, "cause", None) or error
    text = str(cause.args[0]) if isinstance(cause, KeyError) and cause.args else str(cause)
    return f"{type(cause).__name__}: {text.strip().splitlines()[0] if text.strip() else '(no message)'}"


def findings_lines(report) -> list[str]:
    """The verdict and the best architecture of an experiment, as `compare` and `report` end."""
    best = report.best
    return [f"[raynas] {report.ranking}",
            f"[raynas] found  {best['arch']}",
            f"[raynas]        {best['score']:.4f}: {best['criterion']} ({best['algo']} seed {best['seed']}, "
            f"trial {best['trial']})",
            f"[raynas] report {report.location}"]


def cmd_report(args: argparse.Namespace) -> None:
    from ..experiments.report import report_at

    try:
        report = report_at(args.experiment, window=args.window)
    except ValueError as exc:
        fail(str(exc))
    print("\n".join(findings_lines(report)) + " (and report.html, reward_curves.png, best_curves.png)")


def cmd_make_table(args: argparse.Namespace) -> None:
    from controller_policy.landscapes import nb201_landscape

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(nb201_landscape(args.seed)))
    print(f"wrote a generated nb201 landscape (seed {args.seed}) to {args.out}")


def add_search_commands(sub: argparse._SubParsersAction) -> None:
    search = sub.add_parser("search", help="run one architecture search",
                            description="Run one architecture search: the YAML config, overridden by --set and the flags "
                                        "(a key given both ways is refused).")
    search.add_argument("--algo", choices=ALGORITHM_NAMES, help="the controller (default: the config's, else ppo)")
    search.add_argument("--seed", type=int)
    search.add_argument("--out", help="output directory")
    _search_options(search)
    search.add_argument("--resume", metavar="DIR",
                        help="continue the interrupted search in DIR, as it was configured (no other options but "
                             "--address and --verbose)")
    search.set_defaults(func=cmd_search, config_of=search_config, on_interrupt=search_interrupted)

    compare = sub.add_parser("compare", help="one Tune experiment: a trial per (algorithm, seed)",
                             description="One Tune experiment: every algorithm runs the same search with each seed.")
    compare.add_argument("--algos", default=DEFAULTS["algos"],
                         help=f"comma-separated, of {', '.join(ALGORITHM_NAMES)} (default: %(default)s)")
    compare.add_argument("--seeds", type=int, default=DEFAULTS["seeds"], help="seeds 0..N-1 per algorithm (default: %(default)s)")
    compare.add_argument("--storage", default=DEFAULTS["storage"], help="local directory or pyarrow URI (s3://...)")
    compare.add_argument("--name", default=DEFAULTS["name"], help="the experiment's directory below --storage")
    _search_options(compare)
    compare.add_argument("--resume", metavar="PATH",
                         help="continue the interrupted experiment at PATH, as it was configured (no other options)")
    compare.set_defaults(func=cmd_compare, config_of=search_config, algo=None, seed=None, out=None,
                         on_interrupt=compare_interrupted)

    report = sub.add_parser("report", help="plots, tables and a verdict for a compare experiment")
    report.add_argument("experiment", help="the experiment directory (<storage>/<name>)")
    report.add_argument("--window", type=int, default=None, help="architectures per point of the mean-reward curve")
    report.set_defaults(func=cmd_report)

    table = sub.add_parser("make-table", help="write a generated NAS-Bench-201-shaped landscape (for trying things)",
                           description="Write a generated table over all 15,625 NAS-Bench-201 cells, in the format "
                                       "--evaluator table reads ({\"<cell string>\": {\"valid\": .., \"test\": ..}}): "
                                       "additive per-edge op values plus pairwise interactions and noise. For trying "
                                       "searches in seconds; not a benchmark.")
    table.add_argument("--seed", type=int, default=0, help="the landscape's seed (default: %(default)s)")
    table.add_argument("--out", required=True, help="the JSON file to write")
    table.set_defaults(func=cmd_make_table)
