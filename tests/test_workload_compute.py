"""ReplicaSet and Deployment decisions, pure: what one pass of each controller does, and whole rollouts
played pass by pass in memory (a `World` that applies the controllers' writes and plays the kubelet)."""

from __future__ import annotations

import copy
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from podnet.apiserver.controllers import deployments, ownerrefs, replicasets
from podnet.apiserver.defaults import default_deployment

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_pod(name, labels=None, node=None, phase="Pending", ready=None, created=T0, owner=None, **extra):
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "labels": labels or {},
                        "creationTimestamp": stamp(created), **extra},
           "spec": {"containers": [{"name": "c", "image": "agnhost"}]}, "status": {"phase": phase}}
    if node:
        pod["spec"]["nodeName"] = node
    if ready is not None:
        pod["status"]["conditions"] = [{"type": "Ready", "status": "True" if ready else "False",
                                        "lastTransitionTime": stamp(created)}]
    if owner is not None:
        pod["metadata"]["ownerReferences"] = [ownerrefs.new_controller_ref(owner)]
    return pod


def make_replicaset(name="web-abc", replicas=3, labels=None, selector=None, **spec):
    labels = labels or {"app": "web", "pod-template-hash": "abc"}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": selector or labels},
                     "template": {"metadata": {"labels": labels, "annotations": {"a": "b"}},
                                  "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}, **spec}}


# --- ReplicaSets --------------------------------------------------------------------------------------


def test_replicaset_creates_pods_from_its_template_named_by_the_server():
    rs = make_replicaset()
    plan = replicasets.plan(rs, [], T0)
    assert len(plan.create) == 3 and plan.delete == () and plan.adopt == ()
    pod = plan.create[0]
    assert pod["metadata"] == {
        "generateName": "web-abc-", "namespace": "default",
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-abc", "uid": "uid-web-abc",
                             "controller": True, "blockOwnerDeletion": True}],
        "labels": {"app": "web", "pod-template-hash": "abc"}, "annotations": {"a": "b"}}
    assert pod["spec"] == rs["spec"]["template"]["spec"]
    assert plan.status == {"replicas": 0, "observedGeneration": 2}


def test_replicaset_replaces_lost_pods_ignores_others_and_does_not_count_finished_or_terminating_ones():
    rs = make_replicaset()
    labels = rs["spec"]["template"]["metadata"]["labels"]
    mine = [make_pod(f"web-abc-{i}", labels, "n1", "Running", True, owner=rs) for i in range(2)]
    failed = make_pod("web-abc-f", labels, "n1", "Failed", owner=rs)
    leaving = make_pod("web-abc-t", labels, "n1", "Running", True, owner=rs, deletionTimestamp=stamp(T0))
    stranger = make_pod("stranger", {"app": "web"}, "n1", "Running", True)  # no pod-template-hash: not picked
    theirs = make_pod("theirs", labels, "n1", "Running", True, owner=make_replicaset("other"))
    plan = replicasets.plan(rs, [*mine, failed, leaving, stranger, theirs], T0)
    assert len(plan.create) == 1 and plan.adopt == () and plan.release == ()
    assert plan.status == {"replicas": 2, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 2,
                           "observedGeneration": 2}


def test_replicaset_adopts_matching_orphans_and_releases_pods_its_selector_no_longer_picks():
    rs = make_replicaset(replicas=2)
    labels = rs["spec"]["template"]["metadata"]["labels"]
    orphan = make_pod("orphan", labels, "n1", "Running", True)
    relabelled = make_pod("relabelled", {"app": "other"}, "n1", "Running", True, owner=rs)
    leaving_orphan = make_pod("leaving", labels, deletionTimestamp=stamp(T0))
    plan = replicasets.plan(rs, [orphan, relabelled, leaving_orphan], T0)
    assert [p["metadata"]["name"] for p in plan.adopt] == ["orphan"]
    assert ownerrefs.is_controlled_by(plan.adopt[0], "uid-web-abc")
    assert [p["metadata"]["name"] for p in plan.release] == ["relabelled"]
    assert "ownerReferences" not in plan.release[0]["metadata"]
    assert len(plan.create) == 1  # the adopted orphan counts
    # A ReplicaSet being deleted adopts nothing, releases nothing and makes no pods.
    rs["metadata"]["deletionTimestamp"] = stamp(T0)
    plan = replicasets.plan(rs, [orphan, relabelled], T0)
    assert plan.adopt == plan.release == plan.create == ()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"node": None}, {"node": "n1"}),  # unscheduled before scheduled
        ({"phase": "Pending"}, {"phase": "Running"}),
        ({"phase": "Unknown"}, {"phase": "Running"}),
        ({"ready": False}, {"ready": True}),
        ({"cost": "-5"}, {"cost": "10"}),
        ({"doubled": True}, {}),  # more pods of the workload on its node
        ({"ready_at": T0 + timedelta(minutes=5)}, {"ready_at": T0}),  # ready for a shorter time
        ({"restarts": 4}, {"restarts": 0}),
        ({"created": T0 + timedelta(hours=1)}, {"created": T0}),  # newer first
    ],
)
def test_scale_down_deletes_the_least_useful_pod_first(first, second):
    rs = make_replicaset(replicas=1)
    labels = rs["spec"]["template"]["metadata"]["labels"]

    def pod(name, node="n1", phase="Running", ready=True, cost=None, doubled=False, ready_at=T0, restarts=0,
            created=T0):
        p = make_pod(name, labels, node, phase, ready, created, owner=rs,
                     **({"annotations": {replicasets.DELETION_COST_ANNOTATION: cost}} if cost else {}))
        if doubled:
            p["spec"]["nodeName"] = "crowded"
        if ready:
            p["status"]["conditions"][0]["lastTransitionTime"] = stamp(ready_at)
        p["status"]["containerStatuses"] = [{"name": "c", "restartCount": restarts}]
        return p

    neighbour = make_pod("neighbour", {"app": "web", "pod-template-hash": "old"}, "crowded", "Running", True)
    a, b = pod("a", **first), pod("b", **second)
    for pods in ([a, b], [b, a]):
        assert [p["metadata"]["name"] for p in replicasets.deletion_order(pods, [neighbour])] == ["a", "b"]
        assert replicasets.plan(rs, pods, T0, [neighbour]).delete == ("a",)


def test_replicaset_status_counts_fully_labelled_ready_and_available_after_min_ready_seconds():
    rs = make_replicaset(replicas=3, labels={"app": "web", "tier": "front"}, selector={"app": "web"},
                         minReadySeconds=10)
    full = rs["spec"]["template"]["metadata"]["labels"]
    pods = [make_pod("old-ready", full, "n1", "Running", True, created=T0, owner=rs),
            make_pod("new-ready", full, "n1", "Running", True, created=T0 + timedelta(seconds=5), owner=rs),
            make_pod("partly-labelled", {"app": "web"}, "n1", "Running", False, owner=rs)]
    now = T0 + timedelta(seconds=12)
    assert replicasets.plan(rs, pods, now).status == {
        "replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 1, "observedGeneration": 2}
    assert replicasets.next_availability(rs, pods, now) == pytest.approx(3.5)


# --- Deployments: one pass ----------------------------------------------------------------------------


def make_deployment(replicas=3, image="agnhost", strategy=None, **spec):
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default", "uid": "uid-d", "generation": 4,
                      "creationTimestamp": stamp(T0)},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "c", "image": image}]}}, **spec}}
    if strategy:
        d["spec"]["strategy"] = strategy
    default_deployment(d)
    return d


def test_template_hash_is_stable_safe_and_salted_by_the_collision_count():
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}
    value = deployments.template_hash(template)
    assert value == "65b5c7cff4"  # the printed form must not drift: pods of an unchanged template keep their hash
    assert value == deployments.template_hash(dict(reversed(list(template.items()))))
    assert set(value) <= set(deployments.SAFE_ALPHABET)
    assert deployments.template_hash(make_deployment(image="nginx")["spec"]["template"]) != \
        deployments.template_hash(make_deployment()["spec"]["template"])
    assert len({value, deployments.template_hash(template, 0), deployments.template_hash(template, 1)}) == 3


def test_a_new_deployment_creates_its_first_replicaset():
    d = make_deployment(annotations=None)
    d["metadata"]["annotations"] = {"team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}"}
    actions = deployments.sync(d, [], [], T0)
    rs = actions.create
    hash_value = deployments.template_hash(d["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{hash_value}"
    assert rs["metadata"]["labels"] == {"app": "web", "pod-template-hash": hash_value}
    assert rs["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                                  "uid": "uid-d", "controller": True, "blockOwnerDeletion": True}]
    assert rs["metadata"]["annotations"] == {"team": "a", deployments.REVISION: "1",
                                             deployments.DESIRED_REPLICAS: "3", deployments.MAX_REPLICAS: "4"}
    assert rs["spec"]["replicas"] == 3
    assert rs["spec"]["selector"] == {"matchLabels": {"app": "web", "pod-template-hash": hash_value}}
    assert rs["spec"]["template"]["metadata"]["labels"] == rs["metadata"]["labels"]
    assert rs["spec"]["template"]["spec"] == d["spec"]["template"]["spec"]
    assert actions.annotations == {deployments.REVISION: "1"}
    status = actions.status
    assert {k: v for k, v in status.items() if k != "conditions"} == {"observedGeneration": 4, "unavailableReplicas": 3}
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in status["conditions"]] == [
        ("Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "web-{hash_value}"'),
        ("Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.")]


def test_a_hash_collision_raises_the_collision_count_and_creates_nothing():
    d = make_deployment()
    squatter = make_replicaset(f"web-{deployments.template_hash(d['spec']['template'])}", labels={"app": "other"})
    actions = deployments.sync(d, [squatter], [], T0)
    assert actions.create is None and actions.status["collisionCount"] == 1
    d["status"] = actions.status
    renamed = deployments.sync(d, [squatter], [], T0).create
    assert renamed["metadata"]["name"] == f"web-{deployments.template_hash(d['spec']['template'], 1)}"


def test_pods_an_older_podnet_let_the_deployment_own_are_handed_to_the_replicaset_or_replaced():
    d = make_deployment()
    hash_value = deployments.template_hash(d["spec"]["template"])
    current = make_pod("web-x-1", {"app": "web", "pod-template-hash": hash_value}, "n1", "Running", True, owner=d)
    stale = make_pod("web-y-1", {"app": "web", "pod-template-hash": "older"}, "n1", "Running", True, owner=d)
    actions = deployments.sync(d, [], [current, stale], T0)
    assert [p["metadata"]["name"] for p in actions.release_pods] == ["web-x-1"]
    assert "ownerReferences" not in actions.release_pods[0]["metadata"]
    assert actions.delete_pods == ["web-y-1"]
    assert ownerrefs.selector_of(actions.create).matches(actions.release_pods[0]["metadata"]["labels"])


# --- Deployments: whole rollouts in memory ------------------------------------------------------------


class World:
    """The API as the controllers see it: applies their writes and plays the scheduler and kubelet."""

    def __init__(self, deployment: dict):
        self.deployment = deployment
        self.replicasets: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.clock = T0
        self.serial = itertools.count()
        self.kubelet_ready = True

    def tick(self) -> datetime:
        self.clock += timedelta(seconds=1)
        return self.clock

    def deployment_pass(self) -> deployments.Actions:
        d = self.deployment
        actions = deployments.sync(d, copy.deepcopy(list(self.replicasets.values())), list(self.pods.values()),
                                   self.tick())
        for rs in [*actions.adopt, *actions.release, *actions.update]:
            before = self.replicasets[rs["metadata"]["name"]]
            if rs["spec"] != before["spec"]:
                rs["metadata"]["generation"] += 1
            self.replicasets[rs["metadata"]["name"]] = rs
        if actions.create is not None:
            rs = copy.deepcopy(actions.create)
            rs["metadata"].update(uid=f"uid-{rs['metadata']['name']}", generation=1,
                                  creationTimestamp=stamp(self.tick()))
            self.replicasets[rs["metadata"]["name"]] = rs
        for name in actions.delete:
            del self.replicasets[name]
        if actions.annotations:
            d["metadata"].setdefault("annotations", {}).update(actions.annotations)
        if actions.status is not None:
            d["status"] = actions.status
        return actions

    def replicaset_pass(self) -> None:
        for rs in self.replicasets.values():
            plan = replicasets.plan(rs, self.pods.values(), self.clock)
            for pod in plan.create:
                name = f"{pod['metadata']['generateName']}{next(self.serial):05d}"
                pod = copy.deepcopy(pod)
                pod["metadata"].update(name=name, uid=f"uid-{name}", creationTimestamp=stamp(self.tick()))
                pod.pop("status", None)
                self.pods[name] = {**pod, "status": {"phase": "Pending"}}
            for name in plan.delete:
                del self.pods[name]
            rs["status"] = replicasets.plan(rs, self.pods.values(), self.clock).status

    def kubelet_pass(self) -> None:
        for pod in self.pods.values():
            pod["spec"]["nodeName"] = "n1"
            if self.kubelet_ready:
                pod["status"] = {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": stamp(self.clock)}]}
        for rs in self.replicasets.values():
            rs["status"] = replicasets.plan(rs, self.pods.values(), self.clock).status

    def step(self) -> None:
        self.deployment_pass()
        self.replicaset_pass()
        self.kubelet_pass()

    def sizes(self) -> dict[str, int]:
        return {name: rs["spec"]["replicas"] for name, rs in sorted(self.replicasets.items())}

    def new_name(self) -> str:
        return f"web-{deployments.template_hash(self.deployment['spec']['template'], (self.deployment.get('status') or {}).get('collisionCount'))}"

    def settle(self, passes: int = 30) -> None:
        for _ in range(passes):
            self.step()
        assert self.complete(), self.deployment["status"]

    def complete(self) -> bool:
        status = self.deployment["status"]
        progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
        return status.get("updatedReplicas") == status.get("replicas") == status.get("availableReplicas") == \
            self.deployment["spec"]["replicas"] and progressing["reason"] == "NewReplicaSetAvailable"

    def change_template(self, image: str) -> None:
        self.deployment["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.deployment["metadata"]["generation"] += 1


def test_a_deployment_settles_with_kubernetes_status_and_conditions():
    world = World(make_deployment(replicas=3))
    world.settle()
    status = world.deployment["status"]
    rs_name = world.new_name()
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 4, "replicas": 3, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3}
    assert {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]} == {
        "Available": ("True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
        "Progressing": ("True", "NewReplicaSetAvailable", f'ReplicaSet "{rs_name}" has successfully progressed.')}
    assert world.sizes() == {rs_name: 3}
    assert all(p["metadata"]["name"].startswith(f"{rs_name}-") for p in world.pods.values())
    # Nothing changes on a resync: no write, and the conditions keep their times.
    actions = world.deployment_pass()
    assert actions.status is None and actions.update == [] and actions.create is None and actions.annotations is None


def rollout_under_way() -> tuple[World, str]:
    """Four replicas settled, then a new template rolling out with one surge pod and one unavailable; after
    the first pass the new ReplicaSet is at 1 (the surge pod), the old one down by the one unavailable."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    world = World(make_deployment(replicas=4, strategy=strategy))
    world.settle()
    old_name = world.new_name()
    world.change_template("nginx")
    world.deployment_pass()
    assert world.sizes() == {world.new_name(): 1, old_name: 3}
    return world, old_name


def test_rolling_update_keeps_within_surge_and_unavailability():
    world, old_name = rollout_under_way()
    new_name = world.new_name()
    assert world.deployment["metadata"]["annotations"][deployments.REVISION] == "2"
    assert world.replicasets[old_name]["metadata"]["annotations"][deployments.REVISION] == "1"
    progressing = next(c for c in world.deployment["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetCreated"

    seen = []
    for _ in range(40):
        world.replicaset_pass()
        pods = len(world.pods)
        world.kubelet_pass()
        available = sum(1 for p in world.pods.values() if replicasets.is_available(p, 0, world.clock))
        seen.append((pods, available))
        world.deployment_pass()
    assert max(p for p, _ in seen) <= 5  # replicas + maxSurge
    assert min(a for _, a in seen) >= 3  # replicas - maxUnavailable
    assert world.complete()
    assert world.sizes() == {new_name: 4, old_name: 0}
    progressing = next(c for c in world.deployment["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["message"] == f'ReplicaSet "{new_name}" has successfully progressed.'


def test_rolling_update_waits_for_new_pods_to_become_available():
    world = World(make_deployment(replicas=4))  # 25%: one surge, one unavailable
    world.settle()
    old_name = world.new_name()
    world.change_template("nginx")
    world.kubelet_ready = False
    for _ in range(10):
        world.step()
    # The new pods never become ready: one old pod may go, no more.
    assert world.sizes() == {world.new_name(): 2, old_name: 3}
    assert world.deployment["status"]["availableReplicas"] == 3
    assert next(c for c in world.deployment["status"]["conditions"] if c["type"] == "Available")["status"] == "True"


def test_recreate_removes_every_old_pod_before_making_new_ones():
    world = World(make_deployment(replicas=3, strategy={"type": "Recreate"}))
    world.settle()
    old_name = world.new_name()
    world.change_template("nginx")
    world.deployment_pass()
    assert world.sizes() == {old_name: 0}
    world.deployment_pass()  # old pods still there: no new ReplicaSet yet
    assert world.sizes() == {old_name: 0}
    world.replicaset_pass()
    assert world.pods == {}
    world.deployment_pass()
    assert world.sizes() == {world.new_name(): 3, old_name: 0}
    world.settle()


def test_scaling_mid_rollout_is_proportional():
    world, old_name = rollout_under_way()
    world.deployment["spec"]["replicas"] = 8
    world.deployment["metadata"]["generation"] += 1
    world.deployment_pass()
    # 8 + 1 surge = 9 pods: 5 to add; old gets round(3*9/5)-3 = 2, new round(1*9/5)-1 = 1, the 2 left to the
    # largest (old).
    assert world.sizes() == {world.new_name(): 2, old_name: 7}
    for rs in world.replicasets.values():
        assert rs["metadata"]["annotations"][deployments.DESIRED_REPLICAS] == "8"
        assert rs["metadata"]["annotations"][deployments.MAX_REPLICAS] == "9"
    world.settle(60)
    assert world.sizes() == {world.new_name(): 8, old_name: 0}


def test_revisions_number_rollouts_and_a_rollback_takes_the_next_one():
    world = World(make_deployment(replicas=2))
    world.settle()
    first = world.new_name()
    world.deployment["spec"]["template"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/restartedAt": "now"}
    world.deployment["metadata"]["generation"] += 1
    world.settle()
    second = world.new_name()
    del world.deployment["spec"]["template"]["metadata"]["annotations"]  # what `kubectl rollout undo` writes
    world.deployment["metadata"]["generation"] += 1
    world.settle()
    assert world.new_name() == first
    revisions = {name: rs["metadata"]["annotations"].get(deployments.REVISION) for name, rs in world.replicasets.items()}
    assert revisions == {first: "3", second: "2"}
    assert world.replicasets[first]["metadata"]["annotations"][deployments.REVISION_HISTORY] == "1"
    assert world.deployment["metadata"]["annotations"][deployments.REVISION] == "3"
    assert world.sizes() == {first: 2, second: 0}


def test_revision_history_limit_removes_the_oldest_empty_replicasets():
    world = World(make_deployment(replicas=1, revisionHistoryLimit=2))
    names = []
    for image in ("a", "b", "c", "d", "e"):
        world.change_template(image)
        world.settle()
        names.append(world.new_name())
    world.step()  # the cleanup follows a complete rollout
    assert set(world.replicasets) == set(names[-3:])
    assert [world.replicasets[n]["metadata"]["annotations"][deployments.REVISION] for n in names[-3:]] == ["3", "4", "5"]


@pytest.mark.parametrize(
    ("strategy", "replicas", "available", "expected"),
    [
        (None, 4, 3, "True"),  # 25% of 4 may be unavailable
        (None, 4, 2, "False"),
        (None, 3, 3, "True"),
        (None, 3, 2, "False"),  # 25% of 3 rounds down to 0
        ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}, 3, 1, "True"),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "50%"}}, 4, 2, "True"),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}, 4, 3, "True"),  # never both 0
        ({"type": "Recreate"}, 4, 3, "False"),
    ],
)
def test_available_condition(strategy, replicas, available, expected):
    d = make_deployment(replicas=replicas, strategy=strategy)
    rs = deployments.sync(d, [], [], T0).create
    rs["metadata"].update(uid="uid-rs", creationTimestamp=stamp(T0))
    rs["spec"]["replicas"] = replicas
    rs["status"] = {"replicas": replicas, "readyReplicas": available, "availableReplicas": available}
    status = deployments.sync(d, [rs], [], T0).status
    assert {c["type"]: c["status"] for c in status["conditions"]}["Available"] == expected
    assert status.get("unavailableReplicas", 0) == replicas - available


def test_progress_deadline_exceeded():
    world = World(make_deployment(replicas=2, progressDeadlineSeconds=30))
    world.kubelet_ready = False
    for _ in range(3):  # pods made: progress, then none
        world.step()
    progressing = next(c for c in world.deployment["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "ReplicaSetUpdated"
    last_progress = replicasets.parse_time(progressing["lastUpdateTime"])
    assert deployments.stuck_check_in(world.deployment, last_progress + timedelta(seconds=10)) == 21.0
    world.clock = last_progress + timedelta(seconds=25)
    world.deployment_pass()
    assert next(c for c in world.deployment["status"]["conditions"] if c["type"] == "Progressing") == progressing
    world.clock = last_progress + timedelta(seconds=30)
    world.deployment_pass()
    progressing = next(c for c in world.deployment["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"], progressing["message"]) == (
        "False", "ProgressDeadlineExceeded", f'ReplicaSet "{world.new_name()}" has timed out progressing.')
    assert deployments.stuck_check_in(world.deployment, world.clock) is None


def test_a_paused_deployment_scales_but_does_not_roll_until_resumed():
    world = World(make_deployment(replicas=2))
    world.settle()
    name = world.new_name()
    world.deployment["spec"]["paused"] = True
    world.change_template("nginx")
    world.deployment["spec"]["replicas"] = 3
    for _ in range(5):
        world.step()
    assert world.sizes() == {name: 3}
    progressing = next(c for c in world.deployment["status"]["conditions"] if c["type"] == "Progressing")
    assert (progressing["status"], progressing["reason"], progressing["message"]) == (
        "Unknown", "DeploymentPaused", "Deployment is paused")
    world.deployment["spec"]["paused"] = False
    world.settle()
    assert world.sizes() == {world.new_name(): 3, name: 0}
