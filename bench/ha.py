"""The control plane's shapes side by side: API writes/s and watch delivery latency with one and three etcd
members under one and two API servers (with two: writes through both, watchers on one of them, so that every
event crosses etcd from the other server).

Writes are Pod creates over HTTPS (JSON), CONCURRENCY in flight in all; watch latency is from the moment a
write is sent to the moment each of WATCHERS watchers has its event (bench/api.py's measurement), p50 and
p99. The baseline is the first shape; each other shape's ratios to it are printed beside its figures.
Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from api import CONCURRENCY, WATCHERS, WRITES, api_writes, percentile, watch_latency  # bench/api.py

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.apiserver import ApiServerProcess  # noqa: E402
from support.etcd import EtcdCluster, EtcdServer  # noqa: E402

SHAPES = (("etcd1_api1", 1, 1), ("etcd1_api2", 1, 2), ("etcd3_api1", 3, 1), ("etcd3_api2", 3, 2))


async def measure(servers: list[ApiServerProcess]) -> dict:
    headers = {"Authorization": f"Bearer {servers[0].token}"}  # every test server takes the same tokens
    trust = ssl.create_default_context()
    for server in servers:  # each has a CA of its own
        trust.load_verify_locations(cafile=str(server.ca_file))
    connector = aiohttp.TCPConnector(limit=WATCHERS + CONCURRENCY + 4, ssl=trust)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        for namespace in ("bench-writes", "bench-watch"):
            async with session.post(f"{servers[0].url}/api/v1/namespaces", json={"metadata": {"name": namespace}}) as response:
                assert response.status == 201, await response.text()
        started = time.perf_counter()
        # Each server takes an equal share of the writes, each with its share of the concurrency.
        await asyncio.gather(*(api_writes(session, server.url, "bench-writes", writes=WRITES // len(servers),
                                          concurrency=CONCURRENCY // len(servers), prefix=f"s{i}-")
                               for i, server in enumerate(servers)))
        writes_per_s = WRITES // len(servers) * len(servers) / (time.perf_counter() - started)
        latencies = await watch_latency(session, servers[0].url, "bench-watch", write_url=servers[-1].url)
    return {"writes_per_s": round(writes_per_s),
            "watch_delivery_ms": {"p50": round(statistics.median(latencies) * 1000, 2),
                                  "p99": round(percentile(latencies, 0.99) * 1000, 2)}}


def run_shape(root: Path, members: int, apiservers: int) -> dict:
    etcds = [EtcdServer("etcd", root / f"etcd-{i}", root / f"etcd-{i}.log", name=f"member-{i}") for i in range(members)]
    etcd = EtcdCluster(etcds)
    etcd.start()
    servers: list[ApiServerProcess] = []
    try:
        for i in range(apiservers):
            directory = root / f"apiserver-{i}"
            directory.mkdir()
            servers.append(ApiServerProcess(directory, etcd.url, controllers=False))
            servers[i].start()
        return asyncio.run(measure(servers))
    finally:
        for server in servers:
            server.kill()
        etcd.kill()


def main() -> None:
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="podnet-bench-ha-") as tmp:
        for name, members, apiservers in SHAPES:
            directory = Path(tmp) / name
            directory.mkdir()
            results[name] = run_shape(directory, members, apiservers)
    baseline = results[SHAPES[0][0]]
    for figures in results.values():
        figures["writes_ratio_to_etcd1_api1"] = round(figures["writes_per_s"] / baseline["writes_per_s"], 3)
        figures["watch_p99_ratio_to_etcd1_api1"] = round(
            figures["watch_delivery_ms"]["p99"] / max(baseline["watch_delivery_ms"]["p99"], 0.001), 3)
    print(json.dumps({"benchmark": "ha", "writes": WRITES, "concurrency": CONCURRENCY, "watchers": WATCHERS,
                      "shapes": results}))


if __name__ == "__main__":
    main()
