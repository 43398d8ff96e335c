"""The ``raynas`` command line: one parser; each module of this package registers its commands."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from ..interrupts import interrupts_handled
from .client import add_client_commands
from .common import Parser, UsageError, fail
from .model import add_model_commands
from .remote import add_remote_commands
from .search import add_search_commands


def build_parser() -> argparse.ArgumentParser:
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
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        fail(str(exc))
    try:
        with interrupts_handled():
            try:
                args.func(args)
            except KeyboardInterrupt:
                hint = getattr(args, "on_interrupt", None)
                said = hint(args, argv) if hint else None
                print(f"raynas: interrupted{'; ' + said if said else ''}", file=sys.stderr, flush=True)
                raise SystemExit(130) from None
        sys.stdout.flush()
    except BrokenPipeError:  # `raynas client result ID | head`: stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        raise SystemExit(141) from None
