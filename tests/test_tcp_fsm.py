"""The TCP state machine of virtual pods, two connections joined segment by segment under a fake clock."""

from __future__ import annotations

import heapq
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.nodeagent.pods.virtual.tcp import (
    DEFAULT_PEER_MSS,
    FIN_WAIT_2_SECONDS,
    INITIAL_RTO,
    MSS,
    SYN_RETRIES,
    TIME_WAIT_SECONDS,
    TRANSITIONS,
    CloseReason,
    Connected,
    ConnectionClosed,
    DataReceived,
    EndOfStream,
    LocalProtocolError,
    TcpConnection,
    TcpInput,
    TcpState,
    reset_for,
    seq_add,
    seq_diff,
)
from podnet.overlay.wire.tcp import TcpFlags, TcpSegment

CLIENT_PORT, SERVER_PORT = 40000, 80


class Pair:
    """A client and, once its SYN arrives, a server; `drop(segment)` picks segments the wire loses."""

    def __init__(
        self, *, client_iss=1000, server_iss=9000, drop=None, rng=None, loss=0.0, dup=0.0, reorder=0.0
    ):
        self.now = 0.0
        self.server_iss = server_iss
        self.drop = drop or (lambda segment: False)
        self.rng = rng or random.Random(0)
        self.loss, self.dup, self.reorder = loss, dup, reorder
        self.client = TcpConnection.connect(CLIENT_PORT, SERVER_PORT, client_iss, self.now)
        self.server: TcpConnection | None = None
        self.events = {"client": [], "server": []}
        self.sent: list[tuple[str, TcpSegment]] = []
        self._wire: list = []
        self._order = 0
        self._flush()

    def _flush(self) -> None:
        for name, connection in (("client", self.client), ("server", self.server)):
            if connection is None:
                continue
            self.events[name] += connection.take_events()
            for segment in connection.take_segments():
                self.sent.append((name, segment))
                if self.drop(segment) or self.rng.random() < self.loss:
                    continue
                for _ in range(2 if self.rng.random() < self.dup else 1):
                    delay = 0.01 + (self.rng.random() * 0.1 if self.rng.random() < self.reorder else 0)
                    self._order += 1
                    heapq.heappush(self._wire, (self.now + delay, self._order, name, segment))

    def _deliver(self, sender: str, segment: TcpSegment) -> None:
        if sender == "server":
            self.client.receive(segment, self.now)
        elif self.server is None:
            self.server = TcpConnection.accept(segment, self.server_iss, self.now)
        else:
            self.server.receive(segment, self.now)

    def step(self) -> bool:
        connections = [c for c in (self.client, self.server) if c is not None]
        deadlines = [d for c in connections if (d := c.next_deadline()) is not None]
        if self._wire:
            deadlines.append(self._wire[0][0])
        if not deadlines:
            return False
        self.now = max(self.now, min(deadlines))
        while self._wire and self._wire[0][0] <= self.now:
            _, _, sender, segment = heapq.heappop(self._wire)
            self._deliver(sender, segment)
            self._flush()  # as the pod stack does: each segment's answer goes out before the next is read
        for connection in connections:
            connection.handle_timer(self.now)
        self._flush()
        return True

    def run(self, until=None, max_steps=100_000) -> None:
        for _ in range(max_steps):
            if until is not None and until():
                return
            if not self.step():
                return
        raise AssertionError("the connection pair never went quiet")

    def received(self, name: str) -> bytes:
        return b"".join(e.data for e in self.events[name] if isinstance(e, DataReceived))

    def closed(self, name: str) -> CloseReason | None:
        return next((e.reason for e in self.events[name] if isinstance(e, ConnectionClosed)), None)

    def act(self, fn) -> None:
        fn(self.now)
        self._flush()


def data_segments(sender_port: int):
    return lambda segment: segment.src_port == sender_port and bool(segment.payload)


def test_three_way_handshake_announces_mss_from_the_pod_mtu():
    pair = Pair()
    pair.run()
    syn, syn_ack, ack = (segment for _, segment in pair.sent[:3])
    assert syn.flags == TcpFlags.SYN and syn.seq == 1000 and syn.mss == MSS == 1410
    assert syn_ack.flags == TcpFlags.SYN | TcpFlags.ACK and (syn_ack.seq, syn_ack.ack) == (9000, 1001)
    assert syn_ack.mss == 1410
    assert ack.flags == TcpFlags.ACK and (ack.seq, ack.ack) == (1001, 9001)
    assert pair.client.state == pair.server.state == TcpState.ESTABLISHED
    assert pair.events == {"client": [Connected()], "server": [Connected()]}
    assert pair.client.peer_mss == pair.server.peer_mss == MSS


def test_peer_without_mss_option_gets_the_rfc_default():
    syn = TcpSegment(5555, 80, 77, 0, TcpFlags.SYN, 65535)
    connection = TcpConnection.accept(syn, 1, 0.0)
    assert connection.peer_mss == DEFAULT_PEER_MSS
    assert connection.take_segments()[0].ack == 78


def test_data_both_ways_is_split_at_the_mss_and_crosses_sequence_wraparound():
    pair = Pair(client_iss=0xFFFFFF00, server_iss=0xFFFFFFF0)
    pair.run()
    upload, download = random.Random(1).randbytes(50_000), random.Random(2).randbytes(30_000)
    pair.act(lambda now: pair.client.send(upload, now))
    pair.act(lambda now: pair.server.send(download, now))
    pair.run()
    assert pair.received("server") == upload and pair.received("client") == download
    assert max(len(s.payload) for _, s in pair.sent) == MSS
    assert seq_diff(pair.client.snd_nxt, 0xFFFFFF00) == 50_001  # wrapped past 2**32
    assert pair.client.unacknowledged == pair.server.unacknowledged == 0


def test_fin_both_ways_active_closer_waits_in_time_wait():
    pair = Pair()
    pair.run()
    pair.act(lambda now: pair.client.send(b"bye", now))
    pair.act(lambda now: pair.client.close(now))
    pair.run(until=lambda: pair.client.state == TcpState.FIN_WAIT_2)
    assert pair.received("server") == b"bye" and isinstance(pair.events["server"][-1], EndOfStream)
    assert pair.server.state == TcpState.CLOSE_WAIT
    pair.act(lambda now: pair.server.close(now))
    pair.run(until=lambda: pair.client.state == TcpState.TIME_WAIT)
    entered_time_wait = pair.now
    assert pair.closed("client") == CloseReason.NORMAL
    pair.run()
    assert pair.server.state == TcpState.CLOSED and pair.closed("server") == CloseReason.NORMAL
    assert pair.client.state == TcpState.CLOSED
    assert pair.now == pytest.approx(entered_time_wait + TIME_WAIT_SECONDS, abs=0.02)


def test_a_peer_that_never_sends_fin_is_given_up_after_fin_wait_2():
    pair = Pair()
    pair.run()
    pair.act(lambda now: pair.client.close(now))
    pair.run(until=lambda: pair.client.state == TcpState.FIN_WAIT_2)
    fin_acknowledged = pair.now
    pair.run()
    assert pair.server.state == TcpState.CLOSE_WAIT
    assert pair.client.state == TcpState.CLOSED and pair.closed("client") == CloseReason.TIMEOUT
    assert pair.now == pytest.approx(fin_acknowledged + FIN_WAIT_2_SECONDS)


def test_simultaneous_close_goes_through_closing():
    pair = Pair()
    pair.run()
    pair.act(lambda now: (pair.client.close(now), pair.server.close(now)))
    pair.run(until=lambda: pair.client.state != TcpState.FIN_WAIT_1)
    assert pair.client.state == TcpState.CLOSING
    pair.run()
    assert pair.closed("client") == pair.closed("server") == CloseReason.NORMAL


def test_rst_answers_a_syn_to_a_closed_port_and_the_client_sees_refused():
    client = TcpConnection.connect(CLIENT_PORT, 81, 500, 0.0)
    syn = client.take_segments()[0]
    reset = reset_for(syn)
    assert reset.flags == TcpFlags.RST | TcpFlags.ACK and (reset.seq, reset.ack) == (0, 501)
    client.receive(reset, 0.01)
    assert client.state == TcpState.CLOSED
    assert client.take_events() == [ConnectionClosed(CloseReason.REFUSED)]
    assert reset_for(reset) is None


def test_rst_for_a_stray_ack_takes_its_sequence_from_the_ack():
    stray = TcpSegment(1234, 80, 10, 777, TcpFlags.ACK, 100, b"x")
    assert reset_for(stray) == TcpSegment(80, 1234, 777, 0, TcpFlags.RST, 0)


def test_rst_in_established_resets_and_abort_sends_rst():
    pair = Pair()
    pair.run()
    pair.act(lambda now: pair.client.abort(now))
    assert pair.sent[-1][1].flags & TcpFlags.RST
    pair.run()
    assert pair.closed("client") == CloseReason.ABORTED and pair.closed("server") == CloseReason.RESET
    assert pair.server.state == TcpState.CLOSED


def test_lost_syn_is_sent_again_after_the_initial_rto():
    first_syn = [True]

    def drop(segment):
        if segment.flags == TcpFlags.SYN and first_syn[0]:
            first_syn[0] = False
            return True
        return False

    pair = Pair(drop=drop)
    pair.run()
    syns = [s for name, s in pair.sent if s.flags == TcpFlags.SYN]
    assert len(syns) == 2 and pair.server.state == TcpState.ESTABLISHED
    assert pair.now == pytest.approx(INITIAL_RTO + 3 * 0.01)  # SYN, SYN-ACK, ACK


def test_lost_data_is_retransmitted_and_the_rto_backs_off():
    losses = [2]

    def drop(segment):
        if segment.src_port == CLIENT_PORT and segment.payload and losses[0]:
            losses[0] -= 1
            return True
        return False

    pair = Pair(drop=drop)
    pair.run()
    rto = pair.client.rto
    pair.act(lambda now: pair.client.send(b"hello", now))
    pair.run(until=lambda: pair.client.retries == 2)
    assert pair.client.rto == pytest.approx(min(rto * 4, 10.0))
    pair.run()
    assert pair.received("server") == b"hello"
    assert [s.payload for _, s in pair.sent if s.payload] == [b"hello"] * 3
    assert pair.client.retries == 0


def test_three_duplicate_acks_trigger_fast_retransmit_before_the_rto():
    dropped = []

    def drop(segment):
        if segment.src_port == CLIENT_PORT and segment.payload and not dropped:
            dropped.append(segment.seq)
            return True
        return False

    pair = Pair(drop=drop)
    pair.run()
    start, rto = pair.now, pair.client.rto
    data = bytes(range(256)) * 40
    pair.act(lambda now: pair.client.send(data, now))
    pair.run()
    assert pair.received("server") == data
    assert pair.now - start < rto / 2  # recovered without waiting for the timer
    assert [s.seq for _, s in pair.sent if s.payload and s.src_port == CLIENT_PORT].count(dropped[0]) == 2


def test_out_of_order_segments_are_reassembled():
    pair = Pair(rng=random.Random(7), reorder=0.7)
    pair.run()
    start = pair.now
    data = random.Random(3).randbytes(20 * MSS)
    pair.act(lambda now: pair.client.send(data, now))
    pair.run()
    assert pair.received("server") == data
    assert pair.now - start < INITIAL_RTO / 2  # reassembled, not recovered by retransmission
    assert pair.client.retries == 0


def test_data_queued_during_the_handshake_follows_it():
    pair = Pair()
    pair.act(lambda now: pair.client.send(b"early bytes", now))
    assert [s.flags for _, s in pair.sent] == [TcpFlags.SYN]
    pair.run()
    assert pair.received("server") == b"early bytes"


def test_unanswered_retransmissions_end_in_timeout_within_bounded_time():
    pair = Pair(drop=data_segments(CLIENT_PORT))
    pair.run()
    pair.act(lambda now: pair.client.send(b"into the void", now))
    pair.run()
    assert pair.closed("client") == CloseReason.TIMEOUT
    assert pair.client.state == TcpState.CLOSED and pair.now < 120


def test_connect_to_a_silent_peer_times_out_after_syn_retries():
    client = TcpConnection.connect(CLIENT_PORT, SERVER_PORT, 1, 0.0)
    now, syns = 0.0, len(client.take_segments())
    while client.state != TcpState.CLOSED:
        now = client.next_deadline()
        client.handle_timer(now)
        syns += len(client.take_segments())
    assert syns == 1 + SYN_RETRIES
    assert client.take_events() == [ConnectionClosed(CloseReason.TIMEOUT)]
    # RTOs of 1, 2, 4, 8 and then the 10 s ceiling twice.
    assert now == pytest.approx(35.0)


def test_the_table_lets_any_live_state_be_reset_or_aborted():
    for state in TcpState:
        if state != TcpState.CLOSED:
            assert TRANSITIONS[state, TcpInput.RST_RECEIVED] == TcpState.CLOSED
            assert TRANSITIONS[state, TcpInput.ABORT] == TcpState.CLOSED
    assert (TcpState.ESTABLISHED, TcpInput.SYN_ACK_RECEIVED) not in TRANSITIONS


def test_sending_after_close_is_a_local_protocol_error():
    pair = Pair()
    pair.run()
    pair.act(lambda now: pair.client.close(now))
    with pytest.raises(LocalProtocolError):
        pair.client.send(b"late", pair.now)


def test_accept_needs_a_bare_syn():
    with pytest.raises(LocalProtocolError):
        TcpConnection.accept(TcpSegment(1, 2, 3, 4, TcpFlags.SYN | TcpFlags.ACK, 100), 0, 0.0)


def test_sequence_arithmetic_wraps():
    assert seq_add(0xFFFFFFFF, 2) == 1
    assert seq_diff(1, 0xFFFFFFFF) == 2 and seq_diff(0xFFFFFFFF, 1) == -2


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    loss=st.floats(0.0, 0.5),
    dup=st.floats(0.0, 0.3),
    reorder=st.floats(0.0, 0.5),
    size=st.integers(0, 40_000),
)
def test_random_loss_delivers_intact_or_reports_timeout(seed, loss, dup, reorder, size):
    pair = Pair(rng=random.Random(seed), loss=loss, dup=dup, reorder=reorder)
    data = random.Random(seed).randbytes(size)
    pair.run(until=lambda: pair.client.state != TcpState.SYN_SENT)
    if pair.client.state == TcpState.CLOSED:
        assert pair.closed("client") == CloseReason.TIMEOUT
        return
    pair.act(lambda now: pair.client.send(data, now))
    pair.act(lambda now: pair.client.close(now))
    pair.run(until=lambda: pair.server.state == TcpState.CLOSE_WAIT)
    if pair.server.state == TcpState.CLOSE_WAIT:
        pair.act(lambda now: pair.server.close(now))
    pair.run()  # raises if the pair never goes quiet
    received = pair.received("server")
    assert data.startswith(received)  # never corrupted, never reordered
    if pair.closed("client") == CloseReason.NORMAL:
        assert received == data
    else:
        assert pair.closed("client") == CloseReason.TIMEOUT
