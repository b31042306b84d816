"""ClusterIP Services end to end: a real API server with its controllers, two real node agents, a real
kube-proxy per node; pods call Services through the agents' pipelines and real VXLAN."""

import asyncio
import time

import pytest
from support.kubeproxy import KubeProxyProcess
from support.nodeagent import pod_manifest, wait_running

from podnet.rpc.session import RpcClient


def make_service(name, selector, ports=None, **spec):
    """A Service whose ClusterIP the API server allocates: tests read it back from what `create` returns."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": selector,
            "ports": ports or [{"name": "http", "port": 80, "targetPort": "web"}],
            **spec,
        },
    }


def create(cluster, obj):
    async def run(client):
        return await client.create(obj)

    return cluster.api_call(run)


def http(cluster, url, pod="a", timeout=3.0):
    node = "node-1" if pod == "a" else "node-2"
    return cluster.agents[node].rpc(
        "pod.http", {"namespace": "default", "pod": pod, "url": url, "timeout": timeout}
    )


def wait_answering(cluster, url, timeout=10.0, pod="a"):
    deadline = time.monotonic() + timeout
    while True:
        result = http(cluster, url, pod=pod, timeout=1.0)
        if result.get("ok"):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} not answering: {result}")
        time.sleep(0.05)


def hostnames(cluster, url, calls):
    return [http(cluster, url)["body"].decode().strip() for _ in range(calls)]


def test_cluster_ip_reaches_every_ready_backend_from_a_pod(services_cluster):
    ip = create(services_cluster, make_service("web", {"app": "web"}))["spec"]["clusterIP"]
    wait_answering(services_cluster, f"http://{ip}/hostname")
    assert set(hostnames(services_cluster, f"http://{ip}/hostname", 30)) == {"web-1", "web-2", "web-3"}
    run = services_cluster.cli("exec", "a", "--", "http", f"http://{ip}:80/hostname")
    assert run.returncode == 0 and run.stdout.strip() in {"web-1", "web-2", "web-3"}, run.stderr
    clientip = http(services_cluster, f"http://{ip}/clientip")["body"].decode()
    assert clientip.startswith(services_cluster.pod_ips["a"] + ":")  # no SNAT inside the cluster


def test_udp_service_by_named_target_port(services_cluster):
    ports = [{"name": "echo", "port": 53, "protocol": "UDP", "targetPort": "echo"}]
    ip = create(services_cluster, make_service("web-udp", {"app": "web"}, ports))["spec"]["clusterIP"]
    agent = services_cluster.agents["node-1"]
    seen = set()
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        result = agent.rpc(
            "pod.connect",
            {"namespace": "default", "pod": "a", "host": ip, "port": 53, "protocol": "UDP", "timeout": 1.0},
        )
        if result["ok"]:
            assert result["peer"].startswith(ip)  # the reply is un-NATted back to the service address
            seen.add(result["reply"].decode().strip())
    assert seen == {"web-1", "web-2", "web-3"}


def test_client_ip_affinity_always_picks_the_same_backend(services_cluster):
    service = make_service(
        "web-sticky",
        {"app": "web"},
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}},
    )
    ip = create(services_cluster, service)["spec"]["clusterIP"]
    wait_answering(services_cluster, f"http://{ip}/hostname")
    assert len(set(hostnames(services_cluster, f"http://{ip}/hostname", 12))) == 1


def test_service_without_endpoints_or_on_an_undeclared_port_is_refused_at_once(services_cluster):
    ip = create(services_cluster, make_service("nobody", {"app": "nobody"}))["spec"]["clusterIP"]
    web_ip = create(services_cluster, make_service("web-refuse", {"app": "web"}))["spec"]["clusterIP"]
    wait_answering(services_cluster, f"http://{web_ip}/hostname")
    for url in (f"http://{ip}/hostname", f"http://{web_ip}:81/hostname"):
        started = time.monotonic()
        result = http(services_cluster, url, timeout=5.0)
        assert not result["ok"] and "unreachable" in result["reason"], result
        assert time.monotonic() - started < 1.0


def test_deleting_a_backend_pod_removes_it_from_rotation(services_cluster):
    async def pods(client):
        for name, node in (("tmp-1", "node-1"), ("tmp-2", "node-2")):
            manifest = pod_manifest(name, node, ports=[{"containerPort": 8080, "name": "web"}])
            manifest["metadata"]["labels"] = {"app": "tmp"}
            await client.create(manifest)
            await wait_running(client, "default", name)

    services_cluster.api_call(pods)
    ip = create(services_cluster, make_service("tmp", {"app": "tmp"}))["spec"]["clusterIP"]
    url = f"http://{ip}/hostname"
    wait_answering(services_cluster, url)
    assert set(hostnames(services_cluster, url, 16)) == {"tmp-1", "tmp-2"}

    async def delete(client):
        await client.delete("pods", "tmp-2", "default")

    services_cluster.api_call(delete)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the slice drops it; calls meanwhile may reach a gone pod
        answers = [http(services_cluster, url, timeout=0.5) for _ in range(8)]
        if all(a.get("ok") and a["body"].decode().strip() == "tmp-1" for a in answers):
            break
    assert set(hostnames(services_cluster, url, 16)) == {"tmp-1"}


def test_trace_shows_the_dnat_step_and_the_endpoint(services_cluster):
    ip = create(services_cluster, make_service("web-trace", {"app": "web"}))["spec"]["clusterIP"]
    wait_answering(services_cluster, f"http://{ip}/hostname")
    stages = services_cluster.agents["node-1"].rpc(
        "trace", {"src": "default/a", "dst": ip, "port": 80, "protocol": "TCP", "timeout": 2.0}
    )
    dnat = [s["detail"] for s in stages if s["stage"] == "service-dnat"]
    assert dnat and dnat[0].startswith(f"{ip}:80 (default/web-trace:http): cluster-ip: endpoint rule "), (
        stages
    )
    assert dnat[0].endswith(":8080") and any(
        dnat[0].endswith(f"{services_cluster.pod_ips[p]}:8080") for p in ("web-1", "web-2", "web-3")
    )
    assert stages[-1] == {"stage": "result", "detail": "answered"}


@pytest.mark.parametrize("node", ["node-1"])
def test_rules_outlive_kube_proxy_and_a_restart_programs_what_changed_meanwhile(services_cluster, node):
    """A Service created while kube-proxy is down works within a second of the restart.

    The second is measured from the moment the restarted kube-proxy is healthy, that is has listed,
    computed and sent its first full table (the Service must then answer at once), and bounded in CPU:
    the restarted process must get there on less than a second of CPU time. Measured from the moment its
    PID exists, the wall time is mostly Python starting and importing aiohttp (about 0.35 s of CPU, a
    floor): 0.35 to 0.7 s on an idle 2-core machine, but a median of 1.1 s when the load average is 6 to
    8, so the wall time from the PID only has a loose bound here; `docs/services.md` has the figures."""
    proxy: KubeProxyProcess = services_cluster.proxies[node]
    before = create(services_cluster, make_service("web-before", {"app": "web"}))["spec"]["clusterIP"]
    wait_answering(services_cluster, f"http://{before}/hostname")
    proxy.kill()
    assert http(services_cluster, f"http://{before}/hostname")["ok"]  # rules stay in the agent
    during = create(services_cluster, make_service("web-during", {"app": "web"}))["spec"]["clusterIP"]
    time.sleep(0.5)
    assert not http(services_cluster, f"http://{during}/hostname", timeout=0.5)["ok"]  # nobody programs it
    proxy.start()
    wait_answering(services_cluster, f"http://{during}/hostname", timeout=5.0)
    answered, cpu = time.monotonic(), proxy.cpu_seconds()
    timings = (
        f"from the PID {answered - proxy.spawned:.3f}s, from healthy {answered - proxy.healthy:.3f}s, "
        f"CPU {cpu:.2f}s"
    )
    assert answered - proxy.healthy < 1.0, timings
    assert cpu < 1.0, timings
    assert answered - proxy.spawned < 3.0, timings
    assert http(services_cluster, f"http://{before}/hostname")["ok"]


def test_a_restarted_agent_gets_the_whole_table_again(services_cluster):
    ip = create(services_cluster, make_service("web-agent-restart", {"app": "web"}))["spec"]["clusterIP"]
    wait_answering(services_cluster, f"http://{ip}/hostname")
    agent = services_cluster.agents["node-1"]
    agent.kill()
    # Not in the table the agent kept: only kube-proxy's full sync to the new agent brings it.
    away = create(services_cluster, make_service("web-agent-away", {"app": "web"}))["spec"]["clusterIP"]
    agent.start()  # kube-proxy sees its connection drop and sends the new agent the full table
    started = time.monotonic()
    while not (agent.rpc("services.get", {"service": "default/web-agent-away"})["table"] or {}).get(
        "services"
    ):
        assert time.monotonic() - started < 3.0, "no table after the agent restart"
        time.sleep(0.02)
    wait_answering(services_cluster, f"http://{away}/hostname")
    wait_answering(services_cluster, f"http://{ip}/hostname")
    full_syncs = [
        line
        for line in services_cluster.proxies["node-1"].metrics().splitlines()
        if line.startswith('podnet_kubeproxy_syncs_total{kind="full"}')
    ]
    assert full_syncs and float(full_syncs[0].split()[-1]) >= 2


def test_a_sigkilled_agent_serves_its_last_table_until_kube_proxy_sends_one(services_cluster):
    """The table outlives the agent as iptables rules outlive kube-proxy: an agent restarted after a SIGKILL
    answers a Service from the table it was last given before kube-proxy reconnects (here: while kube-proxy
    is down), and its pods' connections to ClusterIPs are not refused meanwhile."""
    ip = create(services_cluster, make_service("web-outlives-agent", {"app": "web"}))["spec"]["clusterIP"]
    url = f"http://{ip}/hostname"
    wait_answering(services_cluster, url)
    proxy, agent = services_cluster.proxies["node-1"], services_cluster.agents["node-1"]
    proxy.kill()
    try:
        agent.kill()
        agent.start()
        wait_answering(services_cluster, url, timeout=5.0)
    finally:
        proxy.start()


def test_a_kube_proxy_restart_keeps_established_connections(services_cluster):
    """A connection opened before kube-proxy dies still carries bytes once its successor's full sync has
    replaced the agent's table, as conntrack keeps connections across an iptables restore."""
    ip = create(services_cluster, make_service("web-echo", {"app": "web"}))["spec"]["clusterIP"]
    wait_answering(services_cluster, f"http://{ip}/hostname")
    agent = services_cluster.agents["node-1"]
    proxy = services_cluster.proxies["node-1"]

    def transfer_params(size, hold=0.0):  # raw bytes to an agnhost port are echoed back
        return {"namespace": "default", "pod": "a", "dst": ip, "port": 80, "bytes": size, "hold": hold,
                "timeout": 60}

    probe = agent.rpc("pod.tcp_transfer", transfer_params(8 << 20), timeout=70)
    # The connection idles through most of the restart (about a second here); its bytes, sized for a few
    # seconds, make sure it is still open when the new table lands.
    size = min(128 << 20, max(8 << 20, int((8 << 20) * 3.0 / max(probe["seconds"], 1e-3))))
    hold = 2.0

    async def transfer_across_restart():
        async with RpcClient(agent.socket) as rpc:
            transfer = asyncio.create_task(
                rpc.call("pod.tcp_transfer", transfer_params(size, hold), timeout=120)
            )
            await asyncio.sleep(0.3)  # opened and idle: the connection predates the kill
            await asyncio.to_thread(proxy.kill)
            await asyncio.to_thread(proxy.start)  # returns once its full sync replaced the agent's table
            in_flight = not transfer.done()
            return await transfer, in_flight

    result, in_flight = asyncio.run(transfer_across_restart())
    assert in_flight, f"the {size} B transfer ended before the restart; it proves nothing"
    assert result["echoed"] == size
