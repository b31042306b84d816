"""TAP offloads end to end (root): two node agents (127.0.200.1 and .2) with netns pods and their TAPs'
checksum and segmentation offloads on (the default). A pod on node 2 sends 100 MB to a pod on node 1;
the sha256 the receiver computes is the one of what was sent, and the counters show the way it went:
the client's kernel handed its agent TCP super-frames, node 2 sent their segments with UDP_SEGMENT,
node 1 read them joined (UDP_GRO) and wrote super-frames into the server's TAP. A pod on node 1 sends the
same to it without a tunnel between them: super-packets straight from one TAP to the other.

The same transfer again with the nodes in namespaces of their own (`podnet up --hosts netns`) and 1% of
node 2's underlay sends lost (an iptables `statistic` rule in its namespace; this kernel has no netem. A
send with UDP_SEGMENT is one packet to netfilter, so such a loss takes a whole burst of segments): what is
lost is sent again by the pods' kernels, and what arrives is still exactly what was sent."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys

import pytest
from support.apiserver import ApiServerProcess
from support.netns_pods import ensure_tools, netns_pod, pod_exec, require_root
from support.nodeagent import REPO, AgentProcess, Cluster, free_udp_port, wait_running

from podnet.netns.ip import list_namespaces
from podnet.rpc.session import call_once

pytestmark = [pytest.mark.root, pytest.mark.slow]

ADDRESSES = ("127.0.200.1", "127.0.200.2")
SIZE = 100 * 1024 * 1024
SEED = 21
PORT = 5000
IN_NODE_2 = ("ip", "netns", "exec", "podnet-host-node-2")

# Reads one connection to its end, then answers with the byte count and the sha256 of what it read.
RECEIVER = """
import hashlib, socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", int(sys.argv[1])))
listener.listen()
while True:
    conn, _ = listener.accept()
    digest, count = hashlib.sha256(), 0
    while chunk := conn.recv(1 << 20):
        digest.update(chunk)
        count += len(chunk)
    conn.sendall(f"{count} {digest.hexdigest()}".encode())
    conn.close()
"""

# Sends SIZE bytes made from SEED to ADDRESS:PORT (its arguments), then prints what the receiver answered.
SENDER = """
import random, socket, sys
address, port, seed, size = sys.argv[1], *map(int, sys.argv[2:])
data = random.Random(seed).randbytes(size)
conn = socket.create_connection((address, port), timeout=60)
conn.sendall(data)
conn.shutdown(socket.SHUT_WR)
answer = b""
while chunk := conn.recv(4096):
    answer += chunk
print(answer.decode())
"""


@pytest.fixture
def cluster(tmp_path):
    require_root()
    ensure_tools()
    (tmp_path / "api").mkdir()
    api = ApiServerProcess(tmp_path / "api", f"sqlite:///{tmp_path / 'api' / 'store.db'}", controllers=True)
    cluster = Cluster(api, tmp_path, {})
    names = ("offl-1", "offl-2")
    try:
        api.start()
        port = free_udp_port(*ADDRESSES)
        for name, address in zip(names, ADDRESSES, strict=True):
            cluster.agents[name] = AgentProcess(name, address, tmp_path, api.kubeconfig, port,
                                                extra_args=("--pod-mode", "netns"))
            cluster.agents[name].start()

        async def create(client) -> None:
            await client.create(netns_pod("receiver", names[0], command=["python3", "-c", RECEIVER, str(PORT)]))
            await client.create(netns_pod("sender", names[1]))
            await client.create(netns_pod("neighbour", names[0]))
            for pod in ("receiver", "sender", "neighbour"):
                cluster.pod_ips[pod] = (await wait_running(client, "default", pod))["status"]["podIP"]

        cluster.api_call(create)
        yield cluster
    finally:
        for agent in cluster.agents.values():
            agent.kill(signal.SIGTERM)  # a graceful stop removes the agent's namespaces
        api.kill()


def counters(agent: AgentProcess) -> tuple[dict, dict]:
    """(the agent's counters, its netns pods' counters by name)."""
    node = asyncio.run(call_once(agent.socket, "counters", timeout=5))
    pods = asyncio.run(call_once(agent.socket, "pods.list", timeout=5))
    return node, {pod["name"]: pod["counters"] for pod in pods}


def test_100_mb_cross_node_with_offloads_arrive_intact(cluster):
    expected = hashlib.sha256(random.Random(SEED).randbytes(SIZE)).hexdigest()
    answer = _send(lambda *argv: pod_exec(cluster, "sender", *argv, timeout=120), cluster.pod_ips["receiver"])
    assert answer == [str(SIZE), expected]

    node1, node2 = (counters(agent) for agent in cluster.agents.values())
    assert node2[1]["sender"]["rx.super-frames"] > 0  # its kernel left segmentation to the TAP
    assert node2[0]["tunnel.tx.segmented-sends"] > 0  # UDP_SEGMENT carried the segments
    assert node1[0]["tunnel.rx.joined-reads"] > 0  # UDP_GRO brought them back joined
    assert node1[1]["receiver"]["tx.super-frames"] > 0  # and they went into the TAP coalesced
    assert not {k: v for k, v in node1[0].items() if k.startswith("drop.") and v}, node1[0]


def _send(run_in_sender, receiver: str) -> list[str]:
    for _ in range(50):  # the receiver's program may still be starting
        run = run_in_sender("python3", "-c", SENDER, receiver, str(PORT), str(SEED), str(SIZE))
        if run.returncode == 0:
            return run.stdout.split()
    raise AssertionError(run.stderr)


def test_100_mb_through_a_lossy_underlay_between_node_namespaces(tmp_path):
    require_root()
    ensure_tools()
    mine = ("podnet-host-node-", "podnet-node-1-default.receiver", "podnet-node-2-default.sender")
    assert not [n for n in list_namespaces() if n.startswith(mine)], "a previous run left namespaces: podnet clean --all"
    home = tmp_path / "home"
    env = dict(os.environ, PYTHONPATH=str(REPO), PODNET_HOME=str(home), KUBECONFIG=str(home / "kubeconfig"))

    def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "podnet", *args], capture_output=True, text=True, env=env,
                              timeout=timeout, input="")

    pods = [netns_pod("receiver", "node-1", command=["python3", "-c", RECEIVER, str(PORT)]), netns_pod("sender", "node-2")]
    manifests = tmp_path / "pods.json"
    manifests.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    try:
        up = cli("up", "--nodes", "2", "--hosts", "netns", "--pod-mode", "netns", "--home", str(home), timeout=150)
        assert up.returncode == 0, up.stdout + up.stderr
        lossy = subprocess.run([*IN_NODE_2, "iptables", "-A", "OUTPUT", "-o", "eth0", "-p", "udp", "-m", "statistic",
                                "--mode", "random", "--probability", "0.01", "-j", "DROP"], capture_output=True, text=True)
        assert lossy.returncode == 0, lossy.stderr
        assert cli("apply", "-f", str(manifests)).returncode == 0

        def receiver_ip() -> str | None:
            got = cli("get", "pod", "receiver", "-o", "json")
            return got.returncode == 0 and json.loads(got.stdout).get("status", {}).get("podIP")

        for _ in range(300):
            if address := receiver_ip():
                break
            subprocess.run(["sleep", "0.2"])
        else:
            raise AssertionError(f"the receiver has no address: {cli('get', 'pods', '-o', 'wide').stdout}")
        answer = _send(lambda *argv: cli("exec", "sender", "--", *argv, timeout=300), address)
        assert answer == [str(SIZE), hashlib.sha256(random.Random(SEED).randbytes(SIZE)).hexdigest()]
        rules = subprocess.run([*IN_NODE_2, "iptables", "-L", "OUTPUT", "-v", "-x", "-n"], capture_output=True, text=True)
        dropped = next(line for line in rules.stdout.splitlines() if "statistic" in line)
        assert int(dropped.split()[0]) > 0, dropped  # the rule did lose packets on the way
    finally:
        cleaned = cli("clean", "--home", str(home))
    assert cleaned.returncode == 0, cleaned.stderr


def test_100_mb_between_pods_of_one_node_go_as_super_packets(cluster):
    """The same node: the pipeline hands the sender's super-packets to the receiver's TAP whole, with a
    checksum made afresh for the one the sender's kernel left partial."""
    _, before = counters(cluster.agents["offl-1"])
    answer = _send(lambda *argv: pod_exec(cluster, "neighbour", *argv, timeout=120), cluster.pod_ips["receiver"])
    assert answer == [str(SIZE), hashlib.sha256(random.Random(SEED).randbytes(SIZE)).hexdigest()]
    _, after = counters(cluster.agents["offl-1"])
    assert after["neighbour"]["rx.super-frames"] > 0
    assert after["receiver"]["tx.super-frames"] - before["receiver"]["tx.super-frames"] > 0
