"""The ``raynas`` command line: one parser; each module of this package registers its commands."""
from __future__ import annotations

import argparse
import atexit
import os
import sys
from typing import Sequence

# Only the standard library and the interrupt handling before ``main`` installs its Ctrl-C handler:
# the commands' modules (numpy, yaml, ...) are imported under it.
from ..interrupts import interrupted, interrupts_handled


def build_parser() -> argparse.ArgumentParser:
    from .client import add_client_commands
    from .common import Parser
    from .model import add_model_commands
    from .remote import add_remote_commands
    from .search import add_search_commands

    parser = Parser(prog="raynas", description="Distributed ENAS with a PPO controller on Ray")
    parser.add_argument("--version", action="version", version=f"raynas {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    add_search_commands(sub)
    add_model_commands(sub)
    add_remote_commands(sub)
    add_client_commands(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("raynas")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = None
    try:
        with interrupts_handled():
            try:
                args = _parse(argv)
                args.func(args)
            except Exception:
                if not interrupted():
                    raise
                _say_interrupted(args, argv)  # a Ctrl-C inside an import can surface as another error
            except KeyboardInterrupt:
                _say_interrupted(args, argv)
        sys.stdout.flush()
    except BrokenPipeError:  # `raynas client result ID | head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(141) from None


def run() -> None:
    """The ``raynas`` program (its console script and ``python -m services.cli``): ``main``, and an
    interrupted command's exit status 130 kept. Python reports a process as killed by SIGINT, whatever
    exit status it asked for, once a KeyboardInterrupt has passed through Python code run from C (seen
    when the Ctrl-C lands in some imports): so an interrupted command ends as a normal exit would
    (exit handlers, Ray's shutdown among them, and flushed output), then leaves with 130 itself."""
    try:
        main()
    except SystemExit as exc:
        if exc.code != 130:
            raise
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)


def _parse(argv: list[str]) -> argparse.Namespace:
    from .common import UsageError, fail
    try:
        return build_parser().parse_args(argv)
    except UsageError as exc:
        fail(str(exc))


def _say_interrupted(args: argparse.Namespace | None, argv: list[str]) -> None:
    """One line saying how to go on, exit 130."""
    nothing_started = "nothing had started: run the same command again"
    hint = getattr(args, "on_interrupt", None) if args is not None else lambda *_: nothing_started
    try:
        said = hint(args, argv) if hint else None
    except Exception:  # a hint's imports, broken by the Ctrl-C landing in them: the command had only begun
        said = nothing_started
    print(f"raynas: interrupted{'; ' + said if said else ''}", file=sys.stderr, flush=True)
    raise SystemExit(130) from None
