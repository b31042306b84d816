"""The underlay believes only nodes, and pods cannot speak as theirs (issue 23, item 5).

Against a real API server and node agent: a VXLAN datagram from an address that is no node's is dropped
and counted before anything inside it is looked at; and a pod cannot use the host bridge, which speaks
from the node's own address, to reach the ports that believe that address (the VXLAN port of any node,
BGP, etcd) nor UDP to the API server's port, while other host services stay reachable.
"""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlsplit

import pytest
from podnet.nodeagent.hostguard import HostGuard, ProtectedPort, builtin
from podnet.overlay.wire import ethernet, ipv4, udp, vxlan
from support.apiserver import ApiServerProcess
from support.kubeproxy import KubeProxyProcess
from support.nodeagent import AgentProcess, Cluster, free_udp_port, pod_manifest, wait_running

NODE, STRANGER, OTHER_HOST = "127.0.165.31", "127.0.165.32", "127.0.165.33"

pytestmark = pytest.mark.timeout(90)


def test_the_guard_rules():
    guard = HostGuard([*builtin((4789, 5555), "https://127.0.0.1:6443"), ProtectedPort.parse("tcp/10.0.0.1:10250")])
    assert guard.refuses("udp", "127.0.0.12", 4789) and guard.refuses("udp", "192.0.2.1", 5555)
    assert guard.refuses("tcp", "127.0.0.12", 1790) and guard.refuses("tcp", "127.0.0.12", 2379)
    assert guard.refuses("udp", "127.0.0.1", 6443) and not guard.refuses("tcp", "127.0.0.1", 6443)
    assert guard.refuses("tcp", "10.0.0.1", 10250) and not guard.refuses("tcp", "10.0.0.2", 10250)
    assert not guard.refuses("udp", "127.0.0.53", 53)
    assert str(ProtectedPort.parse("UDP/53")) == "udp/53"
    for bad in ("53", "icmp/1", "tcp/x", "tcp/1.2.3:4", "udp/0"):
        with pytest.raises(ValueError):
            ProtectedPort.parse(bad)


@pytest.fixture
def one_node(tmp_path):
    home = tmp_path / "home"
    (home / "api").mkdir(parents=True)
    api = ApiServerProcess(home / "api", f"sqlite:///{home / 'api' / 'store.db'}", controllers=True)
    agent = AgentProcess("pnunder-1", NODE, home, api.kubeconfig, free_udp_port(NODE))
    try:
        api.start()
        agent.start()
        cluster = Cluster(api, home, {agent.name: agent})

        async def create(client):
            await client.create(pod_manifest("web", agent.name))
            return await wait_running(client, "default", "web")

        pod = cluster.api_call(create)
        yield api, agent, pod["status"]["podIP"]
    finally:
        agent.kill()
        api.kill()


def test_a_vxlan_datagram_from_an_address_that_is_no_node_is_dropped_and_counted(one_node):
    _, agent, pod_ip = one_node
    inner = udp.encode(udp.UdpDatagram(4000, 81, b"hostname"), "10.244.99.9", pod_ip)
    packet = ipv4.encode(ipv4.IPv4Packet("10.244.99.9", pod_ip, ipv4.IPProtocol.UDP, inner))
    frame = ethernet.encode(ethernet.EthernetFrame("02:00:00:00:00:01", "02:00:00:00:00:02", ethernet.EtherType.IPV4, packet))
    before = agent.counters()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((STRANGER, 0))
        for _ in range(5):
            sock.sendto(vxlan.encode_header(1) + frame, (NODE, agent.vxlan_port))
    after = agent.counters()
    for _ in range(50):
        if after.get("drop.vxlan-unknown-sender", 0) - before.get("drop.vxlan-unknown-sender", 0) == 5:
            break
        after = agent.counters()
    assert after.get("drop.vxlan-unknown-sender", 0) - before.get("drop.vxlan-unknown-sender", 0) == 5
    assert after.get("tunnel.rx", 0) - before.get("tunnel.rx", 0) == 5  # read, then refused
    assert after.get("delivered", 0) == before.get("delivered", 0)


def _udp_listener(address: str) -> tuple[socket.socket, int, list[tuple[bytes, str]]]:
    """A host UDP service that records what reaches it and from where."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    received: list[tuple[bytes, str]] = []

    def serve() -> None:
        while True:
            try:
                data, peer = sock.recvfrom(2048)
            except OSError:
                return
            received.append((data, peer[0]))

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1], received


def _wait_for(check, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return result


def test_the_host_bridge_refuses_the_cluster_s_own_ports(one_node):
    api, agent, _ = one_node
    api_port = urlsplit(api.url).port
    listener, port, received = _udp_listener(OTHER_HOST)
    proxy = KubeProxyProcess(agent, api.kubeconfig)
    try:
        def send_udp(host: str, port: int) -> None:
            agent.rpc("pod.send_udp", {"pod": "web", "dst": host, "port": port, "seconds": 0.05})

        # A host service that is no part of the cluster is reached through the bridge, from the node's address.
        send_udp(OTHER_HOST, port)
        _wait_for(lambda: received, "the host service never heard from the pod")
        assert received[0][1] == NODE
        # UDP to the API server's port, or to another node's VXLAN port: refused, each a new flow refused.
        send_udp("127.0.0.1", api_port)
        send_udp(OTHER_HOST, agent.vxlan_port)
        counters = agent.counters()
        assert counters.get("hostbridge.refused.udp", 0) >= 2, counters
        assert counters.get("hostbridge.udp.flows") == 1, counters  # only the first destination got a relay

        # TCP: a Service whose endpoint an administrator pointed at a host's BGP port, and one at the API server.
        proxy.start()

        async def create(client):
            for name, address, target in (("bgp-tap", OTHER_HOST, 1790), ("api-tap", "127.0.0.1", api_port)):
                await client.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                                     "spec": {"ports": [{"port": 80, "targetPort": target}]}})
                await client.create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                                     "metadata": {"name": name, "namespace": "default",
                                                  "labels": {"kubernetes.io/service-name": name}},
                                     "addressType": "IPv4", "endpoints": [{"addresses": [address]}],
                                     "ports": [{"port": target, "protocol": "TCP"}]})
            return {name: (await client.get("services", name, namespace="default"))["spec"]["clusterIP"]
                    for name in ("bgp-tap", "api-tap")}

        addresses = Cluster(api, agent.home, {agent.name: agent}).api_call(create)

        def connect(name: str) -> dict:
            return agent.rpc("pod.connect", {"pod": "web", "host": addresses[name], "port": 80, "timeout": 2.0})

        # In-cluster clients reach the API server through a Service: that stays open.
        _wait_for(lambda: connect("api-tap")["ok"], "the API server was never reached through its Service")
        answer = connect("bgp-tap")
        assert not answer["ok"], answer
        assert agent.counters().get("hostbridge.refused.tcp", 0) >= 1
    finally:
        proxy.kill()
        listener.close()
