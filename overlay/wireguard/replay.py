"""The receive-side anti-replay window (RFC 6479's ring of bit blocks, 2048 bits as in WireGuard's
original kernel module): a counter is accepted once, and only while within WINDOW_SIZE of the highest
one seen. Moving forward clears whole blocks instead of shifting bits, so each check is O(1)."""

from __future__ import annotations

BLOCK_BITS = 64
RING_BLOCKS = 32  # 2048 bits
WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS  # one block is always being recycled
_BLOCK_SHIFT = BLOCK_BITS.bit_length() - 1
_BIT_MASK = BLOCK_BITS - 1


class ReplayWindow:
    __slots__ = ("_ring", "_last")

    def __init__(self) -> None:
        self._ring = [0] * RING_BLOCKS
        self._last = 0

    def accept(self, counter: int, limit: int) -> bool:
        """Record `counter` and say whether it is new; call only after the packet authenticated."""
        last = self._last
        if counter > last:  # the usual case: new, since every bit above the last was cleared
            if counter >= limit:
                return False
            block, current = counter >> _BLOCK_SHIFT, last >> _BLOCK_SHIFT
            ring = self._ring
            if block != current:
                for i in range(current + 1, current + min(block - current, RING_BLOCKS) + 1):
                    ring[i % RING_BLOCKS] = 0
            self._last = counter
            ring[block % RING_BLOCKS] |= 1 << (counter & _BIT_MASK)
            return True
        if last - counter > WINDOW_SIZE:
            return False
        bit = 1 << (counter & _BIT_MASK)
        index = (counter >> _BLOCK_SHIFT) % RING_BLOCKS
        if self._ring[index] & bit:
            return False
        self._ring[index] |= bit
        return True
