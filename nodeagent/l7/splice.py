"""One TCP connection cut in two at the L7 proxy, without I/O: how the agent stands in front of a pod
whose TCP is a real kernel's (a netns pod), or behind one whose egress HTTP rules must be enforced.

The client's SYN does not reach the server. The splice opens its own connection to the server first, as
the client (same addresses and ports: the server sees the client's address, as behind Cilium's
transparent Envoy), and only once the server has accepted it does it answer the client's SYN, as the
server. A server that refuses or does not answer therefore looks to the client exactly as without the
proxy: RST, or silence.

The client's bytes go through `L7Session`. Requests are carried out one at a time: while an allowed
request awaits its answer, the client's next requests (pipelined) wait, so a denied request's 403 comes
after the answers to the requests before it. The server's answers pass unchanged; `ResponseParser`
only finds where each ends, and its status, for the flow records.

Packets in: `from_client(packet, now)`, `from_server(packet, now)` (whole IPv4 packets), and
`handle_timer(now)` at `next_deadline()`. Out: `take_packets()` (to the client, to the server),
`take_records()` (each request judged, with the status it was answered with). `finished` once both
connections are over.
"""

from __future__ import annotations

from collections import deque

from podnet.overlay.wire import ipv4, tcp
from podnet.overlay.wire.ipv4 import IPProtocol

from podnet.codec import DecodeError

from ..pods.virtual.tcp import (
    CloseReason,
    Connected,
    ConnectionClosed,
    DataReceived,
    EndOfStream,
    RemoteProtocolError,
    TcpConnection,
    TcpState,
    reset_for,
)
from .http1 import BodyData, HttpParseError, RequestEnd, ResponseHead, ResponseParser
from .proxy import Answer, Forward, Judged, L7Session, Step
from .verdict import ConnectionVerdict

# Steps of the client's requests kept while an earlier request awaits its answer; past it the client
# is pipelining without reading, and the connection is reset.
MAX_WAITING_STEPS = 4096

# A request, the status of its answer (None: none came) and the seconds from the request's head to its
# answer's end (None for the proxy's own answers).
Record = tuple[Judged, int | None, float | None]


class L7Splice:
    def __init__(
        self,
        syn: bytes,
        connection: ConnectionVerdict,
        now: float,
        *,
        iss: tuple[int, int],
    ) -> None:
        header = ipv4.decode(syn)
        segment = tcp.decode(header.payload, header.src, header.dst)
        self.client_ip, self.server_ip = header.src, header.dst
        self.client_port, self.server_port = segment.src_port, segment.dst_port
        self._syn = segment
        self._server_iss, client_iss = iss
        self.session = L7Session(connection)
        self.responses = ResponseParser()
        self.upstream = TcpConnection.connect(self.client_port, self.server_port, client_iss, now)
        self.downstream: TcpConnection | None = None  # once the server has accepted
        self.counters: dict[str, int] = {}
        self._waiting: deque[Step] = deque()
        self._awaiting: Judged | None = None  # the forwarded request whose answer is not complete yet
        self._status: int | None = None
        self._asked_at = 0.0  # when the awaited request was forwarded
        self._tracking = True  # false once the server's answers could not be parsed
        self._to_client: list[bytes] = []
        self._to_server: list[bytes] = []
        self._records: list[Record] = []
        self._refused = False
        self._pump(now)

    @property
    def key(self) -> tuple[str, int, str, int]:
        return self.client_ip, self.client_port, self.server_ip, self.server_port

    @property
    def finished(self) -> bool:
        down = self.downstream
        return self.upstream.state == TcpState.CLOSED and (
            self._refused if down is None else down.state == TcpState.CLOSED
        )

    # ---- packets in --------------------------------------------------------------------------------

    def from_client(self, packet: bytes, now: float) -> None:
        segment = self._segment(packet)
        if segment is None:
            return
        if self.downstream is None:
            return  # a repeated SYN while the server has not answered yet: the answer will come
        self._receive(self.downstream, segment, now)

    def from_server(self, packet: bytes, now: float) -> None:
        segment = self._segment(packet)
        if segment is not None:
            self._receive(self.upstream, segment, now)

    def handle_timer(self, now: float) -> None:
        for connection in (self.upstream, self.downstream):
            if connection is not None:
                connection.handle_timer(now)
        self._pump(now)

    def next_deadline(self) -> float | None:
        deadlines = [c.next_deadline() for c in (self.upstream, self.downstream) if c is not None]
        return min((d for d in deadlines if d is not None), default=None)

    def _segment(self, packet: bytes) -> tcp.TcpSegment | None:
        try:
            header = ipv4.decode(packet)
            return tcp.decode(header.payload, header.src, header.dst)
        except DecodeError:
            self._count("tcp_malformed")
            return None

    def _receive(self, connection: TcpConnection, segment: tcp.TcpSegment, now: float) -> None:
        try:
            connection.receive(segment, now)
        except RemoteProtocolError:
            self._count("tcp_protocol_error")
            connection.abort(now)
        self._pump(now)

    # ---- outputs -----------------------------------------------------------------------------------

    def take_packets(self) -> tuple[list[bytes], list[bytes]]:
        """(IPv4 packets for the client, for the server)."""
        out = self._to_client, self._to_server
        self._to_client, self._to_server = [], []
        return out

    def take_records(self) -> list[Record]:
        records, self._records = self._records, []
        return records

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ---- the two connections -----------------------------------------------------------------------

    def _pump(self, now: float) -> None:
        busy = True
        while busy:
            busy = False
            for event in self.upstream.take_events():
                busy = True
                self._from_upstream(event, now)
            if self.downstream is not None:
                for event in self.downstream.take_events():
                    busy = True
                    self._from_downstream(event, now)
            self._carry_out(now)
        for segment in self.upstream.take_segments():
            self._to_server.append(self._packet(segment, self.client_ip, self.server_ip))
        if self.downstream is not None:
            for segment in self.downstream.take_segments():
                self._to_client.append(self._packet(segment, self.server_ip, self.client_ip))

    @staticmethod
    def _packet(segment: tcp.TcpSegment, src: str, dst: str) -> bytes:
        return ipv4.encode(ipv4.IPv4Packet(src, dst, IPProtocol.TCP, tcp.encode(segment, src, dst)))

    def _from_upstream(self, event: object, now: float) -> None:
        down = self.downstream
        if isinstance(event, Connected):
            self.downstream = TcpConnection.accept(self._syn, self._server_iss, now)
        elif isinstance(event, DataReceived):
            if down is not None and down.can_send:
                down.send(event.data, now)
            self._track_answers(event.data, now)
        elif isinstance(event, EndOfStream):
            if self._awaiting is not None:
                self._answered(now)  # an answer delimited by the server's close, or none at all
            if down is not None:
                down.close(now)
        elif isinstance(event, ConnectionClosed):
            if down is None:
                # The server refused (RST) or never answered: the client gets what it would have got.
                self._refused = True
                if event.reason == CloseReason.REFUSED:
                    reset = reset_for(self._syn)
                    self._to_client.append(self._packet(reset, self.server_ip, self.client_ip))
            elif event.reason != CloseReason.NORMAL:
                down.abort(now)

    def _from_downstream(self, event: object, now: float) -> None:
        if isinstance(event, DataReceived):
            self._waiting.extend(self.session.feed(event.data))
            if len(self._waiting) > MAX_WAITING_STEPS:
                self._count("l7_pipeline_overflow")
                self.downstream.abort(now)
                self.upstream.abort(now)
        elif isinstance(event, EndOfStream):
            self.upstream.close(now)  # after what is forwarded; the answers still come back
        elif isinstance(event, ConnectionClosed) and event.reason != CloseReason.NORMAL:
            self.upstream.abort(now)

    def _carry_out(self, now: float) -> None:
        """The client's steps in order, up to the next request while one awaits its answer."""
        down = self.downstream
        while self._waiting:
            step = self._waiting[0]
            if isinstance(step, Judged) and self._awaiting is not None:
                return
            self._waiting.popleft()
            if isinstance(step, Judged):
                self._count("l7_allowed" if step.verdict.allowed else "l7_denied")
                if step.verdict.allowed and self._tracking:
                    self._awaiting, self._status, self._asked_at = step, None, now
                    self.responses.expect(head=step.method == "HEAD")
                elif step.verdict.allowed:
                    self._records.append((step, None, None))
                else:
                    self._records.append((step, 403, None))
            elif isinstance(step, Forward):
                if self.upstream.can_send:
                    self.upstream.send(step.data, now)
            elif isinstance(step, Answer):
                if step.reason != "denied":
                    self._count("l7_not_http" if step.reason.startswith("not-http") else "l7_malformed")
                if step.data and down is not None and down.can_send:
                    down.send(step.data, now)
                if step.close:
                    if down is not None:
                        down.close(now)
                    self.upstream.close(now)

    def _track_answers(self, data: bytes, now: float) -> None:
        if not self._tracking:
            return
        self.responses.feed(data)
        try:
            while (event := self.responses.next_event()) is not None:
                if isinstance(event, ResponseHead) and not event.interim:
                    self._status = event.status
                elif isinstance(event, RequestEnd):
                    self._answered(now)
                elif not isinstance(event, BodyData | ResponseHead):
                    raise TypeError(f"unexpected {event!r}")
        except HttpParseError:
            # Not HTTP as far as we can tell: pass it on, and stop holding the client's next requests.
            self._count("l7_bad_answer")
            self._tracking = False
            self._answered(now)

    def _answered(self, now: float) -> None:
        if self._awaiting is not None:
            self._records.append((self._awaiting, self._status, now - self._asked_at))
        self._awaiting, self._status = None, None
