"""SIGKILL the cluster DNS server: lookups fail; restarted, they answer again within a second of the
server being up."""

from __future__ import annotations

import time

import pytest
from support.local_cluster import eventually, report

from podnet.cluster import supervisor

pytestmark = pytest.mark.slow

NAME = "kubernetes.default.svc.cluster.local"


async def test_lookups_fail_while_dns_is_dead_and_answer_soon_after_restart(local_cluster):
    cluster = await local_cluster("127.0.44", nodes=1)
    (kubernetes_ip,) = cluster.dns(NAME)
    cluster.kill("dns")
    killed = time.monotonic()
    await cluster.wait_dead("dns")
    failed = [cluster.dns(NAME, timeout=0.3) for _ in range(5)]
    assert failed == [None] * 5

    proc = cluster.process("dns")
    supervisor.launch(cluster.state, proc)
    launched = time.monotonic()
    await supervisor.wait_healthy(cluster.state, proc)
    healthy = time.monotonic()

    async def answered():
        return cluster.dns(NAME, timeout=0.2) == [kubernetes_ip]

    await eventually(answered, 5, "the restarted DNS answers", interval=0.02)
    answered_at = time.monotonic()
    report("dns-kill", failed_lookups=len(failed), down_s=launched - killed, process_start_s=healthy - launched,
           answered_after_healthy_s=answered_at - healthy, answered_after_launch_s=answered_at - launched)
    assert answered_at - healthy <= 1.0
