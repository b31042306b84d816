"""The BGP finite state machine of one peering (RFC 4271 8), pure: events in, actions out.

Every transition is one entry of `TRANSITIONS`; an event with no entry in a state that has a connection is
an FSM error (NOTIFICATION 5, RFC 6608 subcodes), and in a state without one it is ignored. Timers are
data: `next_deadline()` says when `handle_timer(now)` must next be called. The clock is always a parameter.

Graceful restart (RFC 4724): when a session with a peer that advertised the capability ends without a
NOTIFICATION (its TCP connection is lost), its routes are kept as stale for the restart time it
advertised; the session coming back and sending End-of-RIB drops whatever is still stale, and so does the
stale timer expiring. A hold timer expiry or a NOTIFICATION withdraws everything at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from podnet.overlay.bgp import messages as m

# RFC 4271 10 suggests 4 minutes of hold time while waiting for the peer's OPEN.
OPEN_HOLD_TIME = 240.0
NO_HOLD = 0


class State(IntEnum):
    IDLE = 1
    CONNECT = 2
    ACTIVE = 3
    OPEN_SENT = 4
    OPEN_CONFIRM = 5
    ESTABLISHED = 6


class Event(IntEnum):
    START = 1
    START_PASSIVE = 2
    STOP = 3
    CONNECT_RETRY_EXPIRED = 4
    HOLD_EXPIRED = 5
    KEEPALIVE_DUE = 6
    STALE_EXPIRED = 7
    TCP_CONNECTED = 8
    TCP_FAILED = 9
    OPEN_RECEIVED = 10
    KEEPALIVE_RECEIVED = 11
    UPDATE_RECEIVED = 12
    NOTIFICATION_RECEIVED = 13
    ROUTE_REFRESH_RECEIVED = 14


class Timer(IntEnum):
    CONNECT_RETRY = 1
    HOLD = 2
    KEEPALIVE = 3
    IDLE_HOLD = 4  # automatic restart after a session ends
    STALE = 5


# ---- actions --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class Connect:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    pass


@dataclass(frozen=True, slots=True)
class SessionUp:
    peer_open: m.Open
    hold_time: int


@dataclass(frozen=True, slots=True)
class SessionDown:
    reason: str


@dataclass(frozen=True, slots=True)
class RoutesReceived:
    """Prefixes announced with `attributes`, and prefixes withdrawn (treat-as-withdraw included)."""

    announced: tuple[m.Prefix, ...]
    attributes: tuple[m.Attribute, ...]
    withdrawn: tuple[m.Prefix, ...]
    error: m.BgpError | None = None


@dataclass(frozen=True, slots=True)
class EndOfRib:
    pass


@dataclass(frozen=True, slots=True)
class RoutesStale:
    """Keep the peer's routes, marked stale, while it restarts."""


@dataclass(frozen=True, slots=True)
class StaleRoutesDropped:
    """Drop those of the peer's routes that are still stale."""


@dataclass(frozen=True, slots=True)
class PeerRoutesDropped:
    """Drop every route learned from the peer."""


Action = (Send | Connect | Disconnect | SessionUp | SessionDown | RoutesReceived | EndOfRib | RoutesStale
          | StaleRoutesDropped | PeerRoutesDropped)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    local_asn: int
    router_id: str
    peer_asn: int | None = None  # None: accept any, and the session is iBGP when it equals ours
    hold_time: int = 9
    connect_retry_time: float = 5.0
    idle_hold_time: float = 1.0
    graceful_restart_time: int = 0  # 0: not advertised
    passive: bool = False  # wait for the peer to connect

    def __post_init__(self) -> None:
        if self.hold_time in (1, 2) or not 0 <= self.hold_time <= 0xFFFF:
            raise ValueError(f"hold time must be 0 or 3..65535 seconds, not {self.hold_time}")
        if not 0 <= self.graceful_restart_time <= 0xFFF:
            raise ValueError(f"graceful restart time must be 0..4095 seconds, not {self.graceful_restart_time}")

    def open_message(self) -> m.Open:
        capabilities: tuple[m.Capability, ...] = (m.Multiprotocol(), m.RouteRefresh())
        if self.graceful_restart_time:
            capabilities += (m.GracefulRestart(self.graceful_restart_time),)
        return m.Open.build(self.local_asn, self.hold_time, self.router_id, capabilities)


_KEEPALIVE_BYTES = m.encode(m.KEEPALIVE)
_CEASE = m.BgpError(m.ErrorCode.CEASE, m.CeaseError.ADMINISTRATIVE_SHUTDOWN, reason="administrative shutdown")
_FSM_ERROR_SUBCODES = {State.OPEN_SENT: 1, State.OPEN_CONFIRM: 2, State.ESTABLISHED: 3}
_TIMER_EVENTS = {Timer.CONNECT_RETRY: Event.CONNECT_RETRY_EXPIRED, Timer.HOLD: Event.HOLD_EXPIRED,
                 Timer.KEEPALIVE: Event.KEEPALIVE_DUE, Timer.STALE: Event.STALE_EXPIRED}
_MESSAGE_EVENTS = {m.Open: Event.OPEN_RECEIVED, m.Keepalive: Event.KEEPALIVE_RECEIVED,
                   m.Update: Event.UPDATE_RECEIVED, m.Notification: Event.NOTIFICATION_RECEIVED,
                   m.RouteRefreshRequest: Event.ROUTE_REFRESH_RECEIVED}


class Fsm:
    """One peering. Feed it `start`, `connection_made`, `receive_data`, `connection_lost`, `handle_timer`
    and `stop`; each returns the actions to carry out, in order."""

    def __init__(self, config: SessionConfig):
        self.config = config
        self.state = State.IDLE
        self.timers: dict[Timer, float] = {}
        self.peer_open: m.Open | None = None
        self.hold_time = NO_HOLD
        self.stale = False  # the peer's routes are being kept while it restarts
        self.last_error = ""
        self.established_at: float | None = None
        self._buffer = bytearray()
        self._actions: list[Action] = []
        self._enabled = False

    # ---- inputs ----------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        self._enabled = True
        return self._run(Event.START_PASSIVE if self.config.passive else Event.START, now)

    def stop(self, now: float) -> list[Action]:
        self._enabled = False
        return self._run(Event.STOP, now)

    def connection_made(self, now: float) -> list[Action]:
        self._buffer.clear()
        return self._run(Event.TCP_CONNECTED, now)

    def connection_lost(self, now: float) -> list[Action]:
        return self._run(Event.TCP_FAILED, now)

    def receive_data(self, data: bytes, now: float) -> list[Action]:
        self._buffer += data
        actions: list[Action] = []
        while self.state >= State.OPEN_SENT:
            try:
                length = m.frame_length(self._buffer)
                if length is None or len(self._buffer) < length:
                    break
                frame = bytes(self._buffer[:length])
                del self._buffer[:length]
                message = m.decode(frame)
            except m.BgpError as error:
                self._buffer.clear()
                self._actions = []
                actions += self._fail(error, now)
                break
            actions += self._run(_MESSAGE_EVENTS[type(message)], now, message)
        return actions

    def next_deadline(self) -> float | None:
        return min(self.timers.values(), default=None)

    def handle_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        for timer, deadline in sorted(self.timers.items(), key=lambda item: item[1]):
            if deadline > now or self.timers.get(timer) != deadline:
                continue
            del self.timers[timer]
            if timer == Timer.IDLE_HOLD:
                if self._enabled and self.state == State.IDLE:
                    actions += self._run(Event.START_PASSIVE if self.config.passive else Event.START, now)
            else:
                actions += self._run(_TIMER_EVENTS[timer], now)
        return actions

    def close_session(self, error: m.BgpError, now: float) -> list[Action]:
        """The speaker ends the session for a reason of its own (a peer over its prefix limit): the
        NOTIFICATION goes out, the peer's routes are dropped, and the session starts again after the idle
        hold time."""
        self._buffer.clear()
        self._actions = []
        return self._fail(error, now)

    def announce(self, updates: list[bytes], now: float) -> list[Action]:
        """UPDATE messages for the peer: sent when the session is Established, else dropped (the whole
        table is sent again when it comes up)."""
        if self.state != State.ESTABLISHED or not updates:
            return []
        self._restart_keepalive(now)
        return [Send(data) for data in updates]

    # ---- the machine ---------------------------------------------------------------------------------

    def _run(self, event: Event, now: float, message: m.Message | None = None) -> list[Action]:
        self._actions = []
        entry = TRANSITIONS.get((self.state, event))
        if entry is None:
            if self.state in _FSM_ERROR_SUBCODES:
                return self._fail(m.BgpError(m.ErrorCode.FSM, _FSM_ERROR_SUBCODES[self.state],
                                             reason=f"unexpected {event.name} in {self.state.name}"), now)
            return []
        handler, next_state = entry
        try:
            handler(self, now, message)
        except m.BgpError as error:
            return self._fail(error, now)
        self.state = next_state
        return self._actions

    def _fail(self, error: m.BgpError, now: float) -> list[Action]:
        """A bad peer: tell it why (when it can hear us), drop the connection, go Idle."""
        if self.state >= State.OPEN_SENT:
            self._actions.append(Send(m.encode(error.notification())))
        self.last_error = error.reason
        self._session_ends(now, error.reason, graceful=False)
        self.state = State.IDLE
        return self._actions

    def _emit(self, action: Action) -> None:
        self._actions.append(action)

    def _restart_keepalive(self, now: float) -> None:
        if self.hold_time:
            self.timers[Timer.KEEPALIVE] = now + self.hold_time / 3

    def _restart_hold(self, now: float) -> None:
        if self.hold_time:
            self.timers[Timer.HOLD] = now + self.hold_time

    def _session_ends(self, now: float, reason: str, *, graceful: bool) -> None:
        """Leaves whatever state had a connection: timers, the peer's routes, automatic restart."""
        was_established = self.state == State.ESTABLISHED
        for timer in (Timer.CONNECT_RETRY, Timer.HOLD, Timer.KEEPALIVE):
            self.timers.pop(timer, None)
        if self.state >= State.CONNECT:
            self._emit(Disconnect())
        if was_established:
            self._emit(SessionDown(reason))
            self.established_at = None
            restart = self.peer_open.capability(m.GracefulRestart) if self.peer_open else None
            if graceful and self.config.graceful_restart_time and restart and restart.restart_time:
                if not self.stale:
                    self.stale = True
                    self._emit(RoutesStale())
                self.timers[Timer.STALE] = now + restart.restart_time
            else:
                self._drop_stale_timer()
                self._emit(PeerRoutesDropped())
        self.hold_time = NO_HOLD
        if self._enabled:
            self.timers[Timer.IDLE_HOLD] = now + self.config.idle_hold_time

    def _drop_stale_timer(self) -> None:
        self.stale = False
        self.timers.pop(Timer.STALE, None)

    # Handlers: each carries out one transition's actions; raising BgpError takes the error path instead.

    def _connect(self, now: float, message: m.Message | None) -> None:
        self.timers.pop(Timer.IDLE_HOLD, None)
        self.timers[Timer.CONNECT_RETRY] = now + self.config.connect_retry_time
        self._emit(Connect())

    def _wait(self, now: float, message: m.Message | None) -> None:
        self.timers.pop(Timer.IDLE_HOLD, None)

    def _retry_connect(self, now: float, message: m.Message | None) -> None:
        self._emit(Disconnect())
        self._connect(now, message)

    def _connection_failed(self, now: float, message: m.Message | None) -> None:
        self.timers[Timer.CONNECT_RETRY] = now + self.config.connect_retry_time

    def _send_open(self, now: float, message: m.Message | None) -> None:
        self.timers.pop(Timer.CONNECT_RETRY, None)
        self.timers.pop(Timer.IDLE_HOLD, None)
        self.timers[Timer.HOLD] = now + OPEN_HOLD_TIME
        self._emit(Send(m.encode(self.config.open_message())))

    def _open_lost(self, now: float, message: m.Message | None) -> None:
        self.timers.pop(Timer.HOLD, None)
        self._emit(Disconnect())
        self.timers[Timer.CONNECT_RETRY] = now + self.config.connect_retry_time

    def _receive_open(self, now: float, message: m.Message | None) -> None:
        assert isinstance(message, m.Open)
        expected = self.config.peer_asn
        if expected is not None and message.asn != expected:
            raise m.BgpError(m.ErrorCode.OPEN_MESSAGE, m.OpenError.BAD_PEER_AS, message.my_as.to_bytes(2, "big"),
                             reason=f"peer AS {message.asn}, expected {expected}")
        if message.capability(m.FourOctetAs) is None:
            raise m.BgpError(m.ErrorCode.OPEN_MESSAGE, m.OpenError.UNSUPPORTED_CAPABILITY,
                             bytes([m.CapabilityCode.FOUR_OCTET_AS, 4]) + self.config.local_asn.to_bytes(4, "big"),
                             reason="peer does not support 4-octet AS numbers")
        if message.asn == self.config.local_asn and message.router_id == self.config.router_id:
            raise m.BgpError(m.ErrorCode.OPEN_MESSAGE, m.OpenError.BAD_BGP_IDENTIFIER,
                             reason=f"peer uses our BGP identifier {message.router_id}")
        self.peer_open = message
        self.hold_time = min(self.config.hold_time, message.hold_time)
        self.timers.pop(Timer.HOLD, None)
        self._restart_hold(now)
        self._emit(Send(_KEEPALIVE_BYTES))
        self._restart_keepalive(now)

    def _establish(self, now: float, message: m.Message | None) -> None:
        self._restart_hold(now)
        self.established_at = now
        self.last_error = ""
        assert self.peer_open is not None
        if self.stale:
            restart = self.peer_open.capability(m.GracefulRestart)
            if restart is None:
                self._drop_stale_timer()
                self._emit(StaleRoutesDropped())
            else:
                # The restarted peer has its restart time again to send End-of-RIB.
                self.timers[Timer.STALE] = now + max(restart.restart_time, self.config.graceful_restart_time)
        self._emit(SessionUp(self.peer_open, self.hold_time))

    def _keepalive_received(self, now: float, message: m.Message | None) -> None:
        self._restart_hold(now)

    def _send_keepalive(self, now: float, message: m.Message | None) -> None:
        self._emit(Send(_KEEPALIVE_BYTES))
        self._restart_keepalive(now)

    def _update_received(self, now: float, message: m.Message | None) -> None:
        assert isinstance(message, m.Update)
        self._restart_hold(now)
        if message.is_end_of_rib:
            if self.stale:
                self._drop_stale_timer()
                self._emit(StaleRoutesDropped())
            self._emit(EndOfRib())
            return
        error = message.treat_as_withdraw
        if error is not None:
            self._emit(RoutesReceived((), (), message.withdrawn + message.nlri, error))
            return
        if self._is_loop(message):
            self._emit(RoutesReceived((), (), message.withdrawn + message.nlri))
            return
        self._emit(RoutesReceived(message.nlri, message.attributes, message.withdrawn))

    def _is_loop(self, update: m.Update) -> bool:
        """An eBGP route that already went through our AS is ignored (RFC 4271 9.1.2)."""
        path = update.attribute(m.AsPath)
        return isinstance(path, m.AsPath) and self.config.local_asn in path.asns

    def _route_refresh_received(self, now: float, message: m.Message | None) -> None:
        # The adapter answers a refresh by sending the whole table again, as on SessionUp.
        self._restart_hold(now)
        assert self.peer_open is not None
        self._emit(SessionUp(self.peer_open, self.hold_time))

    def _notification_received(self, now: float, message: m.Message | None) -> None:
        self.last_error = f"peer sent NOTIFICATION {message}"
        self._session_ends(now, self.last_error, graceful=False)

    def _hold_expired(self, now: float, message: m.Message | None) -> None:
        raise m.BgpError(m.ErrorCode.HOLD_TIMER_EXPIRED, reason="hold timer expired")

    def _connection_lost(self, now: float, message: m.Message | None) -> None:
        self.last_error = "connection lost"
        self._session_ends(now, self.last_error, graceful=True)

    def _stop(self, now: float, message: m.Message | None) -> None:
        if self.state >= State.OPEN_SENT:
            self._emit(Send(m.encode(_CEASE.notification())))
        self._session_ends(now, "stopped", graceful=False)
        self.timers.clear()
        if self.stale:
            self.stale = False
            self._emit(PeerRoutesDropped())

    def _stale_expired(self, now: float, message: m.Message | None) -> None:
        if self.stale:
            self.stale = False
            self._emit(StaleRoutesDropped())

    def _ignore(self, now: float, message: m.Message | None) -> None:
        pass


Handler = Callable[[Fsm, float, "m.Message | None"], None]

S, E = State, Event
TRANSITIONS: dict[tuple[State, Event], tuple[Handler, State]] = {
    (S.IDLE, E.START): (Fsm._connect, S.CONNECT),
    (S.IDLE, E.START_PASSIVE): (Fsm._wait, S.ACTIVE),
    # An incoming connection while waiting to restart is taken at once rather than refused.
    (S.IDLE, E.TCP_CONNECTED): (Fsm._send_open, S.OPEN_SENT),
    (S.IDLE, E.STOP): (Fsm._stop, S.IDLE),
    (S.CONNECT, E.CONNECT_RETRY_EXPIRED): (Fsm._retry_connect, S.CONNECT),
    (S.CONNECT, E.TCP_CONNECTED): (Fsm._send_open, S.OPEN_SENT),
    (S.CONNECT, E.TCP_FAILED): (Fsm._connection_failed, S.ACTIVE),
    (S.CONNECT, E.STOP): (Fsm._stop, S.IDLE),
    (S.ACTIVE, E.CONNECT_RETRY_EXPIRED): (Fsm._connect, S.CONNECT),
    (S.ACTIVE, E.TCP_CONNECTED): (Fsm._send_open, S.OPEN_SENT),
    (S.ACTIVE, E.TCP_FAILED): (Fsm._connection_failed, S.ACTIVE),
    (S.ACTIVE, E.STOP): (Fsm._stop, S.IDLE),
    (S.OPEN_SENT, E.OPEN_RECEIVED): (Fsm._receive_open, S.OPEN_CONFIRM),
    (S.OPEN_SENT, E.TCP_FAILED): (Fsm._open_lost, S.ACTIVE),
    (S.OPEN_SENT, E.HOLD_EXPIRED): (Fsm._hold_expired, S.IDLE),
    (S.OPEN_SENT, E.NOTIFICATION_RECEIVED): (Fsm._notification_received, S.IDLE),
    (S.OPEN_SENT, E.STOP): (Fsm._stop, S.IDLE),
    (S.OPEN_CONFIRM, E.KEEPALIVE_RECEIVED): (Fsm._establish, S.ESTABLISHED),
    (S.OPEN_CONFIRM, E.KEEPALIVE_DUE): (Fsm._send_keepalive, S.OPEN_CONFIRM),
    (S.OPEN_CONFIRM, E.HOLD_EXPIRED): (Fsm._hold_expired, S.IDLE),
    (S.OPEN_CONFIRM, E.TCP_FAILED): (Fsm._connection_lost, S.IDLE),
    (S.OPEN_CONFIRM, E.NOTIFICATION_RECEIVED): (Fsm._notification_received, S.IDLE),
    (S.OPEN_CONFIRM, E.STOP): (Fsm._stop, S.IDLE),
    (S.ESTABLISHED, E.KEEPALIVE_RECEIVED): (Fsm._keepalive_received, S.ESTABLISHED),
    (S.ESTABLISHED, E.UPDATE_RECEIVED): (Fsm._update_received, S.ESTABLISHED),
    (S.ESTABLISHED, E.ROUTE_REFRESH_RECEIVED): (Fsm._route_refresh_received, S.ESTABLISHED),
    (S.ESTABLISHED, E.KEEPALIVE_DUE): (Fsm._send_keepalive, S.ESTABLISHED),
    (S.ESTABLISHED, E.HOLD_EXPIRED): (Fsm._hold_expired, S.IDLE),
    (S.ESTABLISHED, E.TCP_FAILED): (Fsm._connection_lost, S.IDLE),
    (S.ESTABLISHED, E.NOTIFICATION_RECEIVED): (Fsm._notification_received, S.IDLE),
    (S.ESTABLISHED, E.STOP): (Fsm._stop, S.IDLE),
    # The stale timer of a restarting peer runs whatever state the new session is in.
    **{(state, E.STALE_EXPIRED): (Fsm._stale_expired, state) for state in State},
    # A connect-retry timer that fires after the connection came up is late, not an error.
    **{(state, E.CONNECT_RETRY_EXPIRED): (Fsm._ignore, state)
       for state in (S.IDLE, S.OPEN_SENT, S.OPEN_CONFIRM, S.ESTABLISHED)},
}
del S, E
