"""The encrypted underlay without a cluster: the IPv4/UDP wrapping of tunnel datagrams against the wire
codecs, and two `WireGuardTunnel`s on loopback sockets carrying VXLAN-shaped and bare datagrams, with
what they refuse (a node without a key, a wrapped datagram between other addresses) counted."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from podnet.overlay.wire import ipv4, udp
from podnet.overlay.wire.ipv4 import IPProtocol, IPv4Packet
from podnet.overlay.wireguard import crypto
from podnet.overlay.wireguard.inner import IPV4_UDP_HEADER, NodePair
from podnet.overlay.wireguard.tunnel import WireGuardTunnel

A, B, C = "127.0.197.1", "127.0.197.2", "127.0.197.3"
VXLAN_PORT = 4789


@given(st.binary(max_size=1600))
def test_wrapped_datagram_is_the_ipv4_udp_packet_the_codecs_build(datagram):
    packet = NodePair(A, B, VXLAN_PORT).wrap(datagram)
    decoded = ipv4.decode(packet)  # verifies the header checksum
    assert (decoded.src, decoded.dst, decoded.protocol, decoded.dont_fragment) == (A, B, IPProtocol.UDP, True)
    inner = udp.decode(decoded.payload, A, B)
    assert (inner.src_port, inner.dst_port, inner.payload) == (VXLAN_PORT, VXLAN_PORT, datagram)
    assert NodePair(B, A, VXLAN_PORT).unwrap(packet) == datagram


def test_unwrap_takes_only_tunnel_datagrams_between_the_two_nodes():
    packet = NodePair(A, B, VXLAN_PORT).wrap(b"vxlan datagram")
    at_b = NodePair(B, A, VXLAN_PORT)
    assert at_b.unwrap(packet[:IPV4_UDP_HEADER - 1]) is None
    assert NodePair(B, C, VXLAN_PORT).unwrap(packet) is None  # from another node
    assert NodePair(C, A, VXLAN_PORT).unwrap(packet) is None  # to another node
    assert NodePair(B, A, 5555).unwrap(packet) is None  # to another port
    plain = ipv4.encode(IPv4Packet(A, B, IPProtocol.ICMP, b"\x08\x00\x00\x00\x00\x00\x00\x00"))
    assert at_b.unwrap(plain) is None
    lying = bytearray(packet)
    lying[24:26] = (2000).to_bytes(2, "big")  # a UDP length past the packet's end
    assert at_b.unwrap(bytes(lying)) is None


async def _tunnel(address: str, seed: int, inbox: asyncio.Queue, *, bare: bool = False) -> WireGuardTunnel:
    key = crypto.private_bytes(crypto.private_key(random.Random(seed).randbytes(32)))
    tunnel = WireGuardTunnel(address, key, port=0, inner_port=VXLAN_PORT, bare=bare,
                             on_batch=lambda datagrams: [inbox.put_nowait(d) for d in datagrams])
    await tunnel.open()
    return tunnel


@pytest.fixture
async def pair():
    made: list[WireGuardTunnel] = []

    async def make(bare: bool = False) -> tuple[WireGuardTunnel, WireGuardTunnel, asyncio.Queue, asyncio.Queue]:
        inbox_a, inbox_b = asyncio.Queue(), asyncio.Queue()
        a, b = await _tunnel(A, 1, inbox_a, bare=bare), await _tunnel(B, 2, inbox_b, bare=bare)
        # every node listens on the same WireGuard port; port 0 gave each its own, so each is told the other's
        a.peer_port, b.peer_port = b.port, a.port
        made.extend((a, b))
        return a, b, inbox_a, inbox_b

    yield make
    for tunnel in made:
        tunnel.close()


async def test_vxlan_datagrams_cross_inside_wireguard_and_the_capture_sees_both_sides(pair):
    a, b, inbox_a, inbox_b = await pair()
    wire, decrypted = a.subscribe(), a.subscribe_decrypted()
    a.set_peer("node-b", B, b.public_key, "10.244.2.0/24")
    b.set_peer("node-a", A, a.public_key, "10.244.1.0/24")
    a.send(B, b"\x08\x00\x00\x00\x00\x00\x01\x00" + b"frame from a")
    assert await asyncio.wait_for(inbox_b.get(), 5) == (b"\x08\x00\x00\x00\x00\x00\x01\x00" + b"frame from a", A)
    b.send_burst(A, [b"answer from b", b"and its last segment"])
    assert await asyncio.wait_for(inbox_a.get(), 5) == (b"answer from b", B)
    assert await asyncio.wait_for(inbox_a.get(), 5) == (b"and its last segment", B)
    on_the_wire = [wire.get_nowait() for _ in range(wire.qsize())]
    assert on_the_wire and all(item["data"][0] in (1, 2, 4) and b"frame from a" not in item["data"]
                               for item in on_the_wire)
    inside = [decrypted.get_nowait() for _ in range(decrypted.qsize())]
    assert [(i["src"], i["dst"], i["dport"], i["data"]) for i in inside] == [
        (A, B, VXLAN_PORT, b"\x08\x00\x00\x00\x00\x00\x01\x00frame from a"), (B, A, VXLAN_PORT, b"answer from b"),
        (B, A, VXLAN_PORT, b"and its last segment")]
    counters = a.device_counters()
    assert counters["wireguard.handshake-completed"] == 1 and counters["wireguard.transport-received"] == 2
    assert a.session_of(B) is not None and a.session_of(C) is None


async def test_bare_packets_travel_unwrapped_and_must_come_from_the_peer_pod_cidr(pair):
    a, b, inbox_a, inbox_b = await pair(bare=True)
    a.set_peer("node-b", B, b.public_key, "10.244.2.0/24")
    b.set_peer("node-a", A, a.public_key, "10.244.1.0/24")
    packet = ipv4.encode(IPv4Packet("10.244.1.5", "10.244.2.7", IPProtocol.UDP,
                                    udp.encode(udp.UdpDatagram(1, 2, b"pod to pod"), "10.244.1.5", "10.244.2.7")))
    a.send(B, packet)
    assert await asyncio.wait_for(inbox_b.get(), 5) == (packet, A)
    spoofed = ipv4.encode(IPv4Packet("10.244.9.5", "10.244.2.7", IPProtocol.UDP,
                                     udp.encode(udp.UdpDatagram(1, 2, b"spoofed"), "10.244.9.5", "10.244.2.7")))
    a.send(B, spoofed)
    await asyncio.sleep(0.2)
    assert inbox_b.empty()
    assert b.device_counters()["drop.wireguard-source-not-allowed"] == 1


async def test_nothing_leaves_in_clear_for_a_node_without_a_key(pair):
    a, b, _, _ = await pair()
    wire = a.subscribe()
    a.send(C, b"for a node that published no key")
    assert a.counters["drop.wireguard-no-key"] == 1 and wire.empty() and a.counters["tx"] == 0
    a.set_peer("node-b", B, b.public_key, None)
    a.remove_peer(B)
    a.send(B, b"for a node whose key went away")
    assert a.counters["drop.wireguard-no-key"] == 2


async def test_a_wrapped_datagram_not_between_the_two_nodes_is_dropped(pair):
    a, b, _, inbox_b = await pair()
    a.set_peer("node-b", B, b.public_key, "10.244.2.0/24")
    b.set_peer("node-a", A, a.public_key, "10.244.1.0/24")
    # node-a seals a packet from its own address that is not a tunnel datagram (ICMP to node-b)
    ping = ipv4.encode(IPv4Packet(A, B, IPProtocol.ICMP, b"\x08\x00\xf7\xff\x00\x00\x00\x00"))
    a.device.send_to_peer(b.public_key, ping, a.driver.loop.time())
    a.driver.flush()
    await asyncio.sleep(0.3)
    assert inbox_b.empty()
    assert b.counters["drop.wireguard-inner-not-tunnel"] == 1


async def test_a_turns_datagrams_are_sealed_together_and_travel_as_segmented_runs(pair):
    a, b, _, inbox_b = await pair()
    a.set_peer("node-b", B, b.public_key, "10.244.2.0/24")
    b.set_peer("node-a", A, a.public_key, "10.244.1.0/24")
    a.send(B, b"handshake first")
    assert await asyncio.wait_for(inbox_b.get(), 5) == (b"handshake first", A)
    segments = [bytes([n]) * 1000 for n in range(40)] + [b"a shorter last one"]
    a.send_burst(B, segments[:20])
    for segment in segments[20:]:  # one by one, in the same turn: sealed with the burst
        a.send(B, segment)
    assert a.counters["tx.segmented-sends"] == 0  # nothing leaves before the turn is over
    arrived = [await asyncio.wait_for(inbox_b.get(), 5) for _ in segments]
    assert arrived == [(segment, A) for segment in segments]
    assert a.counters["tx.segmented-sends"] == 1  # 41 sealed messages of 1072 B (the last shorter): one send
    assert b.counters["rx.joined-reads"] == 1
    assert b.device_counters()["wireguard.transport-received"] == 1 + len(segments)
