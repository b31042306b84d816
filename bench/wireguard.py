"""WireGuard core benchmark (no sockets); prints one JSON object.

1. Handshakes per second: a fresh initiation, response and confirming keepalive between two devices
   (three X25519-heavy messages, the cost a node pays per peer every REKEY_AFTER_TIME).
2. Transport: packets per second one device encrypts and the other decrypts (replay window and
   allowed-IPs check included), for 64- and 1400-byte IPv4 packets, with the goodput that implies.
   This is the per-core ceiling the node agent's encrypted path will sit under.
3. The same in batches, as the node agent moves them: 44 packets (what one UDP_SEGMENT send of 1400-byte
   packets carries) sealed by one `send_packets_to_peer` into one buffer, and opened by one
   `receive_datagrams` from views into it, as a UDP_GRO read hands them over.
"""

from __future__ import annotations

import json
import random
import time

from podnet.overlay.wireguard.device import Device

SECONDS = 1.5
A_UNDERLAY, B_UNDERLAY = ("127.0.120.1", 51871), ("127.0.120.2", 51871)


def _pair(seed: int) -> tuple[Device, Device]:
    a = Device(random.Random(seed).randbytes(32), rng=random.Random(seed + 1))
    b = Device(random.Random(seed + 2).randbytes(32), rng=random.Random(seed + 3))
    a.set_peer(b.public_key, endpoint=B_UNDERLAY, allowed_ips=("10.120.2.0/24",))
    b.set_peer(a.public_key, endpoint=A_UNDERLAY, allowed_ips=("10.120.1.0/24",))
    return a, b


def _ipv4(src: bytes, dst: bytes, size: int) -> bytes:
    header = bytes([0x45, 0]) + size.to_bytes(2, "big") + bytes(5) + b"\x11" + bytes(2) + src + dst
    return header + bytes(size - 20)


def _exchange(a: Device, b: Device, now: float) -> None:
    while True:
        moved = False
        for sender, receiver, source in ((a, b, A_UNDERLAY), (b, a, B_UNDERLAY)):
            for datagram, _ in sender.datagrams_to_send():
                moved = True
                receiver.receive_datagram(datagram, source, now)
        if not moved:
            return


def handshakes_per_second() -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        a, b = _pair(count)
        a.send_packet(_ipv4(b"\x0a\x78\x01\x05", b"\x0a\x78\x02\x07", 64), 0.0)
        _exchange(a, b, 0.0)
        assert b.counters["transport-received"] == 1
        count += 1
    return count / (time.perf_counter() - start)


def transport(size: int) -> dict:
    a, b = _pair(7)
    packet = _ipv4(b"\x0a\x78\x01\x05", b"\x0a\x78\x02\x07", size)
    a.send_packet(packet, 0.0)
    _exchange(a, b, 0.0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        for _ in range(256):
            a.send_packet(packet, 1.0)
        for datagram, _ in a.datagrams_to_send():
            b.receive_datagram(datagram, A_UNDERLAY, 1.0)
        while b.next_event() is not None:
            pass
        count += 256
    elapsed = time.perf_counter() - start
    assert b.counters["transport-received"] == count + 1
    return {"packets_per_second": round(count / elapsed), "goodput_mbit_s": round(count * size * 8 / elapsed / 1e6, 1)}


def batched_transport(size: int, batch: int = 44) -> dict:
    a, b = _pair(7)
    packets = [_ipv4(b"\x0a\x78\x01\x05", b"\x0a\x78\x02\x07", size)] * batch
    a.send_packet(packets[0], 0.0)
    _exchange(a, b, 0.0)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < SECONDS:
        sealed = a.send_packets_to_peer(b.public_key, packets, 1.0)
        view, at, parts = memoryview(sealed.data), 0, []
        for length in sealed.sizes:
            parts.append((view[at : at + length], A_UNDERLAY[0]))
            at += length
        b.receive_datagrams(parts, A_UNDERLAY[1], 1.0)
        count += batch
    elapsed = time.perf_counter() - start
    assert b.counters["transport-received"] == count + 1
    return {"packets_per_second": round(count / elapsed), "goodput_mbit_s": round(count * size * 8 / elapsed / 1e6, 1)}


def main() -> None:
    print(json.dumps({
        "wireguard_handshakes_per_second": round(handshakes_per_second(), 1),
        "wireguard_transport_64B": transport(64),
        "wireguard_transport_1400B": transport(1400),
        "wireguard_transport_batched_64B": batched_transport(64),
        "wireguard_transport_batched_1400B": batched_transport(1400),
    }))


if __name__ == "__main__":
    main()
