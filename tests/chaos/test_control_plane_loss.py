"""`podnet up --store etcd --etcd-members 3 --apiservers 3`: the API server holding the controllers' Lease and
the etcd leader are SIGKILLed together while Services and pods are created through the admin kubeconfig's
client (which fails over along its server list). The writes go on; every ClusterIP is unique over the whole
set; every acknowledged Service and pod is there afterwards; another API server takes the controllers over,
so that a Deployment scaled meanwhile converges and the pods created meanwhile get scheduled; the
`kubernetes` Service stops listing the dead server; Service traffic and DNS answer throughout."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time

import pytest
from podnet.apiserver.election import CONTROLLER_MANAGER_LEASE, LEASE_NAMESPACE
from support.local_cluster import AGNHOST, eventually, nth_after, report, service

from podnet import kubeconfig
from podnet.cli import etcd_status
from podnet.client import ApiError
from podnet.cluster import topology

pytestmark = [pytest.mark.slow, pytest.mark.etcd]

NAMESPACE = "default"
PORT = 8080


class Writers:
    """Create Services (two lanes) and pods (one lane) as fast as they are answered, recording each
    acknowledged one and each failure's code."""

    def __init__(self, client) -> None:
        self.client = client
        self.services: dict[str, str] = {}  # acknowledged: name -> ClusterIP
        self.pods: list[str] = []
        self.acks: list[float] = []
        self.failures: collections.Counter[int] = collections.Counter()
        self._stop = asyncio.Event()

    async def services_lane(self, lane: int) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            name = f"s{lane}-{i}"
            try:
                created = await self.client.create(service(name, NAMESPACE, 80, {"app": name}))
            except ApiError as e:
                self.failures[e.code] += 1
                await asyncio.sleep(0.1)
                continue
            self.services[name] = created["spec"]["clusterIP"]
            self.acks.append(time.monotonic())

    async def pods_lane(self) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            name = f"p-{i}"
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE,
                                                                   "labels": {"role": "written"}},
                   "spec": {"containers": [{"name": "c", "image": AGNHOST}]}}
            try:
                await self.client.create(pod)
            except ApiError as e:
                self.failures[e.code] += 1
                await asyncio.sleep(0.1)
                continue
            self.pods.append(name)
            self.acks.append(time.monotonic())
            await asyncio.sleep(0.3)

    def stop(self) -> None:
        self._stop.set()

    async def acks_after(self, moment: float, count: int, timeout: float) -> float:
        return await nth_after(self.acks, moment, count, timeout, f"{count} writes acknowledged after the kills")


async def _controller_leader(cluster) -> str:
    """The component name of the API server holding the controllers' Lease."""
    lease = await cluster.client.get("leases", CONTROLLER_MANAGER_LEASE, LEASE_NAMESPACE)
    holder = lease["spec"]["holderIdentity"]
    by_authority = {f"{address}:{cluster.topo.api_port}": name for name, address in topology.api_servers(cluster.topo)}
    return by_authority[holder.rpartition("_")[2]]


async def test_losing_an_api_server_and_the_etcd_leader_at_once(local_cluster):
    cluster = await local_cluster("127.0.210", nodes=2, store="etcd", etcd_members=3, apiservers=3)
    assert len(kubeconfig.load(cluster.home / "kubeconfig").fallbacks) == 2  # it names every API server
    client, web_ip = await cluster.web_and_client(NAMESPACE, PORT)

    writers = Writers(cluster.client)
    lanes = [asyncio.create_task(writers.services_lane(lane)) for lane in range(2)]
    lanes.append(asyncio.create_task(writers.pods_lane()))
    try:
        await writers.acks_after(0, 30, 30)
        api_leader = await _controller_leader(cluster)
        etcd_members = etcd_status.members(cluster.state.processes)
        statuses = await etcd_status.statuses(cluster.home, [endpoint for _, endpoint in etcd_members])
        etcd_leader = next(name for (name, _), status in zip(etcd_members, statuses, strict=True) if status.is_leader)
        cluster.kill(api_leader)
        cluster.kill(etcd_leader)
        killed = time.monotonic()
        last_before = max(writers.acks)
        resumed = await writers.acks_after(killed, 1, 30)
        await writers.acks_after(resumed, 30, 60)

        # The controllers move to a live API server, which scales the Deployment and schedules the pods.
        await cluster.client.patch("deployments", "web", {"spec": {"replicas": 4}}, namespace=NAMESPACE)
        await cluster.wait_running(NAMESPACE, "app=web", 4, timeout=90)
        new_leader = await _controller_leader(cluster)
        assert new_leader != api_leader
    finally:
        writers.stop()
        await asyncio.gather(*lanes)

    # Every ClusterIP unique over the whole set, and each acknowledged Service holds the one it was given.
    stored = (await cluster.client.list("services", NAMESPACE))["items"]
    ips = [s["spec"]["clusterIP"] for s in stored]
    duplicates = [ip for ip, n in collections.Counter(ips).items() if n > 1]
    by_name = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in stored}
    lost_services = [name for name, ip in writers.services.items() if by_name.get(name) != ip]
    pods = {p["metadata"]["name"] for p in (await cluster.client.list("pods", NAMESPACE))["items"]}
    lost_pods = [name for name in writers.pods if name not in pods]
    # Every pod written, during the takeover too, is scheduled and started.
    await cluster.wait_running(NAMESPACE, "role=written", len([p for p in pods if p.startswith("p-")]), timeout=120)

    killed_address = dict(topology.api_servers(cluster.topo))[api_leader]

    async def dead_server_gone() -> bool:
        endpoints = await cluster.client.get("endpoints", "kubernetes", "default")
        addresses = {a["ip"] for subset in endpoints.get("subsets") or [] for a in subset.get("addresses") or []}
        return len(addresses) == 2 and killed_address not in addresses

    await eventually(dead_server_gone, 40, "the kubernetes Service without the dead API server")
    assert await cluster.probe(client, web_ip, PORT), "Service traffic after the losses"
    assert await asyncio.to_thread(cluster.dns, f"web.{NAMESPACE}.svc.cluster.local", 1.0) == [web_ip]
    report("control-plane-loss", api_server_killed=api_leader, etcd_member_killed=etcd_leader,
           controllers_now=new_leader, services=len(writers.services), pods=len(writers.pods),
           write_gap_s=round(resumed - last_before, 2), failures=dict(writers.failures),
           duplicate_cluster_ips=len(duplicates), lost=len(lost_services) + len(lost_pods))
    assert duplicates == [] and len(set(ips)) == len(stored)
    assert lost_services == [] and lost_pods == []
    assert set(writers.failures) <= {0, 503}, writers.failures  # only the writes in flight on the dead server
