"""A UDP client of a nodePort keeps its endpoint while that endpoint serves; once a sync leaves it out, the
client's flow is forgotten and its next datagram, from the same socket, goes to an endpoint that serves, as
kube-proxy's conntrack cleanup makes it. Real listener and client sockets on 127.0.238.1."""

from __future__ import annotations

import asyncio
import socket

from podnet.nodeagent.nodeports import NodePorts
from podnet.overlay.pipeline.nat import ServiceTable
from podnet.overlay.wire import ipv4

ADDRESS = "127.0.238.1"


def _table(node_port: int, *endpoints: str) -> ServiceTable:
    pods = [[ip, 5353, "node-1"] for ip in endpoints]
    return ServiceTable.from_data({"mode": "iptables", "node": "node-1", "services": [{
        "service": "default/dns", "port_name": "dns", "protocol": "UDP", "cluster_ip": "10.96.0.53", "port": 53,
        "node_port": node_port, "endpoints": pods, "external_endpoints": pods}]})


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((ADDRESS, 0))
        return sock.getsockname()[1]


async def test_a_client_pinned_to_an_endpoint_that_left_is_balanced_afresh():
    node_port = _free_udp_port()
    tables = [_table(node_port, "10.244.1.2")]
    sent: list[bytes] = []
    ports = NodePorts(ADDRESS, lambda: tables[-1], sent.append)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert await ports.reconcile([(node_port, "UDP")]) == [(node_port, "UDP")]

        async def ask() -> str:
            """Where the client's next datagram goes in the pod network."""
            count = len(sent)
            client.sendto(b"query", (ADDRESS, node_port))
            for _ in range(100):
                if len(sent) > count:
                    return ipv4.decode(sent[-1]).dst
                await asyncio.sleep(0.01)
            raise AssertionError("the datagram did not reach the pod network")

        assert await ask() == "10.244.1.2"
        tables.append(_table(node_port, "10.244.1.2", "10.244.2.2"))
        assert ports.forget_stale_udp(tables[-1].udp_node_port_serving()) == 0
        assert [await ask() for _ in range(5)] == ["10.244.1.2"] * 5  # an endpoint that serves keeps its client
        tables.append(_table(node_port, "10.244.2.2"))
        assert ports.forget_stale_udp(tables[-1].udp_node_port_serving()) == 1
        assert await ask() == "10.244.2.2"
        assert ports.counters["udp.stale-endpoint-forgotten"] == 1
    finally:
        client.close()
        ports.close()
