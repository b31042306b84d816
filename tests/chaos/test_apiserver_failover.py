"""Two API servers with controllers on one etcd, written to through both; the one leading the controllers is
SIGKILLed: nothing acknowledged is lost, the other takes the controllers over within the lease duration and
a retry period, and a Deployment scaled meanwhile converges."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
from support.local_cluster import eventually

from podnet.client import ApiError

pytestmark = [pytest.mark.etcd, pytest.mark.slow]

LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 2.0, 1.5, 0.5
TIMINGS = ("--leader-elect-lease-duration", str(LEASE_DURATION), "--leader-elect-renew-deadline", str(RENEW_DEADLINE),
           "--leader-elect-retry-period", str(RETRY_PERIOD))
NAMESPACE = "failover"


def _deployment(replicas: int) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}


async def _holder(client) -> str:
    try:
        lease = await client.get("leases", "kube-controller-manager", "kube-system")
    except ApiError:
        return ""
    return lease["spec"].get("holderIdentity") or ""


async def test_killing_the_controllers_leader_loses_no_write_and_hands_the_controllers_over(make_api_server, etcd_server):
    servers = [make_api_server(etcd_server.url, controllers=True, extra_args=TIMINGS) for _ in range(2)]
    clients = [server.client() for server in servers]
    acknowledged: dict[str, int] = {}  # ConfigMap name -> the server index that acknowledged it
    counter = itertools.count()
    stop = asyncio.Event()

    async def write_through(index: int) -> None:
        while not stop.is_set():
            name = f"cm-{next(counter)}"
            try:
                await clients[index].create({"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": name, "namespace": NAMESPACE}, "data": {"n": name}})
            except ApiError:
                await asyncio.sleep(0.05)  # this server is gone: its writes are not acknowledged
                continue
            acknowledged[name] = index

    try:
        holder = await eventually(lambda: _holder(clients[0]), 10, "a controllers leader")
        await clients[0].create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        await clients[0].create(_deployment(2))
        writers = [asyncio.create_task(write_through(i)) for i in range(2) for _ in range(3)]
        await eventually(lambda: _pods(clients[0], 2), 15, "the Deployment's two pods")
        leading = next(i for i, s in enumerate(servers) if "became leader" in s.log())
        survivor = 1 - leading

        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        await asyncio.to_thread(servers[leading].kill)
        await clients[survivor].patch("deployments", "web", {"spec": {"replicas": 4}}, namespace=NAMESPACE)
        new_holder = await eventually(lambda: _changed(clients[survivor], holder), 10, "the survivor to lead")
        took = time.monotonic() - killed_at
        print(f"controllers taken over {took:.2f}s after the leader's SIGKILL (lease {LEASE_DURATION}s, retry {RETRY_PERIOD}s)")
        assert took <= LEASE_DURATION + RETRY_PERIOD * 2.2 + 1.0 and new_holder != holder
        await eventually(lambda: _pods(clients[survivor], 4), 15, "the scaled Deployment's four pods")
        await asyncio.sleep(1.0)
        stop.set()
        await asyncio.gather(*writers)

        listed = await clients[survivor].list("configmaps", NAMESPACE)
        stored = {cm["metadata"]["name"] for cm in listed["items"]}
        lost = sorted(set(acknowledged) - stored)
        through_dead = sum(1 for i in acknowledged.values() if i == leading)
        print(f"{len(acknowledged)} writes acknowledged ({through_dead} by the killed server), {len(lost)} lost")
        assert lost == [] and through_dead > 0 and len(acknowledged) > through_dead
    finally:
        stop.set()
        for client in clients:
            await client.close()


async def _pods(client, count: int) -> bool:
    found = await client.list("pods", NAMESPACE, label_selector="app=web")
    return len(found["items"]) == count


async def _changed(client, old: str) -> str:
    holder = await _holder(client)
    return holder if holder and holder != old else ""
