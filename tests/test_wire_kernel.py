"""Live interop: what the running Linux kernel sends over its own VXLAN decodes with our codecs, reads
the same as tshark reads it, and re-encodes to the same bytes.

tests/data/wire/capture_golden.py builds the lab (two namespaces, a veth underlay, kernel vxlan devices),
drives ARP, ping, UDP to a closed port and a TCP connection, captures the underlay with tshark and
deletes everything again.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from podnet.overlay.wire import arp, ethernet, icmp, ipv4, tcp, udp, vxlan
from podnet.overlay.wire.tcp import TcpFlags

CAPTURE_SCRIPT = Path(__file__).parent / "data" / "wire" / "capture_golden.py"

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def kernel_frames():
    missing = [tool for tool in ("ip", "tshark") if shutil.which(tool) is None]
    reason = "needs root" if os.geteuid() != 0 else f"needs {', '.join(missing)}" if missing else None
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    result = subprocess.run(
        [sys.executable, str(CAPTURE_SCRIPT), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return [(item["summary"], bytes.fromhex(item["hex"])) for item in json.loads(result.stdout)]


def _describe_arp(packet: arp.ArpPacket) -> str:
    if packet.op is arp.ArpOp.REQUEST:
        return f"ARP: Who has {packet.target_ip}? Tell {packet.sender_ip}"
    return f"ARP: {packet.sender_ip} is at {packet.sender_mac}"


def _flag_names(flags: TcpFlags) -> str:
    # tshark lists flags from the lowest bit up; ECE is "ECE" and CWR "CWR" there too.
    return ", ".join(flag.name for flag in TcpFlags if flag in flags)


def _describe_and_reencode(frame: bytes) -> str:
    """tshark's summary prefix for `frame`, from our decoding; asserts every layer re-encodes exactly."""
    outer = ethernet.decode(frame)
    assert ethernet.encode(outer) == frame
    if outer.ethertype is ethernet.EtherType.ARP:  # underlay ARP between the veth ends
        packet = arp.decode(outer.payload)
        assert arp.encode(packet) == outer.payload
        return _describe_arp(packet)
    outer_ip = ipv4.decode(outer.payload)
    assert ipv4.encode(outer_ip) == outer.payload
    datagram = udp.decode(outer_ip.payload, outer_ip.src, outer_ip.dst)
    assert udp.encode(datagram, outer_ip.src, outer_ip.dst) == outer_ip.payload
    assert datagram.dst_port == vxlan.PORT
    vni, inner_raw = vxlan.decode(datagram.payload)
    assert vni == 1 and vxlan.encode(vni, inner_raw) == datagram.payload

    inner = ethernet.decode(inner_raw)
    assert ethernet.encode(inner) == inner_raw
    if inner.ethertype is ethernet.EtherType.ARP:
        packet = arp.decode(inner.payload)
        assert arp.encode(packet) == inner.payload
        return _describe_arp(packet)
    packet = ipv4.decode(inner.payload)
    assert ipv4.encode(packet) == inner.payload
    if packet.protocol is ipv4.IPProtocol.TCP:
        segment = tcp.decode(packet.payload, packet.src, packet.dst)
        assert tcp.encode(segment, packet.src, packet.dst) == packet.payload
        return f"TCP: {segment.src_port} → {segment.dst_port} [{_flag_names(segment.flags)}]"
    if packet.protocol is ipv4.IPProtocol.UDP:
        transport = udp.decode(packet.payload, packet.src, packet.dst)
        assert udp.encode(transport, packet.src, packet.dst) == packet.payload
        return f"UDP: {transport.src_port} → {transport.dst_port} Len={len(transport.payload)}"
    assert packet.protocol is ipv4.IPProtocol.ICMP
    message = icmp.decode(packet.payload)
    assert icmp.encode(message) == packet.payload
    if isinstance(message, icmp.IcmpEcho):
        kind = "request" if message.type is icmp.ICMPType.ECHO_REQUEST else "reply"
        return f"ICMP: Echo (ping) {kind}"
    assert isinstance(message, icmp.IcmpUnreachable) and message.code is icmp.UnreachableCode.PORT
    return "ICMP: Destination unreachable (Port unreachable)"


def test_kernel_vxlan_traffic_decodes_like_tshark(kernel_frames):
    described = []
    for summary, frame in kernel_frames:
        ours = _describe_and_reencode(frame)
        assert summary.startswith(ours), (summary, ours)
        described.append(ours)
    for expected in [
        "ARP: Who has 10.244.2.3? Tell 10.244.1.2",
        "ARP: 10.244.2.3 is at 02:00:0a:f4:02:03",
        "ICMP: Echo (ping) request",
        "ICMP: Echo (ping) reply",
        "UDP: 40001 → 9 Len=12",
        "ICMP: Destination unreachable (Port unreachable)",
        "TCP: 40002 → 8080 [SYN]",
        "TCP: 8080 → 40002 [SYN, ACK]",
        "TCP: 40002 → 8080 [ACK]",
        "TCP: 40002 → 8080 [FIN, ACK]",
        "TCP: 8080 → 40002 [FIN, ACK]",
    ]:
        assert expected in described
