from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.pipeline.conntrack import (
    ACK,
    FIN,
    RST,
    SYN,
    Conntrack,
    Direction,
    State,
    Timeouts,
    reverse,
)

A, B, SVC, EP = 0x0AF40102, 0x0AF40203, 0x0A60000A, 0x0AF40309
KEY = (6, A, 40000, B, 80)


def test_reply_finds_the_entry_and_establishes_it():
    ct = Conntrack()
    entry = ct.create(KEY, reverse(KEY), now=0.0)
    assert ct.lookup(KEY, 1.0) == (entry, Direction.ORIGINAL)
    hit = ct.lookup(reverse(KEY), 1.0)
    assert hit == (entry, Direction.REPLY)
    ct.update(entry, Direction.REPLY, SYN | ACK, 1.0)
    assert entry.state is State.ESTABLISHED
    assert entry.expires == 1.0 + Timeouts().tcp_established
    assert not entry.natted


def test_natted_entry_is_found_by_the_endpoint_reply():
    ct = Conntrack()
    original = (17, A, 5353, SVC, 53)
    reply = (17, EP, 53, A, 5353)
    entry = ct.create(original, reply, 0.0, "DNAT")
    assert entry.natted
    assert ct.lookup((17, EP, 53, A, 5353), 0.5)[1] is Direction.REPLY
    assert ct.lookup((17, A, 5353, EP, 53), 0.5) is None  # the post-NAT forward tuple is not a key


def test_entries_expire_by_protocol_and_state():
    ct = Conntrack(timeouts=Timeouts(udp_new=30, tcp_closing=10))
    udp = ct.create((17, A, 1, B, 2), reverse((17, A, 1, B, 2)), 0.0)
    tcp = ct.create(KEY, reverse(KEY), 0.0)
    ct.update(tcp, Direction.REPLY, ACK, 1.0)
    ct.update(tcp, Direction.ORIGINAL, FIN | ACK, 2.0)
    assert tcp.state is State.ESTABLISHED
    ct.update(tcp, Direction.REPLY, FIN | ACK, 3.0)
    assert tcp.state is State.CLOSING
    assert ct.lookup((17, A, 1, B, 2), 31.0) is None
    assert udp not in ct.entries()
    assert ct.expire(13.5) == 1
    assert len(ct) == 0


def test_rst_closes_and_forget_removes_both_keys():
    ct = Conntrack()
    entry = ct.create(KEY, reverse(KEY), 0.0)
    ct.update(entry, Direction.REPLY, RST, 0.1)
    assert entry.state is State.CLOSING
    ct.forget(reverse(KEY))
    assert ct.lookup(KEY, 0.2) is None and len(ct) == 0


def test_full_table_refuses_and_counts_and_clashing_reply_is_refused():
    ct = Conntrack(max_entries=2)
    assert ct.create(KEY, reverse(KEY), 0.0)
    assert ct.create((6, A, 40001, B, 80), reverse((6, A, 40001, B, 80)), 0.0)
    assert ct.create((6, A, 40002, B, 80), reverse((6, A, 40002, B, 80)), 0.0) is None
    assert ct.dropped_full == 1
    # once the first entries expire there is room again
    assert ct.create((6, A, 40002, B, 80), reverse((6, A, 40002, B, 80)), 500.0) is not None
    clash = Conntrack()
    clash.create((17, A, 9, SVC, 53), (17, EP, 53, A, 9), 0.0)
    assert clash.create((17, A, 9, EP, 53), (17, EP, 53, A, 9), 0.0) is None


@settings(deadline=None)
@given(
    st.sampled_from([1, 6, 17]),
    st.lists(
        st.tuples(
            st.sampled_from(list(Direction)), st.sampled_from([0, ACK, SYN, SYN | ACK, FIN | ACK, RST])
        ),
        max_size=12,
    ),
)
def test_every_update_leaves_the_state_and_deadline_the_rules_give(protocol, packets):
    """The per-packet shortcut (no flags, no first reply: only count and extend) agrees with the rules
    applied in full to every packet."""
    timeouts = Timeouts(udp_new=3, udp_established=5, tcp_new=7, tcp_established=11, tcp_closing=13, icmp=17)
    ct = Conntrack(timeouts=timeouts)
    key = (protocol, A, 40000, B, 80)
    entry = ct.create(key, reverse(key), 0.0)
    state, fins, counts = State.NEW, 0, [0, 0]
    for now, (direction, flags) in enumerate(packets, start=1):
        flags = flags if protocol == 6 else 0  # only TCP packets carry flags into conntrack
        ct.update(entry, direction, flags, float(now))
        counts[direction] += 1
        if direction is Direction.REPLY and state is State.NEW:
            state = State.ESTABLISHED
        if flags & RST:
            state = State.CLOSING
        elif flags & FIN:
            fins |= 1 << direction
            state = State.CLOSING if fins == 3 else state
        assert (entry.state, entry.packets) == (state, counts)
        assert entry.expires == now + timeouts.for_entry(protocol, state)


def test_udp_entries_to_an_endpoint_that_no_longer_serves_are_cleared():
    """As kube-proxy's cleanup: only UDP, only to a service address:port given, only when the reply comes
    from none of its serving endpoints; what is not a known service address is left alone."""
    ct = Conntrack()
    other_ep = 0x0AF40310
    gone = ct.create((17, A, 5353, SVC, 53), (17, EP, 53, A, 5353), 0.0)
    kept = ct.create((17, A, 5354, SVC, 53), (17, other_ep, 53, A, 5354), 0.0)
    tcp = ct.create((6, A, 40001, SVC, 53), (6, EP, 53, A, 40001), 0.0)
    other_port = ct.create((17, A, 5355, SVC, 5353), (17, EP, 5353, A, 5355), 0.0)
    direct = ct.create((17, A, 5356, EP, 53), (17, EP, 53, A, 5356), 0.0)
    assert ct.clear_stale_udp({(SVC, 53): {other_ep}}) == 1
    assert ct.lookup(gone.original, 1.0) is None and ct.lookup(gone.reply, 1.0) is None
    assert all(ct.lookup(e.original, 1.0) for e in (kept, tcp, other_port, direct))
    assert ct.clear_stale_udp({}) == 0
