"""The internet checksum (RFC 1071) and its incremental update (RFC 1624).

The ones' complement sum of 16-bit words equals the whole buffer read as one big-endian integer taken
modulo 0xffff, because 2**16 is 1 modulo 0xffff. `int.from_bytes` plus one modulo runs in C, so no
Python loop touches the bytes.

A batch of buffers is summed in one numpy call instead (`segment_sums`): per buffer that costs a tenth of
the integer conversion, which is what a node receiving a flood of full-sized datagrams spends most on.
"""

from __future__ import annotations

import sys
from functools import lru_cache

import numpy

from .addresses import ip_to_bytes

# numpy reads 16-bit words in the machine's byte order. A byte-swapped word is 256 times the word modulo
# 0xffff (2**16 is 1 there), so a sum read little-endian is this weight times the big-endian one, and a
# value added to it (a pseudo-header) must be weighed alike.
NATIVE_WORD_WEIGHT = 1 if sys.byteorder == "big" else 256
_WORD = numpy.dtype(numpy.uint16)
_WORD_PAIR = numpy.dtype(numpy.uint32)
_SUM = numpy.dtype(numpy.uint64)  # no overflow: 2**48 words of 0xffff would be needed

# From this many bytes on, the buffer is read as two integers whose sum is reduced: a modulo costs per
# digit several times what a conversion or an addition does, and the sum has half the digits.
_SPLIT_AT = 256
# Ranges of about an MTU (what a flood brings) are read whole, with no copy when the range is the whole
# buffer, and folded three times at widths that are multiples of 16 bits (2**(16 * k) is 1 modulo 0xffff),
# leaving the caller's modulo an eighth of the digits; past these sizes the folds would leave most of them.
_FOLDED_SIZES = range(1025, 1537)
# From this many bytes on (a TCP super-segment's), numpy sums the 16-bit words: a conversion and modulo
# of a 64 KB integer cost several times a pass over its words.
_NUMPY_AT = 4096
_FOLD_1, _FOLD_2, _FOLD_3 = 5632, 2816, 1408
_LOW_1, _LOW_2, _LOW_3 = ((1 << bits) - 1 for bits in (_FOLD_1, _FOLD_2, _FOLD_3))


def wide_sum(data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None) -> int:
    """An integer congruent modulo 0xffff to `data[start:end]` (padded with a zero byte when odd) read
    as one big-endian integer, and zero only when those bytes are all zero. Long ranges other than those
    of about an MTU (folded, above) are taken in two parts, the first of even length: its weight
    2**(8 * len(rest)) is 1 modulo 0xffff when the rest is even, and when the rest is odd the padding
    byte makes it even. The range is sliced from `data` directly, so a caller checking a packet's payload
    copies it once, not twice. The sum of the parts (or of folded parts) is congruent to the whole and
    zero only when every part is."""
    if end is None:
        end = len(data)
    size = end - start
    if size >= _NUMPY_AT:
        # as 32-bit words, half as many additions: one is its two 16-bit words' sum modulo 0xffff
        value = int(numpy.frombuffer(data, _WORD_PAIR, size >> 2, start).sum(dtype=_SUM)) * NATIVE_WORD_WEIGHT
        rest = int.from_bytes(data[end - (size & 3) : end])
        return value + (rest << 8 if size & 1 else rest)
    if size < _SPLIT_AT or size in _FOLDED_SIZES:
        value = int.from_bytes(data[start:end])
        if size & 1:
            value <<= 8
        if size < _SPLIT_AT:
            return value
        value = (value >> _FOLD_1) + (value & _LOW_1)
        value = (value >> _FOLD_2) + (value & _LOW_2)
        return (value >> _FOLD_3) + (value & _LOW_3)
    half = start + ((size >> 1) & ~1)
    rest = int.from_bytes(data[half:end])
    return int.from_bytes(data[start:half]) + (rest << 8 if size & 1 else rest)


def segment_sums(buffer: bytes, starts: list[int]) -> list[int]:
    """The sums of the 16-bit words (in the machine's byte order, see NATIVE_WORD_WEIGHT) of the
    segments of `buffer` that begin at the word offsets `starts`, each running to the next start and
    the last to the end: a batch of buffers joined into one, summed in one pass. `buffer` is of even
    length and `starts` strictly increasing, the first 0."""
    return numpy.add.reduceat(numpy.frombuffer(buffer, _WORD), starts, dtype=_SUM).tolist()


def ones_complement_sum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit ones' complement sum of `data` (padded with a zero byte when odd) plus `initial`.

    The result is in 0..0xffff and is 0 only when everything summed is zero.
    """
    value = wide_sum(data) + initial
    folded = value % 0xFFFF
    if folded == 0 and value != 0:
        return 0xFFFF
    return folded


def internet_checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The value to put in a checksum field; over data that already holds its checksum it is 0."""
    return ~ones_complement_sum(data, initial) & 0xFFFF


def pseudo_header_sum(src_ip: str, dst_ip: str, protocol: int, length: int) -> int:
    """The sum of the IPv4 pseudo-header that UDP and TCP checksums cover, to pass as `initial`
    (not folded to 16 bits: the checksum functions fold it)."""
    return _address_pair_sum(src_ip, dst_ip) + protocol + length


@lru_cache(maxsize=65536)
def _address_pair_sum(src_ip: str, dst_ip: str) -> int:
    """Cached: a node's flows run between the same few address pairs."""
    return ones_complement_sum(ip_to_bytes(src_ip) + ip_to_bytes(dst_ip))


def update_checksum(
    checksum: int, old: bytes | bytearray | memoryview, new: bytes | bytearray | memoryview
) -> int:
    """RFC 1624 eqn. 3: the checksum after the 16-bit-aligned field `old` was replaced by `new`.

    HC' = ~(~HC + ~m + m'), where the sums of ~m over several words is ~(sum of m).
    """
    if len(old) != len(new) or len(old) & 1:
        raise ValueError("incremental checksum update needs equal, even-length fields")
    return apply_change(checksum, change_sum(old, new))


def change_sum(old: bytes | bytearray | memoryview, new: bytes | bytearray | memoryview) -> int:
    """~m + m' of RFC 1624 eqn. 3, unfolded: what a checksum moves by when `old` becomes `new`. Worked
    out once, it serves every packet that gets the same change (`apply_change`)."""
    return (~ones_complement_sum(old) & 0xFFFF) + wide_sum(new)


def apply_change(checksum: int, change: int) -> int:
    """The checksum moved by a `change_sum`: ~(~HC + change), folded as `ones_complement_sum` folds."""
    value = (~checksum & 0xFFFF) + change
    folded = value % 0xFFFF
    if folded == 0 and value != 0:
        folded = 0xFFFF
    return ~folded & 0xFFFF
