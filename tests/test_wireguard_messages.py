"""WireGuard message codecs: exact sizes, field layout, round trips, and fuzzing of the codecs and of a
whole device (anything but a value, a DecodeError or a counted drop is a failure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.wireguard import messages
from podnet.overlay.wireguard.device import Device
from podnet.overlay.wireguard.messages import CookieReply, Initiation, Response, Transport

from podnet.codec import DecodeError


def _bytes(n: int):
    return st.binary(min_size=n, max_size=n)


_u32 = st.integers(0, 2**32 - 1)
_messages = st.one_of(
    st.builds(Initiation, _u32, _bytes(32), _bytes(48), _bytes(28), _bytes(16), _bytes(16)),
    st.builds(Response, _u32, _u32, _bytes(32), _bytes(16), _bytes(16), _bytes(16)),
    st.builds(CookieReply, _u32, _bytes(24), _bytes(32)),
    st.builds(Transport, _u32, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=200)),
)


def test_layout_is_little_endian_with_zero_reserved_bytes():
    initiation = messages.encode(Initiation(0x01020304, b"E" * 32, b"S" * 48, b"T" * 28, b"M" * 16, b"N" * 16))
    assert len(initiation) == messages.INITIATION_SIZE == 148
    assert initiation[:8] == bytes([1, 0, 0, 0, 4, 3, 2, 1])
    assert initiation[8:40] == b"E" * 32 and initiation[116:132] == b"M" * 16 and initiation[132:] == b"N" * 16
    response = messages.encode(Response(7, 9, b"E" * 32, b"X" * 16))
    assert len(response) == 92 and response[:12] == bytes([2, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0])
    cookie = messages.encode(CookieReply(5, b"n" * 24, b"c" * 32))
    assert len(cookie) == 64 and cookie[:8] == bytes([3, 0, 0, 0, 5, 0, 0, 0])
    transport = messages.encode(Transport(5, 0x0102, b"p" * 16))
    assert transport[:16] == bytes([4, 0, 0, 0, 5, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]) and len(transport) == 32


@given(_messages)
def test_every_message_round_trips(message):
    assert messages.decode(messages.encode(message)) == message


@pytest.mark.parametrize(
    "data, complaint",
    [
        (b"", "truncated"),
        (bytes([5, 0, 0, 0]) + bytes(60), "unknown WireGuard message type"),
        (bytes([1, 0, 1, 0]) + bytes(144), "unknown WireGuard message type"),  # reserved bytes must be zero
        (bytes([1, 0, 0, 0]) + bytes(143), "initiation message must be 148 bytes"),
        (bytes([2, 0, 0, 0]) + bytes(89), "response message must be 92 bytes"),
        (bytes([3, 0, 0, 0]) + bytes(61), "cookie_reply message must be 64 bytes"),
        (bytes([4, 0, 0, 0]) + bytes(27), "transport message must be at least 32 bytes"),
    ],
)
def test_bad_bytes_raise_decode_error_with_the_reason(data, complaint):
    with pytest.raises(DecodeError, match=complaint):
        messages.decode(data)


@given(st.binary(max_size=300))
def test_decode_fuzz_yields_a_message_or_a_decode_error(data):
    try:
        assert isinstance(messages.decode(data), Initiation | Response | CookieReply | Transport)
    except DecodeError:
        pass


def _connected_pair():
    a = Device(bytes(range(32)), rng=random.Random(1))
    b = Device(bytes(range(1, 33)), rng=random.Random(2))
    a.set_peer(b.public_key, endpoint=("127.0.120.2", 51871), allowed_ips=("10.120.2.0/24",))
    b.set_peer(a.public_key, endpoint=("127.0.120.1", 51871), allowed_ips=("10.120.1.0/24",))
    packet = bytes.fromhex("4500001c0000400040110000" "0a780105" "0a780207") + bytes(8)
    a.send_packet(packet, 0.0)
    valid = []
    for _ in range(3):
        for datagram, _address in a.datagrams_to_send():
            valid.append(datagram)
            b.receive_datagram(datagram, ("127.0.120.1", 51871), 0.0)
        for datagram, _address in b.datagrams_to_send():
            valid.append(datagram)
            a.receive_datagram(datagram, ("127.0.120.2", 51871), 0.0)
    for device in (a, b):
        while device.next_event() is not None:
            pass
    assert "handshake-completed" in b.counters and b.counters["transport-received"] == 1
    return a, b, valid


_PAIR = _connected_pair()


def _drops(device: Device) -> int:
    return sum(v for k, v in device.counters.items() if k.startswith("dropped-"))


@settings(max_examples=300)
@given(st.data())
def test_device_fuzz_mangled_or_replayed_datagrams_are_each_one_counted_drop(data):
    a, b, valid = _PAIR
    mutated = bytearray(data.draw(st.sampled_from(valid)))
    for _ in range(data.draw(st.integers(0, 4))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    datagram = bytes(mutated) + data.draw(st.binary(max_size=8))
    for device in (a, b):
        before = _drops(device)
        device.receive_datagram(datagram, ("127.0.120.9", 4), 1.0)
        events = []
        while (event := device.next_event()) is not None:
            events.append(event)
        assert _drops(device) == before + 1
        assert [type(e).__name__ for e in events] == ["PacketDropped"]
        assert device.datagrams_to_send() == []


@given(st.binary(max_size=200))
def test_device_fuzz_arbitrary_bytes_are_dropped_silently(data):
    a, _, _ = _PAIR
    before = _drops(a)
    a.receive_datagram(data, ("127.0.120.9", 4), 1.0)
    assert _drops(a) == before + 1
    assert a.datagrams_to_send() == []
    while a.next_event() is not None:
        pass


@given(_u32, st.integers(0, 2**64 - 1), st.binary(min_size=16, max_size=64))
def test_the_transport_fast_path_agrees_with_the_codec(receiver, counter, payload):
    data = messages.encode_transport(receiver, counter, payload)
    assert data == messages.encode(Transport(receiver, counter, payload))
    assert data == messages.TRANSPORT_HEADER.pack(messages.MessageType.TRANSPORT, receiver, counter) + payload
    assert messages.transport_header(data) == (receiver, counter)
    assert messages.transport_header(memoryview(data)) == (receiver, counter)


@given(st.binary(max_size=64))
def test_the_transport_fast_path_declines_what_the_codec_would_not_read_as_transport(data):
    header = messages.transport_header(data)
    try:
        decoded = messages.decode(data)
    except DecodeError:
        decoded = None
    if isinstance(decoded, Transport):
        assert header == (decoded.receiver, decoded.counter)
    else:
        assert header is None
