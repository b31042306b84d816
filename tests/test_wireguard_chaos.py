"""Property test: whatever a lossy, duplicating, reordering wire and jumps of the clock did to two
WireGuard devices, once the wire is clean again traffic resumes: of two packets sent 15 s apart (an
application retrying), one arrives. One alone may not: a packet queued behind a handshake series that is
about to give up is dropped with it, as in wireguard-go. And no input ever raises."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_wireguard_device import A_POD, A_UNDERLAY, B_POD, B_UNDERLAY, Pair, packet

_steps = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.sampled_from("ab")),
        st.tuples(st.just("advance"), st.floats(0, 200)),
        st.tuples(st.just("deliver"), st.sampled_from(["all", "none", "reversed", "twice", "every-other"])),
    ),
    max_size=40,
)


def _wire(pair: Pair, mode: str) -> None:
    pending = [(datagram, pair.b, A_UNDERLAY) for datagram, _ in pair.a.datagrams_to_send()]
    pending += [(datagram, pair.a, B_UNDERLAY) for datagram, _ in pair.b.datagrams_to_send()]
    if mode == "none":
        chosen = []
    elif mode == "reversed":
        chosen = pending[::-1]
    elif mode == "twice":
        chosen = pending + pending
    elif mode == "every-other":
        chosen = pending[::2]
    else:
        chosen = pending
    for datagram, receiver, source in chosen:
        receiver.receive_datagram(datagram, source, pair.now)


@settings(max_examples=150, deadline=None)
@given(_steps, st.sampled_from("ab"))
def test_after_any_chaos_a_clean_wire_delivers_again(steps, sender):
    pair = Pair()
    for step in steps:
        if step[0] == "send":
            source = pair.a if step[1] == "a" else pair.b
            source.send_packet(packet(A_POD, B_POD) if step[1] == "a" else packet(B_POD, A_POD), pair.now)
        elif step[0] == "advance":
            pair.now += step[1]
            for device in (pair.a, pair.b):
                deadline = device.get_timer()
                if deadline is not None and deadline <= pair.now:
                    device.handle_timer(pair.now)
        else:
            _wire(pair, step[1])
        pair.drain()
    pair.transfer()
    receiver = "b" if sender == "a" else "a"
    before = len(pair.received(receiver))
    marker = b"after-the-storm"
    for _ in range(2):
        if sender == "a":
            pair.a.send_packet(packet(A_POD, B_POD, marker), pair.now)
        else:
            pair.b.send_packet(packet(B_POD, A_POD, marker), pair.now)
        pair.transfer()
        pair.advance(15)  # a REKEY_TIMEOUT retry with jitter, with room to spare
    delivered = [p[28:] for p in pair.received(receiver)[before:]]
    assert marker in delivered, (delivered, pair.a.counters, pair.b.counters)
