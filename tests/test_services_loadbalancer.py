"""LoadBalancer Services end to end: the emulated cloud gives an address from its pool, writes it in
the Service's status, listens there and spreads clients over healthy nodes' nodePorts with a PROXY v2
header; Local keeps the real client address end to end; deleting the Service frees the address."""

import ipaddress
import socket
import time

from support.kubeproxy import answers_until_all, ask_udp, curl, free_port, start_labelled_pod, wait_curl


def lb_service(name, selector, port, node_port, protocol="TCP", **spec):
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "type": "LoadBalancer",
            "selector": selector,
            "ports": [
                {
                    "port": port,
                    "protocol": protocol,
                    "targetPort": "web" if protocol == "TCP" else "echo",
                    "nodePort": node_port,
                }
            ],
            **spec,
        },
    }


def api(cluster, fn):
    async def run(client):
        return await fn(client)

    return cluster.api_call(run)


def wait_ingress(cluster, name, timeout=10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        service = api(cluster, lambda c: c.get("services", name, "default"))
        ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        if ingress:
            return ingress[0]["ip"]
        assert time.monotonic() < deadline, f"{name}: no ingress address: {service.get('status')}"
        time.sleep(0.1)


def test_cluster_load_balancer_spreads_over_nodes_and_frees_its_address(services_cluster, cloud_lb):
    pool = ipaddress.IPv4Network(cloud_lb.pool)
    port = free_port("127.0.0.11", "127.0.0.12", low=20000, high=29999)
    node_port = free_port("127.0.0.11", "127.0.0.12")
    api(services_cluster, lambda c: c.create(lb_service("lb-web", {"app": "web"}, port, node_port)))
    address = wait_ingress(services_cluster, "lb-web")
    assert ipaddress.IPv4Address(address) in pool
    url = f"http://{address}:{port}"
    wait_curl(f"{url}/hostname")
    web = {"web-1", "web-2", "web-3"}
    assert answers_until_all(lambda: curl(f"{url}/hostname").stdout, web) == web
    clients = {curl(f"{url}/clientip").stdout.rpartition(":")[0] for _ in range(8)}
    assert clients <= {"127.0.0.11", "127.0.0.12"} and clients  # Cluster: SNAT at the node it reached
    assert 'podnet_cloudlb_connections_total{protocol="TCP"}' in cloud_lb.metrics()

    api(services_cluster, lambda c: c.delete("services", "lb-web", "default"))
    deadline = time.monotonic() + 10
    while curl(f"{url}/hostname", timeout=1).returncode == 0:
        assert time.monotonic() < deadline, "the load balancer still answers after the Service went"
        time.sleep(0.1)
    again = free_port("127.0.0.11", "127.0.0.12")
    api(services_cluster, lambda c: c.create(lb_service("lb-again", {"app": "web"}, port, again)))
    assert wait_ingress(services_cluster, "lb-again") == address  # the freed address is handed out again
    api(services_cluster, lambda c: c.delete("services", "lb-again", "default"))


def test_local_load_balancer_reaches_only_nodes_with_endpoints_and_keeps_the_client(
    services_cluster, cloud_lb
):
    start_labelled_pod(services_cluster, "lb-solo", "node-2")
    port = free_port("127.0.0.11", "127.0.0.12", low=20000, high=29999)
    node_port, check = free_port("127.0.0.11", "127.0.0.12"), free_port("127.0.0.11", "127.0.0.12")
    service = lb_service(
        "lb-local",
        {"app": "lb-solo"},
        port,
        node_port,
        externalTrafficPolicy="Local",
        healthCheckNodePort=check,
    )
    api(services_cluster, lambda c: c.create(service))
    address = wait_ingress(services_cluster, "lb-local")
    url = f"http://{address}:{port}"
    wait_curl(f"{url}/hostname")
    time.sleep(1.0)  # a few health-check rounds: node-1 answers 503 and leaves the rotation
    for _ in range(10):
        run = curl(f"{url}/clientip")
        assert run.returncode == 0, run.stderr
        assert run.stdout.rpartition(":")[0] == "127.0.0.1"  # the real client, carried by PROXY v2
    node2 = services_cluster.agents["node-2"].counters()
    assert node2.get("nodeports.tcp.proxy-header", 0) >= 10


def test_udp_load_balancer(services_cluster, cloud_lb):
    port = free_port("127.0.0.11", "127.0.0.12", low=20000, high=29999, kind=socket.SOCK_DGRAM)
    node_port = free_port("127.0.0.11", "127.0.0.12", kind=socket.SOCK_DGRAM)
    api(services_cluster, lambda c: c.create(lb_service("lb-udp", {"app": "web"}, port, node_port, "UDP")))
    address = wait_ingress(services_cluster, "lb-udp")
    answer, peer = ask_udp(address, port)
    assert answer.decode() in {"web-1", "web-2", "web-3"} and peer == (address, port)
