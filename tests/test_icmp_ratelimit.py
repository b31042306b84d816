"""ICMP errors are limited per destination as Linux limits them: a burst of six, then one a second."""

import pytest
from podnet.nodeagent.pods.virtual.ratelimit import IcmpErrorLimiter


def allowed_at(limiter: IcmpErrorLimiter, destination, times) -> list[bool]:
    return [limiter.allow(destination, now) for now in times]


def test_a_burst_of_six_then_one_per_second():
    limiter = IcmpErrorLimiter()
    assert allowed_at(limiter, "10.0.0.1", [0.0] * 8) == [True] * 6 + [False] * 2
    assert allowed_at(limiter, "10.0.0.1", [0.5, 0.99, 1.0, 1.5, 2.0]) == [False, False, True, False, True]


def test_an_idle_destination_earns_its_burst_back_and_no_more():
    limiter = IcmpErrorLimiter()
    allowed_at(limiter, "10.0.0.1", [0.0] * 6)
    assert allowed_at(limiter, "10.0.0.1", [100.0] * 7) == [True] * 6 + [False]


def test_destinations_are_limited_separately():
    limiter = IcmpErrorLimiter()
    assert allowed_at(limiter, "10.0.0.1", [0.0] * 7)[-1] is False
    assert allowed_at(limiter, "10.0.0.2", [0.0] * 6) == [True] * 6


def test_a_full_table_forgets_refilled_destinations_and_refuses_while_none_has():
    limiter = IcmpErrorLimiter(max_destinations=2)
    assert limiter.allow(1, 0.0) and limiter.allow(2, 0.0)
    assert limiter.allow(3, 0.5) is False  # both remembered buckets still owe credit
    assert len(limiter) == 2
    assert limiter.allow(3, 10.0) is True  # by now both refilled: forgetting them changes nothing
    assert len(limiter) == 1


def test_configurable_rate():
    limiter = IcmpErrorLimiter(interval=0.1, burst=1)
    assert allowed_at(limiter, "a", [0.0, 0.05, 0.1, 0.15, 0.2]) == [True, False, True, False, True]
    with pytest.raises(ValueError):
        IcmpErrorLimiter(burst=0)
