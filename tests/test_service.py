"""The gRPC search service end to end: a real head, a real server on a free loopback port, a real client."""
import json
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller_policy.landscapes import nb201_landscape
from services.jobs import RaynasJobs
from services.api.proto import raynas_pb2 as pb
from services.api.server import ServiceConfig, start_service
from services.api.store import SearchRecord, SearchStore, new_search_id
from services.api.client import SearchClient
from services.api.validation import PathPolicy, config_for_job, spec_to_config
from tests.ray_head import free_port

TOKEN = "correct-horse-battery-staple"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "nb201.json"
    path.write_text(json.dumps(nb201_landscape(0)))
    return path


@pytest.fixture(scope="module")
def service_cfg(ray_head, tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    return ServiceConfig(port=0, ray_address=ray_head.jobs_url, db=str(root / "searches.db"),
                         runs_dir=str(root / "runs"), poll_interval_s=0.3,
                         data_roots=[str(tmp_path_factory.getbasetemp())])  # the tests' tables lie below


@pytest.fixture(scope="module")
def service(service_cfg):
    running = start_service(service_cfg)
    yield running
    running.stop()


@pytest.fixture
def client(service):
    with SearchClient(f"127.0.0.1:{service.port}", timeout_s=30) as c:
        yield c


def tabular(table, budget=16, **fields):
    spec = pb.SearchSpec(space=pb.NB201, algorithm=pb.PPO, evaluator=pb.TABLE, table=str(table), reward_key="valid",
                         budget=budget, yaml_overrides="episodes_per_iteration: 4\n")
    for key, value in fields.items():
        setattr(spec, key, value)
    return spec


def watch(client, search_id, timeout_s=180):
    return list(client.watch(pb.WatchSearchRequest(id=search_id), timeout_s=timeout_s))


def wait_for(client, search_id, states, timeout_s=120):
    deadline = time.time() + timeout_s
    while True:
        search = client.call("GetSearch", pb.GetSearchRequest(id=search_id))
        if search.state in states or time.time() > deadline:
            return search
        time.sleep(0.3)


def test_submit_watch_and_fetch_the_result(client, table):
    search = client.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table), name="first"))
    assert search.state in (pb.PENDING, pb.RUNNING) and search.id.startswith("s-") and search.job_id
    updates = watch(client, search.id)
    assert updates[-1].state == pb.SUCCEEDED and updates[-1].archs_sampled == 16 and updates[-1].epoch == 4
    epochs = [u.epoch for u in updates if u.state == pb.RUNNING]
    assert epochs == sorted(epochs) and len(set(epochs)) >= 2  # one message per iteration as it goes

    result = client.call("GetResult", pb.GetResultRequest(id=search.id))
    assert result.best.arch.startswith("|") and result.best.reward == updates[-1].best_reward
    structure = json.loads(result.best.json)  # loadable by raynas: the space and the cell's nodes
    assert structure["space"] == "nb201" and sum(len(node) for node in structure["nodes"]) == 6
    assert result.metrics["evaluated"] == 16 and "trajectory.jsonl" in result.files
    rows = (Path(result.output_dir) / "trajectory.jsonl").read_text().splitlines()
    assert len(rows) == 16
    listed = client.call("ListSearches", pb.ListSearchesRequest(states=[pb.SUCCEEDED]))
    assert search.id in [s.id for s in listed.searches]


def test_a_resubmit_with_the_same_key_is_the_same_search(client, table, ray_head):
    request = pb.SubmitSearchRequest(spec=tabular(table, seed=3), name="keyed", idempotency_key="run-42")
    first = client.call("SubmitSearch", request)
    again = client.call("SubmitSearch", request)
    assert again.id == first.id and again.job_id == first.job_id
    jobs = [j for j in RaynasJobs(ray_head.jobs_url).list() if j.job_id == first.job_id]
    assert len(jobs) == 1
    other = pb.SubmitSearchRequest(spec=tabular(table, seed=4), name="keyed", idempotency_key="run-42")
    with pytest.raises(grpc.RpcError) as err:
        client.call("SubmitSearch", other)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS and "run-42" in err.value.details()
    assert watch(client, first.id)[-1].state == pb.SUCCEEDED


def test_cancel_a_running_search(client, table):
    search = client.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=100_000), name="long"))
    assert wait_for(client, search.id, (pb.RUNNING,)).state == pb.RUNNING
    client.call("CancelSearch", pb.CancelSearchRequest(id=search.id))
    assert watch(client, search.id)[-1].state == pb.CANCELLED
    with pytest.raises(grpc.RpcError) as err:
        client.call("GetResult", pb.GetResultRequest(id=search.id))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "CANCELLED" in err.value.details()


def test_a_cancel_racing_the_submission_stops_the_job_that_started(ray_head, table, tmp_path, monkeypatch):
    """The submission is held inside the Jobs API call while CancelSearch arrives: the job that
    then starts is stopped, and the search ends CANCELLED (not RUNNING forever)."""
    import threading

    import services.api.server as search_service

    inside, release = threading.Event(), threading.Event()

    class SlowJobs(RaynasJobs):  # a real Jobs API client whose submit is held at the door
        def submit(self, *args, **kwargs):
            inside.set()
            release.wait(30)
            return super().submit(*args, **kwargs)

    monkeypatch.setattr(search_service, "RaynasJobs", SlowJobs)
    running = start_service(ServiceConfig(port=0, ray_address=ray_head.jobs_url, db=str(tmp_path / "s.db"),
                                          runs_dir=str(tmp_path / "runs"), poll_interval_s=0.3,
                                          data_roots=[str(table.parent)]))
    try:
        with SearchClient(f"127.0.0.1:{running.port}", timeout_s=60) as c:
            submitted: list = []
            submitter = threading.Thread(target=lambda: submitted.append(c.call("SubmitSearch", pb.SubmitSearchRequest(
                spec=tabular(table, budget=100_000), name="raced"))))
            submitter.start()
            assert inside.wait(30)
            search_id = c.call("ListSearches", pb.ListSearchesRequest(name_prefix="raced")).searches[0].id
            cancelled: list = []
            canceller = threading.Thread(target=lambda: cancelled.append(
                c.call("CancelSearch", pb.CancelSearchRequest(id=search_id))))
            canceller.start()
            time.sleep(1.0)  # the cancel now waits for the submission to finish
            assert not cancelled
            release.set()
            submitter.join(60)
            canceller.join(60)
            assert submitted and cancelled
            final = wait_for(c, search_id, (pb.CANCELLED, pb.FAILED, pb.SUCCEEDED), timeout_s=120)
            assert final.state == pb.CANCELLED, final
            job = RaynasJobs(ray_head.jobs_url).status(final.job_id)
            assert job.status == "STOPPED", job
    finally:
        release.set()
        running.stop()


def test_caps_on_active_searches_and_watch_streams(ray_head, table, tmp_path):
    running = start_service(ServiceConfig(port=0, ray_address=ray_head.jobs_url, db=str(tmp_path / "s.db"),
                                          runs_dir=str(tmp_path / "runs"), poll_interval_s=0.3,
                                          data_roots=[str(table.parent)], max_active=1, max_watch_streams=1))
    try:
        with SearchClient(f"127.0.0.1:{running.port}", timeout_s=60) as c:
            first = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=100_000), name="one",
                                                                  idempotency_key="cap-1"))
            with pytest.raises(grpc.RpcError) as err:
                c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, seed=9), name="two"))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-active" in err.value.details()
            # a resubmit of the active one is the same search, not a new one
            again = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=100_000), name="one",
                                                                  idempotency_key="cap-1"))
            assert again.id == first.id

            stream = c.watch(pb.WatchSearchRequest(id=first.id), timeout_s=60)
            next(stream)  # one stream open
            with pytest.raises(grpc.RpcError) as err:
                list(c.watch(pb.WatchSearchRequest(id=first.id), timeout_s=20))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "watch streams" in err.value.details()
            stream.cancel()
            c.call("CancelSearch", pb.CancelSearchRequest(id=first.id))
            assert wait_for(c, first.id, (pb.CANCELLED,)).state == pb.CANCELLED
            second = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, seed=9), name="two"))
            updates = list(c.watch(pb.WatchSearchRequest(id=second.id), timeout_s=180))  # the stream was freed
            assert updates[-1].state == pb.SUCCEEDED
    finally:
        running.stop()


def test_a_failed_search_reports_its_error(client, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"not an architecture": 1.0}))
    search = client.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(broken), name="broken"))
    final = wait_for(client, search.id, (pb.FAILED, pb.SUCCEEDED))
    assert final.state == pb.FAILED and "broken.json" in final.error, final.error


def test_restarting_the_service_loses_and_duplicates_nothing(service_cfg, table, ray_head):
    first = start_service(service_cfg)
    with SearchClient(f"127.0.0.1:{first.port}") as c:
        search = c.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=96), name="restarted"))
        wait_for(c, search.id, (pb.RUNNING,))
        before = c.call("ListSearches", pb.ListSearchesRequest(page_size=500)).searches
    first.stop()
    # A search stored but never handed to Ray, as when the service dies between the two steps.
    store = SearchStore(service_cfg.db)
    cfg, spec = spec_to_config(tabular(table, seed=7), Path(service_cfg.presets_dir),
                               PathPolicy.of(service_cfg.data_roots))
    orphan_id = new_search_id()
    out = str(Path(service_cfg.runs_dir).resolve() / orphan_id)
    store.insert(SearchRecord(id=orphan_id, name="orphan", idempotency_key=None, spec=spec,
                              config=config_for_job(cfg, out), state="PENDING", submitted=False,
                              job_id=f"raynas-{orphan_id}", output_dir=out))
    store.close()

    second = start_service(service_cfg)
    try:
        with SearchClient(f"127.0.0.1:{second.port}") as c:
            assert c.call("GetSearch", pb.GetSearchRequest(id=search.id)).name == "restarted"
            assert watch(c, search.id)[-1].state == pb.SUCCEEDED
            assert watch(c, orphan_id)[-1].state == pb.SUCCEEDED
            after = c.call("ListSearches", pb.ListSearchesRequest(page_size=500)).searches
            assert [s.id for s in after] == [s.id for s in before] + [orphan_id]
    finally:
        second.stop()
    for job_id in (search.job_id, f"raynas-{orphan_id}"):
        assert sum(j.job_id == job_id for j in RaynasJobs(ray_head.jobs_url).list()) == 1


def test_listing_pages_through_everything(client, table):
    ids = [client.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=8), name=f"page-{i}")).id
           for i in range(3)]
    seen, request = [], pb.ListSearchesRequest(name_prefix="page-", page_size=2)
    while True:
        page = client.call("ListSearches", request)
        assert len(page.searches) <= 2
        seen += [s.id for s in page.searches]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert seen == ids
    for search_id in ids:
        wait_for(client, search_id, (pb.SUCCEEDED, pb.FAILED))


# -- authentication and TLS ---------------------------------------------------------------------
def make_cert(tmp_path):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_token_and_tls(service_cfg, tmp_path):
    cert, key = make_cert(tmp_path)
    cfg = ServiceConfig(**{**service_cfg.__dict__, "db": str(tmp_path / "auth.db"), "token": TOKEN,
                           "tls_cert": str(cert), "tls_key": str(key)})
    running = start_service(cfg)
    address = f"localhost:{running.port}"
    try:
        for token in (None, "wrong-token-wrong-token", TOKEN + "x"):
            with SearchClient(address, token=token, tls_ca=str(cert)) as c:
                for call in (lambda: c.call("ListSearches", pb.ListSearchesRequest()),
                             lambda: list(c.watch(pb.WatchSearchRequest(id="s-0000000000000000"), timeout_s=10))):
                    with pytest.raises(grpc.RpcError) as err:
                        call()
                    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with SearchClient(address, token=TOKEN, tls_ca=str(cert)) as c:
            assert list(c.call("ListSearches", pb.ListSearchesRequest()).searches) == []
            health = health_pb2_grpc.HealthStub(c.channel)  # probes need no token
            assert health.Check(health_pb2.HealthCheckRequest(service="raynas.v1.SearchService")).status == 1
        with SearchClient(address.replace("localhost", "127.0.0.1"), token=TOKEN) as plain:  # no TLS: refused
            with pytest.raises(grpc.RpcError) as err:
                plain.call("ListSearches", pb.ListSearchesRequest())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        running.stop()


@pytest.mark.parametrize("changes, said", [
    ({"host": "0.0.0.0"}, "requires a bearer token"),
    ({"host": "0.0.0.0", "token": "short"}, "at least 16 characters"),
    ({"host": "0.0.0.0", "token": "t" * 16}, "requires TLS .*or --insecure"),
    ({"host": "192.0.2.1", "token": "t" * 16, "insecure": False}, "requires TLS"),
    ({"tls_cert": "/nonexistent/cert.pem"}, "go together"),
    ({"tls_cert": "/nonexistent/cert.pem", "tls_key": "/nonexistent/key.pem"}, "no such file"),
])
def test_unsafe_service_configs_are_refused(changes, said):
    with pytest.raises(ValueError, match=said):
        ServiceConfig(**changes).validate()


def test_plaintext_beyond_loopback_only_when_asked_for_and_logged(ray_head, tmp_path, caplog):
    import logging

    cfg = ServiceConfig(host="0.0.0.0", port=0, token="t" * 16, insecure=True, db=str(tmp_path / "s.db"),
                        runs_dir=str(tmp_path / "runs"), ray_address=ray_head.jobs_url)
    assert cfg.validate() is cfg
    with caplog.at_level(logging.WARNING, logger="services.api.server"):
        running = start_service(cfg)
        running.stop()
    assert any("in plaintext (--insecure)" in r.getMessage() for r in caplog.records)


def test_serve_and_client_commands(service, ray_head, table, tmp_path, capsys):
    from tests.test_jobs import run_cli

    def cli(*argv):
        return run_cli(capsys, *argv)

    address = ("--address", f"127.0.0.1:{service.port}")
    code, out, err = cli("client", "submit", *address, "--space", "nb201", "--evaluator", "table", "--table",
                         str(table), "--reward-key", "valid", "--budget", "8", "--name", "from-cli")
    assert code == 0, err
    search_id = json.loads(out)["id"]
    code, out, _ = cli("client", "watch", search_id, *address)
    assert code == 0 and "[SUCCEEDED] epoch 1 archs 8" in out
    code, out, _ = cli("client", "result", search_id, *address)
    assert code == 0 and json.loads(out)["best"]["arch"].startswith("|")
    code, out, _ = cli("client", "list", *address, "--name-prefix", "from-cli")
    assert code == 0 and search_id in out and "SUCCEEDED" in out
    code, _, err = cli("client", "get", "s-ffffffffffffffff", *address)
    assert code == 2 and "NOT_FOUND" in err
    code, _, err = cli("client", "submit", *address, "--space", "resnet")
    assert code == 2 and "argument --space: invalid choice: 'resnet'" in err
    code, _, err = cli("client", "list", *address, "--state", "bogus")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "argument --state: 'bogus': choose pending, running, succeeded, failed, cancelled" in err
    code, _, err = cli("client", "get", search_id, *address, "--tls-ca", str(tmp_path / "absent.pem"))
    assert code == 2 and err.strip() == f"raynas: error: --tls-ca {tmp_path / 'absent.pem'}: no such file"
    code, _, err = cli("client", "list", "--address", f"127.0.0.1:{free_port()}")
    assert code == 2 and err.startswith("raynas: error: UNAVAILABLE: ") and len(err.strip().splitlines()) == 1
    # A search that fails: `watch` says how it ended and exits 1 (a result, not a misuse).
    code, out, err = cli("client", "submit", *address, "--space", "nb201", "--evaluator", "table", "--table",
                         str(table), "--reward-key", "no-such-metric", "--budget", "8", "--name", "doomed")
    assert code == 0, err
    code, out, _ = cli("client", "watch", json.loads(out)["id"], *address)
    assert code == 1 and "ended FAILED: " in out.strip().splitlines()[-1] and "no metric named 'no-such-metric'" in out
    # `raynas client result ID | head`: a closed pipe ends it quietly, as Unix tools do.
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "client", "result", search_id, *address],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    assert proc.wait(60) == 141 and b"Traceback" not in proc.stderr.read()
    proc.stderr.close()
    code, _, err = cli("serve", "--host", "0.0.0.0", "--port", "0")
    assert code == 2 and "requires a bearer token" in err
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, _, err = cli("serve", "--host", "0.0.0.0", "--port", "0", "--token-file", str(token_file))
    assert code == 2 and "requires TLS (--tls-cert and --tls-key), or --insecure" in err
    code, _, err = cli("serve", "--port", "0", "--data-root", str(tmp_path / "absent"))
    assert code == 2 and f"--data-root {tmp_path / 'absent'}: not a directory" in err

    # The real entry point in its own process: serves, answers health checks, stops on SIGTERM.
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--port", str(port), "--ray-address",
                             ray_head.jobs_url, "--db", str(tmp_path / "cli.db"), "--runs-dir", str(tmp_path / "runs"),
                             "--token-file", str(token_file), "--data-root", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert "search service on 127.0.0.1:" in proc.stdout.readline()
        code, out, _ = cli("client", "list", "--address", f"127.0.0.1:{port}", "--token-file", str(token_file))
        assert code == 0 and out == ""
        code, _, err = cli("client", "list", "--address", f"127.0.0.1:{port}")
        assert code == 2 and "UNAUTHENTICATED" in err
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_ctrl_c_while_watching_leaves_the_search_running(client, service, table):
    from tests.test_interrupts import Command

    search = client.call("SubmitSearch", pb.SubmitSearchRequest(spec=tabular(table, budget=100000)))
    address = ("--address", f"127.0.0.1:{service.port}")
    command = Command("client", "watch", search.id, *address)
    command.wait_for_line("] epoch ")
    command.interrupt()
    code, out, err = command.finish()
    assert code == 130, err
    assert err == (f"raynas: interrupted; the search goes on; watch it again with: raynas client watch {search.id} "
                   f"--address 127.0.0.1:{service.port}\n"), err
    assert client.call("GetSearch", pb.GetSearchRequest(id=search.id)).state in (pb.PENDING, pb.RUNNING)
    client.call("CancelSearch", pb.CancelSearchRequest(id=search.id))
    assert wait_for(client, search.id, {pb.CANCELLED}).state == pb.CANCELLED
