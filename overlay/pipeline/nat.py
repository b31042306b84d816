"""The service table kube-proxy computes and the node agent evaluates per new connection, pure.

The table is plain data (lists, dicts, strings, ints: msgpack carries it over the agent's RPC socket);
`ServiceTable.from_data` turns it into lookup structures for one of kube-proxy's two proxy modes:

- `iptables`: an ordered list of rules walked top to bottom for every new connection, as netfilter walks
  KUBE-SERVICES; the matched service chain picks an endpoint rule by rule with kube-proxy's probabilities
  1/n, 1/(n-1), ..., 1 (uniform overall). The cost of a lookup grows with the number of Services.
- `ipvs`: one hash table keyed by (VIP, port, protocol) holding each virtual service's real servers,
  chosen round robin. The cost of a lookup is flat.

Each entry of the data is one Service port on this node, with endpoint lists already filtered for this
node by kube-proxy (`nodeagent/kubeproxy/rules.py`): `endpoints` for traffic to the ClusterIP (and to
externalIPs / load-balancer IPs from inside the cluster), honouring internalTrafficPolicy;
`external_endpoints` for traffic arriving on the nodePort, honouring externalTrafficPolicy. An empty list
means "reject", as kube-proxy installs a REJECT rule for a Service without endpoints. A ClusterIP answers
only on its declared ports: anything else sent to it is rejected too, rather than routed anywhere; so is
an address of the service CIDR no Service holds (as kube-proxy's nftables mode does), since a virtual IP
means nothing outside the cluster.

sessionAffinity ClientIP keeps, per (service port, client IP), the endpoint last chosen and when the
record lapses; the records live in the table object and a new table adopts them from the one it replaces
(`previous=`), as the kernel's `recent` lists and IPVS persistence survive a kube-proxy resync.

Time is the `now` argument and randomness the `rand` argument (a float in [0, 1)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podnet.overlay.wire.addresses import ip_to_int

from podnet.backends import ProxyMode

PROTOCOLS = ("TCP", "UDP", "SCTP")


class TableError(ValueError):
    """The table data is not shaped as `to_data` writes it."""


@dataclass(frozen=True, slots=True)
class NatDecision:
    """What to do with a new connection to a service address: DNAT to `ip:port`, or reject it.

    `service` names the Service port ("namespace/name:port-name"), `rule` the rule that decided, as
    `podnet trace` prints them."""

    ip: str
    port: int
    service: str
    rule: str
    reject: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    ip: str
    port: int
    node: str = ""


@dataclass(frozen=True, slots=True)
class ServicePort:
    """One Service port as programmed on one node."""

    service: str  # "namespace/name"
    port_name: str
    protocol: str
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()  # spec.externalIPs and status.loadBalancer.ingress[].ip
    endpoints: tuple[Endpoint, ...] = ()
    external_endpoints: tuple[Endpoint, ...] = ()
    affinity_seconds: int = 0  # 0: no session affinity
    external_local: bool = False  # externalTrafficPolicy Local (reported in traces and health checks)
    health_check_node_port: int = 0

    @property
    def label(self) -> str:
        return f"{self.service}:{self.port_name}" if self.port_name else self.service

    def as_data(self) -> dict:
        data: dict[str, Any] = {
            "service": self.service,
            "port_name": self.port_name,
            "protocol": self.protocol,
            "cluster_ip": self.cluster_ip,
            "port": self.port,
            "endpoints": [[e.ip, e.port, e.node] for e in self.endpoints],
        }
        if self.node_port or self.external_ips:
            data["external_endpoints"] = [[e.ip, e.port, e.node] for e in self.external_endpoints]
            data["external_local"] = self.external_local
        if self.node_port:
            data["node_port"] = self.node_port
        if self.external_ips:
            data["external_ips"] = list(self.external_ips)
        if self.affinity_seconds:
            data["affinity_seconds"] = self.affinity_seconds
        if self.health_check_node_port:
            data["health_check_node_port"] = self.health_check_node_port
        return data

    @classmethod
    def from_data(cls, data: Any) -> ServicePort:
        try:
            protocol = str(data["protocol"])
            if protocol not in PROTOCOLS:
                raise TableError(f"protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
            return cls(
                service=str(data["service"]),
                port_name=str(data.get("port_name") or ""),
                protocol=protocol,
                cluster_ip=str(data.get("cluster_ip") or ""),
                port=_port(data["port"]),
                node_port=_port(data["node_port"]) if data.get("node_port") else 0,
                external_ips=tuple(str(ip) for ip in data.get("external_ips") or ()),
                endpoints=_endpoints(data.get("endpoints")),
                external_endpoints=_endpoints(data.get("external_endpoints")),
                affinity_seconds=int(data.get("affinity_seconds") or 0),
                external_local=bool(data.get("external_local")),
                health_check_node_port=int(data.get("health_check_node_port") or 0),
            )
        except TableError:
            raise
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise TableError(f"bad service entry {data!r}: {exc!r}") from None


@dataclass(frozen=True, slots=True)
class ProxyTable:
    """kube-proxy's whole table for one node in one mode: every Service port in KUBE-SERVICES order. It
    reaches the agent as `to_data()` in `services.apply`, where `ServiceTable.from_data` builds the rules."""

    mode: ProxyMode
    node: str
    ports: tuple[ServicePort, ...]
    service_cidr: str = ""

    def to_data(self) -> dict:
        data: dict[str, Any] = {"mode": self.mode.value, "node": self.node,
                                "services": [entry.as_data() for entry in self.ports]}
        if self.service_cidr:
            data["service_cidr"] = self.service_cidr
        return data


def _entry_key(item: Any) -> tuple:
    if not isinstance(item, dict):
        raise TableError(f"a service entry is a map, not {type(item).__name__}")
    return (item.get("service"), item.get("port_name"), item.get("protocol"), item.get("port"))


def _port(value: Any) -> int:
    port = int(value)
    if not 0 < port < 0x10000:
        raise TableError(f"port {port} outside 1..65535")
    return port


def _endpoints(items: Any) -> tuple[Endpoint, ...]:
    endpoints = []
    for item in items or ():
        ip, port, *rest = item
        endpoints.append(Endpoint(str(ip), _port(port), str(rest[0]) if rest else ""))
    return tuple(endpoints)


@dataclass(slots=True)
class _Chain:
    """A service chain: the endpoints one address:port:protocol leads to, and how they are picked.

    Every decision it can return is built with the table, so a lookup allocates nothing."""

    entry: ServicePort
    port: int  # the entry's port and protocol again: a lookup checks them without touching the entry
    protocol: str
    endpoints: tuple[Endpoint, ...]
    via: str  # "cluster-ip", or "external": nodePorts and external / load-balancer IPs
    picks: tuple[NatDecision, ...]  # the decision for each endpoint, by index
    reject: NatDecision
    affinity_seconds: int  # kept here too: a lookup touches the chain, not its entry
    # ipvs with endpoints and no affinity: a lookup is the next pick, and nothing else (see `lookup`).
    round_robin_only: bool
    next_index: int = 0  # ipvs round robin position, below len(picks)

    @property
    def name(self) -> str:
        return f"{self.entry.label} ({self.via})"


def _make_chain(entry: ServicePort, endpoints: tuple[Endpoint, ...], via: str, mode: ProxyMode) -> _Chain:
    count = len(endpoints)
    picks = []
    for index, endpoint in enumerate(endpoints):
        if mode is ProxyMode.IPVS:
            rule = f"ipvs {via}: rr {index + 1}/{count}"
        elif index < count - 1:
            rule = f"{via}: endpoint rule {index + 1}/{count} (probability {1.0 / (count - index):.5f})"
        else:
            rule = f"{via}: endpoint rule {count}/{count} (the rest)"
        picks.append(
            NatDecision(endpoint.ip, endpoint.port, entry.label, f"{rule} → {endpoint.ip}:{endpoint.port}")
        )
    reject = NatDecision("", 0, entry.label, f"{via}: no ready endpoints: reject", True)
    round_robin_only = mode is ProxyMode.IPVS and bool(picks) and not entry.affinity_seconds
    return _Chain(
        entry,
        entry.port,
        entry.protocol,
        endpoints,
        via,
        tuple(picks),
        reject,
        entry.affinity_seconds,
        round_robin_only,
    )


# Affinity records: (chain name, client IP) -> (endpoint, lapses at).
Affinity = dict[tuple[str, str], tuple[Endpoint, float]]


class ServiceTable:
    """The service table of one node in one proxy mode. `lookup` is the pipeline's DNAT hook for
    connections to ClusterIPs and external IPs; `lookup_node_port` is the NodePort listeners' hook."""

    def __init__(
        self,
        mode: ProxyMode,
        ports: tuple[ServicePort, ...],
        node: str = "",
        service_cidr: str = "",
        *,
        reuse: ServiceTable | None = None,
    ):
        self.mode = mode
        # Read per lookup: a plain attribute, as an enum member's lookup costs more than a dict.get.
        self._hashed = mode is ProxyMode.IPVS
        self.ports = ports
        self.node = node
        self.service_cidr = service_cidr
        self._cidr = _parse_cidr(service_cidr) if service_cidr else None
        self.affinity: Affinity = {}
        # iptables: KUBE-SERVICES as a list of (protocol, destination, port, chain), walked in order;
        # KUBE-NODEPORTS likewise. ipvs: the same chains in dicts keyed by what a packet carries.
        self._rules: list[tuple[str, str, int, _Chain]] = []
        self._node_port_rules: list[tuple[str, int, _Chain]] = []
        self._virtual: dict[tuple[str, int, str], _Chain] = {}
        self._node_ports: dict[tuple[int, str], _Chain] = {}
        # ClusterIPs answer only on declared ports: other ports are rejected, not routed anywhere.
        self._service_ips: dict[str, str] = {}
        # The chains of each entry, so the next table can take over those of unchanged entries (with
        # their round-robin position) instead of building them again.
        self._chains: dict[ServicePort, tuple[_Chain, _Chain | None]] = {}
        known = reuse._chains if reuse is not None and reuse.mode is mode else {}
        for entry in ports:
            internal, external = known.get(entry) or (
                _make_chain(entry, entry.endpoints, "cluster-ip", mode),
                _make_chain(entry, entry.external_endpoints, "external", mode)
                if entry.external_ips or entry.node_port
                else None,
            )
            self._chains[entry] = (internal, external)
            if entry.cluster_ip:
                self._add(entry.protocol, entry.cluster_ip, entry.port, internal)
                self._service_ips.setdefault(entry.cluster_ip, entry.service)
            for ip in entry.external_ips:
                self._add(entry.protocol, ip, entry.port, external)
            if entry.node_port:
                self._node_port_rules.append((entry.protocol, entry.node_port, external))
                self._node_ports[(entry.node_port, entry.protocol)] = external
        # ipvs lookups go by address first. An address usually has one Service port, whose chain is then
        # the value itself, checked for port and protocol: no key tuple is built per lookup, and fewer
        # objects are touched (each one a likely cache miss in a large table). An address with several
        # ports maps to its chains by (port, protocol).
        self._by_address: dict[str, _Chain | dict[tuple[int, str], _Chain]] = {}
        for (ip, port, protocol), chain in self._virtual.items():
            present = self._by_address.get(ip)
            if present is None:
                self._by_address[ip] = chain
            elif isinstance(present, dict):
                present[(port, protocol)] = chain
            else:
                self._by_address[ip] = {(present.port, present.protocol): present, (port, protocol): chain}
        # What each entry was parsed from, for the same purpose (see `from_data`).
        self._parsed: dict[tuple, tuple[dict, ServicePort]] = {}

    def _add(self, protocol: str, ip: str, port: int, chain: _Chain) -> None:
        self._rules.append((protocol, ip, port, chain))
        self._virtual.setdefault((ip, port, protocol), chain)

    def __len__(self) -> int:
        """How many rules the table holds: one per service address:port and per nodePort."""
        return len(self._rules) + len(self._node_port_rules)

    # ---- data ------------------------------------------------------------------------------------

    @classmethod
    def from_data(cls, data: Any, *, previous: ServiceTable | None = None) -> ServiceTable:
        """The table `data` describes; affinity records of `previous` whose endpoint is still there carry
        over, so replacing the table does not move clients that are pinned to an endpoint."""
        if not isinstance(data, dict):
            raise TableError(f"a service table is a map, not {type(data).__name__}")
        try:
            mode = ProxyMode(data.get("mode") or ProxyMode.IPTABLES)
        except ValueError:
            raise TableError(f"unknown proxy mode {data.get('mode')!r}") from None
        services = data.get("services") or []
        if not isinstance(services, list):
            raise TableError("services must be a list")
        # A full sync repeats mostly what the agent has: entries equal to the previous table's are taken
        # over as they are (parsed entry and chains), so a change costs little more than comparing.
        known = previous._parsed if previous is not None else {}
        ports, parsed = [], {}
        for item in services:
            key = _entry_key(item)
            hit = known.get(key)
            entry = hit[1] if hit is not None and hit[0] == item else ServicePort.from_data(item)
            parsed[key] = (item, entry)
            ports.append(entry)
        table = cls(
            mode,
            tuple(ports),
            str(data.get("node") or ""),
            str(data.get("service_cidr") or ""),
            reuse=previous,
        )
        table._parsed = parsed
        if previous is not None and previous.affinity:
            table._adopt_affinity(previous)
        return table

    def to_data(self) -> dict:
        data = {"mode": str(self.mode), "node": self.node, "services": [p.as_data() for p in self.ports]}
        if self.service_cidr:
            data["service_cidr"] = self.service_cidr
        return data

    def _adopt_affinity(self, previous: ServiceTable) -> None:
        chains = {c.name: c for c in (*self._virtual.values(), *self._node_ports.values())}
        for (name, client), (endpoint, lapses) in previous.affinity.items():
            chain = chains.get(name)
            if chain is not None and chain.affinity_seconds and endpoint in chain.endpoints:
                self.affinity[(name, client)] = (endpoint, lapses)

    # ---- lookups ---------------------------------------------------------------------------------

    def lookup(
        self, protocol: str, src_ip: str, dst_ip: str, dst_port: int, rand: float, now: float
    ) -> NatDecision | None:
        """The decision for a new connection from `src_ip` to `dst_ip:dst_port`; None when the
        destination is not a service address."""
        if self._hashed:
            chain = self._by_address.get(dst_ip)
            if chain.__class__ is dict:
                chain = chain.get((dst_port, protocol))
            elif chain is not None and (chain.port != dst_port or chain.protocol != protocol):
                chain = None
            if chain is not None and chain.round_robin_only:
                # The common ipvs case inline: what `_choose` would do, without its call and checks.
                picks = chain.picks
                index = chain.next_index
                chain.next_index = (index + 1) % len(picks)
                return picks[index]
        else:
            chain = None
            for rule_protocol, rule_ip, rule_port, rule_chain in self._rules:
                if rule_ip == dst_ip and rule_port == dst_port and rule_protocol == protocol:
                    chain = rule_chain
                    break
        if chain is None:
            service = self._service_ips.get(dst_ip)
            if service is not None:
                return NatDecision(
                    "", 0, service, f"{dst_ip} has no {protocol} port {dst_port}: reject", True
                )
            if self._cidr is not None and ip_to_int(dst_ip) & self._cidr[1] == self._cidr[0]:
                return NatDecision(
                    "", 0, "", f"{dst_ip} is in {self.service_cidr} but no Service has it: reject", True
                )
            return None
        return self._choose(chain, src_ip, rand, now)

    def lookup_node_port(
        self, protocol: str, node_port: int, src_ip: str, rand: float, now: float
    ) -> NatDecision | None:
        """The decision for a new connection arriving on this node's `node_port`; None when no Service
        has that nodePort."""
        if self._hashed:
            chain = self._node_ports.get((node_port, protocol))
        else:
            chain = None
            for rule_protocol, rule_port, rule_chain in self._node_port_rules:
                if rule_port == node_port and rule_protocol == protocol:
                    chain = rule_chain
                    break
        if chain is None:
            return None
        return self._choose(chain, src_ip, rand, now)

    def preserves_source(self, node_port: int, protocol: str) -> bool:
        """Whether clients of this nodePort keep their address (externalTrafficPolicy Local) rather than
        being SNATted to the node's."""
        chain = self._node_ports.get((node_port, protocol))
        return chain is not None and chain.entry.external_local

    def node_ports(self) -> list[tuple[int, str]]:
        """Every (nodePort, protocol) the node should listen on."""
        return sorted(self._node_ports)

    def udp_serving(self) -> dict[tuple[int, int], frozenset[int]]:
        """(service address, port) -> the addresses of its serving endpoints, for every UDP ClusterIP
        and external IP that has some: what kube-proxy keeps UDP conntrack entries to after a sync
        (`Conntrack.clear_stale_udp`). A Service without endpoints is left out, as kube-proxy leaves it."""
        return {(ip_to_int(ip), entry.port): frozenset(ip_to_int(a) for a in addresses)
                for entry, addresses in self._udp_serving()
                for ip in filter(None, (entry.cluster_ip, *entry.external_ips))}

    def udp_node_port_serving(self) -> dict[int, frozenset[str]]:
        """nodePort -> the addresses of its serving endpoints, for every UDP nodePort whose Service has
        some: what the NodePort listeners keep their clients' flows to after a sync."""
        return {entry.node_port: addresses for entry, addresses in self._udp_serving() if entry.node_port}

    def _udp_serving(self) -> list[tuple[ServicePort, frozenset[str]]]:
        # Every serving endpoint, whatever the traffic policies, as kube-proxy's cleanup counts them.
        serving = [(entry, frozenset(e.ip for e in (*entry.endpoints, *entry.external_endpoints)))
                   for entry in self.ports if entry.protocol == "UDP"]
        return [(entry, addresses) for entry, addresses in serving if addresses]

    def _choose(self, chain: _Chain, src_ip: str, rand: float, now: float) -> NatDecision:
        picks = chain.picks
        if not picks:
            return chain.reject
        affinity_seconds = chain.affinity_seconds
        if affinity_seconds:
            record = self.affinity.get((chain.name, src_ip))
            if record is not None and record[1] > now and record[0] in chain.endpoints:
                endpoint = record[0]
                self.affinity[(chain.name, src_ip)] = (endpoint, now + affinity_seconds)
                return NatDecision(
                    endpoint.ip,
                    endpoint.port,
                    chain.entry.label,
                    f"{chain.via}: ClientIP affinity of {src_ip} → {endpoint.ip}:{endpoint.port}",
                )
        if self._hashed:
            index = chain.next_index
            chain.next_index = (index + 1) % len(picks)
        else:
            index = _walk_endpoint_rules(len(picks), rand)
        if affinity_seconds:
            self.affinity[(chain.name, src_ip)] = (chain.endpoints[index], now + affinity_seconds)
        return picks[index]

    def expire_affinity(self, now: float) -> int:
        """Drops lapsed affinity records; returns how many."""
        stale = [key for key, (_, lapses) in self.affinity.items() if lapses <= now]
        for key in stale:
            del self.affinity[key]
        return len(stale)


def _parse_cidr(text: str) -> tuple[int, int]:
    try:
        address, length = text.split("/")
        bits = int(length)
        if not 0 <= bits <= 32:
            raise ValueError
        mask = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF
        return ip_to_int(address) & mask, mask
    except ValueError:
        raise TableError(f"bad service CIDR {text!r}") from None


def _walk_endpoint_rules(count: int, rand: float) -> int:
    """kube-proxy's endpoint rules: rule i matches with probability 1/(count - i). One uniform draw
    stands for the independent draws netfilter makes: when rule i does not match, the draw is rescaled to
    what is left of [0, 1), which keeps every endpoint equally likely."""
    for index in range(count - 1):
        probability = 1.0 / (count - index)
        if rand < probability:
            return index
        rand = (rand - probability) / (1.0 - probability)
    return count - 1
