"""Malformed and hostile requests: each answered with the right status and a message naming the
field; nothing is stored or submitted; the server stays healthy."""
import base64
import json
import os

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller_policy.landscapes import nb201_landscape
from services.api.proto import raynas_pb2 as pb
from services.api.server import ServiceConfig, start_service
from services.api.client import SearchClient

INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b]\n"


@pytest.fixture(scope="module")
def bad_service(ray_head, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    table = root / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    # inside the data root: ways out and things that are no table
    (root / "passwd.json").symlink_to("/etc/passwd")
    (root / "zero.json").symlink_to("/dev/zero")
    os.mkfifo(root / "fifo.json")
    (root / "a-directory.json").mkdir()
    cap = table.stat().st_size + 100
    (root / "huge.json").write_bytes(b" " * (cap + 1))
    running = start_service(ServiceConfig(port=0, ray_address=ray_head.jobs_url, db=str(root / "searches.db"),
                                          runs_dir=str(root / "runs"), poll_interval_s=0.5, data_roots=[str(root)],
                                          max_table_bytes=cap))
    with SearchClient(f"127.0.0.1:{running.port}", timeout_s=20) as client:
        yield client, table
    running.stop()


def submit(table=None, name="bad", key="", **spec_fields):
    """A valid tabular request with some fields replaced (``table=None``: the good table)."""
    def build(good_table):
        root = good_table.parent  # "{root}" in a path: the service's data root
        spec = pb.SearchSpec(space=pb.NB201, algorithm=pb.PPO, evaluator=pb.TABLE, reward_key="valid", budget=8,
                             table=str(good_table) if table is None else table.replace("{root}", str(root)))
        for field, value in spec_fields.items():
            if value is None:
                spec.ClearField(field)
            else:
                setattr(spec, field, value.replace("{root}", str(root)) if isinstance(value, str) else value)
        return pb.SubmitSearchRequest(spec=spec, name=name, idempotency_key=key)
    return "SubmitSearch", build


def plain(method, request):
    return method, lambda _table: request


CASES = {
    # SubmitSearch: the envelope
    "no spec": (plain("SubmitSearch", pb.SubmitSearchRequest(name="x")), INVALID, "spec: required"),
    "name path traversal": (submit(name="../../etc/passwd"), INVALID, "name:"),
    "name with slash": (submit(name="runs/x"), INVALID, "name:"),
    "name dot-dot": (submit(name=".."), INVALID, "name:"),
    "name too long": (submit(name="n" * 65), INVALID, "name:"),
    "name not ascii": (submit(name="résumé"), INVALID, "name:"),
    "key with spaces": (submit(key="my key"), INVALID, "idempotency_key:"),
    "key too long": (submit(key="k" * 129), INVALID, "idempotency_key:"),
    # SubmitSearch: enums and budgets
    "unknown space": (submit(space=99), INVALID, "spec.space"),
    "unknown algorithm": (submit(algorithm=-1), INVALID, "spec.algorithm"),
    "unknown evaluator": (submit(evaluator=7), INVALID, "spec.evaluator"),
    "zero budget": (submit(budget=0), INVALID, "spec.budget"),
    "negative budget": (submit(budget=-5), INVALID, "spec.budget"),
    "absurd budget": (submit(budget=2_000_000_000), INVALID, "spec.budget"),
    "zero epochs": (submit(epochs=0), INVALID, "spec.epochs"),
    "absurd epochs": (submit(epochs=10**6), INVALID, "spec.epochs"),
    "zero workers": (submit(workers=0), INVALID, "spec.workers"),
    "absurd workers": (submit(workers=100_000), INVALID, "spec.workers"),
    "negative gpus": (submit(gpus_per_worker=-1.0), INVALID, "spec.gpus_per_worker"),
    "nan gpus": (submit(gpus_per_worker=float("nan")), INVALID, "spec.gpus_per_worker"),
    "infinite gpus": (submit(gpus_per_worker=float("inf")), INVALID, "spec.gpus_per_worker"),
    "negative seed": (submit(seed=-1), INVALID, "spec.seed"),
    # SubmitSearch: paths
    "relative table": (submit(table="table.json"), INVALID, "spec.table"),
    "table traversal": (submit(table="/tmp/../etc/passwd"), INVALID, "spec.table"),
    "missing table": (submit(table="/nonexistent/table.json"), INVALID, "spec.table"),
    # confinement: only the data root (and the runs dir), symlinks resolved, regular files under the cap
    "table outside the roots": (submit(table="/etc/hostname"), INVALID, "is outside the directories this service"),
    "missing table outside": (submit(table="/nonexistent/t.json"), INVALID, "is outside the directories"),
    "symlink out of the root": (submit(table="{root}/passwd.json"), INVALID, "is outside the directories"),
    "/dev/zero": (submit(table="/dev/zero"), INVALID, "is outside the directories"),
    "symlink to /dev/zero": (submit(table="{root}/zero.json"), INVALID, "is outside the directories"),
    "fifo as table": (submit(table="{root}/fifo.json"), INVALID, "is not a regular file"),
    "directory as table": (submit(table="{root}/a-directory.json"), INVALID, "is not a regular file"),
    "oversized table": (submit(table="{root}/huge.json"), INVALID, "more than this service's"),
    "missing table inside": (submit(table="{root}/absent.json"), INVALID, "does not exist"),
    "file as data dir": (submit(evaluator=pb.SUPERNET, table="", budget=None, data_dir="{root}/table.json"), INVALID,
                         "is not a directory"),
    "data dir outside": (submit(evaluator=pb.SUPERNET, table="", budget=None, data_dir="/usr"), INVALID,
                         "spec.data_dir: '/usr' is outside"),
    "table with NUL": (submit(table="/tmp/a\x00b"), INVALID, "spec.table"),
    "huge table path": (submit(table="/" + "a" * 100_000), INVALID, "spec.table"),
    "relative data dir": (submit(data_dir="data/cifar10"), INVALID, "spec.data_dir"),
    "table evaluator without table": (submit(table=""), INVALID, "evaluator.table"),
    "preset traversal": (submit(preset="../../etc/passwd"), INVALID, "spec.preset"),
    "unknown preset": (submit(preset="no-such-preset"), INVALID, "unknown preset"),
    # SubmitSearch: yaml_overrides
    "malformed yaml": (submit(yaml_overrides="budget: [1, 2"), INVALID, "spec.yaml_overrides: not valid YAML"),
    "yaml not a mapping": (submit(yaml_overrides="- 1\n- 2\n"), INVALID, "must be a YAML mapping"),
    "yaml aliases": (submit(yaml_overrides=BILLION_LAUGHS), INVALID, "anchors and aliases"),
    "yaml python tag": (submit(yaml_overrides="x: !!python/object/apply:os.system ['true']\n"), INVALID,
                        "not valid YAML"),
    "yaml too large": (submit(yaml_overrides="seed: 1\n" + "#" * 70_000), INVALID, "at most 65536"),
    "yaml unknown key": (submit(yaml_overrides="bogus: 1\n"), INVALID, "unknown key 'bogus'"),
    "yaml wrong type": (submit(yaml_overrides="episodes_per_iteration: many\n"), INVALID,
                        "episodes_per_iteration must be an integer or null, got 'many' (a string); e.g. 1"),
    "yaml unknown space": (submit(space=0, yaml_overrides="space: {name: resnet}\n"), INVALID, "space.name"),
    "yaml relative table": (submit(table="", yaml_overrides="evaluator: {table: t.json}\n"), INVALID,
                            "evaluator.table"),
    "yaml absurd budget": (submit(budget=None, yaml_overrides="budget: 99999999\n"), INVALID,
                           "budget: 99999999 is outside"),
    "latency table outside the roots": (submit(yaml_overrides="objective: {latency_table: /etc/hostname}\n"),
                                        INVALID, "objective.latency_table: '/etc/hostname' is outside the directories"),
    "latency constraint without table": (submit(yaml_overrides="objective: {constraints: {latency_ms: {target: 1}}}\n"),
                                         INVALID, "objective.constraints.latency_ms needs objective.latency_table"),
    "absurd flops target": (submit(yaml_overrides="objective: {constraints: {flops_m: {target: 1.0e+12}}}\n"),
                            INVALID, "objective.constraints.flops_m.target: 1000000000000.0 is outside"),
    # bounds on the final config: every number, and the space's size before it is built
    "oversized space": (submit(space=0, yaml_overrides="space: {name: enas_macro, params: {num_layers: 2000}}\n"),
                        INVALID, "space.params.num_layers: '2000' is outside [1, 64]"),
    "space ops list": (submit(space=0, yaml_overrides="space: {name: enas_macro, params: {ops: []}}\n"), INVALID,
                       "space.params.ops"),
    "yaml gpus per worker": (submit(yaml_overrides="weight_sharing: {gpus_per_worker: 1000000}\n"), INVALID,
                             "weight_sharing.gpus_per_worker: 1000000.0 is outside [0, 16]"),
    "yaml cpus per worker": (submit(yaml_overrides="weight_sharing: {cpus_per_worker: 1.0e+6}\n"), INVALID,
                             "weight_sharing.cpus_per_worker"),
    "yaml derive samples": (submit(yaml_overrides="weight_sharing: {derive_samples: 1000000000}\n"), INVALID,
                            "weight_sharing.derive_samples"),
    "yaml train steps": (submit(yaml_overrides="weight_sharing: {train_steps: 1000000000}\n"), INVALID,
                         "weight_sharing.train_steps"),
    "yaml batch size": (submit(yaml_overrides="data: {batch_size: 10000000}\n"), INVALID, "data.batch_size"),
    "yaml channels": (submit(yaml_overrides="supernet: {channels: 100000}\n"), INVALID, "supernet.channels"),
    "yaml nan": (submit(yaml_overrides="skip_weight: .nan\n"), INVALID, "skip_weight: nan is outside"),
    "supernet budget mismatch": (submit(evaluator=pb.SUPERNET, table="", budget=5,
                                        yaml_overrides="data: {source: synthetic}\n"), INVALID, "budget (5)"),
    "undecodable bytes": (plain("SubmitSearch", None), INVALID, "not a valid raynas.v1.SubmitSearchRequest"),
    # ids
    "empty id": (plain("GetSearch", pb.GetSearchRequest(id="")), INVALID, "id: required"),
    "id traversal": (plain("GetSearch", pb.GetSearchRequest(id="../searches.db")), INVALID, "id:"),
    "huge id": (plain("GetSearch", pb.GetSearchRequest(id="s-" + "f" * 100_000)), INVALID, "id:"),
    "unknown id": (plain("GetSearch", pb.GetSearchRequest(id="s-0123456789abcdef")), NOT_FOUND, "no search"),
    "cancel unknown": (plain("CancelSearch", pb.CancelSearchRequest(id="s-0123456789abcdef")), NOT_FOUND, "no search"),
    "result unknown": (plain("GetResult", pb.GetResultRequest(id="s-0123456789abcdef")), NOT_FOUND, "no search"),
    "result bad id": (plain("GetResult", pb.GetResultRequest(id="DROP TABLE searches")), INVALID, "id:"),
    "watch unknown": (plain("WatchSearch", pb.WatchSearchRequest(id="s-0123456789abcdef")), NOT_FOUND, "no search"),
    "watch bad id": (plain("WatchSearch", pb.WatchSearchRequest(id="x")), INVALID, "id:"),
    # listing
    "negative page size": (plain("ListSearches", pb.ListSearchesRequest(page_size=-1)), INVALID, "page_size"),
    "huge page size": (plain("ListSearches", pb.ListSearchesRequest(page_size=100_000)), INVALID, "page_size"),
    "garbage page token": (plain("ListSearches", pb.ListSearchesRequest(page_token="%%%not-base64")), INVALID,
                           "page_token"),
    "forged page token": (plain("ListSearches", pb.ListSearchesRequest(
        page_token=base64.urlsafe_b64encode(b"after:1 OR 1=1").decode())), INVALID, "page_token"),
    "unknown state": (plain("ListSearches", pb.ListSearchesRequest(states=[42])), INVALID, "states"),
    "long name prefix": (plain("ListSearches", pb.ListSearchesRequest(name_prefix="p" * 1000)), INVALID,
                         "name_prefix"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request(bad_service, case):
    client, table = bad_service
    (method, build), code, said = CASES[case]
    request = build(table)
    with pytest.raises(grpc.RpcError) as err:
        if request is None:  # bytes that are no protobuf message: invalid UTF-8 in a string field
            raw = client.channel.unary_unary(f"/raynas.v1.SearchService/{method}", request_serializer=lambda b: b,
                                             response_deserializer=lambda b: b)
            raw(b"\x12\x02\xff\xfe", timeout=20)
        elif method == "WatchSearch":
            list(client.watch(request, timeout_s=20))
        else:
            client.call(method, request)
    assert err.value.code() == code, (case, err.value.code(), err.value.details())
    assert said in err.value.details(), (case, err.value.details())


def test_oversized_message_is_refused_by_grpc(bad_service):
    client, table = bad_service
    spec = pb.SearchSpec(yaml_overrides="#" * (2 << 20))
    with pytest.raises(grpc.RpcError) as err:
        client.call("SubmitSearch", pb.SubmitSearchRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_after_all_that_the_server_is_healthy_and_stored_nothing(bad_service):
    assert len(CASES) >= 30
    client, table = bad_service
    health = health_pb2_grpc.HealthStub(client.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    assert list(client.call("ListSearches", pb.ListSearchesRequest()).searches) == []


def test_every_numeric_config_field_has_a_service_bound():
    """A new numeric config key cannot reach the service unbounded: it needs an entry in BOUNDS."""
    import dataclasses
    import typing

    from services.config import SearchConfig
    from services.api.validation import BOUNDS

    def numeric_keys(cls, prefix=""):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            section = next((t for t in typing.get_args(hint) or (hint,) if dataclasses.is_dataclass(t)), None)
            if section is not None:  # a section, or an optional one (objective.constraints.*)
                yield from numeric_keys(section, f"{prefix}{f.name}.")
            elif {int, float} & set(typing.get_args(hint) or (hint,)):
                yield prefix + f.name

    keys = set(numeric_keys(SearchConfig))
    assert keys - set(BOUNDS) == set() and set(BOUNDS) - keys == set()
