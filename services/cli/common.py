"""What every ``raynas`` command shares: the one-line error and ``--set KEY=VALUE`` parsing."""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Any

# Choices for flags, kept here so `raynas --help` and `raynas client` need no torch import; a test
# checks them against the registries (controller_policy.spaces.SPACES, services.config.EVALUATORS).
SPACE_NAMES = ("enas_macro", "enas_micro", "nb201")
EVALUATORS = ("supernet", "table")


def fail(message: str) -> None:
    """One error line on stderr, exit code 2."""
    print(f"raynas: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_sets(pairs: list[str] | None) -> dict[str, Any]:
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


class UsageError(Exception):
    """A command line the parser refused; ``main`` makes it one error line (exit code 2)."""


class Parser(argparse.ArgumentParser):
    """argparse with raynas's one-line errors instead of a usage block. It raises, so that a caller
    checking a command line it will not run (``raynas submit``'s job command) can say whose it is."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = "" if self.prog == "raynas" else f"{self.prog}: "  # `fail` already says "raynas: error:"
        raise UsageError(f"{command}{message} (see `{self.prog} --help`)")


def run_again(what: str):
    """An ``on_interrupt`` for commands that go on when run again (a retrain resumes from its
    checkpoints, a follow or a watch picks up where the job or search is): ``what``, then the command."""
    def hint(args: argparse.Namespace, argv: list[str]) -> str:
        return f"{what}: {shlex.join(['raynas', *argv])}"
    return hint
