"""Two pure WireGuard devices in memory with a fake clock: handshake, transport, replay window, keepalive,
rekey, expiry, retries with jitter, cookies under load, allowed IPs and key rotation."""

from __future__ import annotations

import ipaddress
import random

import pytest
from podnet.overlay.wire import ipv4, udp
from podnet.overlay.wire.ipv4 import IPProtocol, IPv4Packet
from podnet.overlay.wireguard import device as wg
from podnet.overlay.wireguard import messages
from podnet.overlay.wireguard.device import (
    Device,
    HandshakeCompleted,
    HandshakeGaveUp,
    PacketDropped,
    PacketReceived,
)
from podnet.overlay.wireguard.replay import WINDOW_SIZE

A_UNDERLAY = ("127.0.120.1", 51871)
B_UNDERLAY = ("127.0.120.2", 51871)
A_POD = "10.120.1.5"
B_POD = "10.120.2.7"


class Pair:
    """Device a (10.120.1.0/24 behind it) and b (10.120.2.0/24) with a shared fake clock and a wire
    that can lose or tamper with datagrams."""

    def __init__(self, seed: int = 1, **b_options):
        self.now = 1000.0
        self.a = Device(random.Random(seed).randbytes(32), rng=random.Random(seed + 1))
        self.b = Device(random.Random(seed + 2).randbytes(32), rng=random.Random(seed + 3), **b_options)
        self.a.set_peer(self.b.public_key, endpoint=B_UNDERLAY, allowed_ips=("10.120.2.0/24",))
        self.b.set_peer(self.a.public_key, endpoint=A_UNDERLAY, allowed_ips=("10.120.1.0/24",))
        self.events = {"a": [], "b": []}

    def side(self, name: str) -> Device:
        return self.a if name == "a" else self.b

    def transfer(self, drop=lambda name, datagram: False) -> list[tuple[str, bytes]]:
        """Deliver every pending datagram both ways until the wire is quiet; returns what was sent."""
        sent = []
        while True:
            moved = False
            for name, sender, receiver, source, target in (
                ("a", self.a, self.b, A_UNDERLAY, B_UNDERLAY), ("b", self.b, self.a, B_UNDERLAY, A_UNDERLAY)
            ):
                for datagram, destination in sender.datagrams_to_send():
                    assert destination == target
                    moved = True
                    sent.append((name, datagram))
                    if not drop(name, datagram):
                        receiver.receive_datagram(datagram, source, self.now)
            self.drain()
            if not moved:
                return sent

    def drain(self) -> None:
        for name in ("a", "b"):
            while (event := self.side(name).next_event()) is not None:
                self.events[name].append(event)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing each device's timers in deadline order as a loop would."""
        target = self.now + seconds
        while True:
            due = [d for d in (self.a.get_timer(), self.b.get_timer()) if d is not None and d <= target]
            if not due:
                break
            self.now = max(self.now, min(due))
            self.a.handle_timer(self.now)
            self.b.handle_timer(self.now)
            self.transfer()
        self.now = target

    def received(self, name: str) -> list[bytes]:
        return [e.packet for e in self.events[name] if isinstance(e, PacketReceived)]

    def dropped(self, name: str) -> list[str]:
        return [e.reason for e in self.events[name] if isinstance(e, PacketDropped)]


def packet(src: str, dst: str, payload: bytes = b"hello") -> bytes:
    datagram = udp.encode(udp.UdpDatagram(5000, 6000, payload), src, dst)
    return ipv4.encode(IPv4Packet(src, dst, IPProtocol.UDP, datagram))


def transports(sent: list[tuple[str, bytes]], name: str) -> list[bytes]:
    return [d for n, d in sent if n == name and d[0] == messages.MessageType.TRANSPORT]


@pytest.fixture
def pair() -> Pair:
    return Pair()


def connected(pair: Pair) -> Pair:
    pair.a.send_packet(packet(A_POD, B_POD, b"first"), pair.now)
    pair.transfer()
    return pair


def test_first_packet_is_held_during_the_handshake_then_delivered_exactly(pair):
    original = packet(A_POD, B_POD, b"first")
    pair.a.send_packet(original, pair.now)
    sent = pair.transfer()
    kinds = [(name, datagram[0], len(datagram)) for name, datagram in sent]
    assert kinds[:2] == [("a", 1, 148), ("b", 2, 92)]
    assert kinds[2][:2] == ("a", 4)
    assert pair.received("b") == [original]
    assert HandshakeCompleted(pair.a.public_key, False) in pair.events["b"]
    assert HandshakeCompleted(pair.b.public_key, True) in pair.events["a"]
    reply = packet(B_POD, A_POD, b"reply")
    pair.b.send_packet(reply, pair.now)
    pair.transfer()
    assert pair.received("a") == [reply]


def test_transport_counters_count_up_and_payload_is_padded_to_16(pair):
    connected(pair)
    sent = []
    for i in range(3):
        pair.a.send_packet(packet(A_POD, B_POD, b"x" * i), pair.now)
        sent += pair.transfer()
    frames = [messages.decode(d) for d in transports(sent, "a")]
    assert [f.counter for f in frames] == [1, 2, 3]
    assert all(len(f.encrypted_packet) % 16 == 0 for f in frames)
    assert [p[28:] for p in pair.received("b")[1:]] == [b"", b"x", b"xx"]


def test_a_replayed_transport_message_is_dropped_and_traffic_goes_on(pair):
    connected(pair)
    pair.a.send_packet(packet(A_POD, B_POD, b"once"), pair.now)
    datagram = transports(pair.transfer(), "a")[0]
    pair.b.receive_datagram(datagram, A_UNDERLAY, pair.now)
    pair.drain()
    assert pair.dropped("b") == ["replay"]
    assert pair.b.counters["dropped-replay"] == 1
    pair.a.send_packet(packet(A_POD, B_POD, b"after"), pair.now)
    pair.transfer()
    assert pair.received("b")[-1][28:] == b"after"


def test_out_of_order_within_the_window_is_accepted_and_older_than_the_window_is_not(pair):
    connected(pair)
    held = []
    for _ in range(WINDOW_SIZE + 2):
        pair.a.send_packet(packet(A_POD, B_POD), pair.now)
        held += [d for d, _ in pair.a.datagrams_to_send()]
    for datagram in [held[-1], held[5], held[1], held[0]]:
        pair.b.receive_datagram(datagram, A_UNDERLAY, pair.now)
    pair.drain()
    # counters: held[i] carries i + 1; the newest is WINDOW_SIZE + 2, so counter 1 is just outside.
    assert len(pair.received("b")) == 1 + 3
    assert pair.dropped("b") == ["replay"]


def test_a_flipped_byte_fails_authentication_and_the_session_survives(pair):
    connected(pair)
    pair.a.send_packet(packet(A_POD, B_POD, b"bad"), pair.now)
    datagram = bytearray(pair.a.datagrams_to_send()[0][0])
    datagram[-20] ^= 0x01
    pair.b.receive_datagram(bytes(datagram), A_UNDERLAY, pair.now)
    pair.drain()
    assert pair.dropped("b") == ["authentication"]
    pair.a.send_packet(packet(A_POD, B_POD, b"good"), pair.now)
    pair.transfer()
    assert pair.received("b")[-1][28:] == b"good"


def test_a_source_outside_the_peers_allowed_ips_is_dropped(pair):
    connected(pair)
    pair.b.send_packet(packet("10.99.9.9", A_POD), pair.now)  # b routes by destination; a checks the source
    pair.transfer()
    assert pair.received("a") == []
    assert pair.dropped("a") == ["source-not-allowed"]


def test_a_destination_without_a_peer_is_dropped_without_a_handshake(pair):
    pair.a.send_packet(packet(A_POD, "192.0.2.1"), pair.now)
    pair.drain()
    assert pair.a.datagrams_to_send() == []
    assert pair.dropped("a") == ["no-peer-for-destination"]


def test_passive_keepalive_after_keepalive_timeout_of_silence(pair):
    connected(pair)
    pair.advance(wg.KEEPALIVE_TIMEOUT - 0.1)
    assert pair.b.counters.get("keepalive-sent", 0) == 0
    pair.advance(0.2)
    assert pair.b.counters["keepalive-sent"] == 1
    assert pair.a.counters["keepalive-received"] >= 1
    pair.advance(60)
    assert pair.b.counters["keepalive-sent"] == 1  # owed once per received data, not periodically


def test_replying_within_keepalive_timeout_makes_the_keepalive_unnecessary(pair):
    connected(pair)
    pair.advance(3)
    pair.b.send_packet(packet(B_POD, A_POD), pair.now)
    pair.transfer()
    pair.advance(20)
    assert pair.b.counters.get("keepalive-sent", 0) == 0


def test_initiator_rekeys_after_rekey_after_time_and_old_session_still_decrypts(pair):
    connected(pair)
    old = pair.a.peers[pair.b.public_key].current
    pair.now += wg.REKEY_AFTER_TIME
    pair.a.send_packet(packet(A_POD, B_POD, b"on-old-key"), pair.now)
    in_flight = pair.a.datagrams_to_send()
    assert [d[0] for d, _ in in_flight] == [4, 1]  # the packet goes on the old key, then a new handshake
    late = in_flight[0][0]
    for datagram, _ in in_flight[1:]:
        pair.b.receive_datagram(datagram, A_UNDERLAY, pair.now)
    pair.transfer()
    peer = pair.a.peers[pair.b.public_key]
    assert peer.current is not old and peer.previous is old
    pair.b.receive_datagram(late, A_UNDERLAY, pair.now)  # delayed packet from the old session
    pair.drain()
    assert pair.received("b")[-1][28:] == b"on-old-key"
    assert pair.a.counters["handshake-completed"] == 2
    assert pair.a.counters["rekey-started"] == 1 and "rekey-started" not in pair.b.counters


def test_responder_does_not_rekey_on_time_so_the_peers_do_not_race(pair):
    connected(pair)
    pair.now += wg.REKEY_AFTER_TIME + 1
    pair.b.send_packet(packet(B_POD, A_POD), pair.now)
    assert [d[0] for d, _ in pair.b.datagrams_to_send()] == [4]


def test_initiator_rekeys_after_rekey_after_messages(pair):
    connected(pair)
    pair.a.peers[pair.b.public_key].current.send_counter = wg.REKEY_AFTER_MESSAGES
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    assert [d[0] for d, _ in pair.a.datagrams_to_send()] == [4, 1]


def test_a_session_past_reject_after_messages_is_not_used(pair):
    connected(pair)
    pair.a.peers[pair.b.public_key].current.send_counter = wg.REJECT_AFTER_MESSAGES
    pair.a.send_packet(packet(A_POD, B_POD, b"held"), pair.now)
    assert [d[0] for d, _ in pair.a.datagrams_to_send()] == [1]


def test_after_reject_after_time_a_session_neither_sends_nor_receives(pair):
    connected(pair)
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    stale = pair.a.datagrams_to_send()[0][0]
    pair.now += wg.REJECT_AFTER_TIME
    pair.b.receive_datagram(stale, A_UNDERLAY, pair.now)
    pair.drain()
    assert pair.dropped("b") == ["expired-session"]
    pair.a.send_packet(packet(A_POD, B_POD, b"fresh"), pair.now)
    sent = pair.transfer()
    assert [d[0] for n, d in sent if n == "a"][:2] == [1, 4]  # re-handshake first, then the held packet
    assert pair.received("b")[-1][28:] == b"fresh"


def test_keys_are_zeroed_after_three_reject_after_times_without_a_handshake(pair):
    connected(pair)
    pair.advance(3 * wg.REJECT_AFTER_TIME + 1)
    assert pair.a.peers[pair.b.public_key].keypairs() == ()
    assert pair.b.peers[pair.a.public_key].keypairs() == ()


def test_handshake_is_retried_every_rekey_timeout_plus_jitter_then_given_up(pair):
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    start = pair.now
    initiations = []
    while pair.now - start < wg.REKEY_ATTEMPT_TIME + 10:
        initiations += [pair.now for d, _ in pair.a.datagrams_to_send() if d[0] == 1]
        deadline = pair.a.get_timer()
        if deadline is None:
            break
        pair.now = deadline
        pair.a.handle_timer(pair.now)
    gaps = [b - a for a, b in zip(initiations, initiations[1:], strict=False)]
    assert len(initiations) == 18  # at 0, then each ~5 s until REKEY_ATTEMPT_TIME has passed
    assert all(wg.REKEY_TIMEOUT <= gap < wg.REKEY_TIMEOUT + wg.REKEY_TIMEOUT_JITTER for gap in gaps)
    assert len(set(round(gap, 6) for gap in gaps)) > 1  # jittered, not lock-step
    pair.drain()
    assert pair.events["a"][-1] == HandshakeGaveUp(pair.b.public_key, 1)
    assert pair.b.counters == {}


def test_a_handshake_completes_when_the_first_initiations_are_lost(pair):
    pair.a.send_packet(packet(A_POD, B_POD, b"patient"), pair.now)
    lost = {"count": 0}

    def lose_two(name, datagram):
        if datagram[0] == 1 and lost["count"] < 2:
            lost["count"] += 1
            return True
        return False

    pair.transfer(drop=lose_two)
    for _ in range(2):
        pair.now = pair.a.get_timer()
        pair.a.handle_timer(pair.now)
        pair.transfer(drop=lose_two)
    assert [p[28:] for p in pair.received("b")] == [b"patient"]


def test_a_replayed_initiation_is_refused_by_its_timestamp(pair):
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    initiation = pair.a.datagrams_to_send()[0][0]
    pair.b.receive_datagram(initiation, A_UNDERLAY, pair.now)
    pair.b.receive_datagram(initiation, A_UNDERLAY, pair.now + 1)
    pair.drain()
    assert pair.dropped("b") == ["replayed-initiation"]
    assert pair.b.counters["handshake-response-sent"] == 1


def test_an_initiation_with_a_bad_mac1_or_from_an_unknown_key_gets_no_answer(pair):
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    initiation = bytearray(pair.a.datagrams_to_send()[0][0])
    initiation[120] ^= 1
    pair.b.receive_datagram(bytes(initiation), A_UNDERLAY, pair.now)
    stranger = Device(bytes(range(32)), rng=random.Random(9))
    stranger.set_peer(pair.b.public_key, endpoint=B_UNDERLAY, allowed_ips=("10.120.2.0/24",))
    stranger.send_packet(packet(A_POD, B_POD), pair.now)
    pair.b.receive_datagram(stranger.datagrams_to_send()[0][0], ("127.0.120.9", 1), pair.now)
    pair.drain()
    assert pair.dropped("b") == ["bad-mac1", "unknown-peer"]
    assert pair.b.datagrams_to_send() == []


def test_under_load_a_cookie_reply_is_sent_and_the_retry_with_mac2_is_answered():
    pair = Pair(handshakes_under_load=0)
    pair.a.send_packet(packet(A_POD, B_POD, b"under-load"), pair.now)
    sent = pair.transfer()
    assert [(n, d[0], len(d)) for n, d in sent] == [("a", 1, 148), ("b", 3, 64)]
    assert pair.a.counters["cookie-reply-received"] == 1
    assert sent[0][1][-16:] == bytes(16)  # no cookie yet: mac2 is zero
    pair.now = pair.a.get_timer()
    pair.a.handle_timer(pair.now)
    sent = pair.transfer()
    assert sent[0][1][0] == 1 and sent[0][1][-16:] != bytes(16)
    assert [p[28:] for p in pair.received("b")] == [b"under-load"]
    assert pair.b.counters["cookie-reply-sent"] == 1


def test_a_cookie_is_tied_to_the_source_address():
    pair = Pair(handshakes_under_load=0)
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    pair.transfer()
    pair.now = pair.a.get_timer()
    pair.a.handle_timer(pair.now)
    retry = pair.a.datagrams_to_send()[0][0]
    pair.b.receive_datagram(retry, ("127.0.120.3", 51871), pair.now)  # same message, another address
    assert [d[0] for d, _ in pair.b.datagrams_to_send()] == [3]


def test_simultaneous_initiations_both_complete_without_a_retransmission(pair):
    pair.a.send_packet(packet(A_POD, B_POD, b"from-a"), pair.now)
    pair.b.send_packet(packet(B_POD, A_POD, b"from-b"), pair.now)
    pair.transfer()
    assert [p[28:] for p in pair.received("a")] == [b"from-b"]
    assert [p[28:] for p in pair.received("b")] == [b"from-a"]
    for device in (pair.a, pair.b):
        assert device.counters["handshake-completed"] == 1 and "handshake-retransmitted" not in device.counters
    pair.a.send_packet(packet(A_POD, B_POD, b"again-a"), pair.now)
    pair.b.send_packet(packet(B_POD, A_POD, b"again-b"), pair.now)
    pair.transfer()
    assert [p[28:] for p in pair.received("a")] == [b"from-b", b"again-b"]
    assert [p[28:] for p in pair.received("b")] == [b"from-a", b"again-a"]


def test_persistent_keepalive_is_sent_on_its_interval():
    pair = Pair()
    pair.a.set_peer(pair.b.public_key, endpoint=B_UNDERLAY, allowed_ips=("10.120.2.0/24",),
                    persistent_keepalive=25, now=pair.now)
    connected(pair)
    before = pair.a.counters.get("keepalive-sent", 0)
    # b's passive keepalive at +10 s is the last traffic; a then speaks every 25 s: +35, +60, +85.
    pair.advance(25 * 4 + 1)
    assert pair.a.counters["keepalive-sent"] - before == 3
    pair.advance(10)
    assert pair.a.counters["keepalive-sent"] - before == 4


def test_the_responder_uses_a_new_session_only_once_the_initiator_confirmed_it(pair):
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    initiation = pair.a.datagrams_to_send()[0][0]
    pair.b.receive_datagram(initiation, A_UNDERLAY, pair.now)
    peer = pair.b.peers[pair.a.public_key]
    assert peer.current is None and peer.next is not None
    pair.a.receive_datagram(pair.b.datagrams_to_send()[0][0], B_UNDERLAY, pair.now)
    for datagram, _ in pair.a.datagrams_to_send():
        pair.b.receive_datagram(datagram, A_UNDERLAY, pair.now)
    assert peer.next is None and peer.current is not None


def test_set_peer_reconfigures_without_dropping_the_session_and_remove_peer_forgets_it(pair):
    connected(pair)
    session = pair.b.peers[pair.a.public_key].current
    pair.b.set_peer(pair.a.public_key, allowed_ips=("10.120.3.0/24",))
    assert pair.b.peers[pair.a.public_key].current is session
    assert pair.b.peers[pair.a.public_key].endpoint == A_UNDERLAY
    pair.a.send_packet(packet(A_POD, B_POD, b"old-range"), pair.now)
    pair.transfer()
    assert pair.dropped("b") == ["source-not-allowed"]
    pair.b.send_packet(packet(B_POD, "10.120.3.1"), pair.now)
    assert [d[0] for d, _ in pair.b.datagrams_to_send()] == [4]
    pair.b.remove_peer(pair.a.public_key)
    pair.a.send_packet(packet(A_POD, B_POD), pair.now)
    pair.transfer()
    assert pair.dropped("b")[-1] == "unknown-receiver"
    pair.b.send_packet(packet(B_POD, "10.120.3.1"), pair.now)
    pair.drain()
    assert pair.dropped("b")[-1] == "no-peer-for-destination"


def test_cryptokey_routing_picks_the_longest_allowed_prefix():
    device = Device(bytes(range(32)), rng=random.Random(1))
    wide, narrow = bytes([1] * 32), bytes([2] * 32)
    device.set_peer(wide, allowed_ips=("10.0.0.0/8", "fd00::/8"))
    device.set_peer(narrow, allowed_ips=("10.120.0.0/16",))
    assert device.peer_for(4, int.from_bytes(bytes([10, 120, 1, 1]), "big")).public_key == narrow
    assert device.peer_for(4, int.from_bytes(bytes([10, 1, 1, 1]), "big")).public_key == wide
    assert device.peer_for(6, 0xFD << 120).public_key == wide
    assert device.peer_for(4, int.from_bytes(bytes([192, 0, 2, 1]), "big")) is None


def test_a_reused_counter_with_a_different_authentic_payload_is_rejected(pair):
    connected(pair)
    pair.a.send_packet(packet(A_POD, B_POD, b"counter-1"), pair.now)
    pair.transfer()
    keypair = pair.a.peers[pair.b.public_key].current
    forged = keypair.sender.seal(1, packet(A_POD, B_POD, b"again-1").ljust(48, b"\0"))
    pair.b.receive_datagram(messages.encode_transport(keypair.keys.remote_index, 1, forged), A_UNDERLAY, pair.now)
    pair.drain()
    assert pair.dropped("b") == ["replay"]
    assert [p[28:] for p in pair.received("b")] == [b"first", b"counter-1"]


def test_the_initiator_rehandshakes_on_receive_when_its_session_nears_reject_after_time(pair):
    connected(pair)
    pair.now += wg.REJECT_AFTER_TIME - wg.KEEPALIVE_TIMEOUT - wg.REKEY_TIMEOUT
    pair.b.send_packet(packet(B_POD, A_POD), pair.now)  # the responder keeps using the session...
    for datagram, _ in pair.b.datagrams_to_send():
        pair.a.receive_datagram(datagram, B_UNDERLAY, pair.now)
    assert [d[0] for d, _ in pair.a.datagrams_to_send()] == [1]  # ...and the initiator renews it


def test_ipv6_packets_cross_and_their_source_is_checked_against_ipv6_allowed_ips():
    pair = Pair()
    pair.a.set_peer(pair.b.public_key, endpoint=B_UNDERLAY, allowed_ips=("10.120.2.0/24", "fd00:120:2::/64"))
    pair.b.set_peer(pair.a.public_key, endpoint=A_UNDERLAY, allowed_ips=("10.120.1.0/24", "fd00:120:1::/64"))

    def ipv6(src: str, dst: str, payload: bytes) -> bytes:
        header = bytes([0x60, 0, 0, 0]) + len(payload).to_bytes(2, "big") + bytes([59, 64])
        return header + ipaddress.IPv6Address(src).packed + ipaddress.IPv6Address(dst).packed + payload

    good = ipv6("fd00:120:1::5", "fd00:120:2::7", b"six")
    pair.a.send_packet(good, pair.now)
    pair.transfer()
    assert pair.received("b") == [good]  # the padding added for encryption is gone again
    pair.a.send_packet(ipv6("fd00:999::5", "fd00:120:2::7", b"spoofed"), pair.now)
    pair.transfer()
    assert pair.dropped("b") == ["source-not-allowed"]


def _cut(sealed: wg.Sealed) -> list[bytes]:
    out, offset = [], 0
    for size in sealed.sizes:
        out.append(bytes(sealed.data[offset : offset + size]))
        offset += size
    return out


def test_a_batch_is_sealed_byte_for_byte_as_its_packets_one_by_one():
    packets = [packet(A_POD, B_POD, b"x" * n) for n in (0, 1, 3, 100, 1372, 1372, 7)] + [b""]  # and a keepalive
    one_by_one, batched = connected(Pair()), connected(Pair())  # same seeds: the same session keys
    for each in packets:
        one_by_one.a.send_to_peer(one_by_one.b.public_key, each, one_by_one.now)
    expected = [d for d, _ in one_by_one.a.datagrams_to_send()]
    sealed = batched.a.send_packets_to_peer(batched.b.public_key, packets, batched.now)
    assert sealed is not None and batched.a.datagrams_to_send() == []
    assert sealed.endpoint == B_UNDERLAY and _cut(sealed) == expected
    assert [len(d) for d in expected] == sealed.sizes and all(size % 16 == 0 for size in sealed.sizes)
    assert batched.a.counters == one_by_one.a.counters
    assert batched.a.peers[batched.b.public_key].tx_bytes == one_by_one.a.peers[one_by_one.b.public_key].tx_bytes


def test_a_batch_is_opened_as_its_datagrams_one_by_one_with_the_same_drops():
    pair = connected(Pair())
    sent = pair.a.send_packets_to_peer(pair.b.public_key, [packet(A_POD, B_POD, bytes([n]) * n) for n in range(6)],
                                       pair.now)
    datagrams = _cut(sent)
    tampered = bytearray(datagrams[2])
    tampered[-1] ^= 1
    pair.a.send_packet(packet("10.99.9.9", B_POD), pair.now)  # a routes by destination; b checks the source
    spoofed = [d for d, _ in pair.a.datagrams_to_send()]
    wire = [datagrams[0], datagrams[1], bytes(tampered), datagrams[3], datagrams[1], b"\x09garbage", datagrams[4],
            *spoofed, datagrams[5], datagrams[2]]
    batch = pair.b.receive_datagrams([(d, A_UNDERLAY[0]) for d in wire], A_UNDERLAY[1], pair.now)
    pair.drain()
    assert [(key, [bytes(p[28:]) for p in packets]) for key, packets in batch] == [
        (pair.a.public_key, [bytes([n]) * n for n in (0, 1, 3, 4, 5, 2)])]  # one run: all from a
    assert pair.dropped("b") == ["authentication", "replay", "malformed", "source-not-allowed"]
    assert pair.received("b") == [packet(A_POD, B_POD, b"first")]  # the batch's packets came back, not as events
    assert pair.b.counters["transport-received"] == 1 + 6


def test_a_batch_without_a_session_waits_for_the_handshake_and_then_goes_in_order(pair):
    packets = [packet(A_POD, B_POD, bytes([n])) for n in range(3)]
    assert pair.a.send_packets_to_peer(pair.b.public_key, packets, pair.now) is None
    sent = pair.transfer()
    assert [(name, d[0]) for name, d in sent] == [("a", 1), ("b", 2), ("a", 4), ("a", 4), ("a", 4)]
    assert pair.received("b") == packets


def test_a_batch_that_confirms_the_responders_session_lets_its_staged_packets_go(pair):
    pair.a.send_packet(packet(A_POD, B_POD, b"first"), pair.now)
    initiation = pair.a.datagrams_to_send()
    pair.b.receive_datagram(initiation[0][0], A_UNDERLAY, pair.now)
    response = pair.b.datagrams_to_send()
    pair.a.receive_datagram(response[0][0], B_UNDERLAY, pair.now)
    from_a = [d for d, _ in pair.a.datagrams_to_send()]  # "first", on the new session
    pair.b.send_packet(packet(B_POD, A_POD, b"staged at b"), pair.now)  # b's session is not confirmed yet
    assert [d[0] for d, _ in pair.b.datagrams_to_send()] == [1]  # so b tries a handshake of its own
    received = pair.b.receive_datagrams([(d, A_UNDERLAY[0]) for d in from_a], A_UNDERLAY[1], pair.now)
    assert [(key, [bytes(p[28:]) for p in packets]) for key, packets in received] == [(pair.a.public_key, [b"first"])]
    assert [d[0] for d, _ in pair.b.datagrams_to_send()] == [4]  # confirmed: the staged packet goes
    pair.drain()
    assert HandshakeCompleted(pair.a.public_key, False) in pair.events["b"]
