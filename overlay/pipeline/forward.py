"""The forwarding pipeline of one node, pure: a packet and its origin in, what to do with it out.

Egress (a packet from a local pod): anti-spoof check → conntrack → for a new flow the service DNAT hook
and the egress policy hook → route lookup → deliver to a local pod (after its ingress policy), VXLAN to
the node that owns the destination's podCIDR, or hand to the host bridge for host-network addresses.
Ingress (a VXLAN datagram from the underlay): sender must be a known node, flags and VNI right, the
inner source inside a prefix routed to that sender (strict reverse-path check), the inner destination
one of ours → conntrack → for a new flow the ingress policy hook → deliver. Replies follow conntrack and
are un-NATted on the way back. A packet with DF set that is bigger than the pod MTU is answered with
ICMP fragmentation-needed.

Every stage appends a `Stage` to `trace` when one is passed, so `podnet trace` can show the journey;
without a trace the per-packet path only parses, looks up and concatenates.

In front of the stages stands a flow cache (shortcuts.py, the fast path): from a connection's second
packet on, an untraced packet of a flow whose decision holds for all its packets skips the stages.

Addresses are 32-bit ints on the hot path and strings in everything a person reads.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import defaultdict
from collections.abc import Callable

from podnet.overlay.pipeline.conntrack import Conntrack, Direction, Entry, FlowKey, reverse
from podnet.overlay.pipeline.model import (
    ETH_HEADER,
    ETHERTYPE_IPV4_BYTES,
    OUTER_IP_UDP,
    PROTOCOL_NAMES,
    VNI,
    VXLAN_HEADER,
    VXLAN_HEADER_BYTES,
    Deliver,
    DeliverFrame,
    DeliverSuper,
    Drop,
    Encapsulation,
    NodeIdentity,
    Output,
    Peer,
    PodPort,
    Stage,
    ToHost,
    Tunnel,
    TunnelBurst,
    describe_key,
    vtep_mac,
)
from podnet.overlay.pipeline.nat import NatDecision, ServiceTable
from podnet.overlay.pipeline.packets import (
    TTL_AT,
    TTL_WORD,
    checked,
    decremented_ttl_word,
    describe_nat,
    flow_key,
    nat_of,
    rewrite,
    untracked_flow,
)
from podnet.overlay.pipeline.policyhook import (
    Flow,
    Policy,
    PolicyDirection,
    Verdict,
    allow_all,
    describe_verdict,
)
from podnet.overlay.pipeline.routes import Route, RouteKind, RouteTable
from podnet.overlay.pipeline.shortcuts import Shortcuts
from podnet.overlay.wire import arp, fastpath, icmp, ipv4, pcap
from podnet.overlay.wire.addresses import int_to_ip, ip_to_int, mac_to_bytes
from podnet.overlay.wire.fastpath import SHORTCUT_MIN
from podnet.overlay.wire.mss import clamp_mss
from podnet.overlay.wire.segment import (
    DatagramRun,
    datagrams_apart,
    laid_tcp_segments,
    tcp_segments,
    with_tcp_checksum,
)

_ADDRS = struct.Struct("!II")
_U16 = struct.Struct("!H")
_VXLAN_FLAGS_WORD = VXLAN_HEADER_BYTES[:4]
_ETHERTYPE_ARP = b"\x08\x06"
_ICMP = 1
TCP_IP_HEADERS = 40  # what an MSS leaves out of the MTU: IPv4 (20) and TCP (20) without options
_ICMP_QUERIES = (0, 8)  # echo reply and request: the ICMP messages that are not errors


class Pipeline:
    def __init__(
        self,
        node: NodeIdentity,
        *,
        policy: Policy = allow_all,
        rand: Callable[[], float] = lambda: 0.0,
        conntrack: Conntrack | None = None,
    ):
        self.node = node
        self.policy = policy
        # What carries tunnel datagrams inside UDP besides the encapsulation (the agent's encryption):
        # given ("encap" or "decap", the peer node's address, the datagram), the stage a trace shows for
        # it, after the encapsulation's and before the decapsulation's.
        self.carrier_stage: Callable[[str, str, bytes], Stage | None] | None = None
        self.services: ServiceTable | None = None  # None: no service table installed, DNAT passes
        self.rand = rand
        self.conntrack = conntrack or Conntrack()
        self.routes = RouteTable(on_change=self.forget_shortcuts)
        self.counters: defaultdict[str, int] = defaultdict(int)  # a Counter's += costs 3x a dict's
        self.pods: dict[int, PodPort] = {}
        self._super_pods: set[int] = set()  # addresses of the pods that take super-packets
        self.peers: dict[str, Peer] = {}
        self._encap_prefix: dict[str, bytes] = {}  # peer address -> VXLAN header + inner Ethernet header
        self._shortcuts = Shortcuts(node, self.counters, self._encap_prefix, self._from_tunnel_stages)
        # Bound once: per packet, looking the fast path's methods up again costs a share of its work.
        self._pod_shortcut, self._tunnel_shortcuts = self._shortcuts.from_pod, self._shortcuts.from_tunnel
        self._pod_cidr = ipaddress.IPv4Network(node.pod_cidr)
        self._cluster = ipaddress.IPv4Network(node.cluster_cidr)
        self._cluster_net, self._cluster_mask = int(self._cluster.network_address), int(self._cluster.netmask)
        self._gateway = ip_to_int(node.gateway)
        self._own_addresses = (node.gateway, node.address)
        self._mac = vtep_mac(node.address)
        self._mac_bytes = mac_to_bytes(self._mac)
        self._fou = node.encapsulation is Encapsulation.FOU
        self._mtu = node.mtu
        self._scheme = node.encapsulation.value  # names the decap stage and its drops
        # every node of a cluster sends from and to the same port (the agent's --vxlan-port / --fou-port)
        self._tunnel_port = node.fou_port if self._fou else node.vxlan_port
        # where the pod's IPv4 packet starts in a datagram from a peer
        self.inner_offset = self._shortcuts.inner_offset
        self.routes.replace_source("local", [Route(self._pod_cidr, RouteKind.LOCAL, None, "local")])

    # --- state the agent keeps up to date -------------------------------------------------------

    def add_pod(self, pod: PodPort, *, super_packets: bool = False) -> None:
        """A local pod; `super_packets`: its port takes TCP super-packets whole (a TAP with offloads), so
        the segments for it that arrive together are joined before they are decided on."""
        address = ip_to_int(pod.ip)
        self.pods[address] = pod
        if super_packets:
            self._super_pods.add(address)
        else:
            self._super_pods.discard(address)
        self.forget_shortcuts()

    def remove_pod(self, pod_ip: str) -> PodPort | None:
        self.forget_shortcuts()
        self._super_pods.discard(ip_to_int(pod_ip))
        return self.pods.pop(ip_to_int(pod_ip), None)

    def forget_shortcuts(self) -> None:
        self._shortcuts.forget()

    def expire_connections(self, now: float) -> int:
        """Removes expired conntrack entries and the shortcuts that led to them; returns how many
        entries went."""
        removed = self.conntrack.expire(now)
        self._shortcuts.expire(now)
        return removed

    def set_peer(self, peer: Peer, pod_cidr: str | None) -> None:
        """A node event: the node's VTEP and, with a podCIDR, one route to it (the `vxlan` backend)."""
        self.remove_peer(peer.name)
        self.forget_shortcuts()
        self.peers[peer.address] = peer
        self._encap_prefix[peer.address] = (
            b"" if self._fou else VXLAN_HEADER_BYTES + mac_to_bytes(peer.mac) + self._mac_bytes + ETHERTYPE_IPV4_BYTES
        )
        if pod_cidr:
            prefix = ipaddress.IPv4Network(pod_cidr)
            self.routes.set_route(Route(prefix, RouteKind.TUNNEL, peer.address, "vxlan"))

    def remove_peer(self, name: str) -> None:
        self.forget_shortcuts()
        for address, peer in list(self.peers.items()):
            if peer.name == name:
                del self.peers[address]
                del self._encap_prefix[address]
                for route in self.routes.routes():
                    if route.source == "vxlan" and route.next_hop == address:
                        self.routes.remove_route("vxlan", route.prefix)

    # --- egress: a packet from a local pod ------------------------------------------------------

    def from_pod_frame(
        self, pod: PodPort, frame: bytes, now: float, trace: list[Stage] | None = None, mss: int = 0
    ) -> list[Output]:
        """An Ethernet frame from a pod's interface: ARP is answered here (proxy ARP: every address
        a pod asks for is at the node's MAC, since the node routes everything), IPv4 goes on (`mss`: as
        `from_pod` takes it)."""
        ethertype = frame[12:14]
        if ethertype == _ETHERTYPE_ARP:
            try:
                request = arp.decode(frame[ETH_HEADER:])
            except ValueError:
                return self._drop("bad-arp", trace)
            if request.op != arp.ArpOp.REQUEST or request.sender_ip != pod.ip:
                return self._drop("arp-not-a-request-from-the-pod", trace)
            answer = arp.encode(arp.reply(request, self._mac))
            if trace is not None:
                trace.append(Stage("arp", f"proxy ARP: {request.target_ip} is-at {self._mac} (the node)"))
            self.counters["arp.proxied"] += 1
            reply_frame = mac_to_bytes(pod.mac) + self._mac_bytes + _ETHERTYPE_ARP + answer
            return [DeliverFrame(ip_to_int(pod.ip), reply_frame)]
        if ethertype != ETHERTYPE_IPV4_BYTES:
            return self._drop("not-ipv4", trace)
        return self.from_pod(pod, frame[ETH_HEADER:], now, trace, mss)

    def from_pod(
        self, pod: PodPort, packet: bytes, now: float, trace: list[Stage] | None = None, mss: int = 0
    ) -> list[Output]:
        """An IPv4 packet from a local pod. `mss` > 0: a super-packet, TCP segments of that payload size
        as one packet (a pod's segmentation offload), decided on once for all of them (see `_super`)."""
        if mss:
            return self._super(pod, packet, mss, now, trace)
        if trace is None and len(packet) >= SHORTCUT_MIN:
            outputs = self._pod_shortcut(pod, packet, now)
            if outputs is not None:
                return outputs
        return self._from_pod_stages(pod, packet, now, trace)

    def _super(self, pod: PodPort, packet: bytes, mss: int, now: float, trace: list[Stage] | None) -> list[Output]:
        """A super-packet takes the shortcut or the stages as one packet would, its conntrack entry counting
        each of its segments; it is cut into segments only at the tunnel (`_encapsulate`), and a local
        pod gets it whole. Its TCP checksum is the partial one the pod's kernel left: each segment gets
        its own, and a super-packet for a local pod one made afresh (`with_tcp_checksum`)."""
        if trace is None:
            outputs = self._shortcuts.from_pod_super(pod, packet, mss, now)
            if outputs is not None:
                return outputs
        return self._from_pod_stages(pod, packet, now, trace, mss)

    def _from_pod_stages(
        self, pod: PodPort, packet: bytes, now: float, trace: list[Stage] | None, mss: int = 0
    ) -> list[Output]:
        packet, problem = checked(packet)
        if problem:
            return self._drop(problem, trace)
        total = len(packet)
        key, tcp_flags = flow_key(packet)
        src = _ADDRS.unpack_from(packet, 12)[0]
        if trace is not None:
            what = (
                describe_key(key)
                if key
                else f"{int_to_ip(src)} → {int_to_ip(_ADDRS.unpack_from(packet, 12)[1])}"
            )
            trace.append(
                Stage(
                    "source", f"from pod {pod.key} on {self.node.name} (veth of {pod.ip}): {what}, {total} B",
                    packet,
                )
            )
        if self.pods.get(src) is not pod:  # the port registered for that address, not a parse per packet
            return self._drop("spoofed-source", trace)
        self.counters["egress.packets"] += 1
        if key is None:
            packet, related = self._related(packet, now, trace)
            if not related and not self._judge(PolicyDirection.EGRESS, untracked_flow(packet), trace).allowed:
                return self._drop("policy-egress", trace)
            return self._route(packet, now, trace, from_pod=pod, new_flow=False, untracked=not related)
        tracked = self._follow_tracked(key, tcp_flags, packet, now, trace)
        if tracked is None:
            packet, refused = self._new_egress_flow(key, packet, now, trace)
            if refused is not None:
                return refused
            return self._route(packet, now, trace, from_pod=pod, new_flow=True, mss=mss)
        packet, entry, direction = tracked
        outputs = self._route(
            packet, now, trace, from_pod=pod, new_flow=False, reply=direction is Direction.REPLY, mss=mss
        )
        if trace is None:
            self._shortcuts.learn_from_pod(key, tcp_flags, pod, entry, direction, outputs)
        return outputs

    def _follow_tracked(
        self, key: FlowKey, tcp_flags: int, packet: bytes, now: float, trace: list[Stage] | None
    ) -> tuple[bytes, Entry, Direction] | None:
        """A packet of a connection conntrack knows: its entry updated and its NAT applied; None when new."""
        hit = self.conntrack.lookup(key, now)
        if hit is None:
            return None
        entry, direction = hit
        self.conntrack.update(entry, direction, tcp_flags, now)
        if trace is not None:
            trace.append(
                Stage(
                    "conntrack",
                    f"{direction.name.lower()} direction of an existing connection ({entry.state.name.lower()})",
                )
            )
        return self._nat_existing(entry, direction, packet, trace), entry, direction

    def _new_egress_flow(
        self, key: FlowKey, packet: bytes, now: float, trace: list[Stage] | None
    ) -> tuple[bytes, list[Output] | None]:
        """Service DNAT, then egress policy, then a conntrack entry; (packet, None) when it may go on."""
        if trace is not None:
            trace.append(Stage("conntrack", "new connection"))
        original, note = key, ""
        reply = reverse(key)
        decision = self._service_lookup(key, now, trace)
        if decision is not None:
            if decision.reject:
                self.counters["drop.service-no-endpoints"] += 1
                return packet, self._reject(packet, trace)
            endpoint = (ip_to_int(decision.ip), int(decision.port))
            note = f"{decision.service}: DNAT {int_to_ip(key[3])}:{key[4]} → {decision.ip}:{decision.port}"
            if endpoint[0] == key[1]:
                # A hairpin: the pod reached itself through the Service. As kube-proxy masquerades it, the
                # source becomes the node (its gateway address), so the answer comes back through the node
                # to be un-NATed rather than looping inside the pod.
                source = (self._gateway, key[2])
                packet = rewrite(packet, src=source, dst=endpoint)
                reply = (key[0], endpoint[0], endpoint[1], source[0], source[1])
                note += f", SNAT to {self.node.gateway} (hairpin)"
                if trace is not None:
                    trace.append(Stage("nat", f"SNAT to {self.node.gateway}:{key[2]}: a hairpin, the pod reached itself"))
            else:
                packet = rewrite(packet, dst=endpoint)
                reply = (key[0], endpoint[0], endpoint[1], key[1], key[2])
        flow = Flow(PROTOCOL_NAMES[key[0]], int_to_ip(key[1]), key[2], int_to_ip(reply[1]), reply[2])
        verdict = self._judge(PolicyDirection.EGRESS, flow, trace)
        if not verdict.allowed:
            return packet, self._drop("policy-egress", trace)
        if self.conntrack.create(original, reply, now, note) is None:
            return packet, self._drop("conntrack-full", trace)
        self.counters["conntrack.created"] += 1
        return packet, None

    def _service_lookup(self, key: FlowKey, now: float, trace: list[Stage] | None) -> NatDecision | None:
        if self.services is None or key[0] == _ICMP:
            if trace is not None:
                why = "no service table installed" if self.services is None else "ICMP is not load-balanced"
                trace.append(Stage("service-dnat", why))
            return None
        decision = self.services.lookup(
            PROTOCOL_NAMES[key[0]], int_to_ip(key[1]), int_to_ip(key[3]), key[4], self.rand(), now
        )
        if trace is not None:
            target = f"{int_to_ip(key[3])}:{key[4]}"
            if decision is None:
                trace.append(Stage("service-dnat", f"{target} is not a service address"))
            elif decision.reject:
                trace.append(
                    Stage("service-dnat", f"{target} ({decision.service}) rejected: {decision.rule}")
                )
            else:
                trace.append(Stage("service-dnat", f"{target} ({decision.service}): {decision.rule}"))
        return decision

    def _nat_existing(
        self, entry: Entry, direction: Direction, packet: bytes, trace: list[Stage] | None
    ) -> bytes:
        nat = nat_of(entry, direction)
        if nat is None:
            return packet
        packet = rewrite(packet, src=nat[0], dst=nat[1])
        if trace is not None:
            trace.append(Stage("nat", f"{describe_nat(direction, nat)} ({entry.note})"))
        return packet

    def _reject(self, packet: bytes, trace: list[Stage] | None) -> list[Output]:
        unreachable = icmp.port_unreachable(packet)
        answer = ipv4.encode(icmp.error_packet(unreachable, self.node.gateway, packet))
        if trace is not None:
            trace.append(Stage("reject", "ICMP port unreachable back to the source", answer))
        return [Deliver(_ADDRS.unpack_from(packet, 12)[0], answer)]

    def _route(
        self,
        packet: bytes,
        now: float,
        trace: list[Stage] | None,
        *,
        from_pod: PodPort,
        new_flow: bool,
        reply: bool = False,
        untracked: bool = False,
        mss: int = 0,
    ) -> list[Output]:
        dst = _ADDRS.unpack_from(packet, 12)[1]
        route = self.routes.lookup(dst)
        if route is None:
            if dst & self._cluster_mask == self._cluster_net:
                if trace is not None:
                    trace.append(
                        Stage("route", f"{int_to_ip(dst)}: inside the cluster CIDR but no node owns it")
                    )
                return self._drop("no-route", trace)
            if reply and int_to_ip(dst) in self.peers:
                # The answer to a connection another node opened from its own address (a NodePort
                # bridged into the overlay there): back through the tunnel to that node.
                if trace is not None:
                    trace.append(
                        Stage("route", f"{int_to_ip(dst)}: reply to node {self.peers[int_to_ip(dst)].name}")
                    )
                forwarded = self._hop(packet, trace, from_pod=from_pod)
                if forwarded is None:
                    return self._time_exceeded(packet, trace)
                return self._encapsulate(int_to_ip(dst), forwarded, trace, from_pod, mss)
            if trace is not None:
                trace.append(
                    Stage(
                        "route", f"{int_to_ip(dst)}: host network → host bridge, SNAT to {self.node.address}"
                    )
                )
            src = _ADDRS.unpack_from(packet, 12)[0]
            # The host bridge relays segments as a socket reads them: a super-packet goes as its segments.
            segments = tcp_segments(packet, mss) if mss else (packet,)
            self.counters["host.packets"] += len(segments)
            return [ToHost(src, segment) for segment in segments]
        if trace is not None:
            trace.append(Stage("route", f"{int_to_ip(dst)} matches {route.describe()}"))
        if route.kind is RouteKind.LOCAL:
            if dst not in self.pods:
                return self._drop("no-such-pod", trace)
            # Same-node traffic never crosses the tunnel: its ingress policy is decided here.
            if new_flow:
                key, _ = flow_key(packet)
                if not self._ingress_policy(key, trace).allowed:
                    # The entry is found by its reply key: after a Service's DNAT the packet's own key is
                    # not the one the connection was tracked by, and a kept entry would let the client's
                    # retransmission through as an established connection.
                    self.conntrack.forget(reverse(key))
                    return self._drop("policy-ingress", trace)
            elif untracked and not self._judge(PolicyDirection.INGRESS, untracked_flow(packet), trace).allowed:
                return self._drop("policy-ingress", trace)
        forwarded = self._hop(packet, trace, from_pod=from_pod)
        if forwarded is None:
            return self._time_exceeded(packet, trace)
        if route.kind is RouteKind.LOCAL:
            return self._deliver(dst, with_tcp_checksum(forwarded) if mss else forwarded, trace, mss)
        return self._encapsulate(route.next_hop, forwarded, trace, from_pod, mss)

    def _hop(self, packet: bytes, trace: list[Stage] | None, *, from_pod: PodPort | None = None) -> bytes | None:
        """`packet` as this node routes it on: TTL one less and the header checksum raised to match, as
        Linux's ip_decrease_ttl does it; None when the TTL is spent. What the node itself (its gateway
        address: `from_pod` is then the node's own port) sends or receives is not forwarded and keeps its
        TTL; a hairpin, SNATed to the gateway, is forwarded all the same. (From the tunnel no packet has
        this node's gateway as its source: the reverse-path check has dropped it.)"""
        sent_by_node = from_pod is not None and from_pod.ip == self.node.gateway
        if sent_by_node or _ADDRS.unpack_from(packet, 12)[1] == self._gateway:
            return packet
        ttl = packet[TTL_AT]
        if ttl <= 1:
            return None
        if trace is not None:
            trace.append(Stage("ttl", f"{ttl} → {ttl - 1}: one hop, through {self.node.name}"))
        hop = decremented_ttl_word(*TTL_WORD.unpack_from(packet, TTL_AT))
        return b"".join((packet[:TTL_AT], hop, packet[TTL_AT + 4 :]))

    def _time_exceeded(self, packet: bytes, trace: list[Stage] | None) -> list[Output]:
        """A packet whose TTL ran out here: dropped, and the source told with ICMP time exceeded from this
        node's gateway address (what traceroute reads), unless it was an ICMP error itself (RFC 1122)."""
        self.counters["drop.ttl-exceeded"] += 1
        src = _ADDRS.unpack_from(packet, 12)[0]
        ihl = (packet[0] & 0x0F) * 4
        if packet[9] == _ICMP and (len(packet) <= ihl or packet[ihl] not in _ICMP_QUERIES):
            if trace is not None:
                trace.append(Stage("drop", "ttl-exceeded (an ICMP error: no error about it)"))
            return [Drop("ttl-exceeded")]
        error = ipv4.encode(icmp.error_packet(icmp.time_exceeded(packet), self.node.gateway, packet))
        if trace is not None:
            trace.append(
                Stage(
                    "drop", f"ttl-exceeded: ICMP time exceeded from {self.node.gateway} to {int_to_ip(src)}"
                )
            )
        if src in self.pods:
            return [Deliver(src, error)]
        route = self.routes.lookup(src)
        if route is None or route.kind is RouteKind.LOCAL:
            return [Drop("ttl-exceeded")]
        return self._encapsulate(route.next_hop, error, None, None)

    def _encapsulate(
        self, node_address: str, packet: bytes, trace: list[Stage] | None, from_pod: PodPort | None, mss: int = 0
    ) -> list[Output]:
        prefix = self._encap_prefix.get(node_address)
        if prefix is None:
            return self._drop("fou-unknown-next-hop" if self._fou else "no-vtep-for-next-hop", trace)
        if mss:
            return self._encapsulate_segments(node_address, prefix, packet, mss, trace, from_pod)
        if packet[9] == 6:  # a SYN announcing more than the tunnel carries is told the tunnel's MSS
            clamped = clamp_mss(packet, self._mtu - TCP_IP_HEADERS)
            if clamped is not packet:
                self.counters["mss-clamped"] += 1
                if trace is not None:
                    trace.append(Stage("mss-clamp", f"SYN's MSS lowered to {self._mtu - TCP_IP_HEADERS} (MTU {self._mtu})"))
                packet = clamped
        if len(packet) > self.node.mtu:
            (flags_offset,) = _U16.unpack_from(packet, 6)
            if flags_offset & ipv4.FLAG_DONT_FRAGMENT and from_pod is not None:
                error = ipv4.encode(
                    icmp.error_packet(icmp.frag_needed(packet, self.node.mtu), self.node.gateway, packet)
                )
                if trace is not None:
                    trace.append(
                        Stage(
                            "mtu", f"{len(packet)} B > MTU {self.node.mtu} with DF: ICMP fragmentation needed",
                            error,
                        )
                    )
                self.counters["drop.too-big"] += 1
                return [Deliver(ip_to_int(from_pod.ip), error)]
            return self._drop("too-big", trace)
        datagram = prefix + packet
        self.counters["tunnel.tx"] += 1
        if trace is not None:
            trace.append(self._encap_stage(node_address, packet, datagram))
            self._carrier_stage("encap", node_address, datagram, trace)
        return [Tunnel(node_address, datagram)]

    def _encapsulate_segments(
        self, node_address: str, prefix: bytes, packet: bytes, mss: int, trace: list[Stage] | None,
        from_pod: PodPort | None,
    ) -> list[Output]:
        """A super-packet cut into the segments the pod's kernel left to its interface, each tunnelled:
        the only place it is cut. Segments over the MTU (a pod that thinks its MTU larger) are answered as
        one such packet would be."""
        laid, sizes = laid_tcp_segments(packet, mss, prefix)
        if sizes[0] - len(prefix) > self.node.mtu:
            return self._encapsulate(node_address, bytes(laid[len(prefix) : sizes[0]]), trace, from_pod)
        self.counters["tunnel.tx"] += len(sizes)
        if trace is not None:
            first = bytes(laid[: sizes[0]])
            stage = self._encap_stage(node_address, first[len(prefix):], first)
            trace.append(Stage(stage.stage, f"{stage.detail}; a super-packet of {len(packet)} B cut into "
                               f"{len(sizes)} segments of {mss} B of payload (the first shown)", stage.packet))
            self._carrier_stage("encap", node_address, first, trace)
        return [TunnelBurst(node_address, laid, sizes)]

    def _encap_stage(self, node_address: str, packet: bytes, datagram: bytes) -> Stage:
        port, peer = self._tunnel_port, self.peers[node_address]
        underlay = pcap.underlay_packet(datagram, (self.node.address, port), (node_address, port))
        if self._fou:
            return Stage(
                "fou-encap",
                f"foo-over-UDP: outer {self.node.address}:{port} → {node_address}:{port} ({peer.name}), "
                f"the {len(packet)} B packet bare as the UDP payload, {len(underlay)} B on the underlay: "
                f"{OUTER_IP_UDP} B overhead (IPv4 20 + UDP 8; VXLAN's would be 50)",
                underlay,
            )
        return Stage(
            "vxlan-encap",
            f"VNI {VNI}: outer {self.node.address}:{port} → {node_address}:{port} "
            f"({peer.name}), inner {self._mac} → {peer.mac}, {len(packet)} B packet, "
            f"{len(datagram)} B UDP payload, {len(underlay)} B on the underlay",
            underlay,
        )

    def _carrier_stage(self, direction: str, node_address: str, datagram: bytes, trace: list[Stage]) -> None:
        stage = self.carrier_stage(direction, node_address, datagram) if self.carrier_stage is not None else None
        if stage is not None:
            trace.append(stage)

    def _deliver(self, dst: int, packet: bytes, trace: list[Stage] | None, mss: int = 0) -> list[Output]:
        self.counters["delivered"] += 1
        if trace is not None:
            pod = self.pods[dst]
            what = f", a super-packet of segments of {mss} B of payload" if mss else ""
            trace.append(Stage("deliver", f"to pod {pod.key} ({pod.ip}), {len(packet)} B{what}", packet))
        return [DeliverSuper(dst, packet, mss)] if mss else [Deliver(dst, packet)]

    def _ingress_policy(self, key: FlowKey, trace: list[Stage] | None) -> Verdict:
        flow = Flow(PROTOCOL_NAMES[key[0]], int_to_ip(key[1]), key[2], int_to_ip(key[3]), key[4])
        return self._judge(PolicyDirection.INGRESS, flow, trace)

    def _judge(self, direction: PolicyDirection, flow: Flow, trace: list[Stage] | None) -> Verdict:
        """The policy hook's verdict, recorded in the trace. What comes from this node itself (a NodePort
        connection SNATed to it, a hairpin SNATed to its gateway) is not asked about: traffic from a
        pod's own node, like the pod's own, is never blocked by policy."""
        if direction is PolicyDirection.INGRESS and flow.src_ip in self._own_addresses:
            verdict = Verdict(True, "allowed: from the pod's own node")
        else:
            verdict = self.policy(direction, flow)
        if trace is not None:
            trace.append(Stage(f"{direction.value}-policy", describe_verdict(verdict)))
            if verdict.l7 is not None:
                trace.append(Stage("l7-policy", verdict.l7))
        return verdict

    # --- ingress: a VXLAN datagram from the underlay --------------------------------------------

    def from_tunnel(
        self, sender: str, datagram: bytes, now: float, trace: list[Stage] | None = None
    ) -> list[Output]:
        """A datagram from the underlay in this node's encapsulation: VXLAN, or with foo-over-UDP the
        bare IPv4 packet itself, which only a known node (a BGP next hop or a Node's address) may send."""
        if trace is None:
            return self.from_tunnel_batch([(datagram, sender)], now)
        return self._from_tunnel_stages(sender, datagram, now, trace)

    def from_tunnel_batch(self, datagrams: list[tuple[bytes | DatagramRun, str]], now: float) -> list[Output]:
        """What `from_tunnel` gives for each (datagram, sender) in turn, untraced, in one list: one
        socket wake-up's datagrams (a `DatagramRun` standing for its datagrams) pay the per-call costs
        once, and those on shortcuts are counted together. TCP segments for a pod that takes
        super-packets are first joined, per sender, into the super-packets they make (userspace GRO,
        `Shortcuts.joined`), each then decided on once (`from_tunnel_super`); in each flow the order
        stays the order of arrival."""
        if not self._super_pods:
            return self._tunnel_shortcuts(datagrams_apart(datagrams), now)
        outputs: list[Output] = []
        for part in self._shortcuts.joined(datagrams, self._super_pods, self.peers):
            if type(part) is list:
                outputs += self._tunnel_shortcuts(part, now)
            else:
                outputs += self.from_tunnel_super(part.sender, part.packet, part.mss, now)
        return outputs

    def _from_tunnel_stages(
        self, sender: str, datagram: bytes, now: float, trace: list[Stage] | None
    ) -> list[Output]:
        if trace is not None:
            self._carrier_stage("decap", sender, datagram, trace)
        peer = self.peers.get(sender)
        if self._fou:
            if peer is None:
                return self._drop("fou-unknown-sender", trace)
            self.counters["tunnel.rx"] += 1
            return self._decapsulated(peer, datagram, now, trace, datagram)
        if peer is None:
            return self._drop("vxlan-unknown-sender", trace)
        if len(datagram) < VXLAN_HEADER + ETH_HEADER:
            return self._drop("vxlan-short", trace)
        if datagram[:8] != VXLAN_HEADER_BYTES:  # per datagram: one compare; which part is wrong only on a drop
            if datagram[0:4] != _VXLAN_FLAGS_WORD or datagram[7]:
                return self._drop("vxlan-bad-flags", trace)
            return self._drop("vxlan-wrong-vni", trace)
        self.counters["tunnel.rx"] += 1
        ethertype = datagram[20:22]
        if ethertype == _ETHERTYPE_ARP:
            return self._answer_peer_arp(peer, datagram[22:], trace)
        if ethertype != ETHERTYPE_IPV4_BYTES:
            return self._drop("vxlan-inner-not-ipv4", trace)
        return self._decapsulated(peer, datagram[22:], now, trace, datagram)

    def from_tunnel_super(self, sender: str, packet: bytearray, mss: int, now: float) -> list[Output]:
        """The IPv4 super-packet that the segments of one flow from `sender`, read in one batch and joined
        (`segment.coalesce`, whose own buffer it is), make: decided on once, by the flow's shortcut or the
        stages, as each of them would have been; its conntrack entry and the counters count the segments."""
        peer = self.peers.get(sender)
        if peer is None:
            return self._drop(f"{self._scheme}-unknown-sender", None)
        count = -(-(len(packet) - 20 - (packet[32] >> 4) * 4) // mss) if len(packet) > 32 else 1
        self.counters["tunnel.rx"] += count
        outputs = self._shortcuts.from_tunnel_super(sender, packet, mss, count, now)
        if outputs is not None:
            return outputs
        whole = bytes(packet)  # the stages take packets as they came
        return self._decapsulated(peer, whole, now, None, whole, mss)

    def _decapsulated(
        self, peer: Peer, packet: bytes, now: float, trace: list[Stage] | None, datagram: bytes, mss: int = 0
    ) -> list[Output]:
        """The inner packet from a known node: a sound IPv4 header, a source inside a prefix routed to
        that node (strict reverse path) or the node's own address, a destination that is ours.
        `datagram` is the UDP payload it came in, for the trace."""
        scheme = self._scheme
        packet, problem = checked(packet)
        if problem:
            return self._drop(problem, trace)
        total = len(packet)
        src, dst = _ADDRS.unpack_from(packet, 12)
        sender = peer.address
        if trace is not None:
            outer = f"UDP port {self.node.fou_port}, {OUTER_IP_UDP} B off" if self._fou else f"VNI {VNI}"
            trace.append(
                Stage(
                    f"{scheme}-decap",
                    f"from {peer.name} ({sender}), {outer}, inner {int_to_ip(src)} → {int_to_ip(dst)}, {total} B",
                    pcap.underlay_packet(
                        datagram, (sender, self._tunnel_port), (self.node.address, self._tunnel_port)
                    ),
                )
            )
        source_route = self.routes.lookup(src)
        if (source_route is None or source_route.next_hop != sender) and src != ip_to_int(sender):
            return self._drop(f"{scheme}-spoofed-inner-source", trace)
        if dst not in self.pods:
            if dst == ip_to_int(self.node.address):
                # A pod's answer to a connection this node opened from its own address (NodePort).
                if trace is not None:
                    trace.append(Stage("host", f"for this node ({self.node.address}): to the host side"))
                return [ToHost(src, packet)]
            # DNAT happens at the source node, so what arrives here is addressed to a pod of ours.
            route = self.routes.lookup(dst)
            local = route is not None and route.kind is RouteKind.LOCAL
            return self._drop("no-such-pod" if local else f"{scheme}-not-for-this-node", trace)
        forwarded = self._hop(packet, trace)
        if forwarded is None:
            return self._time_exceeded(packet, trace)
        return self._inbound_to_pod(dst, forwarded, now, trace, sender=sender, mss=mss)

    def _inbound_to_pod(
        self, dst: int, packet: bytes, now: float, trace: list[Stage] | None, *, sender: str | None = None,
        mss: int = 0,
    ) -> list[Output]:
        """Conntrack, and for a new connection the pod's ingress policy, then delivery: for packets
        from another node (its address is `sender`) and those this node opens itself."""
        key, tcp_flags = flow_key(packet)
        if key is not None:
            tracked = self._follow_tracked(key, tcp_flags, packet, now, trace)
            if tracked is not None:
                packet, entry, direction = tracked
                if sender is not None and trace is None:
                    self._shortcuts.learn_from_tunnel(key, tcp_flags, sender, entry, direction)
            else:
                if trace is not None:
                    trace.append(Stage("conntrack", "new connection"))
                if not self._ingress_policy(key, trace).allowed:
                    return self._drop("policy-ingress", trace)
                if self.conntrack.create(key, reverse(key), now) is None:
                    return self._drop("conntrack-full", trace)
                self.counters["conntrack.created"] += 1
        else:
            packet, related = self._related(packet, now, trace)
            if not related and not self._judge(PolicyDirection.INGRESS, untracked_flow(packet), trace).allowed:
                return self._drop("policy-ingress", trace)
        return self._deliver(dst, packet, trace, mss)

    def _related(self, packet: bytes, now: float, trace: list[Stage] | None) -> tuple[bytes, bool]:
        """(packet, whether it is related to a connection conntrack knows, in Linux's words): an ICMP
        error about one. A related error passes where its connection did, and is NATed as that
        connection's packets going its way are, its quote to match: the client of a Service hears a
        refusal from the Service address, about the packet it sent there."""
        quoted = fastpath.icmp_error_quote(packet)
        hit = None if quoted is None else self.conntrack.lookup(reverse(quoted), now)
        if hit is None:
            return packet, False
        nat = nat_of(*hit)
        if nat is None:
            return packet, True
        buf = bytearray(packet)
        fastpath.rewrite_icmp_error(buf, src=nat[0], dst=nat[1])
        if trace is not None:
            what = describe_nat(hit[1], nat)
            trace.append(Stage("nat", f"ICMP error about {describe_key(quoted)}: {what}, its quote to match"))
        self.counters["nat.related"] += 1
        return bytes(buf), True

    def _answer_peer_arp(self, peer: Peer, payload: bytes, trace: list[Stage] | None) -> list[Output]:
        """A peer VTEP asking for an address of this node's podCIDR (a kernel vxlan device without a
        static neighbour entry does): it is at this node's VTEP MAC."""
        try:
            request = arp.decode(payload)
        except ValueError:
            return self._drop("bad-arp", trace)
        if request.op != arp.ArpOp.REQUEST or ipaddress.IPv4Address(request.target_ip) not in self._pod_cidr:
            return self._drop("arp-not-for-this-node", trace)
        answer = arp.encode(arp.reply(request, self._mac))
        frame = mac_to_bytes(request.sender_mac) + self._mac_bytes + _ETHERTYPE_ARP + answer
        self.counters["arp.answered"] += 1
        if trace is not None:
            trace.append(Stage("arp", f"{request.target_ip} is-at {self._mac}, answered to {peer.name}"))
        return [Tunnel(peer.address, VXLAN_HEADER_BYTES + frame)]

    # --- packets the host bridge and the node itself originate ----------------------------------

    def to_local_pod(self, packet: bytes, now: float, trace: list[Stage] | None = None) -> list[Output]:
        """A packet the host bridge relays back to one of its pods: the reply of a connection the pod
        opened, so conntrack un-NATs it (a pod that reached a hostNetwork endpoint through a Service
        sees the Service address answer). No policy applies: host traffic to local pods is allowed."""
        if trace is not None:
            trace.append(Stage("host-bridge", f"reply relayed from the host network, {len(packet)} B"))
        key, tcp_flags = flow_key(packet)
        if key is not None:
            hit = self.conntrack.lookup(key, now)
            if hit is not None:
                self.conntrack.update(hit[0], hit[1], tcp_flags, now)
                packet = self._nat_existing(hit[0], hit[1], packet, trace)
        dst = _ADDRS.unpack_from(packet, 12)[1]
        if dst not in self.pods:
            return self._drop("no-such-pod", trace)
        return self._deliver(dst, packet, trace)

    def from_node(self, packet: bytes, now: float, trace: list[Stage] | None = None) -> list[Output]:
        """A packet the node itself sends into the pod network: a NodePort connection bridged from a
        real socket, from the node address (SNAT) or from the client's. A local pod gets it as it would
        from the tunnel (conntrack, ingress policy); a remote pod's node does the same on its side. The
        pod's answers come back as `ToHost`."""
        dst = _ADDRS.unpack_from(packet, 12)[1]
        route = self.routes.lookup(dst)
        if route is None:
            return self._drop("no-route", trace)
        if trace is not None:
            trace.append(Stage("route", f"from the node to {int_to_ip(dst)}: {route.describe()}"))
        if route.kind is not RouteKind.LOCAL:
            return self._encapsulate(route.next_hop, packet, trace, None)
        if dst not in self.pods:
            return self._drop("no-such-pod", trace)
        return self._inbound_to_pod(dst, packet, now, trace)

    def _drop(self, reason: str, trace: list[Stage] | None) -> list[Output]:
        self.counters[f"drop.{reason}"] += 1
        if trace is not None:
            trace.append(Stage("drop", reason))
        return [Drop(reason)]
