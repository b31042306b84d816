"""The port-forward protocol over SPDY (`portforward.k8s.io`), pure: which streams belong together.

kubectl opens two streams per forwarded connection, each with headers `streamType` (`error` or
`data`), `port` and `requestID`; the pair with one requestID is one TCP connection into the pod's
port. The error stream carries nothing from kubectl (it half-closes it at once); the server writes
a failure there as text. This follows the kubelet's streaming server
(pkg/kubelet/cri/streaming/portforward/httpstream.go): the same header checks and messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from .frames import Headers

PROTOCOL = "portforward.k8s.io"
# What kubectl asks for when it tunnels SPDY through a WebSocket (KEP-4006).
WEBSOCKET_PROTOCOL = f"SPDY/3.1+{PROTOCOL}"
STREAM_TYPE_DATA = "data"
STREAM_TYPE_ERROR = "error"
# How long the first stream of a pair waits for the second (the kubelet's streamCreationTimeout).
STREAM_CREATION_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class Pair:
    request_id: str
    port: int
    data_stream: int
    error_stream: int


@dataclass(frozen=True, slots=True)
class Rejected:
    """The stream is refused (reset); `reason` is what the kubelet would log."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class TimedOut:
    """A half pair whose partner never came: the kubelet writes `MESSAGE` on its error stream, if it has one,
    and lets both go."""

    MESSAGE = "timed out waiting for streams"
    data_stream: int | None
    error_stream: int | None


@dataclass(slots=True)
class _Half:
    port: int
    opened_at: float
    data_stream: int | None = None
    error_stream: int | None = None


class StreamPairs:
    """Streams in, complete pairs out."""

    def __init__(self) -> None:
        self._waiting: dict[str, _Half] = {}

    def add(self, stream_id: int, headers: Headers, now: float) -> Pair | Rejected | None:
        """A pair when `stream_id` completes one, Rejected for a stream that cannot be served, None
        while its partner has yet to come."""
        fields = dict(headers)
        port_text = fields.get("port", "")
        if not port_text:
            return Rejected(stream_id, '"port" header is required')
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return Rejected(stream_id, f'unable to parse "{port_text}" as a port')
        request_id = fields.get("requestid", "")
        if not request_id:
            # As the kubelet does for clients before requestIDs: the stream id names the pair.
            request_id = str(stream_id if fields.get("streamtype") == STREAM_TYPE_ERROR else stream_id - 2)
        half = self._waiting.setdefault(request_id, _Half(int(port_text), now))
        kind = fields.get("streamtype", "")
        if kind == STREAM_TYPE_DATA and half.data_stream is None:
            half.data_stream = stream_id
        elif kind == STREAM_TYPE_ERROR and half.error_stream is None:
            half.error_stream = stream_id
        elif kind in (STREAM_TYPE_DATA, STREAM_TYPE_ERROR):
            return Rejected(stream_id, f"{kind} stream already assigned")
        else:
            if half.data_stream is None and half.error_stream is None:
                del self._waiting[request_id]
            return Rejected(stream_id, f'invalid stream type "{kind}"')
        if half.data_stream is None or half.error_stream is None:
            return None
        del self._waiting[request_id]
        return Pair(request_id, half.port, half.data_stream, half.error_stream)

    def forget(self, stream_id: int) -> None:
        """A stream reset before its partner came: its half-pair is dropped."""
        for request_id, half in list(self._waiting.items()):
            if stream_id in (half.data_stream, half.error_stream):
                del self._waiting[request_id]

    def expire(self, now: float, timeout: float = STREAM_CREATION_TIMEOUT) -> list[TimedOut]:
        """The half pairs waiting since before `now - timeout`, dropped."""
        stale = [request_id for request_id, half in self._waiting.items() if half.opened_at <= now - timeout]
        return [TimedOut(half.data_stream, half.error_stream) for half in map(self._waiting.pop, stale)]
