"""An incremental HTTP/1.1 request parser for the L7 proxy, without I/O (RFC 9112).

Bytes go in with `feed(data)` as they arrive, in pieces of any size; `next_event()` returns the next
`RequestHead`, `BodyData` or `RequestEnd`, or None until more bytes come. Several requests on one
connection (keep-alive) and requests sent before the previous answer (pipelining) come out one after
the other, in order. Bodies are streamed as they arrive, framed by Content-Length or chunked
transfer coding; nothing is buffered beyond one request head or one chunk-size line.

What a proxy in front of a server must refuse, it refuses with `HttpParseError` (status 400, or 431 for
a head over the size limit) and a reason, and stays failed: the connection is answered and closed.
That covers a request line or header field that is not HTTP, obsolete line folding, a missing or
repeated Host in HTTP/1.1, Transfer-Encoding together with Content-Length or with a final coding other
than chunked, conflicting or non-numeric Content-Length and malformed chunk sizes — the ambiguities
request smuggling lives on, which RFC 9112 §6.1, §6.3 and §11.2 tell intermediaries to reject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_HEAD_BYTES = 16384
MAX_HEADERS = 100
MAX_CHUNK_LINE_BYTES = 1024
MAX_METHOD_BYTES = 32

_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VERSION = re.compile(rb"HTTP/(\d)\.(\d)")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(;.*)?")
_HEAD_END = re.compile(rb"\r?\n\r?\n")
# A header field: token, colon, the value between optional whitespace (RFC 9110 §5.5).
_FIELD_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")


class HttpParseError(ValueError):
    """The peer sent something that is not an acceptable HTTP/1.1 request; `status` is the answer."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class RequestHead:
    method: str
    target: str
    version: tuple[int, int]
    headers: tuple[tuple[str, str], ...]  # names and values as sent, in order
    keep_alive: bool  # whether another request may follow on the connection
    chunked: bool
    content_length: int | None  # None when chunked or no body

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


@dataclass(frozen=True, slots=True)
class BodyData:
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestEnd:
    trailers: tuple[tuple[str, str], ...] = ()


Event = RequestHead | BodyData | RequestEnd

# States: where the next bytes belong.
_HEAD, _FIXED_BODY, _CHUNK_SIZE_LINE, _CHUNK_DATA, _CHUNK_DATA_END, _TRAILERS, _CLOSED, _FAILED, _UNTIL_CLOSE = range(9)


def _split_lines(head: bytes) -> list[bytes]:
    lines = head.split(b"\n")
    for i, line in enumerate(lines):
        if line.endswith(b"\r"):
            lines[i] = line[:-1]
        if b"\r" in lines[i]:
            raise HttpParseError("a bare CR in the request head")
    return lines


def _parse_fields(lines: list[bytes], *, limit: int = MAX_HEADERS) -> tuple[tuple[str, str], ...]:
    if len(lines) > limit:
        raise HttpParseError(f"more than {limit} header fields", 431)
    fields = []
    for line in lines:
        match = _FIELD_LINE.fullmatch(line)  # one pass for a good field; a bad one is told apart below
        if match is None:
            _refuse_field(line)
        fields.append((match[1].decode("ascii"), match[2].decode("latin-1")))
    return tuple(fields)


def _refuse_field(line: bytes) -> None:
    """Raises the reason a header field line is not acceptable."""
    if line[:1] in (b" ", b"\t"):
        raise HttpParseError("obsolete line folding in a header field")
    name, colon, value = line.partition(b":")
    if not colon or not _TOKEN.fullmatch(name):
        raise HttpParseError(f"malformed header field {line[:64]!r}")
    raise HttpParseError(f"control character in header field {name.decode()!r}")


def _values(headers: tuple[tuple[str, str], ...], name: str) -> list[str]:
    return [v for k, v in headers if k.lower() == name]


def _by_name(headers: tuple[tuple[str, str], ...]) -> dict[str, list[str]]:
    """The values of each field, by lower-case name, in order."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        found.setdefault(name.lower(), []).append(value)
    return found


def _comma_list(values: list[str]) -> list[str]:
    return [item.strip().lower() for value in values for item in value.split(",") if item.strip()]


def parse_head(head: bytes) -> RequestHead:
    """One request head, without its terminating empty line."""
    lines = _split_lines(head)
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpParseError("the request line is not 'method target version'")
    method, target, version = parts
    if not _TOKEN.fullmatch(method):
        raise HttpParseError("the method is not a token")
    if not _TARGET.fullmatch(target):
        raise HttpParseError("the request target is empty or holds a control character")
    match = _VERSION.fullmatch(version)
    if match is None:
        raise HttpParseError("the version is not HTTP/x.y")
    major, minor = int(match[1]), int(match[2])
    if major != 1:
        raise HttpParseError(f"HTTP/{major}.{minor} is not HTTP/1.x", 505)
    headers = _parse_fields(lines[1:])
    named = _by_name(headers)
    if minor >= 1 and len(named.get("host", ())) != 1:
        raise HttpParseError("an HTTP/1.1 request needs exactly one Host header")
    codings = _comma_list(named.get("transfer-encoding", []))
    lengths = named.get("content-length", [])
    chunked, content_length = False, None
    if codings:
        if lengths:
            raise HttpParseError("both Transfer-Encoding and Content-Length")
        if minor == 0:
            raise HttpParseError("Transfer-Encoding in an HTTP/1.0 request")
        if codings[-1] != "chunked" or codings.count("chunked") != 1:
            raise HttpParseError("the final transfer coding is not chunked")
        chunked = True
    elif lengths:
        distinct = {item.strip() for value in lengths for item in value.split(",")}
        if len(distinct) != 1 or not next(iter(distinct)).isdigit() or len(next(iter(distinct))) > 18:
            raise HttpParseError("Content-Length is not one decimal number")
        content_length = int(distinct.pop())
    connection = _comma_list(named.get("connection", []))
    keep_alive = "keep-alive" in connection if minor == 0 else "close" not in connection
    return RequestHead(
        method=method.decode("ascii"),
        target=target.decode("ascii"),
        version=(major, minor),
        headers=headers,
        keep_alive=keep_alive,
        chunked=chunked,
        content_length=content_length or None,
    )


class RequestParser:
    """The requests of one client connection, parsed as their bytes arrive."""

    def __init__(self, *, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self.max_head_bytes = max_head_bytes
        self._buffer = bytearray()
        self._state = _HEAD
        self._remaining = 0  # of a fixed body or the current chunk
        self._keep_alive = True
        self._error: HttpParseError | None = None

    @property
    def idle(self) -> bool:
        """Between requests with nothing buffered: a clean place for the client to close."""
        return self._state == _HEAD and not self._buffer.strip(b"\r\n")

    @property
    def closed(self) -> bool:
        """The last request asked to close the connection and has ended."""
        return self._state == _CLOSED

    def feed(self, data: bytes) -> None:
        if self._state not in (_CLOSED, _FAILED):
            self._buffer += data

    def next_event(self) -> Event | None:
        if self._error is not None:
            raise self._error
        try:
            return self._step()
        except HttpParseError as e:
            self._state, self._error = _FAILED, e
            self._buffer.clear()
            raise

    def _step(self) -> Event | None:
        state = self._state
        if state == _HEAD:
            return self._head()
        if state == _FIXED_BODY:
            return self._fixed_body()
        if state == _CHUNK_SIZE_LINE:
            return self._chunk_size()
        if state == _CHUNK_DATA:
            return self._chunk_data()
        if state == _CHUNK_DATA_END:
            return self._chunk_data_end()
        if state == _TRAILERS:
            return self._trailers()
        return None

    def _line(self, limit: int, what: str) -> bytes | None:
        end = self._buffer.find(b"\n")
        if end < 0:
            if len(self._buffer) > limit:
                raise HttpParseError(f"{what} longer than {limit} bytes")
            return None
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line

    def _head(self) -> Event | None:
        if not self._buffer:
            return None
        # Empty lines before a request line are tolerated (RFC 9112 §2.2).
        while self._buffer[:1] in (b"\r", b"\n") and self._buffer:
            if self._buffer[:2] == b"\r\n":
                del self._buffer[:2]
            elif self._buffer[:1] == b"\n":
                del self._buffer[:1]
            elif len(self._buffer) == 1:
                return None
            else:
                raise HttpParseError("a bare CR before the request line")
        self._check_method_prefix()
        match = _HEAD_END.search(self._buffer, 0, self.max_head_bytes + 4)
        if match is None:
            if len(self._buffer) > self.max_head_bytes:
                raise HttpParseError(f"request head longer than {self.max_head_bytes} bytes", 431)
            return None
        head = parse_head(bytes(self._buffer[: match.start()]))
        del self._buffer[: match.end()]
        self._keep_alive = head.keep_alive
        if head.chunked:
            self._state = _CHUNK_SIZE_LINE
        else:  # a request without a body has a fixed body of zero bytes
            self._state, self._remaining = _FIXED_BODY, head.content_length or 0
        return head

    def _check_method_prefix(self) -> None:
        """Bytes that cannot begin a request line are refused on arrival, not once a head's worth came:
        a peer speaking another protocol is told at once."""
        space = self._buffer.find(b" ", 0, MAX_METHOD_BYTES + 1)
        method = self._buffer[: space if space >= 0 else MAX_METHOD_BYTES + 1]
        if (method or space == 0) and not _TOKEN.fullmatch(method):
            raise HttpParseError("the method is not a token")
        if space < 0 and len(method) > MAX_METHOD_BYTES:
            raise HttpParseError(
                f"the request line is not 'method target version' (no method in {MAX_METHOD_BYTES} bytes)"
            )

    def _fixed_body(self) -> Event | None:
        if self._remaining == 0:
            return self._end(())
        if not self._buffer:
            return None
        data = bytes(self._buffer[: self._remaining])
        del self._buffer[: len(data)]
        self._remaining -= len(data)
        return BodyData(data)

    def _chunk_size(self) -> Event | None:
        line = self._line(MAX_CHUNK_LINE_BYTES, "a chunk-size line")
        if line is None:
            return None
        match = _CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise HttpParseError("malformed chunk size")
        size = int(match[1], 16)
        if size == 0:
            self._state = _TRAILERS
            return self._trailers()
        self._state, self._remaining = _CHUNK_DATA, size
        return self._chunk_data()

    def _chunk_data(self) -> Event | None:
        if not self._buffer:
            return None
        data = bytes(self._buffer[: self._remaining])
        del self._buffer[: len(data)]
        self._remaining -= len(data)
        if self._remaining == 0:
            self._state = _CHUNK_DATA_END
        return BodyData(data)

    def _chunk_data_end(self) -> Event | None:
        if self._buffer[:2] == b"\r\n":
            del self._buffer[:2]
        elif self._buffer[:1] == b"\n":
            del self._buffer[:1]
        elif len(self._buffer) < 2 and self._buffer[:1] in (b"", b"\r"):
            return None
        else:
            raise HttpParseError("chunk data not followed by CRLF")
        self._state = _CHUNK_SIZE_LINE
        return self._chunk_size()

    def _trailers(self) -> Event | None:
        match = _HEAD_END.search(b"\r\n" + self._buffer, 0, self.max_head_bytes + 6)
        if match is None:
            if len(self._buffer) > self.max_head_bytes:
                raise HttpParseError(f"trailer section longer than {self.max_head_bytes} bytes", 431)
            return None
        section = bytes((b"\r\n" + self._buffer)[2 : match.start()])
        del self._buffer[: max(match.end() - 2, 0)]
        trailers = _parse_fields(_split_lines(section)) if section else ()
        return self._end(trailers)

    def _end(self, trailers: tuple[tuple[str, str], ...]) -> RequestEnd:
        if self._keep_alive:
            self._state = _HEAD
        else:
            self._state = _CLOSED
            self._buffer.clear()
        return RequestEnd(trailers)


@dataclass(frozen=True, slots=True)
class ResponseHead:
    status: int
    keep_alive: bool

    @property
    def interim(self) -> bool:
        """A 1xx answer: the final one is still to come."""
        return 100 <= self.status < 200


_STATUS_LINE = re.compile(rb"HTTP/1\.(\d) (\d{3})(?: .*)?")


class ResponseParser(RequestParser):
    """The server's answers on a connection the proxy forwards requests on, parsed only to find where
    each ends (the proxy passes the bytes on unchanged): `expect(head=...)` before each forwarded
    request, then `ResponseHead`, `BodyData` and `RequestEnd` (the answer's end) events as for requests.
    A body without Content-Length or chunking runs until the server closes (RFC 9112 §6.3)."""

    def __init__(self) -> None:
        super().__init__()
        self._heads: list[bool] = []  # per request awaiting its final answer: whether it was HEAD

    def expect(self, *, head: bool) -> None:
        self._heads.append(head)

    def _step(self) -> Event | ResponseHead | None:
        if self._state == _UNTIL_CLOSE:
            if not self._buffer:
                return None
            data = bytes(self._buffer)
            self._buffer.clear()
            return BodyData(data)
        return super()._step()

    def _head(self) -> ResponseHead | None:
        match = _HEAD_END.search(self._buffer, 0, self.max_head_bytes + 4)
        if match is None:
            if len(self._buffer) > self.max_head_bytes:
                raise HttpParseError(f"response head longer than {self.max_head_bytes} bytes", 502)
            return None
        lines = _split_lines(bytes(self._buffer[: match.start()]))
        del self._buffer[: match.end()]
        status_line = _STATUS_LINE.fullmatch(lines[0])
        if status_line is None:
            raise HttpParseError(f"malformed status line {lines[0][:64]!r}", 502)
        minor, status = int(status_line[1]), int(status_line[2])
        headers = _parse_fields(lines[1:])
        connection = _comma_list(_values(headers, "connection"))
        keep_alive = "keep-alive" in connection if minor == 0 else "close" not in connection
        response = ResponseHead(status, keep_alive)
        if response.interim:
            return response  # no body, and the request still awaits its answer
        head_request = self._heads.pop(0) if self._heads else False
        self._keep_alive = keep_alive
        lengths = _values(headers, "content-length")
        if head_request or status in (204, 304):
            self._state, self._remaining = _FIXED_BODY, 0
        elif _comma_list(_values(headers, "transfer-encoding"))[-1:] == ["chunked"]:
            self._state = _CHUNK_SIZE_LINE
        elif lengths and lengths[0].strip().isdigit():
            self._state, self._remaining = _FIXED_BODY, int(lengths[0].strip())
        else:
            self._state = _UNTIL_CLOSE
        return response
