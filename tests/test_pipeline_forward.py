"""The pure pipeline of two nodes wired back to back in memory: what one encapsulates the other decaps."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.pipeline.model import (
    Deliver,
    DeliverFrame,
    Drop,
    PodPort,
    ToHost,
    Tunnel,
    dissect_stage,
    pod_mac,
    vtep_mac,
)
from podnet.overlay.pipeline.packets import rewrite
from podnet.overlay.pipeline.policyhook import PolicyDirection, Verdict
from podnet.overlay.wire import arp, ethernet, icmp, ipv4, pcap, tcp, udp, vxlan
from podnet.overlay.wire.addresses import ip_to_bytes, ip_to_int
from podnet.overlay.wire.checksum import internet_checksum
from support.pipelines import N1, N2, A, B, after_hops, node, only, tcp_packet, udp_packet

C = PodPort("default", "c", "10.244.1.3", pod_mac("10.244.1.3"))


def test_cross_node_udp_is_vxlan_with_pod_addresses_and_the_reply_follows_conntrack():
    n1, n2 = node(N1, A), node(N2, B)
    request = udp_packet(A.ip, B.ip)
    out = only(n1.from_pod(A, request, 0.0), Tunnel)
    assert out.node_address == "127.0.0.12"
    vni, frame = vxlan.decode(out.datagram)
    inner = ethernet.decode(frame)
    assert (vni, inner.src, inner.dst, inner.ethertype) == (
        1,
        vtep_mac(N1.address),
        vtep_mac(N2.address),
        0x0800,
    )
    packet = ipv4.decode(inner.payload)
    assert (packet.src, packet.dst) == (A.ip, B.ip)  # no NAT between pods
    delivered = only(n2.from_tunnel("127.0.0.11", out.datagram, 0.1), Deliver)
    # no NAT between pods; each node routes it on, one hop less TTL (as Linux's ping shows: ttl=62)
    assert delivered.pod_ip == ip_to_int(B.ip) and delivered.packet == after_hops(request, 2)
    reply = only(n2.from_pod(B, udp_packet(B.ip, A.ip, 53, 5000, b"world"), 0.2), Tunnel)
    back = only(n1.from_tunnel("127.0.0.12", reply.datagram, 0.3), Deliver)
    assert udp.decode(ipv4.decode(back.packet).payload, B.ip, A.ip).payload == b"world"
    assert n1.counters["conntrack.created"] == 1 and n2.counters["conntrack.created"] == 1


def test_same_node_delivery_and_host_network():
    n1 = node(N1, A, C)
    delivered = only(n1.from_pod(A, udp_packet(A.ip, C.ip), 0.0), Deliver)
    assert delivered.pod_ip == ip_to_int(C.ip)
    to_host = only(n1.from_pod(A, udp_packet(A.ip, "127.0.0.1"), 0.0), ToHost)
    assert to_host.pod_ip == ip_to_int(A.ip)
    assert only(n1.from_pod(A, udp_packet(A.ip, "10.244.9.9"), 0.0), Drop).reason == "no-route"
    assert only(n1.from_pod(A, udp_packet(A.ip, "10.244.1.77"), 0.0), Drop).reason == "no-such-pod"


def test_a_pod_cannot_spoof_its_source():
    n1 = node(N1, A, C)
    assert only(n1.from_pod(A, udp_packet(C.ip, B.ip), 0.0), Drop).reason == "spoofed-source"
    assert n1.counters["drop.spoofed-source"] == 1


@pytest.mark.parametrize(
    ("sender", "mutate", "reason"),
    [
        ("127.0.0.11", lambda d: d[:12], "vxlan-short"),
        ("127.0.0.11", lambda d: b"\x0c" + d[1:], "vxlan-bad-flags"),
        ("127.0.0.11", lambda d: d[:7] + b"\x01" + d[8:], "vxlan-bad-flags"),
        ("127.0.0.11", lambda d: d[:4] + b"\x00\x00\x02" + d[7:], "vxlan-wrong-vni"),
        ("127.0.0.99", lambda d: d, "vxlan-unknown-sender"),
        ("127.0.0.11", lambda d: d[:22] + d[22:26] + b"\x00" * 4 + d[30:], "bad-ip-checksum"),
        ("127.0.0.11", lambda d: d[:20] + b"\x86\xdd" + d[22:], "vxlan-inner-not-ipv4"),
    ],
)
def test_malformed_vxlan_is_dropped_and_counted_and_forwarding_continues(sender, mutate, reason):
    n1, n2 = node(N1, A), node(N2, B)
    good = only(n1.from_pod(A, udp_packet(A.ip, B.ip), 0.0), Tunnel).datagram
    assert only(n2.from_tunnel(sender, mutate(good), 0.0), Drop).reason == reason
    assert n2.counters[f"drop.{reason}"] == 1
    only(n2.from_tunnel("127.0.0.11", good, 0.0), Deliver)


def test_spoofed_inner_source_from_a_known_node_is_dropped():
    n2 = node(N2, B)
    forged = vxlan.encode(
        1,
        ethernet.encode(
            ethernet.EthernetFrame(
                vtep_mac(N2.address), vtep_mac(N1.address), 0x0800, udp_packet("10.244.7.7", B.ip)
            )
        ),
    )
    assert only(n2.from_tunnel("127.0.0.11", forged, 0.0), Drop).reason == "vxlan-spoofed-inner-source"
    transit = vxlan.encode(
        1,
        ethernet.encode(
            ethernet.EthernetFrame(
                vtep_mac(N2.address), vtep_mac(N1.address), 0x0800, udp_packet(A.ip, "10.244.1.3")
            )
        ),
    )
    assert only(n2.from_tunnel("127.0.0.11", transit, 0.0), Drop).reason == "vxlan-not-for-this-node"


def test_too_big_with_df_gets_frag_needed_and_without_df_is_dropped():
    n1 = node(N1, A)
    big = udp_packet(A.ip, B.ip, payload=b"x" * 1500)
    answer = only(n1.from_pod(A, big, 0.0), Deliver)
    error = ipv4.decode(answer.packet)
    assert (error.src, error.dst) == (N1.gateway, A.ip)
    message = icmp.decode(error.payload)
    assert message.code == icmp.UnreachableCode.FRAGMENTATION_NEEDED and message.next_hop_mtu == 1450
    assert (
        only(n1.from_pod(A, udp_packet(A.ip, B.ip, sport=1, payload=b"x" * 1500, df=False), 0.0), Drop).reason
        == "too-big"
    )
    only(n1.from_pod(A, udp_packet(A.ip, B.ip, sport=2, payload=b"x" * (1450 - 28)), 0.0), Tunnel)


def test_policy_hooks_see_the_flow_and_decide_new_connections_only():
    seen = []

    def deny_port_81(direction, flow):
        seen.append((direction, flow.protocol, flow.src_ip, flow.dst_ip, flow.dst_port))
        return Verdict(flow.dst_port != 81, f"port {flow.dst_port}")

    n1, n2 = node(N1, A, policy=deny_port_81), node(N2, B, policy=deny_port_81)
    syn = tcp_packet(A.ip, B.ip, 40000, 80, tcp.TcpFlags.SYN)
    datagram = only(n1.from_pod(A, syn, 0.0), Tunnel).datagram
    only(n2.from_tunnel(N1.address, datagram, 0.0), Deliver)
    assert seen == [
        (PolicyDirection.EGRESS, "TCP", A.ip, B.ip, 80),
        (PolicyDirection.INGRESS, "TCP", A.ip, B.ip, 80),
    ]
    only(n1.from_pod(A, tcp_packet(A.ip, B.ip, 40000, 80, tcp.TcpFlags.ACK), 0.1), Tunnel)
    assert len(seen) == 2  # established: no second verdict
    assert (
        only(n1.from_pod(A, tcp_packet(A.ip, B.ip, 40001, 81, tcp.TcpFlags.SYN), 0.2), Drop).reason
        == "policy-egress"
    )
    # ingress is decided on the receiving node even when the sender allowed it
    permissive = node(N1, A)
    datagram = only(
        permissive.from_pod(A, tcp_packet(A.ip, B.ip, 40002, 81, tcp.TcpFlags.SYN), 0.0), Tunnel
    ).datagram
    assert only(n2.from_tunnel(N1.address, datagram, 0.0), Drop).reason == "policy-ingress"


def _tcp_and_udp_only(direction, flow):
    return Verdict(flow.protocol in ("TCP", "UDP"), f"{flow.protocol} {direction}")


def test_packets_conntrack_does_not_track_meet_the_policies_one_by_one():
    """GRE, or an ICMP error about no connection, belongs to no connection: each packet is judged on its
    own, with its protocol and no ports, at the source pod's egress and the destination pod's ingress."""
    gre = ipv4.encode(ipv4.IPv4Packet(A.ip, B.ip, ipv4.ip_protocol(47), bytes(8)))
    strict, permissive = node(N1, A, C, policy=_tcp_and_udp_only), node(N1, A, C)
    assert only(strict.from_pod(A, gre, 0.0), Drop).reason == "policy-egress"
    datagram = only(permissive.from_pod(A, gre, 0.0), Tunnel).datagram
    trace = []
    assert only(
        node(N2, B, policy=_tcp_and_udp_only).from_tunnel(N1.address, datagram, 0.0, trace), Drop
    ).reason == ("policy-ingress")
    assert any(s.stage == "ingress-policy" and "47 ingress" in s.detail for s in trace)
    assert only(node(N2, B).from_tunnel(N1.address, datagram, 0.0), Deliver).packet == after_hops(gre, 2)
    # the same on one node: egress allowed, ingress denied
    seen = []

    def deny_ingress(direction, flow):
        seen.append((direction, flow.protocol, flow.src_port, flow.dst_port))
        return Verdict(direction is PolicyDirection.EGRESS, "egress only")

    same_node = node(N1, A, C, policy=deny_ingress)
    to_c = ipv4.encode(ipv4.IPv4Packet(A.ip, C.ip, ipv4.ip_protocol(47), bytes(8)))
    assert only(same_node.from_pod(A, to_c, 0.0), Drop).reason == "policy-ingress"
    assert seen == [(PolicyDirection.EGRESS, "47", 0, 0), (PolicyDirection.INGRESS, "47", 0, 0)]
    # an ICMP error quoting a datagram nobody sent is no connection's either
    stray = _port_unreachable(B.ip, udp_packet(A.ip, B.ip, 40000, 9))
    datagram = only(node(N2, B).from_pod(B, stray, 0.0), Tunnel).datagram
    assert only(strict.from_tunnel(N2.address, datagram, 0.0), Drop).reason == "policy-ingress"


def test_icmp_errors_about_allowed_connections_pass_where_icmp_is_not_allowed():
    n1, n2 = node(N1, A, policy=_tcp_and_udp_only), node(N2, B, policy=_tcp_and_udp_only)
    request = udp_packet(A.ip, B.ip, 40000, 9)
    delivered = only(
        n2.from_tunnel(N1.address, only(n1.from_pod(A, request, 0.0), Tunnel).datagram, 0.0), Deliver
    )
    refusal = only(n2.from_pod(B, _port_unreachable(B.ip, delivered.packet), 0.1), Tunnel)
    heard = only(n1.from_tunnel(N2.address, refusal.datagram, 0.1), Deliver)
    assert icmp.decode(ipv4.decode(heard.packet).payload).code == icmp.UnreachableCode.PORT
    # a router's time exceeded about a ping: related to the echo's connection
    ping = ipv4.encode(
        ipv4.IPv4Packet(
            A.ip,
            B.ip,
            ipv4.IPProtocol.ICMP,
            icmp.encode(icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, 7, 1, b"ping")),
            ttl=2,
        )
    )
    allow_echo = node(N1, A, policy=lambda direction, flow: Verdict(flow.dst_port != 0, "echo only"))
    spent = only(allow_echo.from_pod(A, ping, 0.0), Tunnel).datagram
    expired = only(node(N2, B).from_tunnel(N1.address, spent, 0.0), Tunnel)  # TTL 1 reached node-2
    answer = ipv4.decode(only(allow_echo.from_tunnel(N2.address, expired.datagram, 0.0), Deliver).packet)
    assert icmp.decode(answer.payload).type == icmp.ICMPType.TIME_EXCEEDED


def test_trace_records_every_stage_of_the_journey():
    n1, n2 = node(N1, A), node(N2, B)
    trace = []
    datagram = only(n1.from_pod(A, udp_packet(A.ip, B.ip), 0.0, trace), Tunnel).datagram
    n2.from_tunnel(N1.address, datagram, 0.0, trace)
    stages = [s.stage for s in trace]
    assert stages == [
        "source",
        "conntrack",
        "service-dnat",
        "egress-policy",
        "route",
        "ttl",
        "vxlan-encap",
        "vxlan-decap",
        "ttl",
        "conntrack",
        "ingress-policy",
        "deliver",
    ]
    encap = trace[6].detail
    assert "VNI 1" in encap and "127.0.0.11:4789 → 127.0.0.12:4789" in encap


def test_a_traced_packet_is_kept_where_the_pipeline_holds_it_whole():
    n1, n2 = node(N1, A), node(N2, B)
    request = udp_packet(A.ip, B.ip)
    trace = []
    out = only(n1.from_pod(A, request, 0.0, trace), Tunnel)
    delivered = only(n2.from_tunnel(N1.address, out.datagram, 0.0, trace), Deliver)
    held = {s.stage: s.packet for s in trace if s.packet is not None}
    assert list(held) == ["source", "vxlan-encap", "vxlan-decap", "deliver"]
    assert held["source"] == request and held["deliver"] == delivered.packet
    # on the underlay, the datagram inside the outer IPv4 and UDP headers the nodes' sockets put around it
    underlay = pcap.underlay_packet(out.datagram, (N1.address, vxlan.PORT), (N2.address, vxlan.PORT))
    assert held["vxlan-encap"] == held["vxlan-decap"] == underlay
    layers = dissect_stage("vxlan-encap", underlay)
    assert [layer.protocol for layer in layers] == ["ip", "udp", "vxlan", "eth", "ip", "udp", "data"]
    outer, inner = (dict(layer.fields) for layer in layers if layer.protocol == "ip")
    assert (outer["Source Address"], outer["Destination Address"]) == (N1.address, N2.address)
    assert (inner["Source Address"], inner["Destination Address"], inner["Time to Live"]) == (A.ip, B.ip, "63")
    # what the trace RPC carries: the bytes where a stage holds them, nothing where it holds none
    assert trace[0].as_dict()["packet"] == request and "packet" not in trace[1].as_dict()


def test_the_icmp_error_a_stage_answers_with_is_kept_in_the_trace():
    n1 = node(N1, A)
    n1.services = service_table([])
    trace = []
    refused = only(n1.from_pod(A, udp_packet(A.ip, "10.96.0.10", 40000, 53), 0.0, trace), Deliver)
    assert next(s.packet for s in trace if s.stage == "reject") == refused.packet
    trace = []
    too_big = only(n1.from_pod(A, udp_packet(A.ip, B.ip, payload=b"x" * (N1.mtu - 27)), 0.0, trace), Deliver)
    assert next(s.packet for s in trace if s.stage == "mtu") == too_big.packet
    icmp_layer = next(layer for layer in dissect_stage("mtu", too_big.packet) if layer.protocol == "icmp")
    assert dict(icmp_layer.fields)["MTU of next hop"] == str(N1.mtu)


def test_proxy_arp_for_the_gateway_and_arp_from_a_peer_vtep():
    n1 = node(N1, A)
    request = arp.request(A.mac, A.ip, N1.gateway)
    frame = ethernet.encode(ethernet.EthernetFrame("ff:ff:ff:ff:ff:ff", A.mac, 0x0806, arp.encode(request)))
    answer = only(n1.from_pod_frame(A, frame, 0.0), DeliverFrame)
    reply = arp.decode(ethernet.decode(answer.frame).payload)
    assert (reply.op, reply.sender_ip, reply.sender_mac, reply.target_ip) == (
        arp.ArpOp.REPLY,
        N1.gateway,
        vtep_mac(N1.address),
        A.ip,
    )
    peer_request = arp.request(vtep_mac(N2.address), "10.244.2.0", "10.244.1.0")
    datagram = vxlan.encode(
        1,
        ethernet.encode(
            ethernet.EthernetFrame(
                "ff:ff:ff:ff:ff:ff", vtep_mac(N2.address), 0x0806, arp.encode(peer_request)
            )
        ),
    )
    out = only(n1.from_tunnel(N2.address, datagram, 0.0), Tunnel)
    assert arp.decode(ethernet.decode(vxlan.decode(out.datagram)[1]).payload).sender_mac == vtep_mac(
        N1.address
    )


def test_rewrite_keeps_checksums_valid():
    original = tcp_packet(A.ip, "10.96.0.10", 40000, 53, tcp.TcpFlags.SYN)
    natted = rewrite(original, dst=(ip_to_int("10.244.2.9"), 5353))
    packet = ipv4.decode(natted)  # verifies the header checksum
    segment = tcp.decode(packet.payload, packet.src, packet.dst)  # verifies the TCP checksum
    assert (packet.dst, segment.dst_port, segment.src_port) == ("10.244.2.9", 5353, 40000)
    back = rewrite(udp_packet("10.244.2.9", A.ip, 53, 5000), src=(ip_to_int("10.96.0.10"), 53))
    packet = ipv4.decode(back)
    assert udp.decode(packet.payload, packet.src, packet.dst).src_port == 53 and packet.src == "10.96.0.10"


def service_table(endpoints):
    from podnet.overlay.pipeline.nat import ServiceTable

    return ServiceTable.from_data(
        {
            "mode": "ipvs",
            "services": [
                {
                    "service": "kube-system/kube-dns",
                    "port_name": "dns",
                    "protocol": "UDP",
                    "cluster_ip": "10.96.0.10",
                    "port": 53,
                    "endpoints": endpoints,
                },
            ],
        }
    )


def test_service_dnat_at_the_source_node_and_replies_come_back_from_the_service_address():
    n1, n2 = node(N1, A), node(N2, B)
    n1.services = service_table([[B.ip, 5353, "node-2"]])
    trace = []
    out = only(n1.from_pod(A, udp_packet(A.ip, "10.96.0.10", 40000, 53), 0.0, trace), Tunnel)
    assert "kube-system/kube-dns:dns" in next(s.detail for s in trace if s.stage == "service-dnat")
    delivered = only(n2.from_tunnel(N1.address, out.datagram, 0.0), Deliver)
    request = ipv4.decode(delivered.packet)
    assert (request.src, request.dst) == (A.ip, B.ip)  # the client's address is kept
    assert udp.decode(request.payload, request.src, request.dst).dst_port == 5353
    reply = only(n2.from_pod(B, udp_packet(B.ip, A.ip, 5353, 40000, b"answer"), 0.1), Tunnel)
    back = ipv4.decode(only(n1.from_tunnel(N2.address, reply.datagram, 0.1), Deliver).packet)
    datagram = udp.decode(back.payload, back.src, back.dst)  # checksums still right after un-DNAT
    assert (back.src, datagram.src_port, datagram.payload) == ("10.96.0.10", 53, b"answer")


def _port_unreachable(sender: str, about: bytes) -> bytes:
    """What a host's stack sends when `about` (an IPv4 packet it got) was for a closed UDP port."""
    return ipv4.encode(icmp.error_packet(icmp.port_unreachable(about), sender, about))


def test_icmp_errors_about_a_service_connection_are_natted_with_their_quote():
    """The endpoint refuses a Service connection's datagram: the client hears it from the Service
    address, about the datagram it sent there; and the client's own refusal of a reply reaches the
    endpoint about the reply the endpoint sent. Every checksum, quoted ones included, stays right."""
    n1, n2 = node(N1, A), node(N2, B)
    n1.services = service_table([[B.ip, 5353, "node-2"]])
    request = udp_packet(A.ip, "10.96.0.10", 40000, 53)
    natted = only(
        n2.from_tunnel(N1.address, only(n1.from_pod(A, request, 0.0), Tunnel).datagram, 0.0), Deliver
    )
    refusal = only(n2.from_pod(B, _port_unreachable(B.ip, natted.packet), 0.1), Tunnel)
    trace = []
    heard = ipv4.decode(only(n1.from_tunnel(N2.address, refusal.datagram, 0.1, trace), Deliver).packet)
    assert (heard.src, heard.dst) == ("10.96.0.10", A.ip)
    quote = icmp.decode(heard.payload).original  # decoding checks the ICMP checksum
    quoted = ipv4.decode(quote[:20] + bytes(64))  # and the quoted header's
    assert (quoted.src, quoted.dst) == (A.ip, "10.96.0.10")
    assert quote[20:] == request[20:28]  # ports, length and the UDP checksum the client sent
    assert any(s.stage == "nat" and "ICMP error" in s.detail for s in trace)
    assert n1.counters["nat.related"] == 1

    reply = udp_packet(B.ip, A.ip, 5353, 40000, b"late")
    back = only(n1.from_tunnel(N2.address, only(n2.from_pod(B, reply, 0.2), Tunnel).datagram, 0.2), Deliver)
    own_refusal = only(n1.from_pod(A, _port_unreachable(A.ip, back.packet), 0.3), Tunnel)
    reached = ipv4.decode(only(n2.from_tunnel(N1.address, own_refusal.datagram, 0.3), Deliver).packet)
    assert (reached.src, reached.dst) == (A.ip, B.ip)
    quote = icmp.decode(reached.payload).original
    assert (ipv4.decode(quote[:20] + bytes(64)).src, quote[20:]) == (B.ip, reply[20:28])


def test_icmp_errors_of_connections_without_nat_pass_as_they_are():
    n1, n2 = node(N1, A), node(N2, B)
    request = udp_packet(A.ip, B.ip, 40000, 9)
    delivered = only(
        n2.from_tunnel(N1.address, only(n1.from_pod(A, request, 0.0), Tunnel).datagram, 0.0), Deliver
    )
    refusal = _port_unreachable(B.ip, delivered.packet)
    heard = only(
        n1.from_tunnel(N2.address, only(n2.from_pod(B, refusal, 0.1), Tunnel).datagram, 0.1), Deliver
    )
    assert heard.packet == after_hops(refusal, 2)
    assert n1.counters["nat.related"] == n2.counters["nat.related"] == 0


def test_a_pod_reaches_itself_through_a_service_snatted_to_its_node():
    """A hairpin: the endpoint is the client itself. As with kube-proxy's masquerade, it sees the
    connection come from the node (the gateway address), so its answer goes back through the node."""
    n1 = node(N1, A)
    n1.services = service_table([[A.ip, 5353, "node-1"]])
    request = udp_packet(A.ip, "10.96.0.10", 40000, 53)
    trace = []
    arrived = ipv4.decode(only(n1.from_pod(A, request, 0.0, trace), Deliver).packet)
    datagram = udp.decode(arrived.payload, arrived.src, arrived.dst)  # checksums hold
    assert (arrived.src, datagram.src_port, arrived.dst, datagram.dst_port) == (N1.gateway, 40000, A.ip, 5353)
    assert any(s.stage == "nat" and "hairpin" in s.detail for s in trace)
    isolated = node(N1, A, policy=lambda direction, flow: Verdict(direction is PolicyDirection.EGRESS, "egress only"))
    isolated.services = service_table([[A.ip, 5353, "node-1"]])
    only(isolated.from_pod(A, request, 0.0), Deliver)  # a pod's policies never keep it from itself
    for now in (0.1, 0.2, 0.3):  # the answer, then again on the shortcut the second one learned
        back = ipv4.decode(only(n1.from_pod(A, udp_packet(A.ip, N1.gateway, 5353, 40000, b"hi"), now), Deliver).packet)
        datagram = udp.decode(back.payload, back.src, back.dst)
        assert (back.src, datagram.src_port, back.dst, datagram.dst_port) == ("10.96.0.10", 53, A.ip, 40000)
        again = ipv4.decode(only(n1.from_pod(A, request, now), Deliver).packet)
        assert (again.src, again.dst, again.payload) == (arrived.src, arrived.dst, arrived.payload)


def test_a_same_node_service_connection_its_endpoints_policy_refuses_stays_refused():
    """Denied by the endpoint's ingress policy after the Service's DNAT, the connection leaves no conntrack
    entry behind: the client's retransmitted SYN is judged and refused again, never passed as established."""
    from podnet.overlay.pipeline.nat import ServiceTable

    judged = []

    def deny_c(direction, flow):
        judged.append((direction, flow.dst_ip))
        return Verdict(not (direction is PolicyDirection.INGRESS and flow.dst_ip == C.ip), "deny ingress of c")

    n1 = node(N1, A, C, policy=deny_c)
    n1.services = ServiceTable.from_data({"mode": "ipvs", "services": [{
        "service": "default/web", "port_name": "", "protocol": "TCP", "cluster_ip": "10.96.0.20", "port": 80,
        "endpoints": [[C.ip, 8080, "node-1"]]}]})
    syn = tcp_packet(A.ip, "10.96.0.20", 40000, 80, tcp.TcpFlags.SYN)
    for now in (0.0, 1.0, 3.0):
        assert only(n1.from_pod(A, syn, now), Drop).reason == "policy-ingress"
    assert judged == [(PolicyDirection.EGRESS, C.ip), (PolicyDirection.INGRESS, C.ip)] * 3
    assert n1.conntrack.lookup((6, ip_to_int(A.ip), 40000, ip_to_int("10.96.0.20"), 80), 3.0) is None


def test_service_without_endpoints_is_rejected_with_port_unreachable():
    n1 = node(N1, A)
    n1.services = service_table([])
    answer = only(n1.from_pod(A, udp_packet(A.ip, "10.96.0.10", 40000, 53), 0.0), Deliver)
    error = ipv4.decode(answer.packet)
    assert error.dst == A.ip and icmp.decode(error.payload).code == icmp.UnreachableCode.PORT
    assert n1.counters["drop.service-no-endpoints"] == 1


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.integers(min_value=0, max_value=80))
def test_any_datagram_from_a_known_node_is_forwarded_or_dropped_never_an_exception(tail, cut):
    n2 = node(N2, B)
    good = only(node(N1, A).from_pod(A, udp_packet(A.ip, B.ip), 0.0), Tunnel).datagram
    for datagram in (tail, good[:cut] + tail, good[:22] + tail, bytes(good[: 22 + cut]) + tail):
        for out in n2.from_tunnel(N1.address, datagram, 0.0):
            assert isinstance(out, Deliver | Drop | Tunnel)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=20, max_size=140))
def test_any_packet_from_a_pod_is_forwarded_or_dropped_never_an_exception(data):
    n1 = node(N1, A, C)
    n1.services = service_table([[B.ip, 5353, "node-2"]])

    def sound_header(header: bytearray) -> bytes:
        header[10:12] = b"\0\0"
        header[10:12] = internet_checksum(header).to_bytes(2, "big")
        return bytes(header)

    # a header that passes the first checks (IPv4, the pod's source, a right checksum), the rest random
    header = sound_header(bytearray(b"\x45" + data[1:12] + ip_to_bytes(A.ip) + data[16:20]))
    # UDP or TCP of any length to the Service's port, which its NAT rewrites
    body = b"\x9c\x40\x00\x35" + data[24:]
    to_service = sound_header(
        bytearray(
            b"\x45\x00"
            + (20 + len(body)).to_bytes(2, "big")
            + b"\x00\x01\x40\x00\x40"
            + bytes([17 if data[0] & 1 else 6])
            + b"\0\0"
            + ip_to_bytes(A.ip)
            + ip_to_bytes("10.96.0.10")
        )
    )
    for packet in (data, header + data[20:], to_service + body, to_service + body):
        for out in n1.from_pod(A, packet, 0.0):
            assert isinstance(out, Deliver | Drop | Tunnel | ToHost)
