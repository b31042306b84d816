"""msgpack-RPC framing, pure: messages in, bytes out; bytes in, messages out.

Requests are `[0, id, method, params]`, responses `[1, id, error, result]`, notifications
`[2, method, params]`. An error is a dict `{"code": str, "message": str}` or None.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2
MAX_MESSAGE = 64 * 1024 * 1024


class FramingError(ValueError):
    """The peer sent bytes that are not a msgpack-RPC message."""


@dataclass(frozen=True, slots=True)
class Request:
    msgid: int
    method: str
    params: Any


@dataclass(frozen=True, slots=True)
class Response:
    msgid: int
    error: dict | None
    result: Any


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: Any


Message = Request | Response | Notification


def encode(message: Message) -> bytes:
    if isinstance(message, Request):
        return msgpack.packb([REQUEST, message.msgid, message.method, message.params], use_bin_type=True)
    if isinstance(message, Response):
        return msgpack.packb([RESPONSE, message.msgid, message.error, message.result], use_bin_type=True)
    return msgpack.packb([NOTIFICATION, message.method, message.params], use_bin_type=True)


def _to_message(raw: Any) -> Message:
    if not isinstance(raw, list) or not raw:
        raise FramingError("message is not an array")
    kind = raw[0]
    if kind == REQUEST and len(raw) == 4 and isinstance(raw[1], int) and isinstance(raw[2], str):
        return Request(raw[1], raw[2], raw[3])
    if kind == RESPONSE and len(raw) == 4 and isinstance(raw[1], int):
        error = raw[2]
        if error is not None and not isinstance(error, dict):
            error = {"code": "Error", "message": str(error)}
        return Response(raw[1], error, raw[3])
    if kind == NOTIFICATION and len(raw) == 3 and isinstance(raw[1], str):
        return Notification(raw[1], raw[2])
    raise FramingError(f"not a msgpack-RPC message: type {kind!r}, {len(raw)} fields")


class Decoder:
    """Feed bytes as they arrive; iterate the complete messages. A bad message raises FramingError,
    after which the stream cannot be trusted and should be closed."""

    def __init__(self) -> None:
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_MESSAGE, strict_map_key=False)

    def feed(self, data: bytes) -> list[Message]:
        try:
            self._unpacker.feed(data)
            return [_to_message(raw) for raw in self._unpacker]
        except FramingError:
            raise
        # TypeError: a map keyed by an array or a map (unhashable in Python) is valid msgpack
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            raise FramingError(str(exc)) from exc
