"""Virtual pods' TCP at speed on real agents: a connection between two virtual pods on two nodes carries
megabytes as super-segments, cut into wire segments only at the tunnel (with UDP segmentation offload),
and between two virtual pods of one node never reaches the tunnel at all."""

from __future__ import annotations

import pytest
from support.local_cluster import AGNHOST

pytestmark = pytest.mark.slow

PREFIX = "127.0.244"
TRANSFER = 8 << 20


def pod(name: str, node: str) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "echo"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": AGNHOST, "ports": [{"containerPort": 80}]}]},
    }


async def test_virtual_pods_move_megabytes_as_super_segments(local_cluster):
    cluster = await local_cluster(PREFIX, nodes=2)
    await cluster.create(pod("a", "node-1"), pod("b", "node-2"), pod("c", "node-1"))
    running = await cluster.wait_running("default", "app=echo", 3, timeout=60)
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in running}

    async def echo(peer: str) -> tuple[dict, dict, dict]:
        before = await cluster.rpc("node-1", "counters")
        result = await cluster.rpc("node-1", "pod.tcp_transfer", {
            "namespace": "default", "pod": "a", "dst": ips[peer], "port": 80, "bytes": TRANSFER, "timeout": 60,
        }, timeout=90)
        after = await cluster.rpc("node-1", "counters")
        return result, before, after

    result, before, after = await echo("b")
    assert result["echoed"] == TRANSFER
    sent = after["tunnel.tx"] - before.get("tunnel.tx", 0)
    sends = after.get("tunnel.tx.segmented-sends", 0) - before.get("tunnel.tx.segmented-sends", 0)
    # Every byte went out as wire segments of at most the MSS, many per send.
    assert sent >= TRANSFER // 1410
    assert 0 < sends < sent // 8, (sends, sent)

    result, before, after = await echo("c")
    assert result["echoed"] == TRANSFER
    # Both directions of the same-node echo stay inside node-1's agent.
    assert after.get("tunnel.tx", 0) - before.get("tunnel.tx", 0) < 10
    assert after["delivered"] - before.get("delivered", 0) >= 2 * TRANSFER // 1410

    # Small UDP datagrams, which nothing joins into super-segments: a turn's datagrams for node-2 still
    # leave in a few segmented sends, and node-2 reads them back as joined reads.
    receiver_before = await cluster.rpc("node-2", "counters")
    result = await cluster.rpc("node-1", "pod.send_udp", {
        "namespace": "default", "pod": "a", "dst": ips["b"], "port": 9, "size": 64, "seconds": 0.3,
    }, timeout=30)
    after, receiver_after = await cluster.rpc("node-1", "counters"), await cluster.rpc("node-2", "counters")
    sent = after["tunnel.tx"] - before["tunnel.tx"]
    sends = after.get("tunnel.tx.segmented-sends", 0) - before.get("tunnel.tx.segmented-sends", 0)
    joined = receiver_after.get("tunnel.rx.joined-reads", 0) - receiver_before.get("tunnel.rx.joined-reads", 0)
    assert sent >= result["sent"] > 1000
    assert 0 < sends < result["sent"] // 8, (sends, result)
    assert joined > 0
