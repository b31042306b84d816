"""What every declared containerPort of a virtual pod answers: the agnhost `netexec` test server.

Kubernetes' e2e tests run `agnhost netexec`; a virtual pod answers the same way, so probes and
manifests written for it behave alike here:
- HTTP/1.1: `GET /hostname` → the pod name, `GET /clientip` → "ip:port" of the peer as the pod sees it,
  `GET /echo?msg=x` → x, `GET /env` → the container's environment as `env` prints it (`NAME=value` a line,
  the variables its manifest gives from ConfigMaps, Secrets and values, then the Services'), the way a
  pod whose program prints its environment shows what a manifest handed it; any other path is 404 with
  Go's "404 page not found".
- TCP bytes that do not start an HTTP request are echoed back.
- UDP datagrams: `hostname` → the pod name, `clientip` → "ip:port", `echo x` → x; anything else is echoed.
Each HTTP request served is named in the reply (`Reply.served`: "GET /hostname", as netexec logs it) so
that the pod's access log can record it.

The server lives inside the node agent, so what a client sends must not grow the agent: request bodies are
read and dropped as they arrive (no handler looks at them), never buffered, and a Content-Length past
MAX_BODY_BYTES is answered 413 and the connection closed (`Reply.refused` names it, for the pod's counters).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

_METHODS = (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE")
# Go's net/http answers 431 past its 1 MB default; a smaller bound is plenty for a test server.
MAX_HEADER_BYTES = 64 * 1024
MAX_BODY_BYTES = 1024 * 1024

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Request Entity Too Large"}


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes
    close: bool
    """Close the connection once `data` is sent."""
    served: tuple[str, ...] = ()
    """The requests answered in `data`, as netexec logs them: "GET /hostname"."""
    refused: str = ""
    """Why a request was refused (`http_body_too_large`), for the pod's counters; "" when none was."""


def _response(status: int, body: bytes, *, close: bool, head_only: bool = False) -> Reply:
    header = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        f"Content-Length: {len(body)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return Reply(header.encode() + (b"" if head_only else body), close)


def http_answer(method: str, target: str, pod_name: str, client: str,
                env: Sequence[tuple[str, str]] = ()) -> tuple[int, bytes]:
    """Status and body for one request, as netexec's handlers give them; `env` is what `/env` lists."""
    url = urlsplit(target)
    if url.path == "/hostname":
        return 200, pod_name.encode()
    if url.path == "/clientip":
        return 200, client.encode()
    if url.path == "/echo":
        return 200, parse_qs(url.query).get("msg", [""])[0].encode()
    if url.path == "/env":
        return 200, "".join(f"{name}={value}\n" for name, value in env).encode()
    return 404, b"404 page not found\n"


class AgnhostTcp:
    """One accepted connection: decides on the first bytes whether it is HTTP or raw echo."""

    def __init__(self, pod_name: str, client: str, env: Sequence[tuple[str, str]] = ()):
        self.pod_name = pod_name
        self.client = client
        self.env = env
        self._buffer = bytearray()
        self._mode: str | None = None  # "http" or "echo", once the first bytes tell; "closed" after a last answer
        self._body_left = 0  # bytes of the current request's body still to be read and dropped
        self._pending: tuple[str, str, bool] | None = None  # method, target, close: answered once its body is read

    def feed(self, data: bytes) -> Reply:
        """Bytes from the peer in; what to send back (maybe nothing yet) and whether to close after."""
        if self._mode == "echo":
            return Reply(data, False)
        if self._mode == "closed":  # what follows an answer that closes the connection is not read
            return Reply(b"", False)
        self._buffer += data
        if self._mode is None:
            self._mode = _classify(bytes(self._buffer[:8]))
            if self._mode is None:
                return Reply(b"", False)
            if self._mode == "echo":
                echoed, self._buffer = bytes(self._buffer), bytearray()
                return Reply(echoed, False)
        reply = self._serve_requests()
        if reply.close:
            self._mode = "closed"
            self._buffer.clear()
        return reply

    def _serve_requests(self) -> Reply:
        out = bytearray()
        served: list[str] = []
        while True:
            if self._pending is not None:
                dropped = min(self._body_left, len(self._buffer))
                del self._buffer[:dropped]
                self._body_left -= dropped
                if self._body_left:
                    return Reply(bytes(out), False, tuple(served))
                method, target, close = self._pending
                self._pending = None
                status, body = http_answer(method, target, self.pod_name, self.client, self.env)
                out += _response(status, body, close=close, head_only=method == "HEAD").data
                served.append(f"{method} {target}")
                if close:
                    return Reply(bytes(out), True, tuple(served))
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    return Reply(bytes(out) + _response(400, b"", close=True).data, True, tuple(served))
                return Reply(bytes(out), False, tuple(served))
            head = bytes(self._buffer[:end]).decode("latin-1")
            lines = head.split("\r\n")
            parts = lines[0].split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                return Reply(bytes(out) + _response(400, b"", close=True).data, True)
            method, target, version = parts
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = headers.get("content-length", "0")
            if not (length.isascii() and length.isdigit()):
                return Reply(bytes(out) + _response(400, b"", close=True).data, True)
            if int(length) > MAX_BODY_BYTES:
                refusal = _response(413, b"request body too large\n", close=True).data
                return Reply(bytes(out) + refusal, True, tuple(served), refused="http_body_too_large")
            del self._buffer[: end + 4]
            connection = headers.get("connection", "").lower()
            close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
            self._body_left = int(length)
            self._pending = (method, target, close)


def _classify(start: bytes) -> str | None:
    """'http' when `start` begins a request line, 'echo' when it cannot, None while it is too short."""
    for method in _METHODS:
        token = method + b" "
        if start.startswith(token):
            return "http"
        if token.startswith(start):
            return None
    return "echo"


def udp_answer(payload: bytes, pod_name: str, client: str) -> bytes:
    """netexec's UDP server: one datagram in, one out."""
    text = payload.decode("utf-8", "replace").strip()
    if text == "hostname":
        return pod_name.encode()
    if text == "clientip":
        return client.encode()
    if text.startswith("echo "):
        return text[len("echo ") :].encode()
    return payload


def udp_log_line(payload: bytes, client: str) -> str:
    """What netexec's UDP server logs of a datagram it answers."""
    text = payload.decode("utf-8", "replace").strip().lower()
    if text == "hostname":
        return "Sending udp hostName response"
    if text.startswith("echo "):
        return f"Echoing {text[len('echo '):]} to UDP client {client}"
    if text == "clientip":
        return f"Sending clientip back to UDP client {client}"
    return f"Unknown UDP command received from {client}: {text}"
