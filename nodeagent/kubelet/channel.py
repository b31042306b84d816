"""The channel protocol of Kubernetes' remote command streams over WebSocket (`v4.channel.k8s.io`,
`v5.channel.k8s.io`), as k8s.io/apimachinery/pkg/util/remotecommand defines it. Pure: bytes in, values out.

Every WebSocket message is binary: its first byte names the stream, the rest is that stream's data.
0 stdin (client to server), 1 stdout, 2 stderr, 3 error (server to client: one `Status` when the command
ends, then the connection closes), 4 resize (client to server: `{"Width": w, "Height": h}`). v5 adds a
close signal, 255 followed by the stream id, with which the client half-closes its stdin (v4 has no way
to say so: a v4 client's stdin ends only with the connection).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

STREAM_PROTOCOL_V5 = "v5.channel.k8s.io"
STREAM_PROTOCOL_V4 = "v4.channel.k8s.io"
# In order of preference, as the server picks.
PROTOCOLS = (STREAM_PROTOCOL_V5, STREAM_PROTOCOL_V4)

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255

NON_ZERO_EXIT_CODE = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


class ChannelError(ValueError):
    """A message that breaks the protocol (empty, an unknown stream, a bad resize)."""


@dataclass(frozen=True, slots=True)
class StdinData:
    data: bytes


@dataclass(frozen=True, slots=True)
class StdinClosed:
    pass


@dataclass(frozen=True, slots=True)
class Resize:
    width: int
    height: int


ClientMessage = StdinData | StdinClosed | Resize


def frame(stream: int, data: bytes) -> bytes:
    """One message carrying `data` on `stream`."""
    return bytes((stream,)) + data


def parse_client_message(message: bytes) -> ClientMessage | None:
    """What a client's message means; None for one that carries nothing to act on (the close signal of
    a stream other than stdin)."""
    if not message:
        raise ChannelError("empty message: every message starts with its stream id")
    stream, data = message[0], message[1:]
    if stream == STDIN:
        return StdinData(bytes(data))
    if stream == RESIZE:
        return parse_resize(bytes(data))
    if stream == CLOSE:
        if len(data) != 1:
            raise ChannelError("a close signal names exactly one stream")
        return StdinClosed() if data[0] == STDIN else None
    raise ChannelError(f"stream {stream} does not carry data from the client")


def parse_resize(data: bytes) -> Resize:
    """`{"Width": 80, "Height": 24}` (client-go's TerminalSize)."""
    try:
        size = json.loads(data)
        width, height = int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError):
        raise ChannelError(f"a resize is {{\"Width\": W, \"Height\": H}}, not {data[:64]!r}") from None
    if not (0 <= width < 1 << 16 and 0 <= height < 1 << 16):
        raise ChannelError(f"terminal size {width}x{height} is out of range")
    return Resize(width, height)


def success() -> dict:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int) -> dict:
    """How the command ended, as the kubelet reports it on the error stream: Success for 0, else a
    Failure whose ExitCode cause kubectl turns into its own exit code."""
    if code == 0:
        return success()
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: command terminated with exit code {code}",
        "reason": NON_ZERO_EXIT_CODE,
        "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]},
    }


def failure(message: str, reason: str = "InternalError", code: int = 500) -> dict:
    """A command that could not run at all (kubectl prints the message and exits 1)."""
    return {"metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}


def status_frame(status: dict) -> bytes:
    return frame(ERROR, json.dumps(status, separators=(",", ":")).encode())
