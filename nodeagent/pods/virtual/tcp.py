"""One TCP connection (RFC 9293 subset), sans-I/O: segments in, segments and events out.

Covers active and passive open, sequence/acknowledgement numbers, the peer's sliding window, a Reno-style
congestion window, retransmission on an RTO with exponential backoff (RFC 6298, Karn's rule), fast
retransmit on three duplicate ACKs, an out-of-order queue on the receiving side, FIN in both directions,
RST, and a short TIME_WAIT. Not covered: simultaneous open, urgent data, SACK and timestamps (never
offered in our SYN, so a peer such as Linux leaves them off too).

Time is the `now` argument; the only timer is the deadline `next_deadline()` names, which the caller
fires with `handle_timer(now)`. Every state change goes through the one table, `TRANSITIONS`.

Throughput: window scaling (RFC 7323 2) is offered in our SYN and answered when a peer offers it, so the
receive window can be `RECEIVE_WINDOW` rather than 64 KB; and a connection made with `super_segments`
sends its data in super-segments of up to `super_segment_size(peer_mss)` bytes, each standing for segments of
`peer_mss` bytes (the form a NIC's segmentation offload takes), leaving the cutting to whoever puts them
on a wire. Any segment size is accepted on receipt, so coalesced super-segments are taken whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from podnet.overlay.wire.tcp import TcpFlags, TcpSegment

POD_MTU = 1450
# IPv4 and TCP headers without options: what fits of a segment's payload in one pod frame.
MSS = POD_MTU - 20 - 20
# RFC 9293 3.7.1: the MSS to assume when the peer announces none.
DEFAULT_PEER_MSS = 536
# What we let a peer have in flight once window scaling is agreed: enough for one connection to keep a
# path of a few Gbit/s and a few milliseconds busy. Without scaling the 16-bit field's most.
RECEIVE_WINDOW = 4 << 20
UNSCALED_WINDOW = 0xFFFF
# Our shift count (Linux offers 7 for its default buffers); RFC 7323 2.3 caps any shift at 14.
WINDOW_SCALE = 7
MAX_WINDOW_SCALE = 14
# The largest payload of one super-segment: a whole number of segments in an IPv4 packet of at most
# 65,535 bytes with IPv4 and TCP headers (`super_segment_size`).
SUPER_PACKET_LIMIT = 0xFFFF - 20 - 20
INITIAL_RTO = 1.0
# Linux's floor (TCP_RTO_MIN); RFC 6298's one second is too slow for a LAN.
MIN_RTO = 0.2
MAX_RTO = 10.0
INITIAL_WINDOW_SEGMENTS = 10  # RFC 6928
# Linux waits 60 s; pods here are cheap to reconnect and ports are plentiful, so a short wait will do.
TIME_WAIT_SECONDS = 1.0
# Linux's tcp_fin_timeout: how long we wait for the FIN of a peer that acknowledged ours.
FIN_WAIT_2_SECONDS = 60.0
SYN_RETRIES = 5
DATA_RETRIES = 8
DUPLICATE_ACK_THRESHOLD = 3

_SEQ_MASK = 0xFFFFFFFF
# Flag tests run on plain ints: IntFlag arithmetic builds a new enum member each time, a cost per segment.
_FIN, _SYN, _RST, _PSH, _ACK = (
    int(f) for f in (TcpFlags.FIN, TcpFlags.SYN, TcpFlags.RST, TcpFlags.PSH, TcpFlags.ACK)
)
_SEGMENT_FLAGS = {
    (payload_ends, fin): TcpFlags.ACK | (TcpFlags.PSH if payload_ends else 0) | (TcpFlags.FIN if fin else 0)
    for payload_ends in (False, True)
    for fin in (False, True)
}


def super_segment_size(mss: int) -> int:
    """Payload bytes per super-segment for segments of `mss`: as many whole segments as fit."""
    return max(SUPER_PACKET_LIMIT // mss, 1) * mss


def seq_add(seq: int, n: int) -> int:
    return (seq + n) & _SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed distance (RFC 1982 serial arithmetic)."""
    d = (a - b) & _SEQ_MASK
    return d - (1 << 32) if d & 0x80000000 else d


class TcpState(IntEnum):
    CLOSED = 0
    SYN_SENT = 1
    SYN_RECEIVED = 2
    ESTABLISHED = 3
    FIN_WAIT_1 = 4
    FIN_WAIT_2 = 5
    CLOSE_WAIT = 6
    CLOSING = 7
    LAST_ACK = 8
    TIME_WAIT = 9


class TcpInput(IntEnum):
    # From the application:
    ACTIVE_OPEN = 1
    CLOSE = 2
    ABORT = 3
    # From the peer, after the segment has passed the sequence checks:
    SYN_RECEIVED = 10
    SYN_ACK_RECEIVED = 11
    SYN_ACKNOWLEDGED = 12
    FIN_RECEIVED = 13
    FIN_ACKNOWLEDGED = 14
    RST_RECEIVED = 15
    # From the clock:
    RETRIES_EXHAUSTED = 20
    TIME_WAIT_EXPIRED = 21
    FIN_WAIT_2_EXPIRED = 22


_APPLICATION_INPUTS = frozenset({TcpInput.ACTIVE_OPEN, TcpInput.CLOSE, TcpInput.ABORT})

_S = TcpState
_I = TcpInput

TRANSITIONS: dict[tuple[TcpState, TcpInput], TcpState] = {
    (_S.CLOSED, _I.ACTIVE_OPEN): _S.SYN_SENT,
    (_S.CLOSED, _I.SYN_RECEIVED): _S.SYN_RECEIVED,
    (_S.SYN_SENT, _I.SYN_ACK_RECEIVED): _S.ESTABLISHED,
    (_S.SYN_SENT, _I.CLOSE): _S.CLOSED,
    (_S.SYN_RECEIVED, _I.SYN_ACKNOWLEDGED): _S.ESTABLISHED,
    (_S.SYN_RECEIVED, _I.CLOSE): _S.FIN_WAIT_1,
    (_S.ESTABLISHED, _I.CLOSE): _S.FIN_WAIT_1,
    (_S.ESTABLISHED, _I.FIN_RECEIVED): _S.CLOSE_WAIT,
    (_S.FIN_WAIT_1, _I.FIN_ACKNOWLEDGED): _S.FIN_WAIT_2,
    (_S.FIN_WAIT_1, _I.FIN_RECEIVED): _S.CLOSING,
    (_S.FIN_WAIT_2, _I.FIN_RECEIVED): _S.TIME_WAIT,
    (_S.CLOSE_WAIT, _I.CLOSE): _S.LAST_ACK,
    (_S.CLOSING, _I.FIN_ACKNOWLEDGED): _S.TIME_WAIT,
    (_S.LAST_ACK, _I.FIN_ACKNOWLEDGED): _S.CLOSED,
    (_S.TIME_WAIT, _I.TIME_WAIT_EXPIRED): _S.CLOSED,
    (_S.FIN_WAIT_2, _I.FIN_WAIT_2_EXPIRED): _S.CLOSED,
    # Closing twice is harmless, as it is for a socket that has already sent its FIN.
    **{(s, _I.CLOSE): s for s in (_S.FIN_WAIT_1, _S.FIN_WAIT_2, _S.CLOSING, _S.LAST_ACK, _S.TIME_WAIT)},
    # Any live connection can be reset, aborted, or given up on.
    **{
        (s, i): _S.CLOSED
        for s in TcpState
        if s != _S.CLOSED
        for i in (_I.RST_RECEIVED, _I.ABORT, _I.RETRIES_EXHAUSTED)
    },
}

_SENDING_STATES = frozenset({_S.SYN_SENT, _S.SYN_RECEIVED, _S.ESTABLISHED, _S.CLOSE_WAIT})
# States in which the peer has not yet sent its FIN, so data from it is still expected.
_RECEIVING_STATES = frozenset({_S.ESTABLISHED, _S.FIN_WAIT_1, _S.FIN_WAIT_2})


class LocalProtocolError(Exception):
    """The application asked for something the connection's state does not allow."""


class RemoteProtocolError(Exception):
    """The peer sent something that no transition accepts."""


class CloseReason(IntEnum):
    NORMAL = 0
    RESET = 1
    """The peer reset an established connection."""
    REFUSED = 2
    """The peer answered our SYN with RST: nothing listens on that port."""
    TIMEOUT = 3
    """Retransmissions went unanswered up to the retry limit."""
    ABORTED = 4
    """The application aborted (we sent RST)."""


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class DataReceived:
    data: bytes


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer sent FIN: it will send no more, though it may still receive."""


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The connection is finished for the application (it may linger in TIME_WAIT a moment)."""

    reason: CloseReason


TcpEvent = Connected | DataReceived | EndOfStream | ConnectionClosed


def segment_length(segment: TcpSegment) -> int:
    """Sequence space the segment occupies: its payload plus one each for SYN and FIN."""
    flags = int(segment.flags)
    return len(segment.payload) + bool(flags & _SYN) + bool(flags & _FIN)


def reset_for(segment: TcpSegment) -> TcpSegment | None:
    """The RST that answers `segment` when no connection wants it (RFC 9293 3.10.7.1); none for a RST."""
    if segment.flags & TcpFlags.RST:
        return None
    if segment.flags & TcpFlags.ACK:
        return TcpSegment(segment.dst_port, segment.src_port, segment.ack, 0, TcpFlags.RST, 0)
    return TcpSegment(
        segment.dst_port,
        segment.src_port,
        0,
        seq_add(segment.seq, segment_length(segment)),
        TcpFlags.RST | TcpFlags.ACK,
        0,
    )


class TcpConnection:
    """One end of a connection. Build it with `connect` (active) or `accept` (a SYN at a listener).

    After each call that takes `now`, drain `take_segments()` and `take_events()`, and re-arm the timer
    at `next_deadline()`.
    """

    def __init__(
        self,
        local_port: int,
        remote_port: int,
        iss: int,
        *,
        max_retries: int = DATA_RETRIES,
        super_segments: bool = False,
    ):
        self.local_port = local_port
        self.remote_port = remote_port
        self.state = TcpState.CLOSED
        self.max_retries = max_retries
        # Sending side.
        self.iss = iss
        self.snd_una = iss
        self.snd_nxt = iss
        self.snd_max = iss
        self.snd_wnd = 0
        self.peer_mss = DEFAULT_PEER_MSS
        self.super_segments = super_segments
        self._send_size = DEFAULT_PEER_MSS
        """Payload of the segments `_transmit` makes: peer_mss, or a super-segment's."""
        # Window scaling (RFC 7323): the shift applied to the peer's window field, and to our own receive
        # window before it goes in ours; both 0 unless both SYNs carried the option.
        self.snd_scale = 0
        self.rcv_scale = 0
        self.receive_window = UNSCALED_WINDOW
        self._window_field = UNSCALED_WINDOW
        # Unacknowledged data starts `_send_head` bytes into the buffer, at sequence number `_buffer_seq`:
        # what an ACK frees is cut off only once it is most of the buffer, since cutting the front of a
        # bytearray moves all that follows.
        self._send_buffer = bytearray()
        self._send_head = 0
        self._buffer_seq = seq_add(iss, 1)
        self._fin_queued = False
        self.cwnd = INITIAL_WINDOW_SEGMENTS * MSS
        self.ssthresh = 1 << 30
        self._duplicate_acks = 0
        # Receiving side.
        self.irs = 0
        self.rcv_nxt = 0
        self._out_of_order: dict[int, tuple[bytes, bool]] = {}
        self._out_of_order_bytes = 0  # held at most a receive window's worth, however the segments overlap
        self._ack_needed = False
        # Timers.
        self.rto = INITIAL_RTO
        self._srtt: float | None = None
        self._rttvar = 0.0
        self._rtt_probe: tuple[int, float] | None = None
        self.retries = 0
        self._retransmit_at: float | None = None
        self._state_deadline: float | None = None
        """When FIN_WAIT_2 or TIME_WAIT ends by itself."""
        self.close_reason: CloseReason | None = None
        self._segments: list[TcpSegment] = []
        self._events: list[TcpEvent] = []

    # ---- opening -----------------------------------------------------------------------------------

    @classmethod
    def connect(
        cls, local_port: int, remote_port: int, iss: int, now: float, *, super_segments: bool = False
    ) -> TcpConnection:
        connection = cls(local_port, remote_port, iss, super_segments=super_segments)
        connection._fire(TcpInput.ACTIVE_OPEN, now)
        connection._transmit(now)
        return connection

    @classmethod
    def accept(cls, syn: TcpSegment, iss: int, now: float, *, super_segments: bool = False) -> TcpConnection:
        """The connection a listener makes for `syn` (a segment with SYN, without ACK or RST)."""
        if syn.flags & (TcpFlags.ACK | TcpFlags.RST) or not syn.flags & TcpFlags.SYN:
            raise LocalProtocolError(f"accept() needs a bare SYN, got flags {syn.flags!r}")
        connection = cls(syn.dst_port, syn.src_port, iss, super_segments=super_segments)
        connection._take_peer_syn(syn)
        connection._fire(TcpInput.SYN_RECEIVED, now)
        connection._transmit(now)
        return connection

    # ---- the application's calls -------------------------------------------------------------------

    def send(self, data: bytes, now: float) -> None:
        if not self.can_send:
            raise LocalProtocolError(f"cannot send in {self.state.name}")
        self._send_buffer += data
        self._transmit(now)

    def close(self, now: float) -> None:
        """Sends FIN after any queued data (or just forgets a connection still in SYN_SENT)."""
        if self.state == TcpState.CLOSED:
            return
        was_opening = self.state == TcpState.SYN_SENT
        self._fire(TcpInput.CLOSE, now, CloseReason.NORMAL)
        if not was_opening:
            self._fin_queued = True
            self._transmit(now)

    def abort(self, now: float) -> None:
        """Sends RST (when the peer knows of us) and closes at once."""
        if self.state == TcpState.CLOSED:
            return
        if self.state not in (TcpState.SYN_SENT, TcpState.TIME_WAIT):
            self._emit(TcpFlags.RST | TcpFlags.ACK, self.snd_nxt)
        self._fire(TcpInput.ABORT, now, CloseReason.ABORTED)

    # ---- outputs -----------------------------------------------------------------------------------

    def take_segments(self) -> list[TcpSegment]:
        if self._ack_needed and self.state != TcpState.CLOSED:
            self._emit(TcpFlags.ACK, self.snd_nxt)
        segments, self._segments = self._segments, []
        return segments

    def take_events(self) -> list[TcpEvent]:
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        if self._state_deadline is not None:
            return self._state_deadline
        return self._retransmit_at

    @property
    def can_send(self) -> bool:
        return self.state in _SENDING_STATES and not self._fin_queued

    @property
    def unacknowledged(self) -> int:
        """Bytes queued or in flight that the peer has not acknowledged yet."""
        return len(self._send_buffer) - self._send_head

    # ---- segments from the peer --------------------------------------------------------------------

    def receive(self, segment: TcpSegment, now: float) -> None:
        if self.state == TcpState.CLOSED:
            return
        if self.state == TcpState.SYN_SENT:
            self._receive_in_syn_sent(segment, now)
            return
        flags = int(segment.flags)
        if flags & _RST:
            # RFC 5961 would challenge an in-window RST that is not exact; on our links in-window will do.
            if 0 <= seq_diff(segment.seq, self.rcv_nxt) < self.receive_window:
                self._fire(TcpInput.RST_RECEIVED, now, CloseReason.RESET)
            return
        if flags & _SYN:
            if self.state == TcpState.SYN_RECEIVED and segment.seq == self.irs:
                self._retransmit(now)  # our SYN-ACK was lost: the peer repeats its SYN
            else:
                self._ack_needed = True
            return
        if not flags & _ACK:
            return
        if self.state == TcpState.SYN_RECEIVED:
            if not 0 < seq_diff(segment.ack, self.snd_una) <= seq_diff(self.snd_max, self.snd_una):
                reset = reset_for(segment)
                if reset is not None:
                    self._segments.append(reset)
                return
            self._fire(TcpInput.SYN_ACKNOWLEDGED, now)
        self._receive_ack(segment, now)
        if self.state != TcpState.CLOSED:
            self._receive_data(segment, now)
            self._transmit(now)

    def _receive_in_syn_sent(self, segment: TcpSegment, now: float) -> None:
        flags = int(segment.flags)
        if flags & _ACK and segment.ack != seq_add(self.iss, 1):
            if not flags & _RST:
                self._segments.append(reset_for(segment))
            return
        if flags & _RST:
            if flags & _ACK:
                self._fire(TcpInput.RST_RECEIVED, now, CloseReason.REFUSED)
            return
        if not flags & _SYN or not flags & _ACK:
            return  # a bare SYN would be a simultaneous open, which this stack does not do
        self._take_peer_syn(segment)
        self._acknowledge(segment.ack, now)
        self.snd_wnd = segment.window
        self._ack_needed = True
        self._fire(TcpInput.SYN_ACK_RECEIVED, now)
        self._transmit(now)

    def _take_peer_syn(self, syn: TcpSegment) -> None:
        """The peer's SYN (or SYN-ACK): its sequence start, MSS and window; scaling when it offers it (a
        SYN-ACK offers it only in answer to ours, which always carries it)."""
        self.irs = syn.seq
        self.rcv_nxt = seq_add(syn.seq, 1)
        self.snd_wnd = syn.window  # a SYN's window is never scaled (RFC 7323 2.2)
        self.peer_mss = min(syn.mss or DEFAULT_PEER_MSS, MSS)
        self._send_size = super_segment_size(self.peer_mss) if self.super_segments else self.peer_mss
        if syn.window_scale is not None:
            self.snd_scale = min(syn.window_scale, MAX_WINDOW_SCALE)
            self.rcv_scale = WINDOW_SCALE
            self.receive_window = RECEIVE_WINDOW
            self._window_field = RECEIVE_WINDOW >> WINDOW_SCALE

    def _receive_ack(self, segment: TcpSegment, now: float) -> None:
        ack = segment.ack
        advance = seq_diff(ack, self.snd_una)
        if advance > seq_diff(self.snd_max, self.snd_una):
            self._ack_needed = True  # acknowledges what we never sent
            return
        window = segment.window << self.snd_scale
        if advance > 0:
            self._acknowledge(ack, now)
            self.snd_wnd = window
            fin_seq = seq_add(self._buffer_seq, self.unacknowledged)
            if self._fin_queued and ack == seq_add(fin_seq, 1):
                self._fire(TcpInput.FIN_ACKNOWLEDGED, now, CloseReason.NORMAL)
        elif advance == 0:
            in_flight = self.snd_max != self.snd_una
            if in_flight and not segment_length(segment) and window == self.snd_wnd:
                self._duplicate_acks += 1
                if self._duplicate_acks == DUPLICATE_ACK_THRESHOLD:
                    self._fast_retransmit()
            self.snd_wnd = window

    def _acknowledge(self, ack: int, now: float) -> None:
        """The peer has everything before `ack`: free the buffer, grow the window, rearm the timer."""
        acked = seq_diff(ack, self.snd_una)
        if self.snd_una == self.iss:
            acked -= 1  # the SYN
        drop = min(max(acked, 0), self.unacknowledged)
        self._send_head += drop
        if self._send_head * 2 >= len(self._send_buffer):
            del self._send_buffer[: self._send_head]
            self._send_head = 0
        self._buffer_seq = seq_add(self._buffer_seq, drop)
        self.snd_una = ack
        if seq_diff(ack, self.snd_nxt) > 0:
            self.snd_nxt = ack
        if self._rtt_probe is not None and seq_diff(ack, self._rtt_probe[0]) > 0:
            self._sample_rtt(now - self._rtt_probe[1])
            self._rtt_probe = None
        # Byte counting (RFC 3465): one ACK may cover a whole super-segment, so the window grows by what
        # was acknowledged, not by a segment per ACK.
        acked = max(acked, 0)
        if self.cwnd < self.ssthresh:
            self.cwnd += acked
        else:
            self.cwnd += max(self.peer_mss * acked // self.cwnd, 1)
        self._duplicate_acks = 0
        self.retries = 0
        self._retransmit_at = None if self.snd_una == self.snd_max else now + self.rto

    def _sample_rtt(self, rtt: float) -> None:
        if self._srtt is None:
            self._srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self._srtt - rtt)
            self._srtt = 0.875 * self._srtt + 0.125 * rtt
        self.rto = min(max(self._srtt + 4 * self._rttvar, MIN_RTO), MAX_RTO)

    def _receive_data(self, segment: TcpSegment, now: float) -> None:
        length = segment_length(segment)
        if not length:
            return
        self._ack_needed = True
        if self.state not in _RECEIVING_STATES:
            # The peer's FIN is already in: this is a repeat. A repeated FIN in TIME_WAIT means our last
            # ACK was lost, so the wait starts over.
            if self.state == TcpState.TIME_WAIT:
                self._state_deadline = now + TIME_WAIT_SECONDS
            return
        fin = bool(int(segment.flags) & _FIN)
        offset = seq_diff(segment.seq, self.rcv_nxt)
        if offset > 0:
            replaced = self._out_of_order.get(segment.seq)
            held = self._out_of_order_bytes + len(segment.payload) - (len(replaced[0]) if replaced else 0)
            if offset < self.receive_window and held <= self.receive_window:
                self._out_of_order[segment.seq] = (segment.payload, fin)
                self._out_of_order_bytes = held
            return
        self._accept_in_order(segment.seq, segment.payload, fin, now)
        while self._out_of_order and self.state in _RECEIVING_STATES:
            ready = [seq for seq in self._out_of_order if seq_diff(seq, self.rcv_nxt) <= 0]
            if not ready:
                break
            for seq in ready:
                queued = self._out_of_order.pop(seq, None)  # None: a FIN taken before it cleared the queue
                if queued is None:
                    continue
                self._out_of_order_bytes -= len(queued[0])
                if self.state in _RECEIVING_STATES:
                    self._accept_in_order(seq, *queued, now)

    def _accept_in_order(self, seq: int, payload: bytes, fin: bool, now: float) -> None:
        """Takes a segment starting at or before rcv_nxt, skipping the part we already have."""
        overlap = seq_diff(self.rcv_nxt, seq)
        if overlap >= len(payload) + fin:
            return  # all of it arrived before
        fresh = payload[overlap:]
        if fresh:
            self.rcv_nxt = seq_add(self.rcv_nxt, len(fresh))
            self._events.append(DataReceived(fresh))
        if fin:
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self._out_of_order.clear()
            self._out_of_order_bytes = 0
            self._events.append(EndOfStream())
            self._fire(TcpInput.FIN_RECEIVED, now, CloseReason.NORMAL)

    # ---- sending -----------------------------------------------------------------------------------

    def _emit(self, flags: TcpFlags, seq: int, payload: bytes = b"", *, mss: int | None = None) -> None:
        has_ack = int(flags) & _ACK
        if has_ack:
            self._ack_needed = False
        ack = self.rcv_nxt if has_ack else 0
        self._segments.append(
            TcpSegment(self.local_port, self.remote_port, seq, ack, flags, self._window_field, payload, mss)
        )

    def _emit_syn(self) -> None:
        """Our SYN offers window scaling; our SYN-ACK answers the offer only if the peer's SYN made one
        (RFC 7323 2.2). Either carries the window unscaled."""
        opening = self.state == TcpState.SYN_SENT
        flags = TcpFlags.SYN if opening else TcpFlags.SYN | TcpFlags.ACK
        scale = WINDOW_SCALE if opening or self.rcv_scale else None
        self._segments.append(
            TcpSegment(self.local_port, self.remote_port, self.iss, self.rcv_nxt if not opening else 0, flags,
                       UNSCALED_WINDOW, b"", MSS, scale)
        )
        if not opening:
            self._ack_needed = False

    def _segment_at(self, seq: int, room: int) -> int:
        """Emits the data (and FIN, when it ends the stream) at `seq`, at most `room` bytes of it.

        Returns how much sequence space the segment took, 0 when there was nothing to send.
        """
        offset = seq_diff(seq, self._buffer_seq) + self._send_head
        available = len(self._send_buffer) - offset
        size = min(available, self._send_size, room)
        fin = self._fin_queued and size == available
        if size <= 0 and not fin:
            return 0
        flags = _SEGMENT_FLAGS[size > 0 and size == available, fin]
        with memoryview(self._send_buffer) as buffer:  # released at once: the bytearray may grow after
            self._emit(flags, seq, bytes(buffer[offset : offset + size]))
        return size + fin

    def _transmit(self, now: float) -> None:
        """Sends whatever new data and FIN the windows allow, and arms the retransmission timer."""
        if self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            if self.snd_nxt == self.iss:
                self._emit_syn()
                self.snd_nxt = self.snd_max = seq_add(self.iss, 1)
                self._rtt_probe = (self.snd_nxt, now)
                self._arm(now)
            return
        if self.state in (TcpState.CLOSED, TcpState.TIME_WAIT):
            return
        window = min(self.snd_wnd, self.cwnd)
        while True:
            in_flight = seq_diff(self.snd_nxt, self.snd_una)
            fin_seq = seq_add(self._buffer_seq, self.unacknowledged)
            if seq_diff(self.snd_nxt, fin_seq) > 0:
                break  # FIN already sent
            sent = self._segment_at(self.snd_nxt, window - in_flight)
            if not sent:
                break
            if self.snd_nxt == self.snd_max and self._rtt_probe is None:
                self._rtt_probe = (seq_add(self.snd_nxt, sent), now)
            self.snd_nxt = seq_add(self.snd_nxt, sent)
            if seq_diff(self.snd_nxt, self.snd_max) > 0:
                self.snd_max = self.snd_nxt
        if self.snd_una != self.snd_max or self.unacknowledged:
            # Also when nothing is in flight because the peer's window is shut: the timer then probes it.
            self._arm(now)

    def _arm(self, now: float) -> None:
        if self._retransmit_at is None:
            self._retransmit_at = now + self.rto

    def _retransmit(self, now: float) -> None:
        """Sends again from the oldest unacknowledged byte (go-back-N: later data follows as ACKs come)."""
        self._rtt_probe = None  # Karn: no RTT samples from retransmitted segments
        self.snd_nxt = self.snd_una
        if self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED):
            self._emit_syn()
            self.snd_nxt = seq_add(self.iss, 1)
        else:
            # One segment even into a shut window: that is the window probe.
            self.snd_nxt = seq_add(self.snd_una, self._segment_at(self.snd_una, self.peer_mss))

    def _fast_retransmit(self) -> None:
        in_flight = seq_diff(self.snd_max, self.snd_una)
        self.ssthresh = max(in_flight // 2, 2 * self.peer_mss)
        self.cwnd = self.ssthresh
        self._rtt_probe = None
        self._segment_at(self.snd_una, self.peer_mss)

    # ---- timers ------------------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        if self._state_deadline is not None:
            if now >= self._state_deadline:
                if self.state == TcpState.TIME_WAIT:
                    self._fire(TcpInput.TIME_WAIT_EXPIRED, now, CloseReason.NORMAL)
                else:
                    self._fire(TcpInput.FIN_WAIT_2_EXPIRED, now, CloseReason.TIMEOUT)
            return
        if self._retransmit_at is None or now < self._retransmit_at:
            return
        self._retransmit_at = None
        if self.snd_una == self.snd_max and not self.unacknowledged:
            return
        self.retries += 1
        opening = self.state in (TcpState.SYN_SENT, TcpState.SYN_RECEIVED)
        if self.retries > (SYN_RETRIES if opening else self.max_retries):
            self._fire(TcpInput.RETRIES_EXHAUSTED, now, CloseReason.TIMEOUT)
            return
        in_flight = seq_diff(self.snd_max, self.snd_una)
        self.ssthresh = max(in_flight // 2, 2 * self.peer_mss)
        self.cwnd = self.peer_mss
        self.rto = min(self.rto * 2, MAX_RTO)
        self._retransmit(now)
        self._arm(now)

    # ---- the table ---------------------------------------------------------------------------------

    def _fire(self, event: TcpInput, now: float, reason: CloseReason = CloseReason.NORMAL) -> None:
        try:
            new_state = TRANSITIONS[self.state, event]
        except KeyError:
            error = LocalProtocolError if event in _APPLICATION_INPUTS else RemoteProtocolError
            raise error(f"{event.name} in {self.state.name}") from None
        old_state, self.state = self.state, new_state
        if new_state == old_state:
            return
        if new_state == TcpState.ESTABLISHED:
            self._events.append(Connected())
        elif new_state == TcpState.FIN_WAIT_2:
            self._state_deadline = now + FIN_WAIT_2_SECONDS
        elif new_state == TcpState.TIME_WAIT:
            self._retransmit_at = None
            self._state_deadline = now + TIME_WAIT_SECONDS
            self._finish(CloseReason.NORMAL)
        elif new_state == TcpState.CLOSED:
            self._retransmit_at = self._state_deadline = None
            self._ack_needed = False
            if old_state != TcpState.TIME_WAIT:
                self._finish(reason)

    def _finish(self, reason: CloseReason) -> None:
        self.close_reason = reason
        self._events.append(ConnectionClosed(reason))
