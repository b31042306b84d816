"""TCP MSS clamping (what Linux's `TCPMSS --clamp-mss-to-pmtu` does on a router): a SYN that announces a
maximum segment size larger than the path can carry gets its MSS option lowered, so neither end sends a
segment the tunnel would have to drop. Only SYNs carry the option, so only they are rewritten; every
other packet comes back as it was, the same object.
"""

from __future__ import annotations

from .addresses import bytes_to_ip
from .checksum import internet_checksum, pseudo_header_sum

_TCP = 6
_SYN = 0x02
_END, _NOP, _MSS = 0, 1, 2


def clamp_mss(packet: bytes, limit: int) -> bytes:
    """The IPv4 `packet`, its TCP SYN's MSS option lowered to `limit` if it was above (checksum redone)."""
    if len(packet) < 20 or packet[9] != _TCP:
        return packet
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl + 20 or not packet[ihl + 13] & _SYN:
        return packet
    end = min(ihl + (packet[ihl + 12] >> 4) * 4, len(packet))
    at = ihl + 20
    while at < end:
        kind = packet[at]
        if kind == _END:
            return packet
        if kind == _NOP:
            at += 1
            continue
        if at + 1 >= end or packet[at + 1] < 2 or at + packet[at + 1] > end:
            return packet  # a malformed option list is the receiver's to judge, not ours to rewrite
        if kind == _MSS and packet[at + 1] == 4:
            if int.from_bytes(packet[at + 2 : at + 4], "big") <= limit:
                return packet
            buf = bytearray(packet)
            buf[at + 2 : at + 4] = limit.to_bytes(2, "big")
            buf[ihl + 16 : ihl + 18] = b"\x00\x00"
            initial = pseudo_header_sum(bytes_to_ip(packet[12:16]), bytes_to_ip(packet[16:20]), _TCP, len(packet) - ihl)
            buf[ihl + 16 : ihl + 18] = internet_checksum(buf[ihl:], initial).to_bytes(2, "big")
            return bytes(buf)
        at += packet[at + 1]
    return packet
