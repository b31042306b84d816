"""StatefulSets and DaemonSets on a two-node cluster, through the real kubectl with the kubeconfig `podnet up`
writes: a StatefulSet's pods get their ordinal names and, through a headless Service, their own DNS names;
a deleted one comes back under its name; `kubectl scale` and `kubectl rollout status` work on it; a
DaemonSet puts one pod on each node and `kubectl get ds` prints kube-apiserver's columns; one with a
nodeSelector follows the nodes' labels."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from support.kubectl import Kubectl
from support.local_cluster import AGNHOST, eventually, pod_on

pytestmark = pytest.mark.slow

NAMESPACE = "data"
LABELS = {"app": "db"}
MANIFEST = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": NAMESPACE},
     "spec": {"clusterIP": "None", "selector": LABELS, "ports": [{"port": 5432}]}},
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": NAMESPACE},
     "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": LABELS},
              "template": {"metadata": {"labels": LABELS},
                           "spec": {"containers": [{"name": "db", "image": AGNHOST, "ports": [{"containerPort": 5432}]}]}}}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "logs", "namespace": NAMESPACE},
     "spec": {"selector": {"matchLabels": {"app": "logs"}},
              "template": {"metadata": {"labels": {"app": "logs"}},
                           "spec": {"containers": [{"name": "agent", "image": AGNHOST}]}}}},
]


async def test_statefulset_and_daemonset_through_kubectl(local_cluster):
    cluster = await local_cluster("127.0.125", nodes=2)
    kubectl = Kubectl(cluster.home)
    applied = await kubectl.arun("apply", "-f", "-", input=yaml.safe_dump_all(MANIFEST).encode())
    assert applied.returncode == 0, applied
    assert applied.stdout.splitlines()[-2:] == ["statefulset.apps/db created", "daemonset.apps/logs created"]

    pods = await cluster.wait_running(NAMESPACE, "app=db", 2, timeout=60)
    assert sorted(p["metadata"]["name"] for p in pods) == ["db-0", "db-1"]
    first = next(p for p in pods if p["metadata"]["name"] == "db-0")
    assert first["spec"]["hostname"] == "db-0" and first["spec"]["subdomain"] == "db"
    assert first["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "db-0"
    assert first["metadata"]["labels"]["apps.kubernetes.io/pod-index"] == "0"
    # OrderedReady: db-1 was made after db-0 was Running and Ready.
    assert first["metadata"]["creationTimestamp"] <= next(
        p for p in pods if p["metadata"]["name"] == "db-1")["metadata"]["creationTimestamp"]

    fqdn = f"db-0.db.{NAMESPACE}.svc.cluster.local"

    async def resolves_to(ip: str) -> bool:
        return cluster.dns(fqdn) == [ip]

    await eventually(lambda: resolves_to(first["status"]["podIP"]), 30, f"{fqdn} resolves to db-0")

    # --wait=false: kubectl 1.31's wait for the deletion can miss it when a pod of the same name is made
    # again within its cache-sync poll (its precondition ignores the uid; later kubectl versions check it),
    # and the StatefulSet controller makes db-0 again at once.
    deleted = await kubectl.arun("delete", "pod", "-n", NAMESPACE, "db-0", "--wait=false")
    assert deleted.returncode == 0 and deleted.stdout == 'pod "db-0" deleted\n', deleted

    again = await cluster.made_again(NAMESPACE, "app=db", "db-0", first, 60)
    await eventually(lambda: resolves_to(again["status"]["podIP"]), 30, f"{fqdn} resolves to the new db-0")

    scaled = await kubectl.arun("scale", "-n", NAMESPACE, "sts/db", "--replicas", "3")
    assert scaled.returncode == 0 and scaled.stdout == "statefulset.apps/db scaled\n", scaled
    rollout = await kubectl.arun("rollout", "status", "-n", NAMESPACE, "sts/db", "--timeout=60s", timeout=90)
    assert rollout.returncode == 0, rollout
    # As against kube-apiserver: the defaulted RollingUpdate carries partition 0, so kubectl reports a
    # partitioned roll out.
    assert rollout.stdout.splitlines()[-1] == "partitioned roll out complete: 3 new pods have been updated...", rollout
    status = json.loads((await kubectl.arun("get", "-n", NAMESPACE, "sts/db", "-o", "json")).stdout)["status"]
    assert status["currentRevision"] == status["updateRevision"] and status["readyReplicas"] == 3, status
    await cluster.wait_running(NAMESPACE, "app=db", 3)
    table = await kubectl.arun("get", "-n", NAMESPACE, "sts", "-o", "wide")
    assert re.fullmatch(rf"NAME +READY +AGE +CONTAINERS +IMAGES\ndb +3/3 +\S+ +db +{re.escape(AGNHOST)}\n",
                        table.stdout), table

    daemons = await cluster.wait_running(NAMESPACE, "app=logs", 2, timeout=60)
    assert sorted(p["spec"]["nodeName"] for p in daemons) == sorted(n.name for n in cluster.topo.nodes)

    async def ds_table() -> str | None:
        out = (await kubectl.arun("get", "-n", NAMESPACE, "ds")).stdout
        return out if re.search(r"\nlogs +2 +2 +2 +2 +2 +<none> +\S+\n$", out) else None

    out = await eventually(ds_table, 30, "kubectl get ds shows two ready daemon pods")
    assert out.splitlines()[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE",
                                           "SELECTOR", "AGE"]
    rolled = await kubectl.arun("rollout", "status", "-n", NAMESPACE, "ds/logs", "--timeout=30s", timeout=60)
    assert (rolled.returncode, rolled.stdout) == (0, 'daemon set "logs" successfully rolled out\n'), rolled

    # Scaling down removes the highest ordinals; db-0 stays.
    scaled = await kubectl.arun("scale", "-n", NAMESPACE, "sts/db", "--replicas", "1")
    assert scaled.returncode == 0, scaled

    async def only_db_0() -> bool:
        pods = (await cluster.client.list("pods", NAMESPACE, label_selector="app=db")).get("items") or []
        return [p["metadata"]["name"] for p in pods] == ["db-0"]

    await eventually(only_db_0, 30, "db-1 and db-2 gone, db-0 kept")

    # A DaemonSet with a nodeSelector follows the nodes' labels: a pod on each node that gets the label, none
    # on one that loses it.
    picky = {**MANIFEST[3], "metadata": {"name": "picky", "namespace": NAMESPACE},
             "spec": {"selector": {"matchLabels": {"app": "picky"}},
                      "template": {"metadata": {"labels": {"app": "picky"}},
                                   "spec": {"nodeSelector": {"podnet.io/logs": "yes"},
                                            "containers": [{"name": "agent", "image": AGNHOST}]}}}}
    applied = await kubectl.arun("apply", "-f", "-", input=json.dumps(picky).encode())
    assert applied.returncode == 0, applied

    async def picky_on(*nodes: str) -> bool:
        pods = (await cluster.client.list("pods", NAMESPACE, label_selector="app=picky")).get("items") or []
        live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return sorted(p["spec"].get("nodeName") for p in live) == sorted(nodes) and all(
            (p.get("status") or {}).get("phase") == "Running" for p in live)

    await eventually(lambda: picky_on(), 10, "no picky pod while no node has the label")
    for node, change, expected in (("node-2", "podnet.io/logs=yes", ("node-2",)),
                                   ("node-1", "podnet.io/logs=yes", ("node-1", "node-2")),
                                   ("node-2", "podnet.io/logs-", ("node-1",))):
        labelled = await kubectl.arun("label", "node", node, change)
        assert labelled.returncode == 0, labelled
        await eventually(lambda expected=expected: picky_on(*expected), 30, f"picky pods on {expected}")


GRACE = 2.0  # seconds without heartbeats before a node is NotReady
EVICTION = 3.0  # seconds on an unreachable node before a pod that does not tolerate it is evicted


async def test_daemonset_pods_stay_on_a_node_that_stops_answering_and_recover_with_it(local_cluster):
    cluster = await local_cluster("127.0.127", nodes=2, node_grace_period=GRACE, pod_eviction_timeout=EVICTION)
    kubectl = Kubectl(cluster.home)
    applied = await kubectl.arun("apply", "-f", "-", input=yaml.safe_dump_all([MANIFEST[0], MANIFEST[3]]).encode())
    assert applied.returncode == 0, applied
    await cluster.create(pod_on("bare", NAMESPACE, "node-2"))
    await cluster.wait_running(NAMESPACE, "role=bare", 1)
    daemons = await cluster.wait_running(NAMESPACE, "app=logs", 2, timeout=60)
    on_node_2 = next(p for p in daemons if p["spec"]["nodeName"] == "node-2")

    async def ds_status() -> dict:
        return (await cluster.client.get("daemonsets", "logs", NAMESPACE)).get("status") or {}

    cluster.kill("node-2/agent")
    await cluster.wait_dead("node-2/agent")

    async def bare_evicted() -> bool:
        pods = (await cluster.client.list("pods", NAMESPACE, label_selector="role=bare")).get("items") or []
        return not pods or all(p["metadata"].get("deletionTimestamp") for p in pods)

    # The bare pod does not tolerate the unreachable taint and is evicted; the daemon pod does and stays,
    # not ready, still counted as scheduled where it should run.
    await eventually(bare_evicted, GRACE + EVICTION + 20, "the bare pod on node-2 evicted")
    status = await eventually(lambda: _when(ds_status(), lambda s: s.get("numberReady") == 1), 20, "one ready daemon pod")
    assert (status["desiredNumberScheduled"], status["currentNumberScheduled"]) == (2, 2), status
    kept = await cluster.client.get("pods", on_node_2["metadata"]["name"], NAMESPACE)
    assert kept["metadata"]["uid"] == on_node_2["metadata"]["uid"] and not kept["metadata"].get("deletionTimestamp")

    await cluster.start("node-2/agent")
    await eventually(lambda: _when(ds_status(), lambda s: s.get("numberReady") == 2), 30, "both daemon pods ready again")
    out = (await kubectl.arun("get", "-n", NAMESPACE, "ds", "logs", "--no-headers")).stdout
    assert out.split()[:6] == ["logs", "2", "2", "2", "2", "2"], out


async def _when(value, check):
    found = await value
    return found if check(found) else None
