"""The values that cross the policy hook: a new connection (`Flow`) goes in, a `Verdict` comes out.

The forwarding pipeline calls `policy(direction, flow)` once per new connection, after Service DNAT
(policies see pod addresses, never Service addresses); conntrack keeps the verdict, so replies of an
allowed connection pass without asking again. Traffic over localhost inside a pod never leaves the pod
and never reaches the hook. `Flow` and `Verdict` are the pipeline's own (overlay/pipeline/policyhook.py):
one set of types on both sides of the hook.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from podnet.overlay.pipeline.policyhook import Flow, PolicyDirection, Verdict

__all__ = ["Flow", "Verdict"]

INGRESS = PolicyDirection.INGRESS
EGRESS = PolicyDirection.EGRESS
DIRECTIONS = (INGRESS, EGRESS)

TCP = "TCP"
UDP = "UDP"
SCTP = "SCTP"
PROTOCOLS = (TCP, UDP, SCTP)

# The pipeline may speak IP protocol numbers; policies speak names.
_PROTOCOL_NAMES: dict[object, str] = {
    6: TCP,
    17: UDP,
    132: SCTP,
    **{p: p for p in PROTOCOLS},
    **{p.lower(): p for p in PROTOCOLS},
}


def protocol_name(protocol: object) -> str:
    """ "TCP", "UDP", "SCTP" for names in any case or IP protocol numbers; anything else unchanged
    (as upper-case text), which no port of a policy matches."""
    name = _PROTOCOL_NAMES.get(protocol)
    if name is not None:
        return name
    return str(protocol).upper()


@lru_cache(maxsize=8192)
def _parse_ipv4(text: str) -> int:
    return int(ipaddress.IPv4Address(text))


def ip_to_int(ip: object) -> int:
    """An IPv4 address as an int, from an int, dotted text, 4 bytes or an `ipaddress.IPv4Address`.
    Raises ValueError for anything else."""
    if isinstance(ip, int):
        if not 0 <= ip < 1 << 32:
            raise ValueError(f"{ip} is not an IPv4 address")
        return ip
    if isinstance(ip, str):
        return _parse_ipv4(ip)
    if isinstance(ip, bytes | bytearray | memoryview):
        if len(ip) != 4:
            raise ValueError(f"{bytes(ip)!r} is not an IPv4 address")
        return int.from_bytes(ip, "big")
    if isinstance(ip, ipaddress.IPv4Address):
        return int(ip)
    raise ValueError(f"{ip!r} is not an IPv4 address")


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))
