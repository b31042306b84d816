"""Object lifecycle decisions without a server: what a DELETE does (apiserver/deletion.py), what the
garbage collector does (apiserver/controllers/garbagecollection.py), how repeated events aggregate
(podnet/events.py) and which events have expired (apiserver/eventttl.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from podnet.apiserver import deletion, eventttl
from podnet.apiserver.controllers import garbagecollection as gc
from podnet.apiserver.deletion import DeleteOptions, parse_options, plan
from podnet.apiserver.status import ApiError
from podnet.apiserver.storage.base import KeyValue

from podnet.api.events import NORMAL, Create, EventCorrelator, Patch, object_reference
from podnet.api.kinds import lookup

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
POD, DEPLOY, EVENT, NETPOL = lookup("pods"), lookup("deployments"), lookup("events"), lookup("netpol")


def pod(name: str = "p", node: str | None = "node-1", **meta) -> dict:
    spec = {"terminationGracePeriodSeconds": 30, "containers": [{"name": "c"}]}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec, "status": {"phase": "Running"},
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", **meta}}


def deploy(name: str = "web", **meta) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {},
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 1, **meta}}


# --- DELETE -----------------------------------------------------------------------------------------


def test_a_bound_pod_lingers_for_its_grace_period():
    decided = plan(POD, pod(), DeleteOptions(), NOW)
    assert decided.action == "write"
    meta = decided.obj["metadata"]
    assert (meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"]) == ("2026-01-02T03:04:35Z", 30)


@pytest.mark.parametrize("obj, options", [
    (pod(node=None), DeleteOptions()),  # bound to no node: nothing to stop
    (pod(), DeleteOptions(grace_period=0)),  # --grace-period=0 --force
    ({**pod(), "status": {"phase": "Succeeded"}}, DeleteOptions()),
])
def test_pods_removed_at_once(obj, options):
    assert plan(POD, obj, options, NOW).action == "remove"


def test_a_pending_pod_deletion_may_only_be_shortened():
    terminating = pod(deletionTimestamp="2026-01-02T03:04:35Z", deletionGracePeriodSeconds=30)
    assert plan(POD, terminating, DeleteOptions(), NOW).action == "pending"
    assert plan(POD, terminating, DeleteOptions(grace_period=60), NOW).action == "pending"
    shorter = plan(POD, terminating, DeleteOptions(grace_period=10), NOW)
    assert shorter.action == "write"
    assert shorter.obj["metadata"]["deletionTimestamp"] == "2026-01-02T03:04:15Z"
    assert plan(POD, terminating, DeleteOptions(grace_period=0), NOW).action == "remove"


@pytest.mark.parametrize("policy, finalizers", [
    ("Foreground", ["foregroundDeletion"]),
    ("Orphan", ["orphan"]),
    ("Background", None),
    (None, None),
])
def test_propagation_policy_becomes_finalizers(policy, finalizers):
    decided = plan(DEPLOY, deploy(), DeleteOptions(propagation_policy=policy), NOW)
    if finalizers is None:
        assert decided.action == "remove"
        return
    meta = decided.obj["metadata"]
    assert decided.action == "write" and meta["finalizers"] == finalizers
    assert (meta["deletionTimestamp"], meta["deletionGracePeriodSeconds"], meta["generation"]) == (
        "2026-01-02T03:04:05Z", 0, 2)


def test_an_explicit_policy_replaces_the_collectors_finalizer_and_keeps_others():
    obj = deploy(finalizers=["example.com/keep", "orphan"])
    decided = plan(DEPLOY, obj, DeleteOptions(propagation_policy="Background"), NOW)
    assert decided.obj["metadata"]["finalizers"] == ["example.com/keep"]
    # Without a policy, the object's own finalizer decides: still orphaning.
    assert plan(DEPLOY, obj, DeleteOptions(), NOW).obj["metadata"]["finalizers"] == ["example.com/keep", "orphan"]


def test_events_take_no_finalizers():
    event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default", "uid": "u"}}
    assert plan(EVENT, event, DeleteOptions(propagation_policy="Orphan"), NOW).action == "remove"


def test_the_last_finalizer_removed_by_an_update_deletes():
    old = deploy(finalizers=["example.com/keep"], deletionTimestamp="x", deletionGracePeriodSeconds=0)
    new = deploy(deletionTimestamp="x", deletionGracePeriodSeconds=0)
    assert deletion.removed_by_update(old, new)
    assert not deletion.removed_by_update(old, old)
    (added,) = deletion.added_finalizer_causes(old, deploy(finalizers=["example.com/keep", "b", "c"]))
    assert added.message == ('Forbidden: no new finalizers can be added if the object is being deleted, found new '
                             'finalizers []string{"b", "c"}')
    assert deletion.added_finalizer_causes(deploy(), deploy(finalizers=["b"])) == []


def test_orphan_and_foreground_finalizers_contradict_each_other():
    (cause,) = deletion.finalizer_causes(deploy(finalizers=["orphan", "foregroundDeletion"]))
    assert (cause.field, cause.message) == ("metadata.finalizers", 'Invalid value: []string{"orphan", '
                                            '"foregroundDeletion"}: finalizer orphan and foregroundDeletion cannot '
                                            'be both set')
    assert deletion.finalizer_causes(deploy(finalizers=["orphan"])) == []


def test_answers_when_gone():
    assert deletion.gone_answer(POD, pod()) == pod()
    assert deletion.gone_answer(NETPOL, {"metadata": {"name": "np", "uid": "u1"}}) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {"name": "np", "group": "networking.k8s.io", "kind": "networkpolicies", "uid": "u1"}}


def test_delete_options_from_body_or_query():
    body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground", "gracePeriodSeconds": 5,
            "preconditions": {"uid": "u"}, "dryRun": ["All"]}
    assert parse_options(body, {}) == DeleteOptions("Foreground", None, 5, {"uid": "u"}, True)
    assert parse_options(None, {"gracePeriodSeconds": "0", "propagationPolicy": "Orphan"}) == DeleteOptions(
        "Orphan", None, 0)
    with pytest.raises(ApiError) as bad:
        parse_options({"propagationPolicy": "Sideways"}, {})
    assert bad.value.code == 422
    assert bad.value.status["message"] == ('DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                           'value: "Sideways": supported values: "Foreground", "Background", '
                                           '"Orphan", "nil"')
    with pytest.raises(ApiError) as both:
        parse_options({"propagationPolicy": "Orphan", "orphanDependents": True}, {})
    assert "cannot be both set" in both.value.status["message"]
    with pytest.raises(ApiError):
        parse_options({"gracePeriodSeconds": "soon"}, {})


# --- the garbage collector --------------------------------------------------------------------------


def owned(name: str, owner: dict, *, block: bool = True, **meta) -> dict:
    reference = {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
                 "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": block}
    return pod(name, ownerReferences=[reference], resourceVersion="7", **meta)


def objects(*items: dict) -> list:
    return [(POD if o["kind"] == "Pod" else DEPLOY, o) for o in items]


def test_a_dependent_of_a_gone_owner_is_a_candidate_until_the_absence_is_confirmed():
    decisions = gc.decide(objects(owned("a", deploy())))
    assert decisions.actions == ()
    (candidate,) = decisions.candidates
    assert candidate.action == gc.Delete(gc.Ref(POD, "default", "a", "uid-a"), "Background")
    assert candidate.absent == (gc.Ref(DEPLOY, "default", "web", "uid-web"),)


def test_a_living_owner_keeps_its_dependent_and_a_gone_one_is_dropped_from_it():
    web, gone = deploy(), deploy("old")
    dependent = owned("a", web)
    dependent["metadata"]["ownerReferences"].append({**dependent["metadata"]["ownerReferences"][0],
                                                     "name": "old", "uid": "uid-old"})
    decisions = gc.decide(objects(web, dependent))
    (candidate,) = decisions.candidates
    assert candidate.action == gc.SetOwners(gc.Ref(POD, "default", "a", "uid-a"), "7",
                                            (dependent["metadata"]["ownerReferences"][0],))
    assert candidate.absent == (gc.Ref(DEPLOY, "default", "old", "uid-old"),)
    assert gc.decide(objects(web, owned("b", web), gone)).candidates == ()


def test_orphaning_drops_the_references_then_the_finalizer():
    owner = deploy(finalizers=["orphan"], deletionTimestamp="t", deletionGracePeriodSeconds=0, resourceVersion="3")
    decisions = gc.decide(objects(owner, owned("a", owner)))
    assert decisions.actions == (gc.SetOwners(gc.Ref(POD, "default", "a", "uid-a"), "7", None),)
    assert gc.decide(objects(owner, pod("a"))).actions == (
        gc.RemoveFinalizer(gc.Ref(DEPLOY, "default", "web", "uid-web"), "3", "orphan", ()),)


def test_foreground_deletes_dependents_and_waits_for_the_blocking_ones():
    owner = deploy(finalizers=["foregroundDeletion"], deletionTimestamp="t", deletionGracePeriodSeconds=0,
                   resourceVersion="3")
    blocking, free = owned("a", owner), owned("b", owner, block=False)
    decisions = gc.decide(objects(owner, blocking, free))
    assert set(decisions.actions) == {gc.Delete(gc.Ref(POD, "default", "a", "uid-a"), "Background"),
                                      gc.Delete(gc.Ref(POD, "default", "b", "uid-b"), "Background")}
    terminating = owned("a", owner, deletionTimestamp="t", deletionGracePeriodSeconds=30)
    assert gc.decide(objects(owner, terminating)).actions == ()  # still blocks
    assert gc.decide(objects(owner, free)).actions == (
        gc.RemoveFinalizer(gc.Ref(DEPLOY, "default", "web", "uid-web"), "3", "foregroundDeletion", ()),
        gc.Delete(gc.Ref(POD, "default", "b", "uid-b"), "Background"))


def test_an_owner_of_a_kind_podnet_does_not_serve_is_never_taken_for_gone():
    dependent = pod("a", ownerReferences=[{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w",
                                           "uid": "uid-w"}])
    assert gc.decide(objects(dependent)) == gc.Decisions()


# --- events -----------------------------------------------------------------------------------------


def test_repeated_events_aggregate_into_a_count():
    correlator = EventCorrelator("kubelet", "node-1")
    involved = object_reference(pod("web"), "spec.containers{c}")
    first = correlator.observe(involved, NORMAL, "Killing", "Stopping container c", NOW)
    assert isinstance(first, Create)
    event = first.event
    assert event["metadata"] == {"name": f"web.{int(NOW.timestamp() * 1e9):x}", "namespace": "default"}
    assert event["involvedObject"] == {"kind": "Pod", "namespace": "default", "name": "web", "uid": "uid-web",
                                       "apiVersion": "v1", "fieldPath": "spec.containers{c}"}
    assert (event["count"], event["firstTimestamp"], event["lastTimestamp"]) == (1, "2026-01-02T03:04:05Z",
                                                                                "2026-01-02T03:04:05Z")
    assert event["source"] == {"component": "kubelet", "host": "node-1"}
    assert (event["reportingComponent"], event["reportingInstance"]) == ("kubelet", "node-1")
    later = NOW + timedelta(seconds=7)
    assert correlator.observe(involved, NORMAL, "Killing", "Stopping container c", later) == Patch(
        "default", event["metadata"]["name"], {"count": 2, "lastTimestamp": "2026-01-02T03:04:12Z"})
    assert isinstance(correlator.observe(involved, NORMAL, "Killing", "another message", later), Create)
    correlator.forget("default", event["metadata"]["name"])
    assert isinstance(correlator.observe(involved, NORMAL, "Killing", "Stopping container c", later), Create)


def test_cluster_scoped_objects_get_their_events_in_default():
    node = {"kind": "Node", "apiVersion": "v1", "metadata": {"name": "node-1", "uid": "n1"}}
    created = EventCorrelator("node-controller").observe(object_reference(node), NORMAL, "RegisteredNode", "m", NOW)
    assert created.event["metadata"]["namespace"] == "default"
    assert "host" not in created.event["source"] and created.event["reportingInstance"] == ""


def test_events_expire_a_ttl_after_they_were_last_written():
    def stored(name: str, last: str) -> KeyValue:
        body = {"metadata": {"name": name, "creationTimestamp": "2026-01-02T00:00:00Z"}, "lastTimestamp": last}
        return KeyValue(f"/registry/events/default/{name}", json.dumps(body).encode(), 1, 1)

    events = [stored("old", "2026-01-02T01:59:00Z"), stored("recent", "2026-01-02T02:30:00Z"),
              KeyValue("/registry/events/default/junk", b"not json", 1, 1)]
    assert [kv.key for kv in eventttl.expired(events, datetime(2026, 1, 2, 3, 0, tzinfo=UTC), 3600)] == [
        "/registry/events/default/old"]


def test_pods_bound_to_a_missing_node_are_due_after_the_quarantine():
    pods = [pod("a", node="gone"), pod("b", node="node-1"), pod("c", node=None)]
    table, due = gc.orphaned_pods(pods, {"node-1"}, {}, 100.0, 40.0)
    assert (table, due) == ({"default/a": 100.0}, [])
    table, due = gc.orphaned_pods(pods, {"node-1"}, table, 139.0, 40.0)
    assert due == []
    table, due = gc.orphaned_pods(pods, {"node-1"}, table, 140.0, 40.0)
    assert due == [("default", "a", "uid-a", "gone")]
    # The node came back: forgotten.
    assert gc.orphaned_pods(pods, {"node-1", "gone"}, table, 141.0, 40.0) == ({}, [])
