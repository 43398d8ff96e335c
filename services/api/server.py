"""The gRPC search service (``raynas.v1.SearchService``): searches run as Ray jobs, the service
keeps its own records in SQLite and follows the jobs from one poller thread.

Handlers only read and write the store, never wait for Ray (reads run on one reader thread;
GetSearch answers from a cache that every change invalidates). The poller submits accepted searches,
maps Ray's job states, reads each running search's ``progress.json``, resubmits jobs a restarted
head lost, and at start-up reconciles every unfinished record with Ray, so a restarted service
loses and duplicates nothing.
"""
from __future__ import annotations

import asyncio
import csv
import hmac
import ipaddress
import json
import logging
import sqlite3
import threading
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import grpc
import uvloop
import yaml
from google.protobuf.json_format import ParseDict
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from controller_policy.spaces import build_space, parse_arch

from ..config import PRESETS_DIR
from ..jobs import JobsError, JobsUnavailable, RaynasJobs
from ..search import PROGRESS, latest_checkpoint
from .availability import DATABASE, RAY, Availability
from .feed import ChangeFeed, MessageCache
from .proto import raynas_pb2 as pb
from .proto import raynas_pb2_grpc as pb_grpc
from .store import DuplicateKey, SearchRecord, SearchStore, new_search_id
from .validation import (PathPolicy, RequestError, check_idempotency_key, check_list_request, check_name,
                         check_search_id, config_for_job, encode_page_token, spec_to_config)

log = logging.getLogger(__name__)
SERVICE_NAME = "raynas.v1.SearchService"
JOB_STATES = {"PENDING": "PENDING", "RUNNING": "RUNNING", "SUCCEEDED": "SUCCEEDED", "FAILED": "FAILED",
              "STOPPED": "CANCELLED"}


@dataclass
class ServiceConfig:
    host: str = "127.0.0.1"
    port: int = 50051  # 0: any free port
    ray_address: str | None = None  # the head's Jobs API (http://HEAD:8265); None: RAY_ADDRESS or local
    db: str = "runs/service/searches.db"
    runs_dir: str = "runs/service/searches"  # each search's output directory lies below (on the cluster's shared disk)
    presets_dir: str = str(PRESETS_DIR)
    token: str | None = field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    insecure: bool = False  # plaintext beyond loopback: tokens cross the network in clear (logged)
    data_roots: list[str] = field(default_factory=list)  # a spec's table/data_dir must lie below one (or runs_dir)
    max_table_bytes: int = 256 << 20
    poll_interval_s: float = 1.0
    max_retry_s: float = 30.0  # the longest back-off between attempts while Ray or the database is down
    db_timeout_s: float = 10.0  # a query waiting this long for another process's database lock fails
    max_job_attempts: int = 3  # Ray jobs per search: a head restart loses a running job, which is resubmitted
    max_workers: int = 8  # threads for handlers that call Ray or read files
    max_active: int = 16  # unfinished searches; a submit beyond gets RESOURCE_EXHAUSTED
    max_concurrent_rpcs: int = 256  # gRPC refuses calls beyond (RESOURCE_EXHAUSTED)
    max_watch_streams: int = 64  # open WatchSearch streams
    max_message_bytes: int = 1 << 20

    def validate(self) -> "ServiceConfig":
        if not self.is_loopback and not self.token:
            raise ValueError(f"--host {self.host}: binding beyond the loopback interface requires a bearer token "
                             "(--token-file FILE or --token-env VAR)")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("--tls-cert and --tls-key go together")
        for name in ("tls_cert", "tls_key"):
            value = getattr(self, name)
            if value and not Path(value).is_file():
                raise ValueError(f"--{name.replace('_', '-')} {value}: no such file")
        if self.token is not None and len(self.token) < 16:
            raise ValueError("the bearer token must be at least 16 characters")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port {self.port}: not a port")
        for root in self.data_roots:
            if not Path(root).is_dir():
                raise ValueError(f"--data-root {root}: not a directory")
        for name in ("max_active", "max_concurrent_rpcs", "max_watch_streams", "max_job_attempts"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        for name in ("poll_interval_s", "max_retry_s", "db_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if self.max_table_bytes < 1:
            raise ValueError(f"--max-table-mb: must be positive, got {self.max_table_bytes} bytes")
        if not self.is_loopback and not self.tls_cert and not self.insecure:
            raise ValueError(f"--host {self.host}: binding beyond the loopback interface requires TLS "
                             "(--tls-cert and --tls-key), or --insecure to send the bearer token in plaintext")
        return self

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


# -- records to messages --------------------------------------------------------------------
def progress_message(record: SearchRecord) -> pb.Progress:
    p = record.progress
    best = p.get("best") or None
    return pb.Progress(search_id=record.id, state=pb.SearchState.Value(record.state), epoch=int(p.get("iteration", 0)),
                       archs_sampled=int(p.get("evaluated", 0)), has_best=best is not None,
                       best_reward=float(best["reward"]) if best else 0.0, best_arch=best["arch"] if best else "",
                       updated_at=record.updated_at)


def search_message(record: SearchRecord) -> pb.Search:
    return pb.Search(id=record.id, name=record.name, state=pb.SearchState.Value(record.state),
                     spec=ParseDict(record.spec, pb.SearchSpec()), progress=progress_message(record),
                     error=record.error, job_id=record.job_id, output_dir=record.output_dir,
                     created_at=record.created_at, updated_at=record.updated_at,
                     idempotency_key=record.idempotency_key or "")


class Undecodable:
    """What arrives when the bytes are not the method's message (see ``method_handlers``)."""

    def __init__(self, message_type: type) -> None:
        self.type_name = message_type.DESCRIPTOR.full_name


def _check_decoded(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid {request.type_name} message")


def method_handlers(servicer: "SearchServicer") -> grpc.GenericRpcHandler:
    """The service's handlers, as ``add_SearchServiceServicer_to_server`` would register them, except
    that bytes which do not parse reach the handler (as ``Undecodable``) and are answered with
    INVALID_ARGUMENT instead of gRPC's INTERNAL."""
    def parser(message_type: type) -> Callable[[bytes], Any]:
        def parse(data: bytes) -> Any:
            try:
                return message_type.FromString(data)
            except DecodeError:
                return Undecodable(message_type)
        return parse

    handlers = {}
    for method in pb.DESCRIPTOR.services_by_name["SearchService"].methods:
        request_type, response_type = getattr(pb, method.input_type.name), getattr(pb, method.output_type.name)
        factory = grpc.unary_stream_rpc_method_handler if method.server_streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = factory(getattr(servicer, method.name), request_deserializer=parser(request_type),
                                        response_serializer=response_type.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


def _guarded(blocking: bool = False, reads: bool = False) -> Callable:
    """Bad requests become their status; a database that is unusable, UNAVAILABLE; anything
    unexpected, INTERNAL, never a crash. ``blocking`` handlers (they call the Jobs API or read
    files) run in the executor and ``reads`` (database reads only) on the reader thread, so the
    event loop never waits for either."""

    def wrap(method: Callable) -> Callable:
        async def handler(self, request, context):
            try:
                _check_decoded(request)
                if blocking or reads:
                    executor = self.reader if reads else None
                    return await asyncio.get_running_loop().run_in_executor(executor, method, self, request, context)
                return method(self, request, context)
            except RequestError as exc:
                await context.abort(exc.code, exc.message)
            except sqlite3.OperationalError as exc:  # locked, disk full, unreadable: the poller sees it recover
                self.availability.down(DATABASE, str(exc))
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"the service's database is unusable ({exc}); "
                                    "try again later")
            except Exception:  # noqa: BLE001 - the server outlives any one request
                log.exception("%s failed", method.__name__)
                await context.abort(grpc.StatusCode.INTERNAL, f"{method.__name__}: internal error (see the service log)")

        handler.__name__ = method.__name__
        return handler
    return wrap


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, cfg: ServiceConfig, store: SearchStore, jobs: RaynasJobs) -> None:
        self.cfg, self.store, self.jobs = cfg, store, jobs
        self.runs_dir = Path(cfg.runs_dir).resolve()
        self.paths = PathPolicy.of([*cfg.data_roots, self.runs_dir], cfg.max_table_bytes)
        self.jobs_dir = Path(cfg.db).resolve().parent / "jobs"
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._submitting = threading.Lock()
        self._admitting = threading.Lock()  # the active-search count and the insert, together
        self._watchers = 0  # open WatchSearch streams (event-loop thread only)
        self._latest = MessageCache()  # the current message of recently read searches, invalidated by _update
        # Reads that only touch the database: one thread, since the store serialises its queries
        # anyway (measured: more threads only add GIL contention to the tail latency).
        self.reader = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="raynas-db")
        self._poller: threading.Thread | None = None
        self.availability = Availability(cfg.poll_interval_s, cfg.max_retry_s)
        self.feed: ChangeFeed | None = None  # set once the event loop exists (start_service)

    # -- RPCs --------------------------------------------------------------------------------
    @_guarded(blocking=True)
    def SubmitSearch(self, request: pb.SubmitSearchRequest, context) -> pb.Search:
        name = check_name(request.name or "search")
        key = check_idempotency_key(request.idempotency_key)
        if not request.HasField("spec"):
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, "spec: required")
        cfg, spec = spec_to_config(request.spec, Path(self.cfg.presets_dir), self.paths)
        if key and (existing := self.store.by_key(key)) is not None:
            return search_message(self._same_request(existing, name, spec))
        search_id = new_search_id()
        output_dir = str(self.runs_dir / search_id)
        record = SearchRecord(id=search_id, name=name, idempotency_key=key, spec=spec,
                              config=config_for_job(cfg, output_dir), state="PENDING", submitted=False,
                              job_id=f"raynas-{search_id}", output_dir=output_dir)
        with self._admitting:
            active = self.store.count_unfinished()
            if active >= self.cfg.max_active:
                raise RequestError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                   f"{active} searches are active, this service's limit (--max-active); "
                                   "submit again when one has finished or cancel one")
            try:
                self.store.insert(record)
            except DuplicateKey:  # a concurrent submit with the same key won
                return search_message(self._same_request(self.store.by_key(key), name, spec))
        if self.availability.is_down(RAY):  # no call that would time out: the poller submits it later
            self._update(search_id, error=f"waiting for Ray: {self.availability.reason(RAY)}")
        else:
            self._submit(record)
        return search_message(self.store.get(search_id))

    async def GetSearch(self, request: pb.GetSearchRequest, context) -> pb.Search:
        """From memory when the search was read since its last change (only stored ids are keys)."""
        cached = None if isinstance(request, Undecodable) else self._latest.get(request.id)
        return cached if cached is not None else await self._read_search(request, context)

    @_guarded(reads=True)
    def _read_search(self, request: pb.GetSearchRequest, context) -> pb.Search:
        message = self._current_message(check_search_id(request.id))
        if message is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"id: no search {request.id}")
        return message

    @_guarded(reads=True)
    def ListSearches(self, request: pb.ListSearchesRequest, context) -> pb.ListSearchesResponse:
        states, size, after = check_list_request(request)
        page = self.store.page(states, request.name_prefix, after, size + 1)
        more = len(page) > size
        page = page[:size]
        # Only the records that changed since they were last read are read again.
        messages = [m for _, search_id in page if (m := self._current_message(search_id)) is not None]
        return pb.ListSearchesResponse(searches=messages,
                                       next_page_token=encode_page_token(page[-1][0]) if more else "")

    async def WatchSearch(self, request: pb.WatchSearchRequest, context) -> AsyncIterator[pb.Progress]:
        loop = asyncio.get_running_loop()
        try:
            _check_decoded(request)
            record = await loop.run_in_executor(self.reader, self._get, request.id, False)
        except RequestError as exc:
            await context.abort(exc.code, exc.message)
        except sqlite3.OperationalError as exc:
            self.availability.down(DATABASE, str(exc))
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the service's database is unusable ({exc})")
        if self._watchers >= self.cfg.max_watch_streams:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"{self._watchers} watch streams are open, this service's limit; poll GetSearch "
                                "or watch again later")
        self._watchers += 1
        try:
            async for progress in self._watch(record):
                yield progress
        finally:
            self._watchers -= 1
        if self._stop.is_set():
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the service is shutting down; watch again")

    async def _watch(self, record: SearchRecord) -> AsyncIterator[pb.Progress]:
        """Woken by the feed when the record changes; the timeout only bounds a missed database write
        by another process (none is expected: the service owns its database)."""
        loop, last = asyncio.get_running_loop(), None
        while not self._stop.is_set():  # a client that goes away cancels this coroutine
            seen = (record.state, record.progress.get("iteration"), record.progress.get("evaluated"))
            if seen != last:
                last = seen
                yield progress_message(record)
            if record.terminal:
                return
            changed = self.feed.changed(record.id)
            current = await loop.run_in_executor(self.reader, self.store.get, record.id, False)
            if current is not None and current.updated_at != record.updated_at:
                changed.cancel()
            else:
                try:
                    await asyncio.wait_for(changed, timeout=max(30.0, self.cfg.poll_interval_s))
                except asyncio.TimeoutError:
                    pass
                current = await loop.run_in_executor(self.reader, self.store.get, record.id, False)
            record = current if current is not None else record

    @_guarded(blocking=True)
    def CancelSearch(self, request: pb.CancelSearchRequest, context) -> pb.Search:
        self._get(request.id)  # bad or unknown ids fail before waiting for the lock
        # Under the submission lock: a submit in flight finishes first (its record then says
        # submitted and its job is stopped here), or sees cancel_requested and never starts.
        with self._submitting:
            record = self._get(request.id)
            if record.terminal:
                return search_message(record)
            self._update(record.id, cancel_requested=1)
            if not record.submitted:
                self._update(record.id, state="CANCELLED", error="cancelled before it was submitted to Ray")
            else:
                self._stop_job(record)
        self._wake.set()
        return search_message(self.store.get(record.id))

    def _update(self, search_id: str, **changes: Any) -> None:
        """Every change of a record goes through here, so its watchers wake."""
        self.store.update(search_id, **changes)
        self._latest.changed(search_id)
        if self.feed is not None:
            self.feed.notify(search_id)

    def _stop_job(self, record: SearchRecord) -> None:
        try:
            self.jobs.stop(record.job_id)
        except JobsError as exc:  # the poller tries again (the record keeps cancel_requested)
            log.warning("stopping %s: %s", record.job_id, exc)

    @_guarded(blocking=True)
    def GetResult(self, request: pb.GetResultRequest, context) -> pb.Result:
        record = self._get(request.id)
        if record.state != "SUCCEEDED":
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"search {record.id} is {record.state}; results come once it SUCCEEDED"
                               + (f" ({record.error})" if record.error else ""))
        return read_result(record)

    # -- helpers ------------------------------------------------------------------------------
    def _current_message(self, search_id: str) -> pb.Search | None:
        """The search's message: cached until its record changes (every change invalidates it)."""
        cached = self._latest.get(search_id)
        if cached is not None:
            return cached
        version = self._latest.version(search_id)
        record = self.store.get(search_id, with_config=False)
        if record is None:
            return None
        message = search_message(record)
        self._latest.put(search_id, version, message)
        return message

    def _get(self, search_id: str, with_config: bool = True) -> SearchRecord:
        record = self.store.get(check_search_id(search_id), with_config)
        if record is None:
            raise RequestError(grpc.StatusCode.NOT_FOUND, f"id: no search {search_id}")
        return record

    @staticmethod
    def _same_request(existing: SearchRecord, name: str, spec: dict[str, Any]) -> SearchRecord:
        if existing.spec != spec or existing.name != name:
            raise RequestError(grpc.StatusCode.ALREADY_EXISTS,
                               f"idempotency_key: {existing.idempotency_key!r} was used for a different search "
                               f"({existing.id})")
        return existing

    def _submit(self, record: SearchRecord) -> None:
        """Hand a stored search to Ray; if Ray is out of reach it stays PENDING and the poller retries.
        One submission at a time: the handler and the poller may both find the record unsubmitted."""
        with self._submitting:
            current = self.store.get(record.id)
            if current is None or current.submitted or current.terminal or current.cancel_requested:
                return
            self._submit_now(current)

    def _submit_now(self, record: SearchRecord) -> None:
        try:
            if not self.jobs.exists(record.job_id):  # a submit that went through before a crash counts
                job_dir = self.jobs_dir / record.id
                job_dir.mkdir(parents=True, exist_ok=True)
                (job_dir / "config.yaml").write_text(yaml.safe_dump(record.config, sort_keys=False))
                self.jobs.submit(search_command(record), working_dir=job_dir, submission_id=record.job_id,
                                 metadata={"raynas_search": record.id})
            self._update(record.id, submitted=1, error="")
        except JobsError as exc:
            self._update(record.id, error=f"waiting for Ray: {exc}")
            if isinstance(exc, JobsUnavailable):
                self.availability.down(RAY, str(exc))
            return
        # Re-checked after the job started: a cancel recorded meanwhile (by any path) stops it.
        current = self.store.get(record.id, with_config=False)
        if current is not None and current.cancel_requested:
            self._stop_job(current)

    # -- following the jobs --------------------------------------------------------------------
    def reconcile(self) -> None:
        """One pass: check Ray and the database, then submit, refresh state and progress of every
        unfinished search. An outage ends the pass (no timeout per record) and is retried with back-off."""
        try:
            self.store.check_writable()
            records = self.store.unfinished()
        except sqlite3.OperationalError as exc:
            self.availability.down(DATABASE, str(exc))
            return
        self.availability.up(DATABASE)
        try:
            self.jobs.ping()
        except JobsError as exc:
            self.availability.down(RAY, str(exc))
            return
        self.availability.up(RAY)
        for record in records:
            if self._stop.is_set():
                return
            try:
                self._refresh(record)
            except JobsUnavailable as exc:
                self.availability.down(RAY, str(exc))
                return
            except sqlite3.OperationalError as exc:
                self.availability.down(DATABASE, str(exc))
                return
            except Exception:  # noqa: BLE001 - one bad record must not stop the others
                log.exception("refreshing %s", record.id)

    def _refresh(self, record: SearchRecord) -> None:
        if not record.submitted:
            if record.cancel_requested:
                self._update(record.id, state="CANCELLED")
            else:
                self._submit(record)
            return
        try:
            job = self.jobs.status(record.job_id)
        except JobsUnavailable:
            raise
        except JobsError as exc:
            if str(exc).startswith("no job "):
                self._resubmit_lost(record)
            return
        if record.cancel_requested and job.status in ("PENDING", "RUNNING"):
            self.jobs.stop(record.job_id)
        changes: dict[str, Any] = {}
        progress = read_progress(record.output_dir)
        if progress is not None and progress != record.progress:
            changes["progress"] = progress
        state = JOB_STATES.get(job.status, record.state)
        if state != record.state:
            changes["state"] = state
            if state == "FAILED":
                changes["error"] = job_error(self.jobs, record.job_id, job.message)
        if changes:
            self._update(record.id, **changes)

    def _resubmit_lost(self, record: SearchRecord) -> None:
        """Ray no longer knows the job (its head restarted without persistent state): start it again,
        from its last checkpoint when it wrote one, up to ``max_job_attempts`` jobs per search."""
        lost = f"Ray lost the job {record.job_id} (was its head restarted?)"
        if record.attempt >= self.cfg.max_job_attempts:
            self._update(record.id, state="FAILED", error=f"{lost}; gave up after {record.attempt} jobs")
            return
        attempt = record.attempt + 1
        log.warning("%s; resubmitting search %s (job %d of at most %d)", lost, record.id, attempt,
                    self.cfg.max_job_attempts)
        self._update(record.id, state="PENDING", submitted=0, attempt=attempt,
                     job_id=f"raynas-{record.id}-{attempt}", error=f"{lost}; resubmitted")
        self._submit(record)

    def start_polling(self) -> None:
        self._poller = threading.Thread(target=self._poll_loop, name="raynas-job-poller", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.availability.retry_in(self.cfg.poll_interval_s))
            self._wake.clear()
            if not self._stop.is_set():
                self.reconcile()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self.feed is not None:
            self.feed.close()
        if self._poller is not None:
            self._poller.join(timeout=30)
        self.reader.shutdown(wait=False, cancel_futures=True)


def search_command(record: SearchRecord) -> list[str]:
    """A resubmitted search continues from its last checkpoint when it wrote one."""
    out = Path(record.output_dir)
    if record.attempt > 1 and (out / "config.json").is_file() and latest_checkpoint(out) is not None:
        return ["search", "--resume", str(out)]
    return ["search", "--config", "config.yaml"]


def read_progress(output_dir: str) -> dict[str, Any] | None:
    try:
        return json.loads((Path(output_dir) / PROGRESS).read_text())
    except (OSError, ValueError):
        return None


def job_error(jobs: RaynasJobs, job_id: str, message: str) -> str:
    """The search's own error line when it printed one (``raynas: error: ...``), else Ray's message."""
    try:
        lines = jobs.logs(job_id).splitlines()
    except JobsError:
        lines = []
    ours = [line for line in lines if line.startswith("raynas: error: ")]
    if ours:
        return ours[-1][len("raynas: error: "):]
    tail = [line for line in lines if line.strip()][-1:]
    return (message.splitlines()[0] if message else "the job failed") + (f": {tail[0]}" if tail else "")


def read_result(record: SearchRecord) -> pb.Result:
    out = Path(record.output_dir)
    space = build_space(record.config["space"]["name"], **record.config["space"].get("params", {}))

    def architecture(arch: str, reward: float, metrics: dict[str, Any]) -> pb.Architecture:
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        return pb.Architecture(arch=arch, json=json.dumps(space.to_json(parse_arch(space, arch))), reward=reward,
                               metrics=numeric)

    summary = json.loads((out / "summary.json").read_text())
    metrics: dict[str, float] = {"evaluated": float(summary["evaluated"]), "best_reward": float(summary["best"]["reward"])}
    top: list[pb.Architecture] = []
    if (out / "top_archs.json").is_file():  # weight sharing: ENAS's derivation
        derived = json.loads((out / "top_archs.json").read_text())
        top = [architecture(d["arch"], float(d["valid_accuracy"]), {"valid_accuracy": d["valid_accuracy"]})
               for d in derived]
        best = top[0]
        with (out / "metrics.csv").open() as f:
            rows = list(csv.DictReader(f))
        if rows:
            metrics.update({k: float(v) for k, v in rows[-1].items() if v not in ("", None)})
    else:
        best = architecture(summary["best"]["arch"], float(summary["best"]["reward"]), summary["best"].get("metrics", {}))
        top = [best]
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and "checkpoints" not in p.parts)
    return pb.Result(search_id=record.id, best=best, top=top, metrics=metrics, output_dir=str(out), files=files)


# -- the server ---------------------------------------------------------------------------------
class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Every RPC but the health check needs ``authorization: Bearer <token>`` (compared in constant time)."""

    def __init__(self, token: str) -> None:
        self.expected = f"Bearer {token}".encode()

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if details.method.startswith("/grpc.health.v1.Health/"):
            return handler
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode() if isinstance(given, str) else given, self.expected):
            return handler
        message = "missing or wrong bearer token"

        async def deny(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

        async def deny_stream(request, context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
            yield  # never reached; makes this a stream handler

        if handler is not None and handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(deny_stream)
        return grpc.unary_unary_rpc_method_handler(deny)


@dataclass
class RunningService:
    """A server on its own event loop thread; the job poller on another."""

    server: grpc.aio.Server
    servicer: SearchServicer
    health: health.aio.HealthServicer
    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread

    def stop(self, grace_s: float = 5.0) -> None:
        async def shutdown() -> None:
            await self.health.enter_graceful_shutdown()
            await self.server.stop(grace_s)

        self.servicer.stop()
        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(grace_s + 30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()
        self.servicer.store.close()


def start_service(cfg: ServiceConfig) -> RunningService:
    """Start serving (returns at once); ``RunningService.stop`` ends it."""
    cfg.validate()
    store = SearchStore(cfg.db, cfg.db_timeout_s)
    jobs = RaynasJobs(cfg.ray_address)
    servicer = SearchServicer(cfg, store, jobs)
    loop = uvloop.new_event_loop()  # measured: ~20% more calls/s than asyncio's loop (bench/service_load.py)
    loop.set_default_executor(futures.ThreadPoolExecutor(max_workers=cfg.max_workers, thread_name_prefix="raynas-rpc"))
    thread = threading.Thread(target=loop.run_forever, name="raynas-grpc", daemon=True)
    thread.start()
    servicer.feed = ChangeFeed(loop)
    servicer.reconcile()  # before serving: a restarted service answers with fresh states

    async def start() -> tuple[grpc.aio.Server, health.aio.HealthServicer, int]:
        options = [("grpc.max_receive_message_length", cfg.max_message_bytes),
                   ("grpc.max_send_message_length", 16 * cfg.max_message_bytes)]
        interceptors = [BearerTokenInterceptor(cfg.token)] if cfg.token else []
        server = grpc.aio.server(options=options, interceptors=interceptors,
                                 maximum_concurrent_rpcs=cfg.max_concurrent_rpcs)
        server.add_generic_rpc_handlers((method_handlers(servicer),))
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{cfg.host}:{cfg.port}"
        if cfg.tls_cert:
            creds = grpc.ssl_server_credentials([(Path(cfg.tls_key).read_bytes(), Path(cfg.tls_cert).read_bytes())])
            port = server.add_secure_port(address, creds)
        else:
            if not cfg.is_loopback:  # validate() allowed it only with --insecure
                log.warning("serving %s in plaintext (--insecure): bearer tokens and searches cross the network "
                            "unencrypted", address)
            port = server.add_insecure_port(address)
        await server.start()
        return server, health_servicer, port

    try:
        server, health_servicer, port = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    except Exception as exc:
        servicer.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        store.close()
        raise ValueError(f"cannot serve on {cfg.host}:{cfg.port}: {exc}") from None

    async def set_health(serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, status)

    # NOT_SERVING while Ray or the database is down; set from the poller's thread on every change.
    servicer.availability.on_change = lambda serving: asyncio.run_coroutine_threadsafe(set_health(serving), loop)
    asyncio.run_coroutine_threadsafe(set_health(servicer.availability.serving), loop).result(10)
    servicer.start_polling()
    return RunningService(server, servicer, health_servicer, port, loop, thread)
