"""Ctrl-C, the same in every raynas command. The first stops the command cleanly: a
KeyboardInterrupt, which ``raynas``'s ``main`` turns into one line saying how to go on (exit 130),
after the command's own clean-up (its checkpoints and files are written whole or not at all). A
second one, during that clean-up, ends the process at once."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Any, Iterator

_tune_took_the_first = False
_interrupted = False


def interrupted() -> bool:
    """Whether raynas's handler has taken a Ctrl-C in this process."""
    return _interrupted


def exit_now(signum: int, frame: Any) -> None:
    """The second Ctrl-C's handler: no clean-up, no traceback (Ray's processes share the driver's fate)."""
    os.write(2, b"\nraynas: interrupted again: exiting now\n")
    os._exit(130)


def _first_interrupt(signum: int, frame: Any) -> None:
    global _interrupted
    _interrupted = True
    if _tune_took_the_first:  # Tune's handler took the first Ctrl-C and handed this one back: a second
        exit_now(signum, frame)
    signal.signal(signal.SIGINT, exit_now)
    raise KeyboardInterrupt


@contextlib.contextmanager
def interrupts_handled() -> Iterator[None]:
    """Within: raynas's Ctrl-C (see above); the previous handler is restored after. (Only the main
    thread can set a handler: elsewhere, as in a test calling ``main``, Python's own stays.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _first_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def tune_takes_the_first_interrupt() -> Iterator[None]:
    """Around ``Tuner.fit``: Tune stops the experiment itself on the first Ctrl-C (saving its state,
    then returning) and restores the handler it found, so the next Ctrl-C that reaches raynas's
    handler is the second."""
    global _tune_took_the_first
    _tune_took_the_first = True
    try:
        yield
    finally:
        _tune_took_the_first = False
