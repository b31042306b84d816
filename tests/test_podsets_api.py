"""StatefulSets and DaemonSets on a real API server process: discovery (a StatefulSet has the scale
subresource, a DaemonSet not), defaulting, validation in kube-apiserver's wording, the fields a
StatefulSet update may not change, and generation counting spec changes."""

from __future__ import annotations

import copy

import pytest
import test_workloads_api

# A fresh namespace on the module's API server, and the check of a refused call, as for ReplicaSets.
api = test_workloads_api.api
refused = test_workloads_api.refused


def stateful_set(name: str = "db", **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"serviceName": name, "replicas": 2, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}, **spec}}


def daemon_set(name: str = "agent", **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name},
            "spec": {"selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}, **spec}}


async def test_discovery(api):
    resources = {r["name"]: r for r in (await api.request("GET", "/apis/apps/v1"))["resources"]}
    assert (resources["statefulsets"]["kind"], resources["statefulsets"]["shortNames"]) == ("StatefulSet", ["sts"])
    assert (resources["daemonsets"]["kind"], resources["daemonsets"]["shortNames"]) == ("DaemonSet", ["ds"])
    assert {"statefulsets/status", "statefulsets/scale", "daemonsets/status"} <= resources.keys()
    assert "daemonsets/scale" not in resources


async def test_defaults(api):
    ns = api.test_namespace
    sts = await api.create(stateful_set(), ns)
    assert sts["metadata"]["generation"] == 1
    spec = sts["spec"]
    assert (spec["podManagementPolicy"], spec["revisionHistoryLimit"]) == ("OrderedReady", 10)
    assert spec["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}
    assert spec["persistentVolumeClaimRetentionPolicy"] == {"whenDeleted": "Retain", "whenScaled": "Retain"}
    ds = await api.create(daemon_set(), ns)
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate",
                                            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    assert ds["spec"]["template"]["spec"]["restartPolicy"] == "Always"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (stateful_set("a", podManagementPolicy="Foo"),
         'StatefulSet.apps "a" is invalid: spec.podManagementPolicy: Unsupported value: "Foo": supported values: '
         '"OrderedReady", "Parallel"'),
        (stateful_set("b", replicas=-1),
         'StatefulSet.apps "b" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0'),
        (stateful_set("c", updateStrategy={"type": "Sometimes"}),
         'StatefulSet.apps "c" is invalid: spec.updateStrategy.type: Unsupported value: "Sometimes": supported values: '
         '"OnDelete", "RollingUpdate"'),
        (daemon_set("d", selector={}), ": empty selector is invalid for daemonset"),  # the value is Go-printed there
        (daemon_set("e", updateStrategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "lots"}}),
         'DaemonSet.apps "e" is invalid: spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: lots: a valid '
         "percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%')"),
    ],
)
async def test_validation(api, body, message):
    status = await refused(api.create(body, api.test_namespace), 422)
    assert status["message"].endswith(message), status["message"]


async def test_updates(api):
    ns = api.test_namespace
    sts = await api.create(stateful_set(), ns)
    changed = copy.deepcopy(sts)
    changed["spec"]["serviceName"] = "other"
    status = await refused(api.replace(changed), 422)
    assert status["message"] == (
        'StatefulSet.apps "db" is invalid: spec: Forbidden: updates to statefulset spec for fields other than '
        "'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and "
        "'minReadySeconds' are forbidden")
    scaled = await api.patch("statefulsets", "db", {"spec": {"replicas": 4}}, namespace=ns, subresource="scale")
    assert scaled["spec"] == {"replicas": 4} and scaled["status"]["selector"] == "app=db"
    stored = await api.get("statefulsets", "db", ns)
    assert stored["spec"]["replicas"] == 4 and stored["metadata"]["generation"] == 2
    ds = await api.create(daemon_set(), ns)
    changed = copy.deepcopy(ds)
    changed["spec"]["selector"] = {"matchLabels": {"app": "agent", "x": "1"}}
    changed["spec"]["template"]["metadata"]["labels"]["x"] = "1"
    status = await refused(api.replace(changed), 422)
    assert status["details"]["causes"][0]["message"].endswith("field is immutable")
