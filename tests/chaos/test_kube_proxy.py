"""SIGKILL kube-proxy: the rules it programmed keep existing Services working; a Service created while it
is dead starts working when it comes back."""

from __future__ import annotations

import time

import pytest
from support.local_cluster import Prober, deployment, eventually, pod_on, report, service

pytestmark = pytest.mark.slow

NAMESPACE = "default"
PORT = 8080


async def test_services_keep_working_without_kube_proxy_and_changes_apply_on_restart(local_cluster):
    cluster = await local_cluster("127.0.45", nodes=2)
    await cluster.create(deployment("web", NAMESPACE, 2, PORT), service("web", NAMESPACE, PORT),
                         pod_on("client", NAMESPACE, "node-1"))
    await cluster.wait_running(NAMESPACE, "app=web", 2)
    (client,) = await cluster.wait_running(NAMESPACE, "role=client", 1)
    web_ip = (await cluster.client.get("services", "web", NAMESPACE))["spec"]["clusterIP"]
    await eventually(lambda: cluster.probe(client, web_ip, PORT), 20, "Service web answers")

    async with Prober(lambda: cluster.probe(client, web_ip, PORT)) as prober:
        await prober.wait_for(5, 10)
        fault = time.monotonic()
        cluster.kill("node-1/kube-proxy")
        await cluster.wait_dead("node-1/kube-proxy")
        # A change while it is dead: a second Service over the same pods.
        await cluster.create(service("web-2", NAMESPACE, PORT, selector={"app": "web"}))
        web_2_ip = (await cluster.client.get("services", "web-2", NAMESPACE))["spec"]["clusterIP"]
        await eventually(lambda: cluster.ready_endpoints(NAMESPACE, "web-2"), 10, "web-2 has endpoints")
        assert not await cluster.probe(client, web_2_ip, PORT)  # nobody programmed it on node-1
        await prober.wait_for(20, 20)
        restart = time.monotonic()
        during = prober.success(fault, restart)
        await cluster.start("node-1/kube-proxy")
        started = time.monotonic()
        await eventually(lambda: cluster.probe(client, web_2_ip, PORT), 10, "web-2 answers after the restart",
                         interval=0.05)
        applied = time.monotonic()
        await prober.wait_for(10, 10)
        after = prober.success(restart)
    report("kube-proxy-kill", success_while_dead_pct=during, success_after_restart_pct=after,
           dead_s=restart - fault, new_service_after_healthy_s=applied - started)
    assert during == 100.0 and after == 100.0
