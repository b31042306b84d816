"""Outbound operations a virtual pod runs (what `podnet exec POD -- ...` does), as pure objects.

`PodStack` starts them (`open_tcp`, `connect`, `http_get`, `udp_exchange`, `ping`), each under an
operation id, feeds them what its sockets see, and hands their events to the caller from `take_events()`.
Every operation ends with exactly one `Completed` or `Failed`; before that, a TCP stream also reports
`Opened`, `Received` and `PeerClosed`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from podnet.overlay.wire.addresses import ip_to_bytes

from podnet.http1 import HttpResponse, parse_http_response

from .tcp import CloseReason

# ---- events the caller sees --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """The TCP handshake of a stream completed; `local` and `remote` are "ip:port"."""

    op: int
    local: str
    remote: str


@dataclass(frozen=True, slots=True)
class Received:
    op: int
    data: bytes


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The peer of a stream sent FIN: it will send nothing more."""

    op: int


@dataclass(frozen=True, slots=True)
class Completed:
    op: int
    result: HttpResponse | ConnectResult | UdpReply | PingResult | None


@dataclass(frozen=True, slots=True)
class Failed:
    op: int
    reason: str
    """Worded like the errno a Linux program would print: "connection refused", "timed out", ..."""


OperationEvent = Opened | Received | PeerClosed | Completed | Failed

# ---- results -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectResult:
    local: str
    remote: str


@dataclass(frozen=True, slots=True)
class UdpReply:
    payload: bytes
    peer: str


@dataclass(frozen=True, slots=True)
class PingResult:
    transmitted: int
    received: int
    rtts: tuple[float, ...]
    """Round-trip times in seconds, in the order the replies came."""


_TCP_FAILURES = {
    CloseReason.RESET: "connection reset by peer",
    CloseReason.REFUSED: "connection refused",
    CloseReason.TIMEOUT: "connection timed out",
    CloseReason.ABORTED: "connection aborted",
}

# ---- what a TCP operation asks of its connection -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Action:
    send: bytes = b""
    close: bool = False
    events: tuple[OperationEvent, ...] = ()
    """A Completed or Failed among them ends the operation; its connection may still be closing."""
    served: tuple[str, ...] = ()
    """Requests a server application answered, for the pod's access log."""


class TcpOperation:
    """The common shape: the stack calls these as the connection's events come, and applies the Action."""

    def __init__(self, op: int, timeout: float, now: float):
        self.op = op
        self.timeout = timeout
        self.deadline: float | None = now + timeout

    def connected(self, local: str, remote: str) -> Action:
        raise NotImplementedError

    def received(self, data: bytes) -> Action:
        return Action()

    def peer_closed(self) -> Action:
        return Action(close=True)

    def closed(self, reason: CloseReason) -> Action:
        if reason == CloseReason.NORMAL:
            return Action(events=(Completed(self.op, None),))
        return Action(events=(Failed(self.op, _TCP_FAILURES[reason]),))

    def timed_out(self) -> Failed:
        return Failed(self.op, f"timed out after {self.timeout:g}s")


class TcpStream(TcpOperation):
    """`open_tcp`: a byte stream the caller writes with `PodStack.send` and ends with `PodStack.close`."""

    def connected(self, local: str, remote: str) -> Action:
        self.deadline = None  # the timeout bounds the handshake only
        return Action(events=(Opened(self.op, local, remote),))

    def received(self, data: bytes) -> Action:
        return Action(events=(Received(self.op, data),))

    def peer_closed(self) -> Action:
        return Action(events=(PeerClosed(self.op),))


class TcpConnect(TcpOperation):
    """`connect`: succeeds once the handshake completes, then closes politely (like agnhost connect)."""

    def connected(self, local: str, remote: str) -> Action:
        return Action(close=True, events=(Completed(self.op, ConnectResult(local, remote)),))


class HttpGet(TcpOperation):
    """`http_get`: one HTTP/1.1 request without a body (GET unless `method` says otherwise) with
    `Connection: close`; the answer's body by Content-Length, chunks or EOF."""

    def __init__(
        self, op: int, url: str, timeout: float, now: float, address: str | None = None, method: str = "GET"
    ):
        super().__init__(op, timeout, now)
        self.method = method
        self.host, self.port, self.target = parse_http_url(url, resolved=address is not None)
        # Where to connect: the URL's host, or the address its name resolved to (the Host header keeps
        # the name, as curl sends it).
        self.address = address or self.host
        self._buffer = bytearray()

    def connected(self, local: str, remote: str) -> Action:
        host = self.host if self.port == 80 else f"{self.host}:{self.port}"
        request = (
            f"{self.method} {self.target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: podnet\r\n"
            "Accept: */*\r\nConnection: close\r\n\r\n"
        )
        return Action(send=request.encode())

    def received(self, data: bytes) -> Action:
        self._buffer += data
        return self._finish(at_eof=False)

    def peer_closed(self) -> Action:
        return self._finish(at_eof=True)

    def closed(self, reason: CloseReason) -> Action:
        if reason == CloseReason.NORMAL:
            return self._finish(at_eof=True)
        return super().closed(reason)

    def _finish(self, *, at_eof: bool) -> Action:
        try:
            response = parse_http_response(bytes(self._buffer), at_eof=at_eof)
        except ValueError as error:
            return Action(close=True, events=(Failed(self.op, f"bad HTTP response: {error}"),))
        if response is None:
            if at_eof:
                return Action(
                    close=True, events=(Failed(self.op, "connection closed before a full response"),)
                )
            return Action()
        return Action(close=True, events=(Completed(self.op, response),))


def parse_http_url(url: str, *, resolved: bool = False) -> tuple[str, int, str]:
    """(host, port, request target) of an http:// URL; the host must be an IP address unless the caller
    has `resolved` the name already."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, not {parts.scheme}://")
    host = parts.hostname or ""
    if not resolved:
        ip_to_bytes(host)  # raises ValueError for a name
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return host, parts.port or 80, target


# ---- datagram operations -----------------------------------------------------------------------------


@dataclass(slots=True)
class UdpExchange:
    """`udp_exchange`: one datagram out from an ephemeral port, the first datagram back is the answer."""

    op: int
    dst_ip: str
    dst_port: int
    payload: bytes
    local_port: int
    deadline: float

    def reply(self, payload: bytes, src_ip: str, src_port: int) -> Completed:
        return Completed(self.op, UdpReply(payload, f"{src_ip}:{src_port}"))

    def unreachable(self, description: str) -> Failed:
        return Failed(self.op, f"connection refused ({description})")

    def timed_out(self) -> Failed:
        return Failed(self.op, "timed out waiting for a reply")


PING_PAYLOAD = bytes(range(0x10, 0x10 + 56))  # 56 data bytes, as Linux ping sends by default


@dataclass(slots=True)
class Ping:
    """`ping`: `count` echo requests `interval` apart; done when all are answered or at the deadline."""

    op: int
    dst_ip: str
    identifier: int
    count: int
    interval: float
    deadline: float
    next_send: float
    sent_at: dict[int, float] = field(default_factory=dict)
    rtts: list[float] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)

    def due(self, now: float) -> list[int]:
        """Sequence numbers to send now."""
        sequences = []
        while len(self.sent_at) < self.count and now >= self.next_send:
            sequence = len(self.sent_at) + 1
            self.sent_at[sequence] = now
            sequences.append(sequence)
            self.next_send += self.interval
        return sequences

    def next_deadline(self) -> float:
        return min(self.deadline, self.next_send) if len(self.sent_at) < self.count else self.deadline

    def reply(self, sequence: int, now: float) -> Completed | None:
        sent = self.sent_at.get(sequence)
        if sent is None or sequence in self.answered:
            return None
        self.answered.add(sequence)
        self.rtts.append(now - sent)
        if len(self.rtts) == self.count:
            return self.result()
        return None

    def result(self) -> Completed | Failed:
        if not self.rtts:
            return Failed(self.op, f"no reply from {self.dst_ip}")
        return Completed(self.op, PingResult(len(self.sent_at), len(self.rtts), tuple(self.rtts)))

    def unreachable(self, description: str) -> Failed:
        return Failed(self.op, f"{self.dst_ip}: {description}")
