"""`pods/portforward`: kubectl's SPDY session, carried in a WebSocket, relayed to the pod's node agent.

The route is the kube-apiserver's: `GET|POST /api/v1/namespaces/{ns}/pods/{name}/portforward`, verb
`create` on `pods/portforward` (kube-apiserver 1.31 asks for `create` on WebSocket upgrades too). kubectl
1.31 upgrades to a WebSocket with the subprotocol `SPDY/3.1+portforward.k8s.io` and runs a SPDY session in
its binary messages; when that upgrade fails (or `KUBECTL_PORT_FORWARD_WEBSOCKETS=false`) it upgrades the
HTTP connection itself to `SPDY/3.1`. Either way the session ends here (podnet.spdy.session), once the
kubelet API of the pod's node has been reached, as kube-apiserver dials the kubelet before it upgrades.
Each data/error stream pair becomes one WebSocket to that kubelet API, `/portForward/{ns}/{pod}?port=N`: the
API server never reaches into a pod itself.

What travels on the agent's WebSocket: binary messages are the connection's bytes, both ways; an empty
binary message from this side is the client's end of stream (TCP half-close); a text message from the
agent is a failure to put on the error stream, in the kubelet's words; the agent closing the WebSocket
is the pod's end of stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from podnet.apiserver import status
from podnet.apiserver.streams import CLIENT_KEY, Streams

from podnet.api.kinds import Kind, lookup
from podnet.spdy import session as spdy
from podnet.spdy.portforward import (
    PROTOCOL,
    STREAM_CREATION_TIMEOUT,
    WEBSOCKET_PROTOCOL,
    Pair,
    Rejected,
    StreamPairs,
    TimedOut,
)
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SPDY_UPGRADE = "SPDY/3.1"
PROTOCOL_HEADER = "X-Stream-Protocol-Version"
# Bytes that may wait on their way, each way, before the side they come from is no longer read: the pod's
# bytes held back by a flow-control window, a stream's bytes the agent has yet to take, the client's bytes
# on an upgraded connection yet to be decoded. kubectl's SPDY does no flow control: this is the backpressure.
MAX_BUFFERED = 256 * 1024
KUBELET_TIMEOUT = 10.0

Dial = Callable[[int], Awaitable[aiohttp.ClientWebSocketResponse]]


def add_routes(app: web.Application, relay: Streams) -> None:
    """The route, built on the steps of the other pod streams (authorization, the pod, the kubelet's URL and
    its client: TLS with the API server's kubelet client certificate)."""
    path = lookup("pods").path("{namespace}", "{name}") + "/portforward"
    handler = _Handler(relay)
    app.router.add_get(path, handler.serve)
    app.router.add_post(path, handler.serve)


def subresources(kind: Kind) -> list[dict]:
    """The discovery entry of `pods/portforward`, as kube-apiserver lists it."""
    if kind.plural != "pods":
        return []
    return [{"name": "pods/portforward", "singularName": "", "namespaced": True, "kind": "PodPortForwardOptions",
             "verbs": ["create", "get"]}]


class _Handler:
    def __init__(self, relay: Streams):
        self.relay = relay

    async def serve(self, request: web.Request) -> web.StreamResponse:
        pod = await self.relay.authorized_pod(request, "create", "portforward")
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        if not (pod.get("spec") or {}).get("nodeName"):
            raise status.bad_request(f"pod {name} does not have a host assigned")
        url = await self.relay.kubelet_url(pod, ("portForward", namespace, name), (), request)
        client = request.app[CLIENT_KEY]
        await _reach_kubelet(client, url)

        async def dial(port: int) -> aiohttp.ClientWebSocketResponse:
            return await client.ws_connect(url, params={"port": str(port)}, autoping=True, max_msg_size=0,
                                           timeout=aiohttp.ClientWSTimeout(ws_close=5.0))

        upgrade = request.headers.get("Upgrade", "").lower()
        if upgrade == "websocket":
            offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
            if WEBSOCKET_PROTOCOL not in offered:
                raise _no_common_protocol(offered, WEBSOCKET_PROTOCOL)
            ws = web.WebSocketResponse(protocols=(WEBSOCKET_PROTOCOL,), max_msg_size=0, autoping=True)
            await ws.prepare(request)
            await Tunnel(_WebSocketConnection(ws), dial).run()
            return ws
        if upgrade == SPDY_UPGRADE.lower():
            offered = [p.strip() for value in request.headers.getall(PROTOCOL_HEADER, []) for p in value.split(",") if p.strip()]
            if PROTOCOL not in offered:
                raise _no_common_protocol(offered, PROTOCOL)
            response = web.StreamResponse(
                status=101, headers={"Connection": "Upgrade", "Upgrade": SPDY_UPGRADE, PROTOCOL_HEADER: PROTOCOL}
            )
            await response.prepare(request)
            connection = _UpgradedConnection(request, response)
            request.protocol.set_parser(connection)  # type: ignore[union-attr, arg-type]
            await Tunnel(connection, dial).run()
            return response
        raise status.bad_request(
            f"Upgrade request required: port-forward streams over a WebSocket ({WEBSOCKET_PROTOCOL}) or {SPDY_UPGRADE}"
        )


async def _reach_kubelet(client: aiohttp.ClientSession, url: str) -> None:
    """kube-apiserver dials the kubelet before it upgrades the client, so an unreachable node fails the upgrade
    itself (kubectl: `error upgrading connection: error dialing backend: ...`). The question put to the kubelet
    API names no port: it answers 404 (a Status passed on) when the pod is not there, else its refusal of the
    missing port, which says it is there and reachable."""
    try:
        async with client.get(url, timeout=aiohttp.ClientTimeout(total=KUBELET_TIMEOUT)) as response:
            if response.status == 403:
                raise status.internal("error dialing backend: the kubelet refused the API server's client certificate")
            if response.status == 404:
                body = await response.json(content_type=None)
                if isinstance(body, dict) and body.get("kind") == "Status":
                    raise status.ApiError(body)
                raise status.internal("error dialing backend: the kubelet answered 404")
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
        raise status.internal(dial_failure(e)) from None


def _no_common_protocol(offered: list[str], supported: str) -> status.ApiError:
    """As the kubelet's and kube-apiserver's handshake words it (Go prints a list as `[a b]`)."""
    message = f"unable to upgrade: unable to negotiate protocol: client supports [{' '.join(offered)}], server supports [{supported}]"
    return status.ApiError(status.status(403, "Forbidden", message))


class _WebSocketConnection:
    """kubectl's default: SPDY in the binary messages of a WebSocket."""

    def __init__(self, ws: web.WebSocketResponse):
        self.ws = ws

    async def chunks(self) -> AsyncIterator[bytes]:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                yield message.data

    async def send(self, data: bytes) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(data)

    async def close(self) -> None:
        await self.ws.close()


class _UpgradedConnection:
    """kubectl's fallback: SPDY straight on the connection after `101 Switching Protocols`. aiohttp hands the
    connection's bytes to a payload parser (`feed_data`, `feed_eof`); reading pauses while too many wait."""

    def __init__(self, request: web.Request, response: web.StreamResponse):
        self.transport = request.transport
        self.response = response
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.waiting = 0
        self.paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if data:
            self.queue.put_nowait(bytes(data))
            self.waiting += len(data)
            if self.waiting > MAX_BUFFERED and not self.paused and self.transport is not None:
                self.transport.pause_reading()
                self.paused = True
        return False, b""

    def feed_eof(self) -> None:
        self.queue.put_nowait(b"")

    async def chunks(self) -> AsyncIterator[bytes]:
        while data := await self.queue.get():
            self.waiting -= len(data)
            if self.paused and self.waiting <= MAX_BUFFERED // 2 and self.transport is not None:
                self.transport.resume_reading()
                self.paused = False
            yield data

    async def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            await self.response.write(data)

    async def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def dial_failure(error: BaseException) -> str:
    """A failure to reach the kubelet API, worded as kube-apiserver words it (Go's dialer)."""
    if isinstance(error, aiohttp.WSServerHandshakeError):
        return f"error dialing backend: the kubelet answered {error.status} {error.message}"
    if isinstance(error, aiohttp.ClientConnectorError):
        cause = error.os_error
        what = "connect: connection refused" if isinstance(cause, ConnectionRefusedError) else (cause.strerror or str(cause))
        return f"error dialing backend: dial tcp {error.host}:{error.port}: {what}"
    if isinstance(error, TimeoutError):
        return "error dialing backend: i/o timeout"
    return f"error dialing backend: {error}"


@dataclass(slots=True)
class _Forward:
    pair: Pair
    inbound: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)  # None: client's EOF
    inbound_bytes: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)  # inbound_bytes is back under the limit
    window: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None

    def __post_init__(self) -> None:
        self.drained.set()

    def take_inbound(self, data: bytes) -> None:
        self.inbound.put_nowait(data)
        self.inbound_bytes += len(data)
        if self.inbound_bytes > MAX_BUFFERED:
            self.drained.clear()

    def taken(self, size: int) -> None:
        self.inbound_bytes -= size
        if self.inbound_bytes <= MAX_BUFFERED:
            self.drained.set()


class Tunnel:
    """One kubectl port-forward session: the SPDY session on the client's connection, and one relay to the
    agent per stream pair."""

    def __init__(self, connection: _WebSocketConnection | _UpgradedConnection, dial: Dial):
        self.connection = connection
        self.dial = dial
        self.session = spdy.ServerSession()
        self.pairs = StreamPairs()
        self.forwards: dict[int, _Forward] = {}  # by data and by error stream id
        self._send_lock = asyncio.Lock()
        self._loop = asyncio.get_running_loop()
        self._timers: set[asyncio.TimerHandle] = set()
        self._flushes: set[asyncio.Task] = set()

    async def flush(self) -> None:
        async with self._send_lock:
            data = self.session.data_to_send()
            if data:
                await self.connection.send(data)

    async def run(self) -> None:
        try:
            async for chunk in self.connection.chunks():
                for event in self.session.receive_data(chunk):
                    self._on_event(event)
                await self.flush()
                if self.session.ended:
                    break
                # As spdystream does (its frame loop waits for each stream's reader): a stream whose agent
                # lags holds up the reading of the client's connection.
                for stream_id, forward in list(self.forwards.items()):
                    if stream_id == forward.pair.data_stream:
                        await forward.drained.wait()
        finally:
            for timer in self._timers:
                timer.cancel()
            tasks = {f.task for f in self.forwards.values() if f.task is not None}
            await cancel_and_wait(*tasks)
            await self.connection.close()

    def _on_event(self, event: spdy.Event) -> None:
        if isinstance(event, spdy.StreamOpened):
            outcome = self.pairs.add(event.stream_id, event.headers, self._loop.time())
            if isinstance(outcome, Rejected):
                log.info("port-forward stream %d refused: %s", event.stream_id, outcome.reason)
                self.session.reset(event.stream_id)
                return
            self.session.accept(event.stream_id)
            if outcome is None:
                timer = self._loop.call_later(STREAM_CREATION_TIMEOUT, self._expire)
                self._timers.add(timer)
            elif isinstance(outcome, Pair):
                forward = _Forward(outcome)
                self.forwards[outcome.data_stream] = self.forwards[outcome.error_stream] = forward
                forward.task = asyncio.create_task(self._relay(forward), name=f"port-forward {outcome.request_id}")
        elif isinstance(event, spdy.DataReceived):
            forward = self.forwards.get(event.stream_id)
            if forward is not None and event.stream_id == forward.pair.data_stream:
                forward.take_inbound(event.data)
            else:
                self.session.consumed(event.stream_id, len(event.data))  # the error stream's: nothing reads it
        elif isinstance(event, spdy.StreamEnded):
            forward = self.forwards.get(event.stream_id)
            if forward is not None and event.stream_id == forward.pair.data_stream:
                forward.inbound.put_nowait(None)
        elif isinstance(event, spdy.StreamReset):
            self.pairs.forget(event.stream_id)
            forward = self.forwards.get(event.stream_id)
            if forward is not None and forward.task is not None:
                forward.task.cancel()
        elif isinstance(event, spdy.WindowOpened):
            forward = self.forwards.get(event.stream_id)
            if forward is not None:
                forward.window.set()

    def _expire(self) -> None:
        """Half pairs whose partner never came end as the kubelet ends them."""
        self._timers = {timer for timer in self._timers if timer.when() > self._loop.time()}
        for stale in self.pairs.expire(self._loop.time()):
            if stale.error_stream is not None:
                self.session.send(stale.error_stream, TimedOut.MESSAGE.encode())
                self.session.end(stale.error_stream)
            if stale.data_stream is not None:
                self.session.reset(stale.data_stream)
        flush = self._loop.create_task(self.flush())
        self._flushes.add(flush)
        flush.add_done_callback(self._flushes.discard)

    async def _relay(self, forward: _Forward) -> None:
        pair = forward.pair
        try:
            try:
                agent = await self.dial(pair.port)
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self.session.send(pair.error_stream, f"error forwarding port {pair.port}: {dial_failure(e)}".encode())
                return
            async with agent:
                upstream = asyncio.create_task(self._to_agent(forward, agent))
                try:
                    await self._from_agent(forward, agent)
                finally:
                    await cancel_and_wait(upstream)
        except spdy.LocalProtocolError:
            return  # the client reset the streams or ended the session
        finally:
            forward.drained.set()
            for stream_id in (pair.data_stream, pair.error_stream):
                self.forwards.pop(stream_id, None)
                self.session.end(stream_id)
            with contextlib.suppress(ConnectionError):
                await self.flush()

    async def _to_agent(self, forward: _Forward, agent: aiohttp.ClientWebSocketResponse) -> None:
        stream_id = forward.pair.data_stream
        while (data := await forward.inbound.get()) is not None:
            await agent.send_bytes(data)
            forward.taken(len(data))
            self.session.consumed(stream_id, len(data))
            await self.flush()
        await agent.send_bytes(b"")

    async def _from_agent(self, forward: _Forward, agent: aiohttp.ClientWebSocketResponse) -> None:
        pair = forward.pair
        async for message in agent:
            if message.type == aiohttp.WSMsgType.BINARY:
                self.session.send(pair.data_stream, message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                self.session.send(pair.error_stream, message.data.encode())
            await self.flush()
            while self.session.buffered(pair.data_stream) > MAX_BUFFERED:
                forward.window.clear()
                await forward.window.wait()
