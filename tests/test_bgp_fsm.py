"""The BGP FSM and RIB without sockets: two FSMs joined in memory under a fake clock, every byte one
sends decoded by the other."""

from __future__ import annotations

from collections import deque

import pytest
from podnet.overlay.bgp import fsm as f
from podnet.overlay.bgp import messages as m
from podnet.overlay.bgp.rib import PeerInfo, Rib

ASN = 64512


def config(router_id: str, **overrides) -> f.SessionConfig:
    values = {"local_asn": ASN, "router_id": router_id, "peer_asn": ASN, "hold_time": 9,
              "connect_retry_time": 5.0, "idle_hold_time": 1.0}
    values.update(overrides)
    return f.SessionConfig(**values)


class Pair:
    """Two FSMs and a wire between them; `connected` says whether the wire is up."""

    def __init__(self, a: f.SessionConfig, b: f.SessionConfig):
        self.a, self.b = f.Fsm(a), f.Fsm(b)
        self.now = 0.0
        self.actions: dict[f.Fsm, list[f.Action]] = {self.a: [], self.b: []}
        self.connected = False

    def other(self, side: f.Fsm) -> f.Fsm:
        return self.b if side is self.a else self.a

    def deliver(self, side: f.Fsm, actions: list[f.Action], *more: tuple[f.Fsm, list[f.Action]]) -> None:
        """Carries out actions in order, as TCP would: what each side sends arrives in sending order."""
        queue = deque((s, action) for s, batch in ((side, actions), *more) for action in batch)
        while queue:
            source, action = queue.popleft()
            self.actions[source].append(action)
            if isinstance(action, f.Send) and self.connected:
                peer = self.other(source)
                queue.extend((peer, a) for a in peer.receive_data(action.data, self.now))
            elif isinstance(action, f.Disconnect) and self.connected:
                self.connected = False
                peer = self.other(source)
                queue.extend((peer, a) for a in peer.connection_lost(self.now))

    def connect(self) -> None:
        self.connected = True
        first, second = self.a.connection_made(self.now), self.b.connection_made(self.now)
        self.deliver(self.a, first, (self.b, second))

    def advance(self, seconds: float, *, frozen: f.Fsm | None = None) -> None:
        """Moves the clock, firing timers in order; a `frozen` side's timers do not run (SIGSTOP)."""
        end = self.now + seconds
        for _ in range(10_000):
            sides = [s for s in (self.a, self.b) if s is not frozen and s.next_deadline() is not None]
            due = min(sides, key=lambda s: s.next_deadline(), default=None)
            if due is None or due.next_deadline() > end:
                break
            self.now = max(self.now, due.next_deadline())
            self.deliver(due, due.handle_timer(self.now))
        self.now = end

    def of(self, side: f.Fsm, kind: type) -> list:
        return [a for a in self.actions[side] if isinstance(a, kind)]

    def sent(self, side: f.Fsm) -> list[m.Message]:
        return [m.decode(a.data) for a in self.of(side, f.Send)]


def established_pair(**overrides) -> Pair:
    pair = Pair(config("10.0.0.1", **overrides), config("10.0.0.2", **overrides))
    pair.deliver(pair.a, pair.a.start(0))
    pair.deliver(pair.b, pair.b.start(0))
    assert pair.a.state == f.State.CONNECT and pair.of(pair.a, f.Connect)
    pair.connect()
    assert pair.a.state == pair.b.state == f.State.ESTABLISHED
    return pair


def test_establishment_exchanges_open_and_keepalive_and_negotiates_the_smaller_hold_time():
    pair = Pair(config("10.0.0.1", hold_time=9), config("10.0.0.2", hold_time=30))
    pair.deliver(pair.a, pair.a.start(0))
    pair.deliver(pair.b, pair.b.start(0))
    pair.connect()
    assert pair.a.state == pair.b.state == f.State.ESTABLISHED
    first = pair.sent(pair.a)[:2]
    assert isinstance(first[0], m.Open) and first[0].asn == ASN and first[0].hold_time == 9
    assert first[1] == m.KEEPALIVE
    assert pair.a.hold_time == pair.b.hold_time == 9
    up = pair.of(pair.b, f.SessionUp)[0]
    assert up.peer_open.router_id == "10.0.0.1" and up.hold_time == 9
    assert pair.b.timers[f.Timer.KEEPALIVE] == pytest.approx(3.0)


def test_keepalives_keep_the_session_up():
    pair = established_pair()
    pair.advance(60)
    assert pair.a.state == pair.b.state == f.State.ESTABLISHED
    assert len([x for x in pair.sent(pair.a) if x == m.KEEPALIVE]) >= 60 // 3


def test_hold_timer_expiry_sends_notification_4_and_drops_the_routes():
    pair = established_pair()
    update = m.encode(m.Update(attributes=(m.OriginAttribute(m.Origin.IGP), m.AsPath(), m.NextHop("10.0.0.2")),
                               nlri=(m.Prefix.parse("10.244.2.0/24"),)))
    pair.deliver(pair.a, pair.a.receive_data(update, pair.now))
    assert pair.of(pair.a, f.RoutesReceived)[0].announced == (m.Prefix.parse("10.244.2.0/24"),)
    pair.connected = False  # the peer goes silent, as under SIGSTOP
    pair.advance(9.5, frozen=pair.b)
    assert pair.a.state == f.State.IDLE
    notification = m.decode(pair.of(pair.a, f.Send)[-1].data)
    assert notification == m.Notification(m.ErrorCode.HOLD_TIMER_EXPIRED, 0)
    assert pair.of(pair.a, f.PeerRoutesDropped) and not pair.of(pair.a, f.RoutesStale)
    assert pair.of(pair.a, f.SessionDown)[0].reason == "hold timer expired"


@pytest.mark.parametrize("hold", [1, 2])
def test_an_open_with_hold_time_1_or_2_is_refused_with_notification_2_6(hold):
    pair = Pair(config("10.0.0.1"), config("10.0.0.2"))
    pair.deliver(pair.a, pair.a.start(0))
    pair.connected = True
    pair.deliver(pair.a, pair.a.connection_made(0))
    bad_open = m.encode(m.Open.build(ASN, 9, "10.0.0.2")).replace(b"\x00\x09", hold.to_bytes(2, "big"), 1)
    pair.connected = False
    actions = pair.a.receive_data(bad_open, 0)
    assert m.decode(actions[0].data) == m.Notification(2, 6)
    assert pair.a.state == f.State.IDLE and isinstance(actions[1], f.Disconnect)
    with pytest.raises(ValueError):
        config("10.0.0.1", hold_time=hold)


def test_hold_time_zero_means_no_keepalives_and_no_hold_timer():
    pair = established_pair(hold_time=0)
    assert f.Timer.HOLD not in pair.a.timers and f.Timer.KEEPALIVE not in pair.a.timers
    pair.advance(1000)
    assert pair.a.state == f.State.ESTABLISHED


def test_open_errors_wrong_peer_as_and_our_own_identifier():
    pair = Pair(config("10.0.0.1", peer_asn=65000), config("10.0.0.2"))
    pair.deliver(pair.a, pair.a.start(0))
    pair.connect()
    notification = next(x for x in pair.sent(pair.a) if isinstance(x, m.Notification))
    assert (notification.code, notification.subcode) == (2, 2) and pair.a.state == f.State.IDLE
    same = Pair(config("10.0.0.1"), config("10.0.0.1"))
    same.connect()
    notification = next(x for x in same.sent(same.a) if isinstance(x, m.Notification))
    assert (notification.code, notification.subcode) == (2, 3)


def test_an_update_before_established_is_an_fsm_error():
    pair = Pair(config("10.0.0.1"), config("10.0.0.2"))
    pair.deliver(pair.a, pair.a.connection_made(0))
    actions = pair.a.receive_data(m.encode(m.END_OF_RIB), 0)
    assert m.decode(actions[0].data) == m.Notification(m.ErrorCode.FSM, 1)


def test_bad_marker_is_connection_not_synchronized():
    pair = established_pair()
    actions = pair.a.receive_data(b"\x00" * 16 + b"\x00\x13\x04", 1)
    assert m.decode(actions[0].data) == m.Notification(1, 1)
    assert pair.a.state == f.State.IDLE


def test_treat_as_withdraw_keeps_the_session():
    pair = established_pair()
    bad_origin = m.encode(m.Update(attributes=(m.OtherAttribute(1, b"\x07", m.WELL_KNOWN), m.AsPath(),
                                               m.NextHop("10.0.0.2")), nlri=(m.Prefix.parse("10.244.2.0/24"),)))
    actions = pair.a.receive_data(bad_origin, 1)
    (received,) = [a for a in actions if isinstance(a, f.RoutesReceived)]
    assert received.announced == () and received.withdrawn == (m.Prefix.parse("10.244.2.0/24"),)
    assert received.error.subcode == m.UpdateError.INVALID_ORIGIN
    assert pair.a.state == f.State.ESTABLISHED and not any(isinstance(a, f.Send) for a in actions)


def test_graceful_restart_keeps_routes_stale_until_end_of_rib():
    pair = established_pair(graceful_restart_time=30)
    pair.connected = False
    pair.now = 10
    pair.deliver(pair.a, pair.a.connection_lost(10))  # the peer was killed: no NOTIFICATION
    assert pair.of(pair.a, f.RoutesStale) and not pair.of(pair.a, f.PeerRoutesDropped)
    assert pair.a.stale and pair.a.timers[f.Timer.STALE] == 40
    pair.b = f.Fsm(config("10.0.0.2", graceful_restart_time=30))  # the restarted peer
    pair.actions[pair.b] = []
    pair.now = 12
    pair.connect()
    assert pair.a.state == f.State.ESTABLISHED and pair.a.stale
    pair.deliver(pair.a, pair.a.receive_data(m.encode(m.END_OF_RIB), 13))
    assert pair.of(pair.a, f.StaleRoutesDropped) and pair.of(pair.a, f.EndOfRib)
    assert not pair.a.stale and f.Timer.STALE not in pair.a.timers


def test_graceful_restart_stale_timer_expires_the_routes():
    pair = established_pair(graceful_restart_time=30)
    pair.connected = False
    pair.now = 10
    pair.deliver(pair.a, pair.a.connection_lost(10))
    pair.advance(29)
    assert not pair.of(pair.a, f.StaleRoutesDropped)
    pair.advance(2)
    assert pair.of(pair.a, f.StaleRoutesDropped) and not pair.a.stale


def test_without_graceful_restart_a_lost_connection_drops_the_routes_and_restarts():
    pair = established_pair()
    pair.connected = False
    pair.now = 10
    pair.deliver(pair.a, pair.a.connection_lost(10))
    assert pair.of(pair.a, f.PeerRoutesDropped) and pair.a.state == f.State.IDLE
    pair.advance(1.5)
    assert pair.a.state == f.State.CONNECT and len(pair.of(pair.a, f.Connect)) == 2


def test_stop_sends_cease():
    pair = established_pair()
    pair.deliver(pair.a, pair.a.stop(5))
    assert pair.b.state == f.State.IDLE and pair.a.state == f.State.IDLE
    assert m.Notification(6, 2) in pair.sent(pair.a)
    assert pair.of(pair.b, f.PeerRoutesDropped)
    pair.advance(100)
    assert pair.a.state == f.State.IDLE and not pair.a.timers


def test_every_transition_names_a_handler_and_a_state():
    for (state, event), (handler, target) in f.TRANSITIONS.items():
        assert isinstance(state, f.State) and isinstance(event, f.Event) and isinstance(target, f.State)
        assert callable(handler)


# ---- RIB ------------------------------------------------------------------------------------------

P = m.Prefix.parse("10.244.9.0/24")


def attrs(*asns: int, next_hop: str = "10.0.0.9", local_pref: int | None = None, med: int | None = None):
    out: tuple = (m.OriginAttribute(m.Origin.IGP), m.AsPath.sequence(*asns), m.NextHop(next_hop))
    if local_pref is not None:
        out += (m.LocalPref(local_pref),)
    if med is not None:
        out += (m.MultiExitDisc(med),)
    return out


IBGP_1 = PeerInfo("10.0.0.1", ASN, "10.0.0.1", True)
IBGP_2 = PeerInfo("10.0.0.2", ASN, "10.0.0.2", True)
EBGP_3 = PeerInfo("10.0.0.3", 65003, "10.0.0.3", False)
EBGP_4 = PeerInfo("10.0.0.4", 65004, "10.0.0.4", False)


@pytest.mark.parametrize(("first", "second", "winner"), [
    ((IBGP_1, attrs(local_pref=200)), (IBGP_2, attrs(local_pref=100)), "10.0.0.1"),
    ((IBGP_2, attrs(local_pref=300)), (IBGP_1, attrs(local_pref=100)), "10.0.0.2"),
    ((EBGP_3, attrs(65003, 1)), (EBGP_4, attrs(65004)), "10.0.0.4"),
    ((EBGP_3, attrs(65003, med=10)), (EBGP_4, attrs(65004, med=5)), "10.0.0.3"),  # MEDs of different ASes
    ((EBGP_3, attrs(65003)), (IBGP_2, attrs(65003)), "10.0.0.3"),  # eBGP over iBGP
    ((IBGP_2, attrs()), (IBGP_1, attrs()), "10.0.0.1"),  # lowest router id
])
def test_best_path_selection(first, second, winner):
    rib = Rib(ASN, "10.0.0.100")
    rib.receive(first[0], [P], first[1], [], 1)
    changes = rib.receive(second[0], [P], second[1], [], 2)
    assert rib.best[P].peer == winner
    assert bool(changes) == (winner == second[0].address)


def test_med_compared_within_one_neighbour_as():
    rib = Rib(ASN, "10.0.0.100")
    other = PeerInfo("10.0.0.5", 65003, "10.0.0.5", False)
    rib.receive(EBGP_3, [P], attrs(65003, med=10), [], 1)
    rib.receive(other, [P], attrs(65003, med=5), [], 1)
    assert rib.best[P].peer == "10.0.0.5"


def test_locally_originated_route_wins_and_withdrawal_falls_back():
    rib = Rib(ASN, "10.0.0.100")
    rib.receive(IBGP_1, [P], attrs(), [], 1)
    (change,) = rib.originate(P, "10.0.0.100", 2)
    assert change.new.local and change.old.peer == "10.0.0.1"
    rib.stop_originating(P)
    assert rib.best[P].peer == "10.0.0.1"
    (change,) = rib.receive(IBGP_1, [], (), [P], 3)
    assert change.new is None and P not in rib.best


def test_stale_routes_survive_until_dropped():
    rib = Rib(ASN, "10.0.0.100")
    other = m.Prefix.parse("10.244.10.0/24")
    rib.receive(IBGP_1, [P, other], attrs(), [], 1)
    rib.mark_stale("10.0.0.1")
    assert rib.best[P].stale
    rib.receive(IBGP_1, [P], attrs(), [], 5)  # re-announced after the restart
    (change,) = rib.drop_stale("10.0.0.1")
    assert change.prefix == other and change.new is None
    assert not rib.best[P].stale
    assert [c.prefix for c in rib.drop_peer("10.0.0.1")] == [P]


def test_a_passive_session_waits_for_the_peer_to_connect():
    pair = Pair(config("10.0.0.2", passive=True), config("10.0.0.1"))
    pair.deliver(pair.a, pair.a.start(0))
    assert pair.a.state == f.State.ACTIVE and not pair.of(pair.a, f.Connect) and not pair.a.timers
    pair.deliver(pair.b, pair.b.start(0))
    pair.connect()
    assert pair.a.state == pair.b.state == f.State.ESTABLISHED
    pair.connected = False
    pair.now = 5
    pair.deliver(pair.a, pair.a.connection_lost(5))
    pair.advance(1.5)
    assert pair.a.state == f.State.ACTIVE and not pair.of(pair.a, f.Connect)
