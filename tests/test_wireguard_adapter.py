"""The asyncio UDP adapter: two WireGuard devices on real loopback sockets (port 0) exchange packets,
and the adapter keeps one loop timer armed at the device's earliest deadline."""

from __future__ import annotations

import asyncio
import random

from podnet.overlay.wire import ipv4, udp
from podnet.overlay.wire.ipv4 import IPProtocol, IPv4Packet
from podnet.overlay.wireguard.adapter import WireGuardEndpoint
from podnet.overlay.wireguard.device import Device, HandshakeCompleted


def _packet(src: str, dst: str, payload: bytes) -> bytes:
    return ipv4.encode(IPv4Packet(src, dst, IPProtocol.UDP, udp.encode(udp.UdpDatagram(1, 2, payload), src, dst)))


async def test_two_endpoints_handshake_and_carry_packets_over_loopback_udp():
    inbox = {"a": asyncio.Queue(), "b": asyncio.Queue()}
    events = {"a": [], "b": []}
    endpoints = {}
    for name, host in (("a", "127.0.120.1"), ("b", "127.0.120.2")):
        device = Device(random.Random(name).randbytes(32))
        endpoints[name] = await WireGuardEndpoint.open(
            device, host, 0,
            on_packet=lambda peer, packet, name=name: inbox[name].put_nowait(packet),
            on_event=events[name].append,
        )
    a, b = endpoints["a"], endpoints["b"]
    try:
        a.device.set_peer(b.device.public_key, endpoint=b.address, allowed_ips=("10.120.2.0/24",))
        b.device.set_peer(a.device.public_key, endpoint=a.address, allowed_ips=("10.120.1.0/24",))
        for i in range(5):
            outbound = _packet("10.120.1.5", "10.120.2.7", b"ping %d" % i)
            a.send_packet(outbound)
            assert await asyncio.wait_for(inbox["b"].get(), 5) == outbound
            inbound = _packet("10.120.2.7", "10.120.1.5", b"pong %d" % i)
            b.send_packet(inbound)
            assert await asyncio.wait_for(inbox["a"].get(), 5) == inbound
        assert HandshakeCompleted(b.device.public_key, True) in events["a"]
        assert HandshakeCompleted(a.device.public_key, False) in events["b"]
        assert a.device.counters["transport-received"] == 5 and b.device.counters["transport-received"] == 5
        for endpoint in (a, b):
            assert endpoint.timer_deadline is not None and endpoint.timer_deadline == endpoint.device.get_timer()
    finally:
        a.close()
        b.close()
