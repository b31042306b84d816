"""The four WireGuard messages (whitepaper §5.4.2-5.4.7) as frozen dataclasses with exact-size codecs.

All integers are little-endian; every message starts with a type byte and three zero reserved bytes.
mac1/mac2 sit at the end of both handshake messages, so `mac1_offset`/`mac2_offset` tell the handshake
layer which prefix each MAC covers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from podnet.codec import DecodeError


class MessageType(IntEnum):
    INITIATION = 1
    RESPONSE = 2
    COOKIE_REPLY = 3
    TRANSPORT = 4


INITIATION_SIZE = 148
RESPONSE_SIZE = 92
COOKIE_REPLY_SIZE = 64
TRANSPORT_HEADER_SIZE = 16
TRANSPORT_MIN_SIZE = TRANSPORT_HEADER_SIZE + 16  # an empty payload (keepalive) still carries its tag

_INITIATION = struct.Struct("<I I 32s 48s 28s 16s 16s")
_RESPONSE = struct.Struct("<I I I 32s 16s 16s 16s")
_COOKIE_REPLY = struct.Struct("<I I 24s 32s")


@dataclass(frozen=True, slots=True)
class Initiation:
    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)


@dataclass(frozen=True, slots=True)
class Response:
    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(16)
    mac2: bytes = bytes(16)


@dataclass(frozen=True, slots=True)
class CookieReply:
    receiver: int
    nonce: bytes
    encrypted_cookie: bytes


@dataclass(frozen=True, slots=True)
class Transport:
    receiver: int
    counter: int
    encrypted_packet: bytes


Message = Initiation | Response | CookieReply | Transport

# Where mac1 and mac2 start in each handshake message: mac1 covers the bytes before it, mac2 the bytes
# before mac2 (mac1 included).
MAC_OFFSETS = {
    MessageType.INITIATION: (INITIATION_SIZE - 32, INITIATION_SIZE - 16),
    MessageType.RESPONSE: (RESPONSE_SIZE - 32, RESPONSE_SIZE - 16),
}


# The per-packet path skips the dataclasses; tests hold these to the codec above.
_TRANSPORT_TYPE = bytes([MessageType.TRANSPORT, 0, 0, 0])
_RECEIVER_COUNTER = struct.Struct("<IQ")
# A transport message's header as three integers: the type word (MessageType.TRANSPORT: the type byte
# and the zero reserved bytes, little-endian), the receiver index and the counter. Batch loops pack it
# into their buffer and unpack it from each datagram with one call.
TRANSPORT_HEADER = struct.Struct("<IIQ")
_TRANSPORT_WORD = int(MessageType.TRANSPORT)


def encode_transport(receiver: int, counter: int, encrypted_packet: bytes) -> bytes:
    return _TRANSPORT_TYPE + _RECEIVER_COUNTER.pack(receiver, counter) + encrypted_packet


def transport_header(data: bytes | memoryview) -> tuple[int, int] | None:
    """(receiver, counter) if `data` is a well-formed transport message, else None (use `decode`)."""
    if len(data) >= TRANSPORT_MIN_SIZE:
        kind, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        if kind == _TRANSPORT_WORD:
            return receiver, counter
    return None


def encode(message: Message) -> bytes:
    if isinstance(message, Initiation):
        return _INITIATION.pack(
            MessageType.INITIATION, message.sender, message.ephemeral, message.encrypted_static,
            message.encrypted_timestamp, message.mac1, message.mac2,
        )
    if isinstance(message, Response):
        return _RESPONSE.pack(
            MessageType.RESPONSE, message.sender, message.receiver, message.ephemeral,
            message.encrypted_nothing, message.mac1, message.mac2,
        )
    if isinstance(message, CookieReply):
        return _COOKIE_REPLY.pack(MessageType.COOKIE_REPLY, message.receiver, message.nonce, message.encrypted_cookie)
    return encode_transport(message.receiver, message.counter, message.encrypted_packet)


def message_type(data: bytes | memoryview) -> MessageType:
    """The type of a datagram from its first four bytes (type byte plus zero reserved bytes)."""
    if len(data) < 4:
        raise DecodeError(f"truncated WireGuard header: {len(data)} bytes")
    word = int.from_bytes(data[:4], "little")
    try:
        return MessageType(word)
    except ValueError:
        raise DecodeError(f"unknown WireGuard message type/reserved word {word:#010x}") from None


def _exact(data: bytes | memoryview, size: int, kind: MessageType) -> None:
    if len(data) != size:
        raise DecodeError(f"{kind.name.lower()} message must be {size} bytes, got {len(data)}")


def decode(data: bytes | memoryview) -> Message:
    kind = message_type(data)
    if kind is MessageType.INITIATION:
        _exact(data, INITIATION_SIZE, kind)
        _, sender, ephemeral, static, timestamp, mac1, mac2 = _INITIATION.unpack(data)
        return Initiation(sender, ephemeral, static, timestamp, mac1, mac2)
    if kind is MessageType.RESPONSE:
        _exact(data, RESPONSE_SIZE, kind)
        _, sender, receiver, ephemeral, nothing, mac1, mac2 = _RESPONSE.unpack(data)
        return Response(sender, receiver, ephemeral, nothing, mac1, mac2)
    if kind is MessageType.COOKIE_REPLY:
        _exact(data, COOKIE_REPLY_SIZE, kind)
        _, receiver, nonce, cookie = _COOKIE_REPLY.unpack(data)
        return CookieReply(receiver, nonce, cookie)
    if len(data) < TRANSPORT_MIN_SIZE:
        raise DecodeError(f"transport message must be at least {TRANSPORT_MIN_SIZE} bytes, got {len(data)}")
    receiver, counter = _RECEIVER_COUNTER.unpack_from(data, 4)
    return Transport(receiver, counter, bytes(data[TRANSPORT_HEADER_SIZE:]))
