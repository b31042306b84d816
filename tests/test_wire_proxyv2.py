"""PROXY protocol v2: golden bytes laid out from the specification, detection from partial input,
round trips and fuzzing."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.wire import proxyv2
from podnet.overlay.wire.proxyv2 import Command, Family, ProxyHeader, Transport

from podnet.codec import DecodeError

# Laid out by hand from proxy-protocol.txt 2.2: a TCP/IPv4 client 127.0.0.1:56324 that reached 127.0.1.5:80.
GOLDEN_TCP4 = bytes.fromhex("0d0a0d0a000d0a515549540a2111000c7f0000017f000105dc040050")
# A LOCAL command (health check) with no addresses.
GOLDEN_LOCAL = bytes.fromhex("0d0a0d0a000d0a515549540a20000000")


def test_golden_tcp4_decodes_and_re_encodes():
    header = proxyv2.decode(GOLDEN_TCP4)
    assert header == ProxyHeader(
        Command.PROXY, Family.INET, Transport.STREAM, "127.0.0.1", "127.0.1.5", 56324, 80
    )
    assert proxyv2.encode(header) == GOLDEN_TCP4
    assert proxyv2.proxy_inet(Transport.STREAM, ("127.0.0.1", 56324), ("127.0.1.5", 80)) == GOLDEN_TCP4


def test_golden_local_and_tlvs():
    assert proxyv2.decode(GOLDEN_LOCAL) == ProxyHeader(Command.LOCAL)
    with_tlv = ProxyHeader(
        Command.PROXY,
        Family.INET,
        Transport.DGRAM,
        "10.0.0.1",
        "10.0.0.2",
        1,
        2,
        ((0x04, b""), (0x02, b"lb.example")),
    )
    data = proxyv2.encode(with_tlv)
    assert proxyv2.header_length(data) == len(data) == 16 + 12 + 3 + 3 + 10
    assert proxyv2.decode(data) == with_tlv


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        (b"", None),
        (b"\r\n\r\n", None),
        (GOLDEN_TCP4[:11], None),
        (GOLDEN_TCP4[:12], True),
        (GOLDEN_TCP4 + b"GET / HTTP/1.1\r\n", True),
        (b"GET / HTTP/1.1\r\n", False),
        (b"\r\nX", False),
    ],
)
def test_detect_from_partial_input(data, expect):
    assert proxyv2.detect(data) is expect


@pytest.mark.parametrize(
    "data",
    [
        GOLDEN_TCP4[:15],  # too short to know the length
        b"X" + GOLDEN_TCP4[1:],  # signature
        GOLDEN_TCP4[:12] + b"\x11" + GOLDEN_TCP4[13:],  # version 1 in the binary form
        GOLDEN_TCP4[:12] + b"\x2f" + GOLDEN_TCP4[13:],  # unknown command
        GOLDEN_TCP4[:13] + b"\x51" + GOLDEN_TCP4[14:],  # unknown family
        GOLDEN_TCP4[:14] + b"\x00\x08" + GOLDEN_TCP4[16:24],  # INET needs 12 bytes
        GOLDEN_TCP4[:-1],  # shorter than it says
        GOLDEN_TCP4[:14] + b"\x00\x0e" + GOLDEN_TCP4[16:] + b"\x01\x00",  # truncated TLV
        GOLDEN_TCP4[:14] + b"\x00\x0f" + GOLDEN_TCP4[16:] + b"\x01\x00\x05",  # TLV overruns
    ],
)
def test_bad_headers_are_decode_errors(data):
    with pytest.raises(DecodeError):
        proxyv2.decode(data)


ports = st.integers(0, 65535)
tlvs = st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=40)), max_size=4).map(tuple)


def proxied(family: Family, version: int) -> st.SearchStrategy[ProxyHeader]:
    """PROXY headers of `family` with any transport, addresses of IP `version`, ports and TLVs."""
    addresses = st.ip_addresses(v=version).map(str)
    return st.builds(
        ProxyHeader,
        st.just(Command.PROXY),
        st.just(family),
        st.sampled_from(Transport),
        addresses,
        addresses,
        ports,
        ports,
        tlvs,
    )


@settings(deadline=None, max_examples=200)
@given(
    st.one_of(
        proxied(Family.INET, 4),
        proxied(Family.INET6, 6),
        st.builds(
            ProxyHeader, st.just(Command.LOCAL), st.just(Family.UNSPEC), st.just(Transport.UNSPEC), tlvs=tlvs
        ),
    )
)
def test_round_trip(header):
    data = proxyv2.encode(header)
    assert proxyv2.detect(data) is True and proxyv2.header_length(data) == len(data)
    assert proxyv2.decode(data) == header


@settings(deadline=None, max_examples=500)
@given(st.binary(max_size=64), st.integers(0, 255), st.integers(0, 255))
def test_fuzzed_input_is_a_header_or_a_decode_error(tail, version_command, family_transport):
    data = (
        proxyv2.SIGNATURE + bytes([version_command, family_transport]) + len(tail).to_bytes(2, "big") + tail
    )
    try:
        proxyv2.decode(data)
    except DecodeError:
        pass
