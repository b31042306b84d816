"""The split reading of long buffers agrees with reading them whole, modulo 0xffff and in being zero."""

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from podnet.overlay.wire.checksum import NATIVE_WORD_WEIGHT, ones_complement_sum, segment_sums, wide_sum


def _whole(data: bytes) -> int:
    value = int.from_bytes(data, "big")
    return value << 8 if len(data) & 1 else value


def _word_loop(data: bytes) -> int:
    """RFC 1071 as written: 16-bit words, end-around carry."""
    padded = data + b"\0" * (len(data) & 1)
    total = 0
    for index in range(0, len(padded), 2):
        total += padded[index] << 8 | padded[index + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


@given(st.binary(min_size=0, max_size=1600))
def test_wide_sum_is_congruent_to_the_whole_buffer_and_zero_only_for_zeros(data):
    assert wide_sum(data) % 0xFFFF == _whole(data) % 0xFFFF
    assert (wide_sum(data) == 0) == (not any(data))


@given(
    st.binary(min_size=0, max_size=1600),
    st.integers(min_value=0, max_value=40),
    st.integers(min_value=0, max_value=40),
)
def test_a_range_sums_as_its_slice_does(data, head, tail):
    start, end = min(head, len(data)), max(min(head, len(data)), len(data) - tail)
    assert wide_sum(data, start, end) == wide_sum(data[start:end])


@given(st.integers(min_value=250, max_value=1500), st.integers(min_value=0, max_value=255))
def test_long_buffers_sum_as_the_word_loop_does(size, fill):
    data = bytes((fill + index * 7) & 0xFF for index in range(size))
    assert ones_complement_sum(data) == _word_loop(data)


@given(st.binary(min_size=1000, max_size=2100), st.sampled_from([None, 0, 0xFF]))
def test_mtu_sized_buffers_fold_to_the_same_sum(data, fill):
    if fill is not None:  # all zeros, all ones: the sums at the edges of the folds
        data = bytes([fill]) * len(data)
    assert wide_sum(data) % 0xFFFF == _whole(data) % 0xFFFF
    assert (wide_sum(data) == 0) == (not any(data))
    assert ones_complement_sum(data) == _word_loop(data)


@given(st.lists(st.binary(min_size=1, max_size=1600).map(lambda b: b + b"\0" * (len(b) & 1)), min_size=1, max_size=20))
def test_segment_sums_weigh_each_buffer_as_its_word_loop(buffers):
    starts, words = [], 0
    for buffer in buffers:
        starts.append(words)
        words += len(buffer) // 2
    sums = segment_sums(b"".join(buffers), starts)
    assert [s % 0xFFFF for s in sums] == [
        NATIVE_WORD_WEIGHT * _word_loop(buffer) % 0xFFFF for buffer in buffers
    ]


@given(
    st.integers(min_value=4000, max_value=66_000),
    st.integers(min_value=0, max_value=3),
    st.integers(min_value=0, max_value=2**32),
    st.sampled_from([None, 0, 0xFF]),
)
def test_super_segment_sized_ranges_sum_as_read_whole(size, start, seed, fill):
    data = random.Random(seed).randbytes(size) if fill is None else bytes([fill]) * size
    for view in (data, memoryview(bytearray(data))):
        assert wide_sum(view, start) % 0xFFFF == _whole(data[start:]) % 0xFFFF
        assert (wide_sum(view, start) == 0) == (not any(data[start:]))


@pytest.mark.parametrize("size", [4096, 4097, 4098, 4099, 64_001, 65_535])
@pytest.mark.parametrize("start", [0, 1, 2, 3, 20])
@pytest.mark.parametrize("fill", [None, 0, 0xFF])
def test_super_packet_sized_ranges_sum_as_the_whole_does(size, start, fill):
    """Summed as 32-bit words, with a tail of 0 to 3 bytes, from any start."""
    data = bytes([fill]) * (start + size) if fill is not None else random.Random(size + start).randbytes(start + size)
    assert wide_sum(data, start) % 0xFFFF == _whole(data[start:]) % 0xFFFF
    assert (wide_sum(data, start) == 0) == (not any(data[start:]))
