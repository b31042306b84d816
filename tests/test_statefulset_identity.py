"""A StatefulSet pod's stable identity on a real one-node cluster: deleted, it is made again under its name,
on the node that held it, with the same IP (the node's IPAM remembers the address by the pod's name) and
so the same DNS record; a pod of another name does not get that address meanwhile. Virtual pods, and
netns pods (root), whose address is freed only once their namespace is taken down."""

from __future__ import annotations

import pytest
from support.kubectl import Kubectl
from support.local_cluster import AGNHOST, eventually
from support.netns_pods import require_root

pytestmark = [pytest.mark.slow, pytest.mark.host_network]

NAMESPACE = "data"


def _statefulset(netns: bool) -> dict:
    container: dict = {"name": "db", "image": AGNHOST, "ports": [{"containerPort": 5432}]}
    template: dict = {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [container]}}
    if netns:
        container["command"] = ["sleep", "3600"]
        template["metadata"]["annotations"] = {"podnet.io/pod-mode": "netns"}
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": NAMESPACE},
            "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                     "template": template}}


@pytest.mark.parametrize("mode, prefix", [("virtual", "127.0.228"), ("netns", "127.0.229")])
async def test_a_statefulset_pod_made_again_keeps_its_name_and_ip(local_cluster, mode, prefix):
    if mode == "netns":
        require_root()
    cluster = await local_cluster(prefix, nodes=1)
    kubectl = Kubectl(cluster.home)
    await cluster.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": NAMESPACE},
                          "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}},
                         _statefulset(mode == "netns"))
    pods = {p["metadata"]["name"]: p for p in await cluster.wait_running(NAMESPACE, "app=db", 2, timeout=60)}
    first = pods["db-0"]
    fqdn = f"db-0.db.{NAMESPACE}.svc.cluster.local"

    async def resolves_to(ip: str) -> bool:
        return cluster.dns(fqdn) == [ip]

    await eventually(lambda: resolves_to(first["status"]["podIP"]), 30, f"{fqdn} resolves to db-0")

    deleted = await kubectl.arun("delete", "pod", "-n", NAMESPACE, "db-0", "--wait=false")
    assert deleted.returncode == 0, deleted
    # While db-0 is away, another pod is given an address: not db-0's.
    await cluster.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "other", "namespace": NAMESPACE,
                                                                           "labels": {"role": "other"}},
                          "spec": {"containers": [{"name": "other", "image": AGNHOST}]}})

    again = await cluster.made_again(NAMESPACE, "app=db", "db-0", first, 90)
    (other,) = await cluster.wait_running(NAMESPACE, "role=other", 1, timeout=60)
    assert again["spec"]["nodeName"] == first["spec"]["nodeName"]
    assert again["status"]["podIP"] == first["status"]["podIP"]
    assert other["status"]["podIP"] not in {again["status"]["podIP"], pods["db-1"]["status"]["podIP"]}
    await eventually(lambda: resolves_to(first["status"]["podIP"]), 30, f"{fqdn} resolves to the same address")
