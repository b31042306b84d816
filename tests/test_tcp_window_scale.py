"""Virtual pods' TCP at speed, without sockets: window scaling (RFC 7323) as Linux negotiates it, super-
segments out and coalesced segments in, and sequence numbers that wrap under a scaled window."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.nodeagent.pods.virtual import client as ops
from podnet.nodeagent.pods.virtual.stack import PodStack, SuperPacket
from podnet.nodeagent.pods.virtual.tcp import (
    INITIAL_WINDOW_SEGMENTS,
    MSS,
    RECEIVE_WINDOW,
    SUPER_PACKET_LIMIT,
    UNSCALED_WINDOW,
    WINDOW_SCALE,
    DataReceived,
    TcpConnection,
    TcpState,
    seq_add,
    seq_diff,
    super_segment_size,
)
from podnet.overlay.wire import ipv4, tcp
from podnet.overlay.wire.checksum import internet_checksum, pseudo_header_sum
from podnet.overlay.wire.ipv4 import IPProtocol
from podnet.overlay.wire.segment import coalesce, tcp_segments, with_tcp_checksum
from podnet.overlay.wire.tcp import TcpFlags, TcpSegment
from support.pipelines import with_partial_checksum

CLIENT, SERVER = 40000, 80
CLIENT_IP, SERVER_IP = "10.244.1.2", "10.244.2.2"
# A SYN's options as Linux 6.x writes them: MSS 1410, SACK permitted, timestamps, NOP, window scale 7.
LINUX_SYN_OPTIONS = bytes.fromhex("02040582" "0402080a00bc614e00000000" "01030307")


def linux_syn(window_scale: bool = True) -> bytes:
    options = LINUX_SYN_OPTIONS if window_scale else LINUX_SYN_OPTIONS[:16] + bytes.fromhex("01010101")
    header = bytearray(20)
    header[0:2], header[2:4] = CLIENT.to_bytes(2, "big"), SERVER.to_bytes(2, "big")
    header[4:8] = (0xFFFFF000).to_bytes(4, "big")
    header[12] = (20 + len(options)) // 4 << 4
    header[13] = int(TcpFlags.SYN)
    header[14:16] = (64240).to_bytes(2, "big")
    segment = bytearray(header + options)
    segment[16:18] = internet_checksum(
        segment, pseudo_header_sum(CLIENT_IP, SERVER_IP, IPProtocol.TCP, len(segment))
    ).to_bytes(2, "big")
    return bytes(segment)


def established(*, client_iss: int = 1000, server_iss: int = 9000, super_segments: bool = True):
    client = TcpConnection.connect(CLIENT, SERVER, client_iss, 0.0, super_segments=super_segments)
    (syn,) = client.take_segments()
    server = TcpConnection.accept(syn, server_iss, 0.0, super_segments=super_segments)
    (syn_ack,) = server.take_segments()
    client.receive(syn_ack, 0.0)
    (ack,) = client.take_segments()
    server.receive(ack, 0.0)
    assert client.state == server.state == TcpState.ESTABLISHED
    client.take_events()
    server.take_events()
    return client, server


def test_our_syn_offers_scaling_and_carries_the_window_unscaled():
    client = TcpConnection.connect(CLIENT, SERVER, 1, 0.0)
    (syn,) = client.take_segments()
    assert (syn.window_scale, syn.window, syn.mss) == (WINDOW_SCALE, UNSCALED_WINDOW, MSS)
    # Laid out as Linux lays out the same options: MSS, then NOP and window scale.
    encoded = tcp.encode(syn, CLIENT_IP, SERVER_IP)
    assert encoded[20:28] == bytes((2, 4)) + MSS.to_bytes(2, "big") + bytes((1, 3, 3, WINDOW_SCALE))


def test_answering_a_linux_syn_agrees_on_scaling_both_ways():
    syn = tcp.decode(linux_syn(), CLIENT_IP, SERVER_IP)
    server = TcpConnection.accept(syn, 5000, 0.0)
    (syn_ack,) = server.take_segments()
    assert syn_ack.flags == TcpFlags.SYN | TcpFlags.ACK
    assert syn_ack.window == UNSCALED_WINDOW and syn_ack.window_scale == WINDOW_SCALE
    assert tcp.encode(syn_ack, SERVER_IP, CLIENT_IP)[20:28] == bytes.fromhex("0204") + MSS.to_bytes(2, "big") + bytes(
        (1, 3, 3, WINDOW_SCALE)
    )
    assert server.snd_wnd == 64240  # the SYN's own window is never scaled
    server.receive(TcpSegment(CLIENT, SERVER, seq_add(syn.seq, 1), 5001, TcpFlags.ACK, 502), 0.0)
    assert server.state == TcpState.ESTABLISHED
    assert server.snd_wnd == 502 << 7  # the peer's later windows are, by its shift
    server.send(b"x", 0.0)
    (data,) = server.take_segments()
    assert data.window == RECEIVE_WINDOW >> WINDOW_SCALE  # and ours, by ours
    assert server.receive_window == RECEIVE_WINDOW


def test_a_syn_without_scaling_gets_none_and_a_64k_window():
    syn = tcp.decode(linux_syn(window_scale=False), CLIENT_IP, SERVER_IP)
    assert syn.window_scale is None
    server = TcpConnection.accept(syn, 5000, 0.0)
    (syn_ack,) = server.take_segments()
    assert syn_ack.window_scale is None
    server.receive(TcpSegment(CLIENT, SERVER, seq_add(syn.seq, 1), 5001, TcpFlags.ACK, 502), 0.0)
    assert server.snd_wnd == 502
    server.send(b"x", 0.0)
    assert server.take_segments()[0].window == UNSCALED_WINDOW
    assert server.receive_window == UNSCALED_WINDOW


def test_a_syn_ack_without_scaling_leaves_the_opener_unscaled():
    client = TcpConnection.connect(CLIENT, SERVER, 1000, 0.0)
    client.take_segments()
    client.receive(TcpSegment(SERVER, CLIENT, 7000, 1001, TcpFlags.SYN | TcpFlags.ACK, 29200, mss=1460), 0.0)
    (ack,) = client.take_segments()
    assert client.state == TcpState.ESTABLISHED and ack.window == UNSCALED_WINDOW
    client.receive(TcpSegment(SERVER, CLIENT, 7001, 1001, TcpFlags.ACK, 40000), 0.0)
    assert client.snd_wnd == 40000


def test_super_segments_are_whole_segments_of_the_peer_mss_within_the_windows():
    client, server = established()
    client.send(bytes(1 << 20), 0.0)
    segments = client.take_segments()
    sizes = [len(s.payload) for s in segments]
    # The first flight is the initial congestion window, in as few segments as the limit allows.
    assert sum(sizes) == INITIAL_WINDOW_SEGMENTS * MSS
    assert all(size % MSS == 0 for size in sizes)
    assert super_segment_size(MSS) <= SUPER_PACKET_LIMIT
    assert super_segment_size(MSS) + 40 <= 0xFFFF
    for segment in segments:
        server.receive(segment, 0.01)
    (ack,) = server.take_segments()  # one ACK for the flight
    assert ack.ack == seq_add(1001, sum(sizes))
    client.receive(ack, 0.02)
    # Byte counting: the window doubled on the one ACK, and the next flight is super-segments of it.
    second = client.take_segments()
    assert sum(len(s.payload) for s in second) == 2 * INITIAL_WINDOW_SEGMENTS * MSS
    assert max(len(s.payload) for s in second) == 2 * INITIAL_WINDOW_SEGMENTS * MSS


def test_without_super_segments_every_segment_fits_the_mss():
    client, _ = established(super_segments=False)
    client.send(bytes(100_000), 0.0)
    assert {len(s.payload) for s in client.take_segments()} == {MSS}


def test_a_coalesced_super_segment_is_taken_whole():
    _, server = established(super_segments=False)
    payload = random.Random(1).randbytes(40 * MSS)
    server.receive(TcpSegment(CLIENT, SERVER, 1001, 9001, TcpFlags.ACK | TcpFlags.PSH, 502, payload), 0.0)
    assert server.take_events() == [DataReceived(payload)]
    (ack,) = server.take_segments()
    assert ack.ack == seq_add(1001, len(payload))


def test_out_of_order_data_beyond_64k_waits_inside_a_scaled_window():
    _, server = established()
    first, later = bytes(100_000), b"y" * 50_000
    server.receive(TcpSegment(CLIENT, SERVER, seq_add(1001, len(first)), 9001, TcpFlags.ACK, 502, later), 0.0)
    assert server.take_events() == []
    server.receive(TcpSegment(CLIENT, SERVER, 1001, 9001, TcpFlags.ACK, 502, first), 0.0)
    assert b"".join(e.data for e in server.take_events()) == first + later
    assert server.rcv_nxt == seq_add(1001, 150_000)


def _transfer(client: TcpConnection, server: TcpConnection, data: bytes, loss: random.Random | None = None) -> bytes:
    """Sends `data` client to server, segments crossing a wire that may lose some, under a fake clock,
    until the client has all of it acknowledged."""
    now, received = 0.0, bytearray()
    client.send(data, now)
    for _ in range(100_000):
        if len(received) == len(data) and not client.unacknowledged:
            break
        moved = False
        for sender, receiver in ((client, server), (server, client)):
            for segment in sender.take_segments():
                moved = True
                if loss is None or loss.random() > 0.05:
                    receiver.receive(segment, now)
        received += b"".join(e.data for e in server.take_events() if isinstance(e, DataReceived))
        client.take_events()
        if not moved:
            now = min(d for d in (client.next_deadline(), server.next_deadline()) if d is not None)
            client.handle_timer(now)
            server.handle_timer(now)
        now += 0.001
    return bytes(received)


@settings(max_examples=20, deadline=None)
@given(
    client_iss=st.integers(0xFFFFFFFF - 3_000_000, 0xFFFFFFFF),
    server_iss=st.integers(0, 0xFFFFFFFF),
    lossy=st.booleans(),
)
def test_sequence_numbers_wrap_under_a_scaled_window(client_iss, server_iss, lossy):
    client, server = established(client_iss=client_iss, server_iss=server_iss)
    data = random.Random(client_iss).randbytes(3 << 20)
    received = _transfer(client, server, data, random.Random(server_iss) if lossy else None)
    assert received == data
    assert seq_diff(client.snd_una, client_iss) == len(data) + 1
    assert client.snd_wnd == RECEIVE_WINDOW


def _stacks(*, client_super: bool, server_super: bool) -> tuple[PodStack, PodStack]:
    client = PodStack("a", "default", CLIENT_IP, "02:00:00:00:00:01", "02:00:00:00:00:fe", [], "a",
                      rng=random.Random(1), super_segments=client_super)
    server = PodStack("b", "default", SERVER_IP, "02:00:00:00:00:02", "02:00:00:00:00:fe", [80], "b",
                      rng=random.Random(2), super_segments=server_super)
    return client, server


def _echo(client: PodStack, server: PodStack, size: int, *, cut: bool, join: bool) -> tuple[bytes, list[bytes]]:
    """Pod a writes `size` bytes to b's echo port. `cut`: super-packets cut into wire segments on the way
    (as the tunnel does), `join`: each direction's packets of one pass coalesced (as the receiving node
    does); returns what came back to a and every packet a sent."""
    now = 0.0
    op = client.open_tcp(SERVER_IP, 80, now)
    to_server, to_client, echoed, sent = client.poll(now), [], bytearray(), []
    data = random.Random(size).randbytes(size)

    def wire(packets: list[bytes]) -> list[bytes]:
        # A super-packet's checksum is left partial: the pipeline makes its segments' or, handing it on
        # whole, its own.
        if cut:
            packets = [s for p in packets for s in (tcp_segments(p, p.mss) if type(p) is SuperPacket else [p])]
        else:
            packets = [with_tcp_checksum(p) if type(p) is SuperPacket else p for p in packets]
        if join:
            packets = [item for item, _ in coalesce(packets)]
        return packets

    for _ in range(10_000):
        if len(echoed) == size:
            break
        sent += to_server
        answers = server.receive_batch(wire(to_server), now) if to_server else []
        to_server = client.receive_batch(wire(to_client), now) if to_client else []
        to_client = answers
        for event in client.take_events():
            if isinstance(event, ops.Opened):
                client.send(op, data, now)
                to_server += client.poll(now)
            elif isinstance(event, ops.Received):
                echoed += event.data
        now += 0.0005
    assert bytes(echoed) == data
    return bytes(echoed), sent


def test_a_stack_sends_super_packets_with_the_gso_size_and_ip_ids_to_match():
    client, server = _stacks(client_super=True, server_super=True)
    _, sent = _echo(client, server, 1 << 20, cut=False, join=False)
    supers = [p for p in sent if type(p) is SuperPacket]
    assert supers and all(p.mss == MSS for p in supers)
    assert max(len(p) for p in supers) > 10 * MSS
    assert all(len(p) <= 0xFFFF for p in sent)
    # Each super-packet's segments take the IP ids from its own upward: the next packet's id follows on.
    for packet, following in zip(sent, sent[1:], strict=False):
        count = max(1, -(-(len(packet) - 40) // packet.mss)) if type(packet) is SuperPacket else 1
        assert ipv4.decode(following).identification == (ipv4.decode(packet).identification + count) & 0xFFFF


def test_super_packets_cut_at_the_wire_reach_a_plain_stack():
    client, server = _stacks(client_super=True, server_super=False)
    _echo(client, server, 1 << 20, cut=True, join=False)


def test_segments_joined_on_the_way_are_taken_whole_by_the_stack():
    client, server = _stacks(client_super=False, server_super=True)
    _echo(client, server, 1 << 20, cut=True, join=True)


def test_out_of_order_data_held_is_bounded_by_the_window_however_segments_overlap():
    _, server = established()
    chunk = bytes(60_000)
    # Overlapping super-segments at every 1,000 bytes: together far more than the window, most refused.
    for start in range(1, RECEIVE_WINDOW // 2, 1000):
        server.receive(TcpSegment(CLIENT, SERVER, seq_add(1001, start), 9001, TcpFlags.ACK, 502, chunk), 0.0)
    assert sum(len(p) for p, _ in server._out_of_order.values()) <= RECEIVE_WINDOW
    assert server._out_of_order_bytes == sum(len(p) for p, _ in server._out_of_order.values())
    server.receive(TcpSegment(CLIENT, SERVER, 1001, 9001, TcpFlags.ACK, 502, b"z"), 0.0)
    received = b"".join(e.data for e in server.take_events())
    assert received[:1] == b"z" and len(received) > 1 and server._out_of_order_bytes == 0


def test_super_packets_leave_with_a_partial_checksum_and_looped_back_ones_with_a_whole_one():
    """Out on the link a super-packet's checksum is the pseudo-header's sum only, as a kernel's with
    checksum offload; one the pod sends itself is checked on arrival, so it gets its whole checksum."""
    client, server = _stacks(client_super=True, server_super=True)
    _, sent = _echo(client, server, 1 << 20, cut=False, join=False)
    supers = [p for p in sent if type(p) is SuperPacket]
    assert supers and all(bytes(p) == with_partial_checksum(with_tcp_checksum(p)) for p in supers)
    looped = PodStack("c", "default", CLIENT_IP, "02:00:00:00:00:03", "02:00:00:00:00:fe", [80], "c",
                      rng=random.Random(3), super_segments=True)
    now = 0.0
    op = looped.open_tcp(CLIENT_IP, 80, now)
    assert looped.poll(now) == []  # the handshake never leaves the pod
    data = random.Random(7).randbytes(1 << 18)
    looped.send(op, data, now)
    echoed = bytearray()
    for _ in range(1000):
        for event in looped.take_events():
            if isinstance(event, ops.Received):
                echoed += event.data
        if len(echoed) == len(data):
            break
        now += 0.0005
        assert looped.poll(now) == []
    assert bytes(echoed) == data
