"""ICMP error rate limiting per destination, as Linux does it (`net.ipv4.icmp_ratelimit`).

Linux sends an ICMP error (destination unreachable, time exceeded, parameter problem: the types of its
default `icmp_ratemask`) to a given address at most once per `icmp_ratelimit` (1000 ms), with a burst
of six (`XRLIM_BURST_FACTOR`): `inet_peer_xrlim_allow` keeps, per destination, a token bucket counted
in time. Echo replies and TCP resets are not limited. Without it a UDP flood at a closed port makes the
receiver spend as much on errors as on the flood itself, and the sender as much again on reading them.

Pure: `now` (seconds, any monotonic clock) is a parameter; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Hashable

ICMP_RATELIMIT_SECONDS = 1.0  # net.ipv4.icmp_ratelimit = 1000 (ms)
ICMP_BURST = 6  # XRLIM_BURST_FACTOR in net/ipv4/inetpeer.c
# Destinations remembered at once; a flood from spoofed sources cannot grow the table past it.
MAX_DESTINATIONS = 4096


class IcmpErrorLimiter:
    """`allow(destination, now)`: may one more ICMP error go to `destination` now?"""

    def __init__(
        self,
        interval: float = ICMP_RATELIMIT_SECONDS,
        burst: int = ICMP_BURST,
        max_destinations: int = MAX_DESTINATIONS,
    ):
        if interval < 0 or burst < 1 or max_destinations < 1:
            raise ValueError("an ICMP rate limit needs interval >= 0, burst >= 1 and room for a destination")
        self.interval = interval
        self.capacity = burst * interval
        self.max_destinations = max_destinations
        # destination -> [tokens, when they were counted]; tokens are seconds of credit, one error costs
        # `interval` of them, as Linux counts jiffies. Updated in place: under a flood this runs per packet.
        self._buckets: dict[Hashable, list[float]] = {}

    def allow(self, destination: Hashable, now: float) -> bool:
        bucket = self._buckets.get(destination)
        if bucket is None:
            # Linux starts a new peer with its bucket full (rate_last sixty seconds in the past).
            if len(self._buckets) >= self.max_destinations and not self._forget_full(now):
                return False
            bucket = self._buckets[destination] = [self.capacity, now]
        tokens = bucket[0] + (now - bucket[1])
        if tokens > self.capacity:
            tokens = self.capacity
        bucket[1] = now
        if tokens >= self.interval:
            bucket[0] = tokens - self.interval
            return True
        bucket[0] = tokens
        return False

    def _forget_full(self, now: float) -> bool:
        """Drops the destinations whose buckets have refilled (forgetting them changes nothing);
        True when that made room."""
        capacity = self.capacity
        full = [d for d, (tokens, at) in self._buckets.items() if tokens + (now - at) >= capacity]
        for destination in full:
            del self._buckets[destination]
        return len(self._buckets) < self.max_destinations

    def __len__(self) -> int:
        return len(self._buckets)
