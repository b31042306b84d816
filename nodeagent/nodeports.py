"""NodePorts: real listening sockets on the node address, one per (nodePort, protocol) of the service table.

A connection accepted on a nodePort is relayed into the pod network to the endpoint the table picks
(`ServiceTable.lookup_node_port`), from the node's gateway address: the SNAT kube-proxy applies for
externalTrafficPolicy Cluster, which also makes the endpoint's replies come back through this node. The
pod side is a userspace TCP stream of the node's own endpoint in the dataplane (`Streams`); UDP is one
exchange per datagram: the first answer goes back to the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from podnet.nodeagent.pods.virtual import client as ops
from podnet.overlay.pipeline.nat import NatDecision

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
UDP_TIMEOUT = 2.0


class Streams(Protocol):
    """What the node agent offers: TCP streams and UDP exchanges from the node's gateway address."""

    def open_stream(self, dst_ip: str, dst_port: int, on_event: Callable[[Any], None]) -> int: ...
    def stream_send(self, op: int, data: bytes) -> None: ...
    def stream_close(self, op: int) -> None: ...
    def stream_forget(self, op: int) -> None: ...
    async def exchange_udp(self, dst_ip: str, dst_port: int, payload: bytes, timeout: float) -> Any: ...


Lookup = Callable[[str, int, str], NatDecision | None]  # (protocol, node port, client ip)


class _UdpPort(asyncio.DatagramProtocol):
    def __init__(self, owner: NodePorts, port: int):
        self.owner = owner
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.spawn(self.owner.relay_udp(self, data, addr))


class NodePorts:
    def __init__(self, address: str, streams: Streams, lookup: Lookup):
        self.address = address
        self.streams = streams
        self.lookup = lookup
        self.counters: Counter[str] = Counter()
        self.listeners: dict[tuple[int, str], asyncio.AbstractServer | asyncio.BaseTransport] = {}
        self._tasks: set[asyncio.Task] = set()

    def spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reconcile(self, wanted: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Opens listeners for `wanted` (nodePort, protocol) pairs and closes the others; returns what is
        open. A port another process holds is logged and counted, and the rest still open."""
        loop = asyncio.get_running_loop()
        wanted_set = {(int(port), str(protocol).upper()) for port, protocol in wanted}
        for key in [k for k in self.listeners if k not in wanted_set]:
            self.listeners.pop(key).close()
        for port, protocol in sorted(wanted_set - set(self.listeners)):
            try:
                if protocol == "TCP":
                    self.listeners[(port, protocol)] = await asyncio.start_server(
                        lambda r, w, port=port: self._relay_tcp(port, r, w), self.address, port
                    )
                elif protocol == "UDP":
                    transport, _ = await loop.create_datagram_endpoint(
                        lambda port=port: _UdpPort(self, port), local_addr=(self.address, port)
                    )
                    self.listeners[(port, protocol)] = transport
            except OSError as exc:
                self.counters["listen-failed"] += 1
                log.warning("nodePort %s/%d: cannot listen on %s: %s", protocol, port, self.address, exc)
        return sorted(self.listeners)

    async def _relay_tcp(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client_ip = writer.get_extra_info("peername")[0]
        decision = self.lookup("TCP", port, client_ip)
        if decision is None or decision.reject:
            self.counters["tcp.rejected"] += 1
            writer.close()
            return
        events: asyncio.Queue = asyncio.Queue()
        op = self.streams.open_stream(decision.ip, decision.port, events.put_nowait)
        try:
            first = await asyncio.wait_for(events.get(), CONNECT_TIMEOUT + 1)
            if not isinstance(first, ops.Opened):
                self.counters["tcp.endpoint-failed"] += 1
                return
            self.counters["tcp.connections"] += 1
            upstream = asyncio.ensure_future(self._client_to_pod(op, reader))
            try:
                while True:
                    event = await events.get()
                    if isinstance(event, ops.Received):
                        writer.write(event.data)
                        await writer.drain()
                    elif isinstance(event, ops.PeerClosed):
                        if writer.can_write_eof():
                            writer.write_eof()
                    elif isinstance(event, ops.Completed | ops.Failed):
                        return
            finally:
                upstream.cancel()
        except (TimeoutError, ConnectionError):
            self.counters["tcp.aborted"] += 1
        finally:
            self.streams.stream_forget(op)
            writer.close()

    async def _client_to_pod(self, op: int, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, ValueError):
            while data := await reader.read(65536):
                self.streams.stream_send(op, data)
            self.streams.stream_close(op)

    async def relay_udp(self, listener: _UdpPort, data: bytes, addr: tuple) -> None:
        decision = self.lookup("UDP", listener.port, addr[0])
        if decision is None or decision.reject:
            self.counters["udp.rejected"] += 1
            return
        event = await self.streams.exchange_udp(decision.ip, decision.port, data, UDP_TIMEOUT)
        if isinstance(event, ops.Completed) and listener.transport is not None:
            self.counters["udp.answered"] += 1
            listener.transport.sendto(event.result.payload, addr)
        else:
            self.counters["udp.unanswered"] += 1

    def close(self) -> None:
        for listener in self.listeners.values():
            listener.close()
        self.listeners.clear()
        for task in self._tasks:
            task.cancel()
