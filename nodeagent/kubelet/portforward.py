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
import logging
import socket

from aiohttp import WSMsgType, web
from podnet.nodeagent.endpoints import KernelPod
from podnet.nodeagent.kubelet.node import Kubelet, KubeletError, bad_request
from podnet.nodeagent.pods.netns import socket_in_namespace

from podnet.netns.names import NETNS_DIR
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
CONNECT_TIMEOUT = 10.0


async def connect_in_namespace(netns: str, port: int) -> Streams:
    """What containerd does for a pod's port-forward: connect to localhost inside its namespace."""
    sock = socket_in_namespace(netns, socket.SOCK_STREAM)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), CONNECT_TIMEOUT)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def failure(port: int, address: str, netns: str | None, error: BaseException) -> str:
    """Why the connection to `address:port` failed, worded as containerd words it for a pod in `netns` (a
    namespace's path), so kubectl shows what it shows against a real node; a virtual pod (`netns` None)
    was dialled at its own address, from the node."""
    if isinstance(error, ConnectionRefusedError):
        reason = f"dial tcp4 {address}:{port}: connect: connection refused"
    elif isinstance(error, TimeoutError):
        reason = f"dial tcp4 {address}:{port}: i/o timeout"
    else:
        reason = f"dial tcp4 {address}:{port}: {error.strerror if isinstance(error, OSError) and error.strerror else error}"
    if netns is None:
        return f"failed to connect to the pod's port {port}: {reason}"
    return (
        f'failed to execute portforward in network namespace "{netns}": '
        f"failed to connect to localhost:{port} inside namespace, IPv4: {reason} "
    )


async def port_forward(request: web.Request, kubelet: Kubelet) -> web.StreamResponse:
    namespace, name = request.match_info["namespace"], request.match_info["pod"]
    pod = kubelet.agent.pods.get(f"{namespace}/{name}")
    if pod is None:  # first, so that a request naming no port asks only whether the pod is here
        raise KubeletError(404, "NotFound", f'pod "{name}" not found on node {kubelet.agent.config.name}')
    port_text = request.query.get("port", "")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad_request(f'unable to parse "{port_text}" as a port')
    port = int(port_text)
    netns = str(NETNS_DIR / pod.netns.net.netns) if isinstance(pod, KernelPod) else None
    ws = web.WebSocketResponse(max_msg_size=0)
    await ws.prepare(request)
    try:
        if isinstance(pod, KernelPod):
            reader, writer = await connect_in_namespace(pod.netns.net.netns, port)
        elif kubelet.agent.nodeports is None:
            raise ConnectionRefusedError("the node's dataplane is not up yet")
        else:
            reader, writer = await asyncio.wait_for(kubelet.agent.nodeports.connect(pod.port.ip, port), CONNECT_TIMEOUT)
    except (OSError, TimeoutError) as e:
        address = "127.0.0.1" if netns is not None else pod.port.ip
        message = f"error forwarding port {port} to pod {pod.uid}, uid : {failure(port, address, netns, e)}"
        log.info("%s", message)
        await ws.send_str(message)
        await ws.close()
        return ws
    await _relay(ws, reader, writer)
    return ws


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
        await cancel_and_wait(*tasks)
        writer.close()
        await ws.close()
