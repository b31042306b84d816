"""A node agent's credential writes only its own node's objects (issue 23, item 8: kube-apiserver's Node
authorizer and NodeRestriction admission).

Every node runs tenants' programs, so its credential is the one most likely to leak. Against a real cluster
started as `podnet up` starts it, node-1's own kubeconfig (`system:node:node-1`, group `system:nodes`) tries to
mark node-2 NotReady, take node-2's lease, rewrite the status of a pod bound to node-2 and delete it: each is
refused with NodeRestriction's words, and node-2, its lease and its pod are as they were. The same credential
still updates node-1's Node, Lease and pods, as the agent does every few seconds; kubectl holding it is
refused the same way.
"""

from __future__ import annotations

import datetime
import shutil
import subprocess

import pytest
from podnet.apiserver import noderestriction
from podnet.apiserver.auth import User
from support.kubectl import KUBECTL_MISSING
from support.local_cluster import pod_on

from podnet.client import ApiClient, ApiError
from podnet.cluster import credentials

PREFIX = "127.0.162"


async def refused(call) -> str:
    with pytest.raises(ApiError) as raised:
        await call
    assert raised.value.code == 403, raised.value.status
    assert raised.value.reason == "Forbidden"
    return raised.value.status["message"]


def _not_ready(now: str) -> dict:
    return {"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                                       "message": "forged", "lastHeartbeatTime": now, "lastTransitionTime": now}]}}


async def test_a_nodes_credential_cannot_touch_another_nodes_objects(local_cluster):
    cluster = await local_cluster(PREFIX, nodes=2)
    admin = cluster.client
    await cluster.create(pod_on("on-two", "default", "node-2"), pod_on("on-one", "default", "node-1"))
    on_two = (await cluster.wait_running("default", "role=on-two", 1))[0]
    await cluster.wait_running("default", "role=on-one", 1)
    lease_before = await admin.get("leases", "node-2", "kube-node-lease")
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    node_one = credentials.component_kubeconfig(cluster.home, "node-1/agent")
    async with ApiClient.from_kubeconfig(node_one) as node:
        message = await refused(node.patch("nodes", "node-2", _not_ready(now), subresource="status"))
        assert message == 'nodes "node-2" is forbidden: node "node-1" is not allowed to modify node "node-2"'
        message = await refused(node.patch("nodes", "node-2", {"metadata": {"labels": {"stolen": "yes"}}}))
        assert message == 'nodes "node-2" is forbidden: node "node-1" is not allowed to modify node "node-2"'
        message = await refused(node.delete("nodes", "node-2"))
        assert message == 'nodes "node-2" is forbidden: node "node-1" is not allowed to modify node "node-2"'
        message = await refused(node.patch("leases", "node-2", {"spec": {"holderIdentity": "node-1"}},
                                           namespace="kube-node-lease"))
        assert message == ('leases.coordination.k8s.io "node-2" is forbidden: '
                           "can only access node lease with the same name as the requesting node")
        message = await refused(node.patch("pods", "on-two", {"status": {"podIP": "10.244.9.9"}}, namespace="default",
                                           subresource="status"))
        assert message == ('pods "on-two" is forbidden: node "node-1" can only update pod status for pods with '
                           "spec.nodeName set to itself")
        message = await refused(node.delete("pods", "on-two", "default"))
        assert message == 'pods "on-two" is forbidden: node "node-1" can only delete pods with spec.nodeName set to itself'
        message = await refused(node.patch("nodes", "node-1", {"spec": {"taints": [
            {"key": "stolen", "effect": "NoSchedule"}]}}))
        assert message == 'nodes "node-1" is forbidden: node "node-1" is not allowed to modify taints'

        # Its own: what the agent writes anyway.
        assert (await node.patch("nodes", "node-1", {"metadata": {"labels": {"mine": "yes"}}}))["metadata"]["labels"]["mine"] == "yes"
        own_lease = await node.patch("leases", "node-1", {"spec": {"renewTime": "2026-01-01T00:00:00.000000Z"}},
                                     namespace="kube-node-lease")
        assert own_lease["spec"]["holderIdentity"] == "node-1"
        own_pod = await node.patch("pods", "on-one", {"status": {"message": "reported by its own node"}},
                                   namespace="default", subresource="status")
        assert own_pod["status"]["message"] == "reported by its own node"

    # node-2 and what is its own are untouched.
    node_two = await admin.get("nodes", "node-2")
    assert "stolen" not in (node_two["metadata"].get("labels") or {})
    assert await cluster.node_ready("node-2")
    assert (await admin.get("leases", "node-2", "kube-node-lease"))["spec"]["holderIdentity"] == \
        lease_before["spec"]["holderIdentity"] == "node-2"
    assert (await admin.get("pods", "on-two", "default"))["status"]["podIP"] == on_two["status"]["podIP"]

    # kubectl with the node's kubeconfig is told the same.
    if KUBECTL_MISSING:
        pytest.skip("kubectl is not on PATH")
    result = subprocess.run([shutil.which("kubectl") or "kubectl", "--kubeconfig", str(node_one), "label", "node", "node-2", "stolen=yes"],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stderr) == (1, 'Error from server (Forbidden): nodes "node-2" is forbidden: '
                                                     'node "node-1" is not allowed to modify node "node-2"\n')


ONE = User("system:node:node-1", "", ("system:nodes", "system:authenticated"))


@pytest.mark.parametrize("user, node", [
    (ONE, "node-1"),
    (User("system:node:node-1", "", ("system:authenticated",)), None),  # not in system:nodes
    (User("alice", "", ("system:nodes",)), None),
    (None, None),
])
def test_who_is_a_node(user, node):
    assert noderestriction.node_of(user) == node


def pod(node: str) -> dict:
    return {"metadata": {"name": "p"}, "spec": {"nodeName": node}}


@pytest.mark.parametrize("operation, kind, subresource, name, namespace, old, new, refused", [
    ("update", "Node", "status", "node-1", None, {}, {}, False),
    ("create", "Node", "", "node-2", None, None, {}, True),
    ("update", "Node", "", "node-1", None, {"spec": {}}, {"spec": {"taints": [{"key": "k"}]}}, True),
    ("create", "Lease", "", "node-1", "kube-node-lease", None, {}, False),
    ("update", "Lease", "", "node-1", "default", {}, {}, True),
    ("update", "Lease", "", "node-2", "kube-node-lease", {}, {}, True),
    ("update", "Pod", "status", "p", "default", pod("node-1"), pod("node-1"), False),
    ("update", "Pod", "status", "p", "default", pod("node-2"), pod("node-2"), True),
    ("delete", "Pod", "", "p", "default", pod("node-2"), None, True),
    ("delete", "Pod", "", "p", "default", pod("node-1"), None, False),
    ("create", "Pod", "", "p", "default", None, pod("node-1"), True),  # a kubelet creates mirror pods only
    ("create", "Namespace", "", "kube-node-lease", None, None, {}, False),
    ("create", "Namespace", "", "mine", None, None, {}, True),
    ("create", "Event", "", "e", "default", None, {}, False),
])
def test_the_node_restriction_rules(operation, kind, subresource, name, namespace, old, new, refused):
    reason = noderestriction.refusal("node-1", operation, kind, subresource, name, namespace, old, new)
    assert (reason is not None) is refused, reason
