"""NodePort Services end to end: real curl on the host against real listeners on every node address,
bridged into the pod network; externalTrafficPolicy decides who answers and what client the pod sees;
healthCheckNodePort as kube-proxy serves it."""

import json
import socket
import time
import urllib.error
import urllib.request

from support.kubeproxy import answers_until_all, ask_udp, curl, free_port, start_labelled_pod, wait_curl

NODES = {"node-1": "127.0.0.11", "node-2": "127.0.0.12"}


def create_service(cluster, name, selector, port_spec, **spec):
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "NodePort", "selector": selector, "ports": [port_spec], **spec},
    }

    async def run(client):
        return await client.create(service)

    return cluster.api_call(run)


WEB = {"web-1", "web-2", "web-3"}  # the services_cluster's endpoints


def test_cluster_policy_answers_on_every_node_with_the_node_address_as_client(services_cluster):
    port = free_port(*NODES.values())
    create_service(
        services_cluster, "np-cluster", {"app": "web"}, {"port": 80, "targetPort": "web", "nodePort": port}
    )
    for node, address in NODES.items():
        for _ in range(6):
            client = wait_curl(f"http://{address}:{port}/clientip")
            client_ip, _, client_port = client.strip().rpartition(":")
            assert client_ip == address and client_port.isdigit(), (node, client)  # SNAT to this node
        url = f"http://{address}:{port}/hostname"
        seen = answers_until_all(lambda url=url: urllib.request.urlopen(url, timeout=5).read().decode(), WEB)
        assert seen == WEB, (node, seen)  # any node forwards to every endpoint


def test_local_policy_answers_only_where_an_endpoint_lives_with_the_real_client(services_cluster):
    start_labelled_pod(services_cluster, "solo", "node-2")
    port = free_port(*NODES.values())
    create_service(
        services_cluster,
        "np-local",
        {"app": "solo"},
        {"port": 80, "targetPort": "web", "nodePort": port},
        externalTrafficPolicy="Local",
    )
    client = wait_curl(f"http://127.0.0.12:{port}/clientip")
    assert client.strip().rpartition(":")[0] == "127.0.0.1"  # the real client, no SNAT
    with socket.socket() as sock:  # the pod sees the client's own port too
        sock.bind(("127.0.0.1", 0))
        sock.connect(("127.0.0.12", port))
        sock.sendall(b"GET /clientip HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        assert answer.decode().endswith(f"127.0.0.1:{sock.getsockname()[1]}")
    refused = curl(f"http://127.0.0.11:{port}/clientip")
    assert refused.returncode != 0  # no local endpoint on node-1: reset
    agent = services_cluster.agents["node-1"]
    assert agent.counters().get("nodeports.tcp.no-endpoint", 0) > 0


def test_udp_node_port(services_cluster):
    port = free_port(*NODES.values(), kind=socket.SOCK_DGRAM)
    create_service(
        services_cluster,
        "np-udp",
        {"app": "web"},
        {"port": 53, "protocol": "UDP", "targetPort": "echo", "nodePort": port},
    )
    answer, peer = ask_udp("127.0.0.11", port)
    assert answer.decode() in {"web-1", "web-2", "web-3"} and peer == ("127.0.0.11", port)


def health(address, port):
    try:
        with urllib.request.urlopen(f"http://{address}:{port}/", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_health_check_node_port_counts_local_endpoints(services_cluster):
    port, check = free_port(*NODES.values()), free_port(*NODES.values())
    create_service(
        services_cluster,
        "lb-local",
        {"app": "solo2"},
        {"port": 80, "targetPort": "web", "nodePort": port},
        type="LoadBalancer",
        externalTrafficPolicy="Local",
        healthCheckNodePort=check,
    )

    start_labelled_pod(services_cluster, "solo2", "node-1")
    deadline = time.monotonic() + 10
    while True:
        try:
            if health("127.0.0.11", check)[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "healthCheckNodePort never healthy on node-1"
        time.sleep(0.1)
    status, body = health("127.0.0.11", check)
    assert body["localEndpoints"] == 1 and body["service"] == {"namespace": "default", "name": "lb-local"}
    status, body = health("127.0.0.12", check)
    assert (status, body["localEndpoints"]) == (503, 0)
