"""Longest-prefix-match routing for pod traffic, pure.

Routes come from named sources (`local` for this node's podCIDR, `vxlan` for other nodes' podCIDRs
taken from Node objects, `bgp` for what the speaker learned); each source's set is replaced as a whole,
so a source can never leave a stale route behind. When two sources hold the same prefix, the first in
SOURCE_PREFERENCE wins, as an administrative distance would decide it.

Addresses are 32-bit ints: the lookup runs per new flow, and an int compare is the cheapest key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum


class RouteKind(IntEnum):
    LOCAL = 1  # a pod on this node: deliver
    TUNNEL = 2  # a pod on another node: VXLAN to next_hop (that node's address)


SOURCE_PREFERENCE = ("local", "vxlan", "bgp")


@dataclass(frozen=True, slots=True)
class Route:
    prefix: ipaddress.IPv4Network
    kind: RouteKind
    next_hop: str | None  # the node address for TUNNEL routes
    source: str

    def describe(self) -> str:
        via = f" via {self.next_hop}" if self.next_hop else ""
        return f"{self.prefix}{via} ({self.source})"


def parse_prefix(text: str) -> ipaddress.IPv4Network:
    """A prefix in CIDR form; host bits must be zero, as in a Node's podCIDR."""
    return ipaddress.IPv4Network(text, strict=True)


class RouteTable:
    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._by_source: dict[str, dict[ipaddress.IPv4Network, Route]] = {}
        # (netmask, {network int -> route}) per prefix length, longest first
        self._index: tuple[tuple[int, dict[int, Route]], ...] = ()
        self._on_change = on_change  # told of every change, so what was decided from routes is redone

    def replace_source(self, source: str, routes: list[Route]) -> int:
        """Replaces every route of `source` at once; returns how many the source now holds."""
        if source not in SOURCE_PREFERENCE:
            raise ValueError(f"unknown route source {source!r}")
        self._by_source[source] = {r.prefix: r for r in routes}
        self._rebuild()
        return len(self._by_source[source])

    def set_route(self, route: Route) -> None:
        """Adds or replaces one route of its source (one Node event is one route)."""
        self._by_source.setdefault(route.source, {})[route.prefix] = route
        self._rebuild()

    def remove_route(self, source: str, prefix: ipaddress.IPv4Network) -> bool:
        removed = self._by_source.get(source, {}).pop(prefix, None) is not None
        if removed:
            self._rebuild()
        return removed

    def _rebuild(self) -> None:
        by_length: dict[int, dict[int, Route]] = {}
        for source in reversed(SOURCE_PREFERENCE):  # preferred sources written last, so they win
            for route in self._by_source.get(source, {}).values():
                by_length.setdefault(route.prefix.prefixlen, {})[int(route.prefix.network_address)] = route
        self._index = tuple(
            ((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF, by_length[length])
            for length in sorted(by_length, reverse=True)
        )
        if self._on_change is not None:
            self._on_change()

    def lookup(self, address: int) -> Route | None:
        for mask, networks in self._index:
            route = networks.get(address & mask)
            if route is not None:
                return route
        return None

    def routes(self) -> list[Route]:
        return sorted(
            (r for _, networks in self._index for r in networks.values()),
            key=lambda r: (-r.prefix.prefixlen, int(r.prefix.network_address)),
        )
