"""A real Ray head for end-to-end tests, in its own process group, temp dir and ports."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    """A free port outside Ray's worker range (10002-19999)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not 10002 <= port <= 19999:
            return port


class RayHead:
    def __init__(self, root: Path, num_cpus: int = 2) -> None:
        self.root, self.num_cpus = Path(root), num_cpus
        self.temp_dir = self.root / "ray"  # its own: keeps /tmp/ray/ray_current_cluster untouched
        self.port, self.dashboard_port = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """The GCS address (for ray.init)."""
        return f"127.0.0.1:{self.port}"

    @property
    def jobs_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self, timeout_s: float = 120.0) -> None:
        ports = {"--port": self.port, "--dashboard-port": self.dashboard_port,
                 "--ray-client-server-port": free_port(), "--dashboard-agent-listen-port": free_port(),
                 "--dashboard-agent-grpc-port": free_port(), "--metrics-export-port": free_port(),
                 "--runtime-env-agent-port": free_port(), "--node-manager-port": free_port(),
                 "--object-manager-port": free_port()}
        cmd = [os.path.join(VENV_BIN, "ray"), "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
               "--dashboard-host", "127.0.0.1", "--include-dashboard", "true", "--num-cpus", str(self.num_cpus),
               "--num-gpus", "0", "--object-store-memory", str(300 * 2**20), "--temp-dir", str(self.temp_dir),
               "--disable-usage-stats"]
        for flag, port in ports.items():
            cmd += [flag, str(port)]
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS")}
        env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")  # jobs run `python` from this venv
        self.log = open(self.root / "head.log", "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_for_jobs_api(timeout_s)

    def _wait_for_jobs_api(self, timeout_s: float) -> None:
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {(self.root / 'head.log').read_text()[-2000:]}")
            try:
                JobSubmissionClient(self.jobs_url).list_jobs()
                return
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1.0)

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # whatever the group left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()
        self.proc = None
