"""Address allocators: pod CIDRs for Nodes, ClusterIPs and NodePorts for Services.

Pure: no I/O and no clock. Every allocator is rebuilt from the stored objects (`from_nodes`,
`from_services`), so a restarted API server or controller knows exactly what is taken and leaks nothing.

ClusterIPs and NodePorts are allocated synchronously on the API server's create/update path, as
kube-apiserver does, so that a requested IP that is taken is rejected with 422 before anything is stored.
That path uses `IpAllocations` in two phases: `admit()` reserves (or raises `AllocationError`), then
`commit()` once the store has accepted the write, or `abort()` when it has not.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from podnet.api.keys import object_key

# Well-known Service addresses: the `kubernetes` Service takes the first address of the range and the
# cluster DNS the tenth, as kubeadm sets them up.
KUBERNETES_SERVICE = "default/kubernetes"
DNS_SERVICE = "kube-system/kube-dns"


def well_known_ips(service_cidr: str) -> dict[str, str]:
    """The fixed ClusterIP of each well-known Service key (`namespace/name`)."""
    network = ipaddress.IPv4Network(service_cidr)
    return {KUBERNETES_SERVICE: str(network[1]), DNS_SERVICE: str(network[10])}


# Pod CIDRs.


class CidrExhausted(RuntimeError):
    pass


class CidrAllocator:
    """Hands out equal-sized blocks (a /24 each by default) of the cluster CIDR, lowest free block first."""

    def __init__(self, cluster_cidr: str, prefix: int = 24):
        self.network = ipaddress.IPv4Network(cluster_cidr)
        if not self.network.prefixlen <= prefix <= 32:
            raise ValueError(f"node CIDR prefix /{prefix} does not fit in {cluster_cidr}")
        self.prefix = prefix
        self._owner: dict[ipaddress.IPv4Network, str] = {}

    @classmethod
    def from_nodes(cls, cluster_cidr: str, prefix: int, nodes: Iterable[dict]) -> CidrAllocator:
        allocator = cls(cluster_cidr, prefix)
        for node in nodes:
            cidr = node_pod_cidr(node)
            if cidr is not None:
                allocator.occupy(cidr, node["metadata"]["name"])
        return allocator

    def occupy(self, cidr: str, node_name: str) -> None:
        """Marks a CIDR a Node already holds as taken; CIDRs outside the cluster CIDR are not ours to track."""
        try:
            block = ipaddress.IPv4Network(cidr, strict=False)
        except ValueError:
            return
        if block.subnet_of(self.network):
            self._owner.setdefault(block, node_name)

    def owner(self, cidr: str) -> str | None:
        return self._owner.get(ipaddress.IPv4Network(cidr, strict=False))

    def allocate(self, node_name: str) -> str:
        for block in self.network.subnets(new_prefix=self.prefix):
            if not any(block.overlaps(taken) for taken in self._owner):
                self._owner[block] = node_name
                return str(block)
        raise CidrExhausted(f"no free /{self.prefix} left in {self.network}")

    def release(self, cidr: str) -> None:
        self._owner.pop(ipaddress.IPv4Network(cidr, strict=False), None)


def node_pod_cidr(node: dict) -> str | None:
    spec = node.get("spec") or {}
    return spec.get("podCIDR") or next(iter(spec.get("podCIDRs") or []), None)


def with_pod_cidr(node: dict, cidr: str) -> dict:
    updated = copy.deepcopy(node)
    spec = updated.setdefault("spec", {})
    spec["podCIDR"] = cidr
    spec["podCIDRs"] = [cidr]
    return updated


# ClusterIPs and NodePorts.


class AllocationError(ValueError):
    """A request the allocators refuse: the API server answers 422 Invalid with this field as the cause."""

    def __init__(self, field: str, value: object, detail: str):
        self.field = field  # e.g. "spec.clusterIPs[0]", "spec.ports[1].nodePort"
        self.value = value
        self.detail = detail
        super().__init__(field, value, detail)

    @property
    def message(self) -> str:
        value = json.dumps(self.value) if isinstance(self.value, str | int | list) else repr(self.value)
        return f"Invalid value: {value}: {self.detail}"

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"

    @property
    def cause(self) -> dict:
        """The `details.causes[]` entry of the 422 Status."""
        return {"reason": "FieldValueInvalid", "message": self.message, "field": self.field}


@dataclass(frozen=True, slots=True)
class Admission:
    """What `admit()` did: the Service to store, what it newly reserved (freed by `abort`) and what the
    old version held that the new one gives up (freed by `commit`)."""

    service: dict
    key: str
    reserved_ips: frozenset[ipaddress.IPv4Address] = frozenset()
    reserved_ports: frozenset[int] = frozenset()
    given_up_ips: frozenset[ipaddress.IPv4Address] = frozenset()
    given_up_ports: frozenset[int] = frozenset()


def _wants_cluster_ip(spec: dict) -> bool:
    return spec.get("type", "ClusterIP") != "ExternalName" and spec.get("clusterIP") != "None"


def _wants_node_ports(spec: dict) -> bool:
    kind = spec.get("type", "ClusterIP")
    return kind == "NodePort" or (kind == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts", True))


def _wants_health_check_port(spec: dict) -> bool:
    return spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _ips_of(spec: dict) -> list[str]:
    ips = [ip for ip in spec.get("clusterIPs") or [] if ip]
    if not ips and spec.get("clusterIP"):
        ips = [spec["clusterIP"]]
    return [ip for ip in ips if ip != "None"]


def _node_ports_of(spec: dict) -> set[int]:
    ports = {p.get("nodePort") for p in spec.get("ports") or [] if isinstance(p, dict)}
    ports.add(spec.get("healthCheckNodePort"))
    return {p for p in ports if isinstance(p, int) and p > 0}


@dataclass(slots=True)
class IpAllocations:
    """Who holds each ClusterIP and each NodePort number, keyed by Service `namespace/name`.

    A NodePort number belongs to one Service; that Service may use it for several protocols (DNS on 53
    over UDP and TCP), as Kubernetes allows.
    """

    service_cidr: ipaddress.IPv4Network
    node_ports: range
    ips: dict[ipaddress.IPv4Address, str] = field(default_factory=dict)
    ports: dict[int, str] = field(default_factory=dict)
    _next_ip: int = 0
    _next_port: int = 0
    _port_pick: int | None = None  # the next port pick's rank among the free ports (start_scans_at)

    @classmethod
    def from_services(
                cls,
        services: Iterable[dict],
        *,
        service_cidr: str = "10.96.0.0/12",
        node_port_range: tuple[int, int] = (30000, 32767),
    ) -> IpAllocations:
        """`node_port_range` as the config holds it (`serviceaddresses.parse_port_range`), both ends in."""
        low, high = node_port_range
        allocations = cls(ipaddress.IPv4Network(service_cidr), range(low, high + 1))
        for service in services:
            key, spec = object_key(service), service.get("spec") or {}
            for ip in _ips_of(spec):
                try:
                    address = ipaddress.IPv4Address(ip)
                except ValueError:
                    continue
                if address in allocations.service_cidr:
                    allocations.ips.setdefault(address, key)
            for port in _node_ports_of(spec):
                if port in allocations.node_ports:
                    allocations.ports.setdefault(port, key)
        return allocations

    def start_scans_at(self, ip_offset: int, port_offset: int) -> None:
        """Where automatic picks start looking. API servers sharing a store start apart (at random, as
        kube-apiserver's allocators pick), so that they seldom pick the same value at the same time."""
        self._next_ip = ip_offset % (self.service_cidr.num_addresses - 2)
        self._next_port = port_offset % len(self.node_ports)
        # The port range is small and fills: a scan from a random offset mostly lands on a taken port and
        # stops at the start of the next free run, where the other servers' scans stop too. The first pick
        # is therefore the offset's rank among the free ports, the same on an empty range as on a full one.
        self._port_pick = port_offset

    def _reserved_for_others(self, key: str) -> set[ipaddress.IPv4Address]:
        return {ipaddress.IPv4Address(ip) for k, ip in well_known_ips(str(self.service_cidr)).items() if k != key}

    def _free_ip(self, key: str, taken: set[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
        fixed = well_known_ips(str(self.service_cidr)).get(key)
        if fixed is not None and ipaddress.IPv4Address(fixed) not in self.ips and ipaddress.IPv4Address(fixed) not in taken:
            return ipaddress.IPv4Address(fixed)
        reserved = self._reserved_for_others(key)
        # Usable hosts only: never the network or the broadcast address. Scan on from the last allocation
        # so that a just-freed address is not handed out again at once.
        first, size = int(self.service_cidr.network_address) + 1, self.service_cidr.num_addresses - 2
        for step in range(size):
            candidate = ipaddress.IPv4Address(first + (self._next_ip + step) % size)
            if candidate not in self.ips and candidate not in reserved and candidate not in taken:
                self._next_ip = (self._next_ip + step + 1) % size
                return candidate
        raise AllocationError("spec.clusterIPs", None, f"no IP addresses left in {self.service_cidr}")

    def _check_requested_ip(self, key: str, ip: str) -> ipaddress.IPv4Address:
        # Field and wording as kube-apiserver's allocator reports them.
        def refuse(detail: str) -> AllocationError:
            return AllocationError("spec.clusterIPs", [ip], f"failed to allocate IP {ip}: {detail}")

        try:
            address = ipaddress.IPv4Address(ip)
        except ValueError:
            raise refuse("must be a valid IPv4 address") from None
        usable = address in self.service_cidr and address not in (
            self.service_cidr.network_address, self.service_cidr.broadcast_address)
        if not usable:
            raise refuse(f"provided IP is not in the valid range. The range of valid IPs is {self.service_cidr}")
        holder = self.ips.get(address)
        if (holder is not None and holder != key) or address in self._reserved_for_others(key):
            raise refuse("provided IP is already allocated")
        return address

    def _free_port(self, taken: set[int]) -> int:
        size = len(self.node_ports)
        if self._port_pick is not None:
            free = [i for i, port in enumerate(self.node_ports) if port not in self.ports and port not in taken]
            if free:
                self._next_port = free[self._port_pick % len(free)]
            self._port_pick = None
        for step in range(size):
            candidate = self.node_ports[(self._next_port + step) % size]
            if candidate not in self.ports and candidate not in taken:
                self._next_port = (self._next_port + step + 1) % size
                return candidate
        raise AllocationError("spec.ports", None, f"no node ports left in {self.node_ports.start}-"
                                                  f"{self.node_ports.stop - 1}")

    def _check_requested_port(self, key: str, port: object, field_path: str) -> int:
        if not isinstance(port, int) or port not in self.node_ports:
            raise AllocationError(
                field_path, port,
                f"provided port is not in the valid range. The range of valid ports is "
                f"{self.node_ports.start}-{self.node_ports.stop - 1}")
        holder = self.ports.get(port)
        if holder is not None and holder != key:
            raise AllocationError(field_path, port, "provided port is already allocated")
        return port

    def admit(self, service: dict, old: dict | None = None) -> Admission:
        """Fills in the Service's clusterIP(s), nodePorts and healthCheckNodePort and reserves them; on an
        update (`old` given) what the client left empty is carried over from the stored version, as
        kube-apiserver does. Raises AllocationError, reserving nothing, when a request cannot be met."""
        key = object_key(service)
        new = copy.deepcopy(service)
        spec = new.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        _carry_over(spec, old_spec)

        reserved_ips: set[ipaddress.IPv4Address] = set()
        if _wants_cluster_ip(spec):
            requested = _ips_of(spec)
            if requested:
                address = self._check_requested_ip(key, requested[0])
            else:
                address = self._free_ip(key, reserved_ips)
            reserved_ips.add(address)
            spec["clusterIP"] = str(address)
            spec["clusterIPs"] = [str(address)]
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
        elif spec.get("type") == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        else:
            spec["clusterIPs"] = ["None"]

        reserved_ports: set[int] = set()
        ports = [p for p in spec.get("ports") or [] if isinstance(p, dict)]
        if _wants_node_ports(spec):
            # A number the client asked for is checked first, so that an automatic pick never takes it.
            for i, port in enumerate(ports):
                if port.get("nodePort"):
                    reserved_ports.add(self._check_requested_port(key, port["nodePort"], f"spec.ports[{i}].nodePort"))
            for port in ports:
                if not port.get("nodePort"):
                    port["nodePort"] = self._free_port(reserved_ports)
                    reserved_ports.add(port["nodePort"])
        else:
            for port in ports:
                port.pop("nodePort", None)
        if _wants_health_check_port(spec):
            if spec.get("healthCheckNodePort"):
                reserved_ports.add(self._check_requested_port(key, spec["healthCheckNodePort"],
                                                              "spec.healthCheckNodePort"))
            else:
                spec["healthCheckNodePort"] = self._free_port(reserved_ports)
                reserved_ports.add(spec["healthCheckNodePort"])
        else:
            spec.pop("healthCheckNodePort", None)

        held_ips = {ip for ip, holder in self.ips.items() if holder == key}
        held_ports = {port for port, holder in self.ports.items() if holder == key}
        for address in reserved_ips:
            self.ips[address] = key
        for port in reserved_ports:
            self.ports[port] = key
        return Admission(
            service=new,
            key=key,
            reserved_ips=frozenset(reserved_ips - held_ips),
            reserved_ports=frozenset(reserved_ports - held_ports),
            given_up_ips=frozenset(held_ips - reserved_ips),
            given_up_ports=frozenset(held_ports - reserved_ports),
        )

    def commit(self, admission: Admission) -> None:
        """The store accepted the write: free what the old version held and the new one does not."""
        self._free(admission.key, admission.given_up_ips, admission.given_up_ports)

    def abort(self, admission: Admission) -> None:
        """The store refused the write: free what `admit` newly reserved."""
        self._free(admission.key, admission.reserved_ips, admission.reserved_ports)

    def release(self, service: dict) -> None:
        """The Service was deleted: free everything it held."""
        key = object_key(service)
        self._free(key, {ip for ip, k in self.ips.items() if k == key}, {p for p, k in self.ports.items() if k == key})

    def _free(self, key: str, ips: Iterable[ipaddress.IPv4Address], ports: Iterable[int]) -> None:
        for address in ips:
            if self.ips.get(address) == key:
                del self.ips[address]
        for port in ports:
            if self.ports.get(port) == key:
                del self.ports[port]


def _carry_over(spec: dict, old_spec: Mapping) -> None:
    """Values an update leaves empty keep what the stored Service was given (`patchAllocatedValues`)."""
    if not old_spec:
        return
    if _wants_cluster_ip(spec) and _wants_cluster_ip(old_spec) and not _ips_of(spec):
        old_ips = _ips_of(old_spec)
        if old_ips:
            spec["clusterIP"] = old_ips[0]
            spec["clusterIPs"] = old_ips
    if _wants_node_ports(spec):
        old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                     for p in old_spec.get("ports") or [] if isinstance(p, dict)}
        for port in spec.get("ports") or []:
            if isinstance(port, dict) and not port.get("nodePort"):
                previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
                if previous:
                    port["nodePort"] = previous
    if _wants_health_check_port(spec) and not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]
