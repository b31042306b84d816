"""Each node a packet crosses is a router hop: TTL one less, and a spent TTL answered with ICMP time
exceeded from the node's gateway address, which is what traceroute shows hop by hop."""

import dataclasses

from podnet.overlay.pipeline.model import Deliver, Drop, PodPort, Tunnel, vtep_mac
from podnet.overlay.wire import icmp, ipv4
from podnet.overlay.wire.addresses import ip_to_int
from support.pipelines import N1, N2, A, B, after_hops, node, only, udp_packet


def _with_ttl(packet: bytes, ttl: int) -> bytes:
    return ipv4.encode(dataclasses.replace(ipv4.decode(packet), ttl=ttl))


def _time_exceeded_about(packet: bytes, error_packet: bytes, reporter: str) -> None:
    header = ipv4.decode(error_packet)
    message = icmp.decode(header.payload)
    assert (header.src, header.dst) == (reporter, ipv4.decode(packet).src)
    assert (message.type, message.code) == (icmp.ICMPType.TIME_EXCEEDED, 0)
    assert message.data == packet[:28]  # the IP header and the first 8 bytes after it


def test_a_packet_with_ttl_one_dies_at_the_first_node():
    n1 = node(N1, A)
    probe = _with_ttl(udp_packet(A.ip, B.ip, 33434, 33434), 1)
    error = only(n1.from_pod(A, probe, 0.0), Deliver)
    assert error.pod_ip == ip_to_int(A.ip)
    _time_exceeded_about(probe, error.packet, "10.244.1.1")
    assert n1.counters["drop.ttl-exceeded"] == 1 and n1.counters["tunnel.tx"] == 0


def test_a_packet_with_ttl_two_dies_at_the_second_node_and_the_error_comes_back_through_the_tunnel():
    n1, n2 = node(N1, A), node(N2, B)
    probe = _with_ttl(udp_packet(A.ip, B.ip, 33435, 33434), 2)
    out = only(n1.from_pod(A, probe, 0.0), Tunnel)
    back = only(n2.from_tunnel(N1.address, out.datagram, 0.0), Tunnel)
    assert back.node_address == N1.address
    error = only(n1.from_tunnel(N2.address, back.datagram, 0.0), Deliver)
    assert error.pod_ip == ip_to_int(A.ip)
    assert ipv4.decode(error.packet).ttl == 63  # node-1 routed the error on to the pod
    _time_exceeded_about(after_hops(probe, 1), error.packet, "10.244.2.1")


def test_ttl_three_reaches_the_pod_with_one_left():
    n1, n2 = node(N1, A), node(N2, B)
    probe = _with_ttl(udp_packet(A.ip, B.ip), 3)
    out = only(n1.from_pod(A, probe, 0.0), Tunnel)
    assert only(n2.from_tunnel(N1.address, out.datagram, 0.0), Deliver).packet == after_hops(probe, 2)


def test_the_node_itself_is_no_hop():
    n1 = node(N1, A)
    gateway = PodPort("node", "node-1", "10.244.1.1", vtep_mac(N1.address))
    n1.add_pod(gateway)
    echo = icmp.encode(icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 1, 1, b"ping"))
    request = ipv4.encode(ipv4.IPv4Packet(A.ip, gateway.ip, ipv4.IPProtocol.ICMP, echo, ttl=1))
    assert only(n1.from_pod(A, request, 0.0), Deliver).packet == request
    answer = ipv4.encode(ipv4.IPv4Packet(gateway.ip, A.ip, ipv4.IPProtocol.ICMP, echo))
    assert only(n1.from_pod(gateway, answer, 0.0), Deliver).packet == answer  # ping shows ttl=64


def test_no_icmp_error_about_an_icmp_error():
    n1 = node(N1, A)
    quoted = udp_packet(B.ip, A.ip)
    error = icmp.error_packet(icmp.port_unreachable(quoted), A.ip, quoted)
    dying = ipv4.encode(dataclasses.replace(error, ttl=1))
    assert only(n1.from_pod(A, dying, 0.0), Drop).reason == "ttl-exceeded"
