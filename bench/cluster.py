"""A whole local cluster: how long `podnet up` takes, what it weighs and how fast pods start; and the control
plane's shapes side by side, one and three etcd members under one and two API servers.

For N = 3, 10 and 30 nodes (PODNET_BENCH_NODES="3,10,30" to change; empty: none), a cluster is brought up by
the supervisor exactly as `podnet up --nodes N` does it, in a temporary home on its own 127.0.X prefix, and
timed until every node is Ready and the cluster DNS answers; the summed RSS of all its processes is then read
from /proc. On the smallest cluster, 300 pods (PODNET_BENCH_PODS) are created at a steady pace and each is
timed from its create call returning to (a) the first watch event that shows it Running with an IP and (b)
the first TCP connection to it from a client pod on node-1 that succeeds. Kubernetes' pod-startup SLO is p99
<= 5 s from creation to Running (its measurement excludes image pulls, which podnet has none of).

The control plane (PODNET_BENCH_CONTROL_PLANE=0 to leave it out): API writes/s and watch delivery latency
with 1 and 3 etcd members under 1 and 2 API servers. With two, writes go through both and the watchers are
on one of them, so that every event crosses etcd from the other server. Writes are Pod creates over HTTPS
(JSON), bench/api.py's CONCURRENCY in flight in all; watch latency is from the moment a write is sent to the
moment each of WATCHERS watchers has its event (bench/api.py's measurement), p50 and p99. The baseline is
the first shape; each other shape's ratios to it are printed beside its figures.

Prints one JSON object as the last line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from podnet.cli import cluster_cmd
from podnet.client import ApiClient, ApiError
from podnet.cluster import supervisor, topology
from podnet.cluster.supervisor import ClusterState
from podnet.rpc.agentmethods import AgentMethod
from podnet.rpc.session import RpcClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.apiserver import ApiServerProcess  # noqa: E402
from support.etcd import EtcdCluster, EtcdServer  # noqa: E402

NODE_COUNTS = tuple(int(n) for n in os.environ.get("PODNET_BENCH_NODES", "3,10,30").split(",") if n.strip())
CONTROL_PLANE = os.environ.get("PODNET_BENCH_CONTROL_PLANE", "1") != "0"
# (name, etcd members, API servers)
SHAPES = (("etcd1_api1", 1, 1), ("etcd1_api2", 1, 2), ("etcd3_api1", 3, 1), ("etcd3_api2", 3, 2))
PODS = int(os.environ.get("PODNET_BENCH_PODS", "300"))
CREATE_RATE = 20.0  # pods per second, as Kubernetes' density tests pace their creates
SLO_P99_S = 5.0
AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.47"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def pod(name: str, node: str | None = None) -> dict:
    spec: dict = {"containers": [{"name": "web", "image": AGNHOST, "ports": [{"containerPort": 80}]}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                           "labels": {"bench": "startup"}}, "spec": spec}


async def running(client: ApiClient, name: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = await client.get("pods", name, "default")
        if (obj.get("status") or {}).get("phase") == "Running" and obj["status"].get("podIP"):
            return obj
        await asyncio.sleep(0.1)
    raise TimeoutError(f"pod {name} not Running within {timeout}s")


async def pod_startup(client: ApiClient, topo: topology.Topology) -> dict:
    """Create→Running and create→reachable latencies of PODS pods, created at CREATE_RATE per second."""
    await client.create(pod("bench-client", "node-1"))
    await running(client, "bench-client")
    created: dict[str, float] = {}
    running_at: dict[str, float] = {}
    ips: dict[str, str] = {}
    reachable_at: dict[str, float] = {}
    listed = await client.list("pods", "default")

    async def watch() -> None:
        async for event in client.watch("pods", "default", resource_version=listed["metadata"]["resourceVersion"]):
            obj = event["object"]
            name = obj["metadata"]["name"]
            status = obj.get("status") or {}
            if name in created and name not in running_at and status.get("phase") == "Running" and status.get("podIP"):
                running_at[name] = time.monotonic()
                ips[name] = status["podIP"]

    agent = await RpcClient(str(topo.agent_socket(topo.node("node-1")))).connect()

    async def reach(name: str) -> None:
        while name not in ips:
            await asyncio.sleep(0.02)
        params = {"src": "default/bench-client", "dst": ips[name], "port": 80, "protocol": "TCP", "timeout": 1.0}
        for _ in range(60):
            if (await agent.call(AgentMethod.PROBE, params, timeout=10)).get("ok"):
                reachable_at[name] = time.monotonic()
                return
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    reachers = []
    started = time.monotonic()
    try:
        for i in range(PODS):
            name = f"bench-{i:04d}"
            await asyncio.sleep(max(0.0, started + i / CREATE_RATE - time.monotonic()))
            await client.create(pod(name))
            created[name] = time.monotonic()
            reachers.append(asyncio.create_task(reach(name)))
        await asyncio.wait_for(asyncio.gather(*reachers), 120)
    finally:
        watcher.cancel()
        for task in reachers:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await agent.close()
    to_running = [running_at[n] - created[n] for n in created if n in running_at]
    to_reachable = [reachable_at[n] - created[n] for n in created if n in reachable_at]

    def summary(values: list[float]) -> dict | None:
        return {"p50": round(statistics.median(values), 3), "p99": round(percentile(values, 0.99), 3)} if values else None

    return {
        "pods": PODS,
        "create_rate_per_s": CREATE_RATE,
        "running": len(to_running),
        "reachable": len(to_reachable),
        "create_to_running_s": summary(to_running),
        "create_to_reachable_s": summary(to_reachable),
        "slo_p99_running_at_most_5s": len(to_running) == PODS and percentile(to_running, 0.99) <= SLO_P99_S,
    }


@contextlib.asynccontextmanager
async def cluster_up(topo: topology.Topology, timeout: float) -> AsyncIterator[ClusterState]:
    """A cluster brought up as `podnet up` does, stopped afterwards whatever happened (also when it failed
    to come up halfway)."""
    state: ClusterState | None = None
    try:
        state = await cluster_cmd.bring_up(topo, timeout=timeout)
        yield state
    finally:
        if state is None and (topo.home / supervisor.STATE_FILE).exists():
            state = ClusterState.load(topo.home)
        if state is not None:
            await supervisor.stop_all(state)


async def one_cluster(root: Path, nodes: int, index: int) -> dict:
    topo = topology.build(root / f"n{nodes}", nodes, prefix=f"127.0.{60 + index}", lb_pool=f"127.0.{60 + index}.128/26")
    log(f"podnet up --nodes {nodes}")
    started = time.monotonic()
    try:
        async with cluster_up(topo, timeout=max(120.0, 10.0 * nodes)) as state:
            return await _measure(topo, state, nodes, time.monotonic() - started)
    except (supervisor.SupervisorError, ApiError, TimeoutError) as exc:
        return {"nodes": nodes, "error": f"{type(exc).__name__}: {exc}"[:300],
                "seconds_before_error": round(time.monotonic() - started, 1)}


async def _measure(topo: topology.Topology, state: ClusterState, nodes: int, up_s: float) -> dict:
    rss = sum(rss_bytes(p.pid) for p in state.processes if p.alive and p.pid)
    figures: dict = {"nodes": nodes, "processes": len(state.processes), "up_to_all_ready_s": round(up_s, 2),
                     "rss_mib": round(rss / 2**20, 1),
                     "rss_per_process_mib": round(rss / 2**20 / len(state.processes), 1)}
    if nodes == min(NODE_COUNTS) and PODS:
        async with ApiClient.from_kubeconfig(topo.home / "kubeconfig") as client:
            log(f"  {PODS} pods at {CREATE_RATE:g}/s")
            figures["pod_startup"] = await pod_startup(client, topo)
    return figures


async def measure_shape(servers: list[ApiServerProcess]) -> dict:
    """Writes/s through every server and watch delivery on the first of them."""
    # Here, not at the top: bench/api.py imports `cluster_up` from this script.
    from api import CONCURRENCY, WATCHERS, WRITES, api_writes, watch_latency

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


def control_plane_shape(root: Path, members: int, apiservers: int) -> dict:
    etcd = EtcdCluster([EtcdServer("etcd", root / f"etcd-{i}", root / f"etcd-{i}.log", name=f"member-{i}")
                        for i in range(members)])
    etcd.start()
    servers: list[ApiServerProcess] = []
    try:
        for i in range(apiservers):
            directory = root / f"apiserver-{i}"
            directory.mkdir()
            servers.append(ApiServerProcess(directory, etcd.url, controllers=False))
            servers[i].start()
        return asyncio.run(measure_shape(servers))
    finally:
        for server in servers:
            server.kill()
        etcd.kill()


def control_plane(root: Path) -> dict:
    from api import CONCURRENCY, WATCHERS, WRITES

    shapes: dict = {}
    for name, members, apiservers in SHAPES:
        log(f"control plane: {members} etcd member(s), {apiservers} API server(s)")
        directory = root / name
        directory.mkdir()
        shapes[name] = control_plane_shape(directory, members, apiservers)
        log(json.dumps(shapes[name]))
    baseline = shapes[SHAPES[0][0]]
    for figures in shapes.values():
        figures["writes_ratio_to_etcd1_api1"] = round(figures["writes_per_s"] / baseline["writes_per_s"], 3)
        figures["watch_p99_ratio_to_etcd1_api1"] = round(
            figures["watch_delivery_ms"]["p99"] / max(baseline["watch_delivery_ms"]["p99"], 0.001), 3)
    return {"writes": WRITES, "concurrency": CONCURRENCY, "watchers": WATCHERS, "shapes": shapes}


def main() -> None:
    results = []
    figures: dict = {"benchmark": "cluster"}
    with tempfile.TemporaryDirectory(prefix="podnet-bench-cluster-") as tmp:
        for index, nodes in enumerate(NODE_COUNTS):
            # `bring_up` narrates on stdout; the benchmark's stdout is its JSON line.
            with contextlib.redirect_stdout(sys.stderr):
                results.append(asyncio.run(one_cluster(Path(tmp), nodes, index)))
            log(json.dumps(results[-1]))
        figures["clusters"] = results
        if CONTROL_PLANE:
            figures["control_plane"] = control_plane(Path(tmp))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
