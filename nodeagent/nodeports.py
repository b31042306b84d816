"""NodePorts: a real TCP and UDP listener on the node address for every nodePort in the service table,
each client bridged into the pod network toward the endpoint kube-proxy's table picks.

A TCP client is accepted here and spliced to a userspace TCP connection that the node opens to the
endpoint (`Pipeline.from_node`); a UDP client's datagrams become datagrams to the endpoint, and the
endpoint's answers are sent back to the client from the nodePort. The source the pod sees follows
externalTrafficPolicy, as Kubernetes does it:
- Cluster: SNAT to the node address and a port of the node's choosing, so the answer comes back through
  this node even when the endpoint lives on another one;
- Local: the client's own address and port (only local endpoints are eligible, so nothing crosses the
  tunnel with it).
A connection may start with a PROXY protocol v2 header (the cloud load balancer sends one): the header is
never passed on, and the client it names is taken for the client only when the connection comes from an
address the agent was told is the load balancer's (`--proxy-protocol-from`), as HAProxy and nginx trust
only their listed proxies. From anyone else the header is ignored and counted (`*.untrusted-proxy-header`):
the pod sees the real peer, and a local client cannot claim an address that an ipBlock admits.

The pipeline hands packets addressed to host addresses to `claim`: those that answer one of these
connections are taken here, the rest go to the host bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import socket
import struct
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from podnet.nodeagent.pods.virtual.tcp import (
    CloseReason,
    Connected,
    ConnectionClosed,
    DataReceived,
    EndOfStream,
    RemoteProtocolError,
    TcpConnection,
)
from podnet.overlay.pipeline.nat import ServiceTable
from podnet.overlay.wire import fastpath, ipv4, proxyv2, tcp, udp
from podnet.overlay.wire.addresses import ip_to_int
from podnet.overlay.wire.ipv4 import IPProtocol

from podnet.codec import DecodeError

log = logging.getLogger(__name__)

SNAT_PORTS = range(32768, 61000)
# How long a new TCP client has to start talking before it is taken to send no PROXY header.
FIRST_BYTES_WAIT = 0.5
UDP_IDLE_SECONDS = 30.0
MAX_IN_FLIGHT = 512 * 1024
UDP_MAX_PAYLOAD = 1450 - 28
_LINGER_RESET = struct.pack("ii", 1, 0)

# What the pod's answer carries: (protocol, pod ip, pod port, our ip, our port), ints as in fastpath.
ReplyKey = tuple[int, int, int, int, int]


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes the client's connection with RST, as a refused connection looks to it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    writer.close()


async def read_proxy_header(reader: asyncio.StreamReader) -> tuple[proxyv2.ProxyHeader | None, bytes]:
    """(the PROXY v2 header the client starts with, or None; the bytes read after it). DecodeError for a
    header that is malformed."""
    data = b""
    while True:
        verdict = proxyv2.detect(data)
        if verdict is False:
            return None, data
        if verdict and len(data) >= proxyv2.FIXED_LENGTH:
            total = proxyv2.header_length(data)
            if len(data) >= total:
                return proxyv2.decode(data[:total]), data[total:]
        try:
            chunk = await asyncio.wait_for(reader.read(65536), FIRST_BYTES_WAIT if not data else 5.0)
        except TimeoutError:
            if data:
                raise DecodeError("PROXY v2 header: incomplete") from None
            return None, b""  # a client that waits for the server to speak first
        if not chunk:
            return None, data
        data += chunk


def trusted_proxies(sources: Sequence[str]) -> tuple[ipaddress.IPv4Network, ...]:
    """The networks (addresses or CIDRs) whose PROXY headers are believed; ValueError for a bad one."""
    return tuple(ipaddress.IPv4Network(source, strict=False) for source in sources)


def client_of(header: proxyv2.ProxyHeader | None, peer: tuple[str, int],
              trusted: Sequence[ipaddress.IPv4Network]) -> tuple[tuple[str, int], bool]:
    """(who the client is, whether a header was refused): the header's source when the peer is a trusted
    proxy and the header names an IPv4 client, else the peer itself."""
    if header is None:
        return peer, False
    if not any(ipaddress.IPv4Address(peer[0]) in network for network in trusted):
        return peer, True
    if header.command is proxyv2.Command.PROXY and header.family is proxyv2.Family.INET:
        return (header.src_address, header.src_port), False
    return peer, False


@dataclass(slots=True)
class _Flow:
    """One bridged client: where its packets go in the pod network and where answers go out."""

    node_port: int
    src: tuple[str, int]  # the source the pod sees
    dst: tuple[str, int]  # the endpoint
    reply_key: ReplyKey
    last_used: float = 0.0
    client: tuple[str, int] | None = None  # UDP: the socket address answers are sent to
    listener: _UdpListener | None = None
    bridge: _TcpBridge | None = None


class _TcpBridge:
    def __init__(self, ports: NodePorts, flow: _Flow, writer: asyncio.StreamWriter):
        self.ports = ports
        self.flow = flow
        self.writer = writer
        now = ports.loop.time()
        self.connection = TcpConnection.connect(flow.src[1], flow.dst[1], random.getrandbits(32), now)
        self.timer: asyncio.TimerHandle | None = None
        self.room = asyncio.Event()
        self.room.set()
        self.closed = asyncio.Event()
        # Resolved when the handshake ends: None once connected, the reason when it failed.
        self.opened: asyncio.Future[CloseReason | None] = ports.loop.create_future()

    def flush(self) -> None:
        connection = self.connection
        while events := connection.take_events():
            for event in events:
                if isinstance(event, Connected) and not self.opened.done():
                    self.opened.set_result(None)
                elif isinstance(event, DataReceived):
                    self.writer.write(event.data)
                elif isinstance(event, EndOfStream):
                    with contextlib.suppress(OSError, RuntimeError):
                        self.writer.write_eof()
                elif isinstance(event, ConnectionClosed):
                    self._finish(event.reason)
        src_ip, dst_ip = self.flow.src[0], self.flow.dst[0]
        for segment in connection.take_segments():
            body = tcp.encode(segment, src_ip, dst_ip)
            self.ports.send(ipv4.encode(ipv4.IPv4Packet(src_ip, dst_ip, IPProtocol.TCP, body)))
        if connection.unacknowledged < MAX_IN_FLIGHT:
            self.room.set()
        else:
            self.room.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        deadline = connection.next_deadline()
        if deadline is not None and not self.closed.is_set():
            self.timer = self.ports.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.connection.handle_timer(self.ports.loop.time())
        self.flush()

    def receive(self, segment: tcp.TcpSegment) -> None:
        try:
            self.connection.receive(segment, self.ports.loop.time())
        except RemoteProtocolError:
            self.ports.counters["tcp.protocol-error"] += 1
            self.connection.abort(self.ports.loop.time())
        self.flush()

    def _finish(self, reason: CloseReason) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        self.room.set()
        if not self.opened.done():
            self.opened.set_result(reason)
        self.ports.counters[f"tcp.closed-{reason.name.lower()}"] += 1
        if reason is CloseReason.NORMAL:
            self.writer.close()
        else:
            _reset(self.writer)
        # The connection may linger in TIME_WAIT; its key stays taken until the timer ends it.
        self.ports.loop.call_later(2.0, self.ports.forget, self.flow)

    async def run(self, reader: asyncio.StreamReader, first: bytes) -> None:
        loop = self.ports.loop
        self.flush()
        try:
            if first:
                self.connection.send(first, loop.time())
                self.flush()
            while not self.closed.is_set():
                data = await reader.read(65536)
                if self.closed.is_set():
                    break
                if not data:
                    self.connection.close(loop.time())
                    self.flush()
                    break
                self.connection.send(data, loop.time())
                self.flush()
                await self.room.wait()
            await self.closed.wait()
        except (OSError, ValueError, RuntimeError):
            self.connection.abort(loop.time())
            self.flush()
        finally:
            if self.timer is not None and self.closed.is_set():
                self.timer.cancel()


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, ports: NodePorts, node_port: int):
        self.ports = ports
        self.node_port = node_port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.ports.udp_in(self, data, addr)

    def error_received(self, exc: Exception) -> None:
        self.ports.counters[f"udp.error-{type(exc).__name__}"] += 1


@dataclass(slots=True)
class _Listeners:
    tcp: asyncio.AbstractServer | None = None
    udp: _UdpListener | None = None
    failed: set[str] = field(default_factory=set)


class NodePorts:
    def __init__(self, address: str, table: Callable[[], ServiceTable | None], send: Callable[[bytes], None],
                 proxies: Sequence[ipaddress.IPv4Network] = ()):
        self.address = address
        self.proxies = tuple(proxies)  # whose PROXY protocol headers name the client
        self.table = table
        self.send = send  # hands a packet the node opens toward a pod to the pipeline (`from_node`)
        self.loop = asyncio.get_running_loop()
        self.counters: Counter[str] = Counter()
        self.listening: dict[tuple[int, str], asyncio.AbstractServer | _UdpListener] = {}
        self.flows: dict[ReplyKey, _Flow] = {}
        self.udp_clients: dict[tuple[int, tuple[str, int]], _Flow] = {}
        self._next_port = random.choice(SNAT_PORTS)
        self._bridges: set[asyncio.Task] = set()
        self._sweeper = self.loop.call_later(UDP_IDLE_SECONDS, self._sweep)

    # ---- listeners -------------------------------------------------------------------------------

    async def reconcile(self, wanted: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Opens a listener for every (nodePort, protocol) wanted and closes the others; returns the
        ones listening."""
        wanted_set = {(port, protocol) for port, protocol in wanted if protocol in ("TCP", "UDP")}
        for key in set(self.listening) - wanted_set:
            listener = self.listening.pop(key)
            if isinstance(listener, _UdpListener):
                if listener.transport is not None:
                    listener.transport.close()
            else:
                listener.close()
        for port, protocol in sorted(wanted_set - set(self.listening)):
            try:
                if protocol == "TCP":
                    self.listening[(port, protocol)] = await asyncio.start_server(
                        lambda r, w, port=port: self._serve_tcp(port, r, w),
                        self.address,
                        port,
                        reuse_address=True,
                    )
                else:
                    _, listener = await self.loop.create_datagram_endpoint(
                        lambda port=port: _UdpListener(self, port), local_addr=(self.address, port)
                    )
                    self.listening[(port, protocol)] = listener
            except OSError as exc:
                self.counters["listen-failed"] += 1
                log.warning("nodePort %s:%d/%s: %s", self.address, port, protocol, exc)
                continue
            log.info("nodePort %s:%d/%s listening", self.address, port, protocol)
        return sorted(self.listening)

    # ---- flows -----------------------------------------------------------------------------------

    def _choose(self, node_port: int, protocol: str, client: tuple[str, int]) -> _Flow | None:
        """The flow for a new client, or None (counted) when no endpoint may take it."""
        table = self.table()
        decision = (
            table.lookup_node_port(protocol, node_port, client[0], random.random(), self.loop.time())
            if table
            else None
        )
        if decision is None or decision.reject:
            self.counters[f"{protocol.lower()}.no-endpoint"] += 1
            return None
        src = client if table.preserves_source(node_port, protocol) else (self.address, self._snat_port())
        number = IPProtocol.TCP if protocol == "TCP" else IPProtocol.UDP
        reply_key = (int(number), ip_to_int(decision.ip), decision.port, ip_to_int(src[0]), src[1])
        if reply_key in self.flows:
            self.counters[f"{protocol.lower()}.source-in-use"] += 1
            return None
        flow = _Flow(node_port, src, (decision.ip, decision.port), reply_key, self.loop.time())
        self.flows[reply_key] = flow
        self.counters[f"{protocol.lower()}.flows"] += 1
        return flow

    def _snat_port(self) -> int:
        in_use = {key[4] for key in self.flows if key[3] == ip_to_int(self.address)}
        for _ in SNAT_PORTS:
            port = self._next_port
            self._next_port = port + 1 if port + 1 < SNAT_PORTS.stop else SNAT_PORTS.start
            if port not in in_use:
                return port
        raise OSError("no SNAT port left")

    def forget_stale_udp(self, serving: Mapping[int, AbstractSet[str]]) -> int:
        """Forgets the UDP clients' flows to an endpoint that no longer serves their nodePort (`serving`:
        nodePort -> serving endpoint addresses; a nodePort not in it keeps its flows), so that a client's
        next datagram is balanced afresh, as kube-proxy clears such conntrack entries; returns how many."""
        stale = [flow for flow in self.udp_clients.values()
                 if flow.node_port in serving and flow.dst[0] not in serving[flow.node_port]]
        for flow in stale:
            self.forget(flow)
            self.counters["udp.stale-endpoint-forgotten"] += 1
        return len(stale)

    def forget(self, flow: _Flow) -> None:
        if self.flows.get(flow.reply_key) is flow:
            del self.flows[flow.reply_key]
        if flow.client is not None and self.udp_clients.get((flow.node_port, flow.client)) is flow:
            del self.udp_clients[(flow.node_port, flow.client)]

    async def _serve_tcp(
        self, node_port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        peer = writer.get_extra_info("peername")
        try:
            header, first = await read_proxy_header(reader)
        except (DecodeError, OSError) as exc:
            self.counters["tcp.bad-proxy-header"] += 1
            log.info("nodePort %d: %s from %s", node_port, exc, peer)
            _reset(writer)
            return
        client, refused = client_of(header, peer, self.proxies)
        if refused:
            self.counters["tcp.untrusted-proxy-header"] += 1
            log.info("nodePort %d: ignored a PROXY header from %s, not a trusted proxy", node_port, peer[0])
        elif header is not None:
            self.counters["tcp.proxy-header"] += 1
        if not first and reader.at_eof():
            # Closed without a byte: a load balancer's TCP health check. No endpoint is bothered.
            self.counters["tcp.empty"] += 1
            writer.close()
            return
        try:
            flow = self._choose(node_port, "TCP", client)
        except OSError:
            flow = None
        if flow is None:
            _reset(writer)
            return
        flow.bridge = _TcpBridge(self, flow, writer)
        await self._run_bridge(flow, reader, first)

    async def connect(self, ip: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A TCP connection from the node (its address, a SNAT port) to `ip:port` in the pod network, as
        streams once the handshake is done: what the kubelet's port-forward does to a pod. Raises
        ConnectionRefusedError (the pod answered RST) or TimeoutError. The streams are one end of a
        socket pair whose other end a bridge splices to the userspace connection, as a nodePort client's."""
        src = (self.address, self._snat_port())
        reply_key = (int(IPProtocol.TCP), ip_to_int(ip), port, ip_to_int(src[0]), src[1])
        flow = self.flows[reply_key] = _Flow(0, src, (ip, port), reply_key, self.loop.time())
        ours, theirs = socket.socketpair()
        bridge_reader, bridge_writer = await asyncio.open_connection(sock=theirs)
        flow.bridge = _TcpBridge(self, flow, bridge_writer)
        task = self.loop.create_task(self._run_bridge(flow, bridge_reader))
        self._bridges.add(task)
        task.add_done_callback(self._bridges.discard)
        try:
            reason = await flow.bridge.opened
        except BaseException:  # given up (cancelled) mid-handshake: the bridge reads EOF and lets go
            ours.close()
            raise
        if reason is not None:
            ours.close()
            if reason is CloseReason.REFUSED:
                raise ConnectionRefusedError(f"{ip}:{port} answered RST")
            raise TimeoutError(f"{ip}:{port} did not answer")
        return await asyncio.open_connection(sock=ours)

    async def _run_bridge(self, flow: _Flow, reader: asyncio.StreamReader, first: bytes = b"") -> None:
        try:
            await flow.bridge.run(reader, first)
        finally:
            if not flow.bridge.closed.is_set():
                flow.bridge.connection.abort(self.loop.time())
                flow.bridge.flush()
                self.forget(flow)

    def udp_in(self, listener: _UdpListener, data: bytes, addr: tuple) -> None:
        client = (addr[0], addr[1])
        if proxyv2.detect(data):
            try:
                total = proxyv2.header_length(data)
                header = proxyv2.decode(data[:total])
            except DecodeError:
                self.counters["udp.bad-proxy-header"] += 1
                return
            data = data[total:]
            client, refused = client_of(header, client, self.proxies)
            if refused:
                self.counters["udp.untrusted-proxy-header"] += 1
        if len(data) > UDP_MAX_PAYLOAD:
            self.counters["udp.too-big"] += 1
            return
        flow = self.udp_clients.get((listener.node_port, client))
        if flow is None:
            try:
                flow = self._choose(listener.node_port, "UDP", client)
            except OSError:
                flow = None
            if flow is None:
                return
            flow.client, flow.listener = (addr[0], addr[1]), listener
            self.udp_clients[(listener.node_port, client)] = flow
        flow.last_used = self.loop.time()
        body = udp.encode(udp.UdpDatagram(flow.src[1], flow.dst[1], data), flow.src[0], flow.dst[0])
        self.counters["udp.to-pod"] += 1
        self.send(ipv4.encode(ipv4.IPv4Packet(flow.src[0], flow.dst[0], IPProtocol.UDP, body)))

    # ---- answers from pods -----------------------------------------------------------------------

    def claim(self, packet: bytes) -> bool:
        """Takes `packet` when it answers one of the bridged connections; False leaves it to others."""
        if not self.flows:
            return False
        key = fastpath.ipv4_flow(packet)
        flow = self.flows.get(key) if key is not None else None
        if flow is None:
            return False
        try:
            header = ipv4.decode(packet)
            if header.protocol == IPProtocol.TCP:
                if flow.bridge is not None:
                    flow.bridge.receive(tcp.decode(header.payload, header.src, header.dst))
            else:
                datagram = udp.decode(header.payload, header.src, header.dst)
                flow.last_used = self.loop.time()
                if flow.listener is not None and flow.listener.transport is not None:
                    flow.listener.transport.sendto(datagram.payload, flow.client)
                    self.counters["udp.to-client"] += 1
        except DecodeError:
            self.counters["drop.malformed"] += 1
        return True

    def _sweep(self) -> None:
        cutoff = self.loop.time() - UDP_IDLE_SECONDS
        for flow in list(self.udp_clients.values()):
            if flow.last_used < cutoff:
                self.forget(flow)
        self._sweeper = self.loop.call_later(UDP_IDLE_SECONDS, self._sweep)

    def close(self) -> None:
        self._sweeper.cancel()
        for listener in self.listening.values():
            if isinstance(listener, _UdpListener):
                if listener.transport is not None:
                    listener.transport.close()
            else:
                listener.close()
        self.listening.clear()
        for flow in list(self.flows.values()):
            if flow.bridge is not None:
                flow.bridge.writer.close()
        self.flows.clear()
        self.udp_clients.clear()
