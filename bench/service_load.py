"""Load on the gRPC search service: N concurrent clients calling GetSearch / ListSearches.

Starts a real Ray head and `raynas serve` (its own process), submits a few tiny tabular searches
and waits for them to finish, then runs closed-loop clients (each: a channel of its own, one call
in flight, the next as soon as it returns) and prints throughput and p50/p99 latency.
Target: p99 under 50 ms at 50 concurrent clients on a 2-core machine.

    .venv/bin/python bench/service_load.py [--clients 1,10,50] [--seconds 10] [--searches 5]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller_policy.landscapes import nb201_landscape  # noqa: E402
from services.api.proto import raynas_pb2 as pb  # noqa: E402
from services.api.proto import raynas_pb2_grpc as pb_grpc  # noqa: E402
from services.ray_cluster import LocalRayHead, free_port  # noqa: E402


def prepare(root: Path, head: LocalRayHead, searches: int) -> tuple[subprocess.Popen, str, list[str]]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "services.cli", "serve", "--port", str(port),
                               "--ray-address", head.jobs_url, "--db", str(root / "searches.db"),
                               "--runs-dir", str(root / "runs"), "--data-root", str(root)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    print(server.stdout.readline().strip())
    table = root / "table.json"
    table.write_text(json.dumps(nb201_landscape(0)))
    address = f"127.0.0.1:{port}"
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        ids = [stub.SubmitSearch(pb.SubmitSearchRequest(name=f"load-{i}", spec=pb.SearchSpec(
            space=pb.NB201, algorithm=pb.PPO, evaluator=pb.TABLE, table=str(table), reward_key="valid", budget=16,
            seed=i))).id for i in range(searches)]
        for search_id in ids:
            final = list(stub.WatchSearch(pb.WatchSearchRequest(id=search_id)))[-1]
            print(f"  {search_id}: {pb.SearchState.Name(final.state)}, best {final.best_reward:.2f}")
    return server, address, ids


async def client(address: str, ids: list[str], until: float, latencies: list[float], index: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = pb_grpc.SearchServiceStub(channel)
        n = index
        while time.perf_counter() < until:
            started = time.perf_counter()
            if n % 2:
                await stub.ListSearches(pb.ListSearchesRequest(page_size=10))
            else:
                await stub.GetSearch(pb.GetSearchRequest(id=ids[n % len(ids)]))
            latencies.append(time.perf_counter() - started)
            n += 1


async def load(address: str, ids: list[str], clients: int, seconds: float) -> tuple[float, float, float, int]:
    latencies: list[float] = []
    await asyncio.gather(*(client(address, ids, time.perf_counter() + 1.0, [], i) for i in range(clients)))  # warm-up
    until = time.perf_counter() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(client(address, ids, until, latencies, i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return len(ms) / elapsed, float(np.percentile(ms, 50)), float(np.percentile(ms, 99)), len(ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--searches", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        head = LocalRayHead(root / "head", num_cpus=2, num_gpus=0, object_store_mb=300)
        (root / "head").mkdir()
        head.start()
        server = None
        try:
            server, address, ids = prepare(root, head, args.searches)
            print(f"{'clients':>8} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'calls':>7}")
            for clients in (int(c) for c in args.clients.split(",")):
                rate, p50, p99, calls = asyncio.run(load(address, ids, clients, args.seconds))
                print(f"{clients:>8} {rate:>9.0f} {p50:>8.2f} {p99:>8.2f} {calls:>7}", flush=True)
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)
            head.stop()


if __name__ == "__main__":
    main()
