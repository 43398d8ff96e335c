"""The ``raynas`` command line: one parser; each module of this package registers its commands."""
from __future__ import annotations

import argparse
from typing import Sequence

from .model import add_model_commands
from .remote import add_remote_commands
from .search import add_search_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raynas", description="Distributed ENAS with a PPO controller on Ray")
    sub = parser.add_subparsers(dest="command", required=True)
    add_search_commands(sub)
    add_model_commands(sub)
    add_remote_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args)
