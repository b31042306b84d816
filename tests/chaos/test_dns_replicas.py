"""Two cluster DNS replicas behind kube-dns: one SIGKILLed while a pod looks names up in a loop, and every
lookup that its client retries is answered. A query that kube-proxy sends to the dead replica is refused at
once (port unreachable, as from a container whose process died), so until the dead replica's pod is no
longer a Ready endpoint (about three seconds: its readiness probe) a lookup fails when each of its tries
lands there; asked again, the client reaches the live one."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.local_cluster import eventually, pod_on, report

pytestmark = pytest.mark.slow

NAME = "kubernetes.default.svc.cluster.local"


async def test_a_replica_killed_during_a_lookup_loop_loses_no_lookup(local_cluster):
    cluster = await local_cluster("127.0.135", nodes=1, dns_replicas=2)
    await cluster.create(pod_on("client", "default", "node-1"))
    await cluster.wait_running("default", "role=client", 1)

    async def ready_dns_endpoints() -> int:
        slices = await cluster.client.list("endpointslices", "kube-system", label_selector="kubernetes.io/service-name=kube-dns")
        return len({a for s in slices["items"] for e in s["endpoints"] if (e.get("conditions") or {}).get("ready")
                    for a in e["addresses"]})

    await eventually(lambda: _at_least(ready_dns_endpoints(), 2), 30, "two ready DNS endpoints")

    async def lookup() -> bool:
        # With the pod's resolv.conf timeout and attempts, as its resolver would ask.
        result = await cluster.rpc("node-1", "pod.dig", {"pod": "client", "name": NAME}, timeout=30)
        return bool(result["ok"]) and "status: NOERROR" in result["text"]

    async def lookup_retrying() -> tuple[bool, int]:
        """As a client whose lookup failed asks again: up to four lookups, 1.5 s apart."""
        for attempt in range(1, 5):
            if await lookup():
                return True, attempt
            await asyncio.sleep(1.5)
        return False, 4

    await eventually(lookup, 10, "a lookup from the pod")
    results: list[tuple[bool, int]] = []
    stop = asyncio.Event()

    async def loop() -> None:
        while not stop.is_set():
            results.append(await lookup_retrying())
            await asyncio.sleep(0.05)

    looping = asyncio.create_task(loop())
    await asyncio.sleep(2.0)
    before = len(results)
    cluster.kill("dns-2")
    killed = time.monotonic()
    await cluster.wait_dead("dns-2")
    await eventually(lambda: _at_most(ready_dns_endpoints(), 1), 15, "the dead replica's endpoint not ready")
    not_ready_after = time.monotonic() - killed
    await asyncio.sleep(2.0)
    stop.set()
    await looping
    retried = sum(1 for _, attempts in results if attempts > 1)
    lost = sum(1 for answered, _ in results if not answered)
    report("dns-replica-kill", lookups=len(results), during_and_after=len(results) - before, answered_after_a_retry=retried,
           lost=lost, not_ready_after_s=not_ready_after)
    assert len(results) - before >= 10 and lost == 0, results


async def _at_least(count, n: int) -> bool:
    return await count >= n


async def _at_most(count, n: int) -> bool:
    return await count <= n
