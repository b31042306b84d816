"""SPDY/3 frames, pure: bytes in, frames out; frames in, bytes out.

kubectl's port-forward (and exec, over its SPDY fallback) speaks SPDY/3 as framed by Go's spdystream:
an 8-byte header, then the frame's body. A control frame's header is `1 | version(15) | type(16) |
flags(8) | length(24)`, a data frame's `0 | stream-id(31) | flags(8) | length(24)`.

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are `count(32)` then `length(32) name length(32) value`
pairs, compressed with one zlib stream per direction that lives as long as the connection and is
primed with SPDY/3's dictionary; every block ends with a sync flush, so each one inflates on its own
arrival. That state is why `FrameDecoder` and `FrameEncoder` are objects: a frame with headers can only
be read by the decoder that read every header block before it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from podnet.codec import DecodeError, Reader

VERSION = 3
HEADER_LENGTH = 8
MAX_LENGTH = (1 << 24) - 1
STREAM_ID_MASK = 0x7FFF_FFFF
# A header block inflating to more than this is refused rather than buffered (a zlib bomb is cheap).
MAX_HEADER_BLOCK = 256 * 1024

FLAG_FIN = 0x01


class FrameType(IntEnum):
    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class Setting(IntEnum):
    UPLOAD_BANDWIDTH = 1
    DOWNLOAD_BANDWIDTH = 2
    ROUND_TRIP_TIME = 3
    MAX_CONCURRENT_STREAMS = 4
    CURRENT_CWND = 5
    DOWNLOAD_RETRANS_RATE = 6
    INITIAL_WINDOW_SIZE = 7
    CLIENT_CERTIFICATE_VECTOR_SIZE = 8


def _dictionary() -> bytes:
    """SPDY/3's zlib dictionary (draft 3, section 2.6.10.1): length-prefixed header names and common
    values, then a run of status codes, reason phrases, dates and media types."""
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date "
        "etag expect expires from host if-match if-modified-since if-none-match if-range "
        "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
        "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
        "user-agent vary via warning www-authenticate method get status 200|OK version HTTP/1.1 url "
        "public set-cookie keep-alive origin"
    ).split(" ")
    prefixed = b"".join(struct.pack("!I", len(w)) + w.encode() for w in (word.replace("|", " ") for word in words))
    codes = "100 101 201 202 205 206 300 302 303 304 305 306 307 402 405 406 407 408 409 410 411 412 413 414 415 416 417 502 504 505"
    tail = (
        codes.replace(" ", "")
        + "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
        "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
        "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
        "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
        "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return prefixed + tail.encode()


DICTIONARY = _dictionary()

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SynStream:
    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    flags: int = 0


@dataclass(frozen=True, slots=True)
class SynReply:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True, slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Settings:
    entries: tuple[tuple[int, int, int], ...]  # (flags, id, value)
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    headers: Headers
    flags: int = 0


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class Data:
    stream_id: int
    data: bytes
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


Frame = SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data


# ---- header blocks (uncompressed) -------------------------------------------------------------------


def encode_header_block(headers: Headers) -> bytes:
    parts = [struct.pack("!I", len(headers))]
    for name, value in headers:
        raw_name, raw_value = name.encode(), value.encode()
        parts += [struct.pack("!I", len(raw_name)), raw_name, struct.pack("!I", len(raw_value)), raw_value]
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Names must be non-empty, lowercase and unique, as SPDY/3 section 2.6.10 requires."""
    reader = Reader(block)
    count = reader.uint32("header count")
    if count > len(block) // 8:
        raise DecodeError(f"header block claims {count} pairs in {len(block)} bytes")
    headers = []
    seen: set[str] = set()
    offset = 4
    for _ in range(count):
        name, offset = _text(block, offset, "header name")
        value, offset = _text(block, offset, "header value")
        if not name or name != name.lower() or name in seen:
            raise DecodeError(f"header name {name!r} is empty, not lowercase or repeated")
        seen.add(name)
        headers.append((name, value))
    if offset != len(block):
        raise DecodeError(f"{len(block) - offset} bytes after the header block's last pair")
    return tuple(headers)


def _text(block: bytes, offset: int, what: str) -> tuple[str, int]:
    """The length-prefixed UTF-8 string at `offset`, and the offset after it."""
    length = Reader(block, offset).uint32(f"{what} length")
    start, end = offset + 4, offset + 4 + length
    if end > len(block):
        raise DecodeError(f"truncated {what}: {length} bytes claimed, {len(block) - start} left")
    try:
        return block[start:end].decode(), end
    except UnicodeDecodeError:
        raise DecodeError(f"{what} is not UTF-8") from None


# ---- frames -----------------------------------------------------------------------------------------


def _control(kind: FrameType, flags: int, body: bytes) -> bytes:
    if len(body) > MAX_LENGTH:
        raise ValueError(f"SPDY frame body of {len(body)} bytes exceeds {MAX_LENGTH}")
    return struct.pack("!HHI", 0x8000 | VERSION, kind, (flags << 24) | len(body)) + body


def _stream_id(value: int) -> int:
    if not 0 <= value <= STREAM_ID_MASK:
        raise ValueError(f"stream id {value} out of range")
    return value


class FrameEncoder:
    """Frames to bytes; owns the compressor of this direction's header blocks."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, zdict=DICTIONARY)

    def _compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._compressor.compress(block) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        if isinstance(frame, Data):
            if len(frame.data) > MAX_LENGTH:
                raise ValueError(f"SPDY data frame of {len(frame.data)} bytes exceeds {MAX_LENGTH}")
            return struct.pack("!II", _stream_id(frame.stream_id), (frame.flags << 24) | len(frame.data)) + frame.data
        if isinstance(frame, SynStream):
            head = struct.pack("!IIBB", _stream_id(frame.stream_id), _stream_id(frame.associated_id), (frame.priority & 7) << 5, 0)
            return _control(FrameType.SYN_STREAM, frame.flags, head + self._compress(frame.headers))
        if isinstance(frame, SynReply):
            return _control(FrameType.SYN_REPLY, frame.flags, struct.pack("!I", _stream_id(frame.stream_id)) + self._compress(frame.headers))
        if isinstance(frame, HeadersFrame):
            return _control(FrameType.HEADERS, frame.flags, struct.pack("!I", _stream_id(frame.stream_id)) + self._compress(frame.headers))
        if isinstance(frame, RstStream):
            return _control(FrameType.RST_STREAM, 0, struct.pack("!II", _stream_id(frame.stream_id), frame.status))
        if isinstance(frame, Settings):
            body = struct.pack("!I", len(frame.entries)) + b"".join(
                struct.pack("!II", (flags << 24) | key, value) for flags, key, value in frame.entries
            )
            return _control(FrameType.SETTINGS, frame.flags, body)
        if isinstance(frame, Ping):
            return _control(FrameType.PING, 0, struct.pack("!I", frame.ping_id))
        if isinstance(frame, GoAway):
            return _control(FrameType.GOAWAY, 0, struct.pack("!II", _stream_id(frame.last_good_stream_id), frame.status))
        if isinstance(frame, WindowUpdate):
            if not 1 <= frame.delta <= STREAM_ID_MASK:
                raise ValueError(f"window delta {frame.delta} out of range")
            return _control(FrameType.WINDOW_UPDATE, 0, struct.pack("!II", _stream_id(frame.stream_id), frame.delta))
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameDecoder:
    """Bytes to frames, as they arrive in pieces; owns the decompressor of this direction's header
    blocks. After a DecodeError the connection is beyond repair (the zlib stream is lost with it)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._decompressor = zlib.decompressobj(zdict=DICTIONARY)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= HEADER_LENGTH:
            length = int.from_bytes(self._buffer[5:8], "big")
            if len(self._buffer) < HEADER_LENGTH + length:
                break
            head = bytes(self._buffer[:HEADER_LENGTH])
            body = bytes(self._buffer[HEADER_LENGTH:HEADER_LENGTH + length])
            del self._buffer[:HEADER_LENGTH + length]
            frames.append(self._frame(head, body))
        return frames

    def _decompress(self, block: bytes) -> Headers:
        try:
            plain = self._decompressor.decompress(block, MAX_HEADER_BLOCK)
        except zlib.error as e:
            raise DecodeError(f"header block does not inflate: {e}") from None
        if self._decompressor.unconsumed_tail:
            raise DecodeError(f"header block inflates beyond {MAX_HEADER_BLOCK} bytes")
        return decode_header_block(plain)

    def _frame(self, head: bytes, body: bytes) -> Frame:
        first, second = struct.unpack_from("!II", head)
        flags = second >> 24
        if not first & 0x8000_0000:
            return Data(first & STREAM_ID_MASK, body, flags)
        version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise DecodeError(f"SPDY version {version}, not {VERSION}")
        reader = Reader(body)
        if kind == FrameType.SYN_STREAM:
            stream_id = reader.uint32("stream id") & STREAM_ID_MASK
            associated = reader.uint32("associated stream id") & STREAM_ID_MASK
            priority = reader.uint8("priority") >> 5
            reader.uint8("slot")
            return SynStream(stream_id, self._decompress(body[10:]), associated, priority, flags)
        if kind in (FrameType.SYN_REPLY, FrameType.HEADERS):
            stream_id = reader.uint32("stream id") & STREAM_ID_MASK
            cls = SynReply if kind == FrameType.SYN_REPLY else HeadersFrame
            return cls(stream_id, self._decompress(body[4:]), flags)
        if kind == FrameType.RST_STREAM:
            frame: Frame = RstStream(reader.uint32("stream id") & STREAM_ID_MASK, reader.uint32("status"))
        elif kind == FrameType.SETTINGS:
            count = reader.uint32("settings count")
            if count * 8 != reader.remaining:
                raise DecodeError(f"SETTINGS claims {count} entries in {reader.remaining} bytes")
            entries = []
            for _ in range(count):
                word = reader.uint32("setting id")
                entries.append((word >> 24, word & 0xFF_FFFF, reader.uint32("setting value")))
            frame = Settings(tuple(entries), flags)
        elif kind == FrameType.PING:
            frame = Ping(reader.uint32("ping id"))
        elif kind == FrameType.GOAWAY:
            frame = GoAway(reader.uint32("last good stream id") & STREAM_ID_MASK, reader.uint32("status"))
        elif kind == FrameType.WINDOW_UPDATE:
            stream_id = reader.uint32("stream id") & STREAM_ID_MASK
            frame = WindowUpdate(stream_id, reader.uint32("window delta") & STREAM_ID_MASK)
        else:
            raise DecodeError(f"unknown SPDY control frame type {kind}")
        if reader.remaining:
            raise DecodeError(f"{reader.remaining} bytes after a {FrameType(kind).name} frame's fields")
        return frame
