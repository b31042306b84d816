"""The pipeline's fast path, pure: a flow cache in front of its stages, as Open vSwitch keeps one in front
of its tables, and the joining of a batch's TCP segments from the tunnel into super-packets (`joined`).
Every packet that skips the stages does it here, so what changes the per-packet path (an offload, another
encapsulation) has this one module to change.

From a connection's second packet on, the decision the stages reached for it is kept under its flow key,
so its later packets skip the walk. Only decisions that hold for every packet of the flow are kept:
tracked TCP/UDP, to a tunnel or a local pod, with the connection's NAT (a Service's DNAT, or its undoing
on the replies) applied anew to each packet from checksum sums worked out once (`fastpath.nat_rewrite`).
Each packet on a shortcut still has its IPv4 header checked (`fastpath.shortcut_candidate`, the one guard
of both directions) and its conntrack entry counted and extended and its TTL taken down by one hop; a TCP
segment with SYN, FIN or RST (it may move the entry's state), an expired entry, a length the header does
not state, a spent TTL, a packet over the MTU and any traced packet take the stages. A change to pods,
peers or routes forgets every shortcut (`forget`).

A method here answers None where the packet must take the stages; the pipeline (forward.py) then walks
them, and teaches the cache what they decided (`learn_from_pod`, `learn_from_tunnel`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Container, Iterator, Set
from typing import NamedTuple

from podnet.overlay.pipeline.conntrack import FIN, RST, SYN, Direction, Entry, FlowKey
from podnet.overlay.pipeline.model import (
    ETH_HEADER,
    ETHERTYPE_IPV4_BYTES,
    VXLAN_HEADER,
    VXLAN_HEADER_BYTES,
    Deliver,
    DeliverSuper,
    Encapsulation,
    NodeIdentity,
    Output,
    PodPort,
    Tunnel,
    TunnelBurst,
)
from podnet.overlay.pipeline.packets import TTL_AT, TTL_WORD, decremented_ttl_word, nat_of, shortcut_nat
from podnet.overlay.wire import fastpath
from podnet.overlay.wire.addresses import ip_to_int
from podnet.overlay.wire.fastpath import SHORTCUT_MIN, shortcut_candidate
from podnet.overlay.wire.segment import DatagramRun, coalesce, laid_tcp_segments, with_tcp_checksum

_ICMP = 1
_TCP = 6
_STATE_FLAGS = SYN | FIN | RST  # TCP flags that move a conntrack entry: their segments take the stages
# Builds a named tuple from a tuple of its fields in C; the class call runs a Python-level __new__ that
# costs as much again as the rest of a shortcut's work.
_tuple_new = tuple.__new__


class EgressShortcut(NamedTuple):
    """What the packets of a connection from a local pod get, learned from one that took the stages."""

    pod: PodPort  # the port they must come from
    entry: Entry
    direction: Direction
    nat: fastpath.NatRewrite | None  # the connection's rewrite in this direction
    node_address: str | None  # the node they are tunnelled to; None: delivered to a local pod
    prefix: bytes  # the encapsulation headers to that node
    local_ip: int  # the local pod they are delivered to


class IngressShortcut(NamedTuple):
    """What the packets of a connection arriving from another node get."""

    sender: str  # the node they must come from
    entry: Entry
    direction: Direction
    nat: fastpath.NatRewrite | None


class Joined(NamedTuple):
    """The IPv4 super-packet that TCP segments of one flow from `sender` make, `mss` payload bytes each."""

    sender: str
    packet: bytearray  # the coalescer's own
    mss: int


# (sender, datagram, now, trace) -> outputs: the stages a tunnel datagram off its shortcut takes.
TunnelStages = Callable[[str, bytes, float, None], list[Output]]


class Shortcuts:
    """The flow cache of one node's pipeline. It counts into the pipeline's `counters` and reads its
    `encap_prefix` (peer address -> the headers a tunnelled packet gets), both shared, not copied; a tunnel
    datagram off its shortcut goes to the pipeline's `tunnel_stages`."""

    def __init__(self, node: NodeIdentity, counters: defaultdict[str, int], encap_prefix: dict[str, bytes],
                 tunnel_stages: TunnelStages):
        self.egress: dict[FlowKey, EgressShortcut] = {}
        self.ingress: dict[FlowKey, IngressShortcut] = {}
        self._counters = counters
        self._encap_prefix = encap_prefix
        self._tunnel_stages = tunnel_stages
        self._mtu = node.mtu
        self._gateway = ip_to_int(node.gateway)
        self._fou = node.encapsulation is Encapsulation.FOU
        # where the pod's IPv4 packet starts in a datagram from a peer
        self.inner_offset = 0 if self._fou else VXLAN_HEADER + ETH_HEADER

    def forget(self) -> None:
        self.egress.clear()
        self.ingress.clear()

    def expire(self, now: float) -> None:
        """Drops the shortcuts whose conntrack entries have expired."""
        for shortcuts in (self.egress, self.ingress):
            for key in [key for key, shortcut in shortcuts.items() if shortcut[1].expires <= now]:
                del shortcuts[key]

    # --- what the stages teach ------------------------------------------------------------------

    def _allowed(self, key: FlowKey, tcp_flags: int) -> bool:
        """Whether a tracked packet's decision may stand for the rest of its flow (see the module text):
        not ICMP, no flag that moves conntrack, and forwarded (not to or from the node itself)."""
        return (
            key[0] != _ICMP
            and not tcp_flags & _STATE_FLAGS
            and self._gateway != key[1]
            and self._gateway != key[3]
        )

    def learn_from_pod(
        self, key: FlowKey, tcp_flags: int, pod: PodPort, entry: Entry, direction: Direction, outputs: list[Output]
    ) -> None:
        """Keeps what the stages gave an untraced, tracked packet from `pod`, when it holds for the flow:
        one packet to a tunnel, or to the local pod the packet was for (not an ICMP error back to the
        sender)."""
        if not self._allowed(key, tcp_flags) or len(outputs) != 1:
            return
        out, nat = outputs[0], nat_of(entry, direction)
        rewrite_nat = shortcut_nat(key, nat)
        kind = type(out)
        if kind is Tunnel or kind is TunnelBurst:
            prefix = self._encap_prefix[out.node_address]
            self.egress[key] = EgressShortcut(pod, entry, direction, rewrite_nat, out.node_address, prefix, 0)
        elif (kind is Deliver or kind is DeliverSuper) and out.pod_ip == (nat[1][0] if nat and nat[1] else key[3]):
            self.egress[key] = EgressShortcut(pod, entry, direction, rewrite_nat, None, b"", out.pod_ip)

    def learn_from_tunnel(self, key: FlowKey, tcp_flags: int, sender: str, entry: Entry, direction: Direction) -> None:
        """Keeps the way in for an untraced, tracked packet from the node at `sender`."""
        if self._allowed(key, tcp_flags):
            self.ingress[key] = IngressShortcut(sender, entry, direction, shortcut_nat(key, nat_of(entry, direction)))

    # --- packets that take them -----------------------------------------------------------------

    def from_pod(self, pod: PodPort, packet: bytes, now: float) -> list[Output] | None:
        """An untraced IPv4 packet from `pod`, at least SHORTCUT_MIN long, on its flow's shortcut."""
        candidate = shortcut_candidate(packet)
        if candidate is None:
            return None
        key, ttl, checksum = candidate
        shortcut = self.egress.get(key)
        if shortcut is None or shortcut[0] is not pod:
            return None
        _, entry, direction, nat, node_address, prefix, local_ip = shortcut
        # A reply-direction shortcut is learned from a reply, which has established the entry already: no
        # packet on a shortcut changes its state.
        if entry.expires <= now or (node_address is not None and len(packet) > self._mtu):
            return None
        entry.packets[direction] += 1
        entry.expires = now + entry.lifetime
        counters = self._counters
        counters["egress.packets"] += 1
        if nat is not None:  # as the stages do it: the NAT, then the hop
            buf = bytearray(packet)
            fastpath.apply_nat(buf, nat)
            buf[TTL_AT : TTL_AT + 4] = decremented_ttl_word(*TTL_WORD.unpack_from(buf, TTL_AT))
            if node_address is None:
                counters["delivered"] += 1
                return [_tuple_new(Deliver, (local_ip, bytes(buf)))]
            counters["tunnel.tx"] += 1
            return [_tuple_new(Tunnel, (node_address, prefix + buf))]
        hop = decremented_ttl_word(ttl, key[0], checksum)
        if node_address is None:
            counters["delivered"] += 1
            return [_tuple_new(Deliver, (local_ip, b"".join((packet[:8], hop, packet[12:]))))]
        counters["tunnel.tx"] += 1
        return [_tuple_new(Tunnel, (node_address, b"".join((prefix, packet[:8], hop, packet[12:]))))]

    def from_pod_super(self, pod: PodPort, packet: bytes, mss: int, now: float) -> list[Output] | None:
        """An untraced super-packet from `pod` (TCP segments of `mss` payload bytes as one packet) on its
        flow's shortcut, its conntrack entry counting each segment: cut into segments for a tunnel, whole
        for a local pod, with a TCP checksum made afresh (the pod's kernel left a partial one)."""
        ihl = (packet[0] & 0x0F) * 4 if packet else 0
        header = ihl + (packet[ihl + 12] >> 4) * 4 if len(packet) > ihl + 12 else len(packet)
        count = max(1, -(-(len(packet) - header) // mss))
        if len(packet) < SHORTCUT_MIN or header + mss > self._mtu:
            return None
        candidate = shortcut_candidate(packet)
        shortcut = None if candidate is None else self.egress.get(candidate[0])
        if shortcut is None or shortcut[0] is not pod or shortcut[1].expires <= now:
            return None
        _, entry, direction, nat, node_address, prefix, local_ip = shortcut
        entry.packets[direction] += count
        entry.expires = now + entry.lifetime
        buf = bytearray(packet)
        if nat is not None:
            fastpath.apply_nat(buf, nat)
        buf[TTL_AT : TTL_AT + 4] = decremented_ttl_word(*TTL_WORD.unpack_from(buf, TTL_AT))
        counters = self._counters
        counters["egress.packets"] += count
        if node_address is None:
            counters["delivered"] += count
            return [DeliverSuper(local_ip, with_tcp_checksum(buf), mss)]
        counters["tunnel.tx"] += count
        return [TunnelBurst(node_address, *laid_tcp_segments(buf, mss, prefix))]

    def from_tunnel(self, datagrams: list[tuple[bytes, str]], now: float) -> list[Output]:
        """The outputs of each untraced (datagram, sender) in turn: by its flow's shortcut, or by the
        pipeline's stages. Those on shortcuts are counted together, once."""
        outputs: list[Output] = []
        append = outputs.append
        shortcuts, offset, fou = self.ingress, self.inner_offset, self._fou
        minimum, candidate_at, stages = offset + SHORTCUT_MIN, shortcut_candidate, self._tunnel_stages
        taken = 0
        for datagram, sender in datagrams:
            if len(datagram) >= minimum and (
                fou or (datagram[:8] == VXLAN_HEADER_BYTES and datagram[20:22] == ETHERTYPE_IPV4_BYTES)
            ):
                candidate = candidate_at(datagram, offset)
                if candidate is not None:
                    key, ttl, checksum = candidate
                    shortcut = shortcuts.get(key)
                if candidate is not None and shortcut is not None and shortcut[0] == sender:
                    _, entry, direction, nat = shortcut
                    if entry.expires > now:
                        entry.packets[direction] += 1
                        entry.expires = now + entry.lifetime
                        taken += 1
                        hop = decremented_ttl_word(ttl, key[0], checksum)
                        if nat is None:
                            packet = b"".join((datagram[offset : offset + 8], hop, datagram[offset + 12 :]))
                        else:  # as the stages do it: the hop, then the NAT
                            buf = bytearray(datagram[offset:])
                            buf[TTL_AT : TTL_AT + 4] = hop
                            fastpath.apply_nat(buf, nat)
                            packet = bytes(buf)
                        append(_tuple_new(Deliver, (key[3], packet)))
                        continue
            outputs += stages(sender, datagram, now, None)
        if taken:
            counters = self._counters
            counters["tunnel.rx"] += taken
            counters["delivered"] += taken
        return outputs

    def joined(
        self, datagrams: list[tuple[bytes | DatagramRun, str]], super_pods: Set[int], peers: Container[str]
    ) -> Iterator[list[tuple[bytes, str]] | Joined]:
        """One batch of (datagram, sender) with the TCP segments from a peer to a pod in `super_pods` (its
        port takes super-packets) joined, per sender, into the super-packets they make (userspace GRO,
        `segment.coalesce`): lists of (datagram, sender) to decide on one by one, and `Joined` super-packets,
        in an order that keeps each flow's order of arrival. A `DatagramRun` whose datagrams are all such
        segments is joined without being cut apart."""
        offset, fou = self.inner_offset, self._fou
        minimum, protocol_at, destination_at = offset + 40, offset + 9, offset + 16
        # compared as the bytes they are in the header: no integer made per datagram
        destinations = {address.to_bytes(4) for address in super_pods}
        joining: dict[str, list[bytes | DatagramRun]] = {}
        rest: list[tuple[bytes, str]] = []

        def joinable(datagram: bytes) -> bool:
            return (len(datagram) > minimum and datagram[protocol_at] == _TCP
                    and datagram[destination_at : destination_at + 4] in destinations
                    and (fou or (datagram[:8] == VXLAN_HEADER_BYTES and datagram[20:22] == ETHERTYPE_IPV4_BYTES)))

        for datagram, sender in datagrams:
            if type(datagram) is DatagramRun:
                if sender in peers and joinable(datagram.datagram(0)):  # the rest judged as coalesce takes them
                    joining.setdefault(sender, []).append(datagram)
                else:
                    rest += [(part, sender) for part in datagram.apart()]
            elif sender in peers and joinable(datagram):
                joining.setdefault(sender, []).append(datagram)
            else:
                rest.append((datagram, sender))
        if rest:
            yield rest
        for sender, group in joining.items():
            alone: list[tuple[bytes, str]] = []
            for item, mss in coalesce(group, offset=offset, joinable=joinable):
                if not mss:
                    alone.append((item, sender))
                    continue
                if alone:
                    yield alone
                    alone = []
                yield Joined(sender, item, mss)
            if alone:
                yield alone

    def from_tunnel_super(self, sender: str, packet: bytearray, mss: int, count: int, now: float) -> list[Output] | None:
        """The super-packet that `count` segments of one flow from `sender` joined into, on its flow's
        shortcut, its conntrack entry and the delivered counter counting the segments. The packet is the
        coalescer's own: the hop (and NAT) are made in it."""
        candidate = shortcut_candidate(packet) if len(packet) >= SHORTCUT_MIN else None
        shortcut = None if candidate is None else self.ingress.get(candidate[0])
        if shortcut is None or shortcut[0] != sender or shortcut[1].expires <= now:
            return None
        key, ttl, checksum = candidate
        _, entry, direction, nat = shortcut
        entry.packets[direction] += count
        entry.expires = now + entry.lifetime
        self._counters["delivered"] += count
        packet[TTL_AT : TTL_AT + 4] = decremented_ttl_word(ttl, key[0], checksum)
        if nat is not None:
            fastpath.apply_nat(packet, nat)
        return [DeliverSuper(key[3], packet, mss)]
