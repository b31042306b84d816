"""SIGKILL the cluster DNS server: lookups fail, on the host and from pods; restarted, the host's answer
within a second of the server being up, and pods' as soon as the DNS pod is Ready again."""

from __future__ import annotations

import time

import pytest
from support.local_cluster import eventually, pod_on, report

from podnet.cluster import supervisor

pytestmark = pytest.mark.slow

NAME = "kubernetes.default.svc.cluster.local"


async def test_lookups_fail_while_dns_is_dead_and_answer_soon_after_restart(local_cluster):
    cluster = await local_cluster("127.0.44", nodes=1)
    await cluster.create(pod_on("client", "default", "node-1"))
    await cluster.wait_running("default", "role=client", 1)

    async def from_pod(timeout: float = 0.3) -> bool:
        result = await cluster.rpc("node-1", "pod.dig", {"pod": "client", "name": NAME, "timeout": timeout,
                                                         "tries": 1}, timeout=10)
        return bool(result["ok"]) and "status: NOERROR" in result["text"]

    (kubernetes_ip,) = cluster.dns(NAME)
    await eventually(from_pod, 10, "a lookup from a pod")
    cluster.kill("dns")
    killed = time.monotonic()
    await cluster.wait_dead("dns")
    failed = [cluster.dns(NAME, timeout=0.3) for _ in range(5)]
    assert failed == [None] * 5
    assert [await from_pod() for _ in range(3)] == [False] * 3

    proc = cluster.process("dns")
    supervisor.launch(cluster.state, proc)
    launched = time.monotonic()
    await supervisor.wait_healthy(cluster.state, proc)
    healthy = time.monotonic()

    async def answered():
        return cluster.dns(NAME, timeout=0.2) == [kubernetes_ip]

    await eventually(answered, 5, "the restarted DNS answers", interval=0.02)
    answered_at = time.monotonic()
    await eventually(from_pod, 15, "a lookup from a pod after the restart", interval=0.05)
    pod_answered_at = time.monotonic()
    report("dns-kill", failed_lookups=len(failed), down_s=launched - killed, process_start_s=healthy - launched,
           answered_after_healthy_s=answered_at - healthy, answered_after_launch_s=answered_at - launched,
           pod_answered_after_healthy_s=pod_answered_at - healthy)
    assert answered_at - healthy <= 1.0
