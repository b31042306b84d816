"""The underlay socket adapter: batched reads, sends, counted drops for slow captures and partitions."""

import asyncio
import socket

from podnet.overlay.tunnel import Tunnel


async def _until(condition, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_datagrams_are_read_in_batches_and_slow_captures_lose_copies_not_traffic():
    received = []
    tunnel = Tunnel("127.0.0.11", 0, lambda data, sender: received.append((data, sender)), batch=64)
    await tunnel.open()
    capture = tunnel.subscribe(limit=10)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.13", tunnel.port))  # peers share the VXLAN port
            for index in range(500):
                peer.sendto(index.to_bytes(2, "big"), ("127.0.0.11", tunnel.port))
            await _until(lambda: len(received) == 500)
            assert [int.from_bytes(d, "big") for d, _ in received] == list(range(500))
            assert {sender for _, sender in received} == {"127.0.0.13"}
            assert capture.qsize() == 10 and tunnel.counters["drop.capture-queue-full"] == 490
            assert tunnel.counters["rx"] == 500
            tunnel.send("127.0.0.13", b"back")
            peer.settimeout(2)
            data, (host, port) = peer.recvfrom(100)
            assert (data, host, port) == (b"back", "127.0.0.11", tunnel.port)
    finally:
        tunnel.unsubscribe(capture)
        tunnel.close()


async def test_a_partitioned_peer_is_dropped_both_ways_and_counted():
    received = []
    tunnel = Tunnel("127.0.0.11", 0, lambda data, sender: received.append(data))
    await tunnel.open()
    try:
        tunnel.partitioned.add("127.0.0.14")
        with (
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other,
        ):
            peer.bind(("127.0.0.14", 0))
            other.bind(("127.0.0.15", 0))
            peer.sendto(b"cut off", ("127.0.0.11", tunnel.port))
            other.sendto(b"fine", ("127.0.0.11", tunnel.port))
            await _until(lambda: received == [b"fine"])
            tunnel.send("127.0.0.14", b"nope")
            tunnel.send("127.0.0.15", b"back")
            assert tunnel.counters["drop.partitioned"] == 2
            # each peer's tunnel counted on its own, what the partition cut off not at all
            assert (dict(tunnel.received_from), dict(tunnel.sent_to)) == ({"127.0.0.15": 1}, {"127.0.0.15": 1})
    finally:
        tunnel.close()
