"""Super-packets in the pure pipeline: a pod's 64 KB TCP super-packet is decided on once (stages or
shortcut), cut into MTU-sized segments only at the tunnel, and what node-2 receives of them, joined
again, is the super-packet as the pod sent it, one hop older; a trace shows it once, with its segment
count."""

import random

from podnet.overlay.pipeline.model import DeliverSuper, Tunnel, TunnelBurst
from podnet.overlay.wire import ipv4, segment, tcp
from podnet.overlay.wire.addresses import ip_to_int
from podnet.overlay.wire.tcp import TcpFlags, TcpSegment
from support.pipelines import N1, N2, A, B, after_hops, node, only, tcp_packet, with_partial_checksum

MSS = 1398
SPORT, DPORT = 40000, 5201


def data_packet(payload: bytes, seq: int, ip_id: int, src: str = A.ip, dst: str = B.ip) -> bytes:
    body = tcp.encode(TcpSegment(SPORT, DPORT, seq, 1, TcpFlags.ACK | TcpFlags.PSH, 502, payload,
                                 timestamps=(10, 20)), src, dst)
    return ipv4.encode(ipv4.IPv4Packet(src, dst, ipv4.IPProtocol.TCP, body, identification=ip_id))


def established(sender, receiver):
    """A connection A:SPORT → B:DPORT through both pipelines (SYN, SYN-ACK, ACK)."""
    now = 0.0
    syn = tcp_packet(A.ip, B.ip, SPORT, DPORT, TcpFlags.SYN)
    for out in sender.from_pod(A, syn, now):
        receiver.from_tunnel(N1.address, out.datagram, now)
    synack = tcp_packet(B.ip, A.ip, DPORT, SPORT, TcpFlags.SYN | TcpFlags.ACK)
    for out in receiver.from_pod(B, synack, now):
        sender.from_tunnel(N2.address, out.datagram, now)
    ack = tcp_packet(A.ip, B.ip, SPORT, DPORT, TcpFlags.ACK)
    for out in sender.from_pod(A, ack, now):
        receiver.from_tunnel(N1.address, out.datagram, now)


def test_a_super_packet_is_cut_at_the_tunnel_and_joined_again_on_the_other_node():
    sender, receiver = node(N1, A), node(N2, B)
    established(sender, receiver)
    payload = random.Random(3).randbytes(45 * MSS + 100)
    sent = data_packet(payload, seq=1000, ip_id=500)
    partial = with_partial_checksum(sent)  # as the pod's kernel hands it over
    for attempt in range(2):  # the first takes the stages, the second the shortcut they left
        burst = only(sender.from_pod(A, bytes(partial), 1.0, mss=MSS), TunnelBurst)
        assert burst.node_address == N2.address and len(burst.datagrams) == 46
        assert all(len(d) == 22 + 1450 for d in burst.datagrams[:-1])  # VXLAN + Ethernet + an MTU
        outputs = receiver.from_tunnel_batch([(d, N1.address) for d in burst.datagrams], 1.0)
        assert [type(out).__name__ for out in outputs] == ["Deliver"] * 46, attempt
        (joined,) = segment.coalesce([out.packet for out in outputs])
        assert joined == segment.Coalesced(after_hops(sent, 2), MSS)  # a hop through each node
    assert sender.counters["tunnel.tx"] >= 2 * 46


def test_segments_for_a_pod_that_takes_super_packets_are_joined_before_they_are_decided_on():
    sender, receiver = node(N1, A), node(N2, B)
    receiver.add_pod(B, super_packets=True)
    established(sender, receiver)
    sent = data_packet(random.Random(4).randbytes(30 * MSS), seq=1000, ip_id=500)
    for attempt in range(2):  # the stages, then the shortcut
        burst = only(sender.from_pod(A, with_partial_checksum(sent), 1.0, mss=MSS), TunnelBurst)
        before = dict(receiver.counters)
        outputs = receiver.from_tunnel_batch([(d, N1.address) for d in burst.datagrams], 1.0)
        assert only(outputs, DeliverSuper) == DeliverSuper(ip_to_int(B.ip), after_hops(sent, 2), MSS), attempt
        assert receiver.counters["tunnel.rx"] - before.get("tunnel.rx", 0) == 30  # segments are counted
    # from another node, the same segments are not joined with these, nor taken from it at all
    stray = receiver.from_tunnel_batch([(d, "127.0.0.99") for d in burst.datagrams[:2]], 1.0)
    assert [type(out).__name__ for out in stray] == ["Drop", "Drop"]


def test_a_burst_read_whole_is_decided_on_as_its_datagrams_are():
    """What a tunnel that hands UDP_GRO reads on whole gives: the same outputs, for a pod that takes
    super-packets and for one that does not, and nothing from a stranger."""
    for super_packets in (True, False):
        sender, receiver = node(N1, A), node(N2, B)
        receiver.add_pod(B, super_packets=super_packets)
        established(sender, receiver)
        sent = data_packet(random.Random(5).randbytes(30 * MSS), seq=1000, ip_id=500)
        burst = only(sender.from_pod(A, with_partial_checksum(sent), 1.0, mss=MSS), TunnelBurst)
        run = segment.DatagramRun(bytes(burst.laid), burst.sizes[0])
        outputs = receiver.from_tunnel_batch([(run, N1.address)], 1.0)
        if super_packets:
            assert outputs == [DeliverSuper(ip_to_int(B.ip), after_hops(sent, 2), MSS)]
        else:
            assert [out.packet for out in outputs] == segment.tcp_segments(after_hops(sent, 2), MSS)
        stray = receiver.from_tunnel_batch([(run, "127.0.0.99")], 1.0)
        assert [type(out).__name__ for out in stray] == ["Drop"] * 30


def test_a_local_pod_gets_the_super_packet_whole():
    local = node(N1, A, B_LOCAL := type(A)("default", "b", "10.244.1.3", "0a:58:0a:f4:01:03"))
    now = 0.0
    syn = tcp_packet(A.ip, B_LOCAL.ip, SPORT, DPORT, TcpFlags.SYN)
    local.from_pod(A, syn, now)
    local.from_pod(B_LOCAL, tcp_packet(B_LOCAL.ip, A.ip, DPORT, SPORT, TcpFlags.SYN | TcpFlags.ACK), now)
    local.from_pod(A, tcp_packet(A.ip, B_LOCAL.ip, SPORT, DPORT, TcpFlags.ACK), now)
    sent = data_packet(random.randbytes(10 * MSS), seq=5, ip_id=1, dst=B_LOCAL.ip)
    for attempt in range(2):  # the stages, then the shortcut: the checksum the pod left partial made whole
        out = only(local.from_pod(A, with_partial_checksum(sent), now, mss=MSS), DeliverSuper)
        assert out.mss == MSS and out.packet == after_hops(sent, 1), attempt


def test_a_traced_super_packet_shows_once_with_its_segment_count():
    sender, receiver = node(N1, A), node(N2, B)
    established(sender, receiver)
    trace = []
    burst = only(sender.from_pod(A, data_packet(bytes(20 * MSS), 1000, 7), 1.0, trace, mss=MSS), TunnelBurst)
    assert len(burst.datagrams) == 20
    (encap,) = [stage for stage in trace if stage.stage == "vxlan-encap"]
    assert "cut into 20 segments of 1398 B of payload" in encap.detail
    assert len(encap.packet) == 20 + 8 + 22 + 1450  # the first segment as it is on the underlay


def test_segments_over_the_mtu_are_answered_as_one_too_big_packet():
    sender, receiver = node(N1, A), node(N2, B)
    established(sender, receiver)
    outputs = sender.from_pod(A, data_packet(bytes(4 * 2000), 1000, 7), 1.0, mss=2000)
    assert not [out for out in outputs if isinstance(out, Tunnel | TunnelBurst)]
    assert sender.counters["drop.too-big"] == 1
