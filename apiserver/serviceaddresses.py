"""Which addresses a Service may claim, so that no Service can steal traffic meant for someone else (the
CVE-2020-8554 class). Pure.

A Service's externalIPs, loadBalancerIP and status.loadBalancer.ingress addresses become kube-proxy rules on
every node: a connection from any pod to such an address and port is sent to the Service's endpoints. A
tenant who could name any address there would receive other pods' connections to it. So:

- `external_ips_denied`: new externalIPs are refused unless the administrator allowed their range, as
  kube-apiserver's DenyServiceExternalIPs admission refuses every new one (with its message), widened by
  an allowed-CIDR list (`--allowed-external-ip-cidrs`), as the externalip-webhook that Kubernetes' advisory
  for CVE-2020-8554 recommends. Addresses a Service already has are kept, as the admission keeps them;
  status writes are not its business (RBAC keeps them to the control plane).
- `shadowing`: whoever writes it, no Service address may be a pod's (the cluster CIDR), a ClusterIP's (the
  Service CIDR, which holds the cluster DNS 10.96.0.10 and `kubernetes` 10.96.0.1) or the API server's.
- `special_address_errors`: Kubernetes' validation of externalIPs (ValidateNonSpecialIP): no unspecified,
  loopback or link-local address — on one machine those are the cluster's own hosts.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DENIED = "Use of external IPs is denied by admission control"


def _address(text: object) -> Address | None:
    try:
        return ipaddress.ip_address(text)  # type: ignore[arg-type]
    except ValueError:
        return None


def _external_ips(service: Mapping | None) -> list:
    ips = ((service or {}).get("spec") or {}).get("externalIPs")
    return ips if isinstance(ips, list) else []


def external_ips_denied(service: Mapping, old: Mapping | None, allowed: Iterable[Network]) -> str | None:
    """Why the externalIPs `service` adds to `old` (None: a create) are refused, or None when they are not."""
    kept = set(_external_ips(old))
    added = [ip for ip in _external_ips(service) if ip not in kept]
    if not added:
        return None
    allowed = list(allowed)
    if not allowed:
        return DENIED
    outside = [str(ip) for ip in added
               if (address := _address(ip)) is None or not any(address in network for network in allowed)]
    if not outside:
        return None
    ranges = ", ".join(str(network) for network in allowed)
    return f"{DENIED}: {', '.join(outside)} outside the allowed ranges ({ranges})"


def special_address_errors(service: Mapping) -> Iterator[tuple[str, object, str]]:
    """(field, value, detail) for each externalIP Kubernetes' validation refuses."""
    for i, ip in enumerate(_external_ips(service)):
        field = f"spec.externalIPs[{i}]"
        address = _address(ip)
        if address is None:
            yield field, ip, "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
        elif address.is_unspecified:
            yield field, ip, "may not be unspecified (0.0.0.0)"
        elif address.is_loopback:
            yield field, ip, "may not be in the loopback range (127.0.0.0/8, ::1/128)"
        elif address.is_link_local:
            yield field, ip, "may not be in the link-local range (169.254.0.0/16, fe80::/10)"
        elif address in _LINK_LOCAL_MULTICAST:
            yield field, ip, "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)"


_LINK_LOCAL_MULTICAST = ipaddress.ip_network("224.0.0.0/24")


@dataclass(frozen=True, slots=True)
class Protected:
    """The addresses no Service may claim: the pod network, the Service network, the API server's own."""

    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    api_addresses: tuple[str, ...] = ()

    def owner(self, address: Address) -> str | None:
        """Whose `address` is, in words ("in the pod network (10.244.0.0/16)"), or None when it is no one's
        that matters."""
        for cidr, whose in ((self.cluster_cidr, "the pod network"), (self.service_cidr, "the Service network")):
            network = ipaddress.ip_network(cidr)
            if address.version == network.version and address in network:
                return f"in {whose} ({cidr})"
        if str(address) in self.api_addresses:
            return "the API server's address"
        return None


def claimed_addresses(service: Mapping) -> Iterator[tuple[str, object]]:
    """(field, value) of every address a Service asks traffic for."""
    spec = service.get("spec") or {}
    for i, ip in enumerate(_external_ips(service)):
        yield f"spec.externalIPs[{i}]", ip
    if spec.get("loadBalancerIP"):
        yield "spec.loadBalancerIP", spec["loadBalancerIP"]
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    for i, entry in enumerate(ingress if isinstance(ingress, list) else []):
        if isinstance(entry, dict) and entry.get("ip"):
            yield f"status.loadBalancer.ingress[{i}].ip", entry["ip"]


def shadowing(service: Mapping, protected: Protected) -> Iterator[tuple[str, object, str]]:
    """(field, value, detail) for each Service address that would shadow a protected one."""
    for field, value in claimed_addresses(service):
        address = _address(value)
        owner = protected.owner(address) if address is not None else None
        if owner is not None:
            yield field, value, f"may not be {owner}: the Service would receive traffic meant for it"


def parse_cidrs(texts: Iterable[str]) -> list[Network]:
    """`--allowed-external-ip-cidrs` values; ValueError naming the bad one."""
    networks = []
    for text in texts:
        try:
            networks.append(ipaddress.ip_network(text.strip()))
        except ValueError as exc:
            raise ValueError(f"--allowed-external-ip-cidrs: {text!r} is not a CIDR ({exc})") from None
    return networks


def parse_port_range(text: str) -> tuple[int, int]:
    """`30000-32767` (kube-apiserver's --service-node-port-range syntax) as (low, high), both ends in."""
    low, sep, high = text.partition("-")
    if not sep or not text.isascii() or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"invalid port range {text!r}: want LOW-HIGH")
    return int(low), int(high)
