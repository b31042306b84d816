"""Which host ports a pod may not reach through the host bridge, pure.

The host bridge speaks for pods from the node's own address, and several of the cluster's parts believe
that address: a VXLAN or foo-over-UDP datagram from it is a node's, a BGP session from it a node's speaker,
etcd (without client certificates) anyone's who can reach it. So a pod must not reach those ports through
the bridge, on any address, or it could inject frames or routes as its node. Its components' status and
metrics ports are refused too, as they answer without credentials. The API server's own port stays open
to TCP (it authenticates every request, and in-cluster clients reach it through the `kubernetes` Service);
to UDP, where nothing of it answers, it is refused.

`ProtectedPort.parse` reads `PROTO/PORT` (on every address) or `PROTO/ADDRESS:PORT`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

BGP_PORTS = (179, 1790)
ETCD_PORTS = (2379, 2380)
_PROTOCOLS = ("tcp", "udp")


@dataclass(frozen=True, slots=True)
class ProtectedPort:
    protocol: str  # "tcp" or "udp"
    port: int
    address: str | None = None  # None: on every address

    @classmethod
    def parse(cls, text: str) -> ProtectedPort:
        protocol, slash, rest = text.partition("/")
        address, colon, port = rest.rpartition(":")
        if not slash or protocol.lower() not in _PROTOCOLS or not (port.isascii() and port.isdigit()):
            raise ValueError(f"{text!r}: want tcp/PORT, udp/PORT or PROTO/ADDRESS:PORT")
        if colon:
            ipaddress.IPv4Address(address)
        if not 0 < int(port) < 65536:
            raise ValueError(f"{text!r}: port out of range")
        return cls(protocol.lower(), int(port), address if colon else None)

    def __str__(self) -> str:
        return f"{self.protocol}/{self.address + ':' if self.address else ''}{self.port}"


def builtin(tunnel_ports: Iterable[int], api_server: str | None) -> tuple[ProtectedPort, ...]:
    """What every node refuses: the underlay's tunnel ports, BGP, etcd, and UDP to the API server's port."""
    ports = [ProtectedPort("udp", port) for port in tunnel_ports]
    ports += [ProtectedPort("tcp", port) for port in (*BGP_PORTS, *ETCD_PORTS)]
    url = urlsplit(api_server) if api_server else None
    if url is not None and url.hostname:
        ports.append(ProtectedPort("udp", url.port or (443 if url.scheme == "https" else 80), url.hostname))
    return tuple(dict.fromkeys(ports))


def guard_for(tunnel_ports: Iterable[int], api_server: str | None, extra: Iterable[str]) -> HostGuard:
    """The built-in ports and the `PROTO/[ADDRESS:]PORT` texts given (raises ValueError for a bad one)."""
    return HostGuard([*builtin(tunnel_ports, api_server), *(ProtectedPort.parse(text) for text in extra)])


class HostGuard:
    def __init__(self, protected: Iterable[ProtectedPort]):
        self.protected = tuple(protected)
        self._everywhere = {(p.protocol, p.port) for p in self.protected if p.address is None}
        self._at = {(p.protocol, p.address, p.port) for p in self.protected if p.address is not None}

    def refuses(self, protocol: str, address: str, port: int) -> bool:
        return (protocol, port) in self._everywhere or (protocol, address, port) in self._at
