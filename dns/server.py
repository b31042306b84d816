"""UDP and TCP adapters around `answer.resolve`, and forwarding of names outside the cluster's zones.

UDP reads are batched: one `add_reader` callback drains the socket with non-blocking `recvfrom` until it
would block, answering each datagram at once. That avoids a protocol callback and a future per datagram,
which is what makes a Python responder fast enough (measured in bench/dns.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import random
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dnslib import DNSError, DNSHeader, DNSQuestion, DNSRecord
from podnet.dns.answer import Forward, fit_udp, resolve, servfail, unforwarded
from podnet.dns.records import Records
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

UDP_BATCH = 256
RECEIVE_SIZE = 65535
SOCKET_BUFFER = 4 * 1024 * 1024
# With port 0, how many UDP ports are tried before one is found free for TCP too.
_PICK_ATTEMPTS = 20


@dataclass(slots=True)
class Counters:
    """Plain integers on the hot path; Prometheus reads them only when scraped."""

    udp_queries: int = 0
    tcp_queries: int = 0
    dropped: int = 0
    forwarded: int = 0
    forward_failures: int = 0
    forwards_refused_busy: int = 0
    send_errors: int = 0
    internal_errors: int = 0
    tcp_connections: int = 0
    tcp_refused: int = 0

    def collector(self, records: Records, synced: Callable[[], bool]) -> Collector:
        counters = self

        class _Collector(Collector):
            def collect(self):
                queries = CounterMetricFamily("podnet_dns_queries", "DNS queries received", labels=["transport"])
                queries.add_metric(["udp"], counters.udp_queries)
                queries.add_metric(["tcp"], counters.tcp_queries)
                yield queries
                for name, help_text in (
                    ("dropped", "datagrams dropped without an answer (too short, or a response)"),
                    ("forwarded", "queries forwarded upstream"),
                    ("forward_failures", "forwarded queries no upstream answered"),
                    ("forwards_refused_busy", "queries dropped because too many forwards were in flight"),
                    ("send_errors", "answers the socket would not take"),
                    ("internal_errors", "queries that raised inside the answer function"),
                    ("tcp_connections", "TCP connections accepted"),
                    ("tcp_refused", "TCP connections closed at once because too many were open"),
                ):
                    yield CounterMetricFamily(f"podnet_dns_{name}", help_text, value=getattr(counters, name))
                yield GaugeMetricFamily("podnet_dns_rendered_answers", "answers rendered ahead, one per name and type",
                                        value=len(records.templates))
                yield GaugeMetricFamily("podnet_dns_synced", "1 once the caches have synced", value=int(synced()))

        return _Collector()


class Forwarder:
    """Sends a query to each upstream in turn over UDP from a fresh socket (a random source port per
    query), retrying over TCP when the reply is truncated."""

    def __init__(self, upstreams: Iterable[tuple[str, int]], timeout: float = 2.0):
        self.upstreams = list(upstreams)
        self.timeout = timeout

    async def forward(self, query: bytes) -> bytes | None:
        for upstream in self.upstreams:
            try:
                reply = await asyncio.wait_for(self._udp(query, upstream), self.timeout)
                if reply[2] & 0x02:
                    reply = await asyncio.wait_for(self._tcp(query, upstream), self.timeout)
                return reply
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                log.debug("upstream %s:%d failed: %r", *upstream, exc)
        return None

    @staticmethod
    async def _udp(query: bytes, upstream: tuple[str, int]) -> bytes:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.connect(upstream)
            await loop.sock_sendall(sock, query)
            while True:
                reply = await loop.sock_recv(sock, RECEIVE_SIZE)
                # Only a response with our ID and question counts; anything else is ignored.
                if len(reply) >= 12 and reply[:2] == query[:2] and reply[2] & 0x80:
                    return reply

    @staticmethod
    async def _tcp(query: bytes, upstream: tuple[str, int]) -> bytes:
        reader, writer = await asyncio.open_connection(*upstream)
        try:
            writer.write(len(query).to_bytes(2, "big") + query)
            length = int.from_bytes(await reader.readexactly(2), "big")
            return await reader.readexactly(length)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@dataclass
class DnsServer:
    """Answers from `records` on one address, UDP and TCP on the same port."""

    records: Records
    synced: Callable[[], bool]
    upstreams: list[tuple[str, int]] = field(default_factory=list)
    forward_timeout: float = 2.0
    tcp_idle_timeout: float = 10.0
    max_forwards: int = 1024
    max_tcp_connections: int = 1024
    counters: Counters = field(default_factory=Counters)
    port: int = 0
    _udp: socket.socket | None = None
    _tcp: asyncio.Server | None = None
    _tasks: set[asyncio.Task] = field(default_factory=set)
    _logged_error: bool = False
    _open_connections: int = 0

    async def start(self, host: str, port: int = 0) -> int:
        """Binds UDP first, then TCP on the same port; returns the port. With port 0 the kernel picks a
        UDP port, which TCP may already hold (another listener, a connection's ephemeral port): then
        another is picked, a few times at most."""
        loop = asyncio.get_running_loop()
        for attempt in range(1 if port else _PICK_ATTEMPTS):
            try:
                self._udp, self._tcp = await self._bind(host, port)
                break
            except OSError as exc:
                if port or exc.errno != errno.EADDRINUSE or attempt == _PICK_ATTEMPTS - 1:
                    raise
        self.port = self._udp.getsockname()[1]
        self._forwarder = Forwarder(self.upstreams, self.forward_timeout)
        loop.add_reader(self._udp.fileno(), self._on_udp_readable)
        return self.port

    async def _bind(self, host: str, port: int) -> tuple[socket.socket, asyncio.Server]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        udp = socket.socket(family, socket.SOCK_DGRAM)
        try:
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    udp.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
            udp.bind((host, port))
            udp.setblocking(False)
            tcp = await asyncio.start_server(self._serve_tcp, host, udp.getsockname()[1], reuse_address=True)
        except BaseException:
            udp.close()
            raise
        return udp, tcp

    async def close(self) -> None:
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._tcp.wait_closed(), 1.0)
            self._tcp = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _answer(self, query: bytes, udp: bool, synced: bool) -> bytes | Forward | None:
        try:
            result = resolve(query, self.records, synced=synced, udp=udp)
        except Exception:
            # resolve is meant never to raise; if it does, count it, say so once, and drop the query.
            self.counters.internal_errors += 1
            if not self._logged_error:
                self._logged_error = True
                log.exception("answering a query raised; further errors are only counted")
            return None
        if type(result) is Forward and not self.upstreams:
            return unforwarded(query, result, udp=udp)
        return result

    # --- UDP --------------------------------------------------------------------------------------

    def _on_udp_readable(self) -> None:
        sock = self._udp
        if sock is None:
            return
        counters = self.counters
        synced = self.synced()
        for _ in range(UDP_BATCH):
            try:
                query, client = sock.recvfrom(RECEIVE_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                counters.dropped += 1
                return
            counters.udp_queries += 1
            reply = self._answer(query, True, synced)
            if reply is None:
                counters.dropped += 1
            elif type(reply) is bytes:
                try:
                    sock.sendto(reply, client)
                except OSError:
                    counters.send_errors += 1
            else:
                self._spawn(self._forward_udp(query, client, reply))

    async def _forward_udp(self, query: bytes, client: tuple, decision: Forward) -> None:
        reply = await self._forward(query, decision)
        if self._udp is not None:
            try:
                self._udp.sendto(fit_udp(query, reply, decision.udp_limit), client)
            except OSError:
                self.counters.send_errors += 1

    async def _forward(self, query: bytes, decision: Forward) -> bytes:
        self.counters.forwarded += 1
        if decision.cname_reply is not None:
            return await self._complete_cname(decision)
        reply = await self._forwarder.forward(query)
        if reply is None:
            self.counters.forward_failures += 1
            return servfail(query)
        return reply

    async def _complete_cname(self, decision: Forward) -> bytes:
        """Our CNAME answer plus the upstream's records for its target; the CNAME alone when the
        upstream has nothing usable."""
        ours = DNSRecord.parse(decision.cname_reply)
        question = DNSRecord(DNSHeader(id=random.randrange(1 << 16), rd=1), q=DNSQuestion(decision.target, ours.q.qtype))
        reply = await self._forwarder.forward(bytes(question.pack()))
        try:
            if reply is None:
                raise DNSError("no upstream answered")
            for rr in DNSRecord.parse(reply).rr:
                ours.add_answer(rr)
        except DNSError:
            self.counters.forward_failures += 1
            return decision.cname_reply
        return bytes(ours.pack())

    def _spawn(self, coro) -> asyncio.Task | None:
        if len(self._tasks) >= self.max_forwards:
            coro.close()
            self.counters.forwards_refused_busy += 1
            return None
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- TCP --------------------------------------------------------------------------------------

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Two-byte length framing; queries may be pipelined, answers go out as they are ready (forwarded
        ones may overtake, which RFC 7766 allows since each carries its ID)."""
        self.counters.tcp_connections += 1
        if self._open_connections >= self.max_tcp_connections:
            # Like a full UDP queue: refuse the newest rather than run out of descriptors.
            self.counters.tcp_refused += 1
            writer.close()
            return
        self._open_connections += 1
        forwarding: set[asyncio.Task] = set()
        try:
            while True:
                length = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), self.tcp_idle_timeout), "big")
                query = await asyncio.wait_for(reader.readexactly(length), self.tcp_idle_timeout)
                self.counters.tcp_queries += 1
                reply = self._answer(query, False, self.synced())
                if reply is None:
                    self.counters.dropped += 1
                elif type(reply) is bytes:
                    writer.write(len(reply).to_bytes(2, "big") + reply)
                    await writer.drain()
                elif (task := self._spawn(self._forward_tcp(query, writer, reply))) is not None:
                    forwarding.add(task)
                    task.add_done_callback(forwarding.discard)
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            # A client may send its last query and close its side: finish forwarding before closing ours.
            if forwarding:
                await asyncio.wait(forwarding, timeout=self.forward_timeout * max(1, len(self.upstreams)) + 1)
            self._open_connections -= 1
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _forward_tcp(self, query: bytes, writer: asyncio.StreamWriter, decision: Forward) -> None:
        reply = await self._forward(query, decision)
        if not writer.is_closing():
            writer.write(len(reply).to_bytes(2, "big") + reply)

