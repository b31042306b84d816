"""The anti-replay window against its definition: a counter is accepted once, and only while it is within
WINDOW_SIZE of the highest counter accepted before it, whatever order counters come in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from podnet.overlay.wireguard.replay import BLOCK_BITS, RING_BLOCKS, WINDOW_SIZE, ReplayWindow

LIMIT = 1 << 20

counters = st.lists(
    st.one_of(st.integers(0, 3 * BLOCK_BITS), st.integers(0, 2 * WINDOW_SIZE + 3 * BLOCK_BITS), st.integers(0, LIMIT + 5)),
    max_size=400,
)


@given(counters)
def test_the_window_accepts_exactly_the_new_counters_within_reach_of_the_highest(sequence):
    window, seen, highest = ReplayWindow(), set(), None
    for counter in sequence:
        expected = counter < LIMIT and counter not in seen and (highest is None or highest - counter <= WINDOW_SIZE)
        assert window.accept(counter, LIMIT) is expected, counter
        if expected:
            seen.add(counter)
            highest = counter if highest is None else max(highest, counter)


def test_an_in_order_run_is_accepted_once_across_every_block_of_the_ring():
    window = ReplayWindow()
    run = range(3 * RING_BLOCKS * BLOCK_BITS)
    assert all(window.accept(counter, LIMIT) for counter in run)
    assert not any(window.accept(counter, LIMIT) for counter in run)
