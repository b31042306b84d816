"""msgpack-RPC over a Unix socket: a server that dispatches to handlers, a client that keeps pending
requests by id.

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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from podnet.rpc.framing import Decoder, FramingError, Notification, Request, Response, encode

log = logging.getLogger(__name__)

Handler = Callable[[Any], Awaitable[Any] | AsyncIterator[Any]]


class RpcError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RpcServer:
    def __init__(self, path: str, handlers: dict[str, Handler]):
        self.path = path
        self.handlers = dict(handlers)
        self.handlers.setdefault("ping", self._ping)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()
        self.malformed_frames = 0

    async def _ping(self, params: Any) -> str:
        return "pong"

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._serve_connection, path=self.path)

    async def close(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            outcome = handler(request.params)
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
        reader, self._writer = await asyncio.open_unix_connection(self.path)
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
        if self._reader_task:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

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
