"""The pipeline's vocabulary, pure: who a node is (`NodeIdentity`), its pods' ports and its peers, the
outputs the pipeline hands its adapter (`Deliver`, `Tunnel`, ...), the `Stage`s a trace records, and the
underlay's constants.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from podnet.overlay.pipeline.conntrack import FlowKey
from podnet.overlay.wire import dissect, vxlan
from podnet.overlay.wire.addresses import int_to_ip
from podnet.overlay.wire.segment import laid_apart

from podnet.api.keys import namespaced_key

VNI = 1
POD_MTU = 1450
ETH_HEADER = 14
VXLAN_HEADER = 8
# What the underlay adds to an inner frame: outer IPv4 (20) + UDP (8) + VXLAN (8).
UNDERLAY_OVERHEAD = 36
# Foo-over-UDP (the `bgp` backend): the pod's IPv4 packet is the whole UDP payload, so a packet gains
# only the outer IPv4 and UDP headers, where VXLAN also adds its header and an inner Ethernet header (50).
FOU_PORT = 5555
OUTER_IP_UDP = 28
PROTOCOL_NAMES = {6: "TCP", 17: "UDP", 1: "ICMP", 132: "SCTP"}
# The 8 bytes every VXLAN datagram between nodes starts with (flags with I set, the VNI, reserved bytes
# zero), and the EtherType of an inner frame that carries IPv4: what a datagram is compared with per packet.
VXLAN_HEADER_BYTES = b"\x08\x00\x00\x00" + (VNI << 8).to_bytes(4, "big")
ETHERTYPE_IPV4_BYTES = b"\x08\x00"


class Encapsulation(StrEnum):
    VXLAN = "vxlan"  # RFC 7348: VXLAN header + the pod's packet in an Ethernet frame between VTEPs
    FOU = "fou"  # foo-over-UDP: the bare IPv4 packet, to the next hop a BGP route names


# The UDP ports whose payload is a tunnel's, for reading a recorded underlay packet (Wireshark's
# "Decode As"): the defaults of both encapsulations.
TUNNEL_PORTS = {vxlan.PORT: Encapsulation.VXLAN, FOU_PORT: Encapsulation.FOU}


@dataclass(frozen=True, slots=True)
class Stage:
    """What one stage did to a traced packet. `packet` is the packet as the stage holds it, where the
    pipeline holds one whole: an IPv4 packet, the pod's own as it left the pod or as it is delivered, or
    on the underlay the outer IPv4 packet around the tunnel's UDP datagram."""

    stage: str
    detail: str
    packet: bytes | None = None

    def as_dict(self) -> dict:
        if self.packet is None:
            return {"stage": self.stage, "detail": self.detail}
        return {"stage": self.stage, "detail": self.detail, "packet": self.packet}


def dissect_stage(stage: str, packet: bytes) -> list[dissect.Layer]:
    """The layers of a stage's `packet`: an encapsulation's (`vxlan-encap`, `fou-decap`, ...) read as
    that tunnel's underlay packet whatever its ports, any other as the IPv4 packet it is."""
    scheme, _, end = stage.rpartition("-")
    outer = scheme if end in ("encap", "decap") and scheme in set(Encapsulation) else None
    return dissect.dissect(packet, tunnels=TUNNEL_PORTS, outer_tunnel=outer)


# What the pipeline asks its adapter to do. The two every forwarded frame produces, `Deliver` and
# `Tunnel`, are named tuples: as immutable as the frozen dataclasses, built in a tenth of the time
# (a frozen dataclass sets each field through object.__setattr__), which is a share of a frame's cost.


class Deliver(NamedTuple):
    """Hand `packet` (IPv4) to the local pod whose address is `pod_ip`."""

    pod_ip: int
    packet: bytes


@dataclass(frozen=True, slots=True)
class DeliverFrame:
    """Hand an Ethernet frame to the local pod's interface (an ARP answer)."""

    pod_ip: int
    frame: bytes


class Tunnel(NamedTuple):
    """Send `datagram` (VXLAN header + inner frame) in UDP to the node at `node_address`."""

    node_address: str
    datagram: bytes


class DeliverSuper(NamedTuple):
    """Hand the super-packet `packet` (IPv4 + TCP standing for segments of `mss` payload bytes, as a pod's
    kernel hands one over with segmentation offload) to the local pod at `pod_ip`: whole to a TAP that
    takes super-frames, cut into its segments for anything else. One joined from a tunnel's segments is
    the coalescer's bytearray."""

    pod_ip: int
    packet: bytes | bytearray
    mss: int


class TunnelBurst(NamedTuple):
    """Send the datagrams laid back to back in `laid`, `sizes` bytes each, in UDP to the node at
    `node_address`: the tunnelled segments of one super-packet, all of one size but the last, so that one
    `sendmsg` with UDP_SEGMENT carries them as they lie."""

    node_address: str
    laid: bytes | memoryview
    sizes: list[int]

    @property
    def datagrams(self) -> list[bytes]:
        """The datagrams, each on its own."""
        return laid_apart(self.laid, self.sizes)


@dataclass(frozen=True, slots=True)
class ToHost:
    """A packet for a host-network address: the host bridge relays it from the node address."""

    pod_ip: int
    packet: bytes


@dataclass(frozen=True, slots=True)
class Drop:
    reason: str


Output = Deliver | DeliverFrame | DeliverSuper | Tunnel | TunnelBurst | ToHost | Drop


@dataclass(frozen=True, slots=True)
class PodPort:
    """A local pod's attachment: the 'veth' the pipeline sees it through."""

    namespace: str
    name: str
    ip: str
    mac: str

    @property
    def key(self) -> str:
        return namespaced_key(self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class Peer:
    """Another node the tunnel talks to: its underlay address and its VTEP MAC."""

    name: str
    address: str
    mac: str


def vtep_mac(node_address: str) -> str:
    """The deterministic VTEP MAC of a node: locally administered, derived from its address, so a peer
    (a kernel vxlan device included) can be set up with static neighbour entries, as flannel does."""
    return "0e:50:" + ipaddress.IPv4Address(node_address).packed.hex(":")


def pod_mac(pod_ip: str) -> str:
    """A pod's MAC, derived from its IP as Kubernetes' bridge plugins do (0a:58 + the address)."""
    return "0a:58:" + ipaddress.IPv4Address(pod_ip).packed.hex(":")


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    name: str
    address: str
    pod_cidr: str
    cluster_cidr: str = "10.244.0.0/16"
    vxlan_port: int = 4789
    mtu: int = POD_MTU
    encapsulation: Encapsulation = Encapsulation.VXLAN
    fou_port: int = FOU_PORT

    @property
    def gateway(self) -> str:
        """The .1 of the podCIDR: every pod's default gateway, answered by proxy ARP."""
        return str(ipaddress.IPv4Network(self.pod_cidr).network_address + 1)


def describe_key(key: FlowKey) -> str:
    protocol, src, sport, dst, dport = key
    name = PROTOCOL_NAMES.get(protocol, str(protocol))
    if protocol == 1:  # ICMP
        return f"ICMP {int_to_ip(src)} → {int_to_ip(dst)} id {sport}"
    return f"{name} {int_to_ip(src)}:{sport} → {int_to_ip(dst)}:{dport}"
