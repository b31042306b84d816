"""HTTP/1.x responses parsed from the bytes of a connection, pure: what a virtual pod's `http` operation and
the ingress controller's proxy both read back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


def parse_http_response(data: bytes, *, at_eof: bool) -> HttpResponse | None:
    """The response in `data`, None while incomplete, ValueError when it is not HTTP."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not (code.isascii() and code.isdigit()):
        raise ValueError(f"status line {lines[0]!r}")
    headers = tuple(
        (name.strip(), value.strip()) for name, _, value in (line.partition(":") for line in lines[1:])
    )
    fields = {name.lower(): value for name, value in headers}
    body = data[end + 4 :]
    if fields.get("transfer-encoding", "").lower() == "chunked":
        body = _dechunk(body)
        if body is None:
            return None
    elif "content-length" in fields:
        length = int(fields["content-length"])
        if len(body) < length:
            return None
        body = body[:length]
    elif not at_eof:
        return None
    return HttpResponse(int(code), reason, headers, body)


def _dechunk(data: bytes) -> bytes | None:
    body = bytearray()
    position = 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size = int(data[position:line_end].split(b";")[0], 16)
        start = line_end + 2
        if size == 0:
            return bytes(body)
        if len(data) < start + size + 2:
            return None
        body += data[start : start + size]
        position = start + size + 2
