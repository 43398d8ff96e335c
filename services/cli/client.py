"""``raynas client <action>``: the gRPC search service from the command line, one sub-command per RPC."""
from __future__ import annotations

import argparse
from pathlib import Path

from controller_policy.settings import ALGORITHM_NAMES

from .common import EVALUATORS, SPACE_NAMES, fail, run_again

STATES = ("pending", "running", "succeeded", "failed", "cancelled")
EXIT_CODES = """exit codes: 0 done; 1 the watched search ended FAILED or CANCELLED; 2 bad usage, a refused call
(the gRPC status and its message on one line) or an unreachable service; 141 the output pipe closed."""


def _connect(args: argparse.Namespace):
    from ..api.client import SearchClient, read_token

    try:
        token = read_token(args.token_file, args.token_env)
    except ValueError as exc:
        fail(str(exc))
    if args.tls_ca and not Path(args.tls_ca).is_file():
        fail(f"--tls-ca {args.tls_ca}: no such file")
    return SearchClient(args.address, token, args.tls_ca, args.tls)


def _call(args: argparse.Namespace, method: str, request) -> object:
    import grpc

    with _connect(args) as client:
        try:
            return client.call(method, request)
        except grpc.RpcError as exc:
            fail(f"{exc.code().name}: {exc.details()}")


def _show(message) -> None:
    from google.protobuf.json_format import MessageToJson

    print(MessageToJson(message, preserving_proto_field_name=True))


def cmd_submit(args: argparse.Namespace) -> None:
    from ..api.proto import raynas_pb2 as pb

    spec = pb.SearchSpec(**{k: getattr(args, k) for k in ("preset", "table", "reward_key", "data_dir")
                            if getattr(args, k)})
    for flag, enum in (("space", pb.SearchSpace), ("algo", pb.Algorithm), ("evaluator", pb.Evaluator)):
        if getattr(args, flag):
            setattr(spec, "algorithm" if flag == "algo" else flag, enum.Value(getattr(args, flag).upper()))
    for flag in ("budget", "seed", "epochs", "workers", "gpus_per_worker"):
        if getattr(args, flag) is not None:
            setattr(spec, flag, getattr(args, flag))
    if args.yaml:
        try:
            spec.yaml_overrides = Path(args.yaml).read_text()
        except OSError as exc:
            fail(f"--yaml {args.yaml}: {exc.strerror}")
    request = pb.SubmitSearchRequest(spec=spec, name=args.name or "", idempotency_key=args.idempotency_key or "")
    _show(_call(args, "SubmitSearch", request))


def cmd_get(args: argparse.Namespace) -> None:
    from ..api.proto import raynas_pb2 as pb

    _show(_call(args, "GetSearch", pb.GetSearchRequest(id=args.id)))


def cmd_cancel(args: argparse.Namespace) -> None:
    from ..api.proto import raynas_pb2 as pb

    _show(_call(args, "CancelSearch", pb.CancelSearchRequest(id=args.id)))


def cmd_result(args: argparse.Namespace) -> None:
    from ..api.proto import raynas_pb2 as pb

    _show(_call(args, "GetResult", pb.GetResultRequest(id=args.id)))


def cmd_list(args: argparse.Namespace) -> None:
    from ..api.proto import raynas_pb2 as pb

    request = pb.ListSearchesRequest(states=[pb.SearchState.Value(s.upper()) for s in args.state or []],
                                     name_prefix=args.name_prefix or "", page_size=args.page_size)
    while True:
        page = _call(args, "ListSearches", request)
        for s in page.searches:
            best = f"{s.progress.best_reward:.4f}" if s.progress.has_best else "-"
            print(f"{s.id}  {pb.SearchState.Name(s.state):<9}  {s.name:<20} epoch {s.progress.epoch:<4} "
                  f"archs {s.progress.archs_sampled:<6} best {best}")
        if not page.next_page_token:
            return
        request.page_token = page.next_page_token


def cmd_watch(args: argparse.Namespace) -> None:
    import grpc

    from ..api.proto import raynas_pb2 as pb

    with _connect(args) as client:
        final = None
        try:
            for p in client.watch(pb.WatchSearchRequest(id=args.id)):
                final = p
                best = f" best {p.best_reward:.4f} {p.best_arch}" if p.has_best else ""
                print(f"[{pb.SearchState.Name(p.state)}] epoch {p.epoch} archs {p.archs_sampled}{best}", flush=True)
            if final is not None and final.state == pb.SUCCEEDED:
                return
            search = client.call("GetSearch", pb.GetSearchRequest(id=args.id))
        except grpc.RpcError as exc:
            fail(f"{exc.code().name}: {exc.details()}")
    print(f"raynas: search {args.id} ended {pb.SearchState.Name(search.state)}: {search.error}", flush=True)
    raise SystemExit(1)


def _state(value: str) -> str:
    if value.lower() not in STATES:
        raise argparse.ArgumentTypeError(f"{value!r}: choose {', '.join(STATES)}")
    return value.lower()


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    connection = argparse.ArgumentParser(add_help=False)
    group = connection.add_argument_group("connection (every action)")
    group.add_argument("--address", default="127.0.0.1:50051", help="HOST:PORT of `raynas serve` (default: %(default)s)")
    group.add_argument("--token-file", help="the service's bearer token: the first line of this file")
    group.add_argument("--token-env", help="... or the name of an environment variable holding it")
    group.add_argument("--tls", action="store_true", help="TLS, trusting the system's root certificates")
    group.add_argument("--tls-ca", help="TLS, trusting this CA certificate (PEM)")

    client = sub.add_parser("client", help="talk to a raynas search service (submit, watch, list, ...)",
                            description="Talk to a raynas search service (`raynas serve`).", epilog=EXIT_CODES)
    actions = client.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, help: str, func, with_id: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help, description=help, parents=[connection], epilog=EXIT_CODES)
        if with_id:
            parser.add_argument("id", help="search id, s-... (see `raynas client list`)")
        parser.set_defaults(func=func)
        return parser

    submit = action("submit", "submit a search; prints the stored search as JSON", cmd_submit, with_id=False)
    spec = submit.add_argument_group("the search (a preset and/or fields; fields override the preset)")
    spec.add_argument("--preset", help="a config of configs/, e.g. tabular-nb201, enas-micro, quick-cpu")
    spec.add_argument("--space", choices=SPACE_NAMES)
    spec.add_argument("--algo", choices=ALGORITHM_NAMES)
    spec.add_argument("--evaluator", choices=EVALUATORS, help="table: NAS-Bench-style lookups; supernet: ENAS")
    spec.add_argument("--table", help="absolute path of the JSON table, below one of the service's --data-root")
    spec.add_argument("--reward-key", help="the table's metric used as reward")
    spec.add_argument("--data-dir", help="absolute path of the dataset, below one of the service's --data-root")
    spec.add_argument("--budget", type=int, help="architectures to evaluate")
    spec.add_argument("--seed", type=int)
    spec.add_argument("--epochs", type=int, help="ENAS epochs (supernet)")
    spec.add_argument("--workers", type=int, help="supernet workers")
    spec.add_argument("--gpus-per-worker", type=float)
    spec.add_argument("--yaml", help="a YAML file of overrides, laid out as configs/*.yaml")
    submit.add_argument("--name", help="a label for listings (default: search)")
    submit.add_argument("--idempotency-key", help="resubmitting with the same key returns the same search")

    action("get", "one search as JSON: state, progress, error, job id, output directory", cmd_get)
    watch = action("watch", "follow a search until it ends: one line per epoch", cmd_watch)
    watch.set_defaults(on_interrupt=run_again("the search goes on; watch it again with"))
    action("cancel", "cancel a search (stops its Ray job)", cmd_cancel)
    action("result", "the result of a SUCCEEDED search as JSON: best and top architectures, metrics, files",
           cmd_result)
    listing = action("list", "searches in the order they were accepted, one line each", cmd_list, with_id=False)
    listing.add_argument("--state", action="append", type=_state, metavar="STATE",
                         help=f"only searches in this state (repeatable): {', '.join(STATES)}")
    listing.add_argument("--name-prefix", help="only searches whose name starts with this")
    listing.add_argument("--page-size", type=int, default=50, help="searches per call (default: %(default)s)")
