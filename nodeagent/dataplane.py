"""The dataplane owner: the pure pipeline and everything that feeds it or carries out what it decides —
the underlay tunnel, the host bridge, NodePort listeners, relayed ports, the node's own endpoint — and the
traces recorded on the way.

Every entry point (`from_*`) takes what arrived, runs it through the pipeline and hands the outputs to
`run`, which sends, delivers and feeds the pods' answers back in until nothing is left. Pods' userspace
stacks are driven from here too: their timers and their finished operations (`operate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from podnet.nodeagent import encryption
from podnet.nodeagent.config import AgentConfig
from podnet.nodeagent.endpoints import KernelPod, LocalPod, RelayedPod, StackEndpoint
from podnet.nodeagent.hostbridge import HostBridge
from podnet.nodeagent.hostguard import guard_for
from podnet.nodeagent.l7splices import L7Splices
from podnet.nodeagent.nodeports import NodePorts, trusted_proxies
from podnet.nodeagent.pods.netns import NetnsPod
from podnet.nodeagent.pods.virtual import client as ops
from podnet.nodeagent.pods.virtual.l7proxy import L7_COUNTERS
from podnet.nodeagent.pods.virtual.stack import PodStack, SuperPacket
from podnet.nodeagent.relaypods import RelayedPods
from podnet.nodeagent.traces import Traces
from podnet.overlay.pipeline.forward import Pipeline
from podnet.overlay.pipeline.model import (
    Deliver,
    DeliverFrame,
    DeliverSuper,
    Encapsulation,
    NodeIdentity,
    Output,
    Peer,
    PodPort,
    Stage,
    ToHost,
    Tunnel,
    TunnelBurst,
    vtep_mac,
)
from podnet.overlay.pipeline.packets import flow_key
from podnet.overlay.tunnel import Tunnel as UdpTunnel
from podnet.overlay.wire.addresses import int_to_ip, ip_to_int
from podnet.overlay.wire.segment import DatagramRun, datagrams_apart, tcp_segments
from podnet.overlay.wireguard.tunnel import WireGuardTunnel

from podnet.backends import routing_backend
from podnet.rpc.agentmethods import PEER_RX, PEER_TX
from podnet.rpc.session import RpcError

log = logging.getLogger(__name__)

VTEP_MAC_ANNOTATION = "podnet.io/vtep-mac"
# A packet exchange that keeps re-entering the pipeline (two pods answering each other forever) is cut
# here per wake-up, what is left dropped and counted, so the loop stays responsive.
MAX_PUMP = 10_000
# The peers `faults.partition` cut off, kept in the state directory: a cut in the network outlives a
# restart of the agent, as a real one would.
PARTITIONS_FILE = "partitions.json"

# Starts an operation on a pod's stack at `now`; returns the operation's id.
StartOperation = Callable[[PodStack, float], int]


class Dataplane:
    def __init__(self, config: AgentConfig, on_relay_ready: Callable[[str], None]):
        self.config = config
        self.backend = routing_backend(config.backend)
        self.loop = asyncio.get_running_loop()
        self._on_relay_ready = on_relay_ready  # a relayed pod's host process came up or went away
        self.pipeline: Pipeline | None = None
        self.tunnel: UdpTunnel | None = None
        self.hostbridge: HostBridge | None = None
        self.nodeports: NodePorts | None = None
        self.relays: RelayedPods | None = None
        self.node_endpoint: StackEndpoint | None = None
        self.by_ip: dict[int, LocalPod | StackEndpoint] = {}
        self.traces = Traces()
        # Which new connections to a virtual pod go through the L7 proxy (set once policies are enforced).
        self.l7_lookup: Callable[[str, int, str, int], Any] | None = None
        self.l7_report: Callable[..., None] | None = None  # where the proxy's request records go
        # The verdict of a pod's new connection its egress HTTP rules cover, by (source ip, port).
        self.l7_egress: Callable[[str, int], Any] = lambda ip, port: None
        # The L7 verdicts waiting to be taken, to netns pods and from any pod (the enforcer's): the
        # dataplane looks for L7 connections only while one waits or a splice exists.
        self.l7_pending: Mapping = {}
        self.l7_pending_egress: Mapping = {}
        self.splices = L7Splices(self._l7_for, self._l7_reported, self._from_splice)

    async def start(self, pod_cidr: str) -> None:
        config = self.config
        identity = NodeIdentity(
            config.name,
            config.address,
            pod_cidr,
            cluster_cidr=config.cluster_cidr,
            vxlan_port=config.vxlan_port,
            encapsulation=Encapsulation(self.backend.encapsulation),
            fou_port=config.fou_port,
            mtu=encryption.pod_mtu(config),
        )
        self.pipeline = Pipeline(identity, rand=random.random)
        self.tunnel = encryption.underlay(config, self.pipeline, self.from_tunnel)
        await self.tunnel.open()
        self.tunnel.partitioned.update(self._saved_partitions())
        guard = guard_for((config.vxlan_port, config.fou_port, config.wireguard_port), config.server,
                          config.protected_ports)
        self.hostbridge = HostBridge(config.address, self.from_hostbridge, guard=guard)
        gateway = identity.gateway
        port = PodPort("node", config.name, gateway, vtep_mac(config.address))
        stack = PodStack(config.name, "node", gateway, port.mac, port.mac, [], config.name)
        self.node_endpoint = StackEndpoint(f"node/{config.name}", port, stack)
        self.add(self.node_endpoint)
        self.nodeports = NodePorts(config.address, lambda: self.pipeline.services, self.from_node,
                                   trusted_proxies(config.proxy_protocol_from))
        self.relays = RelayedPods(config.address, self.from_relay, self._on_relay_ready)

    def close_with(self, stack: contextlib.AsyncExitStack) -> None:
        """Closes the dataplane's sockets and listeners when `stack` unwinds."""
        stack.callback(self.tunnel.close)
        stack.callback(self.hostbridge.close)
        stack.callback(self.nodeports.close)
        stack.push_async_callback(self.relays.close)
        stack.callback(self.splices.close)

    def add(self, endpoint: LocalPod | StackEndpoint) -> None:
        self.by_ip[ip_to_int(endpoint.port.ip)] = endpoint
        if isinstance(endpoint, StackEndpoint):
            endpoint.stack.l7_lookup = self._l7_for
            endpoint.stack.l7_report = self._l7_reported
        self.pipeline.add_pod(endpoint.port, super_packets=_takes_super_packets(endpoint))

    def has_l7_proxy(self, ip: str) -> bool:
        """Whether this pod's connections can go through the L7 proxy: a netns pod's and a virtual pod's
        (a relayed pod's relayed ports bypass its stack, and its host process's packets the splices)."""
        endpoint = self.by_ip.get(ip_to_int(ip))
        return type(endpoint) is KernelPod or (
            isinstance(endpoint, StackEndpoint) and not isinstance(endpoint, RelayedPod)
        )

    def _from_splice(self, pod: KernelPod | StackEndpoint, to_pod: list[bytes], onward: list[bytes],
                     now: float) -> None:
        """What a splice sends on a timer: to the pod, and through the pipeline as the pod's."""
        self.run(self._spliced(pod, (to_pod, onward), now), now)

    def _spliced(self, pod: KernelPod | StackEndpoint, moved: tuple[list[bytes], list[bytes]],
                 now: float) -> list[Output]:
        """Hands a splice's packets for the pod to it, and returns what the pipeline makes of the rest
        and of the pod's answers."""
        to_pod, onward = moved
        # The splice's own packets first: what the pod answers may make the splice send more, which
        # must not overtake them (data before the ACK that completes a handshake is dropped).
        outputs: list[Output] = []
        for packet in onward:
            outputs += self.pipeline.from_pod(pod.port, packet, now)
        if to_pod:
            if type(pod) is KernelPod:
                for packet in to_pod:
                    pod.netns.deliver(packet)
            else:
                for answer in pod.stack.receive_batch(to_pod, now):
                    outputs += self._from_stack(pod, answer, now, None)
                self.after_stack(pod, now)
        return outputs

    def _from_stack(self, pod: StackEndpoint, packet: bytes, now: float, trace: list[Stage] | None) -> list[Output]:
        """A packet a pod's userspace stack sent: to the splice it belongs to, or into the pipeline (and
        to a new splice when the pod's egress HTTP rules cover the connection it opens)."""
        splices = self.splices
        if type(packet) is SuperPacket:
            if not (splices.from_pods or self.l7_pending_egress):
                return self.pipeline.from_pod(pod.port, packet, now, trace, packet.mss)
            # the splices read TCP as a wire carries it
            outputs = []
            for segment in tcp_segments(packet, packet.mss):
                outputs += self._from_stack(pod, segment, now, trace)
            return outputs
        if splices.from_pods and (moved := splices.from_pod(packet, now)) is not None:
            return self._spliced(pod, moved, now)
        outputs = self.pipeline.from_pod(pod.port, packet, now, trace)
        if self.l7_pending_egress and (verdict := self._egress_l7(packet)) is not None:
            return self._spliced(pod, splices.start_egress(pod, packet, verdict, now), now)
        return outputs

    def _l7_for(self, remote_ip: str, remote_port: int, local_ip: str, local_port: int) -> Any:
        return None if self.l7_lookup is None else self.l7_lookup(remote_ip, remote_port, local_ip, local_port)

    def _l7_reported(self, *record: Any) -> None:
        if self.l7_report is not None:
            self.l7_report(*record)

    def remove(self, pod: LocalPod) -> None:
        self.by_ip.pop(ip_to_int(pod.port.ip), None)
        self.pipeline.remove_pod(pod.port.ip)

    # ---- the other nodes -------------------------------------------------------------------------

    def on_peer_node(self, name: str, node: dict | None) -> None:
        """Another node appeared, changed (None: went away): one Node event becomes one peer and, in a
        backend whose routes come from Nodes, one route."""
        address = next(
            (a["address"] for a in ((node or {}).get("status") or {}).get("addresses") or []
             if a.get("type") == "InternalIP"),
            None,
        )
        encryption.learn_peer(self.tunnel, name, address, node)
        if node is None:
            self.pipeline.remove_peer(name)
            log.info("node %s gone: route removed", name)
            return
        if not address:
            return
        pod_cidr = (node.get("spec") or {}).get("podCIDR")
        mac = ((node.get("metadata") or {}).get("annotations") or {}).get(VTEP_MAC_ANNOTATION) or vtep_mac(address)
        peer = Peer(name, address, mac)
        current = self.pipeline.peers.get(address)
        route = self.pipeline.routes.lookup(ip_to_int(pod_cidr.split("/")[0])) if pod_cidr else None
        if current == peer and (route is not None and str(route.prefix) == pod_cidr and route.next_hop == address):
            return
        self.pipeline.set_peer(peer, pod_cidr if self.backend.routes_from_nodes else None)
        log.info("node %s: VTEP %s at %s, route %s", name, mac, address, pod_cidr)

    # ---- packets in ------------------------------------------------------------------------------

    def from_node(self, packet: bytes) -> None:
        """A packet a NodePort connection sends into the pod network."""
        now = time.monotonic()
        self.run(self.pipeline.from_node(packet, now), now)

    def from_tunnel(self, datagrams: list[tuple[bytes | DatagramRun, str]]) -> None:
        """One wake-up's datagrams from the underlay (runs of them as a read brought them joined), through
        the pipeline and carried out together."""
        now = time.monotonic()
        traces = self.traces
        if not (traces.by_key or traces.watches):
            self.run(self.pipeline.from_tunnel_batch(datagrams, now), now, checksum_unnecessary=self.tunnel.authenticates)
            return
        from_tunnel, offset = self.pipeline.from_tunnel, self.pipeline.inner_offset
        outputs: list[Output] = []
        for datagram, sender in datagrams_apart(datagrams):
            inner = datagram[offset:]
            trace = traces.stages_for(inner) or traces.watched(inner)
            outputs += from_tunnel(sender, datagram, now, trace)
        self.run(outputs, now, checksum_unnecessary=self.tunnel.authenticates)

    def from_relay(self, packet: bytes) -> None:
        """What a relayed pod's host process answers, leaving as that pod's packet."""
        pod = self.by_ip.get(int.from_bytes(packet[12:16], "big"))
        if pod is None:
            return
        now = time.monotonic()
        trace = self.traces.stages_for(packet) if self.traces.by_key else None
        self.run(self.pipeline.from_pod(pod.port, packet, now, trace), now)

    def from_hostbridge(self, packet: bytes) -> None:
        now = time.monotonic()
        trace = self.traces.stages_for(packet) if self.traces.by_key else None
        self.run(self.pipeline.to_local_pod(packet, now, trace), now)

    def from_netns_pod(self, netns_pod: NetnsPod, frames: list[tuple[bytes, int]]) -> None:
        """Frames a netns pod's kernel sent on its eth0: into the pipeline, as a virtual pod's packets
        (a TCP super-packet, with the segment size its kernel left to the TAP, as one)."""
        pod = self.by_ip.get(ip_to_int(netns_pod.net.ip))
        if pod is None:
            return
        now = time.monotonic()
        traces = self.traces
        splices, pending_egress = self.splices, self.l7_pending_egress
        outputs: list[Output] = []
        if (splices.from_pods or pending_egress) and any(mss for _, mss in frames):
            # the splices read TCP as a wire carries it: a super-packet goes to them as its segments
            frames = [(frame[:14] + segment, 0) for frame, mss in frames
                      for segment in (tcp_segments(frame[14:], mss) if mss else (frame[14:],))]
        for frame, mss in frames:
            if splices.from_pods and frame[12:14] == b"\x08\x00":
                moved = splices.from_pod(frame[14:], now)
                if moved is not None:
                    outputs += self._spliced(pod, moved, now)
                    continue
            trace = traces.stages_for(frame[14:]) if traces.by_key and frame[12:14] == b"\x08\x00" else None
            decided = self.pipeline.from_pod_frame(pod.port, frame, now, trace, mss)
            if pending_egress and (verdict := self._egress_l7(frame[14:])) is not None:
                decided = self._spliced(pod, splices.start_egress(pod, frame[14:], verdict, now), now)
            outputs.extend(decided)
            if trace is not None and (key := flow_key(frame[14:])[0]) is not None:
                traces.follow_reply(key, trace, self.pipeline.conntrack, now)
        self.run(outputs, now)

    def _egress_l7(self, packet: bytes) -> Any:
        """The L7 verdict of the connection this packet (a pod's SYN, just through the pipeline) opens,
        when its egress HTTP rules cover it."""
        key, flags = flow_key(packet)
        if key is None or key[0] != 6 or flags & 0x16 != 0x02:
            return None
        return self.l7_egress(int_to_ip(key[1]), key[2])

    # ---- carrying out ----------------------------------------------------------------------------

    def run(self, outputs: list[Output], now: float, *, checksum_unnecessary: bool = False) -> None:
        """Carries out what the pipeline decided, feeding pods' answers back in until all is sent. It goes
        in rounds: a round sends what is to be sent and hands each virtual pod the packets for it as one
        batch; the pods' answers, through the pipeline, make the next round. Datagrams for the tunnel wait
        for the end, to leave for each node as one burst (a few sends with UDP_SEGMENT, not one each).
        `checksum_unnecessary`: the outputs carry packets their carrier authenticated, whose UDP checksums
        the pods' stacks need not verify (the answers of later rounds do not come with that mark)."""
        by_ip, from_pod = self.by_ip, self.pipeline.from_pod
        to_nodes: dict[str, list[bytes | TunnelBurst]] = {}
        traces = self.traces
        traced = traces.by_key
        # Endpoints whose stacks took packets: their events and timers are seen to once, after the last
        # round, however many packets they received.
        received: dict[int, StackEndpoint] = {}
        budget = MAX_PUMP
        splices, pending, pending_egress = self.splices, self.l7_pending, self.l7_pending_egress
        while outputs:
            spliced: list[Output] = []
            if len(outputs) > budget:
                self.pipeline.counters["drop.pump-limit"] += len(outputs) - budget
                outputs = outputs[:budget]
            budget -= len(outputs)
            batches: dict[int, tuple[StackEndpoint, list[bytes]]] = {}
            segmented: list[Output] = []  # super-packets for pods that take segments: the next round's
            for out in outputs:
                kind = type(out)
                if kind is Deliver:
                    pod = by_ip.get(out.pod_ip)
                    if pod is None:
                        continue
                    pod_kind = type(pod)
                    if pod_kind is KernelPod:
                        if (splices.to_pods or pending) and (
                            moved := splices.to_pod(pod, out.packet, now, accept=True)
                        ) is not None:
                            spliced += self._spliced(pod, moved, now)
                            continue
                        pod.netns.deliver(out.packet)
                        continue
                    if pod_kind is RelayedPod and self.relays.take(out.packet, now):
                        continue
                    if splices.to_pods and (moved := splices.to_pod(pod, out.packet, now, accept=False)) is not None:
                        spliced += self._spliced(pod, moved, now)
                        continue
                    batch = batches.get(id(pod))
                    if batch is None:
                        batches[id(pod)] = (pod, [out.packet])
                    else:
                        batch[1].append(out.packet)
                elif kind is Tunnel:
                    queued = to_nodes.get(out.node_address)
                    if queued is None:
                        to_nodes[out.node_address] = [out.datagram]
                    else:
                        queued.append(out.datagram)
                elif kind is TunnelBurst:
                    to_nodes.setdefault(out.node_address, []).append(out)
                elif kind is DeliverSuper:
                    pod = by_ip.get(out.pod_ip)
                    if type(pod) is KernelPod and pod.netns.offloads and not (splices.to_pods or pending):
                        pod.netns.deliver_super(out.packet, out.mss)
                    elif _takes_super_packets(pod) and not splices.to_pods:  # a stack takes it whole, as bytes
                        batches.setdefault(id(pod), (pod, []))[1].append(bytes(out.packet))
                    elif pod is not None:  # segments, for a stack or for the splices, which take those
                        segmented += [Deliver(out.pod_ip, segment) for segment in tcp_segments(out.packet, out.mss)]
                elif kind is ToHost:
                    if not self.nodeports.claim(out.packet):  # an answer to a NodePort connection, or
                        self.hostbridge.handle(out.packet, now)
                elif kind is DeliverFrame:  # an ARP answer; virtual pods' ARP never reaches the pipeline
                    pod = by_ip.get(out.pod_ip)
                    if type(pod) is KernelPod:
                        pod.netns.deliver_frame(out.frame)
            outputs = spliced + segmented
            for pod, packets in batches.values():
                received[id(pod)] = pod
                for packet in pod.stack.receive_batch(packets, now, checksum_unnecessary=checksum_unnecessary):
                    trace = traces.stages_for(packet) if traced else None
                    if splices.from_pods or pending_egress:
                        outputs += self._from_stack(pod, packet, now, trace)
                    elif type(packet) is SuperPacket:
                        outputs += from_pod(pod.port, packet, now, trace, packet.mss)
                    else:
                        outputs += from_pod(pod.port, packet, now, trace)
            checksum_unnecessary = False
            if outputs and budget <= 0:
                self.pipeline.counters["drop.pump-limit"] += len(outputs)
                break
        for address, queued in to_nodes.items():
            self._send_queued(address, queued)
        for pod in received.values():
            self.after_stack(pod, now)

    def _send_queued(self, address: str, queued: list[bytes | TunnelBurst]) -> None:
        """Sends one node's datagrams and bursts in the order they were queued: each run of datagrams
        as one burst, each burst as it lies."""
        tunnel = self.tunnel
        datagrams: list[bytes] = []
        for item in queued:
            if type(item) is TunnelBurst:
                if datagrams:
                    tunnel.send_burst(address, datagrams)
                    datagrams = []
                tunnel.send_laid(address, item.laid, item.sizes)
            else:
                datagrams.append(item)
        if datagrams:
            tunnel.send_burst(address, datagrams)

    def emit(self, pod: StackEndpoint, packets: list[bytes], now: float, trace: list[Stage] | None = None) -> None:
        """Sends what a stack wrote, and sees to its events and timer."""
        outputs: list[Output] = []
        for packet in packets:
            outputs += self._from_stack(pod, packet, now, trace)
        self.after_stack(pod, now)
        self.run(outputs, now)

    def after_stack(self, pod: StackEndpoint, now: float) -> None:
        """Hands finished operations to their waiters and re-arms the pod's timer."""
        for event in pod.stack.take_events():
            listener = pod.listeners.get(event.op)
            if listener is not None:
                listener(event)
            if isinstance(event, ops.Completed | ops.Failed):
                future = pod.waiting.pop(event.op, None)
                if future is not None and not future.done():
                    future.set_result(event)
        deadline = pod.stack.next_deadline()
        if deadline is None:
            return
        if pod.timer is not None:
            if pod.timer_at <= deadline:
                return
            pod.timer.cancel()
        pod.timer_at = deadline
        pod.timer = self.loop.call_at(max(deadline, now), self._poll, pod)

    def _poll(self, pod: StackEndpoint) -> None:
        pod.timer = None
        if self.by_ip.get(ip_to_int(pod.port.ip)) is not pod:
            return
        now = time.monotonic()
        self.emit(pod, pod.stack.poll(now), now)

    async def operate(self, pod: StackEndpoint, start: StartOperation, timeout: float,
                      trace: list[Stage] | None = None) -> ops.OperationEvent:
        """Starts an operation on the pod's stack and waits for its Completed or Failed."""
        now = time.monotonic()
        try:
            op = start(pod.stack, now)
        except ValueError as exc:
            raise RpcError("BadRequest", str(exc)) from None
        future = self.loop.create_future()
        pod.waiting[op] = future
        packets = pod.stack.poll(now)
        keys = self.traces.start_probe(packets, trace) if trace is not None else []
        self.emit(pod, packets, now, trace)
        for key in keys:
            self.traces.follow_reply(key, trace, self.pipeline.conntrack, now)
        try:
            return await asyncio.wait_for(future, timeout + 1.0)
        finally:
            pod.waiting.pop(op, None)

    async def sweep_conntrack(self, shutdown: asyncio.Event) -> None:
        while not shutdown.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(shutdown.wait(), self.config.conntrack_sweep_interval)
            now = time.monotonic()
            self.pipeline.expire_connections(now)
            if self.pipeline.services is not None:
                self.pipeline.services.expire_affinity(now)

    # ---- what it counts, and the faults it is told to play ----------------------------------------

    def counters(self) -> dict[str, int]:
        merged: dict[str, int] = dict(self.pipeline.counters)
        for name, value in self.tunnel.counters.items():
            merged[f"tunnel.{name}"] = merged.get(f"tunnel.{name}", 0) + value
        if isinstance(self.tunnel, WireGuardTunnel):
            merged.update(self.tunnel.device_counters())
        for address, value in self.tunnel.sent_to.items():
            merged[f"{PEER_TX}{address}"] = value
        for address, value in self.tunnel.received_from.items():
            merged[f"{PEER_RX}{address}"] = value
        for name, value in self.hostbridge.counters.items():
            merged[f"hostbridge.{name}"] = value
        for name, value in self.nodeports.counters.items():
            merged[f"nodeports.{name}"] = value
        for name, value in self.relays.bridge.counters.items():
            merged[f"relay.{name}"] = value
        # The L7 proxy's verdicts on requests, summed over the pods it stands in front of.
        for endpoint in self.by_ip.values():
            if isinstance(endpoint, StackEndpoint):
                for name in L7_COUNTERS:
                    if value := endpoint.stack.counters.get(name):
                        merged[f"l7.{name[3:]}"] = merged.get(f"l7.{name[3:]}", 0) + value
        for name, value in self.splices.counters.items():
            merged[f"l7.{name.removeprefix('l7_')}"] = merged.get(f"l7.{name.removeprefix('l7_')}", 0) + value
        merged["conntrack.entries"] = len(self.pipeline.conntrack)
        merged["conntrack.dropped-full"] = self.pipeline.conntrack.dropped_full
        return merged

    def partition(self, peer: str, drop: bool) -> list[str]:
        """Cuts off (or heals) the underlay to `peer`, remembered across restarts; returns who is cut off."""
        if drop:
            self.tunnel.partitioned.add(peer)
        else:
            self.tunnel.partitioned.discard(peer)
        path = self.config.state_path / PARTITIONS_FILE
        path.with_suffix(".tmp").write_text(json.dumps(sorted(self.tunnel.partitioned)))
        os.replace(path.with_suffix(".tmp"), path)
        return sorted(self.tunnel.partitioned)

    def _saved_partitions(self) -> list[Any]:
        try:
            peers = json.loads((self.config.state_path / PARTITIONS_FILE).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", PARTITIONS_FILE, exc)
            return []
        return [peer for peer in peers if isinstance(peer, str)] if isinstance(peers, list) else []


def _takes_super_packets(endpoint: LocalPod | StackEndpoint | None) -> bool:
    """Whether TCP super-packets reach this endpoint whole: a netns pod's TAP with offloads, or a userspace
    stack (not a relayed pod's, whose relayed ports take packets as a wire carries them)."""
    if type(endpoint) is KernelPod:
        return endpoint.netns.offloads
    return isinstance(endpoint, StackEndpoint) and not isinstance(endpoint, RelayedPod)
