"""Network-namespace pods on two real node agents: real programs, real kernels, podnet's pipeline between."""

from __future__ import annotations

import json
import subprocess

import pytest
from podnet.overlay.pipeline.model import pod_mac, vtep_mac
from support.netns_pods import WEB_BODY, netns_pod, pod_exec, wait_for, wait_serving
from support.nodeagent import wait_running

from podnet.netns.ip import list_namespaces, namespace_pids
from podnet.rpc.agentmethods import AgentMethod

pytestmark = pytest.mark.root


def test_curl_reaches_http_server_in_other_node_by_pod_ip(netns_cluster):
    web = netns_cluster.pod_ips["web"]
    body = wait_serving(netns_cluster, "client", f"http://{web}:8080/")
    assert body == WEB_BODY


def test_ping_crosses_two_router_hops_and_a_spent_ttl_is_reported_by_the_gateway(netns_cluster):
    # As with flannel or Calico: each node routes the packet on, so the reply arrives with ttl=62.
    web = netns_cluster.pod_ips["web"]
    ping = pod_exec(netns_cluster, "client", "ping", "-n", "-c", "1", "-W", "3", web)
    assert ping.returncode == 0 and "ttl=62" in ping.stdout, ping.stdout + ping.stderr
    gateway = netns_cluster.pod_ips["client"].rsplit(".", 1)[0] + ".1"
    dying = pod_exec(netns_cluster, "client", "ping", "-n", "-c", "1", "-W", "3", "-t", "1", web)
    assert dying.returncode == 1, dying.stdout + dying.stderr
    assert f"From {gateway}" in dying.stdout and "Time to live exceeded" in dying.stdout, dying.stdout


def _apply(cluster, fn):
    async def run(client):
        return await fn(client)

    return cluster.api_call(run)


def test_curl_reaches_the_service_by_name_through_dns_and_kube_proxy(netns_cluster):
    # web → web.default.svc.cluster.local (search path, ndots 5) → ClusterIP → DNAT → the pod on the other node
    body = wait_serving(netns_cluster, "client", "http://web/")
    assert body == WEB_BODY


def test_dig_in_a_pod_resolves_cluster_names_through_the_kube_dns_service(netns_cluster):
    service = _apply(netns_cluster, lambda c: c.get("services", "web", "default"))
    run = pod_exec(netns_cluster, "client", "dig", "+short", "+time=2", "+tries=2", "web.default.svc.cluster.local")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [service["spec"]["clusterIP"]]
    resolv = pod_exec(netns_cluster, "client", "cat", "/etc/resolv.conf")
    assert "nameserver 10.96.0.10" in resolv.stdout
    assert "search default.svc.cluster.local svc.cluster.local cluster.local" in resolv.stdout
    assert "options ndots:5" in resolv.stdout


def test_a_denying_policy_makes_the_same_curl_fail(netns_cluster):
    web = netns_cluster.pod_ips["web"]
    wait_serving(netns_cluster, "client", f"http://{web}:8080/")
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "deny-web", "namespace": "default"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"], "ingress": []},
    }
    _apply(netns_cluster, lambda c: c.create(deny))
    try:
        def refused() -> bool:
            return pod_exec(netns_cluster, "client", "curl", "-sS", "--max-time", "1", f"http://{web}:8080/").returncode != 0

        wait_for(refused, 10, "the policy to be enforced")
        run = pod_exec(netns_cluster, "client", "curl", "-sS", "--max-time", "2", "http://web/")
        assert run.returncode != 0
    finally:
        _apply(netns_cluster, lambda c: c.delete("networkpolicies", "deny-web", "default"))
    assert wait_serving(netns_cluster, "client", f"http://{web}:8080/") == WEB_BODY


def test_exec_passes_stdin_stdout_and_the_exit_code(netns_cluster):
    run = netns_cluster.cli("exec", "client", "--", "sh", "-c", "cat; ip -4 -o addr show eth0; exit 7")
    assert run.returncode == 7
    assert netns_cluster.pod_ips["client"] + "/24" in run.stdout
    fed = subprocess.run([*netns_cluster.cli_argv(), "exec", "client", "--", "cat"], input="through\n",
                         capture_output=True, text=True, env=netns_cluster.cli_env(), timeout=30)
    assert fed.returncode == 0 and fed.stdout == "through\n"


def test_a_container_that_exits_is_restarted_and_counted(netns_cluster):
    node = netns_cluster.node_names[0]
    _apply(netns_cluster, lambda c: c.create(netns_pod("crasher", node, command=["sh", "-c", "sleep 0.2; exit 3"])))
    try:
        def pod() -> dict:
            return _apply(netns_cluster, lambda c: c.get("pods", "crasher", "default"))

        def container(obj: dict) -> dict:
            return ((obj.get("status") or {}).get("containerStatuses") or [{}])[0]

        assert wait_for(lambda: container(pod()).get("restartCount", 0) >= 2, 15, "two restarts")
        terminated = container(pod())["lastState"]["terminated"]
        assert terminated["exitCode"] == 3 and terminated["reason"] == "Error"
        def backing_off() -> dict | None:
            obj = pod()
            return obj if container(obj)["state"].get("waiting") else None

        waiting = wait_for(backing_off, 10, "the back-off between restarts")
        assert container(waiting)["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        conditions = {c["type"]: c["status"] for c in waiting["status"]["conditions"]}
        assert conditions["Ready"] == "False" and conditions["ContainersReady"] == "False"
    finally:
        _apply(netns_cluster, lambda c: c.delete("pods", "crasher", "default"))
    name = f"podnet-{node}-default.crasher"
    wait_for(lambda: name not in list_namespaces(), 10, f"{name} to be removed")


def test_a_sigkilled_agent_adopts_its_pods_namespaces_and_processes(netns_cluster):
    web_node = netns_cluster.node_names[0]
    agent = netns_cluster.agents[web_node]
    netns = f"podnet-{web_node}-default.web"
    pids_before = set(namespace_pids(netns))
    assert pids_before, "the web server runs in the pod's namespace"
    _apply(netns_cluster, lambda c: c.create(netns_pod("doomed", web_node)))
    _apply(netns_cluster, lambda c: wait_running(c, "default", "doomed"))
    doomed = f"podnet-{web_node}-default.doomed"
    assert doomed in list_namespaces()
    agent.kill()  # SIGKILL: nothing is cleaned up
    _apply(netns_cluster, lambda c: c.delete("pods", "doomed", "default"))
    agent.start()
    web = netns_cluster.pod_ips["web"]
    assert wait_serving(netns_cluster, "client", f"http://{web}:8080/") == WEB_BODY
    pod = _apply(netns_cluster, lambda c: c.get("pods", "web", "default"))
    assert pod["status"]["podIP"] == web
    assert set(namespace_pids(netns)) == pids_before  # the same server process, adopted, not restarted
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    wait_for(lambda: doomed not in list_namespaces(), 10, "the deleted pod's namespace to be collected")
    # Deleted gracefully while the agent was away, it is terminated by the new agent, which never held it:
    # its chain's DEL (the attachment the previous run made) runs then, not when the agent stops.
    wait_for(lambda: "doomed" not in {a["name"] for a in agent.rpc(AgentMethod.CNI_LIST)}, 10,
             "the deleted pod's attachment to be undone")


def test_iperf3_runs_across_nodes(netns_cluster):
    node = netns_cluster.node_names[0]
    _apply(netns_cluster, lambda c: c.create(netns_pod("iperf", node, command=["iperf3", "-s"])))
    try:
        ip = _apply(netns_cluster, lambda c: wait_running(c, "default", "iperf"))["status"]["podIP"]

        def measured():
            run = pod_exec(netns_cluster, "client", "iperf3", "-c", ip, "-t", "1", "-J")
            return run.returncode == 0 and json.loads(run.stdout)

        result = wait_for(measured, 20, "iperf3 to connect", interval=0.5)
        assert result["end"]["sum_received"]["bytes"] > 0
    finally:
        _apply(netns_cluster, lambda c: c.delete("pods", "iperf", "default"))


def test_probe_and_trace_run_from_the_pods_own_kernel(netns_cluster):
    web = netns_cluster.pod_ips["web"]
    wait_serving(netns_cluster, "client", f"http://{web}:8080/")
    ok = netns_cluster.cli("probe", "client", "web", "--port", "8080")
    assert ok.returncode == 0, ok.stderr
    assert f"→ {web}:8080/TCP: connected" in ok.stdout
    refused = netns_cluster.cli("probe", "client", web, "--port", "8081")
    assert refused.returncode == 1 and "connection refused" in refused.stderr
    trace = netns_cluster.cli("trace", "client", f"{web}:8080")
    assert trace.returncode == 0, trace.stdout + trace.stderr
    stages = [line.split()[1] for line in trace.stdout.splitlines()[1:]]
    assert stages[:2] == ["probe", "source"]
    assert "vxlan-encap" in stages and "vxlan-decap" in stages and "deliver" in stages
    assert stages[-1] == "result" and "answered" in trace.stdout.splitlines()[-1]
    # to the Service: DNAT on the client's node, and the reply un-DNATed there on its way back in
    cluster_ip = _apply(netns_cluster, lambda c: c.get("services", "web", "default"))["spec"]["clusterIP"]
    service = netns_cluster.cli("trace", "client", f"{cluster_ip}:80")
    assert service.returncode == 0, service.stdout + service.stderr
    stages = [line.split()[1] for line in service.stdout.splitlines()[1:]]
    assert "service-dnat" in stages and stages[-3:] == ["nat", "deliver", "result"], service.stdout


def test_eth0_has_the_pods_mac_and_mtu_and_the_node_answers_arp_for_the_gateway(netns_cluster):
    client_ip, web = netns_cluster.pod_ips["client"], netns_cluster.pod_ips["web"]
    gateway = client_ip.rsplit(".", 1)[0] + ".1"
    node_address = netns_cluster.agents[netns_cluster.node_names[1]].address
    script = (f"curl -s -m 2 -o /dev/null http://{web}:8080/; ip -o link show eth0; ip route show default; "
              f"ip neigh show {gateway}")
    run = pod_exec(netns_cluster, "client", "sh", "-c", script)
    assert run.returncode == 0, run.stderr
    assert f"link/ether {pod_mac(client_ip)}" in run.stdout and "mtu 1450" in run.stdout
    assert f"default via {gateway} dev eth0" in run.stdout
    assert f"{gateway} dev eth0 lladdr {vtep_mac(node_address)}" in run.stdout  # proxy ARP by the agent
