"""StatefulSet and DaemonSet decisions, pure: what one pass of each controller does, and a StatefulSet's
scale-up played pass by pass in memory (the test applies the writes and plays the kubelet)."""

from __future__ import annotations

from datetime import UTC, datetime

from podnet.apiserver.controllers import daemonsets, ownerrefs, statefulsets
from podnet.apiserver.defaults import default_daemon_set, default_stateful_set

T0 = datetime(2026, 1, 1, tzinfo=UTC)
STAMP = "2026-01-01T00:00:00Z"


def make_sts(replicas=3, policy="OrderedReady", image="agnhost", **spec):
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": "db", "namespace": "default", "uid": "uid-db", "generation": 1},
           "spec": {"replicas": replicas, "serviceName": "db", "podManagementPolicy": policy,
                    "selector": {"matchLabels": {"app": "db"}},
                    "template": {"metadata": {"labels": {"app": "db"}},
                                 "spec": {"containers": [{"name": "c", "image": image}]}}, **spec}}
    default_stateful_set(sts)
    return sts


def running(pod, ready=True, phase="Running", node="node-1"):
    pod = {**pod, "metadata": {**pod["metadata"], "uid": f"uid-{pod['metadata']['name']}", "creationTimestamp": STAMP}}
    pod["spec"] = {**pod["spec"], "nodeName": node}
    pod["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                                     "lastTransitionTime": STAMP}]}
    return pod


def names(pods):
    return [p["metadata"]["name"] for p in pods]


# --- StatefulSet ------------------------------------------------------------------------------------------


def test_ordered_ready_creates_one_pod_at_a_time_with_its_identity():
    sts = make_sts(3)
    plan = statefulsets.plan(sts, [], T0)
    assert names(plan.create) == ["db-0"]
    pod = plan.create[0]
    assert pod["spec"]["hostname"] == "db-0" and pod["spec"]["subdomain"] == "db"
    labels = pod["metadata"]["labels"]
    assert labels[statefulsets.POD_NAME_LABEL] == "db-0" and labels[statefulsets.POD_INDEX_LABEL] == "0"
    assert labels["app"] == "db" and labels["controller-revision-hash"] == statefulsets.update_revision(sts)
    assert labels["controller-revision-hash"].startswith("db-")
    assert ownerrefs.is_controlled_by(pod, "uid-db")
    # db-0 exists but is not Ready yet: nothing more happens.
    assert statefulsets.plan(sts, [running(pod, ready=False)], T0).create == ()
    # Ready: db-1 next.
    assert names(statefulsets.plan(sts, [running(pod)], T0).create) == ["db-1"]


def test_parallel_creates_all_missing_pods_at_once():
    assert names(statefulsets.plan(make_sts(3, "Parallel"), [], T0).create) == ["db-0", "db-1", "db-2"]


def test_scale_up_played_pass_by_pass_and_status_counts():
    sts = make_sts(3)
    pods: list[dict] = []
    for _ in range(5):
        plan = statefulsets.plan(sts, pods, T0)
        pods += [running(p) for p in plan.create]
    assert names(pods) == ["db-0", "db-1", "db-2"]
    status = statefulsets.plan(sts, pods, T0).status
    revision = statefulsets.update_revision(sts)
    assert status == {"observedGeneration": 1, "replicas": 3, "readyReplicas": 3, "availableReplicas": 3,
                      "currentReplicas": 3, "updatedReplicas": 3, "currentRevision": revision,
                      "updateRevision": revision, "collisionCount": 0}


def test_scale_down_removes_the_highest_ordinal_first_one_at_a_time():
    full = make_sts(3)
    pods = [running(statefulsets.new_pod(full, i)) for i in range(3)]
    sts = make_sts(1)
    assert statefulsets.plan(sts, pods, T0).delete == ("db-2",)
    # db-2 terminating: OrderedReady waits for it to be gone before db-1.
    pods[2]["metadata"]["deletionTimestamp"] = STAMP
    assert statefulsets.plan(sts, pods, T0).delete == ()
    assert statefulsets.plan(sts, pods[:2], T0).delete == ("db-1",)
    # Parallel deletes every surplus pod at once.
    assert statefulsets.plan(make_sts(1, "Parallel"), pods[:2] + [running(statefulsets.new_pod(full, 2))],
                             T0).delete == ("db-2", "db-1")


def test_scale_down_waits_while_a_remaining_pod_is_unhealthy():
    full = make_sts(3)
    pods = [running(statefulsets.new_pod(full, i), ready=(i != 0)) for i in range(3)]
    assert statefulsets.plan(make_sts(1), pods, T0).delete == ()


def test_a_deleted_pod_comes_back_with_its_name_and_a_failed_one_is_deleted_first():
    sts = make_sts(3)
    pods = [running(statefulsets.new_pod(sts, i)) for i in range(3)]
    assert names(statefulsets.plan(sts, [pods[0], pods[2]], T0).create) == ["db-1"]
    terminating = {**pods[1], "metadata": {**pods[1]["metadata"], "deletionTimestamp": STAMP}}
    assert statefulsets.plan(sts, [pods[0], terminating, pods[2]], T0).create == ()  # the name is not free yet
    failed = running(statefulsets.new_pod(sts, 1), phase="Failed")
    assert statefulsets.plan(sts, [pods[0], failed, pods[2]], T0).delete == ("db-1",)


def test_rolling_update_replaces_from_the_highest_ordinal_down_to_the_partition():
    old = make_sts(3)
    pods = [running(statefulsets.new_pod(old, i)) for i in range(3)]
    new = make_sts(3, image="agnhost:2")
    new["status"] = statefulsets.plan(old, pods, T0).status  # what the controller reported before the change
    assert statefulsets.plan(new, pods, T0).delete == ("db-2",)
    pods[2] = running(statefulsets.new_pod(new, 2))
    plan = statefulsets.plan(new, pods, T0)
    assert plan.delete == ("db-1",)
    assert plan.status["updatedReplicas"] == 1 and plan.status["currentRevision"] == statefulsets.update_revision(old)
    partitioned = make_sts(3, image="agnhost:2", updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}})
    assert statefulsets.plan(partitioned, pods, T0).delete == ()


def test_pods_of_other_names_are_not_members():
    sts = make_sts(1)
    stranger = running({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "db-x", "namespace": "default", "labels": {"app": "db"}}, "spec": {}})
    plan = statefulsets.plan(sts, [stranger], T0)
    assert plan.adopt == () and names(plan.create) == ["db-0"]


# --- DaemonSet ------------------------------------------------------------------------------------------


def make_ds(node_selector=None, tolerations=None, image="agnhost"):
    pod_spec = {"containers": [{"name": "c", "image": image}]}
    if node_selector:
        pod_spec["nodeSelector"] = node_selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet",
          "metadata": {"name": "agent", "namespace": "default", "uid": "uid-agent", "generation": 1},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec}}}
    default_daemon_set(ds)
    return ds


def make_node(name, labels=None, taints=None, unschedulable=False):
    spec = {"taints": taints} if taints else {}
    if unschedulable:
        spec["unschedulable"] = True
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def daemon_pod(ds, node, name, **kw):
    pod = daemonsets.new_pod(ds, node)
    pod["metadata"]["name"] = name
    return running(pod, node=node, **kw)


def test_one_pod_bound_to_each_node_with_the_daemon_tolerations():
    ds = make_ds()
    plan = daemonsets.plan(ds, [make_node("node-1"), make_node("node-2")], [], T0)
    assert [p["spec"]["nodeName"] for p in plan.create] == ["node-1", "node-2"]
    pod = plan.create[0]
    assert pod["metadata"]["generateName"] == "agent-" and ownerrefs.is_controlled_by(pod, "uid-agent")
    keys = {(t["key"], t["effect"]) for t in pod["spec"]["tolerations"]}
    assert ("node.kubernetes.io/not-ready", "NoExecute") in keys and ("node.kubernetes.io/unreachable", "NoExecute") in keys
    assert plan.status == {"currentNumberScheduled": 0, "desiredNumberScheduled": 2, "numberMisscheduled": 0,
                           "numberReady": 0, "numberUnavailable": 2, "observedGeneration": 1}


def test_node_selector_and_taints_decide_where_pods_run():
    ds = make_ds(node_selector={"role": "edge"})
    nodes = [make_node("a", {"role": "edge"}), make_node("b"),
             make_node("c", {"role": "edge"}, taints=[{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]),
             make_node("d", {"role": "edge"}, taints=[{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
             make_node("e", {"role": "edge"}, unschedulable=True)]
    assert [p["spec"]["nodeName"] for p in daemonsets.plan(ds, nodes, [], T0).create] == ["a", "d", "e"]
    tolerant = make_ds(node_selector={"role": "edge"}, tolerations=[{"key": "dedicated", "operator": "Exists"}])
    assert [p["spec"]["nodeName"] for p in daemonsets.plan(tolerant, nodes, [], T0).create] == ["a", "c", "d", "e"]


def test_untolerated_no_schedule_lets_a_pod_stay_but_no_execute_removes_it():
    ds = make_ds()
    pods = [daemon_pod(ds, "a", "agent-a"), daemon_pod(ds, "b", "agent-b")]
    nodes = [make_node("a", taints=[{"key": "x", "effect": "NoSchedule"}]),
             make_node("b", taints=[{"key": "x", "effect": "NoExecute"}])]
    plan = daemonsets.plan(ds, nodes, pods, T0)
    assert plan.create == () and plan.delete == ("agent-b",)
    assert plan.status["numberMisscheduled"] == 2 and plan.status["desiredNumberScheduled"] == 0


def test_pods_follow_nodes_joining_and_leaving_and_extras_go():
    ds = make_ds()
    pods = [daemon_pod(ds, "a", "agent-a"), daemon_pod(ds, "a", "agent-a2"), daemon_pod(ds, "gone", "agent-gone")]
    pods[1]["metadata"]["creationTimestamp"] = "2026-01-01T00:01:00Z"
    plan = daemonsets.plan(ds, [make_node("a"), make_node("new")], pods, T0)
    assert [p["spec"]["nodeName"] for p in plan.create] == ["new"]
    assert set(plan.delete) == {"agent-a2", "agent-gone"}
    assert plan.status["currentNumberScheduled"] == 1 and plan.status["numberReady"] == 1


def test_only_node_changes_that_move_daemon_pods_matter():
    node = make_node("a", {"zone": "1"})
    assert daemonsets.placement_changed(None, node) and daemonsets.placement_changed(node, None)
    heartbeat = {**node, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    assert not daemonsets.placement_changed(node, heartbeat)
    assert daemonsets.placement_changed(node, make_node("a", {"zone": "2"}))
    assert daemonsets.placement_changed(node, make_node("a", {"zone": "1"}, unschedulable=True))


def test_failed_pod_is_deleted_and_made_again_later():
    ds = make_ds()
    failed = daemon_pod(ds, "a", "agent-a", phase="Failed", ready=False)
    plan = daemonsets.plan(ds, [make_node("a")], [failed], T0)
    assert plan.delete == ("agent-a",) and plan.create == ()
    assert [p["spec"]["nodeName"] for p in daemonsets.plan(ds, [make_node("a")], [], T0).create] == ["a"]


def test_rolling_update_replaces_at_most_max_unavailable_ready_pods():
    old = make_ds()
    pods = [daemon_pod(old, n, f"agent-{n}") for n in "abc"]
    new = make_ds(image="agnhost:2")
    nodes = [make_node(n) for n in "abc"]
    assert len(daemonsets.plan(new, nodes, pods, T0).delete) == 1
    pods[0] = daemon_pod(new, "a", "agent-a2", ready=False)  # the new pod is not ready yet: wait
    assert daemonsets.plan(new, nodes, pods, T0).delete == ()
    pods[0] = daemon_pod(new, "a", "agent-a2")
    plan = daemonsets.plan(new, nodes, pods, T0)
    assert len(plan.delete) == 1 and plan.status["updatedNumberScheduled"] == 1


def test_status_of_a_set_scaled_to_zero_keeps_its_required_counts():
    sts = make_sts(0)
    revision = statefulsets.update_revision(sts)
    assert statefulsets.plan(sts, [], T0).status == {
        "observedGeneration": 1, "replicas": 0, "availableReplicas": 0, "currentRevision": revision,
        "updateRevision": revision, "collisionCount": 0}
