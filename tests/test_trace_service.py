"""`podnet trace` to a Service whose endpoints are all on the other node: the source node's DNAT picks one
at random, every node with a ready endpoint watches, and the far half printed is the one the packet
reached. Real API server, two real node agents, a real kube-proxy for node-1, real VXLAN."""

import asyncio
import time
from collections.abc import Iterator

import pytest
from support.kubeproxy import WEB_PORTS, KubeProxyProcess
from support.nodeagent import Cluster, pod_manifest, wait_running

from podnet.rpc.session import RpcClient

FAR_PODS = ("far-1", "far-2")


@pytest.fixture(scope="module")
def far_cluster(two_node_cluster: Cluster) -> Iterator[Cluster]:
    """Pods far-1 and far-2 (tier=far, port 8080 named web) on node-2, kube-proxy on node-1 only, and
    Services `far` (80 named http → targetPort web) and `nobody` (selects no pod)."""

    async def create(client) -> None:
        for name in FAR_PODS:
            manifest = pod_manifest(name, "node-2", ports=WEB_PORTS)
            manifest["metadata"]["labels"] = {"tier": "far"}
            await client.create(manifest)
        for name in FAR_PODS:
            two_node_cluster.pod_ips[name] = (await wait_running(client, "default", name))["status"]["podIP"]
        for name, selector in (("far", {"tier": "far"}), ("nobody", {"tier": "none"})):
            service = await client.create({
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
            })
            two_node_cluster.pod_ips[name] = service["spec"]["clusterIP"]

    two_node_cluster.api_call(create)
    proxy = KubeProxyProcess(two_node_cluster.agents["node-1"], two_node_cluster.api.kubeconfig)
    try:
        proxy.start()
        _wait_until_both_endpoints_answer(two_node_cluster)
        yield two_node_cluster
    finally:
        proxy.kill()


def _wait_until_both_endpoints_answer(cluster: Cluster, timeout: float = 10.0) -> None:
    """kube-proxy has programmed `far` with both endpoints once each has answered pod a through it."""
    url = f"http://{cluster.pod_ips['far']}/hostname"
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while seen != set(FAR_PODS):
        assert time.monotonic() < deadline, f"{url} answered only from {seen}"
        result = cluster.agents["node-1"].rpc(
            "pod.http", {"namespace": "default", "pod": "a", "url": url, "timeout": 1.0}
        )
        if result.get("ok"):
            seen.add(result["body"].decode().strip())


def _stages(stdout: str) -> list[tuple[str, str]]:
    """(stage, detail) of each numbered line `podnet trace` printed."""
    return [(line.split()[1], line.split(None, 2)[2]) for line in stdout.splitlines()[1:]]


@pytest.mark.parametrize("destination", ["{far}:80", "far:http"])
def test_trace_to_a_service_shows_the_half_of_the_node_whose_endpoint_was_chosen(far_cluster, destination):
    run = far_cluster.cli("trace", "a", destination.format(far=far_cluster.pod_ips["far"]))
    assert run.returncode == 0, run.stdout + run.stderr
    stages = _stages(run.stdout)
    names = [stage for stage, _ in stages]
    dnat = next(detail for stage, detail in stages if stage == "service-dnat")
    chosen = next(pod for pod in FAR_PODS if dnat.endswith(f"→ {far_cluster.pod_ips[pod]}:8080"))
    # node-1's half up to the tunnel, then node-2's: decap, delivery to the chosen pod, its reply back in
    encap = names.index("vxlan-encap")
    far = names[encap + 1:]
    assert far[0] == "vxlan-decap" and "deliver" in far and "vxlan-encap" in far, run.stdout
    delivered = next(detail for stage, detail in stages[encap + 1:] if stage == "deliver")
    assert delivered.startswith(f"to pod default/{chosen} ({far_cluster.pod_ips[chosen]})"), run.stdout
    # and node-1 again: the reply out of the tunnel, un-DNATed back to the Service address, to pod a
    back = names[names.index("vxlan-encap", encap + 1) + 1 :]
    assert back[0] == "vxlan-decap" and "nat" in back and back[-2:] == ["deliver", "result"], run.stdout
    assert stages[-1] == ("result", "answered")


def test_a_service_without_ready_endpoints_shows_the_rejection(far_cluster):
    run = far_cluster.cli("trace", "a", f"{far_cluster.pod_ips['nobody']}:80")
    assert run.returncode == 1, run.stdout + run.stderr
    dnat = next(detail for stage, detail in _stages(run.stdout) if stage == "service-dnat")
    assert "(default/nobody:http) rejected" in dnat, run.stdout
    assert "vxlan-encap" not in run.stdout


def test_trace_watch_takes_one_destination_or_a_list_and_a_watch_that_saw_nothing_is_empty(far_cluster):
    ip_a, ip_b = far_cluster.pod_ips["a"], far_cluster.pod_ips["b"]

    async def run():
        async with RpcClient(far_cluster.agents["node-2"].socket) as node_2:
            single = asyncio.create_task(node_2.call(
                "trace.watch", {"src": ip_a, "dst": ip_b, "port": 80, "protocol": "TCP", "timeout": 2.0}
            ))
            elsewhere = asyncio.create_task(node_2.call(
                "trace.watch",
                {"src": ip_a, "protocol": "TCP", "timeout": 0.5,
                 "matches": [{"dst": far_cluster.pod_ips[p], "port": 8080} for p in FAR_PODS]},
            ))
            await node_2.call("ping")  # both watches are in place
            async with RpcClient(far_cluster.agents["node-1"].socket) as node_1:
                local = await node_1.call(
                    "trace", {"src": "default/a", "dst": ip_b, "port": 80, "protocol": "TCP", "timeout": 2.0}
                )
            return local, await single, await elsewhere

    local, single, elsewhere = asyncio.run(run())
    assert local[-1] == {"stage": "result", "detail": "answered"}
    assert [s["stage"] for s in single][:1] == ["vxlan-decap"], single
    assert any(s["stage"] == "deliver" and f"({ip_b})" in s["detail"] for s in single), single
    assert elsewhere == []


def test_a_user_of_one_namespace_traces_to_a_service_there(far_cluster):
    """An `edit:team-a` token may list pods and Services in team-a only: the trace finds the Service at
    the address among those it may see, and shows the half of the node its endpoint is on."""

    async def create(client) -> tuple[str, str]:
        await client.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}})
        await client.create(pod_manifest("t", "node-1", namespace="team-a"))
        far = pod_manifest("far-t", "node-2", namespace="team-a", ports=WEB_PORTS)
        far["metadata"]["labels"] = {"tier": "far"}
        await client.create(far)
        service = await client.create({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "far", "namespace": "team-a"},
            "spec": {"selector": {"tier": "far"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]},
        })
        await wait_running(client, "team-a", "t")
        return service["spec"]["clusterIP"], (await wait_running(client, "team-a", "far-t"))["status"]["podIP"]

    cluster_ip, endpoint = far_cluster.api_call(create)
    token = far_cluster.api.tokens["editor"]
    deadline = time.monotonic() + 15
    while True:  # until kube-proxy has programmed the new Service
        run = far_cluster.cli("trace", "t", "-n", "team-a", "--token", token, f"{cluster_ip}:80")
        if run.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert run.returncode == 0, run.stdout + run.stderr
    stages = _stages(run.stdout)
    assert any(stage == "service-dnat" and detail.endswith(f"→ {endpoint}:8080") for stage, detail in stages)
    encap = [stage for stage, _ in stages].index("vxlan-encap")
    far = stages[encap + 1 :]
    assert far[0][0] == "vxlan-decap", run.stdout
    assert any(stage == "deliver" and detail.startswith(f"to pod team-a/far-t ({endpoint})") for stage, detail in far)
