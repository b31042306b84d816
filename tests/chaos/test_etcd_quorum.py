"""`podnet up --store etcd --etcd-members 3`: the etcd leader SIGKILLed under writes, then a second member.
Writes go on after the election; without a quorum the API answers 503 while Service traffic and DNS keep
serving from what the nodes already have; with the members back, every acknowledged write is there."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import pytest
from support.local_cluster import deployment, eventually, pod_on, report, service

from podnet.client import ApiError
from podnet.cluster import topology

pytestmark = [pytest.mark.slow, pytest.mark.etcd]

NAMESPACE = "default"
PORT = 8080


def _is_leader(host: str, member: topology.EtcdMember) -> bool:
    try:
        with urllib.request.urlopen(f"http://{host}:{member.metrics_port}/metrics", timeout=1) as response:
            return b"\netcd_server_is_leader 1" in response.read()
    except OSError:
        return False


async def test_writes_survive_the_etcd_leader_and_the_dataplane_a_lost_quorum(local_cluster):
    cluster = await local_cluster("127.0.136", nodes=2, store="etcd", etcd_members=3)
    members = topology.etcd_members(cluster.topo)
    host = cluster.topo.host("etcd")
    await cluster.create(deployment("web", NAMESPACE, 2, PORT), service("web", NAMESPACE, PORT),
                         pod_on("client", NAMESPACE, "node-1"))
    await cluster.wait_running(NAMESPACE, "app=web", 2)
    (client,) = await cluster.wait_running(NAMESPACE, "role=client", 1)
    web_ip = (await cluster.client.get("services", "web", NAMESPACE))["spec"]["clusterIP"]
    web_name = f"web.{NAMESPACE}.svc.cluster.local"
    await eventually(lambda: cluster.probe(client, web_ip, PORT), 20, "Service web answers")

    acknowledged: list[str] = []
    refusals: list[int] = []
    stop = asyncio.Event()

    async def writer() -> None:
        for i in range(100_000):
            if stop.is_set():
                return
            try:
                await cluster.client.create({"apiVersion": "v1", "kind": "ConfigMap",
                                             "metadata": {"name": f"w-{i}", "namespace": NAMESPACE}})
                acknowledged.append(f"w-{i}")
            except ApiError as exc:
                refusals.append(exc.code)
                await asyncio.sleep(0.05)

    task = asyncio.create_task(writer())
    try:
        await eventually(lambda: _async(len(acknowledged) >= 20), 20, "20 writes")
        leader = await eventually(lambda: _async(next((m for m in members if _is_leader(host, m)), None)), 10,
                                  "an etcd leader")
        cluster.kill(leader.name)
        killed = time.monotonic()
        before = len(acknowledged)
        await eventually(lambda: _async(len(acknowledged) >= before + 20), 30, "writes after the leader's death")
        resumed_s = time.monotonic() - killed

        second = next(m for m in members if m is not leader)
        cluster.kill(second.name)
        await cluster.wait_dead(second.name)
        refused_before = len(refusals)
        await eventually(lambda: _async(len(refusals) >= refused_before + 2), 40, "refusals without a quorum")
        assert await cluster.probe(client, web_ip, PORT), "Service traffic without a quorum"
        assert await asyncio.to_thread(cluster.dns, web_name, 1.0) == [web_ip], "DNS without a quorum"

        for member in (leader, second):
            await cluster.start(member.name)
        back = len(acknowledged)
        await eventually(lambda: _async(len(acknowledged) >= back + 20), 60, "writes with the members back")
    finally:
        stop.set()
        await task
    stored = {cm["metadata"]["name"] for cm in (await cluster.client.list("configmaps", NAMESPACE))["items"]}
    lost = [name for name in acknowledged if name not in stored]
    report("etcd-quorum", acknowledged=len(acknowledged), refusals=len(refusals), refusal_codes=sorted(set(refusals)),
           writes_resumed_after_leader_kill_s=resumed_s, lost=len(lost))
    assert set(refusals) <= {503} and lost == []


async def _async(value):
    return value
