"""Runs ``ray start --head --block`` for ``LocalRayHead`` and guarantees that it stops.

    python head_supervisor.py OWNER_PID GRACE_S CMD...

A stand-alone script (it imports nothing of raynas), run as the leader of the head's process group:

- The head gets SIGINT, SIGTERM and SIGHUP at their default dispositions, whatever this process
  inherited: a non-interactive shell starts background jobs with SIGINT ignored, and an ignored
  disposition survives fork and exec, so ``ray start`` would ignore the SIGINT that is its clean
  shutdown (``nohup`` does the same to SIGHUP).
- A stop request (SIGINT, SIGTERM or SIGHUP to this process) or the owner's death (Linux's
  PR_SET_PDEATHSIG, which fires even when the owner was killed with SIGKILL) sends SIGINT to
  ``ray start`` (its own clean shutdown, ~2.5 s); whatever of the head is still running GRACE_S
  seconds later is killed with the whole process group, this process included.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def _exited(child: int) -> bool:
    try:
        return os.waitpid(child, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def main(argv: list[str]) -> int:
    owner, grace_s, cmd = int(argv[0]), float(argv[1]), argv[2:]
    requested: list[int] = []
    for sig in STOP_SIGNALS:
        signal.signal(sig, lambda signum, _frame: requested.append(signum))
    if sys.platform == "linux":
        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
            sys.exit("prctl(PR_SET_PDEATHSIG): " + os.strerror(ctypes.get_errno()))
    if os.getppid() != owner:  # the owner died before the parent-death signal was armed
        return 1
    child = os.fork()
    if child == 0:
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execv(cmd[0], cmd)
    while not requested:
        if _exited(child):  # the head ended by itself (e.g. it failed to start): its log says why
            return 1
        time.sleep(0.1)
    os.kill(child, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    while not _exited(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    if os.getpgrp() == os.getpid():  # the group is the head's alone (LocalRayHead starts a new session)
        os.killpg(0, signal.SIGKILL)  # a raylet or agent that lingers; this process goes with them
    elif not _exited(child):
        os.kill(child, signal.SIGKILL)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
