"""The ``raynas`` commands that run things elsewhere: a cluster's Jobs API (``submit``, ``jobs``)
and the gRPC search service (``serve``; its client is ``client.py``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import UsageError, fail, run_again


def _jobs(address: str | None):
    from ..jobs import JobsError, RaynasJobs

    try:
        return RaynasJobs(address)
    except JobsError as exc:
        fail(str(exc))


def _print_ended(record) -> None:
    line = f"[raynas] job {record.job_id} {record.status}"
    print(line + (f": {record.message}" if record.message and record.status != "SUCCEEDED" else ""))
    if record.status != "SUCCEEDED":
        raise SystemExit(1)


def check_job_command(command: list[str], working_dir: str) -> None:
    """The job's command, checked here as the job would check it when it starts (minutes later, on
    the cluster): parsed by the real parser, and the config it names, with its flags and --set,
    validated. A relative --config must be in the working directory the job runs in; an absolute
    one that is not here may be on the cluster, so only the job can check it."""
    from ..config import ConfigError
    from ..jobs import JobsError, entrypoint
    from . import build_parser

    try:
        entrypoint(command)
        args = build_parser().parse_args(command[1:] if command[0] == "raynas" else command)
    except (JobsError, UsageError) as exc:
        fail(f"the job's command: {exc}")
    config_of = getattr(args, "config_of", None)
    if config_of is None or getattr(args, "resume", None):
        return  # nothing to validate here (--resume reads the config the search saved, on the cluster)
    if args.config:
        path = Path(args.config) if Path(args.config).is_absolute() else Path(working_dir) / args.config
        if not path.is_file():
            if Path(args.config).is_absolute():
                return
            fail(f"the job's --config {args.config}: no such file in the working directory {working_dir} "
                 "(the job runs there: see --working-dir)")
        args.config = str(path)
    try:
        config_of(args)
    except (ConfigError, ValueError) as exc:
        fail(f"the job's command: {exc}")


def cmd_submit(args: argparse.Namespace) -> None:
    from ..jobs import JobsError

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    check_job_command(command, args.working_dir)
    jobs = _jobs(args.address)
    try:
        job_id = jobs.submit(command, working_dir=args.working_dir, submission_id=args.job_id,
                             entrypoint_num_gpus=args.entrypoint_gpus)
        print(f"[raynas] submitted job {job_id} to {jobs.address}", flush=True)
        args.submitted = job_id  # what a Ctrl-C while following names
        if args.follow:
            _print_ended(jobs.follow(job_id, lambda chunk: print(chunk, end="", flush=True)))
        else:
            print(f"[raynas] follow it with: raynas jobs logs {job_id} --follow"
                  + (f" --address {args.address}" if args.address else ""))
    except JobsError as exc:
        fail(str(exc))


def submit_interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    job_id = getattr(args, "submitted", None)
    if job_id is None:
        return "nothing was submitted"
    address = f" --address {args.address}" if args.address else ""
    return (f"job {job_id} goes on; follow it with: raynas jobs logs {job_id} --follow{address} (stop it with: "
            f"raynas jobs stop {job_id}{address})")


def jobs_interrupted(args: argparse.Namespace, argv: list[str]) -> str:
    return run_again("the job goes on; follow it again with")(args, argv) if args.follow else ""


def cmd_jobs(args: argparse.Namespace) -> None:
    from datetime import datetime

    from ..jobs import JobsError

    if args.follow and args.action != "logs":
        fail(f"--follow goes with `raynas jobs logs`, not `{args.action}`")
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

    from ..api.client import read_token
    from ..api.server import ServiceConfig, start_service
    from ..jobs import JobsError

    try:
        cfg = ServiceConfig(host=args.host, port=args.port, ray_address=args.ray_address, db=args.db,
                            runs_dir=args.runs_dir, token=read_token(args.token_file, args.token_env),
                            tls_cert=args.tls_cert, tls_key=args.tls_key, insecure=args.insecure,
                            data_roots=args.data_root or [], max_table_bytes=int(args.max_table_mb * (1 << 20)),
                            max_active=args.max_active, max_watch_streams=args.max_watch_streams,
                            max_concurrent_rpcs=args.max_concurrent_rpcs,
                            poll_interval_s=args.poll_interval).validate()  # before any Ray head starts
    except ValueError as exc:
        fail(str(exc))
    head = _local_head_unless_a_cluster(cfg)
    try:
        service = start_service(cfg)
    except (ValueError, JobsError) as exc:
        if head is not None:
            head.cleanup()
        fail(str(exc))
    scheme = "TLS" if cfg.tls_cert else "plaintext" + (", --insecure" if not cfg.is_loopback else "")
    print(f"[raynas] search service on {cfg.host}:{service.port} ({scheme}"
          f"{', bearer token required' if cfg.token else ''}); records in {cfg.db}", flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    service.stop()
    if head is not None:
        head.cleanup()
        print("[raynas] search service and its local Ray head stopped")
    else:
        print("[raynas] search service stopped (running searches go on as Ray jobs)")


def _local_head_unless_a_cluster(cfg):
    """``--ray-address URL``: that cluster, never a head of our own. ``local``: always our own head.
    None: the cluster RAY_ADDRESS names, else one running here, else our own head (stopped on exit)."""
    import os

    from ..jobs import JobsError, RaynasJobs
    from ..ray_cluster import LocalRayHead

    if cfg.ray_address not in (None, "local"):
        return None
    if cfg.ray_address is None:
        if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_API_SERVER_ADDRESS"):
            return None  # as Ray reads them; an unreachable one fails in start_service, naming it
        try:
            RaynasJobs(None).ping()
            return None
        except JobsError:
            pass
    print("[raynas] no Ray cluster to use: starting a local Ray head (its dashboard on 127.0.0.1)", flush=True)
    try:
        head = LocalRayHead().start()
    except RuntimeError as exc:
        fail(f"could not start a local Ray head: {exc}")
    cfg.ray_address = head.jobs_url
    print(f"[raynas] local Ray head: Jobs API at {head.jobs_url}; it stops with the service", flush=True)
    return head


def add_remote_commands(sub: argparse._SubParsersAction) -> None:
    submit = sub.add_parser("submit", help="run a raynas command as a Ray job on a cluster",
                            usage="raynas submit [--address URL] [--follow] -- raynas search --config ...")
    submit.add_argument("--address", help="the head's Jobs API, http://HEAD:8265 (default: RAY_ADDRESS or local)")
    submit.add_argument("--working-dir", default=".", help="directory shipped as the job's working directory")
    submit.add_argument("--job-id", help="submission id (default: generated); submitting an existing one fails")
    submit.add_argument("--entrypoint-gpus", type=float, help="GPUs reserved for the job's driver")
    submit.add_argument("--follow", action="store_true", help="stream the logs until the job ends")
    submit.add_argument("command", nargs=argparse.REMAINDER, help="-- then the raynas command to run")
    submit.set_defaults(func=cmd_submit, on_interrupt=submit_interrupted)

    jobs = sub.add_parser("jobs", help="list, inspect, follow and stop submitted jobs")
    jobs.add_argument("action", choices=["list", "status", "logs", "stop"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument("--address", help="the head's Jobs API, http://HEAD:8265")
    jobs.add_argument("--follow", action="store_true", help="logs: stream until the job ends")
    jobs.set_defaults(func=cmd_jobs, on_interrupt=jobs_interrupted)

    serve = sub.add_parser("serve", help="the gRPC search service (searches run as Ray jobs)")
    serve.add_argument("--host", default="127.0.0.1", help="other than loopback needs a token and TLS (or --insecure)")
    serve.add_argument("--port", type=int, default=50051)
    serve.add_argument("--ray-address", help="the head's Jobs API, http://HEAD:8265; 'local': start a Ray head of "
                                             "its own (default: RAY_ADDRESS, else a cluster running here, else "
                                             "a head of its own, stopped on exit)")
    serve.add_argument("--db", default="runs/service/searches.db", help="the service's SQLite records")
    serve.add_argument("--runs-dir", default="runs/service/searches",
                       help="searches write below it (a disk the cluster and the service share)")
    serve.add_argument("--data-root", action="append", metavar="DIR",
                       help="a directory whose tables and datasets searches may read (repeatable); specs may name "
                            "no path outside these and --runs-dir (symlinks resolved)")
    serve.add_argument("--max-table-mb", type=float, default=256.0, help="largest table file a spec may name")
    serve.add_argument("--max-active", type=int, default=16,
                       help="unfinished searches at most; a submit beyond is refused (RESOURCE_EXHAUSTED)")
    serve.add_argument("--max-watch-streams", type=int, default=64, help="open WatchSearch streams at most")
    serve.add_argument("--max-concurrent-rpcs", type=int, default=256, help="calls served at once at most")
    serve.add_argument("--token-file", help="bearer token clients must send (first line of the file)")
    serve.add_argument("--token-env", help="... or the name of an environment variable holding it")
    serve.add_argument("--tls-cert", help="server certificate (PEM); with --tls-key: TLS")
    serve.add_argument("--tls-key", help="server private key (PEM)")
    serve.add_argument("--insecure", action="store_true",
                       help="allow a non-loopback --host without TLS (the token travels in plaintext; logged)")
    serve.add_argument("--poll-interval", type=float, default=1.0, help="seconds between looks at Ray's jobs")
    serve.set_defaults(func=cmd_serve)
