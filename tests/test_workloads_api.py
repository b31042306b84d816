"""ReplicaSets, Deployments and their scale subresource on a real API server process: discovery, validation
and defaulting, the Scale verbs with their errors; and with the in-process controllers: ReplicaSets adopt
and make pods, a deleted Deployment takes its ReplicaSets and pods along, and pods an older podnet let a
Deployment own directly are taken over by its ReplicaSet without a restart."""

from __future__ import annotations

import asyncio
import copy
import uuid

import pytest
from podnet.apiserver.controllers import deployments
from support.local_cluster import eventually

from podnet.client import ApiClient, ApiError


def replicaset(name: str = "front", replicas: int = 2, labels: dict | None = None, selector: dict | None = None) -> dict:
    labels = labels or {"app": name}
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels if selector is None else selector},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}}}


def deployment(name: str = "web", replicas: int = 2, **spec) -> dict:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}, **spec}}


@pytest.fixture
async def api(api_server_module):
    async with api_server_module.client() as client:
        namespace = f"wl-{uuid.uuid4().hex[:8]}"
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        client.test_namespace = namespace
        yield client


async def refused(call, code: int) -> dict:
    with pytest.raises(ApiError) as error:
        await call
    assert error.value.code == code, error.value.status
    return error.value.status


async def test_discovery_lists_replicasets_and_the_scale_subresources(api):
    resources = {r["name"]: r for r in (await api.request("GET", "/apis/apps/v1"))["resources"]}
    assert resources["replicasets"]["kind"] == "ReplicaSet" and resources["replicasets"]["shortNames"] == ["rs"]
    assert resources["replicasets"]["namespaced"] is True
    assert "replicasets/status" in resources
    for name in ("deployments/scale", "replicasets/scale"):
        assert {k: resources[name][k] for k in ("group", "version", "kind", "verbs")} == {
            "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}


async def test_replicaset_defaulting_and_validation(api):
    ns = api.test_namespace
    bare = replicaset()
    del bare["spec"]["replicas"]
    created = await api.create(bare, ns)
    assert created["spec"]["replicas"] == 1 and created["metadata"]["generation"] == 1
    assert created["spec"]["template"]["spec"]["restartPolicy"] == "Always"
    assert "status" not in created

    cases = [
        (replicaset("a", selector={"app": "other"}), "spec.template.metadata.labels",
         'ReplicaSet.apps "a" is invalid: spec.template.metadata.labels: Invalid value: {\'app\': \'a\'}: '
         "`selector` does not match template `labels`"),
        (replicaset("b", replicas=-1), "spec.replicas",
         'ReplicaSet.apps "b" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0'),
        (replicaset("c", selector={}), "spec.selector", None),
    ]
    missing = replicaset("d")
    del missing["spec"]["selector"]
    cases.append((missing, "spec.selector", 'ReplicaSet.apps "d" is invalid: spec.selector: Required value'))
    for body, field, message in cases:
        status = await refused(api.create(body, ns), 422)
        assert status["details"]["causes"][0]["field"] == field
        if message:
            assert status["message"] == message
    changed = copy.deepcopy(created)
    changed["spec"]["selector"] = {"matchLabels": {"app": "front", "extra": "x"}}
    changed["spec"]["template"]["metadata"]["labels"]["extra"] = "x"
    status = await refused(api.replace(changed), 422)
    assert status["details"]["causes"][0]["field"] == "spec.selector"
    assert status["details"]["causes"][0]["message"].endswith("field is immutable")


@pytest.mark.parametrize(
    ("strategy", "field", "message"),
    [
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}},
         "spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: 0: may not be 0 when `maxSurge` is 0"),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "120%"}},
         "spec.strategy.rollingUpdate.maxUnavailable", "Invalid value: 120%: must not be greater than 100%"),
        ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "lots"}}, "spec.strategy.rollingUpdate.maxSurge",
         "Invalid value: lots: a valid percent string must be a numeric string followed by an ending '%' "
         "(e.g. '1%',  or '93%')"),
        ({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}, "spec.strategy.rollingUpdate",
         "Forbidden: may not be specified when strategy `type` is 'Recreate'"),
        ({"type": "BlueGreen"}, "spec.strategy.type",
         'Unsupported value: "BlueGreen": supported values: "Recreate", "RollingUpdate"'),
    ],
)
async def test_deployment_strategy_validation(api, strategy, field, message):
    status = await refused(api.create(deployment(strategy=strategy), api.test_namespace), 422)
    assert [(c["field"], c["message"]) for c in status["details"]["causes"]] == [(field, message)]


async def test_scale_subresource(api, api_server_module):
    ns = api.test_namespace
    created = await api.create(deployment(replicas=2), ns)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/web/scale"
    scale = await api.request("GET", path)
    assert scale == {"kind": "Scale", "apiVersion": "autoscaling/v1",
                     "metadata": {"name": "web", "namespace": ns, "uid": created["metadata"]["uid"],
                                  "resourceVersion": created["metadata"]["resourceVersion"],
                                  "creationTimestamp": created["metadata"]["creationTimestamp"]},
                     "spec": {"replicas": 2}, "status": {"replicas": 0, "selector": "app=web"}}

    scale["spec"]["replicas"] = 5
    updated = await api.request("PUT", path, body=scale)
    assert updated["spec"] == {"replicas": 5} and updated["metadata"]["resourceVersion"] != scale["metadata"]["resourceVersion"]
    stored = await api.get("deployments", "web", ns)
    assert stored["spec"]["replicas"] == 5 and stored["metadata"]["generation"] == 2
    # The Scale read before that write is stale now.
    status = await refused(api.request("PUT", path, body=scale), 409)
    assert status["reason"] == "Conflict"

    patched = await api.patch("deployments", "web", {"spec": {"replicas": 3}}, namespace=ns, subresource="scale")
    assert patched["spec"] == {"replicas": 3}
    patched = await api.patch("deployments", "web", [{"op": "replace", "path": "/spec/replicas", "value": 0}],
                              namespace=ns, subresource="scale", patch_type="json")
    assert patched["spec"] == {} and (await api.get("deployments", "web", ns))["spec"]["replicas"] == 0

    status = await refused(api.patch("deployments", "web", {"spec": {"replicas": -1}}, namespace=ns,
                                     subresource="scale"), 422)
    assert status["message"] == ('Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: '
                                 "must be greater than or equal to 0")
    status = await refused(api.request("GET", f"/apis/apps/v1/namespaces/{ns}/deployments/nope/scale"), 404)
    assert status["message"] == 'deployments.apps "nope" not found'
    await refused(api.request("GET", f"/api/v1/namespaces/{ns}/pods/x/scale"), 404)

    async with api_server_module.client(api_server_module.tokens["viewer"]) as viewer:
        assert (await viewer.request("GET", path))["spec"] == {}
        status = await refused(viewer.patch("deployments", "web", {"spec": {"replicas": 1}}, namespace=ns,
                                            subresource="scale"), 403)
        assert status["reason"] == "Forbidden"

    rs = await api.create(replicaset("front", replicas=1, labels={"app": "front", "tier": "a"}), ns)
    scale = await api.request("GET", f"/apis/apps/v1/namespaces/{ns}/replicasets/front/scale")
    assert scale["spec"] == {"replicas": 1} and scale["status"]["selector"] == "app=front,tier=a"
    assert scale["metadata"]["uid"] == rs["metadata"]["uid"]


# --- with the controllers -----------------------------------------------------------------------------


@pytest.fixture
async def controlled(make_api_server):
    server = make_api_server(controllers=True)
    async with server.client() as client:
        await eventually(lambda: _exists(client, "namespaces", "default"), 20, what="the default namespace")
        yield server, client


async def _exists(api: ApiClient, kind: str, name: str, namespace: str | None = None) -> dict | None:
    try:
        return await api.get(kind, name, namespace)
    except ApiError:
        return None


async def _pods(api: ApiClient, selector: str) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in (await api.list("pods", "default", label_selector=selector))["items"]}


async def test_replicaset_adopts_orphans_makes_the_rest_and_its_status_counts_them(controlled):
    _, api = controlled
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "front"}},
              "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}
    orphan = await api.create(orphan)
    rs = await api.create(replicaset("front", replicas=3))

    async def three_owned():
        pods = await _pods(api, "app=front")
        owners = {p["metadata"].get("ownerReferences", [{}])[0].get("uid") for p in pods.values()}
        return pods if len(pods) == 3 and owners == {rs["metadata"]["uid"]} else None

    pods = await eventually(three_owned, 20, what="three pods owned by the ReplicaSet")
    assert pods["orphan"]["metadata"]["uid"] == orphan["metadata"]["uid"]  # adopted, not replaced
    assert all(name == "orphan" or (name.startswith("front-") and len(name) == len("front-") + 5) for name in pods)

    async def status_counts():
        status = (await api.get("replicasets", "front", "default")).get("status") or {}
        return status if status.get("replicas") == 3 else None

    status = await eventually(status_counts, 20, what="the ReplicaSet's status")
    assert status == {"replicas": 3, "fullyLabeledReplicas": 3, "observedGeneration": 1}

    # A pod relabelled away is released (and replaced); the ReplicaSet deleted, its pods go too.
    await api.patch("pods", "orphan", {"metadata": {"labels": {"app": "elsewhere"}}}, namespace="default")

    async def released():
        pod = await api.get("pods", "orphan", "default")
        return not pod["metadata"].get("ownerReferences") and len(await _pods(api, "app=front")) == 3

    await eventually(released, 20, what="the relabelled pod released and replaced")
    await api.delete("replicasets", "front", "default")
    await eventually(lambda: _none_left(api, "app=front"), 20, what="the ReplicaSet's pods gone")
    assert await _exists(api, "pods", "orphan", "default") is not None


async def _none_left(api: ApiClient, selector: str) -> bool:
    return not await _pods(api, selector)


async def test_a_deployment_records_its_scaling_and_deleting_it_takes_its_replicasets_and_pods_along(controlled):
    _, api = controlled
    await api.create(deployment("web", replicas=2))

    async def running():
        return len(await _pods(api, "app=web")) == 2 and len((await api.list("replicasets", "default"))["items"]) == 1

    await eventually(running, 20, what="a ReplicaSet with two pods")
    [rs] = (await api.list("replicasets", "default"))["items"]
    pods = sorted(await _pods(api, "app=web"))

    async def events():
        seen = {(e["involvedObject"]["kind"], e["involvedObject"]["name"], e["reason"], e["message"],
                 e["source"]["component"]) for e in (await api.list("events", "default"))["items"]}
        return seen if len(seen) >= 3 else None

    rs_name = rs["metadata"]["name"]
    assert await eventually(events, 20, what="the controllers' events") == {
        ("Deployment", "web", "ScalingReplicaSet", f"Scaled up replica set {rs_name} from 0 to 2", "deployment-controller"),
        *(("ReplicaSet", rs_name, "SuccessfulCreate", f"Created pod: {pod}", "replicaset-controller") for pod in pods)}
    await api.delete("deployments", "web", "default")

    async def gone():
        return not (await api.list("replicasets", "default"))["items"] and not await _pods(api, "app=web")

    await eventually(gone, 20, what="ReplicaSet and pods gone")


async def test_pods_a_deployment_owned_directly_are_taken_over_by_its_replicaset(make_api_server):
    before = make_api_server(controllers=False)  # plays the podnet of before, whose controller made these pods
    async with before.client() as api:
        legacy = await _legacy_deployment(api)
    before.kill()
    server = make_api_server(before.store_url, controllers=True)
    async with server.client() as api:
        await _taken_over(api, legacy)


async def _legacy_deployment(api: ApiClient) -> dict[str, dict]:
    await api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}})
    d = await api.create(deployment("web", replicas=2))
    template_hash = deployments.template_hash(d["spec"]["template"])
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"],
             "controller": True, "blockOwnerDeletion": True}
    legacy = {}
    for name, hash_value in ((f"web-{template_hash}-aaaaa", template_hash), (f"web-{template_hash}-bbbbb", template_hash),
                             ("web-5d4f6b7c9-ccccc", "5d4f6b7c9")):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "labels": {"app": "web", "pod-template-hash": hash_value},
                            "ownerReferences": [owner]},
               "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}
        legacy[name] = await api.create(pod)
    return legacy


async def _taken_over(api: ApiClient, legacy: dict[str, dict]) -> None:
    template_hash = next(iter(legacy)).split("-")[1]

    async def taken_over():
        replicasets = (await api.list("replicasets", "default"))["items"]
        pods = await _pods(api, "app=web")
        if len(replicasets) != 1 or set(pods) != {f"web-{template_hash}-aaaaa", f"web-{template_hash}-bbbbb"}:
            return None
        refs = [p["metadata"].get("ownerReferences") or [] for p in pods.values()]
        if any(len(r) != 1 or r[0]["kind"] != "ReplicaSet" for r in refs):
            return None
        return replicasets[0], pods

    rs, pods = await eventually(taken_over, 20, what="the ReplicaSet owning the pods of before")
    assert rs["metadata"]["name"] == f"web-{template_hash}"
    for name, pod in pods.items():
        assert pod["metadata"]["uid"] == legacy[name]["metadata"]["uid"]  # the same pods: kept, not replaced
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    await asyncio.sleep(0.5)
    assert set(await _pods(api, "app=web")) == set(pods)  # and no extra pod made meanwhile
