"""Guards that must hold across API servers on one etcd, not only inside one process: two servers
creating objects at once in namespaces under a ResourceQuota admit no more than the quota allows, since
each admission charges the quota under compare-and-swap before its object is written."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from podnet.client import ApiError

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

NAMESPACES = [f"quota-ha-{n}" for n in range(8)]
LIMIT = 3
ATTEMPTS = 12  # per namespace, alternating between the servers


def _secret(namespace: str, i: int) -> dict:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s-{i}", "namespace": namespace},
            "stringData": {"i": str(i)}}


async def test_two_servers_admit_no_more_than_the_quota(make_api_server, etcd_server):
    # No controllers: nothing recounts the quotas meanwhile, so only admission's own charges keep them.
    servers = [make_api_server(etcd_server.url) for _ in range(2)]
    clients = [server.client() for server in servers]
    try:
        for namespace in NAMESPACES:
            await clients[0].create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            await clients[0].create({"apiVersion": "v1", "kind": "ResourceQuota",
                                     "metadata": {"name": "few", "namespace": namespace},
                                     "spec": {"hard": {"secrets": str(LIMIT)}}})
        created: list[str] = []

        async def create(namespace: str, i: int) -> None:
            try:
                await clients[i % 2].create(_secret(namespace, i))
                created.append(namespace)
            except ApiError as e:
                assert e.code == 403 and "exceeded quota: few" in str(e), e

        await asyncio.gather(*(create(namespace, i) for i in range(ATTEMPTS) for namespace in NAMESPACES))
        stored = {namespace: len((await clients[1].list("secrets", namespace))["items"]) for namespace in NAMESPACES}
        assert stored == {namespace: created.count(namespace) for namespace in NAMESPACES} == dict.fromkeys(NAMESPACES, LIMIT)
        for namespace in NAMESPACES:
            charged = await clients[0].get("resourcequotas", "few", namespace)
            assert charged["status"]["used"] == {"secrets": str(LIMIT)}
    finally:
        for client in clients:
            await client.close()


async def _stream(client, namespace: str, lane: int, stop: asyncio.Event, landed: list[str]) -> None:
    """Creates ConfigMaps in `namespace` one after another until `stop`."""
    for i in itertools.count():
        if stop.is_set():
            return
        try:
            await client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                 "metadata": {"name": f"c-{lane}-{i}", "namespace": namespace}})
            landed.append(f"c-{lane}-{i}")
        except ApiError as e:
            assert e.code in (403, 404), e  # terminating, then gone


async def test_no_object_outlives_a_namespace_deleted_through_another_server(make_api_server, etcd_server):
    """Creates stream into namespaces through one server while the other deletes them: once a deletion is
    answered and the creates have stopped, nothing is left in the namespace (a create that found it open
    but landed after the sweep would be left behind for ever)."""
    creating, deleting = make_api_server(etcd_server.url), make_api_server(etcd_server.url)
    writer, remover = creating.client(), deleting.client()
    leftovers: dict[str, int] = {}
    try:
        for round_ in range(4):
            namespace = f"doomed-{round_}"
            await remover.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
            stop = asyncio.Event()
            landed: list[str] = []
            streams = [asyncio.create_task(_stream(writer, namespace, lane, stop, landed)) for lane in range(12)]
            while len(landed) < 30:
                await asyncio.sleep(0.01)
            await remover.delete("namespaces", namespace)
            stop.set()
            await asyncio.gather(*streams)
            leftovers[namespace] = len((await remover.list("configmaps", namespace))["items"])
        assert leftovers == {f"doomed-{r}": 0 for r in range(4)}
    finally:
        await writer.close()
        await remover.close()
