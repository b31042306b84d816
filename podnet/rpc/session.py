"""msgpack-RPC over a Unix socket: a server that dispatches to handlers, a client that keeps pending
requests by id.

The socket is the node's control plane: whoever may call `services.apply` or `faults.partition` rules
the node's traffic. So it is bound mode 0600 (never under a looser umask, not even for an instant), a
connection from any user but the server's own and root is closed after asking the kernel who the peer is
(SO_PEERCRED: a socket reached through a laxer directory or a copied file descriptor is still refused),
connections are bounded, and a message larger than the framing's MAX_MESSAGE ends its connection. Each
refusal is counted and answered by the built-in `rpc.stats`.

A handler is `async def handler(params) -> result`, or an async generator that streams: each item it
yields reaches the caller as a notification `[2, "stream", {"id": msgid, "item": item}]`, and the
request's response follows when the generator ends. Raising RpcError(code, message) answers with that
error; any other exception answers with code "Internal" and is logged, never kills the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from podnet.rpc.framing import Decoder, FramingError, Notification, Request, Response, encode
from podnet.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any] | AsyncIterator[Any]]

# sockaddr_un's sun_path, which holds the path and its terminating NUL: a socket's path of this many bytes or
# more cannot be bound or connected to as it is.
_SUN_PATH = 108


@contextlib.contextmanager
def socket_address(path: str):
    """`path` as bind and connect take it. A deeper path (a state directory under a long temporary one)
    is reached through its directory opened on the side, `/proc/self/fd/<n>/<name>`, which the kernel
    resolves to the same file, so an agent runs wherever its state directory is."""
    if len(os.fsencode(path)) < _SUN_PATH:
        yield path
        return
    directory, name = os.path.split(path)
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


class RpcError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# Local callers are a handful of components and a CLI; more at once is a misbehaving or hostile client.
MAX_CONNECTIONS = 64
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket, as the kernel recorded it at connect."""
    _, uid, _ = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return uid


class RpcServer:
    def __init__(self, path: str, handlers: dict[str, Handler], *, max_connections: int = MAX_CONNECTIONS,
                 named_params: bool = False):
        """`named_params`: every method takes a map of named parameters (nil standing for an empty one), so
        anything else is answered BadRequest before a handler sees it, rather than failing in it as Internal."""
        self.path = path
        self.named_params = named_params
        self.handlers = dict(handlers)
        self.handlers.setdefault("ping", self._ping)
        self.handlers.setdefault("rpc.stats", self._stats)
        self.allowed_uids = frozenset({os.geteuid(), 0})
        self.max_connections = max_connections
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self.malformed_frames = 0
        self.refused_peers = 0
        self.refused_connections = 0

    async def _ping(self, params: Any) -> str:
        return "pong"

    async def _stats(self, params: Any) -> dict[str, int]:
        return {"malformed_frames": self.malformed_frames, "refused_peers": self.refused_peers,
                "refused_connections": self.refused_connections, "connections": len(self._connections)}

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        previous = os.umask(0o177)  # bind creates the file: 0600 from its first instant
        try:
            with socket_address(self.path) as address:
                sock.bind(address)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(previous)
        os.chmod(self.path, 0o600)
        self._server = await asyncio.start_unix_server(self._serve_connection, sock=sock)

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        uid = peer_uid(writer.get_extra_info("socket"))
        if uid not in self.allowed_uids:
            self.refused_peers += 1
            log.warning("rpc: refused a connection from uid %d on %s", uid, self.path)
            return False
        if len(self._connections) >= self.max_connections:
            self.refused_connections += 1
            log.warning("rpc: refused a connection on %s: %d are open", self.path, len(self._connections))
            return False
        return True

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        decoder = Decoder()
        calls: set[asyncio.Task] = set()
        try:
            while data := await reader.read(65536):
                try:
                    messages = decoder.feed(data)
                except FramingError as exc:
                    self.malformed_frames += 1
                    log.warning("rpc: closing a connection that sent a malformed frame: %s", exc)
                    break
                for message in messages:
                    if isinstance(message, Request):
                        call = asyncio.create_task(self._call(message, writer))
                        calls.add(call)
                        call.add_done_callback(calls.discard)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            for call in calls:
                call.cancel()
            writer.close()
            self._connections.discard(task)

    async def _call(self, request: Request, writer: asyncio.StreamWriter) -> None:
        handler = self.handlers.get(request.method)
        error: dict | None = None
        result: Any = None
        try:
            if handler is None:
                raise RpcError("MethodNotFound", f"no method {request.method!r}")
            params = request.params
            if self.named_params:
                params = {} if params is None else params
                if not isinstance(params, dict):
                    raise RpcError("BadRequest", f"{request.method} takes a map of parameters, not {type(params).__name__}")
            outcome = handler(params)
            if inspect.isasyncgen(outcome):
                async for item in outcome:
                    writer.write(encode(Notification("stream", {"id": request.msgid, "item": item})))
                    await writer.drain()
            else:
                result = await outcome
        except RpcError as exc:
            error = {"code": exc.code, "message": exc.message}
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception as exc:
            log.exception("rpc: %s failed", request.method)
            error = {"code": "Internal", "message": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(ConnectionError):
            writer.write(encode(Response(request.msgid, error, result)))
            await writer.drain()


class RpcClient:
    """One connection to an RpcServer; requests may run concurrently."""

    def __init__(self, path: str):
        self.path = path
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._streams: dict[int, asyncio.Queue] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None

    async def connect(self) -> RpcClient:
        with socket_address(self.path) as address:
            reader, self._writer = await asyncio.open_unix_connection(address)
        self._reader_task = asyncio.create_task(self._read(reader))
        return self

    async def __aenter__(self) -> RpcClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def connected(self) -> bool:
        return self._reader_task is not None and not self._reader_task.done()

    async def close(self) -> None:
        if self._writer:
            self._writer.close()
        await cancel_and_wait(self._reader_task)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder = Decoder()
        try:
            while data := await reader.read(65536):
                for message in decoder.feed(data):
                    if isinstance(message, Response):
                        future = self._pending.pop(message.msgid, None)
                        if future and not future.done():
                            future.set_result(message)
                        queue = self._streams.get(message.msgid)
                        if queue is not None:
                            queue.put_nowait(message)
                    elif isinstance(message, Notification) and message.method == "stream":
                        queue = self._streams.get(message.params.get("id"))
                        if queue is not None:
                            queue.put_nowait(message.params.get("item"))
        except (ConnectionError, FramingError):
            pass
        finally:
            lost = ConnectionError(f"rpc connection to {self.path} lost")
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(lost)
            self._pending.clear()
            for queue in self._streams.values():
                queue.put_nowait(lost)

    def _send(self, method: str, params: Any) -> int:
        if self._writer is None or not self.connected:
            raise ConnectionError(f"rpc connection to {self.path} is not open")
        msgid = next(self._ids)
        self._writer.write(encode(Request(msgid, method, params)))
        return msgid

    async def call(self, method: str, params: Any = None, *, timeout: float | None = 30.0) -> Any:
        msgid = self._send(method, params)
        future = asyncio.get_running_loop().create_future()
        self._pending[msgid] = future
        response: Response = await asyncio.wait_for(future, timeout)
        if response.error:
            raise RpcError(response.error.get("code", "Error"), response.error.get("message", ""))
        return response.result

    async def stream(self, method: str, params: Any = None) -> AsyncIterator[Any]:
        """Items a streaming handler yields, until it ends."""
        queue: asyncio.Queue = asyncio.Queue()
        msgid = self._send(method, params)
        self._streams[msgid] = queue
        try:
            while True:
                item = await queue.get()
                if isinstance(item, ConnectionError):
                    raise item
                if isinstance(item, Response):
                    if item.error:
                        raise RpcError(item.error.get("code", "Error"), item.error.get("message", ""))
                    return
                yield item
        finally:
            self._streams.pop(msgid, None)


async def call_once(path: str, method: str, params: Any = None, *, timeout: float = 30.0) -> Any:
    """Connects, makes one call and closes: for the CLI."""
    async with RpcClient(path) as client:
        return await client.call(method, params, timeout=timeout)
