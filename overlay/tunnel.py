"""The underlay: one UDP socket on the node address carrying VXLAN datagrams (the `vxlan` backend, port
4789) or foo-over-UDP ones (the `bgp` backend, port 5555: the bare pod packet), driven by the event loop.
The socket does not look inside: the pipeline encapsulates and decides what a datagram may carry.

Reads are batched: one wake-up of the loop drains the socket with non-blocking `recvfrom` until
`BlockingIOError` (at most `batch` datagrams, so a flood cannot starve the loop), which is what lifts a
Python forwarder from tens of thousands to hundreds of thousands of datagrams per second. A receiver
given as `on_batch` gets each wake-up's datagrams as one list, so it pays its per-call costs (clock
read, attribute lookups, scheduling pod timers) once per batch rather than once per datagram. Sends are
non-blocking too: a full socket buffer drops the datagram and counts it, as a NIC queue would.

The kernel's UDP segmentation and receive offloads carry runs of datagrams: `send_burst` hands a run of
datagrams of one size (the last may be shorter: the tunnelled segments of one TCP super-packet) to one
`sendmsg` with UDP_SEGMENT, which the kernel cuts into the datagrams on the wire (`send_joined` does the
same for datagrams already laid back to back in one buffer, cutting it into such runs); with UDP_GRO on the
socket, one read may bring several datagrams of one sender joined, with their size in a control message,
and they are cut apart here (or, for a receiver that takes them so, handed on whole as a `DatagramRun`).
Where the kernel has neither, datagrams go and come one by one as before.

Captures get a copy of every datagram through bounded queues, one item per datagram as it is on the wire
(a run is shown as its datagrams); a reader too slow to keep up loses items (counted) rather than
slowing the dataplane down.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time
from collections import defaultdict
from collections.abc import Callable

from podnet.overlay.wire.segment import DatagramRun

RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_DATAGRAM = 65535
# linux/udp.h
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
# What one sendmsg with UDP_SEGMENT may carry: at most 64 datagrams (UDP_MAX_SEGMENTS in older kernels),
# in one IPv4 packet's worth of payload.
MAX_SEGMENTS = 64
MAX_BURST_PAYLOAD = 65535 - 20 - 8
_GRO_CONTROL = socket.CMSG_SPACE(4)
_INT = struct.Struct("=i")
_U16_NATIVE = struct.Struct("=H")
# Errors of a sendmsg with UDP_SEGMENT that mean the path cannot segment (no checksum offload on the
# device, an old kernel): the run goes one datagram at a time from then on.
_NO_SEGMENTATION = (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP)


class Tunnel:
    # Whether what it delivers was authenticated on the way (a plain tunnel's datagrams were not).
    authenticates = False

    def __init__(
        self,
        address: str,
        port: int,
        on_datagram: Callable[[bytes, str], None] | None = None,
        *,
        batch: int = 512,
        on_batch: Callable[[list[tuple[bytes, str]]], None] | None = None,
        whole_runs: bool = False,
    ):
        """`whole_runs`: `on_batch` takes what a read brings joined as one `DatagramRun`, not cut apart."""
        if (on_datagram is None) == (on_batch is None):
            raise ValueError("a tunnel needs exactly one of on_datagram and on_batch")
        self.address = address
        self.port = port
        self.peer_port = port
        self.on_batch = on_batch or (lambda datagrams: _one_by_one(on_datagram, datagrams))
        self.batch = batch
        self.whole_runs = whole_runs and on_batch is not None
        self.counters: defaultdict[str, int] = defaultdict(int)  # a Counter's += costs 3x a dict's
        # datagrams sent to and taken from each peer address: the rate of each tunnel, where `counters`
        # has the node's
        self.sent_to: defaultdict[str, int] = defaultdict(int)
        self.received_from: defaultdict[str, int] = defaultdict(int)
        self.partitioned: set[str] = set()  # peers whose traffic is dropped both ways (fault injection)
        self._taps: list[asyncio.Queue] = []
        self.segmentation = True  # UDP_SEGMENT works here (until a send says otherwise)
        self.receive_offload = False  # UDP_GRO is on
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, RECEIVE_BUFFER)
            except OSError:  # pragma: no cover - a kernel that refuses large buffers keeps its default
                pass
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.receive_offload = True
        except OSError:  # a kernel before 5.0: one datagram per read
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
        if self.receive_offload:
            self._read_joined()
            return
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
        self._hand_over(datagrams, cut_off, len(datagrams) + cut_off)

    def _read_joined(self) -> None:
        """`_readable` with UDP_GRO: a read may hold a run of datagrams of one size, cut apart here."""
        recvmsg = self._sock.recvmsg  # type: ignore[union-attr]
        taps, partitioned, received_from = self._taps, self.partitioned, self.received_from
        whole_runs = self.whole_runs
        datagrams: list[tuple[bytes, str]] = []
        append = datagrams.append
        cut_off = taken = 0
        try:
            while taken < self.batch:
                data, control, _, (host, port) = recvmsg(MAX_DATAGRAM, _GRO_CONTROL)
                size = len(data)
                for level, kind, value in control:
                    if level == SOL_UDP and kind == UDP_GRO:
                        size = _INT.unpack_from(value)[0] or size
                if size >= len(data):
                    parts = [data]
                    count = 1
                else:
                    self.counters["rx.joined-reads"] += 1
                    count = -(-len(data) // size)
                    parts = [DatagramRun(data, size)] if whole_runs and not taps else self._cut(data, size)
                taken += count
                if taps:
                    for part in parts:
                        self._tap(part, host, port, self.address, self.port)
                if partitioned and host in partitioned:
                    cut_off += count
                    continue
                for part in parts:
                    append((part, host))
                received_from[host] += count
        except BlockingIOError:
            pass
        except OSError as exc:
            self.counters[f"rx-error.{type(exc).__name__}"] += 1
        self._hand_over(datagrams, cut_off, taken)

    @staticmethod
    def _cut(data: bytes, size: int) -> list:
        """A joined read's datagrams, as the receiver takes them."""
        return DatagramRun(data, size).apart()

    def _hand_over(self, datagrams: list[tuple[bytes, str]], cut_off: int, taken: int) -> None:
        """One wake-up's reading done: `taken` datagrams counted (a run among `datagrams` stands for
        several), and what was not cut off handed to the receiver."""
        self.counters["rx"] += taken
        if cut_off:
            self.counters["drop.partitioned"] += cut_off
        if datagrams:
            self.on_batch(datagrams)

    def send_burst(self, address: str, datagrams: list[bytes]) -> None:
        """Sends `datagrams` (all of one size but the last, which may be shorter) to `address`, as few
        sendmsg calls with UDP_SEGMENT as the kernel's limits allow."""
        if not self.segmentation or len(datagrams) == 1 or address in self.partitioned:
            for datagram in datagrams:
                self.send(address, datagram)
            return
        self.send_joined(address, b"".join(datagrams), [len(datagram) for datagram in datagrams])

    def send_laid(self, address: str, laid: bytes | memoryview, sizes: list[int]) -> None:
        """Sends a burst's datagrams, laid back to back in `laid` as `send_joined` takes them, as they
        lie."""
        self.send_joined(address, laid, sizes)

    def send_joined(self, address: str, data: bytes | bytearray | memoryview, sizes: list[int]) -> None:
        """Sends the datagrams laid back to back in `data`, `sizes` bytes each, to `address`: every run of
        equal sizes (whose last may be shorter) in as few sendmsg calls with UDP_SEGMENT as the kernel's
        limits allow, a datagram on its own with sendto."""
        if address in self.partitioned:
            self.counters["drop.partitioned"] += len(sizes)
            return
        view = memoryview(data)
        destination = (address, self.peer_port)
        start = first = 0
        while first < len(sizes):
            size = sizes[first]
            most = max(1, min(MAX_SEGMENTS, MAX_BURST_PAYLOAD // size)) if self.segmentation and size else 1
            limit = min(len(sizes), first + most)
            last = first + 1
            while last < limit and sizes[last] == size:
                last += 1
            if last < limit and 0 < sizes[last] < size:
                last += 1  # a shorter datagram may end the run
            end = start + size * (last - first - 1) + sizes[last - 1]
            self._send_run(address, destination, view[start:end], size)
            start, first = end, last

    def _send_run(self, address: str, destination: tuple[str, int], run: memoryview, size: int) -> None:
        """Datagrams of `size` bytes (the last may be shorter) back to back in `run`, sent plainly (with
        `Tunnel.send`: a subclass's `send` may do more) in one sendmsg with UDP_SEGMENT when there are
        several."""
        if len(run) <= size:
            Tunnel.send(self, address, run)
            return
        count = -(-len(run) // size)
        try:
            self._sock.sendmsg((run,), [(SOL_UDP, UDP_SEGMENT, _U16_NATIVE.pack(size))], 0, destination)  # type: ignore[union-attr]
        except BlockingIOError:
            self.counters["drop.tx-queue-full"] += count
            return
        except OSError as exc:
            if exc.errno in _NO_SEGMENTATION:
                self.segmentation = False
                for at in range(0, len(run), size):
                    Tunnel.send(self, address, run[at : at + size])
                return
            self.counters[f"drop.tx-{type(exc).__name__}"] += count
            return
        self.counters["tx"] += count
        self.counters["tx.segmented-sends"] += 1
        self.sent_to[address] += count
        if self._taps:
            for at in range(0, len(run), size):
                self._tap(run[at : at + size], self.address, self.port, address, self.peer_port)

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

    def _tap(self, data: bytes | memoryview, src: str, sport: int, dst: str, dport: int, taps: list[asyncio.Queue] | None = None) -> None:
        """Offers a captured datagram to the captures (`taps`: other ones than the wire's)."""
        item = {"ts": time.time(), "src": src, "sport": sport, "dst": dst, "dport": dport, "data": bytes(data)}
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
