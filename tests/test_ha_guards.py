"""Guards that must hold across API servers on one etcd, not only inside one process: two servers
creating objects at once in namespaces under a ResourceQuota admit no more than the quota allows, since
each admission charges the quota under compare-and-swap before its object is written."""

from __future__ import annotations

import asyncio

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
