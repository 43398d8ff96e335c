"""Every `raynas ...` command line in the README's shell blocks parses with the real parser, with its
optional parts left out and put in, and each alternative of `a|b|c`: a renamed flag breaks CI."""
import itertools
import re
import shlex
from pathlib import Path

import pytest

from services.cli import build_parser
from services.cli.common import UsageError

README = Path(__file__).resolve().parents[1] / "README.md"
PLACEHOLDERS = {"N": "2", "G": "1"}  # numeric placeholders; DIR, FILE, ID, ... parse as strings


def readme_commands() -> list[str]:
    commands, language, pending = [], None, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            language = None if language is not None else (line[3:].strip() or "sh")
            continue
        if language not in ("bash", "sh", "console"):
            continue
        line = pending + line.split(" #")[0].rstrip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        if line.strip().startswith("raynas "):
            commands.append(line.strip())
    return commands


def variants(command: str) -> list[list[str]]:
    """Optional [groups] all out and all in; each alternative of every a|b|c in turn."""
    out = []
    for keep in (False, True):
        text = re.sub(r"\[([^\[\]]*)\]", (lambda m: m.group(1)) if keep else "", command)
        tokens = shlex.split(text)
        choices = [t.split("|") if "|" in t and not t.startswith("|") else [t] for t in tokens]
        for combo in itertools.product(*choices):
            argv = [PLACEHOLDERS.get(t, t) for t in combo if t != "..."]
            out.append(argv[1:])  # without "raynas"
    return out


COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_every_group():
    used = {c.split()[1] for c in COMMANDS}
    assert {"search", "compare", "report", "retrain", "export", "show", "submit", "jobs", "serve", "client"} <= used


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_parses(command):
    parser = build_parser()
    for argv in variants(command):
        inner = argv[argv.index("--") + 2:] if argv[0] == "submit" and "--" in argv else None
        for args in (argv, inner) if inner else (argv,):  # `submit -- raynas search ...`: the job's command too
            try:
                parser.parse_args(args)
            except (SystemExit, UsageError) as exc:
                pytest.fail(f"README: `{command}` does not parse as {args} ({exc})")


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_commands_can_be_pasted_into_a_shell(command):
    """No `a|b|c` outside quotes: a shell would read it as a pipe."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|")
    assert "|" not in list(lexer), f"README: `{command}` pipes into nowhere; name the alternatives in a comment"
