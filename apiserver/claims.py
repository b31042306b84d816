"""ClusterIPs and NodePorts claimed in the store, so that several API servers on one store never hand out the
same one.

Each allocated value has a key of its own (`/registry/podnet/serviceips/10.96.0.15`,
`/registry/podnet/servicenodeports/30080`) naming the Service that holds it, as kube-apiserver's
IPAddress objects do for ClusterIPs. A server creates the claims of what it admitted *before* it stores the
Service; the store's create-if-absent decides between two servers that picked the same value. A claim left
behind (a crash between claim and Service write, a Service write of unknown outcome) is removed by the
repair, but only once it is older than a grace period, so that a write still in flight keeps its claims.

Pure: keys, values and the repair's plan.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass

from podnet.apiserver.controllers.allocators import Admission, IpAllocations

from podnet.api.keys import object_key

IP_PREFIX = "/registry/podnet/serviceips/"
PORT_PREFIX = "/registry/podnet/servicenodeports/"
# Longer than any Service write can take (the storage timeout is seconds): younger leaks are left alone.
REPAIR_GRACE = 60.0


def ip_key(address: ipaddress.IPv4Address | str) -> str:
    return f"{IP_PREFIX}{address}"


def port_key(port: int) -> str:
    return f"{PORT_PREFIX}{port}"


def claim_value(owner: str, now: datetime.datetime) -> bytes:
    return json.dumps({"service": owner, "claimedAt": now.astimezone(datetime.UTC).isoformat()}).encode()


@dataclass(frozen=True, slots=True)
class Claim:
    key: str
    owner: str  # the Service's namespace/name
    claimed_at: datetime.datetime
    mod_revision: int

    @classmethod
    def decode(cls, key: str, value: bytes, mod_revision: int) -> Claim:
        try:
            data = json.loads(value)
            owner = str(data["service"])
            claimed_at = datetime.datetime.fromisoformat(data["claimedAt"])
        except (ValueError, KeyError, TypeError):
            # Unreadable: treat as an old claim of nobody's, which the repair removes.
            return cls(key, "", datetime.datetime.min.replace(tzinfo=datetime.UTC), mod_revision)
        return cls(key, owner, claimed_at, mod_revision)


def admitted_keys(admission: Admission) -> list[str]:
    """The claims an admitted write needs before it is stored: what it newly reserved."""
    return [ip_key(a) for a in sorted(admission.reserved_ips)] + [port_key(p) for p in sorted(admission.reserved_ports)]


def given_up_keys(admission: Admission) -> list[str]:
    """The claims a stored update no longer needs."""
    return [ip_key(a) for a in sorted(admission.given_up_ips)] + [port_key(p) for p in sorted(admission.given_up_ports)]


def held_keys(service: dict, *, service_cidr: str, node_port_range: tuple[int, int]) -> list[str]:
    """The claim keys of what `service` holds, as the allocators read its spec."""
    view = IpAllocations.from_services([service], service_cidr=service_cidr, node_port_range=node_port_range)
    return [ip_key(a) for a in sorted(view.ips)] + [port_key(p) for p in sorted(view.ports)]


def add_claims(allocations: IpAllocations, claims: Iterable[Claim]) -> None:
    """Marks what other servers claimed as taken in this server's view."""
    for claim in claims:
        if claim.key.startswith(IP_PREFIX):
            try:
                address = ipaddress.IPv4Address(claim.key[len(IP_PREFIX):])
            except ValueError:
                continue
            allocations.ips.setdefault(address, claim.owner)
        elif claim.key.startswith(PORT_PREFIX) and claim.key[len(PORT_PREFIX):].isdigit():
            allocations.ports.setdefault(int(claim.key[len(PORT_PREFIX):]), claim.owner)


@dataclass(frozen=True, slots=True)
class RepairPlan:
    missing: dict[str, str]  # claim key -> owner: values stored Services hold without a claim (older data)
    leaked: list[Claim]  # claims no stored Service holds, older than the grace period


def plan_repair(services: Iterable[dict], claims: Iterable[Claim], *, service_cidr: str,
                node_port_range: tuple[int, int], now: datetime.datetime, grace: float = REPAIR_GRACE) -> RepairPlan:
    held: dict[str, str] = {}
    for service in services:
        owner = object_key(service)
        held.update(dict.fromkeys(held_keys(service, service_cidr=service_cidr, node_port_range=node_port_range), owner))
    by_key = {claim.key: claim for claim in claims}
    missing = {key: owner for key, owner in held.items() if key not in by_key}
    leaked = [claim for key, claim in by_key.items()
              if held.get(key) != claim.owner and (now - claim.claimed_at).total_seconds() >= grace]
    return RepairPlan(missing, leaked)
