"""Two real node agents on 127.0.0.11 and 127.0.0.12 with a real API server; pods a (node-1) and
b (node-2) talk through real VXLAN datagrams, driven by the real CLI."""

import http.server
import os
import signal
import socket
import struct
import threading
import time
import urllib.request

import pytest
from podnet.overlay.pipeline.model import vtep_mac
from podnet.overlay.wire import ethernet, ipv4, udp, vxlan
from support.nodeagent import pod_manifest, wait_running

pytestmark = pytest.mark.slow  # real processes: about half a minute on an idle machine


def test_http_between_pods_on_two_nodes_keeps_the_source_pod_ip(two_node_cluster):
    ip_a, ip_b = two_node_cluster.pod_ips["a"], two_node_cluster.pod_ips["b"]
    assert ip_a.startswith("10.244.") and ip_b.startswith("10.244.") and ip_a.rsplit(".", 1)[0] != ip_b.rsplit(".", 1)[0]
    run = two_node_cluster.cli("exec", "a", "--", "http", f"http://{ip_b}/clientip")
    assert run.returncode == 0, run.stderr
    client_ip, _, client_port = run.stdout.strip().rpartition(":")
    assert client_ip == ip_a and client_port.isdigit()  # no NAT between pods
    run = two_node_cluster.cli("exec", "a", "--", "http", f"http://{ip_b}:8080/hostname")
    assert (run.returncode, run.stdout.strip()) == (0, "b")
    assert two_node_cluster.agents["node-1"].counters()["tunnel.tx"] > 0
    tracked = two_node_cluster.agents["node-2"].rpc("conntrack.list")
    assert any(e["original"].startswith(f"TCP {ip_a}:") and e["original"].endswith(f"→ {ip_b}:8080") for e in tracked)
    routes = two_node_cluster.cli("dataplane", "node-1", "routes")
    assert routes.returncode == 0 and "via 127.0.0.12" in routes.stdout and "vxlan" in routes.stdout


def test_nodes_are_registered_ready_with_leases_and_pod_status_like_a_kubelet(two_node_cluster):
    async def read(client):
        node = await client.get("nodes", "node-1")
        lease = await client.get("leases", "node-1", "kube-node-lease")
        pod = await client.get("pods", "a", "default")
        return node, lease, pod

    node, lease, pod = two_node_cluster.api_call(read)
    assert {"type": "InternalIP", "address": "127.0.0.11"} in node["status"]["addresses"]
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True" and node["spec"]["podCIDR"].endswith("/24")
    assert lease["spec"]["holderIdentity"] == "node-1" and lease["spec"]["renewTime"]
    status = pod["status"]
    assert status["phase"] == "Running" and status["hostIP"] == "127.0.0.11"
    assert status["podIPs"] == [{"ip": status["podIP"]}]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == conditions["ContainersReady"] == conditions["PodScheduled"] == "True"
    metrics = urllib.request.urlopen(f"http://127.0.0.11:{two_node_cluster.agents['node-1'].status_port}/healthz")
    assert metrics.status == 200


def test_ping_and_udp_across_nodes(two_node_cluster):
    ip_a, ip_b = two_node_cluster.pod_ips["a"], two_node_cluster.pod_ips["b"]
    run = two_node_cluster.cli("exec", "b", "--", "ping", ip_a, "--count", "2")
    assert run.returncode == 0, run.stderr
    assert "2 packets transmitted, 2 received" in run.stdout
    run = two_node_cluster.cli("exec", "a", "--", "connect", f"{ip_b}:81", "--udp")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"answered by {ip_b}:81: b"
    closed = two_node_cluster.cli("exec", "a", "--", "connect", f"{ip_b}:82", "--udp", "--timeout", "1")
    assert closed.returncode == 1 and "port unreachable" in closed.stderr
    refused = two_node_cluster.cli("exec", "a", "--", "connect", f"{ip_b}:9999")
    assert refused.returncode == 1 and "connection refused" in refused.stderr


def test_containers_of_a_pod_share_localhost_and_it_never_leaves_the_pod(two_node_cluster):
    agent = two_node_cluster.agents["node-1"]
    before = agent.counters().get("egress.packets", 0)
    run = two_node_cluster.cli("exec", "a", "--", "http", "http://127.0.0.1:8080/hostname")
    assert (run.returncode, run.stdout.strip()) == (0, "a")
    run = two_node_cluster.cli("exec", "a", "--", "http", "http://127.0.0.1:80/clientip")
    assert run.returncode == 0 and run.stdout.startswith("127.0.0.1:")
    assert agent.counters().get("egress.packets", 0) == before


def test_missing_or_not_running_pods_give_one_line_errors(two_node_cluster):
    run = two_node_cluster.cli("exec", "ghost", "--", "http", "http://10.244.0.1/")
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1 and "not found" in run.stderr

    async def unscheduled(client):
        await client.create({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"},
                             "spec": {"nodeName": "node-9", "containers": [{"name": "c", "image": "x"}]}})

    two_node_cluster.api_call(unscheduled)
    run = two_node_cluster.cli("exec", "pending", "--", "ping", "10.244.0.1")
    assert run.returncode == 1 and "not Running" in run.stderr and len(run.stderr.strip().splitlines()) == 1


def test_probe_and_trace_show_the_journey_on_both_nodes(two_node_cluster):
    ip_b = two_node_cluster.pod_ips["b"]
    run = two_node_cluster.cli("probe", "a", "b", "--port", "80")
    assert run.returncode == 0 and "connected" in run.stdout, run.stderr
    run = two_node_cluster.cli("probe", "a", ip_b, "--port", "81", "--protocol", "UDP")
    assert run.returncode == 0, run.stderr
    assert two_node_cluster.cli("probe", "a", "b", "--port", "7").returncode == 1
    run = two_node_cluster.cli("trace", "a", f"{ip_b}:80")
    assert run.returncode == 0, run.stdout + run.stderr
    stages = [line.split()[1] for line in run.stdout.splitlines()[1:]]
    assert stages[:8] == ["probe", "source", "conntrack", "service-dnat", "egress-policy", "route", "ttl", "vxlan-encap"]
    # then node-2's half: decap, a router hop, conntrack, ingress policy, delivery, the reply back into the tunnel
    assert stages[8:14] == ["vxlan-decap", "ttl", "conntrack", "ingress-policy", "deliver", "source"]
    assert stages[-3:] == ["conntrack", "deliver", "result"]
    assert "VNI 1: outer 127.0.0.11:" in run.stdout and "→ 127.0.0.12:" in run.stdout


def _vxlan_from(sender: str, port: int, datagram: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((sender, 0))
        sock.sendto(datagram, ("127.0.0.12", port))


def test_malformed_vxlan_is_dropped_counted_and_forwarding_continues(two_node_cluster):
    agent = two_node_cluster.agents["node-2"]
    ip_a, ip_b = two_node_cluster.pod_ips["a"], two_node_cluster.pod_ips["b"]
    port = agent.vxlan_port

    def datagram(src_ip: str, vni: int = 1) -> bytes:
        body = udp.encode(udp.UdpDatagram(1234, 81, b"hostname"), src_ip, ip_b)
        packet = ipv4.encode(ipv4.IPv4Packet(src_ip, ip_b, ipv4.IPProtocol.UDP, body))
        frame = ethernet.encode(ethernet.EthernetFrame(vtep_mac("127.0.0.12"), vtep_mac("127.0.0.11"), 0x0800, packet))
        return vxlan.encode(vni, frame)

    good = datagram(ip_a)
    cases = {
        "vxlan-short": ("127.0.0.11", good[:5]),
        "vxlan-bad-flags": ("127.0.0.11", b"\x00" + good[1:]),
        "vxlan-wrong-vni": ("127.0.0.11", datagram(ip_a, vni=2)),
        "vxlan-unknown-sender": ("127.0.0.99", good),
        "vxlan-spoofed-inner-source": ("127.0.0.11", datagram("10.244.200.7")),
    }
    before = agent.counters()
    for sender, payload in cases.values():
        _vxlan_from(sender, port, payload)
    _vxlan_from("127.0.0.11", port, struct.pack("!I", 0x08000000))  # one more short one
    run = two_node_cluster.cli("exec", "a", "--", "http", f"http://{ip_b}/hostname")
    assert (run.returncode, run.stdout.strip()) == (0, "b")
    after = agent.counters()
    for reason in cases:
        assert after.get(f"drop.{reason}", 0) > before.get(f"drop.{reason}", 0), reason
    metrics = urllib.request.urlopen(f"http://127.0.0.12:{agent.status_port}/metrics", timeout=5).read().decode()
    assert 'podnet_dataplane_drops_total{reason="vxlan-wrong-vni"}' in metrics


def _services(*entries):
    return {"mode": "iptables", "services": [
        {"service": f"default/{name}", "port_name": "", "protocol": protocol, "cluster_ip": ip, "port": port,
         "endpoints": [list(e) for e in endpoints]}
        for name, protocol, ip, port, endpoints in entries
    ]}


def test_service_dnat_keeps_the_client_ip(two_node_cluster):
    agent = two_node_cluster.agents["node-1"]
    ip_a, ip_b = two_node_cluster.pod_ips["a"], two_node_cluster.pod_ips["b"]
    table = _services(("web", "TCP", "10.96.0.50", 80, [(ip_b, 8080, "node-2")]))
    assert agent.rpc("services.apply", {"mode": "iptables", "table": table}) == {"rules": 1, "conntrack_cleared": 0}
    run = two_node_cluster.cli("exec", "a", "--", "http", "http://10.96.0.50/clientip")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().rpartition(":")[0] == ip_a
    run = two_node_cluster.cli("trace", "a", "10.96.0.50:80")
    assert "default/web" in run.stdout and f"→ {ip_b}:8080" in run.stdout, run.stdout


def test_a_pod_reaches_itself_through_a_service_and_sees_its_node_as_the_client(two_node_cluster):
    agent = two_node_cluster.agents["node-1"]
    ip_a = two_node_cluster.pod_ips["a"]
    table = _services(("self", "TCP", "10.96.0.52", 80, [(ip_a, 80, "node-1")]))
    agent.rpc("services.apply", {"mode": "iptables", "table": table})
    run = two_node_cluster.cli("exec", "a", "--", "http", "http://10.96.0.52/clientip")
    assert run.returncode == 0, run.stderr
    gateway = ip_a.rsplit(".", 1)[0] + ".1"
    assert run.stdout.strip().rpartition(":")[0] == gateway


def test_a_refusal_behind_a_service_reaches_the_client_from_the_service_address(two_node_cluster):
    agent = two_node_cluster.agents["node-1"]
    ip_b = two_node_cluster.pod_ips["b"]
    table = _services(("closed", "UDP", "10.96.0.51", 53, [(ip_b, 9, "node-2")]))  # nothing listens on 9
    agent.rpc("services.apply", {"mode": "iptables", "table": table})
    run = two_node_cluster.cli("exec", "a", "--", "connect", "10.96.0.51:53", "--udp", "--timeout", "10")
    assert run.returncode == 1
    assert "port unreachable" in run.stderr, run.stdout + run.stderr
    assert agent.counters().get("nat.related", 0) >= 1


class _ClientAddress(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the name http.server calls
        body = self.client_address[0].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_pods_reach_host_network_endpoints_through_the_host_bridge(two_node_cluster):
    agent = two_node_cluster.agents["node-1"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClientAddress)
    udp_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp_sock.bind(("127.0.0.1", 0))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def udp_echo():
        data, peer = udp_sock.recvfrom(2048)
        udp_sock.sendto(data + b" from " + peer[0].encode(), peer)

    threading.Thread(target=udp_echo, daemon=True).start()
    try:
        table = _services(
            ("host-web", "TCP", "10.96.0.60", 80, [("127.0.0.1", server.server_address[1], "")]),
            ("host-dns", "UDP", "10.96.0.60", 53, [("127.0.0.1", udp_sock.getsockname()[1], "")]),
        )
        agent.rpc("services.apply", {"mode": "iptables", "table": table})
        run = two_node_cluster.cli("exec", "a", "--", "http", "http://10.96.0.60/")
        assert (run.returncode, run.stdout.strip()) == (0, "127.0.0.11"), run.stderr + str(agent.counters())
        run = two_node_cluster.cli("exec", "a", "--", "connect", "10.96.0.60:53", "--udp")
        assert run.returncode == 0, run.stderr
        # the answer comes back from the Service address, the host saw the node address
        assert run.stdout.strip() == "answered by 10.96.0.60:53: hostname from 127.0.0.11"
        assert agent.counters()["hostbridge.tcp.connections"] >= 1
    finally:
        server.shutdown()
        server.server_close()
        udp_sock.close()
        agent.rpc("services.apply", {"mode": "iptables", "table": _services()})


def test_node_ports_listen_on_the_node_address_and_snat_into_the_pod_network(two_node_cluster):
    agent = two_node_cluster.agents["node-1"]
    ip_b = two_node_cluster.pod_ips["b"]
    with socket.socket() as tcp_probe, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_probe:
        tcp_probe.bind(("127.0.0.11", 0))
        udp_probe.bind(("127.0.0.11", 0))
        tcp_port, udp_port = tcp_probe.getsockname()[1], udp_probe.getsockname()[1]
    table = {"mode": "ipvs", "services": [
        {"service": "default/web", "port_name": "", "protocol": "TCP", "cluster_ip": "10.96.0.70", "port": 80,
         "node_port": tcp_port, "endpoints": [[ip_b, 8080, "node-2"]], "external_endpoints": [[ip_b, 8080, "node-2"]]},
        {"service": "default/echo", "port_name": "", "protocol": "UDP", "cluster_ip": "10.96.0.70", "port": 81,
         "node_port": udp_port, "endpoints": [[ip_b, 81, "node-2"]], "external_endpoints": [[ip_b, 81, "node-2"]]},
    ]}
    agent.rpc("services.apply", {"mode": "ipvs", "table": table})
    try:
        url = f"http://127.0.0.11:{tcp_port}"
        assert urllib.request.urlopen(f"{url}/hostname", timeout=10).read() == b"b"
        client = urllib.request.urlopen(f"{url}/clientip", timeout=10).read().decode()
        assert client.rpartition(":")[0] == "127.0.0.11"  # SNAT to node-1, so replies return through it
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp_client:
            udp_client.settimeout(5)
            udp_client.sendto(b"hostname", ("127.0.0.11", udp_port))
            assert udp_client.recvfrom(2048)[0] == b"b"
    finally:
        agent.rpc("services.apply", {"mode": "ipvs", "table": {"mode": "ipvs", "services": []}})
    with pytest.raises(OSError):  # the listeners are gone with the table
        socket.create_connection(("127.0.0.11", tcp_port), timeout=2).close()


def test_dataplane_keeps_forwarding_while_the_api_server_is_down(two_node_cluster):
    ip_b = two_node_cluster.pod_ips["b"]
    agent = two_node_cluster.agents["node-1"]
    two_node_cluster.api.kill()
    try:
        result = agent.rpc("pod.http", {"namespace": "default", "pod": "a", "url": f"http://{ip_b}/hostname"})
        assert (result["status"], result["body"]) == (200, b"b")
    finally:
        two_node_cluster.api.start()

    async def add_d(client):
        await client.create(pod_manifest("d", "node-1"))
        return (await wait_running(client, "default", "d"))["status"]["podIP"]

    ip_d = two_node_cluster.api_call(add_d)  # the agent's informers resumed on their own
    run = two_node_cluster.cli("exec", "b", "--", "http", f"http://{ip_d}/hostname")
    assert (run.returncode, run.stdout.strip()) == (0, "d"), run.stderr


def test_agent_killed_and_restarted_keeps_pod_ips_and_traffic_resumes(two_node_cluster):
    agent = two_node_cluster.agents["node-2"]
    ip_b = two_node_cluster.pod_ips["b"]

    async def add_c(client):
        await client.create(pod_manifest("c", "node-2"))
        return (await wait_running(client, "default", "c"))["status"]["podIP"]

    ip_c = two_node_cluster.api_call(add_c)
    agent.kill()

    async def delete_c(client):
        await client.delete("pods", "c", "default")

    two_node_cluster.api_call(delete_c)  # deleted while its node's agent is down
    agent.start()
    assert {p["name"]: p["ip"] for p in agent.rpc("pods.list")} == {"b": ip_b}
    allocated = [p.name for p in (agent.state_dir / "ipam").rglob("10.*") if p.is_file()]
    assert allocated == [ip_b] and ip_c != ip_b  # c's address was released, nothing leaked
    run = two_node_cluster.cli("exec", "a", "--", "http", f"http://{ip_b}/hostname")
    assert (run.returncode, run.stdout.strip()) == (0, "b"), run.stderr


def test_sigterm_shuts_the_agent_down_promptly_and_cleanly(two_node_cluster):
    agent = two_node_cluster.agents["node-1"]
    process = agent.process
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert not os.path.exists(agent.socket)
    agent.process = None
    agent.start()
    assert {p["name"] for p in agent.rpc("pods.list")} >= {"a"}
