"""A weight-sharing search on a real multi-node cluster (`ray.cluster_utils.Cluster`): workers spread
over nodes, and the search completes when a node hosting a worker is removed mid-run."""
import csv

import ray
from ray.cluster_utils import Cluster

from services.search import run_search
from tests.test_weight_sharing import tiny_config


def test_workers_spread_over_nodes_and_the_search_survives_losing_one(tmp_path):
    if ray.is_initialized():
        ray.shutdown()  # a cluster of its own; the shared instance starts again for later tests
    # One CPU per node and one per worker: the two workers must sit on two nodes, and a spare
    # CPU is left for the worker Ray restarts after its node is gone.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]
    try:
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        seen = {"placements": [], "results": []}

        def on_result(algo, result):
            seen["results"].append(result["supernet"])
            seen["placements"].append([p["node_id"] for p in ray.get([w.ping.remote() for w in algo.pool.workers])])
            if len(seen["results"]) == 1:  # after the first epoch: lose a node that hosts a worker
                victim = next(n for n in nodes if n.node_id in seen["placements"][0])
                seen["removed"] = victim.node_id
                cluster.remove_node(victim, allow_graceful=False)

        cfg = tiny_config(tmp_path, **{"weight_sharing.workers": 2, "weight_sharing.epochs": 3})
        summary = run_search(cfg, on_result=on_result)
    finally:
        ray.shutdown()
        cluster.shutdown()

    first, last = seen["placements"][0], seen["placements"][-1]
    assert len(set(first)) == 2  # spread over two nodes
    assert seen["removed"] not in last and len(set(last)) == 2  # the lost worker came back elsewhere
    assert seen["results"][0]["worker_recoveries"] == 0 and seen["results"][-1]["worker_recoveries"] >= 1
    assert summary["evaluated"] == cfg.budget
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert (tmp_path / "best_arch.json").exists()
