"""The controllers end to end: a real API server process with its in-process controllers, driven through
the API only. The test plays the node agents: it registers Nodes, renews their Leases and reports pod
status, as agents would."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest

from podnet.client import ApiClient, ApiError

GRACE_PERIOD = 1.5
SERVER_ARGS = ("--node-grace-period", str(GRACE_PERIOD), "--eviction-timeout", "60")


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def eventually(check: Callable[[], Awaitable[object]], timeout: float = 5.0, what: str = "condition"):
    """Polls `check` until it returns something true; returns that."""
    deadline = asyncio.get_running_loop().time() + timeout
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} not reached in {timeout}s (last: {last!r})")


@pytest.fixture
def server(make_api_server):
    return make_api_server(controllers=True, extra_args=SERVER_ARGS)


@pytest.fixture
async def client(server):
    async with server.client() as api:
        await eventually(lambda: _has_namespace(api, "kube-node-lease"), what="default namespaces")
        yield api


async def _has_namespace(api: ApiClient, name: str) -> bool:
    try:
        await api.get("namespaces", name)
    except ApiError:
        return False
    return True


class Nodes:
    """Nodes that heartbeat like node agents: a Ready Node and a Lease renewed every 0.2 s until stopped."""

    def __init__(self, api: ApiClient):
        self.api = api
        self.beating: set[str] = set()
        self.task: asyncio.Task | None = None

    async def add(self, name: str, *, ready: bool = True) -> None:
        await self.api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                               "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                                          "reason": "KubeletReady" if ready else "KubeletNotReady"}]}})
        await self.api.create({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                               "metadata": {"name": name, "namespace": "kube-node-lease"},
                               "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": timestamp()}})
        self.beating.add(name)

    async def _beat(self) -> None:
        while True:
            for name in list(self.beating):
                try:
                    await self.api.patch("leases", name, {"spec": {"renewTime": timestamp()}},
                                         namespace="kube-node-lease")
                except ApiError:
                    pass  # the API server is restarting: beat again next round, as an agent would
            await asyncio.sleep(0.2)

    def __enter__(self) -> Nodes:
        self.task = asyncio.get_running_loop().create_task(self._beat())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


async def report_pod(api: ApiClient, namespace: str, name: str, ip: str, ready: bool) -> dict:
    """What the node agent reports once a pod runs: its IP, phase and Ready condition."""
    pod = await api.get("pods", name, namespace)
    pod["status"] = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                     "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    return await api.replace_status(pod)


def service(name: str, type_: str = "ClusterIP", **spec) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type_, "selector": {"app": name},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}}


def pod(name: str, app: str, node: str, port: int = 8080) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                            "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "agnhost",
                                                       "ports": [{"name": "http", "containerPort": port}]}]}}


async def slice_endpoints(api: ApiClient, service_name: str) -> dict[str, tuple[bool, int]]:
    """address → (ready, port) over the Service's controller-managed EndpointSlices."""
    slices = await api.list("endpointslices", "default",
                            label_selector=f"kubernetes.io/service-name={service_name},"
                                           "endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io")
    return {e["addresses"][0]: (e["conditions"]["ready"], s["ports"][0]["port"])
            for s in slices["items"] for e in s["endpoints"]}


async def test_default_objects_and_service_allocation(client):
    kubernetes = await eventually(lambda: _get(client, "services", "kubernetes", "default"), what="kubernetes svc")
    assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"
    assert kubernetes["spec"]["ports"][0]["port"] == 443
    dns = await eventually(lambda: _get(client, "services", "kube-dns", "kube-system"), what="kube-dns svc")
    assert dns["spec"]["clusterIP"] == "10.96.0.10" and dns["spec"]["selector"] == {"k8s-app": "kube-dns"}
    assert {(p["name"], p["protocol"], p["port"], p["targetPort"]) for p in dns["spec"]["ports"]} == {
        ("dns", "UDP", 53, 53), ("dns-tcp", "TCP", 53, 53)}
    endpoints = await eventually(lambda: _get(client, "endpoints", "kubernetes", "default"), what="api endpoints")
    assert endpoints["subsets"][0]["ports"][0]["port"] == int(client.server.rsplit(":", 1)[1])

    first = await client.create(service("one", "NodePort"))
    second = await client.create(service("two", "NodePort"))
    ips = {first["spec"]["clusterIP"], second["spec"]["clusterIP"]}
    assert len(ips) == 2 and all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/12") for ip in ips)
    assert not ips & {"10.96.0.1", "10.96.0.10"}
    node_ports = {first["spec"]["ports"][0]["nodePort"], second["spec"]["ports"][0]["nodePort"]}
    assert len(node_ports) == 2 and all(30000 <= p <= 32767 for p in node_ports)

    with pytest.raises(ApiError) as taken_ip:
        await client.create(service("three", clusterIP=first["spec"]["clusterIP"]))
    assert taken_ip.value.code == 422
    assert taken_ip.value.status["details"]["causes"][0]["field"] == "spec.clusterIPs"
    taken_port = service("four", "NodePort")
    taken_port["spec"]["ports"][0]["nodePort"] = first["spec"]["ports"][0]["nodePort"]
    with pytest.raises(ApiError) as refused:
        await client.create(taken_port)
    assert refused.value.code == 422
    assert refused.value.status["details"]["causes"][0]["field"] == "spec.ports[0].nodePort"

    requested = await client.create(service("five", clusterIP="10.96.5.5"))
    assert requested["spec"]["clusterIP"] == "10.96.5.5"
    await client.delete("services", "five", "default")
    again = await client.create(service("six", clusterIP="10.96.5.5"))  # released with its Service
    assert again["spec"]["clusterIP"] == "10.96.5.5"


async def _get(api: ApiClient, kind: str, name: str, namespace: str | None = None) -> dict | None:
    try:
        return await api.get(kind, name, namespace)
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


async def test_deployment_pods_spread_over_ready_nodes_and_lost_pods_are_replaced(server, client):
    with Nodes(client) as nodes:
        for name in ("node-1", "node-2", "node-3"):
            await nodes.add(name)
        await nodes.add("node-sick", ready=False)
        await client.create({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "agnhost"}]}}}})

        async def bound_pods():
            items = (await client.list("pods", "default", label_selector="app=web"))["items"]
            return items if len(items) == 3 and all(p["spec"].get("nodeName") for p in items) else None

        pods = await eventually(bound_pods, what="3 bound pods")
        assert sorted(p["spec"]["nodeName"] for p in pods) == ["node-1", "node-2", "node-3"]
        deployment = await client.get("deployments", "web", "default")
        [replicaset] = (await client.list("replicasets", "default"))["items"]
        template_hash = replicaset["metadata"]["labels"]["pod-template-hash"]
        assert replicaset["metadata"]["name"] == f"web-{template_hash}"
        assert replicaset["metadata"]["ownerReferences"] == [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": deployment["metadata"]["uid"],
             "controller": True, "blockOwnerDeletion": True}]
        for p in pods:
            assert p["metadata"]["name"].startswith(f"web-{template_hash}-") and len(p["metadata"]["name"]) == len(
                f"web-{template_hash}-") + 5
            assert p["metadata"]["ownerReferences"] == [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replicaset["metadata"]["name"],
                 "uid": replicaset["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
            assert p["metadata"]["labels"] == {"app": "web", "pod-template-hash": template_hash}

        async def nodes_with_cidrs():
            items = (await client.list("nodes"))["items"]
            return {n["metadata"]["name"]: n for n in items} if all(n["spec"].get("podCIDR") for n in items) else None

        nodes_now = await eventually(nodes_with_cidrs, what="pod CIDRs")
        cidrs = {n["spec"]["podCIDR"] for n in nodes_now.values()}
        assert len(cidrs) == 4 and all(c.startswith("10.244.") and c.endswith("/24") for c in cidrs)

        for i, p in enumerate(pods):
            await report_pod(client, "default", p["metadata"]["name"], f"10.244.{i}.9", ready=True)

        async def status_ready():
            status = (await client.get("deployments", "web", "default")).get("status") or {}
            return status if status.get("readyReplicas") == 3 else None

        status = await eventually(status_ready, what="readyReplicas 3")
        assert status["replicas"] == 3 and status["availableReplicas"] == 3
        assert {c["type"]: c["status"] for c in status["conditions"]} == {"Available": "True", "Progressing": "True"}

        # No kubelet runs here to finish a graceful deletion: the pod is removed at once, as if lost.
        lost = pods[0]["metadata"]["name"]
        await client.delete("pods", lost, "default", grace_period=0)

        async def replaced():
            items = (await bound_pods()) or []
            names = {p["metadata"]["name"] for p in items}
            return items if len(names) == 3 and lost not in names else None

        after = await eventually(replaced, what="a replacement pod")
        assert {p["spec"]["nodeName"] for p in after} == {"node-1", "node-2", "node-3"}  # fewest pods first

        # A restarted API server (and its controllers) rebuilds from the objects: no extra pods, and a
        # deleted Node's pod CIDR goes to the next Node.
        sick_cidr = nodes_now["node-sick"]["spec"]["podCIDR"]
        server.kill()
        server.start()
        await client.delete("nodes", "node-sick")
        nodes.beating.discard("node-sick")
        await nodes.add("node-4")

        async def cidr_of_node_4():
            return (await client.get("nodes", "node-4")).get("spec", {}).get("podCIDR")

        assert await eventually(cidr_of_node_4, what="node-4 pod CIDR") == sick_cidr
        await asyncio.sleep(0.5)
        names = {p["metadata"]["name"] for p in (await client.list("pods", "default", label_selector="app=web"))["items"]}
        assert names == {p["metadata"]["name"] for p in after}


async def test_endpoint_slices_follow_pod_readiness(client):
    with Nodes(client) as nodes:
        await nodes.add("node-1")
        await client.create(service("echo"))
        await client.create(pod("echo-a", "echo", "node-1", port=8080))
        await client.create(pod("echo-b", "echo", "node-1", port=9090))
        await report_pod(client, "default", "echo-a", "10.244.0.5", ready=False)
        await report_pod(client, "default", "echo-b", "10.244.0.6", ready=True)

        await eventually(lambda: _endpoints_are(client, "echo", {"10.244.0.5": (False, 8080),
                                                                 "10.244.0.6": (True, 9090)}), what="first slices")
        await report_pod(client, "default", "echo-a", "10.244.0.5", ready=True)
        await eventually(lambda: _endpoints_are(client, "echo", {"10.244.0.5": (True, 8080),
                                                                 "10.244.0.6": (True, 9090)}), what="a ready")

        async def legacy_ready():
            legacy = await client.get("endpoints", "echo", "default")
            return sorted((a["ip"], s["ports"][0]["port"]) for s in legacy["subsets"] for a in s.get("addresses", []))

        assert await eventually(lambda: _equal(legacy_ready(), [("10.244.0.5", 8080), ("10.244.0.6", 9090)]),
                                what="legacy Endpoints")

        # A graceful delete leaves echo-b Terminating (no kubelet here finishes it): its endpoint stays,
        # no longer ready but still serving, as Kubernetes' EndpointSlice controller reports it.
        await client.delete("pods", "echo-b", "default")
        await eventually(lambda: _endpoints_are(client, "echo", {"10.244.0.5": (True, 8080),
                                                                 "10.244.0.6": (False, 9090)}), what="b terminating")
        conditions = [e["conditions"] for s in (await client.list("endpointslices", "default"))["items"]
                      for e in s["endpoints"] if e["addresses"] == ["10.244.0.6"]]
        assert conditions == [{"ready": False, "serving": True, "terminating": True}]
        assert await eventually(lambda: _equal(legacy_ready(), [("10.244.0.5", 8080)]), what="legacy without b")
        await client.delete("pods", "echo-b", "default", grace_period=0)
        await eventually(lambda: _endpoints_are(client, "echo", {"10.244.0.5": (True, 8080)}), what="b gone")
        await client.delete("services", "echo", "default")
        await eventually(lambda: _endpoints_are(client, "echo", {}), what="slices gone")
        # The Endpoints controller is another loop than the slices': its object goes in its own time.
        await eventually(lambda: _equal(_get(client, "endpoints", "echo", "default"), None), what="Endpoints gone")


async def _equal(value: Awaitable[object], expected: object) -> bool:
    return await value == expected


async def _endpoints_are(api: ApiClient, service_name: str, expected: dict) -> bool:
    return await slice_endpoints(api, service_name) == expected


async def test_node_without_heartbeats_goes_not_ready_and_its_pods_leave_ready_endpoints(client):
    with Nodes(client) as nodes:
        await nodes.add("node-alive")
        await nodes.add("node-dying")
        await client.create(service("app"))
        await client.create(pod("app-alive", "app", "node-alive"))
        await client.create(pod("app-dying", "app", "node-dying"))
        await report_pod(client, "default", "app-alive", "10.244.0.7", ready=True)
        await report_pod(client, "default", "app-dying", "10.244.1.7", ready=True)
        await eventually(lambda: _endpoints_are(client, "app", {"10.244.0.7": (True, 8080),
                                                                "10.244.1.7": (True, 8080)}), what="both ready")

        nodes.beating.discard("node-dying")
        stopped = asyncio.get_running_loop().time()

        async def not_ready():
            node = await client.get("nodes", "node-dying")
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            return node if ready["status"] == "Unknown" else None

        node = await eventually(not_ready, timeout=GRACE_PERIOD + 3, what="node-dying NotReady")
        waited = asyncio.get_running_loop().time() - stopped
        # The last renewal may have landed up to one beat (0.2 s) before the heartbeats stopped.
        assert GRACE_PERIOD - 0.3 <= waited <= GRACE_PERIOD + 2
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "NodeStatusUnknown"
        assert {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}.items() <= node["spec"]["taints"][0].items()

        await eventually(lambda: _endpoints_are(client, "app", {"10.244.0.7": (True, 8080),
                                                                "10.244.1.7": (False, 8080)}), what="dying not ready")
        dying_pod = await client.get("pods", "app-dying", "default")
        assert [c["status"] for c in dying_pod["status"]["conditions"] if c["type"] == "Ready"] == ["False"]
        alive = await client.get("nodes", "node-alive")
        assert [c["status"] for c in alive["status"]["conditions"] if c["type"] == "Ready"] == ["True"]

        nodes.beating.add("node-dying")  # heartbeats resume: Ready again, taint gone

        async def back():
            node = await client.get("nodes", "node-dying")
            ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
            return ready["status"] == "True" and not node["spec"].get("taints")

        await eventually(back, what="node-dying Ready again")
