"""Partition two nodes (their agents drop VXLAN to and from each other): traffic between them fails, the
third node reaches both, and it heals when the partition is lifted."""

from __future__ import annotations

import time

import pytest
from support.local_cluster import eventually, pod_on, report

pytestmark = pytest.mark.slow

NAMESPACE = "default"


async def test_a_partition_cuts_two_nodes_apart_and_heals(local_cluster):
    cluster = await local_cluster("127.0.46", nodes=3)
    await cluster.create(*(pod_on(f"pod-{i}", NAMESPACE, f"node-{i}") for i in (1, 2, 3)))
    pods = {p["spec"]["nodeName"]: p for p in await cluster.wait_running(NAMESPACE, None, 3)}
    ip = {node: p["status"]["podIP"] for node, p in pods.items()}
    pairs = [(a, b) for a in pods for b in pods if a != b]

    async def reachability(timeout: float = 0.5) -> dict[tuple[str, str], bool]:
        return {(a, b): await cluster.probe(pods[a], ip[b], 80, timeout=timeout) for a, b in pairs}

    await eventually(lambda: _all(reachability()), 20, "every pod reaches every other")
    address = {node.name: node.address for node in cluster.topo.nodes}
    async def dropped_by_partition() -> int:
        return sum([(await cluster.rpc(node, "counters")).get("tunnel.drop.partitioned", 0)
                    for node in ("node-1", "node-2")])

    before = await dropped_by_partition()
    for node, peer in (("node-1", "node-2"), ("node-2", "node-1")):
        await cluster.rpc(node, "faults.partition", {"peer": address[peer], "drop": True})
    partitioned = await reachability()
    cut = {pair for pair, ok in partitioned.items() if not ok}
    assert cut == {("node-1", "node-2"), ("node-2", "node-1")}, partitioned
    dropped = await dropped_by_partition() - before
    assert dropped > 0

    lifted = time.monotonic()
    for node, peer in (("node-1", "node-2"), ("node-2", "node-1")):
        await cluster.rpc(node, "faults.partition", {"peer": address[peer], "drop": False})
    await eventually(lambda: _all(reachability(timeout=1.0)), 10, "healed", interval=0.05)
    healed = time.monotonic() - lifted
    probes = [ok for _ in range(5) for ok in (await reachability(timeout=1.0)).values()]
    across = [("node-1", "node-2"), ("node-2", "node-1")]
    rest = [pair for pair in pairs if pair not in across]
    report("partition", unaffected_pairs_ok_pct=100.0 * sum(partitioned[p] for p in rest) / len(rest),
           partitioned_pairs_ok_pct=100.0 * sum(partitioned[p] for p in across) / len(across),
           dropped_datagrams=dropped, healed_s=healed,
           success_after_pct=100.0 * sum(probes) / len(probes))
    assert all(probes)


async def _all(awaitable):
    return all((await awaitable).values())
