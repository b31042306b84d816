"""The userspace network stack of one virtual pod: IPv4 packets in, IPv4 packets out, no I/O.

What the pod does, as a Linux host would:
- ICMP echo requests get replies; an ICMP error names the operation it ends.
- Every declared TCP containerPort listens and answers as agnhost netexec does (`agnhost.py`); a segment
  for any other port gets RST.
- Every declared UDP containerPort answers agnhost's UDP commands; a datagram for any other port gets
  ICMP port unreachable, at most as often as Linux's per-destination ICMP rate limit allows
  (`ratelimit.py`).
- Outbound operations (`client.py`) run from ephemeral ports 32768-60999.
- Traffic to 127.0.0.0/8 or to the pod's own IP never leaves the stack: it loops back inside, so the
  containers of a pod reach each other without meeting the node's pipeline or any NetworkPolicy.

ARP: the node answers proxy ARP for the gateway address (the pod's only next hop), so the pod never asks;
the pod answers ARP for its own IP (`answer_arp`) when the node's pipeline asks it.

Super-packets: a stack made with `super_segments` sends TCP data as `SuperPacket`s, IPv4 packets whose
payload stands for segments of `mss` bytes (what a NIC's segmentation offload takes), which the node
decides on once and cuts only where a wire needs it; any stack takes such packets (coalesced segments) whole.

Driving it: feed packets from the node with `receive(packet, now)`, call `poll(now)` at `next_deadline()`
and after starting an operation, send out every packet either returns, and read the operations' outcome
from `take_events()`.
"""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from podnet.overlay.wire import arp, ethernet, fastpath, icmp, ipv4, tcp, udp
from podnet.overlay.wire.addresses import bytes_to_ip, int_to_ip, ip_to_bytes, ip_to_int
from podnet.overlay.wire.ipv4 import IPProtocol

from podnet.codec import DecodeError

from . import client
from .agnhost import AgnhostTcp, udp_answer, udp_log_line
from .l7proxy import L7Lookup, L7ProxiedServer, L7Report
from .ratelimit import IcmpErrorLimiter
from .tcp import (
    POD_MTU,
    CloseReason,
    Connected,
    ConnectionClosed,
    DataReceived,
    EndOfStream,
    LocalProtocolError,
    RemoteProtocolError,
    TcpConnection,
    TcpEvent,
    TcpFlags,
    TcpState,
    reset_for,
)

EPHEMERAL_PORTS = range(32768, 61000)  # Linux's net.ipv4.ip_local_port_range
LOOPBACK_ADDRESS = "127.0.0.1"
UDP_MAX_PAYLOAD = POD_MTU - ipv4.HEADER_LENGTH - udp.HEADER_LENGTH
# Bounds that keep a flood from growing the stack without limit.
MAX_CONNECTIONS = 4096
# Lines of the access log a pod keeps (what `kubectl logs` shows of a virtual pod).
ACCESS_LOG_LINES = 1000
# Packets looped back per call: a localhost exchange finishes well within it; a loop never hangs us.
MAX_LOOPBACK_PACKETS = 100_000

_UNREACHABLE = {
    icmp.UnreachableCode.NETWORK: "network unreachable",
    icmp.UnreachableCode.HOST: "host unreachable",
    icmp.UnreachableCode.PROTOCOL: "protocol unreachable",
    icmp.UnreachableCode.PORT: "port unreachable",
    icmp.UnreachableCode.FRAGMENTATION_NEEDED: "fragmentation needed",
    icmp.UnreachableCode.ADMINISTRATIVELY_PROHIBITED: "administratively prohibited",
}


class SuperPacket(bytes):
    """An IPv4 TCP packet standing for segments of `mss` payload bytes each (the last may be shorter).
    Its TCP checksum is partial (the pseudo-header's sum, as a kernel with checksum offload leaves it)
    when it goes out on the link; whoever cuts it or hands it on whole makes the checksums."""

    mss: int


def super_packet(packet: bytes, mss: int) -> SuperPacket:
    marked = SuperPacket(packet)
    marked.mss = mss
    return marked


@dataclass(frozen=True, slots=True)
class ContainerPort:
    port: int
    protocol: IPProtocol


def parse_container_ports(declared: Iterable) -> frozenset[ContainerPort]:
    """Normalises what a pod declares: Kubernetes `ports` entries (`{"containerPort": 80, "protocol":
    "UDP"}`, protocol defaulting to TCP), `(port, "TCP"|"UDP")` pairs, or bare ints (TCP)."""
    ports = set()
    for entry in declared:
        if isinstance(entry, ContainerPort):
            ports.add(entry)
            continue
        if isinstance(entry, dict):
            port, protocol = entry["containerPort"], entry.get("protocol", "TCP")
        elif isinstance(entry, int):
            port, protocol = entry, "TCP"
        else:
            port, protocol = entry
        if protocol not in ("TCP", "UDP"):
            continue  # SCTP: a virtual pod does not speak it
        if not 0 < port < 0x10000:
            raise ValueError(f"containerPort {port} outside 1..65535")
        ports.add(ContainerPort(port, IPProtocol[protocol]))
    return frozenset(ports)


def is_loopback(ip: str) -> bool:
    return ip.startswith("127.")


class _AgnhostServer:
    """Adapts an agnhost connection to the calls the stack makes on any TCP application."""

    def __init__(self, responder: AgnhostTcp, counters: defaultdict[str, int]):
        self.responder = responder
        self.counters = counters

    def connected(self, local: str, remote: str) -> client.Action:
        return client.Action()

    def received(self, data: bytes) -> client.Action:
        reply = self.responder.feed(data)
        if reply.refused:
            self.counters[reply.refused] += 1
        return client.Action(send=reply.data, close=reply.close, served=reply.served)

    def peer_closed(self) -> client.Action:
        return client.Action(close=True)

    def closed(self, reason: CloseReason) -> client.Action:
        return client.Action()


@dataclass(slots=True)
class _Socket:
    connection: TcpConnection
    local_ip: str
    remote_ip: str
    app: client.TcpOperation | _AgnhostServer | L7ProxiedServer | None
    """None once an operation has reported its outcome and the connection only winds down."""

    @property
    def key(self) -> tuple[str, int, str, int]:
        return self.local_ip, self.connection.local_port, self.remote_ip, self.connection.remote_port


class PodStack:
    def __init__(
        self,
        name: str,
        namespace: str,
        ip: str,
        mac: str,
        gateway_mac: str,
        container_ports: Iterable,
        pod_name: str,
        *,
        rng: random.Random | None = None,
        icmp_limiter: IcmpErrorLimiter | None = None,
        super_segments: bool = False,
    ):
        self.name = name
        self.namespace = namespace
        self.ip = ip
        self._ip_int = ip_to_int(ip)
        # The fast UDP path takes packets for this address only; a loopback pod IP (never one Kubernetes
        # gives) would be martian from the link, which the full path decides.
        self._fast_ip = -1 if is_loopback(ip) else self._ip_int
        self.mac = mac
        self.gateway_mac = gateway_mac
        self.pod_name = pod_name
        self.ports = parse_container_ports(container_ports)
        self.super_segments = super_segments
        self._tcp_ports = frozenset(p.port for p in self.ports if p.protocol == IPProtocol.TCP)
        self._udp_ports = frozenset(p.port for p in self.ports if p.protocol == IPProtocol.UDP)
        self._rng = rng or random.Random()
        self._next_port = self._rng.choice(EPHEMERAL_PORTS)
        self._identification = self._rng.getrandbits(16)
        self._sockets: dict[tuple[str, int, str, int], _Socket] = {}
        self._operations: dict[int, client.TcpOperation | client.UdpExchange | client.Ping] = {}
        self._operation_sockets: dict[int, _Socket] = {}
        self._udp_operations: dict[int, client.UdpExchange] = {}
        self._pings: dict[int, client.Ping] = {}
        self._next_op = 1
        self._out: list[bytes] = []
        self._loopback: deque[bytes] = deque()
        self._events: list[client.OperationEvent] = []
        self._icmp_limiter = icmp_limiter or IcmpErrorLimiter()
        self.counters: defaultdict[str, int] = defaultdict(int)  # a Counter's += costs 3x a dict's
        # What the pod's servers answered, as agnhost netexec logs it on stderr, and what a Job's pod's command
        # wrote (port None): (monotonic time, port, line, stream).
        self.access_log: deque[tuple[float, int | None, str, str]] = deque(maxlen=ACCESS_LOG_LINES)
        self.access_logged = 0  # lines ever appended: a follower's position, whatever the deque dropped
        # Each TCP container port's environment, as its container's manifest gives it (what `/env` lists);
        # set by the agent once the ConfigMaps and Secrets it names are known.
        self.environments: Mapping[int, Sequence[tuple[str, str]]] = {}
        # Set by the agent when L7 policy is enforced: which new connections go through the L7 proxy.
        self.l7_lookup: L7Lookup | None = None
        self.l7_report: L7Report | None = None

    def log(self, now: float, port: int | None, line: str, stream: str = "stderr") -> None:
        """A line of the pod's log: what the server on `port` answered, or (None) its command wrote."""
        self.access_log.append((now, port, line, stream))
        self.access_logged += 1

    # ---- driving -----------------------------------------------------------------------------------

    def receive(self, ip_packet: bytes, now: float) -> list[bytes]:
        """One IPv4 packet from the node; returns the IPv4 packets the pod sends in answer (and any queued)."""
        self._deliver(ip_packet, now, looped_back=False)
        if self._loopback:
            self._run_loopback(now)
        if not self._out:  # most packets get no answer: no list is swapped in for them
            return []
        return self._take_output()

    def receive_batch(self, ip_packets: list[bytes], now: float, *, checksum_unnecessary: bool = False) -> list[bytes]:
        """What `receive` gives for each packet in turn, in one list. The UDP checksums of a batch are
        verified together, which costs a fraction of checking them one by one; with `checksum_unnecessary`
        (packets whose carrier authenticated them, as Linux marks WireGuard's) they are not verified."""
        deliver = self._deliver_parsed
        parsed = fastpath.ipv4_udp_batch(ip_packets, datagram_sums=not checksum_unnecessary)
        for packet, fast_udp in zip(ip_packets, parsed, strict=True):
            deliver(packet, fast_udp, now, looped_back=False)
            if self._loopback:
                self._run_loopback(now)
        if not self._out:
            return []
        return self._take_output()

    def poll(self, now: float) -> list[bytes]:
        """Fires every timer due at `now`; returns the packets to send."""
        for socket in list(self._sockets.values()):
            deadline = socket.connection.next_deadline()
            if deadline is not None and now >= deadline:
                socket.connection.handle_timer(now)
                self._process(socket, now)
        for op in list(self._operations.values()):
            if isinstance(op, client.Ping):
                for sequence in op.due(now):
                    self._send_echo(op, sequence)
            if op.deadline is not None and now >= op.deadline:
                self._end_operation(
                    op.op, op.result() if isinstance(op, client.Ping) else op.timed_out(), now
                )
        self._run_loopback(now)
        return self._take_output()

    def next_deadline(self) -> float | None:
        if not self._sockets and not self._operations:  # asked after every packet: idle is common
            return 0.0 if self._loopback else None
        deadlines = [d for s in self._sockets.values() if (d := s.connection.next_deadline()) is not None]
        for op in self._operations.values():
            deadline = op.next_deadline() if isinstance(op, client.Ping) else op.deadline
            if deadline is not None:
                deadlines.append(deadline)
        if self._loopback:
            return 0.0
        return min(deadlines, default=None)

    def take_events(self) -> list[client.OperationEvent]:
        events, self._events = self._events, []
        return events

    def _take_output(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    # ---- ARP and framing ---------------------------------------------------------------------------

    def answer_arp(self, arp_packet: bytes) -> bytes | None:
        """The ARP reply (an ARP packet, not a frame) when `arp_packet` asks for the pod's IP."""
        try:
            request = arp.decode(arp_packet)
        except DecodeError:
            self.counters["arp_malformed"] += 1
            return None
        if request.op != arp.ArpOp.REQUEST or request.target_ip != self.ip:
            return None
        return arp.encode(arp.reply(request, self.mac))

    def to_frame(self, ip_packet: bytes) -> bytes:
        """An outgoing packet as the Ethernet frame the pod puts on its link, to the gateway's MAC."""
        return ethernet.encode(
            ethernet.EthernetFrame(self.gateway_mac, self.mac, ethernet.EtherType.IPV4, ip_packet)
        )

    # ---- operations --------------------------------------------------------------------------------

    def open_tcp(self, dst_ip: str, dst_port: int, now: float, *, timeout: float = 10.0) -> int:
        """A TCP stream: events Opened, Received..., PeerClosed, then Completed(None) or Failed."""
        return self._start_tcp(client.TcpStream(self._new_op(), timeout, now), dst_ip, dst_port, now)

    def connect(self, dst_ip: str, dst_port: int, now: float, *, timeout: float = 5.0) -> int:
        """Completed(ConnectResult) once the handshake completes, or Failed("connection refused", ...)."""
        return self._start_tcp(client.TcpConnect(self._new_op(), timeout, now), dst_ip, dst_port, now)

    def http_get(
        self, url: str, now: float, *, timeout: float = 10.0, address: str | None = None, method: str = "GET"
    ) -> int:
        """Completed(HttpResponse) or Failed; the URL's host must be an IP address, or a name the caller
        resolved to `address`."""
        op = client.HttpGet(self._new_op(), url, timeout, now, address, method)
        return self._start_tcp(op, op.address, op.port, now)

    def send(self, op: int, data: bytes, now: float) -> None:
        """Writes to an open_tcp stream."""
        socket = self._stream(op)
        socket.connection.send(data, now)
        self._process(socket, now)

    def close(self, op: int, now: float) -> None:
        """Ends an open_tcp stream with FIN after what was sent; Completed comes when both sides are done."""
        socket = self._stream(op)
        socket.connection.close(now)
        self._process(socket, now)

    def abort(self, op: int, now: float) -> None:
        """Resets an open_tcp stream at once; it ends with Failed("connection aborted")."""
        socket = self._stream(op)
        socket.connection.abort(now)
        self._process(socket, now)

    def udp_exchange(
        self, dst_ip: str, dst_port: int, payload: bytes, now: float, *, timeout: float = 2.0
    ) -> int:
        """One datagram out; Completed(UdpReply) with the first answer from that address, or Failed."""
        _check_destination(dst_ip, dst_port)
        if len(payload) > UDP_MAX_PAYLOAD:
            raise ValueError(
                f"UDP payload of {len(payload)} bytes exceeds the {UDP_MAX_PAYLOAD} the MTU allows"
            )
        src_ip = self._source_for(dst_ip)
        op = client.UdpExchange(
            self._new_op(), dst_ip, dst_port, payload, self._ephemeral_port(), now + timeout
        )
        self._operations[op.op] = op
        self._udp_operations[op.local_port] = op
        datagram = udp.UdpDatagram(op.local_port, dst_port, payload)
        self._emit(src_ip, dst_ip, IPProtocol.UDP, udp.encode(datagram, src_ip, dst_ip))
        return op.op

    def ping(
        self, dst_ip: str, now: float, *, count: int = 1, interval: float = 1.0, timeout: float | None = None
    ) -> int:
        """`count` echo requests; Completed(PingResult) when all are answered or at the deadline (by default
        two seconds after the last is sent) if any was; Failed otherwise."""
        ip_to_bytes(dst_ip)
        if count < 1:
            raise ValueError("ping count must be at least 1")
        deadline = now + (timeout if timeout is not None else (count - 1) * interval + 2.0)
        identifier = self._rng.getrandbits(16)
        while identifier in self._pings:
            identifier = (identifier + 1) & 0xFFFF
        op = client.Ping(self._new_op(), dst_ip, identifier, count, interval, deadline, now)
        self._operations[op.op] = op
        self._pings[identifier] = op
        for sequence in op.due(now):
            self._send_echo(op, sequence)
        return op.op

    def _new_op(self) -> int:
        op, self._next_op = self._next_op, self._next_op + 1
        return op

    def _start_tcp(self, op: client.TcpOperation, dst_ip: str, dst_port: int, now: float) -> int:
        _check_destination(dst_ip, dst_port)
        local_ip = self._source_for(dst_ip)
        connection = TcpConnection.connect(
            self._ephemeral_port(), dst_port, self._rng.getrandbits(32), now, super_segments=self.super_segments
        )
        socket = _Socket(connection, local_ip, dst_ip, op)
        self._sockets[socket.key] = socket
        self._operations[op.op] = op
        self._operation_sockets[op.op] = socket
        self._process(socket, now)
        return op.op

    def _stream(self, op: int) -> _Socket:
        socket = self._operation_sockets.get(op)
        if socket is None or not isinstance(socket.app, client.TcpStream):
            raise LocalProtocolError(f"operation {op} is not an open TCP stream")
        return socket

    def _end_operation(self, op: int, outcome: client.OperationEvent, now: float) -> None:
        """Reports the outcome once and forgets the operation; a connection it leaves is reset."""
        operation = self._operations.pop(op, None)
        if operation is None:
            return
        self._events.append(outcome)
        if isinstance(operation, client.UdpExchange):
            del self._udp_operations[operation.local_port]
        elif isinstance(operation, client.Ping):
            del self._pings[operation.identifier]
        else:
            socket = self._operation_sockets.pop(op)
            if socket.app is operation:
                socket.app = None
                socket.connection.abort(now)
                self._process(socket, now)

    def _source_for(self, dst_ip: str) -> str:
        return LOOPBACK_ADDRESS if is_loopback(dst_ip) else self.ip

    def _ephemeral_port(self) -> int:
        in_use = (
            {key[1] for key in self._sockets} | self._tcp_ports | self._udp_ports | set(self._udp_operations)
        )
        for _ in EPHEMERAL_PORTS:
            port = self._next_port
            self._next_port = port + 1 if port + 1 < EPHEMERAL_PORTS.stop else EPHEMERAL_PORTS.start
            if port not in in_use:
                return port
        raise LocalProtocolError("no free ephemeral port")

    # ---- packets in --------------------------------------------------------------------------------

    def _run_loopback(self, now: float) -> None:
        for _ in range(MAX_LOOPBACK_PACKETS):
            if not self._loopback:
                return
            self._deliver(self._loopback.popleft(), now, looped_back=True)

    def _deliver(self, packet: bytes, now: float, *, looped_back: bool) -> None:
        self._deliver_parsed(packet, fastpath.ipv4_udp(packet), now, looped_back=looped_back)

    def _deliver_parsed(
        self, packet: bytes, fast_udp: tuple[int, int, int, int, int] | None, now: float, *, looped_back: bool
    ) -> None:
        """`packet` with what `fastpath.ipv4_udp` read of it. The common case, a well-formed UDP datagram
        for the pod's address, skips the dataclass codecs; everything else (and anything the fast parser
        doubts) takes the full path below."""
        if fast_udp is not None and fast_udp[1] == self._fast_ip:
            src, dst, src_port, dst_port, end = fast_udp
            self._deliver_udp(src, dst, src_port, dst_port, packet, fastpath.UDP_PAYLOAD_OFFSET, end, now)
            return
        try:
            header = ipv4.decode(packet)
        except DecodeError:
            self.counters["ip_malformed"] += 1
            return
        if not looped_back and is_loopback(header.dst):
            self.counters["ip_martian"] += 1  # 127/8 is never reached over a link (RFC 1122 3.2.1.3)
            return
        # A 127/8 *source* from the link is accepted: podnet's hosts live on 127.0.0.x, and a NodePort
        # client on the host (or the node address after SNAT) reaches the pod with one, as Linux allows
        # with route_localnet=1. Answers to it leave the pod (see `_emit`).
        if header.dst != self.ip and not (looped_back and is_loopback(header.dst)):
            self.counters["ip_not_for_pod"] += 1
            return
        try:
            if header.protocol == IPProtocol.TCP:
                self._deliver_tcp(header, now)
            elif header.protocol == IPProtocol.UDP:
                datagram = udp.decode(header.payload, header.src, header.dst)
                start = ipv4.header_length(packet) + udp.HEADER_LENGTH
                self._deliver_udp(
                    ip_to_int(header.src),
                    ip_to_int(header.dst),
                    datagram.src_port,
                    datagram.dst_port,
                    packet,
                    start,
                    start + len(datagram.payload),
                    now,
                )
            elif header.protocol == IPProtocol.ICMP:
                self._deliver_icmp(header, now)
            else:
                self.counters["ip_unknown_protocol"] += 1
        except DecodeError:
            self.counters[f"{IPProtocol(header.protocol).name.lower()}_malformed"] += 1

    def _deliver_tcp(self, header: ipv4.IPv4Packet, now: float) -> None:
        segment = tcp.decode(header.payload, header.src, header.dst)
        key = (header.dst, segment.dst_port, header.src, segment.src_port)
        socket = self._sockets.get(key)
        if socket is not None:
            try:
                socket.connection.receive(segment, now)
            except RemoteProtocolError:
                self.counters["tcp_protocol_error"] += 1
                socket.connection.abort(now)
            self._process(socket, now)
            return
        bare_syn = segment.flags & (TcpFlags.SYN | TcpFlags.ACK | TcpFlags.RST) == TcpFlags.SYN
        # The L7 verdict is taken for any new connection, served or refused, so none is left waiting.
        l7 = (
            self.l7_lookup(header.src, segment.src_port, header.dst, segment.dst_port)
            if bare_syn and self.l7_lookup
            else None
        )
        if bare_syn and segment.dst_port in self._tcp_ports:
            if len(self._sockets) >= MAX_CONNECTIONS:
                self.counters["tcp_syn_dropped_full"] += 1
                return
            responder = AgnhostTcp(self.pod_name, f"{header.src}:{segment.src_port}",
                                   self.environments.get(segment.dst_port, ()))
            connection = TcpConnection.accept(
                segment, self._rng.getrandbits(32), now, super_segments=self.super_segments
            )
            app = _AgnhostServer(responder, self.counters)
            if l7 is not None:
                app = L7ProxiedServer(l7, app, self.counters, self.l7_report)
            socket = _Socket(connection, header.dst, header.src, app)
            self._sockets[key] = socket
            self._process(socket, now)
            return
        reset = reset_for(segment)
        if reset is not None:
            self.counters["tcp_reset_sent"] += 1
            self._emit(header.dst, header.src, IPProtocol.TCP, tcp.encode(reset, header.dst, header.src))

    def _deliver_udp(
        self,
        src: int,
        dst: int,
        src_port: int,
        dst_port: int,
        packet: bytes,
        payload_start: int,
        payload_end: int,
        now: float,
    ) -> None:
        """One checked UDP datagram (addresses as ints) for the pod, in `packet` (the whole IPv4 packet)
        with its payload at `payload_start:payload_end`: sliced only by those who read it, since a
        flood at a closed port reads none."""
        op = self._udp_operations.get(dst_port)
        if op is not None and (int_to_ip(src), src_port) == (op.dst_ip, op.dst_port):
            payload = packet[payload_start:payload_end]
            self._end_operation(op.op, op.reply(payload, op.dst_ip, src_port), now)
            return
        if dst_port in self._udp_ports:
            payload = packet[payload_start:payload_end]
            client_address = f"{int_to_ip(src)}:{src_port}"
            answer = udp_answer(payload, self.pod_name, client_address)
            self.log(now, dst_port, udp_log_line(payload, client_address))
            self._identification = (self._identification + 1) & 0xFFFF
            reply = fastpath.udp_packet(
                dst, src, dst_port, src_port, answer[:UDP_MAX_PAYLOAD], self._identification
            )
            self._queue(reply, dst, src)
            return
        # Linux exempts loopback from the limit: a pod's own containers always hear the refusal.
        if src >> 24 != 127 and not self._icmp_limiter.allow(src, now):
            self.counters["icmp_error_rate_limited"] += 1
            return
        self.counters["udp_port_unreachable_sent"] += 1
        self._emit(
            int_to_ip(dst), int_to_ip(src), IPProtocol.ICMP, icmp.encode(icmp.port_unreachable(packet))
        )

    def _deliver_icmp(self, header: ipv4.IPv4Packet, now: float) -> None:
        message = icmp.decode(header.payload)
        if isinstance(message, icmp.IcmpEcho):
            if message.type == icmp.ICMPType.ECHO_REQUEST:
                self._emit(header.dst, header.src, IPProtocol.ICMP, icmp.encode(icmp.echo_reply(message)))
                return
            ping = self._pings.get(message.identifier)
            if ping is not None and header.src == ping.dst_ip:
                outcome = ping.reply(message.sequence, now)
                if outcome is not None:
                    self._end_operation(ping.op, outcome, now)
        elif isinstance(message, icmp.IcmpUnreachable):
            self._deliver_unreachable(message, now)

    def _deliver_unreachable(self, message: icmp.IcmpUnreachable, now: float) -> None:
        """Ends the operation whose packet the error quotes (its IP header and first 8 payload bytes)."""
        quoted = message.original
        start = ipv4.header_length(quoted)
        if len(quoted) < start + 8:
            raise DecodeError("ICMP error quotes fewer than 8 bytes past the IP header")
        protocol, src, dst = quoted[9], bytes_to_ip(quoted[12:16]), bytes_to_ip(quoted[16:20])
        src_port, dst_port = (
            int.from_bytes(quoted[start : start + 2]),
            int.from_bytes(quoted[start + 2 : start + 4]),
        )
        description = _UNREACHABLE.get(message.code, f"unreachable (code {message.code})")
        if protocol == IPProtocol.UDP:
            op = self._udp_operations.get(src_port)
            if op is not None and (dst, dst_port) == (op.dst_ip, op.dst_port):
                self._end_operation(op.op, op.unreachable(description), now)
        elif protocol == IPProtocol.TCP:
            socket = self._sockets.get((src, src_port, dst, dst_port))
            # Like Linux, an ICMP error only ends a connection that is still being opened.
            if socket is not None and socket.connection.state == TcpState.SYN_SENT and socket.app is not None:
                op = socket.app.op
                self._end_operation(op, client.Failed(op, description), now)
        elif protocol == IPProtocol.ICMP:
            ping = self._pings.get(int.from_bytes(quoted[start + 4 : start + 6]))
            if ping is not None and dst == ping.dst_ip:
                self._end_operation(ping.op, ping.unreachable(description), now)

    # ---- TCP plumbing ------------------------------------------------------------------------------

    def _process(self, socket: _Socket, now: float) -> None:
        """Hands the connection's events to its application, applies what it asks, sends the segments."""
        connection = socket.connection
        while events := connection.take_events():
            for event in events:
                self._dispatch(socket, event, now)
        mss = connection.peer_mss
        for segment in connection.take_segments():
            whole = len(segment.payload) > mss  # a super-packet
            # whose checksum, going out on the link, is made per segment where it is cut
            partial = whole and not self._loops_back(ip_to_int(socket.local_ip), ip_to_int(socket.remote_ip))
            self._emit(
                socket.local_ip,
                socket.remote_ip,
                IPProtocol.TCP,
                tcp.encode(segment, socket.local_ip, socket.remote_ip, partial_checksum=partial),
                mss if whole else 0,
            )
        if connection.state == TcpState.CLOSED:
            self._sockets.pop(socket.key, None)

    def _dispatch(self, socket: _Socket, event: TcpEvent, now: float) -> None:
        app = socket.app
        if app is None:
            return
        connection = socket.connection
        if isinstance(event, Connected):
            local = f"{socket.local_ip}:{connection.local_port}"
            action = app.connected(local, f"{socket.remote_ip}:{connection.remote_port}")
        elif isinstance(event, DataReceived):
            action = app.received(event.data)
        elif isinstance(event, EndOfStream):
            action = app.peer_closed()
        elif isinstance(event, ConnectionClosed):
            action = app.closed(event.reason)
        else:
            raise TypeError(f"unknown TCP event {event!r}")
        for line in action.served:
            self.log(now, connection.local_port, line)
        if action.send and connection.can_send:
            connection.send(action.send, now)
        if action.close:
            connection.close(now)
        if isinstance(app, client.TcpOperation):
            for outcome in action.events:
                if isinstance(outcome, client.Completed | client.Failed):
                    socket.app = None
                    self._operations.pop(app.op, None)
                    self._operation_sockets.pop(app.op, None)
                self._events.append(outcome)

    # ---- packets out -------------------------------------------------------------------------------

    def _send_echo(self, ping: client.Ping, sequence: int) -> None:
        request = icmp.IcmpEcho(icmp.ICMPType.ECHO_REQUEST, 0, ping.identifier, sequence, client.PING_PAYLOAD)
        self._emit(self._source_for(ping.dst_ip), ping.dst_ip, IPProtocol.ICMP, icmp.encode(request))

    def _emit(self, src: str, dst: str, protocol: IPProtocol, payload: bytes, mss: int = 0) -> None:
        """Sends one IPv4 packet; `mss` > 0: a TCP super-packet of segments of that size, whose segments
        will take IP ids counting up from its own."""
        identification = self._identification = (self._identification + 1) & 0xFFFF
        packet = ipv4.encode(ipv4.IPv4Packet(src, dst, protocol, payload, identification=identification))
        if mss:
            self._identification = (identification + (len(payload) - 21) // mss) & 0xFFFF
            packet = super_packet(packet, mss)
        self._queue(packet, ip_to_int(src), ip_to_int(dst))

    def _queue(self, packet: bytes, src: int, dst: int) -> None:
        """Loops `packet` back inside the pod, or puts it out on the link."""
        if self._loops_back(src, dst):
            self._loopback.append(packet)
        else:
            self._out.append(packet)

    def _loops_back(self, src: int, dst: int) -> bool:
        """Whether a packet stays inside the pod: for the pod itself, or between loopback addresses."""
        return dst == self._ip_int or (dst >> 24 == 127 and src >> 24 == 127)


def _check_destination(ip: str, port: int) -> None:
    ip_to_bytes(ip)
    if not 0 < port < 0x10000:
        raise ValueError(f"port {port} outside 1..65535")
