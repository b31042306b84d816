"""The `bgp` routing backend in a real cluster: an API server with controllers, three node agents started
with `--backend bgp` and one speaker per node peering in a full mesh built from the Node list. Routes to
other nodes' pods come only from the speakers, and pod packets travel as bare IPv4 in UDP (foo-over-UDP).

The tests share one cluster (`support.bgp_cluster`) and run in order: the last one stops a speaker.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest
from podnet.overlay.wire import ipv4, udp
from support.bgp_cluster import BgpCluster

pytestmark = pytest.mark.slow  # one three-node cluster for the module: about 15 s to start
PROBE_TIMEOUT = 1.0


def probe(cluster: BgpCluster, src: str, dst: str, timeout: float = PROBE_TIMEOUT) -> dict:
    node = {"a": "node-1", "b": "node-2", "c": "node-3"}[src]
    params = {
        "src": f"default/{src}",
        "dst": cluster.pod_ips[dst],
        "port": 80,
        "protocol": "TCP",
        "timeout": timeout,
    }
    return cluster.agents[node].rpc("probe", params)  # type: ignore[return-value]


def test_pods_reach_each_other_across_nodes_in_foo_over_udp(bgp_cluster: BgpCluster):
    info = bgp_cluster.agents["node-1"].rpc("node.info")
    assert (info["backend"], info["encapsulation"], info["fou_port"]) == ("bgp", "fou", bgp_cluster.fou_port)
    # Routes to other pods come from BGP only: the Node list gave peers but no route.
    sources = {r["source"] for r in bgp_cluster.agents["node-1"].rpc("routes.list")}
    assert sources == {"local", "bgp"}
    before = {name: agent.counters() for name, agent in bgp_cluster.agents.items()}
    for src, dst in (("a", "b"), ("a", "c"), ("b", "c"), ("b", "a"), ("c", "a"), ("c", "b")):
        outcome = probe(bgp_cluster, src, dst)
        assert outcome["ok"], (src, dst, outcome)
    for name, agent in bgp_cluster.agents.items():
        after = agent.counters()
        for counter in ("tunnel.tx", "tunnel.rx"):
            assert after.get(counter, 0) > before[name].get(counter, 0), (name, after)
        assert not [k for k in after if k.startswith("drop.fou") or k.startswith("drop.vxlan")], after


def test_foo_over_udp_from_strangers_or_with_a_spoofed_source_is_dropped_and_counted(bgp_cluster: BgpCluster):
    agent, b = bgp_cluster.agents["node-2"], bgp_cluster.pod_ips["b"]
    before = agent.counters()

    def packet(src: str) -> bytes:
        body = udp.encode(udp.UdpDatagram(4000, 81, b"forged"), src, b)
        return ipv4.encode(ipv4.IPv4Packet(src, b, ipv4.IPProtocol.UDP, body))

    sent = {
        "fou-unknown-sender": ("127.0.0.99", packet(bgp_cluster.pod_ips["a"])),
        # node-3 is a known next hop, but pod a's address is inside node-1's podCIDR
        "fou-spoofed-inner-source": ("127.0.0.83", packet(bgp_cluster.pod_ips["a"])),
        "short-ip-packet": ("127.0.0.81", b"\x45\x00\x00"),
    }
    for sender, datagram in sent.values():
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((sender, 0))
            sock.sendto(datagram, (bgp_cluster.addresses["node-2"], bgp_cluster.fou_port))
    deadline = time.monotonic() + 5.0
    while True:
        after = agent.counters()
        grown = {r for r in sent if after.get(f"drop.{r}", 0) > before.get(f"drop.{r}", 0)}
        if grown == set(sent):
            break
        assert time.monotonic() < deadline, (set(sent) - grown, after)
        time.sleep(0.1)
    assert probe(bgp_cluster, "a", "b")["ok"]  # and the node keeps forwarding


def test_trace_shows_the_foo_over_udp_encapsulation_and_its_28_bytes(bgp_cluster: BgpCluster):
    result = bgp_cluster.cli("trace", "a", f"{bgp_cluster.pod_ips['b']}:80")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    port = bgp_cluster.fou_port
    encap = next(line for line in out.splitlines() if "fou-encap" in line)
    assert f"127.0.0.81:{port} → 127.0.0.82:{port} (node-2)" in encap and "28 B overhead" in encap, out
    # node-2's half of the journey comes right after the encapsulation, then the reply's
    stages = [line.split()[1] for line in out.splitlines()[1:]]
    assert stages[stages.index("fou-encap") + 1] == "fou-decap", out
    assert "vxlan-encap" not in stages and stages[-1] == "result" and "answered" in out.splitlines()[-1], out


def test_a_capture_opens_in_tshark_as_ipv4_in_udp(bgp_cluster: BgpCluster, tmp_path):
    if shutil.which("tshark") is None and os.environ.get("CI") != "true":
        pytest.skip("tshark (Debian) is not installed")
    pcap = tmp_path / "fou.pcap"
    capture = subprocess.Popen(
        [*bgp_cluster.cli_argv(), "capture", "--node", "node-1", "--count", "4", "-w", str(pcap)],
        env=bgp_cluster.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20.0
        while capture.poll() is None:  # traffic until the capture, once subscribed, has its datagrams
            assert time.monotonic() < deadline, "the capture never got 4 datagrams"
            assert probe(bgp_cluster, "a", "b")["ok"]
            time.sleep(0.1)
        _, err = capture.communicate(timeout=5)
    finally:
        if capture.poll() is None:
            capture.kill()
            capture.wait()
    assert capture.returncode == 0, err
    fields = ["ip.src", "ip.dst", "udp.srcport", "udp.dstport", "udp.length", "ip.len", "tcp.dstport"]
    decoded = subprocess.run(
        [
            "tshark",
            "-r",
            str(pcap),
            "-d",
            f"udp.port=={bgp_cluster.fou_port},ip",
            "-T",
            "fields",
            "-E",
            "separator=;",
            *[arg for f in fields for arg in ("-e", f)],
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert decoded.returncode == 0, decoded.stderr
    rows = [dict(zip(fields, line.split(";"), strict=True)) for line in decoded.stdout.splitlines()]
    assert len(rows) == 4, decoded.stdout
    a, b = bgp_cluster.pod_ips["a"], bgp_cluster.pod_ips["b"]
    # the outer addresses are the nodes', the inner ones the pods': nothing else between them
    first = next(row for row in rows if row["ip.src"] == f"127.0.0.81,{a}")
    assert first["ip.dst"] == f"127.0.0.82,{b}", rows
    port = str(bgp_cluster.fou_port)
    assert (first["udp.srcport"], first["udp.dstport"], first["tcp.dstport"]) == (port, port, "80"), rows
    outer_len, inner_len = (int(n) for n in first["ip.len"].split(","))
    assert outer_len - inner_len == 28 and int(first["udp.length"]) == inner_len + 8, rows
    assert any(row["ip.src"] == f"127.0.0.82,{b}" for row in rows), rows  # the reply, the same way back


def test_a_speaker_killed_and_restarted_within_the_restart_time_causes_no_probe_failure(
    bgp_cluster: BgpCluster,
):
    """Graceful restart: node-1 and node-2 keep node-3's routes as stale while its speaker is away, and
    node-3's agent keeps forwarding with what it has; the new speaker installs nothing until it has
    End-of-RIB from every peer, so no route is ever missing."""
    results: list[tuple[float, str, dict]] = []
    stop = threading.Event()

    def keep_probing() -> None:
        pairs = (("a", "c"), ("c", "a"), ("b", "c"), ("c", "b"))
        while not stop.is_set():
            for src, dst in pairs:
                results.append((time.monotonic(), f"{src}→{dst}", probe(bgp_cluster, src, dst)))

    prober = threading.Thread(target=keep_probing)
    prober.start()
    try:
        time.sleep(0.5)
        speaker = bgp_cluster.speakers["node-3"]
        speaker.kill()
        killed = time.monotonic()
        # the peers notice the session go and keep its routes, stale
        deadline = killed + 5.0
        while not any(r["stale"] for r in bgp_cluster.speakers["node-1"].rpc("rib")):
            assert time.monotonic() < deadline, bgp_cluster.speakers["node-1"].rpc("rib")
            time.sleep(0.1)
        speaker.start()
        restarted = time.monotonic()
        deadline = restarted + 20.0
        while not (
            speaker.rpc("info")["installing"]
            and all(p["state"] == "ESTABLISHED" for p in speaker.rpc("peers"))
        ):
            assert time.monotonic() < deadline, speaker.rpc("peers")
            time.sleep(0.2)
        for node in ("node-1", "node-2"):
            deadline = time.monotonic() + 10.0
            while any(r["stale"] for r in bgp_cluster.speakers[node].rpc("rib")):
                assert time.monotonic() < deadline, bgp_cluster.speakers[node].rpc("rib")
                time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        prober.join(timeout=30)
    failures = [(round(t - killed, 2), pair, outcome) for t, pair, outcome in results if not outcome["ok"]]
    assert not failures, failures
    assert sum(killed < t < restarted for t, _, _ in results) >= 2, "no probe while the speaker was away"
    for node in bgp_cluster.agents:
        assert bgp_cluster.bgp_routes(node) == bgp_cluster.full_mesh_routes(node)


def test_a_stopped_speaker_has_its_routes_withdrawn_within_hold_time_and_traffic_to_its_pods_stops(
    bgp_cluster: BgpCluster,
):
    """Without graceful restart's help (a hung speaker keeps its sessions open, then misses its hold
    time), the peers withdraw its podCIDR, and their agents, which never take routes from the Node
    list, have no way left to node-2's pods, as in Calico."""
    cidr_2 = bgp_cluster.pod_cidrs["node-2"]
    speaker_1 = bgp_cluster.speakers["node-1"]
    assert probe(bgp_cluster, "a", "b")["ok"]
    bgp_cluster.speakers["node-2"].signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        while any(r["prefix"] == cidr_2 for r in speaker_1.rpc("rib")):
            assert time.monotonic() - stopped < bgp_cluster.hold_time + 1, (
                "not withdrawn within hold time + 1 s"
            )
            time.sleep(0.1)
        for node in ("node-1", "node-3"):
            bgp_cluster.wait_for_routes(node, lambda routes: cidr_2 not in routes, timeout=5.0)
        outcome = probe(bgp_cluster, "a", "b")
        assert not outcome["ok"] and "no-route" in outcome["dropped"], outcome
        assert not probe(bgp_cluster, "c", "b")["ok"]
        assert probe(bgp_cluster, "a", "c")["ok"]  # the rest of the cluster is untouched
    finally:
        bgp_cluster.speakers["node-2"].signal(signal.SIGCONT)
