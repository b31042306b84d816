"""A PROXY protocol v2 header is believed only from the cloud load balancer (issue 23, item 4).

With externalTrafficPolicy Local the pod sees the client the header names, and NetworkPolicy ipBlocks
judge that address; a header from anyone would let any local client pick the address it is judged by.
Against a real API server, node agent (`--proxy-protocol-from` the balancer's address) and kube-proxy:
the same forged header sent to a nodePort from another address is ignored (the pod sees the real peer)
and counted, and from the balancer's address it is honoured.
"""

from __future__ import annotations

import socket
import time

from podnet.nodeagent.nodeports import client_of, trusted_proxies
from podnet.overlay.wire import proxyv2
from support.apiserver import ApiServerProcess
from support.kubeproxy import KubeProxyProcess, free_port
from support.nodeagent import AgentProcess, Cluster, free_udp_port, pod_manifest, wait_running

NODE = "127.0.110.11"
BALANCER = "127.0.110.10"
STRANGER = "127.0.110.50"
CLAIMED = ("203.0.113.7", 40000)


def test_the_client_rule():
    header = proxyv2.decode(proxyv2.proxy_inet(proxyv2.Transport.STREAM, CLAIMED, (NODE, 80)))
    trusted = trusted_proxies([BALANCER, "10.20.0.0/16"])
    assert client_of(header, (BALANCER, 5000), trusted) == (CLAIMED, False)
    assert client_of(header, ("10.20.3.4", 5000), trusted) == (CLAIMED, False)
    assert client_of(header, (STRANGER, 5000), trusted) == ((STRANGER, 5000), True)
    assert client_of(header, (BALANCER, 5000), ()) == ((BALANCER, 5000), True)
    assert client_of(None, (STRANGER, 5000), trusted) == ((STRANGER, 5000), False)


def _client_ip_through(node_port: int, source: str, *, forged: bool = True) -> str:
    """What the pod's /clientip answers to a connection from `source` that starts with a forged header
    (or, `forged=False`, with none)."""
    with socket.create_connection((NODE, node_port), timeout=10, source_address=(source, 0)) as sock:
        if forged:
            sock.sendall(proxyv2.proxy_inet(proxyv2.Transport.STREAM, CLAIMED, (NODE, node_port)))
        sock.sendall(b"GET /clientip HTTP/1.0\r\nHost: web\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.decode().partition("\r\n\r\n")[2].rpartition(":")[0]


def test_a_forged_header_names_no_client_unless_it_comes_from_the_balancer(tmp_path):
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess("pnproxy-1", NODE, home, api.kubeconfig, free_udp_port(NODE),
                         extra_args=("--proxy-protocol-from", BALANCER))
    proxy = KubeProxyProcess(agent, api.kubeconfig)
    try:
        api.start()
        agent.start()
        proxy.start()
        cluster = Cluster(api, home, {agent.name: agent})
        node_port = free_port(NODE)
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"type": "NodePort", "externalTrafficPolicy": "Local", "selector": {"app": "web"},
                            "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}}

        async def create(client):
            await client.create(pod_manifest("web", agent.name, ports=[{"containerPort": 8080, "name": "web"}]))
            await wait_running(client, "default", "web")
            await client.create(service)

        cluster.api_call(create)
        deadline = time.monotonic() + 20
        # Until kube-proxy has programmed the nodePort and the pod answers; without a header, so that an
        # attempt cut short does not count as one.
        while True:
            try:
                if _client_ip_through(node_port, STRANGER, forged=False) == STRANGER:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, agent.log()[-2000:]
            time.sleep(0.2)
        assert _client_ip_through(node_port, STRANGER) == STRANGER
        assert _client_ip_through(node_port, STRANGER) == STRANGER
        counters = agent.counters()
        assert counters.get("nodeports.tcp.untrusted-proxy-header") == 2, counters
        assert counters.get("nodeports.tcp.proxy-header", 0) == 0

        assert _client_ip_through(node_port, BALANCER) == CLAIMED[0]
        assert agent.counters().get("nodeports.tcp.proxy-header") == 1
    finally:
        proxy.kill()
        agent.kill()
        api.kill()
