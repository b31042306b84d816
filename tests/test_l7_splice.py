"""The L7 splice without sockets: a real client TCP endpoint and a real server TCP endpoint (the stack's
own, as a kernel would be), the splice between them as the agent puts it in front of a netns pod. Keep-
alive with allowed and denied requests in turn, pipelining answered in order, an answer framed by the
server's close, a refused server, and the HTTP answer parser's framing rules."""

from __future__ import annotations

import pytest
from podnet.nodeagent.l7.http1 import BodyData, RequestEnd, ResponseHead, ResponseParser
from podnet.nodeagent.l7.splice import L7Splice
from podnet.nodeagent.pods.virtual.tcp import (
    CloseReason,
    Connected,
    ConnectionClosed,
    DataReceived,
    TcpConnection,
    reset_for,
)
from podnet.overlay.wire import ipv4, tcp
from podnet.overlay.wire.ipv4 import IPProtocol
from test_l7_proxy import frontend_connection, get

CLIENT, SERVER = "10.244.1.20", "10.244.1.10"
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


def packet(segment: tcp.TcpSegment, src: str, dst: str) -> bytes:
    return ipv4.encode(ipv4.IPv4Packet(src, dst, IPProtocol.TCP, tcp.encode(segment, src, dst)))


def segment_of(data: bytes) -> tcp.TcpSegment:
    header = ipv4.decode(data)
    return tcp.decode(header.payload, header.src, header.dst)


class Wire:
    """A client and a server endpoint with the splice between, every packet carried at once."""

    def __init__(self, answer=lambda request: OK, *, refuse: bool = False):
        self.now = 0.0
        self.answer = answer
        self.refuse = refuse
        self.client = TcpConnection.connect(40000, 8080, 1000, self.now)
        self.server: TcpConnection | None = None
        self.received = b""
        self.client_events: list = []
        self.requests: list[bytes] = []
        syn = self.client.take_segments()[0]
        self.splice = L7Splice(packet(syn, CLIENT, SERVER), frontend_connection(), self.now, iss=(5000, 9000))
        self.carry()

    def carry(self) -> None:
        for _ in range(100):
            to_client, to_server = self.splice.take_packets()
            moved = bool(to_client or to_server)
            for data in to_server:
                segment = segment_of(data)
                assert (ipv4.decode(data).src, segment.src_port) == (CLIENT, 40000)  # the client's address
                if self.server is None:
                    if self.refuse:
                        self.splice.from_server(packet(reset_for(segment), SERVER, CLIENT), self.now)
                        continue
                    self.server = TcpConnection.accept(segment, 7000, self.now)
                else:
                    self.server.receive(segment, self.now)
            for data in to_client:
                assert ipv4.decode(data).src == SERVER
                self.client.receive(segment_of(data), self.now)
            for end, src, dst, into in (
                (self.client, CLIENT, SERVER, self.splice.from_client),
                (self.server, SERVER, CLIENT, self.splice.from_server),
            ):
                if end is None:
                    continue
                for event in end.take_events():
                    if end is self.client:
                        self.client_events.append(event)
                        if isinstance(event, DataReceived):
                            self.received += event.data
                    elif isinstance(event, DataReceived):
                        self.requests.append(event.data)
                        if answer := self.answer(event.data):
                            end.send(answer, self.now)
                for segment in end.take_segments():
                    moved = True
                    into(packet(segment, src, dst), self.now)
            if not moved:
                return
        raise AssertionError("the exchange did not settle")

    def send(self, data: bytes) -> bytes:
        self.received = b""
        self.client.send(data, self.now)
        self.carry()
        return self.received


DENIED = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 15\r\ncontent-type: text/plain\r\n\r\nAccess denied\r\n"


def test_server_is_reached_as_the_client_before_the_client_is_answered():
    wire = Wire()
    assert wire.server is not None and any(isinstance(e, Connected) for e in wire.client_events)


def test_keep_alive_carries_allowed_and_denied_requests_in_turn():
    wire = Wire()
    assert wire.send(get("/hostname")) == OK
    assert wire.send(get("/hostname", "DELETE")) == DENIED
    assert wire.send(get("/admin")) == DENIED
    assert wire.send(get("/echo?msg=x")) == OK
    assert [r.split(b" ", 2)[:2] for r in wire.requests] == [[b"GET", b"/hostname"], [b"GET", b"/echo?msg=x"]]
    taken = wire.splice.take_records()
    assert [latency for *_, latency in taken] == [0.0, None, None, 0.0]  # the proxy's own answers: none
    records = [(j.method, j.target, status) for j, status, _ in taken]
    assert records == [
        ("GET", "/hostname", 200),
        ("DELETE", "/hostname", 403),
        ("GET", "/admin", 403),
        ("GET", "/echo?msg=x", 200),
    ]
    assert wire.splice.counters == {"l7_allowed": 2, "l7_denied": 2}


def test_pipelined_denied_request_is_answered_after_the_answer_before_it():
    wire = Wire()
    both = wire.send(get("/hostname") + get("/hostname", "DELETE") + get("/hostname"))
    assert both == OK + DENIED + OK


def test_answer_delimited_by_the_servers_close_ends_the_request():
    def close_delimited(request: bytes) -> bytes:
        wire.server.send(b"HTTP/1.0 200 OK\r\n\r\nuntil close", wire.now)
        wire.server.close(wire.now)
        return b""

    wire = Wire(close_delimited)
    assert wire.send(get("/hostname")) == b"HTTP/1.0 200 OK\r\n\r\nuntil close"
    assert [(j.target, s) for j, s, _ in wire.splice.take_records()] == [("/hostname", 200)]
    wire.client.close(wire.now)
    wire.carry()
    wire.now += 2.0  # past TIME_WAIT
    wire.splice.handle_timer(wire.now)
    assert wire.splice.finished


def test_malformed_request_gets_400_and_the_connection_closes():
    wire = Wire()
    answer = wire.send(b"GET /hostname HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n") and wire.requests == []
    assert wire.splice.counters == {"l7_malformed": 1}


def test_refused_server_refuses_the_client():
    wire = Wire(refuse=True)
    assert wire.client_events == [ConnectionClosed(CloseReason.REFUSED)]
    assert wire.splice.finished


@pytest.mark.parametrize(
    ("head_request", "answer", "ends"),
    [
        (False, b"HTTP/1.1 204 No Content\r\n\r\n", True),
        (True, b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n", True),
        (False, b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\nx", True),
        (False, b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", True),
        (False, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc", False),
        (False, b"HTTP/1.1 200 OK\r\n\r\nuntil the server closes", False),
    ],
)
def test_answer_framing(head_request, answer, ends):
    parser = ResponseParser()
    parser.expect(head=head_request)
    parser.feed(answer)
    events = []
    while (event := parser.next_event()) is not None:
        events.append(event)
    assert isinstance(events[0], ResponseHead)
    assert (events[-1] == RequestEnd()) is ends
    assert all(isinstance(e, ResponseHead | BodyData | RequestEnd) for e in events)
