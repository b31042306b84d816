"""The pipeline's per-packet header check agrees with the checksum module and the IPv4 codec."""

from hypothesis import given, settings
from hypothesis import strategies as st
from podnet.overlay.pipeline.packets import header_problem
from podnet.overlay.wire import ipv4
from podnet.overlay.wire.checksum import internet_checksum

from podnet.codec import DecodeError


def _with_checksum(header: bytearray) -> bytearray:
    """`header` (its IHL read from byte 0) with a correct header checksum, when it is long enough."""
    ihl = (header[0] & 0x0F) * 4 if header else 0
    if 20 <= ihl <= len(header):
        header[10:12] = b"\x00\x00"
        header[10:12] = internet_checksum(header[:ihl]).to_bytes(2, "big")
    return header


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=64), st.booleans(), st.sampled_from([None, 0x45, 0x46, 0x4F, 0x44, 0x65]))
def test_header_problem_agrees_with_checksum_and_codec(data, fix_checksum, version_ihl):
    packet = bytearray(data)
    if version_ihl is not None and packet:
        packet[0] = version_ihl
    if len(packet) >= 8 and fix_checksum:  # a consistent length and no fragment: mostly a good header
        packet[2:4] = len(packet).to_bytes(2, "big")
        packet[6] &= 0xC0
        packet[7] = 0
    if fix_checksum:
        packet = _with_checksum(packet)
    packet = bytes(packet)
    problem = header_problem(packet)

    ihl = (packet[0] & 0x0F) * 4 if packet else 0
    if len(packet) < 20:
        assert problem == "short-ip-packet"
    elif packet[0] >> 4 != 4 or ihl < 20:
        assert problem == "not-ipv4"
    elif not ihl <= int.from_bytes(packet[2:4], "big") <= len(packet):
        assert problem == "bad-ip-length"
    elif internet_checksum(packet[:ihl]):
        assert problem == "bad-ip-checksum"
    elif int.from_bytes(packet[6:8], "big") & 0x3FFF:
        assert problem == "ip-fragment"
    elif int.from_bytes(packet[2:4], "big") - ihl < {6: 20, 17: 8}.get(packet[9], 0):
        assert problem == "truncated-transport-header"  # TCP or UDP without room for its header
    else:
        assert problem is None
        try:
            ipv4.decode(packet)
        except DecodeError as error:  # the codec alone refuses the reserved flag
            assert "reserved" in str(error)


def test_header_problem_of_encoded_packets():
    packet = bytearray(ipv4.encode(ipv4.IPv4Packet("10.244.1.2", "10.244.2.3", 17, bytes(12))))
    assert header_problem(bytes(packet)) is None
    assert header_problem(bytes(packet) + bytes(4)) is None  # link padding past the total length
    packet[8] -= 1  # TTL changed, checksum not
    assert header_problem(bytes(packet)) == "bad-ip-checksum"
