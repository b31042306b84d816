"""The `bgp` backend's encapsulation, pure: foo-over-UDP between pipelines wired back to back in memory.

Routes to other nodes' pods come only from BGP (`replace_source("bgp", ...)`, what the speaker installs);
the Node list gives peers without routes. A pod's IPv4 packet travels as the whole UDP payload.
"""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.pipeline.forward import Pipeline
from podnet.overlay.pipeline.model import (
    OUTER_IP_UDP,
    Deliver,
    Drop,
    Encapsulation,
    NodeIdentity,
    Peer,
    PodPort,
    Tunnel,
    dissect_stage,
    vtep_mac,
)
from podnet.overlay.pipeline.routes import Route, RouteKind
from podnet.overlay.wire import icmp, ipv4, udp
from support.pipelines import A, B, after_hops, only, udp_packet

FOU = Encapsulation.FOU
N1 = NodeIdentity("node-1", "127.0.0.11", "10.244.1.0/24", encapsulation=FOU, fou_port=5555)
N2 = NodeIdentity("node-2", "127.0.0.12", "10.244.2.0/24", encapsulation=FOU, fou_port=5555)
N3 = NodeIdentity("node-3", "127.0.0.13", "10.244.3.0/24", encapsulation=FOU, fou_port=5555)
NODES = (N1, N2, N3)


def bgp_routes(identity: NodeIdentity, *, withdrawn: tuple[NodeIdentity, ...] = ()) -> list[Route]:
    return [
        Route(ipaddress.IPv4Network(other.pod_cidr), RouteKind.TUNNEL, other.address, "bgp")
        for other in NODES
        if other is not identity and other not in withdrawn
    ]


def node(identity: NodeIdentity, *pods: PodPort) -> Pipeline:
    """A node in bgp mode: every Node known as a peer without a route, the routes from BGP."""
    pipeline = Pipeline(identity)
    for other in NODES:
        if other is not identity:
            pipeline.set_peer(Peer(other.name, other.address, vtep_mac(other.address)), None)
    pipeline.routes.replace_source("bgp", bgp_routes(identity))
    for pod in pods:
        pipeline.add_pod(pod)
    return pipeline


def test_the_pod_packet_is_the_whole_udp_payload_and_the_reply_comes_back_the_same_way():
    n1, n2 = node(N1, A), node(N2, B)
    request = udp_packet(A.ip, B.ip)
    out = only(n1.from_pod(A, request, 0.0), Tunnel)
    assert (out.node_address, out.datagram) == (N2.address, after_hops(request, 1))  # no header, no NAT
    delivered = only(n2.from_tunnel(N1.address, out.datagram, 0.1), Deliver)
    assert delivered.packet == after_hops(request, 2)
    reply = only(n2.from_pod(B, udp_packet(B.ip, A.ip, 53, 5000, b"world"), 0.2), Tunnel)
    back = only(n1.from_tunnel(N2.address, reply.datagram, 0.3), Deliver)
    assert udp.decode(ipv4.decode(back.packet).payload, B.ip, A.ip).payload == b"world"
    assert n1.counters["tunnel.tx"] == n1.counters["tunnel.rx"] == 1


def test_node_events_alone_give_no_route_and_a_withdrawn_bgp_route_stops_traffic_both_ways():
    n1, n2 = node(N1, A), node(N2, B)
    in_flight = only(n1.from_pod(A, udp_packet(A.ip, B.ip), 0.0), Tunnel).datagram
    n1.routes.replace_source("bgp", bgp_routes(N1, withdrawn=(N2,)))
    assert only(n1.from_pod(A, udp_packet(A.ip, B.ip, sport=5001), 0.1), Drop).reason == "no-route"
    # node-2 no longer owns a prefix at node-1, so what it sends from its pods is refused there too
    n2.routes.replace_source("bgp", bgp_routes(N2, withdrawn=(N1,)))
    assert only(n2.from_tunnel(N1.address, in_flight, 0.1), Drop).reason == "fou-spoofed-inner-source"
    n2.routes.replace_source("bgp", bgp_routes(N2))
    only(n2.from_tunnel(N1.address, in_flight, 0.2), Deliver)


def test_a_bgp_route_through_a_next_hop_without_a_tunnel_is_dropped():
    n1 = node(N1, A)
    n1.routes.replace_source(
        "bgp", [Route(ipaddress.IPv4Network("10.244.9.0/24"), RouteKind.TUNNEL, "127.0.0.99", "bgp")]
    )
    assert only(n1.from_pod(A, udp_packet(A.ip, "10.244.9.9"), 0.0), Drop).reason == "fou-unknown-next-hop"


def _checksum_broken(packet: bytes) -> bytes:
    return packet[:10] + bytes([packet[10] ^ 0xFF]) + packet[11:]


@pytest.mark.parametrize(
    ("sender", "datagram", "reason"),
    [
        ("127.0.0.99", udp_packet(A.ip, B.ip), "fou-unknown-sender"),
        (N1.address, b"", "short-ip-packet"),
        (N1.address, udp_packet(A.ip, B.ip)[:19], "short-ip-packet"),
        (N1.address, b"\x60" + udp_packet(A.ip, B.ip)[1:], "not-ipv4"),
        (N1.address, _checksum_broken(udp_packet(A.ip, B.ip)), "bad-ip-checksum"),
        (N1.address, udp_packet(A.ip, B.ip)[:30], "bad-ip-length"),
        # node-1 sending from node-3's podCIDR, and from outside every podCIDR
        (N1.address, udp_packet("10.244.3.7", B.ip), "fou-spoofed-inner-source"),
        (N1.address, udp_packet("192.0.2.1", B.ip), "fou-spoofed-inner-source"),
        (N1.address, udp_packet(A.ip, "10.244.3.7"), "fou-not-for-this-node"),
        (N1.address, udp_packet(A.ip, "10.244.2.77"), "no-such-pod"),
    ],
)
def test_bad_fou_datagrams_are_dropped_and_counted_and_forwarding_continues(sender, datagram, reason):
    n2 = node(N2, B)
    assert only(n2.from_tunnel(sender, datagram, 0.0), Drop).reason == reason
    assert n2.counters[f"drop.{reason}"] == 1
    only(n2.from_tunnel(N1.address, udp_packet(A.ip, B.ip), 0.0), Deliver)


def test_the_node_address_itself_may_send_for_nodeport_traffic():
    n2 = node(N2, B)
    only(n2.from_tunnel(N1.address, udp_packet(N1.address, B.ip), 0.0), Deliver)


def test_a_packet_over_the_pod_mtu_with_df_gets_frag_needed_and_one_at_the_mtu_goes():
    n1 = node(N1, A)
    answer = only(n1.from_pod(A, udp_packet(A.ip, B.ip, payload=b"x" * (N1.mtu - 27)), 0.0), Deliver)
    error = ipv4.decode(answer.packet)
    message = icmp.decode(error.payload)
    assert error.src == N1.gateway and message.code == icmp.UnreachableCode.FRAGMENTATION_NEEDED
    assert message.next_hop_mtu == N1.mtu
    fits = udp_packet(A.ip, B.ip, sport=5001, payload=b"x" * (N1.mtu - 28))
    assert len(only(n1.from_pod(A, fits, 0.0), Tunnel).datagram) == N1.mtu


def test_trace_shows_the_encapsulation_with_its_28_bytes_and_the_decapsulation():
    n1, n2 = node(N1, A), node(N2, B)
    request = udp_packet(A.ip, B.ip)
    sent, received = [], []
    out = only(n1.from_pod(A, request, 0.0, sent), Tunnel)
    only(n2.from_tunnel(N1.address, out.datagram, 0.0, received), Deliver)
    encap = next(s for s in sent if s.stage == "fou-encap")
    assert "127.0.0.11:5555 → 127.0.0.12:5555 (node-2)" in encap.detail
    assert (
        f"{len(request)} B packet" in encap.detail
        and f"{len(request) + 28} B on the underlay" in encap.detail
    )
    assert "28 B overhead" in encap.detail and OUTER_IP_UDP == 28
    assert not any(s.stage.startswith("vxlan") for s in sent + received)
    decap = next(s for s in received if s.stage == "fou-decap")
    assert "from node-1 (127.0.0.11), UDP port 5555" in decap.detail and f"{A.ip} → {B.ip}" in decap.detail
    assert [s.stage for s in received][-1] == "deliver"
    layers = dissect_stage("fou-encap", encap.packet)
    assert [layer.protocol for layer in layers] == ["ip", "udp", "ip", "udp", "data"]
    assert dict(layers[1].fields)["Destination Port"] == "5555" and decap.packet == encap.packet


def test_the_vxlan_backend_is_unchanged_by_the_encapsulation_field():
    vxlan_node = Pipeline(NodeIdentity("node-1", "127.0.0.11", "10.244.1.0/24"))
    vxlan_node.set_peer(Peer("node-2", N2.address, vtep_mac(N2.address)), N2.pod_cidr)
    vxlan_node.add_pod(A)
    out = only(vxlan_node.from_pod(A, udp_packet(A.ip, B.ip), 0.0), Tunnel)
    assert len(out.datagram) - len(udp_packet(A.ip, B.ip)) == 22  # VXLAN 8 + inner Ethernet 14
    assert vxlan_node.inner_offset == 22 and node(N1).inner_offset == 0


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.sampled_from([N1.address, N3.address, "127.0.0.99"]))
def test_any_datagram_is_forwarded_or_dropped_never_an_exception(data, sender):
    n2 = node(N2, B)
    for output in n2.from_tunnel(sender, data, 0.0):
        assert isinstance(output, Deliver | Drop)
