"""A SPDY/3.1 session, sans-I/O: bytes in (`receive_data`), events out; calls in, bytes out
(`data_to_send`). The server side of what kubectl opens for port-forward: the peer opens streams, this
side replies, moves data both ways and half-closes with FIN.

Invariants a reader must keep:
- Every stream the peer opens gets exactly one SYN_REPLY (`accept`) or RST_STREAM (`reset`).
- Flow control (SPDY/3.1 sections 2.6.8, 2.6.9) binds only a peer that takes part in it. kubectl's SPDY
  library (Go's spdystream, which the kubelet uses too) never sends WINDOW_UPDATE, ignores ours and
  sends beyond 64 KiB without waiting: enforcing windows against it would stall or kill every transfer
  larger than that. So the session starts with flow control off (pressure is left to the transport
  underneath) and turns it on for good when the peer shows it speaks it, by a WINDOW_UPDATE or a
  SETTINGS INITIAL_WINDOW_SIZE. From then each stream and the session have a send and a receive window
  (64 KiB to start with): `send` never puts more on the wire than both send windows allow, the rest
  waits in the stream's queue until a WINDOW_UPDATE opens the window (`WindowOpened`); receive windows
  shrink as data arrives and `consumed(n)` grows them back with WINDOW_UPDATE once half is used, so a
  peer that floods beyond its window commits a protocol error.
- A peer's bad frame ends the session: GOAWAY(PROTOCOL_ERROR) is queued and `SessionEnded` reported;
  the decoder's zlib state is lost with it, so nothing after it is read.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from podnet.codec import DecodeError

from .frames import (
    FLAG_FIN,
    Data,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    GoAwayStatus,
    Headers,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Setting,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)

INITIAL_WINDOW = 64 * 1024
MAX_WINDOW = 0x7FFF_FFFF
MAX_DATA_FRAME = 16 * 1024


class LocalProtocolError(Exception):
    """This side misused the session (sent on a stream that is not open for sending)."""


@dataclass(frozen=True, slots=True)
class StreamOpened:
    stream_id: int
    headers: Headers


@dataclass(frozen=True, slots=True)
class DataReceived:
    stream_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer half-closed the stream: no more data will come on it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """Some queued data of this stream went out; `buffered(stream_id)` says how much still waits."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """GOAWAY from the peer, or a protocol error of the peer (`error` says which)."""

    last_good_stream_id: int
    error: str | None = None


Event = StreamOpened | DataReceived | StreamEnded | StreamReset | WindowOpened | SessionEnded


@dataclass(slots=True)
class _Stream:
    send_window: int
    receive_window: int = INITIAL_WINDOW
    unacknowledged: int = 0  # received and consumed, not yet returned by WINDOW_UPDATE
    replied: bool = False
    local_closed: bool = False  # our FIN is due (possibly behind queued data)
    fin_sent: bool = False
    remote_closed: bool = False
    queue: deque[bytes] = field(default_factory=deque)

    @property
    def buffered(self) -> int:
        return sum(map(len, self.queue))


class ServerSession:
    def __init__(self) -> None:
        self._decoder = FrameDecoder()
        self._encoder = FrameEncoder()
        self._out = bytearray()
        self._streams: dict[int, _Stream] = {}
        self._initial_send_window = INITIAL_WINDOW
        self._session_send_window = INITIAL_WINDOW
        self._session_receive_window = INITIAL_WINDOW
        self._session_unacknowledged = 0
        self._last_peer_stream = 0
        self.ended = False
        self.flow_control = False

    # ---- input -----------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        if self.ended:
            return []
        try:
            frames = self._decoder.feed(data)
        except DecodeError as e:
            return [self._fail(str(e))]
        events: list[Event] = []
        for frame in frames:
            try:
                self._handle(frame, events)
            except DecodeError as e:
                events.append(self._fail(str(e)))
            if self.ended:
                break
        return events

    def _fail(self, message: str) -> SessionEnded:
        self._write(GoAway(self._last_peer_stream, GoAwayStatus.PROTOCOL_ERROR))
        self.ended = True
        return SessionEnded(self._last_peer_stream, message)

    def _handle(self, frame: object, events: list[Event]) -> None:
        if isinstance(frame, Data):
            self._on_data(frame, events)
        elif isinstance(frame, SynStream):
            self._on_syn_stream(frame, events)
        elif isinstance(frame, RstStream):
            if self._streams.pop(frame.stream_id, None) is not None:
                events.append(StreamReset(frame.stream_id, frame.status))
        elif isinstance(frame, Ping):
            if frame.ping_id % 2 == 1:  # the peer's ping (client ids are odd): echo it
                self._write(frame)
        elif isinstance(frame, Settings):
            for _, key, value in frame.entries:
                if key == Setting.INITIAL_WINDOW_SIZE:
                    self._start_flow_control()
                    self._set_initial_window(value, events)
        elif isinstance(frame, WindowUpdate):
            self._start_flow_control()
            self._on_window_update(frame, events)
        elif isinstance(frame, GoAway):
            self.ended = True
            events.append(SessionEnded(frame.last_good_stream_id))
        elif isinstance(frame, HeadersFrame):
            if frame.stream_id not in self._streams:
                self._write(RstStream(frame.stream_id, RstStatus.INVALID_STREAM))
        elif isinstance(frame, SynReply):
            raise DecodeError(f"SYN_REPLY for stream {frame.stream_id}, which this side never opened")

    def _on_syn_stream(self, frame: SynStream, events: list[Event]) -> None:
        sid = frame.stream_id
        if sid % 2 == 0 or sid <= self._last_peer_stream:
            raise DecodeError(f"SYN_STREAM {sid}: a client's stream ids are odd and increasing (last {self._last_peer_stream})")
        self._last_peer_stream = sid
        self._streams[sid] = _Stream(self._initial_send_window, remote_closed=bool(frame.flags & FLAG_FIN))
        events.append(StreamOpened(sid, frame.headers))
        if frame.flags & FLAG_FIN:
            events.append(StreamEnded(sid))

    def _on_data(self, frame: Data, events: list[Event]) -> None:
        size = len(frame.data)
        self._session_receive_window -= size
        if self.flow_control and self._session_receive_window < 0:
            raise DecodeError("the peer sent beyond the session's flow-control window")
        stream = self._streams.get(frame.stream_id)
        if stream is None or stream.remote_closed:
            self._session_unacknowledged += size  # not the stream's data, but it took session window
            self._write(RstStream(frame.stream_id, RstStatus.INVALID_STREAM if stream is None else RstStatus.STREAM_ALREADY_CLOSED))
            return
        stream.receive_window -= size
        if self.flow_control and stream.receive_window < 0:
            self._write(RstStream(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR))
            del self._streams[frame.stream_id]
            events.append(StreamReset(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR))
            return
        if frame.data:
            events.append(DataReceived(frame.stream_id, frame.data))
        if frame.fin:
            stream.remote_closed = True
            events.append(StreamEnded(frame.stream_id))
            self._forget_if_done(frame.stream_id)

    def _start_flow_control(self) -> None:
        """From here on windows count from what the peer has been sent and has sent so far."""
        if self.flow_control:
            return
        self.flow_control = True
        for stream in self._streams.values():
            stream.receive_window = max(stream.receive_window, 0)
        self._session_receive_window = max(self._session_receive_window, 0)

    def _set_initial_window(self, value: int, events: list[Event]) -> None:
        if value > MAX_WINDOW:
            raise DecodeError(f"initial window {value} exceeds {MAX_WINDOW}")
        change, self._initial_send_window = value - self._initial_send_window, value
        for sid, stream in self._streams.items():
            stream.send_window += change
            self._flush_queue(sid, stream, events)

    def _on_window_update(self, frame: WindowUpdate, events: list[Event]) -> None:
        if frame.stream_id == 0:
            self._session_send_window += frame.delta
            if self._session_send_window > MAX_WINDOW:
                raise DecodeError("WINDOW_UPDATE overflows the session's window")
            for sid, stream in list(self._streams.items()):
                self._flush_queue(sid, stream, events)
            return
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return  # a stream that just closed: updates may cross its FIN
        stream.send_window += frame.delta
        if stream.send_window > MAX_WINDOW:
            self._write(RstStream(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR))
            del self._streams[frame.stream_id]
            events.append(StreamReset(frame.stream_id, RstStatus.FLOW_CONTROL_ERROR))
            return
        self._flush_queue(frame.stream_id, stream, events)

    # ---- output ----------------------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        out, self._out = bytes(self._out), bytearray()
        return out

    def _write(self, frame: object) -> None:
        self._out += self._encoder.encode(frame)  # type: ignore[arg-type]

    def _open_stream(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or self.ended:
            raise LocalProtocolError(f"stream {stream_id} is not open")
        return stream

    def accept(self, stream_id: int, headers: Headers = ()) -> None:
        stream = self._open_stream(stream_id)
        if stream.replied:
            raise LocalProtocolError(f"stream {stream_id} already has its SYN_REPLY")
        stream.replied = True
        self._write(SynReply(stream_id, headers))

    def send(self, stream_id: int, data: bytes) -> None:
        """Queues `data` on the stream; as much as the windows allow goes out now."""
        stream = self._open_stream(stream_id)
        if stream.local_closed:
            raise LocalProtocolError(f"stream {stream_id} is closed for sending")
        if data:
            stream.queue.append(data)
            self._flush_queue(stream_id, stream, None)

    def end(self, stream_id: int) -> None:
        """Half-closes the stream (FIN), after whatever data is still queued on it."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed or self.ended:
            return
        stream.local_closed = True
        self._flush_queue(stream_id, stream, None)

    def reset(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        if self._streams.pop(stream_id, None) is not None and not self.ended:
            self._write(RstStream(stream_id, status))

    def go_away(self) -> None:
        if not self.ended:
            self._write(GoAway(self._last_peer_stream, GoAwayStatus.OK))
            self.ended = True

    def consumed(self, stream_id: int, size: int) -> None:
        """The application has taken `size` bytes of the stream's data: the windows may reopen."""
        if not self.flow_control:
            return
        self._session_unacknowledged += size
        if self._session_unacknowledged >= INITIAL_WINDOW // 2:
            self._write(WindowUpdate(0, self._session_unacknowledged))
            self._session_receive_window += self._session_unacknowledged
            self._session_unacknowledged = 0
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            return
        stream.unacknowledged += size
        if stream.unacknowledged >= INITIAL_WINDOW // 2:
            self._write(WindowUpdate(stream_id, stream.unacknowledged))
            stream.receive_window += stream.unacknowledged
            stream.unacknowledged = 0

    def buffered(self, stream_id: int) -> int:
        """Bytes queued on the stream that the windows have not let out yet."""
        stream = self._streams.get(stream_id)
        return stream.buffered if stream is not None else 0

    def _flush_queue(self, stream_id: int, stream: _Stream, events: list[Event] | None) -> None:
        queued = stream.buffered
        while stream.queue:
            room = min(stream.send_window, self._session_send_window, MAX_DATA_FRAME) if self.flow_control else MAX_DATA_FRAME
            if room <= 0:
                break
            chunk = stream.queue.popleft()
            if len(chunk) > room:
                stream.queue.appendleft(chunk[room:])
                chunk = chunk[:room]
            stream.send_window -= len(chunk)
            self._session_send_window -= len(chunk)
            self._write(Data(stream_id, chunk))
        if stream.local_closed and not stream.fin_sent and not stream.queue:
            stream.fin_sent = True
            self._write(Data(stream_id, b"", FLAG_FIN))
            self._forget_if_done(stream_id)
        if events is not None and stream.buffered < queued:
            events.append(WindowOpened(stream_id))

    def _forget_if_done(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and stream.remote_closed and stream.fin_sent:
            del self._streams[stream_id]
