"""The kubelet API's port-forward: `GET /portForward/{namespace}/{pod}?port=N`, a WebSocket that the API
server opens for one forwarded connection, relayed to a TCP connection into the pod's port.

The connection is made as the kubelet makes it, from the node into the pod:
- a netns pod: a socket created inside the pod's network namespace connects to its localhost, as
  containerd's port-forward does (`socket_in_namespace`);
- a virtual pod: the node opens a userspace TCP connection to the pod's address through the pipeline,
  the way a nodePort client's connection is bridged (`NodePorts.connect`); its agnhost stack answers.

The WebSocket's messages (the API server's side is apiserver/portforward.py): binary messages are the
connection's bytes; an empty binary message from the API server is its client's end of stream; a text
message from here is the failure the kubelet would report, worded as it words it, after which the
WebSocket closes; closing the WebSocket is the pod's end of stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web
from podnet.nodeagent.pods.netns import NETNS_DIR, socket_in_namespace

if TYPE_CHECKING:
    from podnet.nodeagent.agent import NodeAgent, VirtualPod

log = logging.getLogger(__name__)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# (namespace, pod, port) -> the connection's streams; OSError when it cannot be made.
Connect = Callable[[str, str, int], Awaitable[Streams]]
CONNECT_TIMEOUT = 10.0


class PodUnknown(LookupError):
    pass


async def connect_in_namespace(netns: str, port: int) -> Streams:
    """What containerd does for a pod's port-forward: connect to localhost inside its namespace."""
    sock = socket_in_namespace(netns, socket.SOCK_STREAM)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def failure(port: int, netns: str | None, error: BaseException) -> str:
    """Why the connection failed, worded as containerd words it for a pod in `netns` (a namespace's
    path), so kubectl shows what it shows against a real node; a virtual pod (`netns` None) was dialled
    at its address, and the error names that."""
    reason = str(error)
    if not reason:
        what = "connect: connection refused" if isinstance(error, ConnectionRefusedError) else "i/o timeout"
        reason = f"dial tcp4 127.0.0.1:{port}: {what}"
    if netns is None:
        return f"failed to connect to the pod's port {port}: {reason}"
    return (
        f'failed to execute portforward in network namespace "{netns}": '
        f"failed to connect to localhost:{port} inside namespace, IPv4: {reason} "
    )


def add_routes(app: web.Application, connect: Connect, identify: Callable[[str, str], tuple[str, str | None]]) -> None:
    """`identify(namespace, pod)` -> (the pod's uid, its network namespace's path or None for a virtual
    pod), PodUnknown if the pod has no network on this node."""

    async def port_forward(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        port_text = request.query.get("port", "")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            return web.Response(status=400, text=f'unable to parse "{port_text}" as a port')
        try:
            uid, netns = identify(namespace, name)
        except PodUnknown:
            return web.Response(status=404, text=f"pod {namespace}/{name} not found on this node")
        port = int(port_text)
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        try:
            reader, writer = await connect(namespace, name, port)
        except (OSError, TimeoutError) as e:
            message = f"error forwarding port {port} to pod {uid}, uid : {failure(port, netns, e)}"
            log.info("%s", message)
            await ws.send_str(message)
            await ws.close()
            return ws
        await _relay(ws, reader, writer)
        return ws

    app.router.add_get("/portForward/{namespace}/{pod}", port_forward)


async def _relay(ws: web.WebSocketResponse, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Until the pod ends its side (then the WebSocket is closed) or the WebSocket closes (then the
    connection is)."""

    async def to_pod() -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            if not message.data:
                if writer.can_write_eof():
                    writer.write_eof()
                continue
            writer.write(message.data)
            await writer.drain()

    async def from_pod() -> None:
        while data := await reader.read(65536):
            await ws.send_bytes(data)

    tasks = [asyncio.create_task(to_pod()), asyncio.create_task(from_pod())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
        writer.close()
        await ws.close()


def serve_pods_of(agent: NodeAgent) -> Callable[[web.Application], None]:
    """The route, over the pods of `agent`."""

    def pod(namespace: str, name: str) -> VirtualPod:
        found = agent.pods.get(f"{namespace}/{name}")
        if found is None:
            raise PodUnknown(f"{namespace}/{name}")
        return found

    def identify(namespace: str, name: str) -> tuple[str, str | None]:
        found = pod(namespace, name)
        return found.uid, str(NETNS_DIR / found.netns.net.netns) if found.netns is not None else None

    async def connect(namespace: str, name: str, port: int) -> Streams:
        found = pod(namespace, name)
        if found.netns is not None:
            return await connect_in_namespace(found.netns.net.netns, port)
        if agent.nodeports is None:
            raise ConnectionRefusedError("the node's dataplane is not up yet")
        return await asyncio.wait_for(agent.nodeports.connect(found.port.ip, port), CONNECT_TIMEOUT)

    return lambda app: add_routes(app, connect, identify)
