"""Pure forwarding pipelines for tests, wired back to back in memory: VXLAN nodes `N1` (127.0.0.11,
10.244.1.0/24) and `N2` (127.0.0.12, 10.244.2.0/24), pods `A` (node-1) and `B` (node-2).

`node(identity, *pods, policy=None)` is a pipeline with the other node as its VXLAN peer and `pods`
attached; `udp_packet` and `tcp_packet` build IPv4 packets with valid checksums; `only(outputs, kind)`
is the one output, asserted to be a `kind`; `after_hops(packet, n)` is a packet as it arrives n routers on;
`with_partial_checksum(packet)` is a TCP packet as a pod's kernel leaves it to a TAP with offloads.
"""

from __future__ import annotations

import dataclasses

from podnet.overlay.pipeline.forward import Pipeline
from podnet.overlay.pipeline.model import NodeIdentity, Peer, PodPort, pod_mac, vtep_mac
from podnet.overlay.wire import ipv4, tcp, udp

N1 = NodeIdentity("node-1", "127.0.0.11", "10.244.1.0/24")
N2 = NodeIdentity("node-2", "127.0.0.12", "10.244.2.0/24")
A = PodPort("default", "a", "10.244.1.2", pod_mac("10.244.1.2"))
B = PodPort("default", "b", "10.244.2.2", pod_mac("10.244.2.2"))


def node(identity: NodeIdentity, *pods: PodPort, policy=None) -> Pipeline:
    pipeline = Pipeline(identity, **({"policy": policy} if policy else {}))
    for other in (N1, N2):
        if other is not identity:
            pipeline.set_peer(Peer(other.name, other.address, vtep_mac(other.address)), other.pod_cidr)
    for pod in pods:
        pipeline.add_pod(pod)
    return pipeline


def udp_packet(src: str, dst: str, sport=5000, dport=53, payload=b"hello", df=True) -> bytes:
    body = udp.encode(udp.UdpDatagram(sport, dport, payload), src, dst)
    return ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.UDP, body, dont_fragment=df))


def tcp_packet(src: str, dst: str, sport: int, dport: int, flags) -> bytes:
    body = tcp.encode(tcp.TcpSegment(sport, dport, 1, 0, flags, 65535), src, dst)
    return ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.TCP, body))


def after_hops(packet: bytes, hops: int) -> bytes:
    """`packet` as it arrives `hops` routers later: re-encoded by the codec with that much less TTL, so
    with a header checksum computed afresh."""
    header = ipv4.decode(packet)
    return ipv4.encode(dataclasses.replace(header, ttl=header.ttl - hops))


def with_partial_checksum(packet: bytes) -> bytes:
    """`packet` (IPv4 + TCP) as a pod's kernel hands it to a TAP with checksum offload: its TCP checksum
    field holding only the pseudo-header's sum (folded, not complemented), for the NIC to finish."""
    ihl = (packet[0] & 0x0F) * 4
    value = (int.from_bytes(packet[12:20]) + 6 + len(packet) - ihl) % 0xFFFF or 0xFFFF
    return packet[: ihl + 16] + value.to_bytes(2, "big") + packet[ihl + 18 :]


def only(outputs, kind):
    assert len(outputs) == 1 and isinstance(outputs[0], kind), outputs
    return outputs[0]
