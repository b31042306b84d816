"""API server throughput and watch fan-out, on both stores, beside raw etcd.

Starts one real etcd and, in turn, an API server process on SQLite and one on that etcd. Measures:
- raw `aetcd` puts/s on the etcd (the baseline), with the same concurrency and value size as the API
  writes;
- API writes/s (Pod creates over HTTP, JSON) per store, and their ratio to the raw puts;
- watch delivery latency with 100 watchers of one namespace: from the moment a write is sent to the
  moment each watcher has its event, p50 and p99 over every (write, watcher) pair, writes paced so the
  figure is delivery, not queueing;
- the latency of listing 1,000 pods as JSON and as the server-side Table kubectl asks for (median of
  LISTS lists);
- the cost of TLS: the same JSON list over HTTPS with a client certificate (the default, as kubectl
  presents it) and over plain HTTP with a token (the API server's debugging mode, `--insecure-http`), and
  their ratio;
- the exec round trip: `kubectl exec POD -- hostname` as kubectl makes it, one exec per round trip (a new
  `v5.channel.k8s.io` WebSocket over TLS to the API server, relayed to the pod's node agent, until the exit
  status), sequentially, on a 1-node cluster brought up as `podnet up` does; p50/p99.
Goals (issue 2): API writes >= 30% of raw etcd puts; watch delivery p99 <= 50 ms at 100 watchers.
Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aetcd
import aiohttp
from cluster import cluster_up  # bench/cluster.py, beside this script
from streams import exec_once, summary  # bench/streams.py

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.apiserver import ApiServerProcess, sample_pod  # noqa: E402
from support.etcd import EtcdServer  # noqa: E402

from podnet import kubeconfig  # noqa: E402
from podnet.client import ApiClient  # noqa: E402
from podnet.cluster import topology  # noqa: E402

WRITES = 2000
CONCURRENCY = 16
WATCHERS = 100
WATCHED_WRITES = 200
WATCHED_RATE = 100.0  # writes per second while watchers listen
LISTED = 1000
LISTS = 20
EXEC_ROUNDS = 200
EXEC_PREFIX = "127.0.102"
EXEC_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bench-exec", "namespace": "default"},
            "spec": {"containers": [{"name": "agnhost", "image": "registry.k8s.io/e2e-test-images/agnhost:2.47"}]}}
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def raw_etcd_puts(endpoint: str, value: bytes) -> float:
    host, port = endpoint.rsplit(":", 1)
    async with aetcd.Client(host, int(port)) as client:
        counter = iter(range(WRITES))

        async def worker() -> None:
            for i in counter:
                await client.put(f"/bench/raw/{i}".encode(), value)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return WRITES / (time.perf_counter() - started)


async def api_writes(session: aiohttp.ClientSession, url: str, namespace: str, *, writes: int = WRITES,
                     concurrency: int = CONCURRENCY, prefix: str = "w") -> float:
    counter = iter(range(writes))

    async def worker() -> None:
        for i in counter:
            async with session.post(f"{url}/api/v1/namespaces/{namespace}/pods", json=sample_pod(f"{prefix}{i}", app="bench")) as response:
                if response.status != 201:
                    raise RuntimeError(f"create answered {response.status}: {await response.text()}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return writes / (time.perf_counter() - started)


async def list_latency(session: aiohttp.ClientSession, url: str, namespace: str, accept: str) -> float:
    """Median seconds to list LISTED pods (the namespace holds at least that many) and read the whole answer."""
    took = []
    for _ in range(LISTS):
        started = time.perf_counter()
        async with session.get(f"{url}/api/v1/namespaces/{namespace}/pods?limit={LISTED}", headers={"Accept": accept}) as response:
            body = await response.json()
        took.append(time.perf_counter() - started)
        if len(body.get("items", body.get("rows", []))) != LISTED:
            raise RuntimeError(f"the list answered {response.status} without {LISTED} pods")
    return statistics.median(took)


async def watch_latency(session: aiohttp.ClientSession, url: str, namespace: str, write_url: str | None = None) -> list[float]:
    """Delivery latencies to WATCHERS watchers on `url` of writes sent to `write_url` (default: the same server)."""
    write_url = write_url or url
    start = (await (await session.get(f"{url}/api/v1/namespaces/{namespace}/pods?limit=1")).json())["metadata"]["resourceVersion"]
    latencies: list[float] = []
    ready = 0

    async def watcher() -> None:
        nonlocal ready
        path = f"{url}/api/v1/namespaces/{namespace}/pods?watch=1&resourceVersion={start}&timeoutSeconds=120"
        async with session.get(path, timeout=aiohttp.ClientTimeout(total=None)) as response:
            ready += 1
            received = 0
            async for line in response.content:
                now = time.time()
                event = json.loads(line)
                sent = event["object"]["metadata"].get("annotations", {}).get("bench/sent")
                if sent is not None:
                    latencies.append(now - float(sent))
                    received += 1
                    if received == WATCHED_WRITES:
                        return

    tasks = [asyncio.create_task(watcher()) for _ in range(WATCHERS)]
    while ready < WATCHERS:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    for i in range(WATCHED_WRITES):
        body = sample_pod(f"watched{i}", app="bench")
        body["metadata"]["annotations"] = {"bench/sent": repr(time.time())}
        async with session.post(f"{write_url}/api/v1/namespaces/{namespace}/pods", json=body) as response:
            if response.status != 201:
                raise RuntimeError(f"create answered {response.status}")
        await asyncio.sleep(1 / WATCHED_RATE)
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return latencies


async def measure_store(server: ApiServerProcess) -> dict:
    headers = {"Authorization": f"Bearer {server.token}"}
    connector = aiohttp.TCPConnector(limit=WATCHERS + CONCURRENCY + 4, ssl=server.ssl_context() or True)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        for namespace in ("bench-writes", "bench-watch"):
            async with session.post(f"{server.url}/api/v1/namespaces", json={"metadata": {"name": namespace}}) as response:
                assert response.status == 201, await response.text()
        writes = await api_writes(session, server.url, "bench-writes")
        listed = {what: await list_latency(session, server.url, "bench-writes", accept)
                  for what, accept in (("json", "application/json"), ("table", TABLE))}
        latencies = await watch_latency(session, server.url, "bench-watch")
    return {
        "writes_per_s": round(writes),
        "watchers": WATCHERS,
        "list_1000_pods_ms": {what: round(seconds * 1000, 1) for what, seconds in listed.items()},
        "watch_deliveries": len(latencies),
        "watch_delivery_ms": {
            "p50": round(statistics.median(latencies) * 1000, 2),
            "p99": round(percentile(latencies, 0.99) * 1000, 2),
        },
    }


async def _json_list(server: ApiServerProcess, headers: dict[str, str], ssl_context: ssl.SSLContext | bool) -> float:
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, ssl=ssl_context)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        async with session.post(f"{server.url}/api/v1/namespaces", json={"metadata": {"name": "bench-list"}}) as response:
            assert response.status == 201, await response.text()
        await api_writes(session, server.url, "bench-list")
        return await list_latency(session, server.url, "bench-list", "application/json")


def tls_cost(root: Path) -> dict:
    """The JSON list of 1,000 pods over HTTPS with the admin's client certificate, and over plain HTTP."""
    medians: dict[str, float] = {}
    for scheme, tls in (("https", True), ("http", False)):
        directory = root / f"list-{scheme}"
        directory.mkdir()
        server = ApiServerProcess(directory, f"sqlite:///{directory / 'store.db'}", controllers=False, tls=tls)
        server.start()
        try:
            if tls:
                admin = server.client_certificate("admin", ["system:masters"])
                context = server.ssl_context()
                kubeconfig.load_client_certificate(context, admin.cert_pem, admin.key_pem)
                medians[scheme] = asyncio.run(_json_list(server, {}, context))
            else:
                medians[scheme] = asyncio.run(_json_list(server, {"Authorization": f"Bearer {server.token}"}, True))
        finally:
            server.kill()
    return {f"{scheme}_ms": round(seconds * 1000, 1) for scheme, seconds in medians.items()} | {
        "https_to_http": round(medians["https"] / medians["http"], 3)}


async def exec_round_trips(root: Path) -> dict:
    topo = topology.build(root, 1, prefix=EXEC_PREFIX, lb_pool=f"{EXEC_PREFIX}.128/26")
    async with cluster_up(topo, timeout=120):
        admin = kubeconfig.load(topo.home / "kubeconfig")
        async with ApiClient.from_kubeconfig(topo.home / "kubeconfig") as client:
            await client.create(EXEC_POD)
            while (await client.get("pods", "bench-exec", "default")).get("status", {}).get("phase") != "Running":
                await asyncio.sleep(0.1)
        url = f"{admin.server}/api/v1/namespaces/default/pods/bench-exec/exec?command=hostname&stdout=true&stderr=true"
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=admin.tls.context())) as session:
            await exec_once(session, url)  # warm
            return summary([await exec_once(session, url) for _ in range(EXEC_ROUNDS)])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="podnet-bench-api-") as tmp:
        root = Path(tmp)
        etcd = EtcdServer("etcd", root / "etcd-data", root / "etcd.log")
        etcd.start()
        try:
            value = json.dumps(sample_pod("x" * 10, app="bench")).encode()
            raw = asyncio.run(raw_etcd_puts(etcd.endpoint, value))
            results: dict = {}
            list_cost = tls_cost(root)
            with contextlib.redirect_stdout(sys.stderr):  # `bring_up` narrates; stdout is the JSON line
                exec_trips = asyncio.run(exec_round_trips(root / "exec"))
            for store, url in (("sqlite", None), ("etcd", etcd.url)):
                directory = root / store
                directory.mkdir()
                server = ApiServerProcess(
                    directory, url or f"sqlite:///{directory / 'store.db'}", controllers=False
                )
                server.start()
                try:
                    results[store] = asyncio.run(measure_store(server))
                finally:
                    server.kill()
        finally:
            etcd.kill()
    results["etcd"]["ratio_to_raw_etcd_puts"] = round(results["etcd"]["writes_per_s"] / raw, 3)
    results["sqlite"]["ratio_to_raw_etcd_puts"] = round(results["sqlite"]["writes_per_s"] / raw, 3)
    figures = {
        "benchmark": "api",
        "raw_etcd_puts_per_s": round(raw),
        "concurrency": CONCURRENCY,
        "stores": results,
        "list_1000_pods_json_tls_cost": list_cost,
        "exec_round_trip_one_exec_each": exec_trips,
        "goals": {
            "etcd_writes_at_least_30pct_of_raw": results["etcd"]["ratio_to_raw_etcd_puts"] >= 0.3,
            "watch_p99_at_most_50ms": all(r["watch_delivery_ms"]["p99"] <= 50 for r in results.values()),
        },
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
