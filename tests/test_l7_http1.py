"""The L7 proxy's HTTP/1.1 request parser, without sockets: keep-alive, pipelining, Content-Length and
chunked bodies fed in pieces of any size, the malformed and ambiguous requests it answers 400 (431, 505)
with a reason, and a fuzz run of 10,000 inputs that may only ever raise HttpParseError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from podnet.nodeagent.l7.http1 import (
    MAX_HEAD_BYTES,
    BodyData,
    HttpParseError,
    RequestEnd,
    RequestHead,
    RequestParser,
)


def events_of(data: bytes, piece: int | None = None) -> list:
    """Every event of `data` fed in pieces of `piece` bytes (all at once when None), body data joined."""
    parser = RequestParser()
    out: list = []
    step = piece or max(len(data), 1)
    for i in range(0, len(data), step):
        parser.feed(data[i : i + step])
        while (event := parser.next_event()) is not None:
            if isinstance(event, BodyData) and out and isinstance(out[-1], BodyData):
                out[-1] = BodyData(out[-1].data + event.data)
            else:
                out.append(event)
    return out


GET = b"GET /api/items HTTP/1.1\r\nHost: backend:8080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n"
POST_CHUNKED = (
    b"POST /api/items HTTP/1.1\r\nHost: backend\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Checksum: 42\r\n\r\n"
)
PUT_LENGTH = b"PUT /api/items/1 HTTP/1.1\r\nHost: backend\r\nContent-Length: 11\r\n\r\nhello world"


@pytest.mark.parametrize("piece", [None, 1, 2, 3, 7, 64])
def test_pipelined_requests_in_pieces_of_any_size(piece):
    events = events_of(GET + POST_CHUNKED + PUT_LENGTH + GET, piece)
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert [(h.method, h.target) for h in heads] == [
        ("GET", "/api/items"),
        ("POST", "/api/items"),
        ("PUT", "/api/items/1"),
        ("GET", "/api/items"),
    ]
    assert heads[0].headers == (("Host", "backend:8080"), ("User-Agent", "curl/8.5.0"), ("Accept", "*/*"))
    assert heads[0].header("host") == "backend:8080" and heads[0].keep_alive
    assert events[1] == RequestEnd()
    assert events[2:5] == [heads[1], BodyData(b"hello, world"), RequestEnd((("X-Checksum", "42"),))]
    assert events[5:8] == [heads[2], BodyData(b"hello world"), RequestEnd()]
    assert heads[1].chunked and heads[2].content_length == 11


def test_bare_lf_line_ends_and_leading_empty_lines_are_tolerated():
    (head, end) = events_of(b"\r\n\nGET / HTTP/1.1\nHost: a\n\n")
    assert head.target == "/" and end == RequestEnd()


def test_connection_close_and_http10_end_the_connection():
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n" + GET)
    head = parser.next_event()
    assert not head.keep_alive
    assert parser.next_event() == RequestEnd()
    assert parser.closed and parser.next_event() is None  # what follows a closing request is not read
    (head, _) = events_of(b"GET / HTTP/1.0\r\n\r\n")
    assert head.version == (1, 0) and not head.keep_alive
    (head, _) = events_of(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert head.keep_alive


def test_idle_only_between_requests():
    parser = RequestParser()
    assert parser.idle
    parser.feed(PUT_LENGTH[:-3])
    while parser.next_event() is not None:
        pass
    assert not parser.idle
    parser.feed(PUT_LENGTH[-3:])
    while parser.next_event() is not None:
        pass
    assert parser.idle


@pytest.mark.parametrize(
    "data, status, reason",
    [
        (b"GET / HTTP/1.1\r\n\r\n", 400, "exactly one Host"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "exactly one Host"),
        (
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "both Transfer-Encoding and Content-Length",
        ),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400, "not one decimal number"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400, "decimal"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "decimal"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400, "final transfer coding"),
        (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400, "final transfer"),
        (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400, "HTTP/1.0"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: a\r\n  continued\r\n\r\n", 400, "obsolete line folding"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400, "malformed header field"),
        (b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n", 400, "control character"),
        (b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400, "bare CR"),
        (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, "method target version"),
        (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "not a token"),
        (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, "not HTTP/1.x"),
        (b"GET / SPDY/3\r\nHost: a\r\n\r\n", 400, "not HTTP/x.y"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 400, "not a token"),
        (b"\x00" * 64, 400, "not a token"),  # refused before any line end arrives
        (b"A" * 40, 400, "no method in 32 bytes"),
        (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, "not a token"),
        (POST_CHUNKED.replace(b"5;ext=1", b"zz"), 400, "malformed chunk size"),
        (POST_CHUNKED.replace(b"hello\r\n", b"hello!!\r\n"), 400, "not followed by CRLF"),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"x" * MAX_HEAD_BYTES + b"\r\n\r\n", 431, "longer than"),
        (b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 100 + b"\r\n", 431, "more than 100 header fields"),
    ],
)
def test_malformed_requests_are_refused_with_a_reason(data, status, reason):
    for piece in (None, 1):
        with pytest.raises(HttpParseError) as e:
            events_of(data, piece)
        assert e.value.status == status and reason in e.value.reason


def test_a_head_without_its_end_is_refused_once_over_the_limit():
    parser = RequestParser()
    parser.feed(b"GET /" + b"a" * MAX_HEAD_BYTES)
    with pytest.raises(HttpParseError) as e:
        parser.next_event()
    assert e.value.status == 431
    with pytest.raises(HttpParseError):  # the parser stays failed
        parser.next_event()
    parser.feed(GET)
    with pytest.raises(HttpParseError):
        parser.next_event()


# -- properties and fuzzing ----------------------------------------------------------------------------

tokens = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12
)
bodies = st.binary(max_size=300)


@st.composite
def requests(draw) -> tuple[bytes, str, str, list[tuple[str, str]], bytes]:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]))
    target = "/" + "/".join(draw(st.lists(tokens, max_size=4)))
    headers = [("Host", draw(tokens))] + draw(
        st.lists(st.tuples(tokens.map(lambda t: "X-" + t), tokens), max_size=5)
    )
    body = draw(bodies)
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    if body and draw(st.booleans()):
        cuts = sorted(draw(st.lists(st.integers(1, len(body)), max_size=4, unique=True)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True) if body[a:b]]
        encoded = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode() + encoded, method, target, headers, body
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body, method, target, headers, body


@given(st.lists(requests(), min_size=1, max_size=3), st.integers(1, 50))
@settings(max_examples=300, deadline=None)
def test_any_valid_requests_fed_in_any_pieces_come_out_whole(batch, piece):
    events = events_of(b"".join(r[0] for r in batch), piece)
    got = []
    for event in events:
        if isinstance(event, RequestHead):
            got.append([event.method, event.target, list(event.headers[: len(batch[len(got)][3])]), b""])
        elif isinstance(event, BodyData):
            got[-1][3] += event.data
    assert got == [[m, t, h, b] for _, m, t, h, b in batch]


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for position, cut, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + cut :]
    return data


fuzz_inputs = st.one_of(
    st.binary(max_size=400),
    st.builds(
        mutate,
        st.sampled_from([GET, POST_CHUNKED, PUT_LENGTH, GET + POST_CHUNKED]),
        st.lists(
            st.tuples(
                st.integers(0, 1000),
                st.integers(0, 8),
                st.one_of(
                    st.binary(max_size=8), st.sampled_from([b"\r\n", b"\n", b":", b" ", b"0\r\n", b"\r"])
                ),
            ),
            max_size=4,
        ),
    ),
    requests().map(lambda r: r[0]),
)


@pytest.mark.slow
@given(fuzz_inputs, st.integers(1, 64))
@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzz_never_raises_anything_but_the_parsers_error(data, piece):
    parser = RequestParser()
    for i in range(0, len(data), piece):
        parser.feed(data[i : i + piece])
        try:
            for _ in range(len(data) + 4):  # every event consumes input, so this bounds any loop
                event = parser.next_event()
                if event is None:
                    break
                assert isinstance(event, RequestHead | BodyData | RequestEnd)
            else:
                raise AssertionError("the parser kept producing events without input")
        except HttpParseError as e:
            assert e.status in (400, 431, 505) and e.reason
            return
