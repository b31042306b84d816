"""One client connection through the L7 proxy, without I/O: the role Envoy plays for Cilium.

`L7Session.feed(data)` takes the client's bytes and returns, in order, what to do: `Judged` (a
request's verdict, once its head is read), `Forward` (bytes of an allowed request for the server, the
head re-serialized and the body re-framed exactly as parsed, so the server cannot read the request
differently from the proxy) and `Answer` (the proxy's own response: 403 with Cilium's body for a denied
request, whose body is then read and dropped; 400 for a malformed one, after which the connection
closes). An adapter performs them in order; a pipelined request's 403 therefore follows the server's
answers to the requests before it as long as the adapter sends each Answer after those answers.

A connection whose first bytes are not an HTTP request line at all (TLS, SSH, raw bytes) is dropped
without an answer (`Answer` with no data and `close`), as a port under L7 policy carries HTTP only.
"""

from __future__ import annotations

from dataclasses import dataclass

from podnet.api.httprules import HttpRequestHead

from .http1 import BodyData, HttpParseError, RequestEnd, RequestHead, RequestParser
from .verdict import ConnectionVerdict, RequestVerdict, access_denied_response, judge_request

_NOT_HTTP = ("the request line is not", "the method is not a token", "the version is not HTTP")
_REASON_PHRASES = {
    400: "Bad Request",
    431: "Request Header Fields Too Large",
    505: "HTTP Version Not Supported",
}


@dataclass(frozen=True, slots=True)
class Judged:
    method: str
    target: str
    host: str
    verdict: RequestVerdict


@dataclass(frozen=True, slots=True)
class Forward:
    data: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    data: bytes
    close: bool
    reason: str  # "denied", "malformed: <why>" or "not-http: <why>", for the counters and the flow log


Step = Judged | Forward | Answer


def _head_bytes(head: RequestHead) -> bytes:
    major, minor = head.version
    lines = [f"{head.method} {head.target} HTTP/{major}.{minor}"]
    lines += [f"{name}: {value}" for name, value in head.headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def error_response(error: HttpParseError) -> bytes:
    body = f"{error.reason}\r\n".encode()
    phrase = _REASON_PHRASES.get(error.status, "Bad Request")
    return (
        f"HTTP/1.1 {error.status} {phrase}\r\ncontent-length: {len(body)}\r\n"
        "content-type: text/plain\r\nconnection: close\r\n\r\n"
    ).encode() + body


class L7Session:
    def __init__(self, connection: ConnectionVerdict) -> None:
        self.connection = connection
        self.parser = RequestParser()
        self.requests = 0
        self._current: RequestHead | None = None
        self._forwarding = False  # whether the current request goes to the server
        self._done = False

    def feed(self, data: bytes) -> list[Step]:
        if self._done:
            return []
        self.parser.feed(data)
        steps: list[Step] = []
        try:
            while (event := self.parser.next_event()) is not None:
                self._step(event, steps)
                if self._done:
                    break
        except HttpParseError as e:
            self._done = True
            if self.requests == 0 and e.reason.startswith(_NOT_HTTP):
                steps.append(Answer(b"", True, f"not-http: {e.reason}"))
            else:
                steps.append(Answer(error_response(e), True, f"malformed: {e.reason}"))
        return steps

    def _step(self, event: object, steps: list[Step]) -> None:
        if isinstance(event, RequestHead):
            self.requests += 1
            self._current = event
            request = HttpRequestHead(event.method, event.target, event.headers)
            verdict = judge_request(self.connection, request)
            steps.append(Judged(event.method, event.target, request.host, verdict))
            self._forwarding = verdict.allowed
            if verdict.allowed:
                steps.append(Forward(_head_bytes(event)))
            return
        head = self._current
        if isinstance(event, BodyData):
            if self._forwarding and event.data:
                framed = b"%x\r\n%s\r\n" % (len(event.data), event.data) if head.chunked else event.data
                steps.append(Forward(framed))
            return
        if isinstance(event, RequestEnd):
            if self._forwarding:
                if head.chunked:
                    trailers = "".join(f"{k}: {v}\r\n" for k, v in event.trailers).encode("latin-1")
                    steps.append(Forward(b"0\r\n" + trailers + b"\r\n"))
            else:
                steps.append(
                    Answer(access_denied_response(keep_alive=head.keep_alive), not head.keep_alive, "denied")
                )
            if not head.keep_alive:
                self._done = True
            self._current = None
