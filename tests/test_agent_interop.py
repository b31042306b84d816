"""What outside tools make of the agents' traffic (root): tshark decodes a `podnet capture` file and
live loopback traffic as VXLAN VNI 1 with the pod addresses inside, and a Linux kernel vxlan device in a
network namespace peers with an agent as if it were another node."""

import os
import shutil
import subprocess
import sys
import time

import pytest
from podnet.overlay.pipeline.model import vtep_mac
from support.nodeagent import AgentProcess, pod_manifest, wait_running

pytestmark = pytest.mark.root


def _need_root_and(tool: str) -> None:
    if os.geteuid() != 0 or shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs as root with {tool} installed")
        pytest.skip(f"needs root and {tool}")


def _vxlan_fields(tshark_args: list[str], port: int) -> list[list[str]]:
    """tshark's view of each VXLAN datagram: [vni, outer and inner ip.src, outer and inner ip.dst]."""
    out = subprocess.run(
        ["tshark", "-n", *tshark_args, "-d", f"udp.port=={port},vxlan", "-Y", "vxlan",
         "-T", "fields", "-e", "vxlan.vni", "-e", "ip.src", "-e", "ip.dst", "-E", "separator=|"],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return [line.split("|") for line in out.stdout.splitlines() if line]


def test_tshark_decodes_a_podnet_capture_as_vxlan_with_pod_addresses(two_node_cluster, tmp_path):
    _need_root_and("tshark")
    ip_a, ip_b = two_node_cluster.pod_ips["a"], two_node_cluster.pod_ips["b"]
    pcap_file = tmp_path / "node-1.pcap"
    capture = subprocess.Popen(
        [*two_node_cluster.cli_argv(), "capture", "--node", "node-1", "--seconds", "3", "-w", str(pcap_file)],
        env=two_node_cluster.cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        time.sleep(1.0)  # the capture stream is open before traffic starts
        run = two_node_cluster.cli("exec", "a", "--", "http", f"http://{ip_b}/hostname")
        assert run.returncode == 0, run.stderr
        capture.wait(timeout=30)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    rows = _vxlan_fields(["-r", str(pcap_file)], two_node_cluster.agents["node-1"].vxlan_port)
    assert rows, capture.stderr.read()
    assert all(row[0] == "1" for row in rows)
    assert ["1", f"127.0.0.11,{ip_a}", f"127.0.0.12,{ip_b}"] in rows
    assert ["1", f"127.0.0.12,{ip_b}", f"127.0.0.11,{ip_a}"] in rows


def test_tshark_decodes_live_loopback_traffic_as_vxlan(two_node_cluster):
    _need_root_and("tshark")
    ip_a, ip_b = two_node_cluster.pod_ips["a"], two_node_cluster.pod_ips["b"]
    port = two_node_cluster.agents["node-1"].vxlan_port
    live = subprocess.Popen(
        ["tshark", "-n", "-i", "lo", "-f", f"udp port {port}", "-a", "duration:8", "-c", "4", "-w", "-"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        banner = b""
        while b"Capturing on" not in banner and time.monotonic() < deadline:
            banner += live.stderr.read1(4096)
        run = two_node_cluster.cli("exec", "b", "--", "ping", ip_a, "--count", "2")
        assert run.returncode == 0, run.stderr
        captured, _ = live.communicate(timeout=20)
    finally:
        if live.poll() is None:
            live.kill()
            live.wait()
    decoded = subprocess.run(
        ["tshark", "-n", "-r", "-", "-d", f"udp.port=={port},vxlan", "-T", "fields", "-e", "vxlan.vni",
         "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-E", "separator=|"],
        input=captured, capture_output=True, timeout=30,
    )
    rows = [line.split("|") for line in decoded.stdout.decode().splitlines() if line]
    assert ["1", f"127.0.0.12,{ip_b}", f"127.0.0.11,{ip_a}", "8"] in rows
    assert ["1", f"127.0.0.11,{ip_a}", f"127.0.0.12,{ip_b}", "0"] in rows


KERNEL_PING = """
import socket, struct, sys
def checksum(data):
    total = int.from_bytes(data, "big") if len(data) % 2 == 0 else int.from_bytes(data + b"\\0", "big")
    total = total % 0xFFFF or (0xFFFF if total else 0)
    return ~total & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.settimeout(3)
for seq in (1, 2):
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"podnet"
    s.sendto(body[:2] + checksum(body).to_bytes(2, "big") + body[4:], (sys.argv[1], 0))
    while True:
        packet, _ = s.recvfrom(2048)
        ihl = (packet[0] & 15) * 4
        kind, _, _, ident, got = struct.unpack_from("!BBHHH", packet, ihl)
        if kind == 0 and ident == 0x4242 and got == seq:
            print("reply")
            break
"""

# `ethtool -K DEV tx off` without ethtool: over veth the kernel would otherwise leave the inner TCP
# checksum for a NIC to fill in (CHECKSUM_PARTIAL), and a userspace VXLAN endpoint never sees it filled.
TX_CHECKSUM_OFF = """
import ctypes, fcntl, socket, struct, sys
value = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))  # ETHTOOL_STXCSUM, off
request = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(value)) + bytes(16)
fcntl.ioctl(socket.socket(), 0x8946, request)  # SIOCETHTOOL
"""

KERNEL_NODE_ADDRESS = "10.251.0.2"
AGENT_ADDRESS = "10.251.0.1"
KERNEL_POD_CIDR = "10.244.250.0/24"
KERNEL_IP = "10.244.250.1"


@pytest.fixture
def kernel_vxlan_node(two_node_cluster):
    """A network namespace joined to the host by a veth pair; a node agent on the host end, a kernel
    vxlan device (VNI 1, the agents' port) on the namespace end, registered as Node `kernel-1`."""
    _need_root_and("ip")
    namespace = f"podnet-kx-{os.getpid()}"
    host_if = f"pkx{os.getpid()}"[:15]
    port = two_node_cluster.agents["node-1"].vxlan_port
    agent = None

    def ns(*args: str) -> None:
        subprocess.run(["ip", "netns", "exec", namespace, *args], check=True, capture_output=True)

    try:
        subprocess.run(["ip", "netns", "add", namespace], check=True)
        subprocess.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", namespace], check=True)
        subprocess.run(["ip", "addr", "add", f"{AGENT_ADDRESS}/24", "dev", host_if], check=True)
        subprocess.run(["ip", "link", "set", host_if, "up"], check=True)
        ns("ip", "addr", "add", f"{KERNEL_NODE_ADDRESS}/24", "dev", "eth0")
        ns("ip", "link", "set", "eth0", "up")
        ns("ip", "link", "set", "lo", "up")
        agent = AgentProcess("node-3", AGENT_ADDRESS, two_node_cluster.home, two_node_cluster.api.kubeconfig,
                             port)
        agent.start()
        agent_cidr = agent.rpc("node.info")["pod_cidr"]

        async def register_kernel_node(client):
            await client.create({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": "kernel-1"},
                "spec": {"podCIDR": KERNEL_POD_CIDR, "podCIDRs": [KERNEL_POD_CIDR]},
            })
            await client.patch("nodes", "kernel-1", {"status": {"addresses": [
                {"type": "InternalIP", "address": KERNEL_NODE_ADDRESS}]}}, subresource="status")
            await client.create(pod_manifest("k", "node-3"))
            return (await wait_running(client, "default", "k"))["status"]["podIP"]

        pod_ip = two_node_cluster.api_call(register_kernel_node)
        # flannel's vxlan setup, by hand: device, its MAC, the route to node-3's podCIDR via its VTEP
        agent_gateway = agent_cidr.split("/")[0]
        ns("ip", "link", "add", "vx0", "type", "vxlan", "id", "1", "local", KERNEL_NODE_ADDRESS,
           "dstport", str(port), "nolearning", "dev", "eth0")
        ns("ip", "link", "set", "vx0", "address", vtep_mac(KERNEL_NODE_ADDRESS), "mtu", "1450", "up")
        ns("ip", "addr", "add", f"{KERNEL_IP}/32", "dev", "vx0")
        ns(sys.executable, "-c", TX_CHECKSUM_OFF, "vx0")
        ns("ip", "neigh", "add", agent_gateway, "lladdr", vtep_mac(AGENT_ADDRESS), "dev", "vx0", "nud", "permanent")
        ns("bridge", "fdb", "append", vtep_mac(AGENT_ADDRESS), "dev", "vx0", "dst", AGENT_ADDRESS)
        ns("ip", "route", "add", agent_cidr, "via", agent_gateway, "dev", "vx0", "onlink")
        deadline = time.monotonic() + 10
        while not any(r["prefix"] == KERNEL_POD_CIDR for r in agent.rpc("routes.list")):
            assert time.monotonic() < deadline, "node-3 never learnt the route to kernel-1"
            time.sleep(0.05)
        yield namespace, agent, pod_ip
    finally:
        if agent is not None:
            agent.kill()
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)

        async def cleanup(client):
            for kind, name, namespace_ in (("pods", "k", "default"), ("nodes", "kernel-1", None),
                                           ("nodes", "node-3", None)):
                try:
                    await client.delete(kind, name, namespace_)
                except Exception:  # noqa: BLE001 - best effort: the module's API server goes away anyway
                    pass

        two_node_cluster.api_call(cleanup)


def test_linux_kernel_vxlan_peers_with_an_agent(kernel_vxlan_node, two_node_cluster):
    namespace, agent, pod_ip = kernel_vxlan_node
    # the kernel's own ICMP echo (a raw socket: no ping binary is needed in the namespace)
    ping = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", KERNEL_PING, pod_ip],
                          capture_output=True, text=True, timeout=30)
    assert ping.returncode == 0, ping.stdout + ping.stderr + str(agent.counters())
    assert ping.stdout.split() == ["reply", "reply"]
    listener = subprocess.Popen(
        ["ip", "netns", "exec", namespace, "python3", "-c",
         "import socket; s = socket.create_server(('0.0.0.0', 7777)); print('up', flush=True); "
         "c, a = s.accept(); print(a[0], flush=True); c.close()"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert listener.stdout.readline().strip() == "up"
        run = two_node_cluster.cli("exec", "k", "--", "connect", f"{KERNEL_IP}:7777")
        assert run.returncode == 0, run.stderr + str(agent.counters()) + str(agent.rpc("pods.list"))
        assert f"connected to {KERNEL_IP}:7777 from {pod_ip}:" in run.stdout
        listener.wait(timeout=10)
        assert listener.stdout.read().strip() == pod_ip  # the kernel saw the pod's own address
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
