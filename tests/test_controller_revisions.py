"""ControllerRevisions: the history of StatefulSets' and DaemonSets' templates. The controller's decisions
without a cluster, then `kubectl rollout history` and `kubectl rollout undo` on a two-node cluster."""

from __future__ import annotations

import json
import re

import pytest
import yaml
from podnet.apiserver.controllers import revisions
from support.kubectl import Kubectl
from support.local_cluster import AGNHOST, eventually

UID = "sts-uid"


def _set(image: str = "a:1", **spec: object) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "ns", "uid": UID, "annotations": {"note": "x"}},
            "spec": {"template": {"metadata": {"labels": {"app": "db"}},
                                  "spec": {"containers": [{"name": "db", "image": image}]}}, **spec}}


def _revision(name: str, number: int) -> dict:
    return {"metadata": {"name": name, "namespace": "ns",
                         "ownerReferences": [{"kind": "StatefulSet", "name": "db", "uid": UID, "controller": True}]},
            "revision": number, "data": {}}


def _pod(revision: str) -> dict:
    return {"metadata": {"name": "db-0", "namespace": "ns", "labels": {"controller-revision-hash": revision},
                         "ownerReferences": [{"kind": "StatefulSet", "name": "db", "uid": UID, "controller": True}]}}


def test_a_new_template_is_the_next_revision():
    plan = revisions.plan(_set(), "h2", [_revision("db-h1", 1)], [])
    assert plan.create == {
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": "db-h2", "namespace": "ns", "labels": {"app": "db", "controller-revision-hash": "h2"},
                     "annotations": {"note": "x"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": UID,
                                          "controller": True, "blockOwnerDeletion": True}]},
        "data": {"spec": {"template": {"metadata": {"labels": {"app": "db"}},
                                       "spec": {"containers": [{"name": "db", "image": "a:1"}]},
                                       "$patch": "replace"}}},
        "revision": 2}
    assert plan.renumber == () and plan.delete == ()


def test_a_template_returned_to_takes_the_next_number_again():
    plan = revisions.plan(_set(), "h1", [_revision("db-h1", 1), _revision("db-h2", 2)], [])
    assert plan.create is None
    assert [(r["metadata"]["name"], r["revision"]) for r in plan.renumber] == [("db-h1", 3)]
    assert revisions.plan(_set(), "h2", [_revision("db-h1", 1), _revision("db-h2", 2)], []) == revisions.Plan()


def test_history_beyond_the_limit_goes_oldest_first_but_not_what_runs():
    history = [_revision(f"db-h{i}", i) for i in range(1, 6)]
    plan = revisions.plan(_set(revisionHistoryLimit=1), "h5", history, [_pod("db-h1")], keep=("db-h4",))
    assert plan.delete == ("db-h2",)  # h1 runs in a pod, h4 is current, h5 is the template; one unused kept


def test_another_owners_revisions_are_not_counted():
    stranger = _revision("db-h1", 7)
    stranger["metadata"]["ownerReferences"][0]["uid"] = "other"
    assert revisions.plan(_set(), "h2", [stranger], []).create["revision"] == 1


NAMESPACE = "history"
MANIFEST = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": NAMESPACE},
     "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}},
    {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db", "namespace": NAMESPACE},
     "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
              "template": {"metadata": {"labels": {"app": "db"}},
                           "spec": {"containers": [{"name": "db", "image": AGNHOST}]}}}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "logs", "namespace": NAMESPACE},
     "spec": {"selector": {"matchLabels": {"app": "logs"}},
              "template": {"metadata": {"labels": {"app": "logs"}},
                           "spec": {"containers": [{"name": "agent", "image": AGNHOST}]}}}},
]
NEWER = "registry.k8s.io/e2e-test-images/agnhost:2.48"


@pytest.mark.slow
async def test_rollout_history_and_undo_of_statefulsets_and_daemonsets(local_cluster):
    cluster = await local_cluster("127.0.142", nodes=2)
    kubectl = Kubectl(cluster.home)

    async def run(*args: str, input: bytes | None = None) -> str:
        done = await kubectl.arun(*args, input=input, timeout=120)
        assert done.returncode == 0, done
        return done.stdout

    await run("apply", "-f", "-", input=yaml.safe_dump_all(MANIFEST).encode())
    for resource, container in (("sts/db", "db"), ("ds/logs", "agent")):
        await run("rollout", "status", "-n", NAMESPACE, resource, "--timeout=90s")
        await run("set", "image", "-n", NAMESPACE, resource, f"{container}={NEWER}")
        await run("rollout", "status", "-n", NAMESPACE, resource, "--timeout=90s")
        history = await run("rollout", "history", "-n", NAMESPACE, resource)
        kind = "statefulset.apps/db" if resource == "sts/db" else "daemonset.apps/logs"
        assert history == f"{kind} \nREVISION  CHANGE-CAUSE\n1         <none>\n2         <none>\n\n"
        first = await run("rollout", "history", "-n", NAMESPACE, resource, "--revision=1")
        assert f"Image:\t{AGNHOST}" in first, first
        assert await run("rollout", "undo", "-n", NAMESPACE, resource) == f"{kind} rolled back\n"
        await run("rollout", "status", "-n", NAMESPACE, resource, "--timeout=90s")
        spec = json.loads(await run("get", "-n", NAMESPACE, resource, "-o", "json"))["spec"]
        assert spec["template"]["spec"]["containers"][0]["image"] == AGNHOST

    async def renumbered() -> str | None:
        out = await run("get", "controllerrevisions", "-n", NAMESPACE)
        return out if len(re.findall(r" 3 ", out)) == 2 else None

    table = (await eventually(renumbered, 30, "the templates returned to numbered 3")).splitlines()
    assert table[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    rows = sorted(line.split()[1:3] for line in table[1:])
    assert rows == [["daemonset.apps/logs", "2"], ["daemonset.apps/logs", "3"],
                    ["statefulset.apps/db", "2"], ["statefulset.apps/db", "3"]]
    pods = await cluster.wait_running(NAMESPACE, "app=db", 2, timeout=60)
    assert all(p["spec"]["containers"][0]["image"] == AGNHOST for p in pods)
