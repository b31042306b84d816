"""What `podnet up` waits for before it returns: every node Ready, the cluster DNS answering, its pod a ready
endpoint of the kube-dns Service and an API server one of the `kubernetes` Service's (so pods resolve names
and reach the API from the first moment)."""

from __future__ import annotations

import asyncio
import socket
import time

from dnslib import QTYPE, RCODE, DNSRecord

from podnet.client import ApiClient, ApiError


def node_ready(node: dict) -> bool:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


async def ready_nodes(client: ApiClient) -> set[str]:
    try:
        nodes = await client.list("nodes")
    except ApiError:
        return set()
    return {n["metadata"]["name"] for n in nodes.get("items") or [] if node_ready(n)}


async def dns_answers(address: str, port: int, name: str = "kubernetes.default.svc.cluster.local",
                      timeout: float = 1.0) -> bool:
    """True when the DNS server answers `name` with an address (not SERVFAIL: it has synced)."""
    query = DNSRecord.question(name, "A")
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        try:
            await loop.sock_sendto(sock, query.pack(), (address, port))
            data = await asyncio.wait_for(loop.sock_recv(sock, 4096), timeout)
            reply = DNSRecord.parse(data)
        except Exception:  # unreachable, timed out or not DNS: not answering yet
            return False
    return reply.header.rcode == RCODE.NOERROR and any(rr.rtype == QTYPE.A for rr in reply.rr)


async def service_ready(client: ApiClient, namespace: str, name: str) -> bool:
    """True when the Service `namespace/name` has a ready endpoint."""
    try:
        slices = await client.list("endpointslices", namespace, label_selector=f"kubernetes.io/service-name={name}")
    except ApiError:
        return False
    return any((endpoint.get("conditions") or {}).get("ready") is not False
               for item in slices.get("items") or [] for endpoint in item.get("endpoints") or [])


async def wait_until(check, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return True
        await asyncio.sleep(interval)
    return False
