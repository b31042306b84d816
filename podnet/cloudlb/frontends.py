"""What the cloud load balancer decides, pure: which address each LoadBalancer Service holds, what each
one asks of the balancer (`Frontend`), and which nodes may take its connections.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podnet.api.keys import object_key


class PoolExhausted(Exception):
    pass


class AddressPool:
    """The balancer's addresses, pure: who holds which."""

    def __init__(self, cidr: str):
        network = ipaddress.IPv4Network(cidr)
        hosts = list(network.hosts()) if network.num_addresses > 2 else list(network)
        self.addresses = [str(a) for a in hosts]
        self.holders: dict[str, str] = {}  # address -> service key

    def held_by(self, key: str) -> str | None:
        return next((address for address, holder in self.holders.items() if holder == key), None)

    def take(self, key: str, wanted: str | None = None) -> str:
        """`key`'s address: the one it holds, else `wanted` when free and in the pool, else the first free."""
        held = self.held_by(key)
        if held is not None and (wanted is None or wanted == held):
            return held
        if wanted is not None and wanted in self.addresses and self.holders.get(wanted) in (None, key):
            self.release(key)
            self.holders[wanted] = key
            return wanted
        if held is not None:
            return held
        for address in self.addresses:
            if address not in self.holders:
                self.holders[address] = key
                return address
        raise PoolExhausted(f"no address left in the pool for {key}")

    def release(self, key: str) -> None:
        for address in [a for a, holder in self.holders.items() if holder == key]:
            del self.holders[address]


@dataclass(frozen=True, slots=True)
class Frontend:
    """What one LoadBalancer Service asks of the balancer."""

    key: str
    ports: tuple[tuple[int, str, int], ...]  # (service port, protocol, nodePort)
    health_check_node_port: int  # 0: check by connecting to the nodePort
    wanted_address: str | None


def frontend_of(service: Mapping) -> Frontend | None:
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return None
    ports = tuple(
        (int(p["port"]), str(p.get("protocol") or "TCP"), int(p["nodePort"]))
        for p in spec.get("ports") or []
        if isinstance(p, dict) and p.get("port") and p.get("nodePort")
    )
    local = spec.get("externalTrafficPolicy") == "Local"
    return Frontend(
        object_key(service),
        ports,
        int(spec.get("healthCheckNodePort") or 0) if local else 0,
        spec.get("loadBalancerIP") or None,
    )


def ready_node_addresses(nodes: Iterable[Mapping]) -> list[str]:
    addresses = []
    for node in nodes:
        status = node.get("status") or {}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
        )
        address = next(
            (a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None
        )
        if ready and address:
            addresses.append(address)
    return sorted(addresses)
