"""Ray Jobs: submit raynas commands to a cluster's head and follow, list, inspect and stop them.

A job runs ``python -m services.cli <command>`` on the cluster with a runtime environment that
ships this client's raynas (the three packages) and the submitting directory (configs, tables),
so the cluster runs the code that submitted it whatever it has installed.
"""
from __future__ import annotations

import asyncio
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import requests
from ray.job_submission import JobStatus, JobSubmissionClient

from controller_policy.logs import UPLOAD_LOGGERS, quieted

PACKAGES = ("controller_policy", "supernet_worker", "services")
# Never uploaded: environments, results, data and caches (Ray caps a working_dir at 500 MiB).
EXCLUDES = [".venv", ".git", "runs", "data", "*.npz", "*.pt", "__pycache__", "*.egg-info", ".pytest_cache",
            ".gitignore"]
COMMANDS = ("search", "compare", "retrain", "report", "make-table")


# (connect, read) seconds of every Jobs API request: a hung dashboard must not hang its caller.
TIMEOUT_S = (5.0, 30.0)
UPLOAD_TIMEOUT_S = (5.0, 300.0)  # a job's working_dir and packages (up to Ray's 500 MiB)


class JobsError(Exception):
    """A Jobs API call that cannot be done, said in one line."""


class JobsUnavailable(JobsError):
    """The Jobs API did not answer (refused, timed out, or the head is restarting): try again later."""


class _TimedJobClient(JobSubmissionClient):
    """Ray's client, whose requests otherwise wait forever on a dashboard that accepts and never answers."""

    def __init__(self, address: str | None, timeout_s: tuple[float, float]) -> None:
        self.timeout_s = timeout_s  # before super().__init__, which already asks for the version
        super().__init__(address)

    def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> requests.Response:
        upload = (self.timeout_s[0], max(self.timeout_s[1], UPLOAD_TIMEOUT_S[1]))
        kwargs.setdefault("timeout", upload if method == "PUT" else self.timeout_s)
        return super()._do_request(method, endpoint, **kwargs)


@dataclass
class JobRecord:
    job_id: str
    status: str
    entrypoint: str
    message: str
    start_time: float | None
    end_time: float | None


def entrypoint(command: Sequence[str]) -> str:
    """``raynas search --config x.yaml`` (or ``search --config x.yaml``) as a job's shell command."""
    args = list(command)
    if args and args[0] == "raynas":
        args = args[1:]
    if not args:
        raise JobsError("nothing to submit: give a raynas command after '--', e.g. -- raynas search --config ...")
    if args[0] not in COMMANDS:
        raise JobsError(f"cannot submit {args[0]!r}: a job runs one of raynas {', '.join(COMMANDS)}")
    return " ".join(["python", "-m", "services.cli", *map(shlex.quote, args)])


def project_runtime_env(working_dir: str | Path = ".") -> dict[str, Any]:
    """The submitting directory as the job's working directory, plus raynas's packages unless
    they already lie inside it (an editable checkout)."""
    root = Path(working_dir).resolve()
    if not root.is_dir():
        raise JobsError(f"--working-dir {working_dir}: not a directory")
    env: dict[str, Any] = {"working_dir": str(root), "excludes": list(EXCLUDES)}
    here = Path(__file__).resolve().parents[1]
    if not all((root / name / "__init__.py").is_file() and (root / name).resolve() == here / name for name in PACKAGES):
        env["py_modules"] = [str(here / name) for name in PACKAGES]
    return env


class RaynasJobs:
    """JobSubmissionClient with errors a user can act on."""

    def __init__(self, address: str | None = None, timeout_s: tuple[float, float] = TIMEOUT_S) -> None:
        """``timeout_s``: (connect, read) seconds of each request (uploads get at least five minutes)."""
        self.address = address or "(RAY_ADDRESS or the local cluster)"
        try:
            self.client = _TimedJobClient(address, timeout_s)
        except (ConnectionError, ValueError, requests.RequestException) as exc:
            raise JobsError(f"cannot reach the Ray Jobs API at {self.address}: {_first_line(exc)} "
                            "(is the head's dashboard running? `ray start --head` starts it on port 8265)") from None

    def _call(self, job_id: str | None, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except RuntimeError as exc:
            if job_id is not None and "does not exist" in str(exc):
                raise JobsError(f"no job {job_id!r} on {self.address} (see `raynas jobs list`)") from None
            if _UNAVAILABLE_STATUS.search(str(exc)):  # the dashboard is up but its head is not (yet)
                raise JobsUnavailable(f"Jobs API at {self.address}: {_first_line(exc)}") from None
            raise JobsError(f"Jobs API at {self.address}: {_first_line(exc)}") from None
        # Ray's client raises requests' errors (not the built-in ConnectionError) for a head that went away.
        except (ConnectionError, requests.RequestException) as exc:
            raise JobsUnavailable(f"lost the Jobs API at {self.address}: {_first_line(exc)}") from None

    def ping(self) -> str:
        """The cluster's Ray version; JobsUnavailable while the Jobs API does not answer."""
        return self._call(None, self.client.get_version)

    def submit(self, command: Sequence[str], working_dir: str | Path = ".", submission_id: str | None = None,
               metadata: dict[str, str] | None = None, entrypoint_num_gpus: float | None = None) -> str:
        ep = entrypoint(command)
        env = project_runtime_env(working_dir)
        if submission_id is not None and self.exists(submission_id):
            raise JobsError(f"job id {submission_id!r} is already taken on {self.address}: ids are never reused")
        with quieted(UPLOAD_LOGGERS):  # not a line per file it packages
            return self._call(None, lambda: self.client.submit_job(
                entrypoint=ep, runtime_env=env, submission_id=submission_id, metadata=metadata or {},
                entrypoint_num_gpus=entrypoint_num_gpus))

    def exists(self, job_id: str) -> bool:
        try:
            self.status(job_id)
            return True
        except JobsError as exc:
            if str(exc).startswith("no job "):
                return False
            raise

    def status(self, job_id: str) -> JobRecord:
        return _record(self._call(job_id, lambda: self.client.get_job_info(job_id)))

    def list(self) -> list[JobRecord]:
        jobs = [_record(j) for j in self._call(None, self.client.list_jobs) if j.submission_id]
        return sorted(jobs, key=lambda j: j.start_time or 0.0)

    def logs(self, job_id: str) -> str:
        return self._call(job_id, lambda: self.client.get_job_logs(job_id))

    def stop(self, job_id: str) -> bool:
        return self._call(job_id, lambda: self.client.stop_job(job_id))

    def follow(self, job_id: str, write: Callable[[str], Any]) -> JobRecord:
        """Stream the job's logs until it ends; return its final record."""
        self.status(job_id)  # an unknown id fails here, not inside the stream

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(job_id):
                write(chunk)

        self._call(job_id, lambda: asyncio.run(tail()))
        return self.status(job_id)


_UNAVAILABLE_STATUS = re.compile(r"status code (502|503|504)\b")


def _record(info: Any) -> JobRecord:
    status = info.status.value if isinstance(info.status, JobStatus) else str(info.status)
    to_s = lambda ms: ms / 1000.0 if ms else None  # noqa: E731 - the API gives milliseconds
    return JobRecord(job_id=info.submission_id or info.job_id, status=status, entrypoint=info.entrypoint,
                     message=info.message or "", start_time=to_s(info.start_time), end_time=to_s(info.end_time))


def _first_line(exc: BaseException) -> str:
    """The message, or a server traceback's last line (the exception itself)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return f"{lines[0].split(':')[0]}: {lines[-1]}" if "Traceback" in lines[0] and len(lines) > 1 else lines[0]
