"""The underlay: one UDP socket on the node address carrying VXLAN datagrams (the `vxlan` backend, port
4789) or foo-over-UDP ones (the `bgp` backend, port 5555: the bare pod packet), driven by the event loop.
The socket does not look inside: the pipeline encapsulates and decides what a datagram may carry.

Reads are batched: one wake-up of the loop drains the socket with non-blocking `recvfrom` until
`BlockingIOError` (at most `batch` datagrams, so a flood cannot starve the loop), which is what lifts a
Python forwarder from tens of thousands to hundreds of thousands of datagrams per second. A receiver
given as `on_batch` gets each wake-up's datagrams as one list, so it pays its per-call costs (clock
read, attribute lookups, scheduling pod timers) once per batch rather than once per datagram. Sends are
non-blocking too: a full socket buffer drops the datagram and counts it, as a NIC queue would.

Captures get a copy of every datagram through bounded queues; a reader too slow to keep up loses
items (counted) rather than slowing the dataplane down.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import defaultdict
from collections.abc import Callable

RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_DATAGRAM = 65535


class Tunnel:
    def __init__(
        self,
        address: str,
        port: int,
        on_datagram: Callable[[bytes, str], None] | None = None,
        *,
        batch: int = 512,
        on_batch: Callable[[list[tuple[bytes, str]]], None] | None = None,
    ):
        if (on_datagram is None) == (on_batch is None):
            raise ValueError("a tunnel needs exactly one of on_datagram and on_batch")
        self.address = address
        self.port = port
        self.peer_port = port
        self.on_batch = on_batch or (lambda datagrams: _one_by_one(on_datagram, datagrams))
        self.batch = batch
        self.counters: defaultdict[str, int] = defaultdict(int)  # a Counter's += costs 3x a dict's
        # datagrams sent to and taken from each peer address: the rate of each tunnel, where `counters`
        # has the node's
        self.sent_to: defaultdict[str, int] = defaultdict(int)
        self.received_from: defaultdict[str, int] = defaultdict(int)
        self.partitioned: set[str] = set()  # peers whose traffic is dropped both ways (fault injection)
        self._taps: list[asyncio.Queue] = []
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            except OSError:  # pragma: no cover - a kernel that refuses large buffers keeps its default
                pass
        sock.bind((self.address, self.port))
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        if not self.peer_port:
            self.peer_port = self.port
        self._sock = sock
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    def close(self) -> None:
        if self._sock is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        recvfrom = self._sock.recvfrom  # type: ignore[union-attr]
        taps, partitioned, received_from = self._taps, self.partitioned, self.received_from
        datagrams: list[tuple[bytes, str]] = []
        append = datagrams.append
        cut_off = 0
        try:
            for _ in range(self.batch):
                data, (host, port) = recvfrom(MAX_DATAGRAM)
                if taps:
                    self._tap(data, host, port, self.address, self.port)
                if partitioned and host in partitioned:
                    cut_off += 1
                    continue
                append((data, host))
                received_from[host] += 1
        except BlockingIOError:
            pass
        except OSError as exc:  # ICMP errors for earlier sends surface here (ECONNREFUSED); not fatal
            self.counters[f"rx-error.{type(exc).__name__}"] += 1
        self.counters["rx"] += len(datagrams) + cut_off
        if cut_off:
            self.counters["drop.partitioned"] += cut_off
        if datagrams:
            self.on_batch(datagrams)

    def send(self, address: str, datagram: bytes) -> None:
        if address in self.partitioned:
            self.counters["drop.partitioned"] += 1
            return
        try:
            self._sock.sendto(datagram, (address, self.peer_port))  # type: ignore[union-attr]
        except BlockingIOError:
            self.counters["drop.tx-queue-full"] += 1
            return
        except OSError as exc:
            self.counters[f"drop.tx-{type(exc).__name__}"] += 1
            return
        self.counters["tx"] += 1
        self.sent_to[address] += 1
        if self._taps:
            self._tap(datagram, self.address, self.port, address, self.peer_port)

    def _tap(self, data: bytes, src: str, sport: int, dst: str, dport: int, taps: list[asyncio.Queue] | None = None) -> None:
        """Offers a captured datagram to the captures (`taps`: other ones than the wire's)."""
        item = {"ts": time.time(), "src": src, "sport": sport, "dst": dst, "dport": dport, "data": data}
        for queue in self._taps if taps is None else taps:
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                self.counters["drop.capture-queue-full"] += 1

    def subscribe(self, limit: int = 4096) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(limit)
        self._taps.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        if queue in self._taps:
            self._taps.remove(queue)


def _one_by_one(on_datagram: Callable[[bytes, str], None], datagrams: list[tuple[bytes, str]]) -> None:
    for data, host in datagrams:
        on_datagram(data, host)
