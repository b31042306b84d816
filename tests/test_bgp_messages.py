"""BGP messages: golden bytes from BIRD, error codes for bad input, round trips and fuzzing.

The golden constants were captured with tests/data/bgp/capture_bird.py (BIRD 2.0.12): BIRD on 127.0.0.42,
AS 64513, with static routes 10.244.7.0/24 and 10.244.8.0/24 (the latter with community (64513,7)) and an
eBGP session to a plain listening socket on 127.0.0.41 (AS 64512) that answered with a hand-written OPEN and
KEEPALIVE. A second connection answered BIRD's OPEN with hold time 2, and BIRD refused it.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from podnet.overlay.bgp import fsm as f
from podnet.overlay.bgp import messages as m

# BIRD's OPEN: version 4, AS 64513, hold 9, id 127.0.0.42; capabilities multiprotocol IPv4 unicast,
# route refresh, graceful restart 120 s for IPv4 unicast, 4-octet AS 64513, enhanced route refresh (70)
# and long-lived graceful restart (71), both unknown to podnet and kept as bytes.
BIRD_OPEN = ("ffffffffffffffffffffffffffffffff00390104fc0100097f00002a1c021a0104000100010200400600780001010041040000"
             "fc0146004700")
BIRD_KEEPALIVE = "ffffffffffffffffffffffffffffffff001304"
# 10.244.8.0/24: ORIGIN IGP, AS_PATH (64513), NEXT_HOP 127.0.0.42, COMMUNITY 64513:7 (optional transitive).
BIRD_UPDATE_COMMUNITY = ("ffffffffffffffffffffffffffffffff0036020000001b4001010040020602010000fc014003047f00002ac00804"
                         "fc010007180af408")
# 10.244.7.0/24: ORIGIN IGP, AS_PATH (64513), NEXT_HOP 127.0.0.42.
BIRD_UPDATE = ("ffffffffffffffffffffffffffffffff002f02000000144001010040020602010000fc014003047f00002a180af407")
BIRD_END_OF_RIB = "ffffffffffffffffffffffffffffffff00170200000000"
# BIRD refusing hold time 2: OPEN message error / unacceptable hold time, data = the hold time it got.
BIRD_NOTIFICATION = "ffffffffffffffffffffffffffffffff00170302060002"

BIRD_PATH = (m.OriginAttribute(m.Origin.IGP), m.AsPath.sequence(64513), m.NextHop("127.0.0.42"))


@pytest.mark.parametrize(("hex_bytes", "expected"), [
    (BIRD_OPEN, m.Open(64513, 9, "127.0.0.42", (
        m.Multiprotocol(1, 1), m.RouteRefresh(), m.GracefulRestart(120, False, ((1, 1, 0),)), m.FourOctetAs(64513),
        m.UnknownCapability(70, b""), m.UnknownCapability(71, b"")))),
    (BIRD_KEEPALIVE, m.KEEPALIVE),
    (BIRD_UPDATE_COMMUNITY, m.Update(attributes=BIRD_PATH + (m.OtherAttribute(8, bytes.fromhex("fc010007"), 0xC0),),
                                     nlri=(m.Prefix.parse("10.244.8.0/24"),))),
    (BIRD_UPDATE, m.Update(attributes=BIRD_PATH, nlri=(m.Prefix.parse("10.244.7.0/24"),))),
    (BIRD_END_OF_RIB, m.END_OF_RIB),
    (BIRD_NOTIFICATION, m.Notification(2, 6, b"\x00\x02")),
], ids=["open", "keepalive", "update-community", "update", "end-of-rib", "notification"])
def test_bird_golden_bytes_decode_and_reencode_identically(hex_bytes, expected):
    raw = bytes.fromhex(hex_bytes)
    decoded = m.decode(raw)
    assert decoded == expected
    assert m.encode(decoded) == raw


def test_bird_open_reads_as_bird_meant_it():
    bird_open = m.decode(bytes.fromhex(BIRD_OPEN))
    assert bird_open.asn == 64513 and bird_open.capability(m.GracefulRestart).restart_time == 120
    assert m.decode(bytes.fromhex(BIRD_END_OF_RIB)).is_end_of_rib


def test_four_octet_asn_uses_as_trans_in_the_two_octet_field():
    message = m.Open.build(4200000001, 9, "10.0.0.1", (m.Multiprotocol(),))
    raw = m.encode(message)
    assert raw[20:22] == (23456).to_bytes(2, "big")
    assert m.decode(raw).asn == 4200000001


def test_as_path_with_set_and_sequence():
    path = m.AsPath(((m.SegmentType.AS_SEQUENCE, (64512, 4200000001)), (m.SegmentType.AS_SET, (1, 2, 3))))
    update = m.Update(attributes=(m.OriginAttribute(m.Origin.EGP), path, m.NextHop("10.0.0.1"), m.MultiExitDisc(7),
                                  m.LocalPref(200)), nlri=(m.Prefix.parse("10.0.0.0/8"), m.Prefix.parse("0.0.0.0/0")),
                      withdrawn=(m.Prefix.parse("192.168.1.128/25"),))
    assert m.decode(m.encode(update)) == update
    assert path.length == 3 and str(path) == "64512 4200000001 {1,2,3}" and path.first_as == 64512


def header(kind: int, body: bytes, length: int | None = None) -> bytes:
    return m.MARKER + (length if length is not None else 19 + len(body)).to_bytes(2, "big") + bytes([kind]) + body


ORIGIN, AS_PATH, NEXT_HOP = "40010100", "400200", "4003040a000001"
NLRI = "180af402"


def update(attributes_hex: str, nlri_hex: str = NLRI) -> bytes:
    attributes = bytes.fromhex(attributes_hex)
    return header(2, b"\x00\x00" + len(attributes).to_bytes(2, "big") + attributes + bytes.fromhex(nlri_hex))


@pytest.mark.parametrize(("raw", "code", "subcode"), [
    (b"\xfe" + m.MARKER[1:] + b"\x00\x13\x04", 1, 1),
    (header(4, b"", 18), 1, 2),
    (header(4, b"\x00"), 1, 2),
    (header(4, b"", 5000), 1, 2),
    (header(9, b""), 1, 3),
    (header(1, bytes.fromhex("03fc0000097f00000100")), 2, 1),
    (header(1, bytes.fromhex("04fc0000017f00000100")), 2, 6),
    (header(1, bytes.fromhex("04fc0000097f0000010403020000")), 2, 4),
    (header(1, bytes.fromhex("04fc0000090000000000")), 2, 3),
    (update("", "21000000000000"), 3, 10),
    (header(2, bytes.fromhex("0005000000")), 3, 1),
    (update(ORIGIN + AS_PATH + NEXT_HOP + "00ff0100"), 3, 2),
], ids=["marker", "short", "keepalive-long", "too-long", "type", "version", "hold-2", "param", "bgp-id",
        "nlri", "withdrawn-overrun", "unknown-well-known"])
def test_errors_carry_the_notification_to_send(raw, code, subcode):
    with pytest.raises(m.BgpError) as caught:
        m.decode(raw)
    assert (caught.value.code, caught.value.subcode) == (code, subcode)
    assert m.decode(m.encode(caught.value.notification())) == m.Notification(code, subcode, caught.value.data)


@pytest.mark.parametrize(("attributes", "subcode"), [
    ("40010103" + AS_PATH + NEXT_HOP, m.UpdateError.INVALID_ORIGIN),
    ("c0010100" + AS_PATH + NEXT_HOP, m.UpdateError.ATTRIBUTE_FLAGS_ERROR),
    ("4001020000" + AS_PATH + NEXT_HOP, m.UpdateError.ATTRIBUTE_LENGTH_ERROR),
    (ORIGIN + "4002030201ff" + NEXT_HOP, m.UpdateError.MALFORMED_AS_PATH),
    (ORIGIN + AS_PATH + "40030400000000", m.UpdateError.INVALID_NEXT_HOP),
    (ORIGIN + AS_PATH, m.UpdateError.MISSING_WELL_KNOWN_ATTRIBUTE),
    (ORIGIN + AS_PATH + NEXT_HOP + "800404000000", m.UpdateError.ATTRIBUTE_LENGTH_ERROR),
    (ORIGIN + AS_PATH + "400309", m.UpdateError.ATTRIBUTE_LENGTH_ERROR),
], ids=["origin-value", "origin-flags", "origin-length", "as-path", "next-hop", "missing", "med", "overrun"])
def test_attribute_errors_are_treat_as_withdraw(attributes, subcode):
    decoded = m.decode(update(attributes))
    assert decoded.treat_as_withdraw is not None and decoded.treat_as_withdraw.subcode == subcode
    assert decoded.nlri == (m.Prefix.parse("10.244.2.0/24"),) and not decoded.is_end_of_rib


def test_unknown_optional_attributes():
    transitive = m.decode(update(ORIGIN + AS_PATH + NEXT_HOP + "c0630201ff"))
    assert transitive.attribute(m.OtherAttribute) == m.OtherAttribute(0x63, b"\x01\xff", 0xC0)
    non_transitive = m.decode(update(ORIGIN + AS_PATH + NEXT_HOP + "80630201ff"))
    assert non_transitive.attribute(m.OtherAttribute) is None and non_transitive.treat_as_withdraw is None


def test_repeated_attribute_keeps_the_first():
    decoded = m.decode(update(ORIGIN + "40010102" + AS_PATH + NEXT_HOP))
    assert decoded.attribute(m.OriginAttribute).origin == m.Origin.IGP and decoded.treat_as_withdraw is None


def test_build_updates_split_at_4096_bytes():
    prefixes = [m.Prefix((10 << 24) | (i << 8), 24) for i in range(3000)]
    messages = m.build_updates(BIRD_PATH, prefixes, prefixes[:1500])
    assert all(len(raw) <= 4096 for raw in messages) and len(messages) > 3
    announced, withdrawn = set(), set()
    for raw in messages:
        decoded = m.decode(raw)
        announced |= set(decoded.nlri)
        withdrawn |= set(decoded.withdrawn)
        assert not decoded.nlri or decoded.attributes == BIRD_PATH
    assert announced == set(prefixes) and withdrawn == set(prefixes[:1500])


def test_frame_length_waits_for_a_whole_header():
    raw = bytes.fromhex(BIRD_UPDATE)
    assert m.frame_length(raw[:18]) is None and m.frame_length(raw[:19]) == len(raw)


# ---- properties ---------------------------------------------------------------------------------

prefixes = st.builds(lambda address, length: m.Prefix(address & ((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF), length),
                     st.integers(0, 2**32 - 1), st.integers(0, 32))
asns = st.integers(0, 2**32 - 1)
segments = st.tuples(st.sampled_from(list(m.SegmentType)), st.lists(asns, min_size=1, max_size=5).map(tuple))
addresses = st.tuples(st.integers(1, 223), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)).map(
    lambda t: ".".join(map(str, t)))
updates = st.builds(
    lambda withdrawn, nlri, origin, path, hop, med, pref: m.Update(
        tuple(withdrawn), (m.OriginAttribute(origin), m.AsPath(tuple(path)), m.NextHop(hop))
        + ((m.MultiExitDisc(med),) if med is not None else ()) + ((m.LocalPref(pref),) if pref is not None else ()),
        tuple(nlri)),
    st.lists(prefixes, max_size=20), st.lists(prefixes, min_size=1, max_size=20), st.sampled_from(list(m.Origin)),
    st.lists(segments, max_size=3), addresses, st.none() | st.integers(0, 2**32 - 1),
    st.none() | st.integers(0, 2**32 - 1))
opens = st.builds(
    lambda asn, hold, rid, restart: m.Open.build(asn, hold, rid, (m.Multiprotocol(), m.RouteRefresh())
                                                 + ((m.GracefulRestart(restart),) if restart else ())),
    asns, st.just(0) | st.integers(3, 65535), addresses, st.integers(0, 4095))


@given(updates)
def test_update_round_trip(update_message):
    assert m.decode(m.encode(update_message)) == update_message


@given(opens)
def test_open_round_trip(open_message):
    decoded = m.decode(m.encode(open_message))
    assert decoded == open_message and decoded.asn == open_message.asn


SEEDS = [bytes.fromhex(h) for h in (BIRD_OPEN, BIRD_KEEPALIVE, BIRD_UPDATE_COMMUNITY, BIRD_UPDATE, BIRD_END_OF_RIB,
                                    BIRD_NOTIFICATION)]


@st.composite
def mutated(draw):
    raw = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "truncate", "insert", "length"]))
        position = draw(st.integers(0, max(0, len(raw) - 1)))
        if action == "flip" and raw:
            raw[position] ^= draw(st.integers(1, 255))
        elif action == "truncate":
            del raw[position:]
        elif action == "insert":
            raw[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif len(raw) >= 18:
            raw[16:18] = len(raw).to_bytes(2, "big")  # keep the header length consistent, so the body is fuzzed
    return bytes(raw)


@settings(max_examples=700, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_fuzzed_messages_decode_or_raise_bgp_error_only(raw):
    try:
        decoded = m.decode(raw)
    except m.BgpError as error:
        assert 1 <= error.code <= 6
        assert m.decode(m.encode(error.notification())).code == error.code
        return
    if isinstance(decoded, m.Update) and decoded.treat_as_withdraw is None:
        assert m.decode(m.encode(decoded)) == decoded


def established_session() -> f.Fsm:
    session = f.Fsm(f.SessionConfig(64512, "127.0.0.41", peer_asn=None))
    session.start(0)
    session.connection_made(0)
    session.receive_data(bytes.fromhex(BIRD_OPEN) + bytes.fromhex(BIRD_KEEPALIVE), 0)
    assert session.state == f.State.ESTABLISHED
    return session


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_an_established_session_answers_fuzz_with_notification_or_treat_as_withdraw(raw):
    session = established_session()
    actions = session.receive_data(raw, 1)
    sent = [m.decode(a.data) for a in actions if isinstance(a, f.Send)]
    if session.state == f.State.ESTABLISHED:
        assert not sent  # kept the session: a valid message, treat-as-withdraw, or an incomplete frame
        for action in actions:
            if isinstance(action, f.RoutesReceived) and action.error is not None:
                assert action.announced == ()
    else:
        # It told the peer why, or the peer's own NOTIFICATION ended the session.
        assert [type(x) for x in sent] == [m.Notification] or (
            not sent and session.last_error.startswith("peer sent NOTIFICATION"))
        assert any(isinstance(a, f.Disconnect) for a in actions)
