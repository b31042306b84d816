"""Services: what kube-proxy's two proxy modes cost and how fast a change reaches every node.

- lookup: the service table's cost for one new connection (`ServiceTable.lookup`, what the pipeline
  calls on every new flow) with 10, 1000 and 10000 Services of 3 endpoints each, in iptables mode (an
  ordered rule list walked per connection: linear) and ipvs mode (a hash table: flat; goal within 20%
  from 10 to 10000). Destinations are drawn uniformly over all Services.
- full sync at 10000 Services: kube-proxy's compute (`rules.compute` over the trackers' state), the
  msgpack size of the table, and one real `services.apply` to a real node agent (its decode and install
  included), in both modes.
- programming latency (skipped with `--no-live`): a real API server, 10 real node agents on
  127.0.0.11-20 and a real kube-proxy beside each, 1000 Services; then 20 Service creations and 20
  EndpointSlice changes, each timed from the API write returning to the moment every agent's installed
  table carries it (polled over each agent's RPC socket). p50/p99; goal p99 <= 1 s.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import msgpack  # noqa: E402
from podnet.nodeagent.kubeproxy import rules  # noqa: E402
from podnet.overlay.pipeline.nat import ServiceTable  # noqa: E402
from support.apiserver import ApiServerProcess  # noqa: E402

from podnet.api.keys import object_key
from podnet.rpc.agentmethods import AgentMethod  # noqa: E402
from podnet.rpc.session import RpcClient  # noqa: E402

SIZES = (10, 1000, 10000)
LOOKUPS = 20000  # per measurement, at every size
IPTABLES_LOOKUPS = {1000: 2000, 10000: 200}
HOT_SERVICES = 10  # the hot working set: as many Services as the smallest table has
ENDPOINTS = 3
LIVE_NODES = 10
LIVE_SERVICES = 1000
LIVE_CHANGES = 20


def cluster_ip(i: int) -> str:
    # Clear of 10.96.0.0/24, where the API server keeps the kubernetes and kube-dns addresses.
    return f"10.{100 + i // 62500}.{(i // 250) % 250}.{i % 250 + 2}"


def service_objects(count: int) -> list[dict]:
    return [
        {
            "metadata": {"name": f"svc-{i}", "namespace": "default"},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": cluster_ip(i),
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
            },
        }
        for i in range(count)
    ]


def slice_objects(count: int) -> list[dict]:
    return [
        {
            "metadata": {
                "name": f"svc-{i}-abc",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": f"svc-{i}"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [
                        f"10.244.{(i * ENDPOINTS + e) // 250 % 256}.{(i * ENDPOINTS + e) % 250 + 2}"
                    ],
                    "conditions": {"ready": True},
                    "nodeName": f"node-{(i + e) % 10 + 1}",
                }
                for e in range(ENDPOINTS)
            ],
        }
        for i in range(count)
    ]


def table_data(count: int, mode: str) -> dict:
    services = {object_key(s): rules.service_info(s) for s in service_objects(count)}
    return rules.compute(
        services, [rules.slice_info(s) for s in slice_objects(count)], "node-1", mode, "10.96.0.0/12"
    ).to_data()


def _no_lookup(protocol, src, dst, port, draw, now):
    return None


def bench_lookup(rounds: int = 21) -> dict:
    """CPU ns per lookup (this thread's CPU time, so other processes on a busy machine do not count).

    Every measurement is one batch of lookups through the same loop. Each of `rounds` rounds measures
    every (pattern, mode, size) once, in a new random order, so a slow moment of the machine falls on
    any of them alike; the figures are the median over rounds (and the minimum, beside it). The
    collector is off while timing.

    Two traffic patterns: `hot`, new connections spread over the same 10 Services at every size (the
    same working set, spread evenly over the table: what is left is the algorithm), and `uniform`, new
    connections to any Service alike (the whole table is the working set, so CPU caches miss more as it
    grows, as they would for the kernel's IPVS). ipvs and the floors do the same number of lookups at
    every size; iptables fewer at large sizes (a walk of 10000 rules is slow). `dict` is the floor under
    ipvs, a bare dict.get with the same keys and table size; `call` the floor under everything, the
    loop calling a function that returns at once. `ratio_10000_to_10` compares medians;
    `net_ratio_10000_to_10` does so after taking the `call` floor off both."""
    rng = random.Random(7)
    work = {}
    for size in SIZES:
        hot = [cluster_ip(i * size // HOT_SERVICES) for i in range(HOT_SERVICES)]
        patterns = {
            "hot": [rng.choice(hot) for _ in range(LOOKUPS)],
            "uniform": [cluster_ip(rng.randrange(size)) for _ in range(LOOKUPS)],
        }
        keys = {(cluster_ip(i), 80, "TCP"): i for i in range(size)}
        tables = {mode: ServiceTable.from_data(table_data(size, mode)) for mode in ("iptables", "ipvs")}
        for pattern, targets in patterns.items():
            draws = [rng.random() for _ in targets]
            walked = IPTABLES_LOOKUPS.get(size, LOOKUPS)
            work[(pattern, "iptables", size)] = (tables["iptables"].lookup, targets[:walked], draws[:walked])
            work[(pattern, "ipvs", size)] = (tables["ipvs"].lookup, targets, draws)
            work[(pattern, "dict", size)] = (
                lambda protocol, src, dst, port, draw, now, get=keys.get: get((dst, port, protocol)),
                targets,
                draws,
            )
            work[(pattern, "call", size)] = (_no_lookup, targets, draws)
    samples: dict[tuple, list[float]] = {key: [] for key in work}
    order = list(work)
    gc.disable()
    try:
        for _ in range(rounds):
            rng.shuffle(order)
            for key in order:
                lookup, targets, draws = work[key]
                started = time.thread_time()
                for dst, draw in zip(targets, draws, strict=True):
                    lookup("TCP", "10.244.1.5", dst, 80, draw, 0.0)
                samples[key].append((time.thread_time() - started) / len(targets) * 1e9)
    finally:
        gc.enable()
    results: dict[str, dict] = {}
    for pattern in ("hot", "uniform"):
        call = {size: statistics.median(samples[(pattern, "call", size)]) for size in SIZES}
        for mode in ("iptables", "ipvs", "dict", "call"):
            median = {size: statistics.median(samples[(pattern, mode, size)]) for size in SIZES}
            figures = {
                "ns_per_lookup": {str(size): round(median[size], 1) for size in SIZES},
                "min_ns_per_lookup": {
                    str(size): round(min(samples[(pattern, mode, size)]), 1) for size in SIZES
                },
                "ratio_10000_to_10": round(median[10000] / median[10], 2),
            }
            if mode != "call":
                figures["net_ratio_10000_to_10"] = round(
                    (median[10000] - call[10000]) / max(median[10] - call[10], 1e-9), 2
                )
            results.setdefault(pattern, {})[mode] = figures
    return results


def bench_compute(count: int) -> dict:
    services = {object_key(s): rules.service_info(s) for s in service_objects(count)}
    slices = [rules.slice_info(s) for s in slice_objects(count)]
    out = {}
    for mode in ("iptables", "ipvs"):
        started = time.thread_time()
        data = rules.compute(services, slices, "node-1", mode, "10.96.0.0/12").to_data()
        compute = time.thread_time() - started
        packed = msgpack.packb({"mode": mode, "table": data})
        started = time.thread_time()
        ServiceTable.from_data(msgpack.unpackb(packed)["table"])
        install = time.thread_time() - started
        out[mode] = {
            "compute_cpu_ms": round(compute * 1e3, 1),
            "table_bytes": len(packed),
            "agent_decode_and_install_cpu_ms": round(install * 1e3, 1),
        }
    return out


# ---- live ------------------------------------------------------------------------------------------


async def _has(agent: RpcClient, key: str, check) -> bool:
    result = await agent.call(AgentMethod.SERVICES_GET, {"service": key}, timeout=10)
    table = result.get("table") or {}
    return check(table.get("services") or [])


async def _until_everywhere(agents: list[RpcClient], key: str, check, timeout: float = 30.0) -> float:
    """Seconds until every agent's table satisfies `check` for the Service `key` (polling every 5 ms)."""
    started = time.monotonic()
    pending = list(agents)
    while pending:
        answers = await asyncio.gather(*(_has(agent, key, check) for agent in pending))
        pending = [agent for agent, ok in zip(pending, answers, strict=True) if not ok]
        if pending:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{key} not programmed on {len(pending)} agents after {timeout}s")
            await asyncio.sleep(0.005)
    return time.monotonic() - started


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


async def _live_changes(api: ApiServerProcess, sockets: list[str]) -> dict:
    agents = [await RpcClient(path).connect() for path in sockets]
    async with api.client() as client:
        semaphore = asyncio.Semaphore(16)

        async def create(obj: dict) -> None:
            async with semaphore:
                await client.create(obj)

        objects = service_objects(LIVE_SERVICES)
        for obj in objects:
            obj.update(apiVersion="v1", kind="Service")
        slices = slice_objects(LIVE_SERVICES)
        for obj in slices:
            obj.update(apiVersion="discovery.k8s.io/v1", kind="EndpointSlice")
        started = time.monotonic()
        await asyncio.gather(*(create(o) for o in objects + slices))
        created = time.monotonic() - started
        last = f"default/svc-{LIVE_SERVICES - 1}"
        await _until_everywhere(agents, last, lambda entries: bool(entries and entries[0]["endpoints"]), 120)
        initial = time.monotonic() - started

        service_latency, endpoint_latency = [], []
        for n in range(LIVE_CHANGES):
            obj = service_objects(LIVE_SERVICES + n + 1)[-1]
            obj.update(apiVersion="v1", kind="Service")
            await client.create(obj)
            key = f"default/{obj['metadata']['name']}"
            service_latency.append(await _until_everywhere(agents, key, bool))
        for n in range(LIVE_CHANGES):
            name = f"svc-{n * 37 % LIVE_SERVICES}"
            current = await client.get("endpointslices", f"{name}-abc", "default")
            new_ip = f"10.250.{n}.{n + 2}"
            current["endpoints"] = current["endpoints"][:2] + [
                {"addresses": [new_ip], "conditions": {"ready": True}, "nodeName": "node-3"}
            ]
            await client.replace(current)
            endpoint_latency.append(
                await _until_everywhere(
                    agents,
                    f"default/{name}",
                    lambda entries, ip=new_ip: any(e[0] == ip for e in entries[0]["endpoints"]),
                )
            )
    for agent in agents:
        await agent.close()
    both = service_latency + endpoint_latency
    return {
        "nodes": len(sockets),
        "services": LIVE_SERVICES,
        "create_1000_services_and_slices_s": round(created, 2),
        "initial_programming_all_nodes_s": round(initial, 2),
        "service_create_to_all_nodes_ms": {
            "p50": round(_percentile(service_latency, 0.5) * 1e3, 1),
            "p99": round(_percentile(service_latency, 0.99) * 1e3, 1),
        },
        "endpoint_change_to_all_nodes_ms": {
            "p50": round(_percentile(endpoint_latency, 0.5) * 1e3, 1),
            "p99": round(_percentile(endpoint_latency, 0.99) * 1e3, 1),
        },
        "all_changes_ms": {
            "p50": round(_percentile(both, 0.5) * 1e3, 1),
            "p99": round(_percentile(both, 0.99) * 1e3, 1),
            "mean": round(statistics.mean(both) * 1e3, 1),
        },
    }


async def _full_sync_rpc(socket_path: str, count: int) -> dict:
    out = {}
    agent = await RpcClient(socket_path).connect()
    try:
        for mode in ("iptables", "ipvs"):
            data = table_data(count, mode)
            started = time.perf_counter()
            result = await agent.call(AgentMethod.SERVICES_APPLY, {"mode": mode, "table": data}, timeout=60)
            out[mode] = {
                "services_apply_rpc_ms": round((time.perf_counter() - started) * 1e3, 1),
                "rules": result["rules"],
            }
        await agent.call(AgentMethod.SERVICES_APPLY, {"mode": "ipvs", "table": {"mode": "ipvs", "services": []}})
    finally:
        await agent.close()
    return out


def bench_live(home: Path) -> tuple[dict, dict]:
    from support.kubeproxy import KubeProxyProcess
    from support.nodeagent import AgentProcess, free_udp_port

    api_dir = home / "apiserver"
    api_dir.mkdir()
    api = ApiServerProcess(api_dir, f"sqlite:///{api_dir / 'store.db'}", controllers=True)
    agents: list[AgentProcess] = []
    proxies: list[KubeProxyProcess] = []
    try:
        api.start()
        addresses = [f"127.0.0.{11 + i}" for i in range(LIVE_NODES)]
        port = free_udp_port(*addresses)
        for index, address in enumerate(addresses, start=1):
            agent = AgentProcess(f"node-{index}", address, home, api.kubeconfig, port)
            agents.append(agent)
            agent.start()
        sync = asyncio.run(_full_sync_rpc(agents[0].socket, 10000))
        for agent in agents:
            proxy = KubeProxyProcess(agent, api.kubeconfig, mode="ipvs")
            proxies.append(proxy)
            proxy.start()
        live = asyncio.run(_live_changes(api, [a.socket for a in agents]))
        return sync, live
    finally:
        for proxy in proxies:
            proxy.kill()
        for agent in agents:
            agent.kill()
        api.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-live", action="store_true", help="only the in-process figures")
    parser.add_argument("--lookup-only", action="store_true", help="only the lookup figures")
    parser.add_argument("--rounds", type=int, default=21, help="rounds of lookup measurements")
    args = parser.parse_args()
    if args.lookup_only:
        print(json.dumps({"lookup": bench_lookup(args.rounds)}))
        return
    report = {
        "lookup": bench_lookup(args.rounds),
        "full_sync_10000": {"compute_and_install": bench_compute(10000)},
    }
    report["goals"] = {}
    for pattern, modes in report["lookup"].items():
        report["goals"][f"ipvs_flat_within_20_percent_{pattern}"] = (
            abs(modes["ipvs"]["ratio_10000_to_10"] - 1) <= 0.2
        )
        report["goals"][f"iptables_grows_with_services_{pattern}"] = (
            modes["iptables"]["ratio_10000_to_10"] > 10
        )
    if not args.no_live:
        with tempfile.TemporaryDirectory(prefix="podnet-bench-services-") as home:
            sync, live = bench_live(Path(home))
        report["full_sync_10000"]["real_agent"] = sync
        report["programming_latency"] = live
        report["goals"]["programming_p99_within_1s"] = live["all_changes_ms"]["p99"] <= 1000
    print(json.dumps(report))


if __name__ == "__main__":
    main()
