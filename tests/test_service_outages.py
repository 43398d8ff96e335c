"""The service through Ray and database outages, races and its own start-up, with real components:
a Ray head killed and restarted under it, a database another process locks, concurrent submits,
and `raynas serve` starting (and stopping) a Ray head of its own."""
import contextlib
import json
import logging
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.api.client import SearchClient
from services.api.proto import raynas_pb2 as pb
from services.api.server import ServiceConfig, start_service
from services.jobs import RaynasJobs
from services.search import latest_checkpoint
from tests.ray_head import RayHead, free_port
from tests.test_service import tabular, watch


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from controller_policy.landscapes import nb201_landscape

    path = tmp_path_factory.mktemp("outage-table") / "nb201.json"
    path.write_text(json.dumps(nb201_landscape(1)))
    return path


def health_status(port: int) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def wait_health(port: int, status: int, timeout_s: float = 30.0) -> float:
    start = time.time()
    while health_status(port) != status:
        assert time.time() - start < timeout_s, f"health did not become {status} within {timeout_s} s"
        time.sleep(0.1)
    return time.time() - start


def test_ray_head_killed_and_restarted_while_the_service_runs(table, tmp_path, caplog):
    """Records survive, health flips and recovers, a search submitted during the outage waits
    PENDING and runs afterwards, a job the dead head lost is resubmitted and resumes from its
    checkpoint (its trajectory has every architecture exactly once), one warning per outage."""
    head = RayHead()  # its own short temp dir: Ray's socket paths must stay under 108 bytes
    head.start()
    cfg = ServiceConfig(port=0, ray_address=head.jobs_url, db=str(tmp_path / "s.db"), runs_dir=str(tmp_path / "runs"),
                        data_roots=[str(table.parent)], poll_interval_s=0.2, max_retry_s=1.0)
    running = None
    try:
        with caplog.at_level(logging.WARNING, logger="services.api"):
            running = start_service(cfg)
            assert health_status(running.port) == health_pb2.HealthCheckResponse.SERVING
            with SearchClient(f"127.0.0.1:{running.port}", timeout_s=30) as c:
                spec = tabular(table, budget=240, yaml_overrides="episodes_per_iteration: 8\n")
                long = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=spec, name="survivor"))
                deadline = time.time() + 120
                while latest_checkpoint(Path(long.output_dir)) is None:  # a complete one, not iter_*.tmp
                    assert time.time() < deadline, "the search wrote no checkpoint"
                    time.sleep(0.2)
                assert c.call("GetSearch", pb.GetSearchRequest(id=long.id)).state == pb.RUNNING

                head.stop()
                wait_health(running.port, health_pb2.HealthCheckResponse.NOT_SERVING)
                started = time.time()
                during = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=8), name="during"))
                assert time.time() - started < 5  # no Jobs API timeout on the caller's clock
                assert during.state == pb.PENDING and during.error.startswith("waiting for Ray")
                assert c.call("GetSearch", pb.GetSearchRequest(id=long.id)).name == "survivor"  # records kept
                time.sleep(3)  # several back-off rounds: still one warning

                head.start()
                wait_health(running.port, health_pb2.HealthCheckResponse.SERVING, timeout_s=60)
                assert watch(c, during.id)[-1].state == pb.SUCCEEDED
                final = watch(c, long.id, timeout_s=300)[-1]
                assert final.state == pb.SUCCEEDED and final.archs_sampled == 240
                again = c.call("GetSearch", pb.GetSearchRequest(id=long.id))
                assert again.job_id == f"raynas-{long.id}-2", again
                logs = RaynasJobs(head.jobs_url).logs(again.job_id)
                assert "resumed from" in logs, logs[-2000:]
                rows = [json.loads(line) for line in (Path(long.output_dir) / "trajectory.jsonl").read_text().splitlines()]
                assert [r["sample"] for r in rows] == list(range(len(rows))) and len(rows) == 240
    finally:
        if running is not None:
            running.stop()
        head.cleanup()
    outage_lines = [r for r in caplog.records if "the Ray Jobs API is unusable" in r.getMessage()]
    assert len(outage_lines) == 1, [r.getMessage() for r in caplog.records]
    assert any("the Ray Jobs API is back after" in r.getMessage() for r in caplog.records)
    assert any(f"Ray lost the job raynas-{long.id}" in r.getMessage() for r in caplog.records)


def test_a_locked_database_turns_health_off_without_blocking_the_server(ray_head, table, tmp_path):
    cfg = ServiceConfig(port=0, ray_address=ray_head.jobs_url, db=str(tmp_path / "s.db"), runs_dir=str(tmp_path / "r"),
                        data_roots=[str(table.parent)], poll_interval_s=0.2, max_retry_s=0.5, db_timeout_s=0.5)
    running = start_service(cfg)
    try:
        with SearchClient(f"127.0.0.1:{running.port}", timeout_s=30) as c:
            first = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=8), name="before"))
            other = sqlite3.connect(cfg.db, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
            try:
                wait_health(running.port, health_pb2.HealthCheckResponse.NOT_SERVING, timeout_s=10)
                done = threading.Event()
                errors = []

                def submit() -> None:
                    try:
                        c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=8), name="locked"))
                    except grpc.RpcError as exc:
                        errors.append(exc)
                    done.set()

                threading.Thread(target=submit).start()
                slowest = max(timed(lambda: health_status(running.port)) for _ in range(10))
                assert slowest < 0.25, f"a health check took {slowest:.2f} s while a handler waited for the lock"
                assert done.wait(30) and errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE
                assert "database is unusable" in errors[0].details()
                assert c.call("GetSearch", pb.GetSearchRequest(id=first.id)).name == "before"  # reads still work
            finally:
                other.execute("ROLLBACK")
                other.close()
            wait_health(running.port, health_pb2.HealthCheckResponse.SERVING, timeout_s=10)
            assert watch(c, first.id)[-1].state == pb.SUCCEEDED
    finally:
        running.stop()


def timed(fn) -> float:
    start = time.time()
    fn()
    return time.time() - start


def test_watchers_are_woken_by_record_changes_not_by_polling(ray_head, table, tmp_path):
    """With a 60 s poll interval (and a 30 s safety timeout in the stream), a change to the record
    reaches an open watch stream at once."""
    cfg = ServiceConfig(port=0, ray_address=ray_head.jobs_url, db=str(tmp_path / "s.db"), runs_dir=str(tmp_path / "r"),
                        data_roots=[str(table.parent)], poll_interval_s=60)
    running = start_service(cfg)
    try:
        with SearchClient(f"127.0.0.1:{running.port}", timeout_s=30) as c:
            search = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=100_000), name="w"))
            updates: list = []
            stream = c.stub.WatchSearch(pb.WatchSearchRequest(id=search.id), timeout=60, metadata=c.metadata)

            def read() -> None:
                try:
                    for update in stream:
                        updates.append((time.time(), update))
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.CANCELLED

            reader = threading.Thread(target=read)
            reader.start()
            deadline = time.time() + 10
            while not updates:
                assert time.time() < deadline
                time.sleep(0.05)
            changed_at = time.time()
            running.servicer._update(search.id, progress={"iteration": 41, "evaluated": 164})
            while not any(u.epoch == 41 for _, u in updates):
                assert time.time() - changed_at < 2, "the watcher was not woken by the change"
                time.sleep(0.02)
            stream.cancel()
            reader.join(10)
            cancelled = c.call("CancelSearch", pb.CancelSearchRequest(id=search.id))
            assert cancelled.state in (pb.PENDING, pb.RUNNING, pb.CANCELLED)  # the job is stopped now
    finally:
        running.stop()


def test_concurrent_submits_with_one_idempotency_key_make_one_search(ray_head, table, tmp_path):
    cfg = ServiceConfig(port=0, ray_address=ray_head.jobs_url, db=str(tmp_path / "s.db"), runs_dir=str(tmp_path / "r"),
                        data_roots=[str(table.parent)], poll_interval_s=0.3)
    running = start_service(cfg)
    try:
        request = pb.SubmitSearchRequest(spec=tabular(table, budget=8, seed=9), name="twice", idempotency_key="k-77")
        barrier, answers = threading.Barrier(4), []

        def submit() -> None:
            with SearchClient(f"127.0.0.1:{running.port}", timeout_s=60) as c:
                barrier.wait()
                answers.append(c.call("SubmitSearch", request))

        threads = [threading.Thread(target=submit) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert len(answers) == 4 and len({a.id for a in answers}) == 1
        jobs = [j for j in RaynasJobs(ray_head.jobs_url).list() if j.job_id.startswith(f"raynas-{answers[0].id}")]
        assert len(jobs) == 1
        with SearchClient(f"127.0.0.1:{running.port}", timeout_s=60) as c:
            assert watch(c, answers[0].id)[-1].state == pb.SUCCEEDED
            assert len(c.call("ListSearches", pb.ListSearchesRequest(name_prefix="twice")).searches) == 1
    finally:
        running.stop()


def test_serve_without_a_cluster_starts_a_local_head_and_stops_it_on_exit(table, tmp_path):
    """`raynas serve` with no cluster reachable (here: `--ray-address local`, what it falls back to):
    its own Ray head with the Jobs API on loopback; searches run on it; SIGTERM stops both."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    env["PATH"] = "/usr/bin:/bin"  # as from a shell without the virtualenv activated
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--port", str(port), "--ray-address",
                             "local", "--db", str(tmp_path / "s.db"), "--runs-dir", str(tmp_path / "runs"),
                             "--data-root", str(table.parent)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert "starting a local Ray head" in proc.stdout.readline()
        line = proc.stdout.readline()
        match = re.search(r"local Ray head: Jobs API at (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        jobs_url = match.group(1)
        assert "search service on 127.0.0.1:" in proc.stdout.readline()
        with SearchClient(f"127.0.0.1:{port}", timeout_s=60) as c:
            search = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=8), name="local"))
            final = watch(c, search.id)[-1]
            assert final.state == pb.SUCCEEDED, c.call("GetSearch", pb.GetSearchRequest(id=search.id)).error
        assert RaynasJobs(jobs_url).status(search.job_id).status == "SUCCEEDED"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert "its local Ray head stopped" in proc.stdout.read()
        with pytest.raises(Exception):  # the head went with the service
            RaynasJobs(jobs_url).list()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_free_port_never_repeats_a_port_already_picked(monkeypatch):
    """The OS hands a just-released port out again; a head given one port twice does not start
    ("runtime_env_agent is trying to use a port number … used by other components", seen in CI)."""
    import socket

    from services import ray_cluster

    handed_out = iter([40001, 40001, 12345, 40001, 40002])  # 12345: in Ray's worker port range

    class FakeSocket:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            pass

        def getsockname(self):
            return ("127.0.0.1", next(handed_out))

    monkeypatch.setattr(socket, "socket", FakeSocket)
    assert ray_cluster.free_port() == 40001
    assert ray_cluster.free_port(exclude={40001}) == 40002


def processes_with(text: str) -> dict[int, list[str]]:
    """pid -> argv of every process whose command line contains ``text``."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and any(text in arg for arg in argv):
            found[int(entry.name)] = argv
    return found


def head_temp_dir(dashboard_port: str) -> str:
    """The temp dir of the `ray start` whose dashboard listens on ``dashboard_port`` (every process
    of that head has it on its command line)."""
    (head,) = [argv for argv in processes_with("--dashboard-port").values()
               if argv[argv.index("--dashboard-port") + 1] == dashboard_port
               and not any(arg.endswith("head_supervisor.py") for arg in argv)]
    return head[head.index("--temp-dir") + 1]


@pytest.mark.skipif(sys.platform != "linux", reason="the head's parent-death signal is Linux's prctl")
def test_serve_killed_with_sigkill_leaves_no_ray_head_behind(tmp_path):
    """kill -9 (or the OOM killer) gives `raynas serve` no chance to stop its head: the head stops itself."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--port", str(port), "--ray-address",
                             "local", "--db", str(tmp_path / "s.db"), "--runs-dir", str(tmp_path / "runs")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        proc.stdout.readline()
        match = re.search(r"Jobs API at http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
        assert match
        temp_dir = head_temp_dir(match.group(1))
        assert len(processes_with(temp_dir)) >= 3  # `ray start`, the GCS, the raylet, ...
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.time() + 40
        while processes_with(temp_dir):
            assert time.time() < deadline, f"left running: {processes_with(temp_dir)}"
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _ignores(pid: int, sig: int) -> bool:
    """Whether process ``pid`` ignores ``sig`` (its SigIgn mask in /proc)."""
    line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn:"))
    return bool(int(line.split()[1], 16) >> (sig - 1) & 1)


@contextlib.contextmanager
def _serve_from_a_script(tmp_path: Path, launch: str):
    """`raynas serve` started by a non-interactive shell in the background, as an operator's script
    does (``launch``: ``&`` or ``nohup … &``): it inherits SIGINT ignored. Yields the shell (the
    group leader), serve's pid and its head's temp dir once the Jobs API answers; whatever of them
    is left is killed afterwards."""
    log = tmp_path / "serve.log"
    serve = shlex.join([sys.executable, "-m", "services.cli", "serve", "--host", "127.0.0.1", "--port",
                        str(free_port()), "--ray-address", "local", "--db", str(tmp_path / "s.db"),
                        "--runs-dir", str(tmp_path / "runs")])
    line = {"&": f"{serve} > {log} 2>&1 & echo $!", "nohup": f"nohup {serve} > {log} 2>&1 & echo $!"}[launch]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    shell = subprocess.Popen(["bash", "-c", line], env=env, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    pid = int(shell.stdout.readline())
    deadline = time.time() + 120
    while not (match := re.search(r"Jobs API at http://127\.0\.0\.1:(\d+)", log.read_text() if log.exists() else "")):
        assert time.time() < deadline, log.read_text()
        time.sleep(0.5)
    temp_dir = head_temp_dir(match.group(1))
    try:
        yield shell, pid, temp_dir
    finally:  # found by their command lines: a pid alone may be another process's by now
        for p in [*processes_with(str(tmp_path / "s.db")), *processes_with(temp_dir)]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.skipif(sys.platform != "linux", reason="reads signal masks and processes in /proc")
@pytest.mark.parametrize("launch", ["&", "nohup"])
def test_serve_from_a_script_stopped_by_term_then_kill_leaves_no_ray_head(tmp_path, launch):
    """A supervisor's stop (docker stop, systemd, Kubernetes): SIGTERM, then SIGKILL after a grace period."""
    with _serve_from_a_script(tmp_path, launch) as (shell, pid, temp_dir):
        # the script's `&` made SIGINT ignored; it used to reach `ray start` and make its clean stop a no-op
        head_pids = list(processes_with(temp_dir))
        assert len(head_pids) >= 3 and not any(_ignores(p, signal.SIGINT) for p in head_pids)
        os.killpg(shell.pid, signal.SIGTERM)
        time.sleep(3)
        os.killpg(shell.pid, signal.SIGKILL)
        deadline = time.time() + 10
        while processes_with(temp_dir):
            assert time.time() < deadline, f"left running: {processes_with(temp_dir)}"
            time.sleep(0.5)


@pytest.mark.skipif(sys.platform != "linux", reason="reads signal masks and processes in /proc")
def test_serve_from_a_script_stops_with_its_head_on_sigterm_in_seconds(tmp_path):
    with _serve_from_a_script(tmp_path, "&") as (_, pid, temp_dir):
        started = time.time()
        os.kill(pid, signal.SIGTERM)
        while processes_with(temp_dir) or Path(f"/proc/{pid}").exists() and "Z" not in _state(pid):
            assert time.time() - started < 10, f"left running: {processes_with(temp_dir)}"  # it took 23 s
            time.sleep(0.2)
        assert "search service and its local Ray head stopped" in (tmp_path / "serve.log").read_text()


def _state(pid: int) -> str:
    try:
        return next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("State:"))
    except (OSError, StopIteration):
        return "Z"


def test_availability_backs_off_and_logs_once_per_outage(caplog):
    from services.api.availability import DATABASE, RAY, Availability

    flips = []
    availability = Availability(base_s=0.5, max_s=4.0, on_change=flips.append)
    assert availability.serving and availability.retry_in(1.0) == 1.0
    with caplog.at_level(logging.WARNING, logger="services.api.availability"):
        for _ in range(6):
            availability.down(RAY, "connection refused")
        assert availability.retry_in(1.0) == 4.0  # 0.5, 1, 2, 4, 4, 4: capped
        availability.down(DATABASE, "database is locked")
        availability.up(RAY)
        assert not availability.serving and flips == [False]  # still down: the database
        availability.up(DATABASE)
        availability.up(DATABASE)  # up twice: nothing more
    assert availability.serving and flips == [False, True]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("the Ray Jobs API is unusable (connection refused)" in m for m in messages) == 1
    assert sum("is back after" in m for m in messages) == 2 and len(messages) == 4


def test_without_an_address_raynas_never_joins_a_private_ray_instance(ray_head):
    """ray_head has a temp dir of its own, like a test suite's or another user's embedded Ray: Ray's
    `auto` finds it by scanning processes; raynas must start its own instead (or join only the
    cluster `ray start` recorded here)."""
    from ray._private.utils import read_ray_address

    code = ("import ray; from services.ray_cluster import connect; connect(None, 1); "
            "print('GCS', ray.get_runtime_context().gcs_address); ray.shutdown()")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    recorded = read_ray_address()
    assert out.stdout.startswith("[raynas] connecting to Ray: an embedded instance" if recorded is None else
                                 f"[raynas] connecting to Ray at {recorded} (the cluster `ray start` recorded here)")
    gcs = re.search(r"GCS (\S+)", out.stdout).group(1)
    assert not gcs.endswith(f":{ray_head.port}"), out.stdout
