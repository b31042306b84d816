"""The tunnel's batch receiver sees exactly what the per-datagram receiver sees, in order, in lists no
longer than the read batch."""

import asyncio
import socket

import pytest
from podnet.overlay.tunnel import Tunnel
from podnet.overlay.wire.segment import DatagramRun, datagrams_apart


async def _received_by(tunnel: Tunnel, payloads: list[bytes], until) -> None:
    await tunnel.open()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            peer.bind(("127.0.0.13", 0))
            for payload in payloads:
                peer.sendto(payload, ("127.0.0.11", tunnel.port))
            deadline = asyncio.get_running_loop().time() + 5.0
            while not until():
                assert asyncio.get_running_loop().time() < deadline, "timed out"
                await asyncio.sleep(0.01)
    finally:
        tunnel.close()


async def test_batches_carry_the_same_datagrams_in_the_same_order_as_one_by_one_delivery():
    payloads = [index.to_bytes(2, "big") for index in range(300)]
    one_by_one: list[tuple[bytes, str]] = []
    await _received_by(
        Tunnel("127.0.0.11", 0, lambda data, sender: one_by_one.append((data, sender)), batch=32),
        payloads,
        lambda: len(one_by_one) == len(payloads),
    )
    batches: list[list[tuple[bytes, str]]] = []
    await _received_by(
        Tunnel("127.0.0.11", 0, on_batch=batches.append, batch=32),
        payloads,
        lambda: sum(map(len, batches)) == len(payloads),
    )
    assert [item for batch in batches for item in batch] == one_by_one
    assert all(0 < len(batch) <= 32 for batch in batches)
    assert len(batches) < len(payloads)  # a burst is read several datagrams per wake-up


def test_a_tunnel_takes_exactly_one_receiver():
    with pytest.raises(ValueError):
        Tunnel("127.0.0.11", 0)
    with pytest.raises(ValueError):
        Tunnel("127.0.0.11", 0, lambda data, sender: None, on_batch=lambda datagrams: None)


async def test_joined_datagrams_leave_as_segmented_runs_of_equal_sizes_and_arrive_whole_in_order():
    received: list[tuple[bytes, str]] = []
    receiver = Tunnel("127.0.240.2", 0, on_batch=received.extend)
    sender = Tunnel("127.0.240.1", 0, on_batch=lambda datagrams: None)
    await receiver.open()
    await sender.open()
    try:
        sender.peer_port = receiver.port
        sizes = [100, 100, 100, 60, 100, 100, 30, 7]  # runs: 100 x3 + 60, 100 x2 + 30, and a lone 7
        datagrams = [bytes([index]) * size for index, size in enumerate(sizes)]
        sender.send_joined("127.0.240.2", b"".join(datagrams), sizes)
        deadline = asyncio.get_running_loop().time() + 5.0
        while len(received) < len(sizes):
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.01)
        assert received == [(datagram, "127.0.240.1") for datagram in datagrams]
        assert (sender.counters["tx"], sender.counters["tx.segmented-sends"]) == (8, 2)
        assert receiver.counters["rx.joined-reads"] == 2  # UDP_GRO hands each run over in one read
        sender.partitioned.add("127.0.240.2")
        sender.send_joined("127.0.240.2", b"".join(datagrams), sizes)
        assert sender.counters["drop.partitioned"] == 8 and sender.counters["tx"] == 8
    finally:
        sender.close()
        receiver.close()


async def test_a_receiver_that_takes_runs_whole_gets_each_joined_read_as_one_run():
    received: list[tuple[object, str]] = []
    receiver = Tunnel("127.0.240.4", 0, on_batch=received.extend, whole_runs=True)
    sender = Tunnel("127.0.240.3", 0, on_batch=lambda datagrams: None)
    await receiver.open()
    await sender.open()
    try:
        sender.peer_port = receiver.port
        sizes = [100, 100, 100, 60, 7]  # a run of 100 x3 + 60, and a lone 7
        datagrams = [bytes([index]) * size for index, size in enumerate(sizes)]
        sender.send_joined("127.0.240.4", b"".join(datagrams), sizes)
        deadline = asyncio.get_running_loop().time() + 5.0
        while receiver.counters["rx"] < len(sizes):
            assert asyncio.get_running_loop().time() < deadline, "timed out"
            await asyncio.sleep(0.01)
        (run, sender_of_run), lone = received
        assert isinstance(run, DatagramRun) and (run.size, run.count) == (100, 4)
        assert run.apart() == datagrams[:4] and sender_of_run == "127.0.240.3"
        assert lone == (datagrams[4], "127.0.240.3")
        assert datagrams_apart(received) == [(datagram, "127.0.240.3") for datagram in datagrams]
        assert receiver.received_from["127.0.240.3"] == 5
    finally:
        sender.close()
        receiver.close()
