"""The virtual stack's fast UDP path answers exactly as its full decode path does."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.nodeagent.pods.virtual.client import Completed, UdpReply
from podnet.overlay.wire import fastpath, icmp, ipv4, udp
from support.virtual_link import POD_A_IP, POD_B_IP, make_pod

SOURCES = [POD_A_IP, "10.244.3.7", "127.0.0.11", "10.244.2.99"]
DESTINATIONS = [POD_B_IP, POD_B_IP, POD_B_IP, "10.244.2.21", "127.0.0.1"]
PORTS = [81, 9, 53, 33000]  # agnhost's UDP port, closed ones, and one an operation may be waiting on

packets = st.builds(
    lambda src, dst, sport, dport, payload, damage, cut: (src, dst, sport, dport, payload, damage, cut),
    st.sampled_from(SOURCES),
    st.sampled_from(DESTINATIONS),
    st.sampled_from([53, 40000]),
    st.sampled_from(PORTS),
    st.sampled_from([b"hostname", b"clientip", b"echo hi", b"\x00" * 64, b"x" * 1400]),
    st.none() | st.tuples(st.integers(0, 1500), st.integers(0, 255)),
    st.booleans(),
)

# A wake-up's packets are mostly sound: enough of them for the batch to be checked together.
sound_packets = packets.map(lambda description: (*description[:5], None, False))


def _encode(src, dst, sport, dport, payload, damage, cut) -> bytes:
    packet = bytearray(
        ipv4.encode(
            ipv4.IPv4Packet(
                src, dst, ipv4.IPProtocol.UDP, udp.encode(udp.UdpDatagram(sport, dport, payload), src, dst)
            )
        )
    )
    if damage is not None:
        at, value = damage
        packet[at % len(packet)] = value
    return bytes(packet[: len(packet) - 3] if cut else packet)


def _pod_awaiting_a_reply():
    """Pod b with a UDP exchange to 10.244.3.7:53 under way, and the exchange's op."""
    stack = make_pod("pod-b", POD_B_IP, seed=7)
    op = stack.udp_exchange("10.244.3.7", 53, b"query", 0.0, timeout=100.0)
    stack.poll(0.0)
    return stack, op


def _run(packets: list[bytes], times: list[float]) -> tuple[list, list, dict, int]:
    stack, op = _pod_awaiting_a_reply()
    outputs = [stack.receive(packet, now) for packet, now in zip(packets, times, strict=True)]
    return outputs, stack.take_events(), dict(stack.counters), op


@settings(deadline=None, max_examples=150)
@given(st.lists(packets, min_size=1, max_size=25), st.lists(st.floats(0, 0.5), min_size=25, max_size=25))
def test_fast_udp_path_answers_as_the_full_path(descriptions, steps):
    packets = [_encode(*d) for d in descriptions]
    times = [sum(steps[: i + 1]) for i in range(len(packets))]
    fast = _run(packets, times)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fastpath, "ipv4_udp", lambda packet: None)
        full = _run(packets, times)
    assert fast == full


@settings(deadline=None, max_examples=100)
@given(st.lists(st.lists(sound_packets | packets, min_size=8, max_size=60), min_size=1, max_size=4))
def test_a_batch_is_received_as_its_packets_one_by_one(batches):
    """The node hands a pod each wake-up's packets together; what the pod answers, the events it raises and
    what it counts are what the same packets received one at a time give."""
    encoded = [[_encode(*d) for d in batch] for batch in batches]
    times = [0.2 * (i + 1) for i in range(len(encoded))]
    flat = [packet for batch in encoded for packet in batch]
    singly = _run(flat, [now for batch, now in zip(encoded, times, strict=True) for _ in batch])
    stack, op = _pod_awaiting_a_reply()
    answers = [stack.receive_batch(batch, now) for batch, now in zip(encoded, times, strict=True)]
    assert [p for answer in answers for p in answer] == [p for out in singly[0] for p in out]
    assert (stack.take_events(), dict(stack.counters), op) == singly[1:]


def test_operation_reply_and_agnhost_answer_through_the_fast_path():
    stack = make_pod("pod-b", POD_B_IP, seed=7)
    op = stack.udp_exchange("10.244.3.7", 53, b"query", 0.0)
    (query,) = stack.poll(0.0)
    local_port = udp.decode(ipv4.decode(query).payload, POD_B_IP, "10.244.3.7").src_port
    answer = _encode("10.244.3.7", POD_B_IP, 53, local_port, b"answer", None, False)
    assert stack.receive(answer, 0.1) == []
    assert stack.take_events() == [Completed(op, UdpReply(b"answer", "10.244.3.7:53"))]

    (reply,) = stack.receive(_encode(POD_A_IP, POD_B_IP, 40000, 81, b"clientip", None, False), 0.2)
    decoded = ipv4.decode(reply)
    assert (decoded.src, decoded.dst) == (POD_B_IP, POD_A_IP)
    assert udp.decode(decoded.payload, POD_B_IP, POD_A_IP) == udp.UdpDatagram(81, 40000, b"10.244.1.10:40000")


def test_a_udp_flood_at_a_closed_port_gets_six_errors_then_one_a_second():
    stack = make_pod("pod-b", POD_B_IP, seed=1)
    flood = _encode(POD_A_IP, POD_B_IP, 40000, 9, bytes(64), None, False)
    answers = [stack.receive(flood, i / 1000) for i in range(2500)]  # 2.5 s at 1000 datagrams/s
    errors = [packet for out in answers for packet in out]
    assert len(errors) == 6 + 2
    assert all(isinstance(icmp.decode(ipv4.decode(e).payload), icmp.IcmpUnreachable) for e in errors)
    assert stack.counters["icmp_error_rate_limited"] == 2500 - 8
    # The pod's own containers are not limited (Linux exempts loopback): each hears its refusal.
    ops = [stack.udp_exchange("127.0.0.1", 9, b"x", 3.0) for _ in range(10)]
    assert stack.poll(3.0) == []
    events = stack.take_events()
    assert [e.op for e in events] == ops
    assert all("port unreachable" in e.reason for e in events)


def test_an_authenticated_batch_skips_the_udp_checksum_and_keeps_the_header_check():
    """Packets whose carrier authenticated them (WireGuard's, which Linux marks CHECKSUM_UNNECESSARY) are
    taken with a wrong UDP checksum; a wrong IPv4 header checksum is refused all the same."""
    good = _encode(POD_A_IP, POD_B_IP, 40000, 81, b"hostname", None, False)
    bad_sum = bytearray(good)
    bad_sum[26:28] = bytes([bad_sum[26] ^ 0x5A, bad_sum[27]])  # the UDP checksum field
    bad_header = bytearray(good)
    bad_header[10] ^= 0x5A  # the IPv4 header checksum field
    batch = [good] * 10 + [bytes(bad_sum), bytes(bad_header)]
    trusting, verifying = make_pod("pod-b", POD_B_IP, seed=7), make_pod("pod-b", POD_B_IP, seed=7)
    assert len(trusting.receive_batch(batch, 1.0, checksum_unnecessary=True)) == 11
    assert len(verifying.receive_batch(batch, 1.0)) == 10
