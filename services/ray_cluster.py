"""Connecting to Ray: the cluster the user names, the one running here, or an embedded one; and a
local Ray head with the Jobs API, in a process of its own, for ``raynas serve`` (and the tests)."""
from __future__ import annotations

import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import ray

QUIET_WORKER_HOOK = "controller_policy.logs.quiet_ray_logs"


def connect(address: str | None = None, num_cpus: int | None = None, include_dashboard: bool = False,
            verbose: bool = False, worker_output: bool = True) -> bool:
    """Initialise Ray unless it already is; return True when this call started it.

    ``address``: a cluster (``HOST:PORT``, ``ray://…``), ``local`` for an embedded instance, or None
    for the cluster the user means: ``RAY_ADDRESS``, else the one ``ray start`` recorded on this
    machine, else an embedded instance. Never one found by scanning other programs' processes (Ray's
    ``auto`` does that, and joined a test suite's or another user's private instance).
    ``include_dashboard``: an embedded instance with the dashboard (and so the State API, which
    Ray Train uses to clean up after its controller). ``verbose``: an embedded instance's workers
    keep the Ray/RLlib/Tune messages raynas drops (``controller_policy.logs``). ``worker_output``:
    what Ray's worker processes print is shown here (``False`` for a command whose workers report
    through raynas's own channel: then only their errors, raised here, are seen)."""
    if ray.is_initialized():
        return False
    if not sys.stdout.isatty():  # Ray colours the "(task pid=...)" prefix of the worker output it forwards
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    # Every worker of an embedded instance drops the messages from its start (Tune's "Trainable.setup
    # took ... seconds" comes before a trial's own code runs); a joined cluster's workers are its owner's.
    embedded = dict(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                    logging_level=logging.WARNING, log_to_driver=worker_output,
                    runtime_env=None if verbose else {"worker_process_setup_hook": QUIET_WORKER_HOOK})
    target = address or os.environ.get("RAY_ADDRESS") or None
    recorded = False
    if target is None:
        from ray._private.utils import read_ray_address  # the GCS address of the last `ray start` here

        target, recorded = read_ray_address(), True
    # a start takes seconds (minutes on a busy machine): say what is happening
    if target in (None, "local"):
        print("[raynas] connecting to Ray: an embedded instance", flush=True)
        ray.init(**embedded)
        return True
    print(f"[raynas] connecting to Ray at {target}" + (" (the cluster `ray start` recorded here)" if recorded else ""),
          flush=True)
    try:
        reachable(target)  # ray.init retries an address nobody answers at for minutes
        ray.init(address=target, logging_level=logging.WARNING, log_to_driver=worker_output)
    except ConnectionError as exc:
        if not recorded:
            raise ConnectionError(f"cannot join the Ray cluster at {target}: {exc} (is it running? check the "
                                  "address, or leave --address out for an embedded instance)") from None
        # `ray start`'s record outlived its cluster: nobody meant a dead cluster
        print(f"[raynas] the cluster `ray start` recorded at {target} does not answer: connecting to Ray: an "
              "embedded instance", flush=True)
        ray.init(**embedded)
    return True


#: how long a cluster's address gets to accept a connection before raynas says it does not answer
REACH_TIMEOUT_S = 5.0


def reachable(address: str, timeout_s: float = REACH_TIMEOUT_S) -> None:
    """ConnectionError unless something accepts a TCP connection at the cluster's ``HOST:PORT`` (or
    ``ray://HOST:PORT``) within ``timeout_s``."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise ConnectionError(f"{address!r} is not a HOST:PORT address")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers there ({exc.strerror or exc})") from None


def check_resources(workers: int, gpus_per_worker: float, cpus_per_worker: float) -> None:
    """Refuse, before anything starts, a request the cluster can never satisfy."""
    total = ray.cluster_resources()
    need_gpus, have_gpus = workers * gpus_per_worker, total.get("GPU", 0.0)
    if need_gpus > have_gpus:
        raise ValueError(f"weight_sharing.gpus_per_worker: {workers} workers x {gpus_per_worker:g} GPUs = {need_gpus:g} "
                         f"GPUs, but the cluster has {have_gpus:g}")
    need_cpus, have_cpus = workers * cpus_per_worker, total.get("CPU", 0.0)
    if need_cpus > have_cpus:
        raise ValueError(f"weight_sharing.cpus_per_worker: {workers} workers x {cpus_per_worker:g} CPUs = "
                         f"{need_cpus:g} CPUs, but the cluster has {have_cpus:g}")


def free_port(exclude: Collection[int] = ()) -> int:
    """A free loopback port outside Ray's default worker port range (10002-19999) and ``exclude``
    (ports already picked: the OS hands a just-released port out again)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999 and port not in exclude:
            return port


#: runs `ray start --block` with default signal dispositions and stops it when told or when its owner dies
HEAD_SUPERVISOR = Path(__file__).with_name("head_supervisor.py")
#: seconds the head gets for its own clean shutdown (SIGINT: ~2.5 s here) before its group is killed
HEAD_STOP_GRACE_S = 4.0


class LocalRayHead:
    """``ray start --head --block`` in its own process group, temp dir and free ports, with the
    dashboard (the Jobs API) on 127.0.0.1; jobs run ``python`` as this interpreter. It runs under
    ``head_supervisor.py``: the head acts on stop signals whatever this process inherited (a script's
    ``cmd &`` ignores SIGINT), and on Linux it stops itself when the thread that started it exits
    (e.g. its process is killed), so start it from a thread that lives as long as the head should.

    ``ray.init`` cannot do this: it picks no free ports for the dashboard's agent, so beside another
    Ray instance on the machine its head has no agent to run jobs ("No available agent to submit job").
    """

    def __init__(self, root: str | Path | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                 object_store_mb: int | None = None) -> None:
        self.owns_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="raynas-head-") if root is None else root)
        self.num_cpus, self.num_gpus, self.object_store_mb = num_cpus, num_gpus, object_store_mb
        self.temp_dir = self.root / "ray"  # its own: leaves /tmp/ray/ray_current_cluster to other clusters
        self.port = free_port()
        self.dashboard_port = free_port(exclude={self.port})
        self.proc: subprocess.Popen | None = None
        self.log_path = self.root / "head.log"

    @property
    def address(self) -> str:
        """The GCS address (for ``ray.init``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def jobs_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 120.0) -> "LocalRayHead":
        """Start (or, after ``stop``, restart on the same GCS and dashboard ports) and wait for the Jobs API."""
        ports = {"--port": self.port, "--dashboard-port": self.dashboard_port}
        for flag in ("--ray-client-server-port", "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port",
                     "--metrics-export-port", "--runtime-env-agent-port", "--node-manager-port",
                     "--object-manager-port"):
            ports[flag] = free_port(exclude=set(ports.values()))  # Ray refuses a port given twice
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               "--node-ip-address", "127.0.0.1", "--dashboard-host", "127.0.0.1", "--include-dashboard", "true",
               "--temp-dir", str(self.temp_dir), "--disable-usage-stats"]
        for flag, value in (("--num-cpus", self.num_cpus), ("--num-gpus", self.num_gpus),
                            ("--object-store-memory", self.object_store_mb and self.object_store_mb << 20)):
            if value is not None:
                cmd += [flag, str(value)]
        for flag, port in ports.items():
            cmd += [flag, str(port)]
        cmd = [sys.executable, str(HEAD_SUPERVISOR), str(os.getpid()), str(HEAD_STOP_GRACE_S), *cmd]
        self.proc = subprocess.Popen(cmd, env=self._env(), stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        try:
            self._wait_for_jobs_api(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _env(self) -> dict[str, str]:
        """Jobs run ``python -m services.cli ...``: ``python`` must be this interpreter, whatever the PATH."""
        bin_dir = self.root / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        python = bin_dir / "python"  # a script, not a link: a linked venv interpreter loses its venv
        python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        python.chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        env["PATH"] = os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def _wait_for_jobs_api(self, timeout_s: float) -> None:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + timeout_s
        while True:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ray start exited with code {self.proc.returncode}; the end of {self.log_path}:"
                                   f"\n{tail}")
            try:
                JobSubmissionClient(self.jobs_url).list_jobs()
                return
            except Exception:  # noqa: BLE001 - not up yet: connection refused, 5xx, no agent yet
                if time.time() > deadline:
                    raise RuntimeError(f"the local Ray head's Jobs API did not answer within {timeout_s:.0f} s "
                                       f"(see {self.log_path})") from None
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop the head and everything it started (its process group)."""
        if self.proc is None:
            return
        # The supervisor gives `ray start --block` its clean shutdown (SIGINT), then kills what is left.
        try:
            os.kill(self.proc.pid, signal.SIGINT)
            self.proc.wait(HEAD_STOP_GRACE_S + 10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        try:  # whatever the group left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def cleanup(self) -> None:
        """Stop, and remove the temp dir this head made for itself."""
        self.stop()
        if self.owns_root:
            shutil.rmtree(self.root, ignore_errors=True)
