"""Deletion, finalizers and the garbage collector through a real API server process with its in-process
controllers: the propagation policies on a Deployment and its pods, owners and dependents of other kinds,
what each DELETE answers; events aggregated by the recorder and expired by the server."""

from __future__ import annotations

import asyncio

import pytest
from support.local_cluster import eventually

from podnet.client import ApiClient, ApiError
from podnet.events import NORMAL, EventRecorder

HOLD = "example.com/hold"


@pytest.fixture
async def client(make_api_server):
    server = make_api_server(controllers=True)
    async with server.client() as api:
        async def default_namespace():
            try:
                return await api.get("namespaces", "default")
            except ApiError:
                return None

        await eventually(default_namespace, 10, "the default namespace")
        yield api


async def absent(api: ApiClient, kind: str, name: str, namespace: str | None = "default") -> bool:
    try:
        await api.get(kind, name, namespace)
    except ApiError as exc:
        return exc.code == 404
    return False


def deployment(name: str, replicas: int = 2) -> dict:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": name, "image": "agnhost"}]}}}}


def lease(name: str, namespace: str = "default", **meta) -> dict:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": namespace, **meta}, "spec": {"holderIdentity": name}}


def reference(owner: dict, block: bool = True) -> dict:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "blockOwnerDeletion": block}


async def pods_of(api: ApiClient, app: str) -> list[dict]:
    return (await api.list("pods", "default", label_selector=f"app={app}"))["items"]


async def with_pods(api: ApiClient, name: str, count: int = 2) -> list[dict]:
    await api.create(deployment(name, count))

    async def created():
        pods = await pods_of(api, name)
        return pods if len(pods) == count else None

    return await eventually(created, 10, f"{count} pods of {name}")


async def test_a_finalizer_keeps_an_object_until_an_update_removes_it(client):
    await client.create(lease("held", finalizers=[HOLD]))
    answer = await client.delete("leases", "held", "default")
    assert answer["kind"] == "Lease" and answer["metadata"]["deletionTimestamp"]
    assert answer["metadata"]["deletionGracePeriodSeconds"] == 0
    current = await client.get("leases", "held", "default")
    assert current["metadata"]["finalizers"] == [HOLD]
    # A second delete changes nothing and answers the same way.
    again = await client.delete("leases", "held", "default")
    assert again["metadata"]["deletionTimestamp"] == answer["metadata"]["deletionTimestamp"]
    with pytest.raises(ApiError) as added:
        await client.patch("leases", "held", {"metadata": {"finalizers": [HOLD, "example.com/more"]}},
                           namespace="default")
    assert added.value.code == 422
    assert 'no new finalizers can be added if the object is being deleted, found new finalizers []string{' \
           '"example.com/more"}' in str(added.value)
    gone = await client.patch("leases", "held", {"metadata": {"finalizers": None}}, namespace="default")
    assert gone["kind"] == "Status" and gone["status"] == "Success"
    assert gone["details"] == {"name": "held", "group": "coordination.k8s.io", "kind": "leases",
                               "uid": current["metadata"]["uid"]}
    assert await absent(client, "leases", "held")


async def test_delete_answers_and_preconditions(client):
    created = await client.create(lease("plain"))
    with pytest.raises(ApiError) as wrong_uid:
        await client.delete("leases", "plain", "default", preconditions={"uid": "not-it"})
    assert wrong_uid.value.code == 409 and "Precondition failed: UID in precondition: not-it" in str(wrong_uid.value)
    dry = await client.request("DELETE", "/apis/coordination.k8s.io/v1/namespaces/default/leases/plain",
                               params={"dryRun": "All"})
    assert dry["status"] == "Success" and not await absent(client, "leases", "plain")
    answer = await client.delete("leases", "plain", "default", preconditions={"uid": created["metadata"]["uid"]})
    assert answer["kind"] == "Status" and answer["details"]["uid"] == created["metadata"]["uid"]
    # Pods answer with the pod itself; one bound to no node goes at once.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
           "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}
    await client.create(pod)
    answer = await client.delete("pods", "p", "default")
    assert answer["kind"] == "Pod" and await absent(client, "pods", "p")
    with pytest.raises(ApiError) as bad:
        await client.delete("leases", "x", "default", propagation_policy="Sideways")
    assert bad.value.code == 422


async def replicaset_of(api: ApiClient, pods: list[dict]) -> dict:
    """The one ReplicaSet that owns `pods`."""
    [name] = {p["metadata"]["ownerReferences"][0]["name"] for p in pods}
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet" for p in pods)
    return await api.get("replicasets", name, "default")


async def test_background_deletes_the_pods_after_the_deployment(client):
    pods = await with_pods(client, "web")
    replicaset = await replicaset_of(client, pods)  # the pods are the Deployment's through its ReplicaSet
    assert replicaset["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
    answer = await client.delete("deployments", "web", "default", propagation_policy="Background")
    assert answer["kind"] == "Status" and answer["details"]["kind"] == "deployments"
    assert await absent(client, "deployments", "web")
    await eventually(lambda: _no_pods(client, "web"), 10, "the pods collected")
    assert await absent(client, "replicasets", replicaset["metadata"]["name"])


async def _no_pods(api: ApiClient, app: str) -> bool:
    return not await pods_of(api, app)


async def test_orphan_keeps_the_pods_without_their_owner(client):
    pods = await with_pods(client, "kept")
    answer = await client.delete("deployments", "kept", "default", propagation_policy="Orphan")
    assert answer["metadata"]["finalizers"] == ["orphan"]
    await eventually(lambda: absent(client, "deployments", "kept"), 10, "the Deployment gone")
    left = await pods_of(client, "kept")
    assert {p["metadata"]["uid"] for p in left} == {p["metadata"]["uid"] for p in pods}
    # The Deployment's dependent, its ReplicaSet, is released; the pods stay the ReplicaSet's.
    replicaset = await replicaset_of(client, left)
    assert not replicaset["metadata"].get("ownerReferences")
    await asyncio.sleep(0.5)
    assert len(await pods_of(client, "kept")) == 2  # nothing collects them later


async def test_foreground_waits_for_blocking_dependents_of_any_kind(client):
    owner = await client.create(deployment("fg", 1))
    # A dependent of another kind that a finalizer holds: the owner must wait for it.
    await client.create(lease("dependent", finalizers=[HOLD], ownerReferences=[reference(owner)]))
    await eventually(lambda: pods_of(client, "fg"), 10, "the pod")
    answer = await client.delete("deployments", "fg", "default", propagation_policy="Foreground")
    assert answer["metadata"]["finalizers"] == ["foregroundDeletion"]

    async def dependent_deleting():
        return (await client.get("leases", "dependent", "default"))["metadata"].get("deletionTimestamp")

    await eventually(dependent_deleting, 10, "the dependent marked for deletion")
    await eventually(lambda: _no_pods(client, "fg"), 10, "the pod deleted")
    await asyncio.sleep(0.5)
    held = await client.get("deployments", "fg", "default")
    assert held["metadata"]["finalizers"] == ["foregroundDeletion"]
    await client.patch("leases", "dependent", {"metadata": {"finalizers": None}}, namespace="default")
    await eventually(lambda: absent(client, "deployments", "fg"), 10, "the owner gone after its dependents")


async def test_a_cluster_scoped_owner_collects_namespaced_dependents(client):
    node = await client.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-gc"}})
    await client.create(lease("node-gc", ownerReferences=[reference(node, block=False)]))
    await client.create(lease("unowned"))
    await client.delete("nodes", "node-gc")
    await eventually(lambda: absent(client, "leases", "node-gc"), 10, "the node's lease collected")
    assert not await absent(client, "leases", "unowned")


async def test_a_recorder_aggregates_repeats_and_events_expire(make_api_server):
    server = make_api_server(extra_args=("--event-ttl", "2"))
    async with server.client() as api:
        await api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
        recorder = EventRecorder(api, "kubelet", "node-1")
        for _ in range(3):
            recorder.record(pod, NORMAL, "BackOff", "Back-off restarting failed container")
        recorder.record(pod, NORMAL, "Killing", "Stopping container c")
        await recorder.flush()
        listed = (await api.list("events", "default", field_selector="involvedObject.name=p,reason=BackOff"))["items"]
        assert [(e["count"], e["source"]["component"], e["source"]["host"]) for e in listed] == [(3, "kubelet", "node-1")]
        kubelet = (await api.list("events", "default", field_selector="source=kubelet"))["items"]
        assert sorted(e["reason"] for e in kubelet) == ["BackOff", "Killing"]

        async def expired():
            return not (await api.list("events", "default"))["items"]

        await eventually(expired, 8, "the events expired after --event-ttl")
        # A repeat of an expired event starts a new one.
        recorder.record(pod, NORMAL, "BackOff", "Back-off restarting failed container")
        await recorder.flush()
        again = (await api.list("events", "default"))["items"]
        assert [(e["reason"], e["count"]) for e in again] == [("BackOff", 1)]
        await recorder.close()


async def test_pods_of_a_node_that_is_gone_are_deleted_after_a_quarantine(make_api_server):
    server = make_api_server(controllers=True, extra_args=("--orphaned-pod-quarantine", "1"))
    async with server.client() as api:
        await eventually(lambda: api.get("namespaces", "default"), 10, "the default namespace")
        for node in ("node-gone", "node-kept"):
            await api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        for name, node in (("stuck", "node-gone"), ("fine", "node-kept")):
            await api.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                              "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost"}]}})
        # No kubelet finishes this deletion: it stays Terminating while its node exists.
        await api.delete("pods", "stuck", "default")
        await asyncio.sleep(1.5)
        assert (await api.get("pods", "stuck", "default"))["metadata"]["deletionTimestamp"]
        await api.delete("nodes", "node-gone")
        await eventually(lambda: absent(api, "pods", "stuck"), 10, "the orphaned pod deleted")
        await asyncio.sleep(1.5)
        assert not await absent(api, "pods", "fine")
