"""`podnet up --encryption wireguard`: three nodes whose pods talk across the underlay inside WireGuard.

tshark on the loopback underlay reads only WireGuard messages between the nodes (its own dissector), and
no pod address; a transport datagram with one flipped byte is dropped and counted and traffic goes on;
an agent SIGKILLed and restarted keeps its key, handshakes again and its pods are reached again."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
from podnet.nodeagent.encryption import KEY_FILE, WG_PUBKEY_ANNOTATION
from podnet.overlay.wireguard.tunnel import PORT as WIREGUARD_PORT
from support.local_cluster import eventually, pod_on

pytestmark = pytest.mark.slow

NAMESPACE = "default"


async def _pods(cluster, nodes: int) -> list[dict]:
    await cluster.create(*(pod_on(f"web-{i}", NAMESPACE, f"node-{i}") for i in range(1, nodes + 1)))
    pods = await cluster.wait_running(NAMESPACE, None, nodes)
    return sorted(pods, key=lambda p: p["metadata"]["name"])


async def _all_pairs_connect(cluster, pods: list[dict]) -> None:
    for src in pods:
        for dst in pods:
            if src is not dst:
                ok = await cluster.probe(src, dst["status"]["podIP"], 80, timeout=2.0)
                assert ok, f"{src['metadata']['name']} -> {dst['metadata']['name']}"


def _dumpcap(path, prefix: str) -> subprocess.Popen:
    # The nodes' underlay only: the control plane's address (.10, DNS and the API) is left out.
    capture = subprocess.Popen(
        ["dumpcap", "-q", "-i", "lo", "-f", f"udp and net {prefix}.0/24 and not host {prefix}.10", "-w", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while not path.exists():
        assert capture.poll() is None and time.monotonic() < deadline, capture.stderr.read().decode()
        time.sleep(0.05)
    return capture


def _tshark(path, display_filter: str, *fields: str) -> list[list[str]]:
    argv = ["tshark", "-r", str(path), "-Y", display_filter, "-T", "fields", *(a for f in fields for a in ("-e", f))]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


async def _counter(cluster, node: str, name: str) -> int:
    return (await cluster.rpc(node, "counters")).get(name, 0)


async def test_encrypted_underlay_carries_only_wireguard_and_drops_a_flipped_byte(local_cluster, tmp_path):
    for tool in ("dumpcap", "tshark"):
        assert shutil.which(tool), f"{tool} is missing (Debian: tshark)"
    prefix = "127.0.195"
    capture_file = tmp_path / "underlay.pcapng"
    dumpcap = _dumpcap(capture_file, prefix)  # from before the first handshake
    try:
        cluster = await local_cluster(prefix, nodes=3, encryption="wireguard")
        pods = await _pods(cluster, 3)
        await _all_pairs_connect(cluster, pods)
        await asyncio.sleep(0.5)  # let dumpcap write the last datagrams out
    finally:
        dumpcap.send_signal(signal.SIGINT)
        dumpcap.wait(timeout=10)
    everything = _tshark(capture_file, "", "udp.srcport", "udp.dstport", "_ws.col.Protocol")
    assert everything, "nothing captured on the underlay"
    ports = {(int(src), int(dst)) for src, dst, _ in everything}
    assert ports == {(WIREGUARD_PORT, WIREGUARD_PORT)}, ports
    assert {protocol for *_, protocol in everything} == {"WireGuard"}
    message_types = {int(t) for (t,) in _tshark(capture_file, "wg", "wg.type")}
    assert {1, 2, 4} <= message_types  # initiations, responses and transport data
    pod_addresses = " or ".join(f"ip.addr == {p['status']['podIP']}" for p in pods)
    assert _tshark(capture_file, f"vxlan or {pod_addresses}", "frame.number") == []
    raw = capture_file.read_bytes()
    assert not any(socket.inet_aton(p["status"]["podIP"]) in raw for p in pods)

    # One flipped byte in a transport message from node-1 to node-2, sent again from node-1's address.
    (payload,) = _tshark(capture_file, f"wg.type == 4 and ip.src == {prefix}.11 and ip.dst == {prefix}.12 "
                                       "and frame.len > 100", "udp.payload")[-1:]
    tampered = bytearray(bytes.fromhex(payload[0].replace(":", "")))
    tampered[40] ^= 0x01
    before = await _counter(cluster, "node-2", "drop.wireguard-authentication")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((f"{prefix}.11", 0))
        sock.sendto(bytes(tampered), (f"{prefix}.12", WIREGUARD_PORT))
    await eventually(lambda: _counter_above(cluster, "node-2", "drop.wireguard-authentication", before), 5,
                     "node-2 counts the tampered datagram")
    await _all_pairs_connect(cluster, pods)

    # `podnet trace` shows the sealing after the encapsulation and the opening before the decapsulation,
    # on both nodes, with the peer and the session's age.
    traced = _podnet(cluster, "trace", "default/web-1", f"{pods[1]['status']['podIP']}:80")
    assert traced.returncode == 0, traced.stdout + traced.stderr
    lines = [line.split(None, 2)[1:] for line in traced.stdout.splitlines()[1:]]
    names = [stage for stage, _ in lines]
    assert names.count("wireguard-encrypt") == 2 and names.count("wireguard-decrypt") == 2, traced.stdout
    for encap in (i for i, name in enumerate(names) if name == "vxlan-encap"):
        assert names[encap + 1 : encap + 4] == ["wireguard-encrypt", "wireguard-decrypt", "vxlan-decap"], traced.stdout
    first_seal = next(detail for stage, detail in lines if stage == "wireguard-encrypt")
    assert f"to node-2 ({prefix}.12:{WIREGUARD_PORT})" in first_seal and "s old" in first_seal, first_seal
    # `podnet capture --decrypted` writes what travels inside WireGuard: the VXLAN datagrams in clear.
    inside = tmp_path / "inside.pcap"
    capture = subprocess.Popen([sys.executable, "-m", "podnet", "capture", "--node", "node-1", "-w", str(inside),
                                "--seconds", "5", "--decrypted"], env=_env(cluster), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    while capture.poll() is None:  # traffic all along, whenever the command's capture begins
        await _all_pairs_connect(cluster, pods[:2])
        await asyncio.sleep(0.2)
    assert capture.returncode == 0, capture.stderr.read().decode()
    src, dst = pods[0]["status"]["podIP"], pods[1]["status"]["podIP"]
    assert _tshark(inside, f"vxlan and tcp and ip.src == {src} and ip.dst == {dst}", "frame.number")
    counters = _podnet(cluster, "dataplane", "node-2", "counters").stdout
    for name in ("wireguard.handshake-completed", "wireguard.rekey-started", "drop.wireguard-replay",
                 "drop.wireguard-authentication"):
        assert name in counters, counters


def _env(cluster) -> dict[str, str]:
    env = {**os.environ, "PODNET_HOME": str(cluster.home), "KUBECONFIG": str(cluster.home / "kubeconfig")}
    env.pop("PODNET_SERVER", None)
    env.pop("PODNET_TOKEN", None)
    return env


def _podnet(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "podnet", *args], capture_output=True, text=True, env=_env(cluster),
                          timeout=60, input="")


async def _counter_above(cluster, node: str, name: str, value: int) -> bool:
    return await _counter(cluster, node, name) > value


async def test_agent_killed_and_restarted_keeps_its_key_and_handshakes_again(local_cluster):
    cluster = await local_cluster("127.0.196", nodes=2, encryption="wireguard")
    pods = await _pods(cluster, 2)
    await _all_pairs_connect(cluster, pods)
    key_file = cluster.topo.node_dir(cluster.topo.node("node-2")) / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text()
    published = (await cluster.client.get("nodes", "node-2"))["metadata"]["annotations"][WG_PUBKEY_ANNOTATION]
    assert len(base64.b64decode(published)) == 32
    handshakes = await _counter(cluster, "node-1", "wireguard.handshake-completed")

    cluster.kill("node-2/agent")
    await cluster.wait_dead("node-2/agent")
    await cluster.start("node-2/agent")
    assert key_file.read_text() == key
    node = await cluster.client.get("nodes", "node-2")
    assert node["metadata"]["annotations"][WG_PUBKEY_ANNOTATION] == published
    await eventually(lambda: _counter_above(cluster, "node-1", "wireguard.handshake-completed", handshakes), 10,
                     "node-1 handshakes with the restarted node-2")
    started = time.monotonic()
    await eventually(lambda: cluster.probe(pods[0], pods[1]["status"]["podIP"], 80, timeout=1.0), 20,
                     "node-1's pod reaches node-2's again")
    assert time.monotonic() - started < 5, "traffic waited for a stale session to time out"
    await _all_pairs_connect(cluster, pods)
