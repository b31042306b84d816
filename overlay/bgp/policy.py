"""What a speaker believes of a peer's UPDATE, pure: the import filter and the prefix limit.

Every node's speaker installs what it learns as tunnel routes, so a route is a claim that pod traffic for
a prefix may be sent to its next hop. As Calico's BIRD configuration does, only routes inside the cluster
CIDR are taken, and only with the announcing peer itself as next hop (a speaker that binds a node's address
cannot send pod traffic to a third address); a reflector's routes keep their originators' next hops, so a
peer may be trusted for any next hop (`any_next_hop`). Past `max_prefixes` routes from one peer, the
session is closed with Cease / Maximum Number of Prefixes Reached (RFC 4486), whose data is the address
family and the bound.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from podnet.overlay.bgp import messages as m

DEFAULT_MAX_PREFIXES = 1024


@dataclass(frozen=True, slots=True)
class ImportPolicy:
    cluster_cidr: m.Prefix | None  # None: any prefix
    max_prefixes: int = DEFAULT_MAX_PREFIXES
    any_next_hop: bool = False


@dataclass(frozen=True, slots=True)
class Filtered:
    accepted: tuple[m.Prefix, ...]
    rejected: dict[str, int]  # count by reason: "next-hop-not-peer", "outside-cluster-cidr"


def _inside(prefix: m.Prefix, cidr: m.Prefix) -> bool:
    mask = (0xFFFFFFFF << (32 - cidr.length)) & 0xFFFFFFFF if cidr.length else 0
    return prefix.length >= cidr.length and prefix.address & mask == cidr.address


def filter_update(policy: ImportPolicy, peer_address: str, announced: Iterable[m.Prefix], next_hop: str | None) -> Filtered:
    """The announced prefixes the speaker takes from `peer_address`, with the next hop the UPDATE names
    (None: the peer's own)."""
    announced = tuple(announced)
    if not announced:
        return Filtered((), {})
    if next_hop not in (None, peer_address) and not policy.any_next_hop:
        return Filtered((), {"next-hop-not-peer": len(announced)})
    cidr = policy.cluster_cidr
    accepted = tuple(prefix for prefix in announced if cidr is None or _inside(prefix, cidr))
    outside = len(announced) - len(accepted)
    return Filtered(accepted, {"outside-cluster-cidr": outside} if outside else {})


def over_limit(policy: ImportPolicy, received: int) -> m.BgpError | None:
    """The NOTIFICATION that ends a session once a peer's routes number `received`, or None."""
    if received <= policy.max_prefixes:
        return None
    data = struct.pack("!HBI", m.AFI_IPV4, m.SAFI_UNICAST, policy.max_prefixes)
    return m.BgpError(m.ErrorCode.CEASE, m.CeaseError.MAXIMUM_PREFIXES_REACHED, data,
                      reason=f"maximum number of prefixes reached: more than {policy.max_prefixes}")
