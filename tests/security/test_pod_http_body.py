"""A virtual pod's HTTP server does not buffer what Content-Length promises (issue 23, item 7).

The server runs inside the node agent: a request promising gigabytes must cost the agent nothing. Against a
real API server, node agent and kube-proxy, a POST through a nodePort that announces 10 GB is answered 413
at once and the connection closed, the refusal is counted in the pod's counters, and the pod still answers.
"""

from __future__ import annotations

import socket
import time

from support.apiserver import ApiServerProcess
from support.kubeproxy import KubeProxyProcess, free_port
from support.nodeagent import AgentProcess, Cluster, free_udp_port, pod_manifest, wait_running

NODE = "127.0.165.11"


def _exchange(node_port: int, request: bytes) -> bytes:
    with socket.create_connection((NODE, node_port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


def test_a_body_of_ten_gigabytes_is_refused_and_counted(tmp_path):
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess("pnbody-1", NODE, home, api.kubeconfig, free_udp_port(NODE))
    proxy = KubeProxyProcess(agent, api.kubeconfig)
    try:
        api.start()
        agent.start()
        proxy.start()
        cluster = Cluster(api, home, {agent.name: agent})
        node_port = free_port(NODE)
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"type": "NodePort", "selector": {"app": "web"},
                            "ports": [{"port": 80, "targetPort": 8080, "nodePort": node_port}]}}

        async def create(client):
            await client.create(pod_manifest("web", agent.name, ports=[{"containerPort": 8080, "name": "web"}]))
            await wait_running(client, "default", "web")
            await client.create(service)

        cluster.api_call(create)
        hostname = b"GET /hostname HTTP/1.0\r\n\r\n"
        deadline = time.monotonic() + 20
        while True:  # until kube-proxy has programmed the nodePort
            try:
                assert _exchange(node_port, hostname).endswith(b"\r\n\r\nweb")
                break
            except OSError:
                assert time.monotonic() < deadline, agent.log()[-2000:]
                time.sleep(0.2)
        started = time.monotonic()
        answer = _exchange(node_port, b"POST /echo HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 65536)
        assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer[:200]
        assert time.monotonic() - started < 5
        [pod] = agent.rpc("pods.list")
        assert pod["counters"].get("http_body_too_large") == 1, pod["counters"]
        assert _exchange(node_port, hostname).endswith(b"\r\n\r\nweb")
    finally:
        proxy.kill()
        agent.kill()
        api.kill()
