"""The host bridge: pods reach host-network addresses (the API server, a hostNetwork DNS server on
127.0.0.x, anything outside the cluster) through an L4 relay that speaks from the node address.

This is the SNAT of a real node, done at layer 4: a pod's UDP flow becomes a UDP socket bound to the
node address; a pod's TCP connection is terminated here by a userspace TCP endpoint that impersonates
the destination and is spliced to a real TCP connection from the node address. A refused connection
answers the pod with RST, an unreachable UDP port with ICMP port unreachable, as the kernel would.

A `guard` (hostguard.py) names the host ports no pod may reach this way (the underlay's, BGP, etcd, the
components' status ports): a UDP flow to one is answered with ICMP administratively prohibited, a TCP one
with RST, as an iptables REJECT would, and counted (`refused.udp`, `refused.tcp`).

With a `target` function the same relay serves the other direction too (nodeagent/relaypods.py): packets
to a pod's port whose server is a host process are terminated here as that pod, and carried to the host
address `target` names for it. A `refused` function is then told of every refusal (the process behind the
pod's port is gone); a TCP client still gets its RST, but a refused UDP datagram is dropped (counted,
`udp.refused-dropped`) instead of answered with port unreachable: relaypods.py says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Callable

from podnet.nodeagent.hostguard import HostGuard
from podnet.nodeagent.pods.virtual.tcp import (
    ConnectionClosed,
    DataReceived,
    EndOfStream,
    RemoteProtocolError,
    TcpConnection,
    reset_for,
)
from podnet.overlay.wire import icmp, ipv4, tcp, udp
from podnet.overlay.wire.ipv4 import IPProtocol

from podnet.codec import DecodeError

UDP_IDLE_SECONDS = 30.0
CONNECT_TIMEOUT = 5.0
# Bytes read from the host side but not yet acknowledged by the pod before reading pauses.
MAX_IN_FLIGHT = 512 * 1024
UDP_MAX_PAYLOAD = 1450 - 28

FlowKey = tuple[str, int, str, int]  # pod ip, pod port, host ip, host port
Target = Callable[[str, int], tuple[str, int]]  # the address a flow is for -> the one to connect to
Refused = Callable[[str, int], None]  # told the address a flow was for when its host side refused it


def _same(ip: str, port: int) -> tuple[str, int]:
    return ip, port


class _UdpRelay(asyncio.DatagramProtocol):
    def __init__(self, bridge: HostBridge, key: FlowKey, first_packet: bytes):
        self.bridge = bridge
        self.key = key
        self.first_packet = first_packet  # quoted in an ICMP error if the port turns out closed
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last_used = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for payload in self.pending:
            self.transport.sendto(payload)
        self.pending.clear()

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.last_used = self.bridge.loop.time()
        pod_ip, pod_port, host_ip, host_port = self.key
        if len(data) > UDP_MAX_PAYLOAD:
            self.bridge.counters["drop.udp-reply-too-big"] += 1
            return
        body = udp.encode(udp.UdpDatagram(host_port, pod_port, data), host_ip, pod_ip)
        self.bridge.counters["udp.to-pod"] += 1
        self.bridge.deliver(ipv4.encode(ipv4.IPv4Packet(host_ip, pod_ip, IPProtocol.UDP, body)))

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError) and self.bridge.refused is not None:
            self.bridge.counters["udp.refused-dropped"] += 1
            self.bridge.refused(self.key[2], self.key[3])
        elif isinstance(exc, ConnectionRefusedError):
            self.bridge.counters["udp.port-unreachable"] += 1
            error = icmp.error_packet(icmp.port_unreachable(self.first_packet), self.key[2], self.first_packet)
            self.bridge.deliver(ipv4.encode(error))
        else:
            self.bridge.counters[f"udp.error-{type(exc).__name__}"] += 1

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _TcpRelay:
    def __init__(self, bridge: HostBridge, key: FlowKey):
        self.bridge = bridge
        self.key = key
        self.connection: TcpConnection | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.task: asyncio.Task | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.room = asyncio.Event()
        self.room.set()

    def flush(self) -> None:
        """Sends the pod what the connection produced, hands the host side its data, re-arms the timer."""
        connection = self.connection
        bridge = self.bridge
        pod_ip, _, host_ip, _ = self.key
        while events := connection.take_events():
            for event in events:
                if isinstance(event, DataReceived) and self.writer is not None:
                    self.writer.write(event.data)
                elif isinstance(event, EndOfStream) and self.writer is not None:
                    with contextlib.suppress(OSError, RuntimeError):
                        self.writer.write_eof()
                elif isinstance(event, ConnectionClosed):
                    bridge.forget_tcp(self)
        for segment in connection.take_segments():
            body = tcp.encode(segment, host_ip, pod_ip)
            bridge.deliver(ipv4.encode(ipv4.IPv4Packet(host_ip, pod_ip, IPProtocol.TCP, body)))
        if connection.unacknowledged < MAX_IN_FLIGHT:
            self.room.set()
        else:
            self.room.clear()
        deadline = connection.next_deadline()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if deadline is not None and self.bridge.tcp.get(self.key) is self:
            self.timer = bridge.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.connection.handle_timer(self.bridge.loop.time())
        self.flush()

    async def run(self, syn: tcp.TcpSegment, target: tuple[str, int]) -> None:
        bridge = self.bridge
        pod_ip, _, host_ip, _ = self.key
        try:
            reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(*target, local_addr=(bridge.node_address, 0)), CONNECT_TIMEOUT
            )
        except (TimeoutError, OSError) as exc:
            bridge.counters[f"tcp.connect-failed-{type(exc).__name__}"] += 1
            if isinstance(exc, ConnectionRefusedError) and bridge.refused is not None:
                bridge.refused(host_ip, self.key[3])
            reset = reset_for(syn)
            bridge.forget_tcp(self)
            if reset is not None:
                body = tcp.encode(reset, host_ip, pod_ip)
                bridge.deliver(ipv4.encode(ipv4.IPv4Packet(host_ip, pod_ip, IPProtocol.TCP, body)))
            return
        bridge.counters["tcp.connections"] += 1
        self.connection = TcpConnection.accept(syn, random.getrandbits(32), bridge.loop.time())
        self.flush()
        try:
            while data := await reader.read(65536):
                self.connection.send(data, bridge.loop.time())
                self.flush()
                await self.room.wait()
            self.connection.close(bridge.loop.time())
        except (OSError, ValueError):
            self.connection.abort(bridge.loop.time())
        self.flush()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.timer is not None:
            self.timer.cancel()
        if self.writer is not None:
            self.writer.close()


class HostBridge:
    def __init__(self, node_address: str, deliver: Callable[[bytes], None], target: Target = _same,
                 guard: HostGuard | None = None, refused: Refused | None = None):
        self.node_address = node_address
        self.guard = guard
        self.deliver = deliver  # hands an answer (from the flow's destination) back to the dataplane
        self.target = target
        self.refused = refused
        self.loop = asyncio.get_running_loop()
        self.counters: Counter[str] = Counter()
        self.udp: dict[FlowKey, _UdpRelay] = {}
        self.tcp: dict[FlowKey, _TcpRelay] = {}
        self._sweeper = self.loop.call_later(UDP_IDLE_SECONDS, self._sweep)

    def handle(self, packet: bytes, now: float) -> None:
        try:
            header = ipv4.decode(packet)
            if header.protocol == IPProtocol.UDP:
                self._udp(header, packet, now)
            elif header.protocol == IPProtocol.TCP:
                self._tcp(header)
            else:
                self.counters[f"drop.protocol-{int(header.protocol)}"] += 1
        except DecodeError:
            self.counters["drop.malformed"] += 1

    def _udp(self, header: ipv4.IPv4Packet, packet: bytes, now: float) -> None:
        datagram = udp.decode(header.payload, header.src, header.dst)
        key = (header.src, datagram.src_port, header.dst, datagram.dst_port)
        relay = self.udp.get(key)
        if relay is None:
            if self.guard is not None and self.guard.refuses("udp", header.dst, datagram.dst_port):
                self.counters["refused.udp"] += 1
                prohibited = icmp.IcmpUnreachable(icmp.UnreachableCode.ADMINISTRATIVELY_PROHIBITED, icmp.quote(packet))
                self.deliver(ipv4.encode(icmp.error_packet(prohibited, header.dst, packet)))
                return
            relay = self.udp[key] = _UdpRelay(self, key, packet)
            self.counters["udp.flows"] += 1
            endpoint = self.loop.create_datagram_endpoint(
                lambda: relay, local_addr=(self.node_address, 0), remote_addr=self.target(header.dst, datagram.dst_port)
            )
            task = asyncio.ensure_future(endpoint)
            task.add_done_callback(lambda t, key=key: self._udp_opened(t, key))
        relay.last_used = now
        self.counters["udp.to-host"] += 1
        if relay.transport is None:
            relay.pending.append(datagram.payload)
        else:
            relay.transport.sendto(datagram.payload)

    def _udp_opened(self, task: asyncio.Task, key: FlowKey) -> None:
        if task.cancelled() or task.exception() is not None:
            self.counters["udp.open-failed"] += 1
            self.udp.pop(key, None)

    def _tcp(self, header: ipv4.IPv4Packet) -> None:
        segment = tcp.decode(header.payload, header.src, header.dst)
        key = (header.src, segment.src_port, header.dst, segment.dst_port)
        relay = self.tcp.get(key)
        if relay is None:
            syn = segment.flags & (tcp.TcpFlags.SYN | tcp.TcpFlags.ACK | tcp.TcpFlags.RST) == tcp.TcpFlags.SYN
            refused = syn and self.guard is not None and self.guard.refuses("tcp", header.dst, segment.dst_port)
            if syn and not refused:
                relay = self.tcp[key] = _TcpRelay(self, key)
                relay.task = asyncio.ensure_future(relay.run(segment, self.target(header.dst, segment.dst_port)))
                return
            reset = reset_for(segment)
            if reset is not None:
                self.counters["refused.tcp" if refused else "tcp.reset-unknown"] += 1
                self.deliver(ipv4.encode(ipv4.IPv4Packet(header.dst, header.src, IPProtocol.TCP,
                                                         tcp.encode(reset, header.dst, header.src))))
            return
        if relay.connection is None:
            return  # a retransmitted SYN while the host side is still connecting
        try:
            relay.connection.receive(segment, self.loop.time())
        except RemoteProtocolError:
            self.counters["tcp.protocol-error"] += 1
            relay.connection.abort(self.loop.time())
        relay.flush()

    def forget_tcp(self, relay: _TcpRelay) -> None:
        if self.tcp.get(relay.key) is relay:
            del self.tcp[relay.key]
            if relay.writer is not None:
                relay.writer.close()

    def _sweep(self) -> None:
        cutoff = self.loop.time() - UDP_IDLE_SECONDS
        for key, relay in list(self.udp.items()):
            if relay.last_used < cutoff:
                relay.close()
                del self.udp[key]
        self._sweeper = self.loop.call_later(UDP_IDLE_SECONDS, self._sweep)

    def close(self) -> None:
        self._sweeper.cancel()
        for relay in self.udp.values():
            relay.close()
        for relay in self.tcp.values():
            relay.close()
        self.udp.clear()
        self.tcp.clear()
