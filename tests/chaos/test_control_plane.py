"""The control plane dies, the data plane does not: with the API server stopped, Service and pod traffic
and DNS answers keep succeeding, and every watcher catches up with what changes after it returns; with etcd
SIGKILLed under writes, the API answers 503 and loses nothing it acknowledged."""

from __future__ import annotations

import asyncio
import time

import pytest
from support.local_cluster import Prober, deployment, eventually, pod_on, report, service

from podnet.client import ApiError

pytestmark = pytest.mark.slow

NAMESPACE = "default"
PORT = 8080


@pytest.mark.parametrize("outage", [30.0])
async def test_traffic_and_dns_outlive_the_api_server_and_watchers_catch_up(local_cluster, outage):
    cluster = await local_cluster("127.0.47", nodes=2)
    await cluster.create(deployment("web", NAMESPACE, 2, PORT), service("web", NAMESPACE, PORT),
                         pod_on("client", NAMESPACE, "node-1"))
    web = await cluster.wait_running(NAMESPACE, "app=web", 2)
    (client,) = await cluster.wait_running(NAMESPACE, "role=client", 1)
    web_ip = (await cluster.client.get("services", "web", NAMESPACE))["spec"]["clusterIP"]
    far_pod = next((p for p in web if p["spec"]["nodeName"] == "node-2"), web[0])["status"]["podIP"]
    web_name = f"web.{NAMESPACE}.svc.cluster.local"
    await eventually(lambda: cluster.probe(client, web_ip, PORT), 20, "Service web answers")
    await eventually(lambda: _async(cluster.dns(web_name) == [web_ip]), 10, "DNS answers web")

    async def dns_answers() -> bool:
        return await asyncio.to_thread(cluster.dns, web_name) == [web_ip]

    async with (Prober(lambda: cluster.probe(client, web_ip, PORT), interval=0.2) as via_service,
                Prober(lambda: cluster.probe(client, far_pod, PORT), interval=0.2) as to_pod,
                Prober(dns_answers, interval=0.2) as lookups):
        await via_service.wait_for(3, 10)
        stopped = time.monotonic()
        cluster.kill("apiserver")
        await cluster.wait_dead("apiserver")
        with pytest.raises(ApiError):
            await cluster.client.get("services", "web", NAMESPACE)
        await asyncio.sleep(outage - (time.monotonic() - stopped))
        back = time.monotonic()
        await cluster.start("apiserver")
        restarted = time.monotonic()
        # Changes right away, while every watcher is still reconnecting: a new Service, and a web pod
        # replaced by one with a new address.
        await cluster.create(service("after", NAMESPACE, PORT, selector={"app": "web"}))
        replaced = web[0]
        await cluster.client.delete("pods", replaced["metadata"]["name"], NAMESPACE)
        after_ip = (await cluster.client.get("services", "after", NAMESPACE))["spec"]["clusterIP"]
        await eventually(lambda: _async(cluster.dns(f"after.{NAMESPACE}.svc.cluster.local") == [after_ip]),
                         20, "DNS answers the Service created after the restart")
        await eventually(lambda: cluster.probe(client, after_ip, PORT), 20,
                         "kube-proxy programmed the Service created after the restart")
        original = {p["metadata"]["uid"] for p in web}
        replacement = await eventually(lambda: _new_pod(cluster, original), 20, "the replacement pod Running")
        new_ip = replacement["status"]["podIP"]
        await eventually(lambda: cluster.probe(client, new_ip, PORT), 10, "the replacement pod answers")
        await eventually(lambda: _contains(cluster.ready_endpoints(NAMESPACE, "web"), new_ip), 10,
                         "the replacement pod in the endpoints")
        if new_ip != replaced["status"]["podIP"]:  # the deletion, too, reached the endpoints controller
            assert replaced["status"]["podIP"] not in await cluster.ready_endpoints(NAMESPACE, "web")
        caught_up = time.monotonic()
        figures = {name: prober.success(stopped, back)
                   for name, prober in (("service", via_service), ("pod", to_pod), ("dns", lookups))}
    report("apiserver-stop", outage_s=back - stopped, restart_s=restarted - back,
           caught_up_s=caught_up - restarted, **{f"{k}_ok_pct": v for k, v in figures.items()})
    assert figures == {"service": 100.0, "pod": 100.0, "dns": 100.0}


async def test_etcd_killed_under_writes_answers_503_and_loses_nothing_acknowledged(local_cluster):
    cluster = await local_cluster("127.0.48", nodes=1, store="etcd", etcd_port=23790)
    acknowledged: list[str] = []
    refusals: list[int] = []
    stop = asyncio.Event()

    async def writer() -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            name = f"write-{i}"
            try:
                await cluster.client.create(_event(name))
                acknowledged.append(name)
            except ApiError as exc:
                refusals.append(exc.code)
                await asyncio.sleep(0.05)

    task = asyncio.create_task(writer())
    await eventually(lambda: _async(len(acknowledged) >= 20), 20, "20 writes")
    killed = time.monotonic()
    written_before = len(acknowledged)
    cluster.kill("etcd")
    await cluster.wait_dead("etcd")
    await eventually(lambda: _async(len(refusals) >= 3), 30, "refusals while etcd is dead")
    await cluster.start("etcd")
    restarted = time.monotonic()
    resumed = len(acknowledged)
    await eventually(lambda: _async(len(acknowledged) >= resumed + 20), 30, "writes resume")
    recovered = time.monotonic()
    stop.set()
    await task
    stored = {e["metadata"]["name"] for e in (await cluster.client.list("events", NAMESPACE))["items"]}
    lost = [name for name in acknowledged if name not in stored]
    report("etcd-kill", acknowledged=len(acknowledged), before_kill=written_before, refusals=len(refusals),
           refusal_codes=sorted(set(refusals)), down_s=restarted - killed, writes_resumed_s=recovered - restarted,
           lost=len(lost))
    assert set(refusals) == {503}
    assert lost == []


def _event(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name, "namespace": NAMESPACE},
            "involvedObject": {"kind": "Pod", "namespace": NAMESPACE, "name": "client"},
            "reason": "Chaos", "message": "a write under an etcd kill", "type": "Normal"}


async def _new_pod(cluster, original: set[str]) -> dict | None:
    """A Running web pod that was not there before the outage."""
    return next((p for p in await cluster.running_pods(NAMESPACE, "app=web") if p["metadata"]["uid"] not in original),
                None)


async def _contains(awaitable, ip: str) -> bool:
    return ip in await awaitable


async def _async(value):
    return value
