"""The API client with a list of servers (podnet/client.py over podnet/serverlist.py), against real API
servers on one etcd: when the one it talks to is SIGKILLed, reads, writes and an informer's watch go on
through the other."""

from __future__ import annotations

import asyncio

import pytest

from podnet.client import ApiClient, ApiError, Informer, running

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

NAMESPACE = "failover"


def _configmap(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": NAMESPACE}}


async def _until(check, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def test_requests_and_watches_move_to_the_next_server(make_api_server, etcd_server):
    first, second = (make_api_server(etcd_server.url, tls=False) for _ in range(2))
    async with ApiClient(first.url, first.token, fallbacks=(second.url,)) as client:
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        await client.create(_configmap("before"))
        assert client.server == first.url
        informer = Informer(client, "configmaps", NAMESPACE)
        async with running(informer, timeout=10):
            first.kill()
            # A read after the kill is asked again of the other server at once.
            assert (await client.get("configmaps", "before", NAMESPACE))["metadata"]["name"] == "before"
            assert client.server == second.url
            created = await client.create(_configmap("after"))
            # The informer's watch broke with its server and resumed on the other from its resourceVersion.
            await _until(lambda: f"{NAMESPACE}/after" in informer.store)
            assert informer.store[f"{NAMESPACE}/after"]["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        assert informer.relists == 1  # resumed, not relisted


async def test_with_every_server_down_the_error_names_them_all(make_api_server, etcd_server):
    first, second = (make_api_server(etcd_server.url, tls=False) for _ in range(2))
    first.kill()
    second.kill()
    async with ApiClient(first.url, first.token, fallbacks=(second.url,), timeout=3) as client:
        with pytest.raises(ApiError) as unreachable:
            await client.create(_configmap("nowhere"))
    assert unreachable.value.code == 0
    assert str(unreachable.value).startswith(f"cannot reach the API server at {first.url}, {second.url}: ")
