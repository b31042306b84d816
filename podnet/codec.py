"""What every binary decoder shares: the one error a decoder raises on bad input, and a bounds-checked
cursor over bytes (every read past the end raises it). The wire codecs of the overlay and the SPDY framing
both decode with these."""

from __future__ import annotations

import struct


class DecodeError(ValueError):
    """Bytes that are not a valid instance of the format being decoded."""


_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")


class Reader:
    """Reads big-endian fields from `data` starting at `offset`, never past `end`."""

    __slots__ = ("_data", "_pos", "_end")

    def __init__(self, data: bytes | bytearray | memoryview, offset: int = 0, end: int | None = None):
        self._data = data
        self._pos = offset
        self._end = len(data) if end is None else min(end, len(data))

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def _need(self, n: int, what: str) -> int:
        start = self._pos
        if n < 0 or start + n > self._end:
            raise DecodeError(f"truncated {what}: need {n} bytes at offset {start}, have {self._end - start}")
        self._pos = start + n
        return start

    def uint8(self, what: str = "uint8") -> int:
        return self._data[self._need(1, what)]

    def uint16(self, what: str = "uint16") -> int:
        return _U16.unpack_from(self._data, self._need(2, what))[0]

    def uint32(self, what: str = "uint32") -> int:
        return _U32.unpack_from(self._data, self._need(4, what))[0]

    def sub(self, n: int, what: str = "field") -> Reader:
        """A reader confined to the next `n` bytes (a length-prefixed field); this reader moves past them."""
        start = self._need(n, what)
        return Reader(self._data, start, start + n)
