"""Two API servers on one etcd hand out ClusterIPs and NodePorts concurrently: every one unique over the whole
set, and nothing left claimed once every Service is deleted."""

from __future__ import annotations

import asyncio
import collections

import pytest
from podnet.apiserver import claims
from podnet.apiserver.storage.etcd import EtcdStore

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

SERVICES = 2000
IN_FLIGHT = 24  # per API server
NAMESPACE = "ha"


def _service(i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": NAMESPACE},
            "spec": {"type": "NodePort", "selector": {"app": f"a{i}"}, "ports": [{"port": 80}]}}


async def _each(client, indexes, work) -> None:
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> None:
        async with gate:
            await work(client, i)

    await asyncio.gather(*(one(i) for i in indexes))


async def _stored_claims(etcd_server) -> list[str]:
    store = EtcdStore([etcd_server.endpoint])
    await store.open()
    try:
        keys = []
        for prefix in (claims.IP_PREFIX, claims.PORT_PREFIX):
            kvs, _ = await store.list(prefix)
            keys += [kv.key for kv in kvs]
        return keys
    finally:
        await store.close()


async def test_two_servers_never_hand_out_the_same_address_or_port(make_api_server, etcd_server):
    servers = [make_api_server(etcd_server.url) for _ in range(2)]
    clients = [server.client() for server in servers]
    answers: dict[int, dict] = {}

    async def create(client, i: int) -> None:
        answers[i] = await client.create(_service(i))

    async def delete(client, i: int) -> None:
        await client.delete("services", f"svc-{i}", NAMESPACE)

    try:
        await clients[0].create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        await asyncio.gather(*(_each(client, range(n, SERVICES, 2), create) for n, client in enumerate(clients)))
        assert len(answers) == SERVICES
        ips = collections.Counter(a["spec"]["clusterIP"] for a in answers.values())
        ports = collections.Counter(a["spec"]["ports"][0]["nodePort"] for a in answers.values())
        assert [ip for ip, n in ips.items() if n > 1] == [] and len(ips) == SERVICES
        assert [p for p, n in ports.items() if n > 1] == [] and len(ports) == SERVICES
        listed = await clients[0].list("services", NAMESPACE)
        stored = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in listed["items"]}
        assert all(stored[f"svc-{i}"] == a["spec"]["clusterIP"] for i, a in answers.items())
        assert len(await _stored_claims(etcd_server)) == 2 * SERVICES

        # Deleted through the other server than the one that created each: its claims go all the same.
        await asyncio.gather(*(_each(client, range(1 - n, SERVICES, 2), delete) for n, client in enumerate(clients)))
        assert await _stored_claims(etcd_server) == []
    finally:
        for client in clients:
            await client.close()


async def test_a_port_another_server_freed_can_be_requested_at_once(make_api_server, etcd_server):
    first, second = (make_api_server(etcd_server.url) for _ in range(2))
    async with first.client() as a, second.client() as b:
        await a.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        wanted = _service(0)
        wanted["spec"]["ports"][0]["nodePort"] = 31234
        await a.create(wanted)
        refused = _service(1)
        refused["spec"]["ports"][0]["nodePort"] = 31234
        with pytest.raises(Exception, match="provided port is already allocated"):
            await b.create(refused)
        await a.delete("services", "svc-0", NAMESPACE)
        created = await b.create(refused)  # b's view still had it taken: it looks again before refusing
        assert created["spec"]["ports"][0]["nodePort"] == 31234
