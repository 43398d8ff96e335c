"""The ``raynas`` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .config import ConfigError, load_config


def fail(message: str) -> None:
    """One error line on stderr, exit code 2."""
    print(f"raynas: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _search_overrides(args: argparse.Namespace) -> dict[str, Any]:
    pairs = [("space.name", args.space), ("evaluator.type", args.evaluator), ("evaluator.table", args.table),
             ("evaluator.reward_key", args.reward_key), ("algo", args.algo), ("budget", args.budget),
             ("seed", args.seed), ("out", args.out), ("ray_address", args.address),
             ("weight_sharing.epochs", args.epochs), ("weight_sharing.workers", args.workers),
             ("weight_sharing.gpus_per_worker", args.gpus_per_worker), ("data.data_dir", args.data_dir)]
    return {key: value for key, value in pairs if value is not None}


def cmd_search(args: argparse.Namespace) -> None:
    from .search import load_run_config, run_search

    try:
        if args.resume:
            cfg = load_run_config(Path(args.resume))
        else:
            cfg = load_config(args.config, _search_overrides(args))
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    try:
        summary = run_search(cfg, resume=bool(args.resume))
    except (KeyError, ValueError) as exc:  # e.g. an architecture missing from the table
        fail(f"{exc.args[0] if exc.args else exc} (results so far are in {cfg.out})")
    best = summary["best"]
    print(f"[raynas] done: best reward {best['reward']:.4f} at sample {best['sample']}: {best['arch']}")
    if cfg.uses_supernet:
        derived = json.loads((Path(cfg.out) / "best_arch.json").read_text())
        print(f"[raynas] derived architecture (validation accuracy {derived['valid_accuracy']:.4f} on the whole "
              f"validation split): {derived['arch']}")
    print(f"[raynas] results in {cfg.out}/")


def cmd_compare(args: argparse.Namespace) -> None:
    from .compare import resume_compare, run_compare
    from .ray_cluster import connect

    try:
        if args.resume:
            connect(args.address)
            grid = resume_compare(args.resume)
        else:
            cfg = load_config(args.config, _search_overrides(args))
            algos = [a.strip() for a in args.algos.split(",") if a.strip()]
            for algo in algos:
                load_config(args.config, {**_search_overrides(args), "algo": algo})  # names a bad one
            if args.seeds < 1:
                raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
            connect(cfg.ray_address, cfg.num_cpus)
            grid = run_compare(cfg, algos, args.seeds, args.storage, args.name)
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    from .report import report_at

    for result in grid:
        c = result.config
        status = f"error: {result.error}" if result.error else f"best {result.metrics.get('search/best_reward', float('nan')):.4f}"
        print(f"[raynas] {c['algo']:<10} seed {c['seed']}: {status}  ({result.path})")
    print(f"[raynas] experiment in {grid.experiment_path}")
    unfinished = [r for r in grid if r.error is None and not r.metrics.get("done")]
    if unfinished:  # Ctrl-C: Tune saved the experiment's state
        print(f"[raynas] interrupted with {len(unfinished)} trial(s) unfinished; continue with: "
              f"raynas compare --resume {grid.experiment_path}")
        raise SystemExit(130)
    try:
        print(f"[raynas] report: {report_at(grid.experiment_path)}")
    except ValueError as exc:  # e.g. every trial failed before evaluating anything
        print(f"[raynas] no report: {exc}")


def cmd_report(args: argparse.Namespace) -> None:
    from .report import report_at

    try:
        path = report_at(args.experiment, window=args.window)
    except ValueError as exc:
        fail(str(exc))
    print(f"[raynas] report: {path} (and report.html, reward_curves.png, best_curves.png)")


def cmd_make_table(args: argparse.Namespace) -> None:
    from controller_policy.landscapes import nb201_landscape

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(nb201_landscape(args.seed)))
    print(f"wrote a generated nb201 landscape (seed {args.seed}) to {args.out}")


def _jobs(address: str | None):
    from .jobs import JobsError, RaynasJobs

    try:
        return RaynasJobs(address)
    except JobsError as exc:
        fail(str(exc))


def _print_ended(record) -> None:
    line = f"[raynas] job {record.job_id} {record.status}"
    print(line + (f": {record.message}" if record.message and record.status != "SUCCEEDED" else ""))
    if record.status != "SUCCEEDED":
        raise SystemExit(1)


def cmd_submit(args: argparse.Namespace) -> None:
    from .jobs import JobsError

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    jobs = _jobs(args.address)
    try:
        job_id = jobs.submit(command, working_dir=args.working_dir, submission_id=args.job_id,
                             entrypoint_num_gpus=args.entrypoint_gpus)
        print(f"[raynas] submitted job {job_id} to {jobs.address}")
        if args.follow:
            _print_ended(jobs.follow(job_id, lambda chunk: print(chunk, end="", flush=True)))
        else:
            print(f"[raynas] follow it with: raynas jobs logs {job_id} --follow"
                  + (f" --address {args.address}" if args.address else ""))
    except JobsError as exc:
        fail(str(exc))


def cmd_jobs(args: argparse.Namespace) -> None:
    from datetime import datetime

    from .jobs import JobsError

    jobs = _jobs(args.address)
    try:
        if args.action == "list":
            for job in jobs.list():
                started = datetime.fromtimestamp(job.start_time).strftime("%Y-%m-%d %H:%M:%S") if job.start_time else "-"
                print(f"{job.job_id:<28} {job.status:<10} {started}  {job.entrypoint}")
            return
        if not args.job_id:
            fail(f"`raynas jobs {args.action}` needs a JOB_ID (see `raynas jobs list`)")
        if args.action == "status":
            job = jobs.status(args.job_id)
            print(f"{job.job_id} {job.status}" + (f": {job.message}" if job.message else ""))
        elif args.action == "logs":
            if args.follow:
                _print_ended(jobs.follow(args.job_id, lambda chunk: print(chunk, end="", flush=True)))
            else:
                print(jobs.logs(args.job_id), end="")
        elif args.action == "stop":
            stopped = jobs.stop(args.job_id)
            print(f"[raynas] job {args.job_id} " + ("stopping" if stopped else "had already ended"))
    except JobsError as exc:
        fail(str(exc))


def cmd_serve(args: argparse.Namespace) -> None:
    import signal
    import threading

    from .jobs import JobsError
    from .search_service import ServiceConfig, start_service
    from .service_client import read_token

    try:
        cfg = ServiceConfig(host=args.host, port=args.port, ray_address=args.ray_address, db=args.db,
                            runs_dir=args.runs_dir, token=read_token(args.token_file, args.token_env),
                            tls_cert=args.tls_cert, tls_key=args.tls_key, poll_interval_s=args.poll_interval)
        service = start_service(cfg)
    except (ValueError, JobsError) as exc:
        fail(str(exc))
    scheme = "TLS" if cfg.tls_cert else "plaintext"
    print(f"[raynas] search service on {cfg.host}:{service.port} ({scheme}"
          f"{', bearer token required' if cfg.token else ''}); records in {cfg.db}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    service.stop()
    print("[raynas] search service stopped (running searches go on as Ray jobs)")


CLIENT_SPEC_FLAGS = ("preset", "table", "reward_key", "data_dir")


def _client_request(args: argparse.Namespace):
    from .proto import raynas_pb2 as pb

    spec = pb.SearchSpec(**{k: getattr(args, k) for k in CLIENT_SPEC_FLAGS if getattr(args, k)})
    for flag, enum in (("space", pb.SearchSpace), ("algo", pb.Algorithm), ("evaluator", pb.Evaluator)):
        value = getattr(args, flag)
        if value:
            try:
                setattr(spec, "algorithm" if flag == "algo" else flag, enum.Value(value.upper()))
            except ValueError:
                fail(f"--{flag} {value}: choose {', '.join(n.lower() for n in enum.keys()[1:])}")
    for flag in ("budget", "seed", "epochs", "workers", "gpus_per_worker"):
        if getattr(args, flag) is not None:
            setattr(spec, flag, getattr(args, flag))
    if args.yaml:
        try:
            spec.yaml_overrides = Path(args.yaml).read_text()
        except OSError as exc:
            fail(f"--yaml {args.yaml}: {exc.strerror}")
    return pb.SubmitSearchRequest(spec=spec, name=args.name or "", idempotency_key=args.idempotency_key or "")


def cmd_client(args: argparse.Namespace) -> None:
    import grpc
    from google.protobuf.json_format import MessageToJson

    from .proto import raynas_pb2 as pb
    from .service_client import SearchClient, read_token

    try:
        token = read_token(args.token_file, args.token_env)
    except ValueError as exc:
        fail(str(exc))
    needs_id = args.action in ("get", "watch", "cancel", "result")
    if needs_id and not args.id:
        fail(f"`raynas client {args.action}` needs a search id (see `raynas client list`)")
    show = lambda message: print(MessageToJson(message, preserving_proto_field_name=True))  # noqa: E731
    with SearchClient(args.address, token, args.tls_ca, args.tls) as client:
        try:
            if args.action == "submit":
                show(client.call("SubmitSearch", _client_request(args)))
            elif args.action == "get":
                show(client.call("GetSearch", pb.GetSearchRequest(id=args.id)))
            elif args.action == "cancel":
                show(client.call("CancelSearch", pb.CancelSearchRequest(id=args.id)))
            elif args.action == "result":
                show(client.call("GetResult", pb.GetResultRequest(id=args.id)))
            elif args.action == "list":
                request = pb.ListSearchesRequest(states=[pb.SearchState.Value(s.upper()) for s in args.state or []],
                                                 name_prefix=args.name_prefix or "", page_size=args.page_size)
                while True:
                    page = client.call("ListSearches", request)
                    for s in page.searches:
                        best = f"{s.progress.best_reward:.4f}" if s.progress.has_best else "-"
                        print(f"{s.id}  {pb.SearchState.Name(s.state):<9}  {s.name:<20} epoch {s.progress.epoch:<4} "
                              f"archs {s.progress.archs_sampled:<6} best {best}")
                    if not page.next_page_token:
                        break
                    request.page_token = page.next_page_token
            elif args.action == "watch":
                final = None
                for p in client.watch(pb.WatchSearchRequest(id=args.id)):
                    final = p
                    best = f" best {p.best_reward:.4f} {p.best_arch}" if p.has_best else ""
                    print(f"[{pb.SearchState.Name(p.state)}] epoch {p.epoch} archs {p.archs_sampled}{best}", flush=True)
                if final is None or final.state != pb.SUCCEEDED:
                    search = client.call("GetSearch", pb.GetSearchRequest(id=args.id))
                    fail(f"search {args.id} ended {pb.SearchState.Name(search.state)}: {search.error}")
        except grpc.RpcError as exc:
            fail(f"{exc.code().name}: {exc.details()}")


def _parse_sets(pairs: list[str] | None) -> dict[str, Any]:
    import yaml

    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--set {pair!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            fail(f"--set {pair!r}: the value is not valid YAML")
    return overrides


def cmd_retrain(args: argparse.Namespace) -> None:
    from .config import RetrainConfig
    from .retrain import load_architecture, outputs, run_retrain

    overrides = _parse_sets(args.set)
    for key, value in (("data.data_dir", args.data_dir), ("out", args.out), ("gpus", args.gpus),
                       ("workers", args.workers), ("train.epochs", args.epochs), ("ray_address", args.address)):
        if value is not None:
            overrides[key] = value
    try:
        cfg = load_config(args.config, overrides, RetrainConfig)
        load_architecture(cfg, args.arch)  # a bad file fails here, before Ray starts
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    try:
        metrics = run_retrain(cfg, args.arch)
    except (RuntimeError, ValueError) as exc:
        fail(str(exc))
    files = outputs(cfg)
    print(f"[raynas] retrained {metrics['epoch']} epochs: test accuracy {metrics['test_accuracy']:.4f} "
          f"(train {metrics['train_accuracy']:.4f}, {metrics['wall_time']:.0f} s)")
    print(f"[raynas] {files['metrics']}, {files['model']}, {files['torchscript']}")


def cmd_show(args: argparse.Namespace) -> None:
    from .show import draw

    try:
        path = draw(args.arch, args.format, args.out, args.space, _parse_sets(args.set))
    except (ConfigError, ValueError) as exc:
        fail(str(exc))
    print(f"[raynas] {path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raynas", description="Distributed ENAS with a PPO controller on Ray")
    sub = parser.add_subparsers(dest="command", required=True)

    search = sub.add_parser("search", help="run one architecture search")
    search.add_argument("--config", help="YAML config (flags override it)")
    search.add_argument("--space", help="enas_macro | enas_micro | nb201")
    search.add_argument("--evaluator", help="table")
    search.add_argument("--table", help="JSON table for --evaluator table")
    search.add_argument("--reward-key", help="metric of the table used as reward")
    search.add_argument("--algo", help="ppo | reinforce | random")
    search.add_argument("--budget", type=int, help="architectures to evaluate")
    search.add_argument("--seed", type=int)
    search.add_argument("--out", help="output directory")
    search.add_argument("--address", help="Ray cluster address (default: a running one, else embedded)")
    search.add_argument("--epochs", type=int, help="ENAS epochs (weight sharing)")
    search.add_argument("--workers", type=int, help="supernet workers (weight sharing)")
    search.add_argument("--gpus-per-worker", type=float, help="GPUs per supernet worker")
    search.add_argument("--data-dir", help="dataset directory (train.npz/test.npz or cifar-10-batches-py/)")
    search.add_argument("--resume", metavar="DIR", help="continue the interrupted search in DIR")
    search.set_defaults(func=cmd_search)

    compare = sub.add_parser("compare", help="one Tune experiment: a trial per (algorithm, seed)")
    compare.add_argument("--config", help="YAML config of the search every trial runs")
    compare.add_argument("--algos", default="ppo,reinforce,random")
    compare.add_argument("--seeds", type=int, default=3)
    compare.add_argument("--storage", default="runs/tune", help="local directory or pyarrow URI (s3://...)")
    compare.add_argument("--name", default="compare")
    compare.add_argument("--resume", metavar="PATH", help="continue the interrupted experiment at PATH")
    for flag in ("--space", "--evaluator", "--table", "--reward-key", "--budget", "--out", "--address", "--epochs",
                 "--workers", "--gpus-per-worker", "--data-dir"):
        compare.add_argument(flag, type=int if flag in ("--budget", "--epochs", "--workers") else
                             float if flag == "--gpus-per-worker" else str)
    compare.set_defaults(func=cmd_compare, algo=None, seed=None)

    report = sub.add_parser("report", help="plots, tables and a verdict for a compare experiment")
    report.add_argument("experiment", help="the experiment directory (<storage>/<name>)")
    report.add_argument("--window", type=int, default=None, help="architectures per point of the mean-reward curve")
    report.set_defaults(func=cmd_report)

    submit = sub.add_parser("submit", help="run a raynas command as a Ray job on a cluster",
                            usage="raynas submit [--address URL] [--follow] -- raynas search --config ...")
    submit.add_argument("--address", help="the head's Jobs API, http://HEAD:8265 (default: RAY_ADDRESS or local)")
    submit.add_argument("--working-dir", default=".", help="directory shipped as the job's working directory")
    submit.add_argument("--job-id", help="submission id (default: generated); submitting an existing one fails")
    submit.add_argument("--entrypoint-gpus", type=float, help="GPUs reserved for the job's driver")
    submit.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    submit.add_argument("command", nargs=argparse.REMAINDER, help="-- then the raynas command to run")
    submit.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="list, inspect, follow and stop submitted jobs")
    jobs.add_argument("action", choices=["list", "status", "logs", "stop"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--address", help="the head's Jobs API, http://HEAD:8265")
    jobs.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    jobs.set_defaults(func=cmd_jobs)

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
    retrain.set_defaults(func=cmd_retrain)

    show = sub.add_parser("show", help="draw an architecture (png, svg or Graphviz dot)")
    show.add_argument("arch", help="architecture file")
    show.add_argument("--format", choices=["png", "svg", "dot"], default="png")
    show.add_argument("--out", help="output file (default: beside the architecture file)")
    show.add_argument("--space", help="the space, when the file does not say (a string or a bare list)")
    show.add_argument("--set", action="append", metavar="KEY=VALUE", help="space.params.*, e.g. space.params.num_layers=12")
    show.set_defaults(func=cmd_show)

    serve = sub.add_parser("serve", help="the gRPC search service (searches run as Ray jobs)")
    serve.add_argument("--host", default="127.0.0.1", help="other than loopback needs a token")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument("--ray-address", help="the head's Jobs API, http://HEAD:8265 (default: RAY_ADDRESS or local)")
    serve.add_argument("--db", default="runs/service/searches.db", help="the service's SQLite records")
    serve.add_argument("--runs-dir", default="runs/service/searches",
                       help="searches write below it (a disk the cluster and the service share)")
    serve.add_argument("--token-file", help="bearer token clients must send (first line of the file)")
    serve.add_argument("--token-env", help="... or the name of an environment variable holding it")
    serve.add_argument("--tls-cert", help="server certificate (PEM); with --tls-key: TLS")
    serve.add_argument("--tls-key", help="server private key (PEM)")
    serve.add_argument("--poll-interval", type=float, default=1.0, help="seconds between looks at Ray's jobs")
    serve.set_defaults(func=cmd_serve)

    client = sub.add_parser("client", help="talk to a raynas search service")
    client.add_argument("action", choices=["submit", "get", "list", "watch", "cancel", "result"])
    client.add_argument("id", nargs="?", help="search id (get, watch, cancel, result)")
    client.add_argument("--address", default="127.0.0.1:50051")
    client.add_argument("--token-file")
    client.add_argument("--token-env")
    client.add_argument("--tls", action="store_true", help="TLS with the system's root certificates")
    client.add_argument("--tls-ca", help="TLS, trusting this CA certificate (PEM)")
    for flag in ("--preset", "--space", "--algo", "--evaluator", "--table", "--reward-key", "--data-dir", "--name",
                 "--idempotency-key"):
        client.add_argument(flag, help="submit")
    client.add_argument("--yaml", help="submit: a YAML file of overrides (the layout of configs/*.yaml)")
    for flag in ("--budget", "--seed", "--epochs", "--workers"):
        client.add_argument(flag, type=int, help="submit")
    client.add_argument("--gpus-per-worker", type=float, help="submit")
    client.add_argument("--state", action="append", help="list: only these states (repeatable)")
    client.add_argument("--name-prefix", help="list")
    client.add_argument("--page-size", type=int, default=50, help="list")
    client.set_defaults(func=cmd_client)

    table = sub.add_parser("make-table", help="write a generated NAS-Bench-201-shaped landscape (for trying things)")
    table.add_argument("--seed", type=int, default=0)
    table.add_argument("--out", required=True)
    table.set_defaults(func=cmd_make_table)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
