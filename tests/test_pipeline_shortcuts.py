"""Shortcuts (the pipeline's flow cache) decide exactly what the stages decide.

A pipeline given a trace list always walks its stages and never learns a shortcut; one given none takes
a shortcut wherever it has learned one. Fed the same packets at the same times (the second taking each
moment's datagrams from the tunnel as one batch), the two must give the same outputs and end with the
same counters and conntrack entries.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.pipeline.model import (
    Deliver,
    Drop,
    NodeIdentity,
    Peer,
    PodPort,
    Tunnel,
    pod_mac,
    vtep_mac,
)
from podnet.overlay.pipeline.nat import ServiceTable
from podnet.overlay.wire import icmp, ipv4
from podnet.overlay.wire.addresses import ip_to_int
from podnet.overlay.wire.checksum import internet_checksum
from podnet.overlay.wire.tcp import TcpFlags
from support.pipelines import N1, N2, A, B, node, only, tcp_packet, udp_packet

C = PodPort("default", "c", "10.244.1.3", pod_mac("10.244.1.3"))
N3 = NodeIdentity("node-3", "127.0.0.13", "10.244.3.0/24")
D = PodPort("default", "d", "10.244.3.2", pod_mac("10.244.3.2"))
_INNER_ETHERNET = bytes.fromhex("0e50" + "7f00000b") + bytes.fromhex("0e50" + "7f00000c") + b"\x08\x00"
_VXLAN = b"\x08\x00\x00\x00\x00\x00\x01\x00"

FLAGS = [
    TcpFlags.ACK,
    TcpFlags.ACK,
    TcpFlags.ACK | TcpFlags.PSH,
    TcpFlags.SYN,
    TcpFlags.SYN | TcpFlags.ACK,
    TcpFlags.FIN | TcpFlags.ACK,
    TcpFlags.RST,
]


# Two Services: UDP 10.96.0.53:53 with its endpoint B:53 on node-2, TCP 10.96.0.80:80 with its endpoint
# C:8080 on node-1 itself.
SERVICES = {
    "mode": "iptables",
    "node": "node-1",
    "services": [
        {"service": "default/dns", "protocol": "UDP", "cluster_ip": "10.96.0.53", "port": 53,
         "endpoints": [[B.ip, 53, "node-2"]]},
        {"service": "default/web", "protocol": "TCP", "cluster_ip": "10.96.0.80", "port": 80,
         "endpoints": [[C.ip, 8080, "node-1"]]},
    ],
}  # fmt: skip


def _node_one():
    pipeline = node(N1, A, C)
    pipeline.set_peer(Peer(N3.name, N3.address, vtep_mac(N3.address)), N3.pod_cidr)
    pipeline.services = ServiceTable.from_data(SERVICES)
    return pipeline


# (source, destination, protocol, where the packet comes from, source port, destination port): a few
# flows, so that they repeat and learn shortcuts; node-1's pods are A and C, B is on node-2 (127.0.0.12)
# and D on node-3 (127.0.0.13). Through the Services: A to each, and the endpoints' replies; C to itself.
FLOWS = [
    (A.ip, B.ip, "udp", "pod", 5000, 53),
    (A.ip, B.ip, "tcp", "pod", 5001, 80),
    (A.ip, C.ip, "udp", "pod", 5000, 53),
    (C.ip, D.ip, "tcp", "pod", 5001, 80),
    (B.ip, A.ip, "udp", "127.0.0.12", 5000, 53),
    (D.ip, C.ip, "tcp", "127.0.0.13", 5001, 80),
    (B.ip, C.ip, "icmp", "127.0.0.12", 0, 0),
    (A.ip, "10.96.0.53", "udp", "pod", 5002, 53),
    (B.ip, A.ip, "udp", "127.0.0.12", 53, 5002),
    (A.ip, "10.96.0.80", "tcp", "pod", 5003, 80),
    (C.ip, A.ip, "tcp", "pod", 8080, 5003),
    (C.ip, "10.96.0.80", "tcp", "pod", 5004, 80),  # C through its own Service: a hairpin, SNATed
    (C.ip, N1.gateway, "tcp", "pod", 8080, 5004),
]
DAMAGE = [None] * 6 + ["checksum", "padding", "fragment", "length", "truncate", "short", "big", "sender", "ttl"]


@st.composite
def events(draw):
    """(origin, packet, seconds since the last event, sweep conntrack first): a packet of one of the
    flows, sometimes malformed, too big or from the wrong node."""
    src, dst, kind, origin, src_port, dst_port = draw(st.sampled_from(FLOWS))
    damage = draw(st.sampled_from(DAMAGE))
    if kind == "udp":
        size = 1430 if damage == "big" else 5
        packet = bytearray(udp_packet(src, dst, src_port, dst_port, bytes(size), df=draw(st.booleans())))
    elif kind == "tcp":
        packet = bytearray(tcp_packet(src, dst, src_port, dst_port, draw(st.sampled_from(FLAGS))))
    else:
        echo = icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 7, 1, b"ping")
        packet = bytearray(ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.ICMP, icmp.encode(echo))))
    if damage == "checksum":
        packet[10] ^= 0x01
    elif damage == "padding":  # link padding past the total length
        packet += bytes(4)
    elif damage in ("fragment", "length", "ttl"):
        if damage == "fragment":
            packet[6] |= 0x20
        elif damage == "length":  # a total length over what arrived
            packet[2:4] = (len(packet) + 8).to_bytes(2, "big")
        else:  # its last hop
            packet[8] = 1
        packet[10:12] = b"\x00\x00"
        packet[10:12] = internet_checksum(packet[:20]).to_bytes(2, "big")
    elif damage == "truncate":
        packet = packet[: draw(st.integers(0, 33))]
    elif damage == "short":  # a transport header cut short, the IPv4 header telling the length as it is
        packet = packet[: draw(st.integers(20, len(packet) - 1))]
        packet[2:4] = len(packet).to_bytes(2, "big")
        packet[10:12] = b"\x00\x00"
        packet[10:12] = internet_checksum(packet[:20]).to_bytes(2, "big")
    elif damage == "sender" and origin != "pod":
        origin = "127.0.0.13" if origin == "127.0.0.12" else "127.0.0.12"
    pause = draw(st.sampled_from([0.0] * 6 + [0.5, 40.0, 200.0]))
    return origin, bytes(packet), pause, draw(st.sampled_from([False] * 9 + [True]))


def _state(pipeline):
    entries = sorted(
        (e.original, e.reply, e.state, e.expires, tuple(e.packets), e.fins)
        for e in pipeline.conntrack.entries()
    )
    return {k: v for k, v in pipeline.counters.items() if v}, entries


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), min_size=10, max_size=60))
def test_shortcuts_agree_with_the_stages(sequence):
    fast, stages = _node_one(), _node_one()
    pods = {ip_to_int(A.ip): A, ip_to_int(C.ip): C}
    batch: list[tuple[bytes, str]] = []  # datagrams of one moment, which the fast side takes at once
    expected: list = []
    now = 0.0

    def flush():
        assert fast.from_tunnel_batch(batch, now) == expected
        batch.clear()
        expected.clear()

    for origin, packet, pause, sweep in sequence:
        if pause or sweep or origin == "pod":
            flush()
        now += pause
        if sweep:
            assert fast.expire_connections(now) == stages.expire_connections(now)
        if origin == "pod":
            pod = pods.get(int.from_bytes(packet[12:16]), A)
            assert fast.from_pod(pod, packet, now) == stages.from_pod(pod, packet, now, [])
        else:
            batch.append((_datagram(packet), origin))
            expected.extend(stages.from_tunnel(origin, _datagram(packet), now, []))
    flush()
    assert _state(fast) == _state(stages)


def _datagram(packet: bytes) -> bytes:
    return _VXLAN + _INNER_ETHERNET + packet


def test_a_flow_on_a_shortcut_follows_a_route_change():
    n1 = node(N1, A)
    request = udp_packet(A.ip, B.ip)
    for _ in range(3):  # the second packet learns the shortcut, the third takes it
        assert only(n1.from_pod(A, request, 0.0), Tunnel).node_address == N2.address
    n1.set_peer(Peer(N2.name, "127.0.0.22", vtep_mac("127.0.0.22")), N2.pod_cidr)  # node-2 moved
    assert only(n1.from_pod(A, request, 0.0), Tunnel).node_address == "127.0.0.22"
    n1.remove_peer(N2.name)
    assert only(n1.from_pod(A, request, 0.0), Drop).reason == "no-route"


def test_a_removed_pod_gets_nothing_more_from_a_shortcut():
    n2 = node(N2, B)
    datagram = _datagram(udp_packet(A.ip, B.ip))
    for _ in range(3):
        only(n2.from_tunnel(N1.address, datagram, 0.0), Deliver)
    n2.remove_pod(B.ip)
    assert only(n2.from_tunnel(N1.address, datagram, 0.0), Drop).reason == "no-such-pod"


def test_a_shortcut_checks_every_header_and_the_sender():
    n2 = node(N2, B)
    packet = udp_packet(A.ip, B.ip)
    for _ in range(3):
        only(n2.from_tunnel(N1.address, _datagram(packet), 0.0), Deliver)
    damaged = bytearray(packet)
    damaged[8] -= 1  # TTL changed, header checksum not
    assert only(n2.from_tunnel(N1.address, _datagram(bytes(damaged)), 0.0), Drop).reason == "bad-ip-checksum"
    assert only(n2.from_tunnel("127.0.0.99", _datagram(packet), 0.0), Drop).reason == "vxlan-unknown-sender"
    wrong_vni = b"\x08\x00\x00\x00\x00\x00\x02\x00" + _INNER_ETHERNET + packet
    assert only(n2.from_tunnel(N1.address, wrong_vni, 0.0), Drop).reason == "vxlan-wrong-vni"
    assert n2.counters["delivered"] == 3


def test_expired_connections_take_their_shortcuts_with_them():
    n2 = node(N2, B)
    datagram = _datagram(udp_packet(A.ip, B.ip))
    for _ in range(3):
        only(n2.from_tunnel(N1.address, datagram, 0.0), Deliver)
    assert n2.expire_connections(1000.0) == 1
    only(n2.from_tunnel(N1.address, datagram, 1000.0), Deliver)
    assert n2.counters["conntrack.created"] == 2  # a new connection, policy asked again


def test_service_connections_take_shortcuts_with_their_nat():
    fast, stages = _node_one(), _node_one()
    to_service = tcp_packet(A.ip, "10.96.0.80", 5003, 80, TcpFlags.ACK)
    from_endpoint = tcp_packet(C.ip, A.ip, 8080, 5003, TcpFlags.ACK)
    for _ in range(4):  # the first opens the connection, the second learns, the rest take the shortcuts
        out = fast.from_pod(A, to_service, 0.0)
        assert out == stages.from_pod(A, to_service, 0.0, [])
        delivered = only(out, Deliver)
        header = ipv4.decode(delivered.packet)
        assert (delivered.pod_ip, header.dst, header.ttl) == (ip_to_int(C.ip), C.ip, 63)  # DNATed, one hop
        back = fast.from_pod(C, from_endpoint, 0.0)
        assert back == stages.from_pod(C, from_endpoint, 0.0, [])
        assert ipv4.decode(only(back, Deliver).packet).src == "10.96.0.80"  # the reply un-DNATed
    remote = udp_packet(A.ip, "10.96.0.53", 5002, 53)
    reply = _datagram(udp_packet(B.ip, A.ip, 53, 5002))
    for _ in range(4):
        out = fast.from_pod(A, remote, 0.0)
        assert out == stages.from_pod(A, remote, 0.0, []) and only(out, Tunnel).node_address == N2.address
        back = fast.from_tunnel(N2.address, reply, 0.0)
        assert back == stages.from_tunnel(N2.address, reply, 0.0, [])
        assert ipv4.decode(only(back, Deliver).packet).src == "10.96.0.53"
    assert _state(fast) == _state(stages)
