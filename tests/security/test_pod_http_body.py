"""A virtual pod's HTTP server does not buffer what Content-Length promises (issue 23, item 7).

The server runs inside the node agent: a request promising gigabytes must cost the agent nothing. Against a
real API server, node agent and kube-proxy, a POST through a nodePort that announces 10 GB is answered 413
at once and the connection closed, the refusal is counted in the pod's counters, and the pod still answers.
"""

from __future__ import annotations

import socket
import time

from support.kubeproxy import node_with_proxy, web_on_node_port

NODE = "127.0.165.11"


def _exchange(node_port: int, request: bytes) -> bytes:
    with socket.create_connection((NODE, node_port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


def _serves_hostname(node_port: int) -> bool:
    try:
        return _exchange(node_port, b"GET /hostname HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nweb")
    except OSError:
        return False


def test_a_body_of_ten_gigabytes_is_refused_and_counted(tmp_path):
    with node_with_proxy(tmp_path / "home", "pnbody-1", NODE) as cluster:
        [agent] = cluster.agents.values()
        node_port = web_on_node_port(cluster)
        deadline = time.monotonic() + 20
        while not _serves_hostname(node_port):  # the pod's endpoint may still be on its way to kube-proxy
            assert time.monotonic() < deadline, agent.log()[-2000:]
            time.sleep(0.2)
        started = time.monotonic()
        answer = _exchange(node_port, b"POST /echo HTTP/1.1\r\nContent-Length: 10000000000\r\n\r\n" + b"x" * 65536)
        assert answer.startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n"), answer[:200]
        assert time.monotonic() - started < 5
        [pod] = agent.rpc("pods.list")
        assert pod["counters"].get("http_body_too_large") == 1, pod["counters"]
        assert _serves_hostname(node_port)
