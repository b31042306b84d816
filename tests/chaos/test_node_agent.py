"""SIGKILL a node agent: its node turns NotReady within the grace period and its pods leave the Service's
ready endpoints, so probes through the Service succeed again; restarted, the agent gets its pods back on
the same IPs; left dead past the eviction timeout, its Deployment pods move to other nodes."""

from __future__ import annotations

import time

import pytest
from support.local_cluster import Prober, deployment, eventually, pod_on, report, service

pytestmark = pytest.mark.slow

GRACE = 2.0
NAMESPACE = "default"
PORT = 8080


async def workload(cluster):
    """Four web pods over both nodes behind Service web, and a client pinned to node-1."""
    await cluster.create(deployment("web", NAMESPACE, 4, PORT), service("web", NAMESPACE, PORT),
                         pod_on("client", NAMESPACE, "node-1"))
    web = await cluster.wait_running(NAMESPACE, "app=web", 4)
    (client,) = await cluster.wait_running(NAMESPACE, "role=client", 1)
    assert {p["spec"]["nodeName"] for p in web} == {"node-1", "node-2"}
    ips = {p["status"]["podIP"] for p in web}
    await eventually(lambda: _equal(cluster.ready_endpoints(NAMESPACE, "web"), ips), 20, "4 ready endpoints")
    cluster_ip = (await cluster.client.get("services", "web", NAMESPACE))["spec"]["clusterIP"]
    await eventually(lambda: cluster.probe(client, cluster_ip, PORT), 20, "the Service answers")
    return web, client, cluster_ip


async def _equal(awaitable, expected):
    return await awaitable == expected


async def test_a_killed_agent_leaves_the_service_and_returns_with_its_pods(local_cluster):
    cluster = await local_cluster("127.0.42", nodes=2, node_grace_period=GRACE, pod_eviction_timeout=120)
    web, client, cluster_ip = await workload(cluster)
    on_node_2 = {p["metadata"]["name"]: p["status"]["podIP"] for p in web if p["spec"]["nodeName"] == "node-2"}
    async with Prober(lambda: cluster.probe(client, cluster_ip, PORT)) as prober:
        await prober.wait_for(5, 10)
        fault = time.monotonic()
        cluster.kill("node-2/agent")
        await eventually(lambda: _not(cluster.node_ready("node-2")), GRACE + 5, "node-2 NotReady")
        not_ready = time.monotonic() - fault
        await eventually(lambda: _disjoint(cluster.ready_endpoints(NAMESPACE, "web"), set(on_node_2.values())),
                         10, "node-2's pods leave the endpoints")
        left = time.monotonic() - fault
        await eventually(lambda: _async(prober.recovered_after(fault) is not None), 10, "probes recover")
        recovered = time.monotonic()
        await prober.wait_for(30, 20)
        after = prober.success(recovered)
        during = prober.success(fault, recovered)
        recovery = prober.recovered_after(fault)
    report("agent-kill", not_ready_s=not_ready, endpoints_left_s=left, recovered_s=recovery,
           success_during_pct=during, success_after_pct=after)
    assert not_ready <= GRACE + 3  # the grace period, and the controller's check every quarter of it
    assert after == 100.0

    await cluster.start("node-2/agent")
    await eventually(lambda: cluster.node_ready("node-2"), 15, "node-2 Ready again")
    # The same pods, on the same addresses, serving again: in the API, in the agent and in the Service.
    back = {p["metadata"]["name"]: p["status"]["podIP"]
            for p in await cluster.running_pods(NAMESPACE, "app=web") if p["spec"]["nodeName"] == "node-2"}
    assert back == on_node_2
    held = {p["ip"] for p in await cluster.rpc("node-2", "pods.list")}
    assert set(on_node_2.values()) <= held
    await eventually(lambda: _superset(cluster.ready_endpoints(NAMESPACE, "web"), set(on_node_2.values())),
                     15, "node-2's pods back in the endpoints")
    for ip in on_node_2.values():
        assert await cluster.probe(client, ip, PORT, timeout=2.0)


async def test_pods_of_a_dead_node_move_after_the_eviction_timeout(local_cluster):
    eviction = 6.0
    cluster = await local_cluster("127.0.43", nodes=2, node_grace_period=GRACE, pod_eviction_timeout=eviction)
    web, client, cluster_ip = await workload(cluster)
    old_ips = {p["status"]["podIP"] for p in web if p["spec"]["nodeName"] == "node-2"}
    node_1_cidr = (await cluster.client.get("nodes", "node-1"))["spec"]["podCIDR"]
    prefix = node_1_cidr.rsplit(".", 1)[0] + "."
    async with Prober(lambda: cluster.probe(client, cluster_ip, PORT)) as prober:
        await prober.wait_for(5, 10)
        fault = time.monotonic()
        cluster.kill("node-2/agent")

        async def moved():
            pods = await cluster.running_pods(NAMESPACE, "app=web")
            if len(pods) == 4 and all(p["spec"]["nodeName"] == "node-1" for p in pods):
                return {p["status"]["podIP"] for p in pods}
            return None

        new_ips = await eventually(moved, GRACE + eviction + 20, "4 web pods Running on node-1")
        moved_after = time.monotonic() - fault
        assert all(ip.startswith(prefix) for ip in new_ips) and not new_ips & old_ips
        await eventually(lambda: _equal(cluster.ready_endpoints(NAMESPACE, "web"), new_ips), 10,
                         "the Service follows the pods")
        followed = time.monotonic()
        await prober.wait_for(30, 20)
        after = prober.success(followed)
        during = prober.success(fault, followed)
        recovery = prober.recovered_after(fault)
    report("agent-eviction", moved_s=moved_after, recovered_s=recovery, success_during_pct=during,
           success_after_pct=after)
    assert moved_after >= GRACE + eviction - 1
    assert after == 100.0


async def _not(awaitable):
    return not await awaitable


async def _async(value):
    return value


async def _disjoint(awaitable, ips):
    return not (await awaitable) & ips


async def _superset(awaitable, ips):
    return ips <= await awaitable
