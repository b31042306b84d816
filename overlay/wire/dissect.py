"""A packet laid out layer by layer, as Wireshark's packet details pane shows it, pure.

Every layer is read by its codec in this package, which checks lengths and checksums; the dissector only
chooses the next codec (by EtherType, IP protocol, UDP port) and names what the codec found the way
Wireshark does. A layer its codec refuses ends the dissection with a "Malformed Packet" layer saying why,
as Wireshark marks one. A wrong checksum does not: it is shown "[incorrect]" (Wireshark with checksum
validation on) and the layers inside are read all the same, as a capture on a host that offloads
checksums needs (the kernel's loopback leaves UDP's partial).

A UDP datagram is read as a tunnel's when one of its ports is in `tunnels` (Wireshark's "Decode As"
table: VXLAN's 4789 by default); `outer_tunnel` reads the first datagram as that tunnel's whatever its
ports, for an underlay packet known to be one.
"""

from __future__ import annotations

import string
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from podnet.codec import DecodeError

from . import arp, ethernet, icmp, ipv4, tcp, udp, vxlan
from .pcap import LinkType

VXLAN = "vxlan"
FOU = "fou"  # foo-over-UDP: the UDP payload is a bare IPv4 packet
DEFAULT_TUNNELS: Mapping[int, str] = {vxlan.PORT: VXLAN}
T = TypeVar("T")
DATA_SHOWN = 48  # bytes of a data layer shown in its field; the hex dump has them all

_U16 = struct.Struct("!H")
_ETHERTYPE_NAMES = {
    ethernet.EtherType.IPV4: "IPv4",
    ethernet.EtherType.ARP: "ARP",
    ethernet.EtherType.VLAN: "802.1Q Virtual LAN",
    ethernet.EtherType.IPV6: "IPv6",
}
_ICMP_TYPES = {
    icmp.ICMPType.ECHO_REPLY: "Echo (ping) reply",
    icmp.ICMPType.DESTINATION_UNREACHABLE: "Destination unreachable",
    icmp.ICMPType.ECHO_REQUEST: "Echo (ping) request",
    icmp.ICMPType.TIME_EXCEEDED: "Time-to-live exceeded",
}
_UNREACHABLE_CODES = {
    icmp.UnreachableCode.NETWORK: "Network unreachable",
    icmp.UnreachableCode.HOST: "Host unreachable",
    icmp.UnreachableCode.PROTOCOL: "Protocol unreachable",
    icmp.UnreachableCode.PORT: "Port unreachable",
    icmp.UnreachableCode.FRAGMENTATION_NEEDED: "Fragmentation needed",
    icmp.UnreachableCode.ADMINISTRATIVELY_PROHIBITED: "Communication administratively filtered",
}
_PRINTABLE = frozenset(string.printable.encode()) - frozenset(b"\t\n\r\x0b\x0c")


@dataclass(frozen=True, slots=True)
class Layer:
    """One protocol of the packet: its Wireshark filter name ("eth", "ip", "udp", ...), the line that
    heads it in the details pane, and its fields as (name, value) in wire order."""

    protocol: str
    title: str
    fields: tuple[tuple[str, str], ...]

    def as_dict(self) -> dict:
        return {"protocol": self.protocol, "title": self.title, "fields": [list(f) for f in self.fields]}


@dataclass(slots=True)
class _Dissection:
    tunnels: Mapping[int, str]
    outer_tunnel: str | None
    layers: list[Layer] = field(default_factory=list)


# What a layer hands on: the reader of its payload and the payload, or None when the packet ends there.
_Next = tuple[Callable[[_Dissection, bytes], "_Next"], bytes] | None


def dissect(
    data: bytes | bytearray | memoryview,
    link: LinkType = LinkType.RAW,
    *,
    tunnels: Mapping[int, str] = DEFAULT_TUNNELS,
    outer_tunnel: str | None = None,
) -> list[Layer]:
    """The layers of `data`, outermost first: an Ethernet frame (`LinkType.ETHERNET`) or an IPv4 packet
    (`LinkType.RAW`, `LinkType.IPV4`: what a pod's interface and the pipeline carry)."""
    if link == LinkType.ETHERNET:
        step: _Next = (_ethernet, bytes(data))
    elif link in (LinkType.RAW, LinkType.IPV4):
        step = (_ipv4, bytes(data))
    else:
        raise ValueError(f"no dissector for link type {link}")
    state = _Dissection(tunnels, outer_tunnel)
    while step is not None:
        reader, payload = step
        try:
            step = reader(state, payload)
        except DecodeError as exc:
            state.layers.append(Layer("_ws.malformed", f"[Malformed Packet: {exc}]", (("Error", str(exc)),)))
            break
    return state.layers


def hex_dump(data: bytes | bytearray | memoryview) -> list[str]:
    """`data` as tshark -x prints it: offset, 16 bytes in hex, the printable ones."""
    lines = []
    for offset in range(0, len(data), 16):
        row = bytes(data[offset : offset + 16])
        text = "".join(chr(b) if b in _PRINTABLE else "." for b in row)
        lines.append(f"{offset:04x}  {row.hex(' '):<47}   {text}")
    return lines


def _checked(decode: Callable[..., T], buf: bytes, *args: str) -> tuple[T, bool]:
    """(what `decode` reads of `buf`, whether the checksum in it is right)."""
    try:
        return decode(buf, *args), True
    except DecodeError:
        return decode(buf, *args, verify_checksum=False), False


def _checksum(buf: bytes, offset: int, correct: bool) -> str:
    value = _U16.unpack_from(buf, offset)[0]
    return f"{value:#06x} [{'correct' if correct else 'incorrect'}]"


def _data(state: _Dissection, buf: bytes) -> _Next:
    shown = buf[:DATA_SHOWN].hex() + ("…" if len(buf) > DATA_SHOWN else "")
    fields = (("Data", shown), ("Length", str(len(buf))))
    state.layers.append(Layer("data", f"Data ({len(buf)} bytes)", fields))
    return None


def _ethernet(state: _Dissection, buf: bytes) -> _Next:
    frame = ethernet.decode(buf)
    kind = frame.ethertype
    name = _ETHERTYPE_NAMES.get(kind, "Unknown")
    state.layers.append(Layer("eth", f"Ethernet II, Src: {frame.src}, Dst: {frame.dst}", (
        ("Destination", frame.dst), ("Source", frame.src), ("Type", f"{name} ({int(kind):#06x})"),
    )))
    if kind == ethernet.EtherType.IPV4:
        return _ipv4, frame.payload
    if kind == ethernet.EtherType.ARP:
        return _arp, frame.payload
    return (_data, frame.payload) if frame.payload else None


def _arp(state: _Dissection, buf: bytes) -> _Next:
    packet = arp.decode(buf)
    op = packet.op.name.lower()
    state.layers.append(Layer("arp", f"Address Resolution Protocol ({op})", (
        ("Hardware type", f"Ethernet ({arp.HTYPE_ETHERNET})"),
        ("Protocol type", f"IPv4 ({arp.PTYPE_IPV4:#06x})"),
        ("Opcode", f"{op} ({int(packet.op)})"),
        ("Sender MAC address", packet.sender_mac), ("Sender IP address", packet.sender_ip),
        ("Target MAC address", packet.target_mac), ("Target IP address", packet.target_ip),
    )))
    return None


def _ipv4(state: _Dissection, buf: bytes) -> _Next:
    packet, correct = _checked(ipv4.decode, buf)
    ihl = ipv4.header_length(buf)
    protocol = packet.protocol
    named = f"{protocol.name} ({int(protocol)})" if isinstance(protocol, ipv4.IPProtocol) else str(protocol)
    flags = "0x2, Don't fragment" if packet.dont_fragment else "0x0"
    state.layers.append(Layer("ip", f"Internet Protocol Version 4, Src: {packet.src}, Dst: {packet.dst}", (
        ("Version", "4"), ("Header Length", f"{ihl} bytes ({ihl // 4})"),
        ("Differentiated Services Field", f"DSCP {packet.dscp}, ECN {packet.ecn}"),
        ("Total Length", str(ihl + len(packet.payload))),
        ("Identification", f"{packet.identification:#06x} ({packet.identification})"),
        ("Flags", flags), ("Fragment Offset", "0"), ("Time to Live", str(packet.ttl)), ("Protocol", named),
        ("Header Checksum", _checksum(buf, 10, correct)),
        ("Source Address", packet.src), ("Destination Address", packet.dst),
    )))
    if protocol == ipv4.IPProtocol.TCP:
        return partial(_tcp, src=packet.src, dst=packet.dst), packet.payload
    if protocol == ipv4.IPProtocol.UDP:
        return partial(_udp, src=packet.src, dst=packet.dst), packet.payload
    if protocol == ipv4.IPProtocol.ICMP:
        return _icmp, packet.payload
    return (_data, packet.payload) if packet.payload else None


def _udp(state: _Dissection, buf: bytes, *, src: str, dst: str) -> _Next:
    datagram, correct = _checked(udp.decode, buf, src, dst)
    length = udp.HEADER_LENGTH + len(datagram.payload)
    checksum = _U16.unpack_from(buf, 6)[0]
    title = f"User Datagram Protocol, Src Port: {datagram.src_port}, Dst Port: {datagram.dst_port}"
    state.layers.append(Layer("udp", title, (
        ("Source Port", str(datagram.src_port)), ("Destination Port", str(datagram.dst_port)),
        ("Length", str(length)),
        ("Checksum", _checksum(buf, 6, correct) if checksum else "0x0000 [zero-value ignored]"),
        ("UDP payload", f"{len(datagram.payload)} bytes"),
    )))
    tunnel, state.outer_tunnel = state.outer_tunnel, None
    tunnel = tunnel or state.tunnels.get(datagram.dst_port) or state.tunnels.get(datagram.src_port)
    if tunnel == VXLAN:
        return _vxlan, datagram.payload
    if tunnel == FOU:
        return _ipv4, datagram.payload
    return (_data, datagram.payload) if datagram.payload else None


def _vxlan(state: _Dissection, buf: bytes) -> _Next:
    vni, frame = vxlan.decode(buf)
    state.layers.append(Layer("vxlan", "Virtual eXtensible Local Area Network", (
        ("Flags", f"{vxlan.FLAG_VNI_VALID << 8:#06x}, VXLAN Network ID (VNI)"),
        ("VXLAN Network Identifier (VNI)", str(vni)), ("Reserved", "0"),
    )))
    return _ethernet, frame


def _tcp(state: _Dissection, buf: bytes, *, src: str, dst: str) -> _Next:
    segment, correct = _checked(tcp.decode, buf, src, dst)
    header = len(buf) - len(segment.payload)
    flags = ", ".join(flag.name for flag in segment.flags)
    fields = [
        ("Source Port", str(segment.src_port)), ("Destination Port", str(segment.dst_port)),
        ("Sequence Number (raw)", str(segment.seq)), ("Acknowledgment Number (raw)", str(segment.ack)),
        ("Header Length", f"{header} bytes ({header // 4})"),
        ("Flags", f"{int(segment.flags):#05x} ({flags})"),
        ("Window", str(segment.window)), ("Checksum", _checksum(buf, 16, correct)),
    ]
    if segment.mss is not None:
        fields.append(("Maximum segment size", f"{segment.mss} bytes"))
    if segment.sack_permitted:
        fields.append(("SACK permitted", "yes"))
    if segment.timestamps is not None:
        fields.append(("Timestamps", f"TSval {segment.timestamps[0]}, TSecr {segment.timestamps[1]}"))
    if segment.window_scale is not None:
        fields.append(("Window scale", f"{segment.window_scale} (multiply by {1 << segment.window_scale})"))
    fields.append(("TCP payload", f"{len(segment.payload)} bytes"))
    state.layers.append(Layer("tcp", (
        f"Transmission Control Protocol, Src Port: {segment.src_port}, Dst Port: {segment.dst_port}, "
        f"Seq: {segment.seq}, Ack: {segment.ack}, Len: {len(segment.payload)}"), tuple(fields)))
    return (_data, segment.payload) if segment.payload else None


def _icmp(state: _Dissection, buf: bytes) -> _Next:
    message, correct = _checked(icmp.decode, buf)
    unreachable = isinstance(message, icmp.IcmpUnreachable)
    kind = icmp.ICMPType.DESTINATION_UNREACHABLE if unreachable else message.type
    code = message.code
    code_text = str(int(code))
    if kind == icmp.ICMPType.DESTINATION_UNREACHABLE:
        code_text = f"{int(code)} ({_UNREACHABLE_CODES.get(code, 'Unknown')})"
    fields = [("Type", f"{int(kind)} ({_ICMP_TYPES.get(kind, 'Unknown')})"), ("Code", code_text),
              ("Checksum", _checksum(buf, 2, correct))]
    if isinstance(message, icmp.IcmpEcho):
        fields += [("Identifier (BE)", f"{message.identifier} ({message.identifier:#06x})"),
                   ("Sequence Number (BE)", f"{message.sequence} ({message.sequence:#06x})")]
        rest = message.data
    elif unreachable:
        if message.code == icmp.UnreachableCode.FRAGMENTATION_NEEDED:
            fields.append(("MTU of next hop", str(message.next_hop_mtu)))
        rest = message.original
    else:
        rest = message.data
    state.layers.append(Layer("icmp", "Internet Control Message Protocol", tuple(fields)))
    return (_data, rest) if rest else None
